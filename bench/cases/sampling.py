"""Theory vs sampling: the adaptive-kernel prediction against an HMC ensemble of the same net."""

from __future__ import annotations

import math
import time

import adaptive_kernels as ak
from adaptive_kernels.sampling import sample_posterior

from bench.timing import time_calls
from bench.cases.common import KAPPA2, SE_TARGET, FUNCTION_SPACE_SOLVER, Config, Section, log, seconds, _run_time, _erf_problem, _converged


def theory_vs_sampling(cfg: Config) -> Section:
    """Adaptive-kernel learnability vs an HMC ensemble (readout integrated out) of the same net."""
    s = cfg.sampling
    sec = Section(
        f"Theory vs sampling: two-layer erf net, d={s['d']}, N={s['N']}, P={s['P']}, gamma={s['gamma']}, "
        f"kappa2={KAPPA2}, cubic teacher",
        "Theory: `solve` (adaptive, Gaussian ansatz) + `summarize`, wall time per prediction. Sampling: "
        f"`sample_posterior(method='hmc')`, {s['chains']} chains x {s['samples']} draws after {s['warmup']} "
        "warm-up steps. When the learnability standard error (batch means) stays above "
        f"{SE_TARGET}, the time to reach {SE_TARGET} is extrapolated with SE ∝ 1/sqrt(draws): "
        "t_warmup + t_draws (SE/0.005)^2. Check: |L_theory - L_HMC| <= 0.05 + 3 SE (THEORY.md sec. 4: the "
        "Gaussian ansatz was off by up to ~0.04 in learnability on small erf nets).",
        ["method", "compile / warm-up", "run (median)", "learnability", "SE reached", "time to SE 0.005",
         "ratio sampling / theory", "check"],
    )
    arch, data = _erf_problem(s["d"], s["N"], s["P"], s["gamma"], s["P_test"])

    def theory():
        sol = ak.solve(arch, data, KAPPA2, "adaptive", FUNCTION_SPACE_SOLVER)
        return sol, ak.summarize(sol, arch, data, KAPPA2)

    log(f"theory vs sampling: adaptive theory at P={s['P']}")
    t_theory, (sol, summary) = time_calls(theory, repeats=min(cfg.repeats, 2))
    L_theory = summary["learnability"]

    batch = math.ceil(s["samples"] / s["batches"])

    def sample(num_samples, num_batches, num_warmup):
        return sample_posterior(arch, data, KAPPA2, method="hmc", num_chains=s["chains"],
                                num_samples=num_samples, num_warmup=num_warmup,
                                num_batches=num_batches, key=1)

    log(f"theory vs sampling: HMC compile (4 short batches of {batch} draws)")
    t0 = time.perf_counter()
    sample(4 * batch, 4, 0)
    warm = time.perf_counter() - t0
    log(f"theory vs sampling: HMC {s['chains']} chains x {s['samples']} draws + {s['warmup']} warm-up")
    t0 = time.perf_counter()
    est = sample(s["samples"], s["batches"], s["warmup"])
    t_sampling = time.perf_counter() - t0
    L, se = float(est.learnability.mean), float(est.learnability.se)
    warmup_steps = math.ceil(s["warmup"] / batch) * batch
    t_warmup = t_sampling * warmup_steps / (warmup_steps + s["samples"])
    t_target = t_sampling if se <= SE_TARGET else t_warmup + (t_sampling - t_warmup) * (se / SE_TARGET) ** 2
    extrapolated = "measured" if se <= SE_TARGET else "extrapolated"
    compile_hmc = max(warm - (t_sampling - t_warmup) * 4 * batch / s["samples"], 0.0)
    ok = abs(L_theory - L) <= 0.05 + 3 * se and _converged(sol)
    detail = sec.check("theory vs HMC learnability", ok,
                       f"|{L_theory:.4f} - {L:.4f}| = {abs(L_theory - L):.4f} <= {0.05 + 3 * se:.4f}; "
                       f"theory converged: {_converged(sol)}; HMC max R-hat {est.max_rhat:.3f}")
    sec.rows.append(["adaptive kernel (theory)", seconds(t_theory.compile_s), _run_time(t_theory),
                     f"{L_theory:.4f}", "-", seconds(t_theory.median), "1", detail])
    sec.rows.append([f"HMC ensemble ({s['chains']} chains)", seconds(compile_hmc), f"{seconds(t_sampling)} (n=1)",
                     f"{L:.4f}", f"{se:.4f}", f"{seconds(t_target)} ({extrapolated})",
                     f"{t_target / t_theory.median:.0f}x", "(see above)"])
    return sec
