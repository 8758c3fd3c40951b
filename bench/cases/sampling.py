"""Theory vs sampling: the adaptive-kernel prediction against a 30-network HMC ensemble of the same net."""

from __future__ import annotations

import math
import time

import jax
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.sampling import HMC, sample_posterior

from bench.timing import time_calls
from bench.cases.common import KAPPA2, SE_TARGET, FUNCTION_SPACE_SOLVER, Config, Section, log, seconds, _run_time, _erf_problem, _converged


def _as_dtype(data, dtype):
    return ak.Dataset(*(None if a is None else np.asarray(a, dtype) for a in
                        (data.X, data.y, data.X_test, data.y_test, data.w_star)))


def theory_vs_sampling(cfg: Config) -> Section:
    """Adaptive-kernel learnability vs an HMC ensemble (readout integrated out) of the same net."""
    s = cfg.sampling
    chains, batch = s["chains"], math.ceil(s["samples"] / s["batches"])
    warmup = math.ceil(s["warmup"] / batch) * batch
    sec = Section(
        f"Theory vs sampling: two-layer erf net, d={s['d']}, N={s['N']}, P={s['P']}, gamma={s['gamma']}, "
        f"kappa2={KAPPA2}, cubic teacher, {chains}-network ensemble",
        "Theory: `solve` (adaptive, Gaussian ansatz) + `summarize`, float64, wall time per prediction. Sampling: "
        f"`sample_posterior(method=HMC(num_leapfrog={s['leapfrog']}))` on {s['dtype']} data (computed in "
        f"{s['dtype']}: Monte Carlo errors of ~1e-3 dwarf its rounding), {chains} chains (networks; one at a "
        "time, `chain_batch_size=1`: batched Cholesky/triangular solves are slow on a CPU) x "
        f"{s['samples']} draws after {warmup} warm-up transitions (step size adapted); one draw = one HMC "
        f"transition of {s['leapfrog']} gradient evaluations, each a P x P Cholesky of the readout-marginal "
        "covariance. *samples/s* counts draws of all chains per second of sampling after warm-up. The time to "
        f"reach a learnability standard error (batch means) of {SE_TARGET} is t_warmup + t_draws (SE/{SE_TARGET})^2 "
        "(SE ∝ 1/sqrt(draws)), measured SE from this run. Check: |L_theory - L_HMC| <= 0.05 + 3 SE (THEORY.md "
        "sec. 4: the Gaussian ansatz was off by up to ~0.04 in learnability on small erf nets) and the "
        "learnability's split R-hat < 1.1.",
        ["method", "compile / warm-up", "run", "samples/s", "learnability", "SE reached", f"time to SE {SE_TARGET}",
         "ratio sampling / theory", "check"],
    )
    arch, data = _erf_problem(s["d"], s["N"], s["P"], s["gamma"], s["P_test"])

    def theory():
        sol = ak.solve(arch, data, KAPPA2, "adaptive", FUNCTION_SPACE_SOLVER)
        return sol, ak.summarize(sol, arch, data, KAPPA2)

    log(f"theory vs sampling: adaptive theory at P={s['P']}")
    t_theory, (sol, summary) = time_calls(theory, repeats=min(cfg.repeats, 2))
    L_theory = summary["learnability"]

    sample_data = _as_dtype(data, s["dtype"])
    sampler = HMC(num_leapfrog=s["leapfrog"])

    def sample(num_samples, num_batches, num_warmup):
        start = time.perf_counter()
        est = sample_posterior(arch, sample_data, KAPPA2, method=sampler, num_chains=chains, num_samples=num_samples,
                               num_warmup=num_warmup, num_batches=num_batches, key=1, chain_batch_size=1)
        return time.perf_counter() - start, est

    log(f"theory vs sampling: HMC compile (one chunk of {batch} draws, {chains} chains)")
    t_first, _ = sample(batch, 1, 0)
    log(f"theory vs sampling: HMC {chains} chains x {s['samples']} draws + {warmup} warm-up")
    t_sampling, est = sample(s["samples"], s["batches"], s["warmup"])
    t_draws = t_sampling * s["samples"] / (warmup + s["samples"])
    t_warmup = t_sampling - t_draws
    compile_hmc = max(t_first - t_draws / s["batches"], 0.0)
    L, se = float(est.learnability.mean), float(est.learnability.se)
    t_target = t_warmup + t_draws * (se / SE_TARGET) ** 2
    reached = f"reached after {math.ceil(s['samples'] * (se / SE_TARGET) ** 2)} draws" if se <= SE_TARGET else "extrapolated"
    rhat = est.rhat["learnability"]
    ok = abs(L_theory - L) <= 0.05 + 3 * se and _converged(sol)
    detail = sec.check("theory vs HMC learnability", ok,
                       f"|{L_theory:.4f} - {L:.4f}| = {abs(L_theory - L):.4f} <= {0.05 + 3 * se:.4f}; "
                       f"theory converged: {_converged(sol)}; eigenvalue ratio along w*: theory "
                       f"{summary['eigenvalue_ratio'][0]:.3f}, HMC {float(est.eigenvalue_ratio[0].mean):.3f} "
                       f"± {float(est.eigenvalue_ratio[0].se):.3f}")
    mixing = sec.check("HMC ensemble equilibrated", rhat < 1.1,
                       f"split R-hat of the learnability {rhat:.3f} < 1.1 (max over monitors {est.max_rhat:.3f}), "
                       f"acceptance {est.acceptance:.2f}, min ESS {est.min_ess:.0f}")
    sec.rows.append(["adaptive kernel (theory)", seconds(t_theory.compile_s), _run_time(t_theory), "-",
                     f"{L_theory:.4f}", "-", seconds(t_theory.median), "1", detail])
    sec.rows.append([f"HMC ensemble ({chains} networks)", seconds(compile_hmc),
                     f"{seconds(t_sampling)} (warm-up {seconds(t_warmup)}, draws {seconds(t_draws)}; n=1)",
                     f"{chains * s['samples'] / t_draws:.1f}", f"{L:.4f}", f"{se:.4f}",
                     f"{seconds(t_target)} ({reached})", f"{t_target / t_theory.median:.0f}x", mixing])
    return sec
