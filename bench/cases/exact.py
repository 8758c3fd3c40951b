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

SIZES = {"full": dict(samples=4000, keys=6, chains=4), "quick": dict(samples=2000, keys=3, chains=2),
         "tiny": dict(samples=1000, keys=2, chains=2)}
"""Per config: exact-measure draws per key and keys; HMC chains (a small ensemble, extrapolated)."""


def _timed(fn):
    """(fn(), wall seconds, CPU seconds of this process: the library runs one thread, so on a loaded machine the CPU
    time is what an idle machine's wall time would be)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def exact_vs_hmc(cfg: Config) -> Section:
    """Exact-measure learnability (one solve per independent key) vs a small HMC ensemble: time to error SE_TARGET."""
    s, e = cfg.sampling, SIZES.get(cfg.name, SIZES["quick"])
    sec = Section(
        f"Exact measure vs HMC: two-layer erf net, d={s['d']}, N={s['N']}, P={s['P']}, gamma={s['gamma']}, "
        f"kappa2={KAPPA2}, cubic teacher, P_test={s['P_test']}",
        f"Exact measure: `solve(Adaptive(form='conjugate', measure='exact', samples={e['samples']}, "
        f"seed=jnp.asarray(k)))` + `summarize` for {e['keys']} keys (float64; an array seed: one compilation, "
        "paid by the first key; *run* is the median over the other keys, including the proposals' adaptation and "
        "re-adaptation rounds). The error of one key's learnability is the spread (standard deviation) over keys; "
        f"its time to error {SE_TARGET} is the run time x max(1, (spread/{SE_TARGET})^2) (SE ∝ 1/sqrt(S), time ∝ S). "
        f"HMC: `sample_posterior(method=HMC(num_leapfrog={s['leapfrog']}))` in {s['dtype']}, only "
        f"{e['chains']} chains x {s['samples']} draws after {s['warmup']} warm-up (a small ensemble: its time to "
        f"SE {SE_TARGET} is t_warmup + t_draws (SE/{SE_TARGET})^2 from its batch-means SE, extrapolated; its "
        "compilation is inside t_warmup, so compare the columns *incl. compile*). Times as wall / CPU seconds of this "
        "process (single-threaded: on the shared machine the CPU time is the idle machine's wall time); the speed-up "
        "is HMC's over the exact measure's, both incl. compile, and in brackets the exact measure without its "
        "compilation. Check: the two learnabilities agree within 0.02 + 3 combined SE and the exact measure's ESS is "
        "above 1% of S.",
        ["method", "compile (wall / CPU)", "run (wall / CPU)", "learnability", "error reached",
         f"time to error {SE_TARGET} (wall / CPU)", f"incl. compile (wall / CPU)", "speed-up wall / CPU", "check"],
    )
    arch, data = _erf_problem(s["d"], s["N"], s["P"], s["gamma"], s["P_test"])

    L, ess, wall, cpu = [], [], [], []
    for k in range(e["keys"]):
        log(f"exact vs HMC: exact measure, key {k}")
        theory = ak.Adaptive(form="conjugate", measure="exact", samples=e["samples"], seed=jnp.asarray(k))
        (sol, summary), t_wall, t_cpu = _timed(
            lambda: (lambda sol: (sol, ak.summarize(sol, arch, data, KAPPA2)))(ak.solve(arch, data, KAPPA2, theory)))
        L.append(summary["learnability"]), wall.append(t_wall), cpu.append(t_cpu)
        ess.append(float(jnp.min(sol.stats["ess"])) / e["samples"])
    run = np.array([np.median(wall[1:]), np.median(cpu[1:])])
    compile_ = np.array([wall[0], cpu[0]]) - run
    L_exact, spread = float(np.mean(L)), float(np.std(L, ddof=1))
    t_exact = run * max(1.0, (spread / SE_TARGET) ** 2)  # one key already within the target: the measured run
    t_exact_total = compile_ + t_exact

    log(f"exact vs HMC: HMC {e['chains']} chains x {s['samples']} draws + {s['warmup']} warm-up")
    batch = math.ceil(s["samples"] / s["batches"])
    warmup = math.ceil(s["warmup"] / batch) * batch
    est, h_wall, h_cpu = _timed(lambda: sample_posterior(
        arch, _as_dtype(data, s["dtype"]), KAPPA2, method=HMC(num_leapfrog=s["leapfrog"]), num_chains=e["chains"],
        num_samples=s["samples"], num_warmup=warmup, num_batches=s["batches"], key=1, chain_batch_size=1))
    t_sampling = np.array([h_wall, h_cpu])
    t_draws = t_sampling * s["samples"] / (warmup + s["samples"])
    L_hmc, se_hmc = float(est.learnability.mean), float(est.learnability.se)
    t_hmc = (t_sampling - t_draws) + t_draws * (se_hmc / SE_TARGET) ** 2

    pair = lambda t: f"{seconds(t[0])} / {seconds(t[1])}"  # noqa: E731
    se_exact = spread / math.sqrt(len(L))
    tol = 0.02 + 3 * math.hypot(se_exact, se_hmc)
    detail = sec.check("exact vs HMC learnability", abs(L_exact - L_hmc) <= tol and min(ess) > 0.01,
                       f"|{L_exact:.4f} - {L_hmc:.4f}| = {abs(L_exact - L_hmc):.4f} <= {tol:.4f}; "
                       f"ESS/S {min(ess):.2f}; converged: {bool(sol.converged)}")
    sec.rows.append(["exact measure (theory)", pair(compile_), f"{pair(run)} (n={len(L) - 1})",
                     f"{L_exact:.4f} ± {se_exact:.4f}", f"one key: {spread:.4f} ({e['keys']} keys x {e['samples']})",
                     pair(t_exact), pair(t_exact_total), "1", detail])
    up = t_hmc / t_exact_total
    sec.rows.append([f"HMC ensemble ({e['chains']} networks, extrapolated)", "in run",
                     f"{pair(t_sampling)} (includes compilation)", f"{L_hmc:.4f} ± {se_hmc:.4f}", f"{se_hmc:.4f}",
                     "-", pair(t_hmc), f"{up[0]:.1f}x / {up[1]:.1f}x ({t_hmc[1] / t_exact[1]:.0f}x)",
                     f"max R-hat {est.max_rhat:.3f}"])
    return sec
