"""The exact large-width measure (``Adaptive(measure="exact")``, issue 15) vs an HMC ensemble: time to a
learnability standard error of ``SE_TARGET``."""

from __future__ import annotations

import math
import time

import jax.numpy as jnp
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.sampling import HMC, sample_posterior

from bench.cases.common import KAPPA2, SE_TARGET, Config, Section, _erf_problem, log, seconds
from bench.cases.sampling import _as_dtype

SIZES = {"full": dict(samples=4000, keys=4, chains=4), "quick": dict(samples=2000, keys=3, chains=2),
         "tiny": dict(samples=1000, keys=2, chains=2)}
"""Per config: exact-measure draws per key and keys; HMC chains (a small ensemble, extrapolated)."""


def exact_vs_hmc(cfg: Config) -> Section:
    """Exact-measure learnability (mean and standard error over independent keys) vs a small HMC ensemble."""
    s, e = cfg.sampling, SIZES.get(cfg.name, SIZES["quick"])
    sec = Section(
        f"Exact measure vs HMC: two-layer erf net, d={s['d']}, N={s['N']}, P={s['P']}, gamma={s['gamma']}, "
        f"kappa2={KAPPA2}, cubic teacher, P_test={s['P_test']}",
        f"Exact measure: `solve(Adaptive(form='conjugate', measure='exact', samples={e['samples']}, "
        f"seed=jnp.asarray(k)))` + `summarize` for {e['keys']} keys (float64; an array seed: one compilation, "
        "timed on the first key; *run* is the median over the other keys, including the proposals' adaptation). Its "
        "learnability's Monte Carlo standard error is the spread over keys / sqrt(keys); the time to a standard error "
        f"of {SE_TARGET} is the run time x (SE/{SE_TARGET})^2 where SE > {SE_TARGET} (SE ∝ 1/sqrt(S), time ∝ S: an "
        "extrapolation), else the run time itself. "
        f"HMC: `sample_posterior(method=HMC(num_leapfrog={s['leapfrog']}))` in {s['dtype']}, only "
        f"{e['chains']} chains x {s['samples']} draws after {s['warmup']} warm-up (a small ensemble: its time to "
        f"SE {SE_TARGET} is t_warmup + t_draws (SE/{SE_TARGET})^2 from its batch-means SE, extrapolated; its "
        "compilation is inside t_warmup, so compare the columns *incl. compile*). Check: "
        "the two learnabilities agree within 0.02 + 3 combined SE and the exact measure's ESS is above 1% of S.",
        ["method", "compile", "run", "learnability", "SE reached", f"time to SE {SE_TARGET}",
         f"time to SE {SE_TARGET} incl. compile", "speed-up incl. compile", "check"],
    )
    arch, data = _erf_problem(s["d"], s["N"], s["P"], s["gamma"], s["P_test"])

    L, ess, times = [], [], []
    for k in range(e["keys"]):
        log(f"exact vs HMC: exact measure, key {k}")
        start = time.perf_counter()
        sol = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate", measure="exact", samples=e["samples"],
                                                        seed=jnp.asarray(k)))
        L.append(ak.summarize(sol, arch, data, KAPPA2)["learnability"])
        times.append(time.perf_counter() - start)
        ess.append(float(jnp.min(sol.stats["ess"])) / e["samples"])
    run = float(np.median(times[1:]))
    L_exact, se_exact = float(np.mean(L)), float(np.std(L, ddof=1) / math.sqrt(len(L)))
    t_exact = run * max(1.0, (se_exact / SE_TARGET) ** 2)  # already below the target: the measured run
    t_exact_total = times[0] - run + t_exact

    log(f"exact vs HMC: HMC {e['chains']} chains x {s['samples']} draws + {s['warmup']} warm-up")
    batch = math.ceil(s["samples"] / s["batches"])
    warmup = math.ceil(s["warmup"] / batch) * batch
    start = time.perf_counter()
    est = sample_posterior(arch, _as_dtype(data, s["dtype"]), KAPPA2, method=HMC(num_leapfrog=s["leapfrog"]),
                           num_chains=e["chains"], num_samples=s["samples"], num_warmup=warmup,
                           num_batches=s["batches"], key=1, chain_batch_size=1)
    t_sampling = time.perf_counter() - start
    t_draws = t_sampling * s["samples"] / (warmup + s["samples"])
    L_hmc, se_hmc = float(est.learnability.mean), float(est.learnability.se)
    t_hmc = (t_sampling - t_draws) + t_draws * (se_hmc / SE_TARGET) ** 2

    tol = 0.02 + 3 * math.hypot(se_exact, se_hmc)
    detail = sec.check("exact vs HMC learnability", abs(L_exact - L_hmc) <= tol and min(ess) > 0.01,
                       f"|{L_exact:.4f} - {L_hmc:.4f}| = {abs(L_exact - L_hmc):.4f} <= {tol:.4f}; "
                       f"ESS/S {min(ess):.2f}; converged: {bool(sol.converged)}")
    sec.rows.append(["exact measure (theory)", seconds(times[0] - run), f"{seconds(run)} (n={len(times) - 1})",
                     f"{L_exact:.4f}", f"{se_exact:.4f} ({e['keys']} keys x {e['samples']})", seconds(t_exact),
                     seconds(t_exact_total), "1", detail])
    sec.rows.append([f"HMC ensemble ({e['chains']} networks, extrapolated)", "in run",
                     f"{seconds(t_sampling)} (includes compilation)", f"{L_hmc:.4f}", f"{se_hmc:.4f}", "-",
                     seconds(t_hmc), f"{t_hmc / t_exact_total:.1f}x", f"max R-hat {est.max_rhat:.3f}"])
    return sec
