"""The benchmark cases. Each returns a :class:`Section` (a markdown table plus the answer
checks made before its times were reported). Sizes come from a :class:`Config`
(``FULL`` for ``make bench``, ``QUICK`` for ``--quick`` and the test).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy.linalg as sl

import adaptive_kernels as ak
from adaptive_kernels.actions import two_layer_problem
from adaptive_kernels.api import solve_problem
from adaptive_kernels.deep import predict_deep, solve_deep
from adaptive_kernels.sampling import sample_posterior
from adaptive_kernels.solvers import QuasiNewton, Status
from adaptive_kernels.solvers.forward_backward import ForwardBackward
from adaptive_kernels.sweep import Sweep, TeacherData, grid, run_sweep

from bench import baselines
from bench.timing import REPO, Timing, time_calls, time_jitted

KAPPA2 = 1e-2
SE_TARGET = 0.005

FUNCTION_SPACE_SOLVER = QuasiNewton(linear_solver=lx.CG(rtol=1e-10, atol=1e-12, max_steps=500))
"""L-BFGS over the Cholesky factor, then Newton steps whose Hessian system is solved by CG with
Hessian-vector products. The default dense Newton solve materialises the Hessian through
n(n+1)/2 forward passes at once (memory ~ P^2 n^2 / 2 floats: out of memory at P = 1000, d = 50)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Problem sizes and repeat counts of one benchmark run."""

    name: str
    repeats: int
    sampling: dict  # d, N, P, gamma, P_test, chains, samples, warmup, batches
    pair_sizes: dict  # label -> (d, N, P) for the solver-vs-scipy pairs
    scaling_P: tuple
    adaptive_P: tuple
    linear_P: int
    linear_d: tuple
    deep_depths: tuple
    deep_P: tuple
    deep_depth_P: int
    deep_check_max_P: int
    sweep_points: int
    target: tuple  # (d, N, P)


FULL = Config(
    name="full",
    repeats=3,
    sampling=dict(d=50, N=1000, P=200, gamma=2.0, P_test=1000, chains=4, samples=100, warmup=100, batches=10),
    pair_sizes={"THEORY.md sec. 3/4 check": (30, 200, 90), "large": (50, 1000, 500)},
    scaling_P=(100, 500, 1000, 2000, 4000),
    adaptive_P=(100, 200, 400),
    linear_P=2000,
    linear_d=(10, 25, 50, 100),
    deep_depths=(1, 2, 3, 4),
    deep_P=(100, 200, 400, 800),
    deep_depth_P=200,
    deep_check_max_P=50,
    sweep_points=64,
    target=(50, 1000, 1000),
)

QUICK = Config(
    name="quick",
    repeats=2,
    sampling=dict(d=10, N=100, P=40, gamma=2.0, P_test=200, chains=2, samples=40, warmup=20, batches=4),
    pair_sizes={"THEORY.md sec. 3/4 check": (30, 200, 90)},
    scaling_P=(100, 200, 400),
    adaptive_P=(100, 200),
    linear_P=200,
    linear_d=(10, 20),
    deep_depths=(1, 2),
    deep_P=(50, 100),
    deep_depth_P=50,
    deep_check_max_P=50,
    sweep_points=16,
    target=(20, 200, 200),
)

TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    repeats=1,
    sampling=dict(d=5, N=50, P=20, gamma=2.0, P_test=100, chains=2, samples=20, warmup=10, batches=4),
    pair_sizes={"tiny": (5, 50, 30)},
    scaling_P=(50,),
    adaptive_P=(50,),
    linear_P=50,
    linear_d=(5,),
    deep_depths=(1,),
    deep_P=(),
    deep_depth_P=30,
    deep_check_max_P=30,
    sweep_points=8,
    target=(5, 50, 50),
)
"""Smallest sizes: the harness's own test (``tests/test_bench_quick.py``)."""


@dataclasses.dataclass(frozen=True)
class Check:
    """An answer check made before a time is reported: what was compared and whether it held."""

    what: str
    passed: bool
    detail: str


@dataclasses.dataclass
class Section:
    """One table of BENCHMARKS.md."""

    title: str
    note: str
    columns: list
    rows: list = dataclasses.field(default_factory=list)
    checks: list = dataclasses.field(default_factory=list)

    def check(self, what: str, passed: bool, detail: str) -> str:
        self.checks.append(Check(what, bool(passed), detail))
        return ("ok: " if passed else "FAILED: ") + detail


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def seconds(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _run_time(timing: Timing) -> str:
    return f"{seconds(timing.median)} (n={timing.repeats})"


def _erf_problem(d, N, P, gamma=2.0, P_test=1000, activation="erf", teacher="cubic", seed=0):
    data = ak.teacher_dataset(jax.random.PRNGKey(seed), P, d, teacher, P_test=P_test)
    arch = ak.FCN(d, (N,), activation, 1.0, 1.0, gamma=gamma)
    return arch, data


def _cholesky_time(P: int, repeats: int = 3) -> float:
    """Median time of scipy's cho_factor of a P x P SPD matrix (this machine's BLAS limit)."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((P, P))
    A = G @ G.T / P + np.eye(P)
    return time_calls(lambda: sl.cho_factor(A, lower=True), repeats=repeats, warmup=True)[0].median


def _converged(sol) -> bool:
    return int(sol.status) == Status.SUCCESS


# --------------------------------------------------------------------------- theory vs sampling
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


# --------------------------------------------------------------------------- ours vs scipy
def _pair_row(sec, label, what, ours: Timing, base: Timing, answers: dict, tolerances: dict):
    """Compare answers first (each key: (ours, baseline)); then report the times and ratio."""
    parts, ok = [], True
    for key, (a, b) in answers.items():
        diff = abs(a - b) / (abs(b) if key == "action" else 1.0)
        ok &= diff <= tolerances[key]
        parts.append(f"{key} {'rel ' if key == 'action' else ''}diff {diff:.1e} <= {tolerances[key]:.0e}")
    detail = sec.check(f"{what} ({label})", ok, "; ".join(parts))
    sec.rows.append([what, label, seconds(ours.compile_s), _run_time(ours), _run_time(base),
                     f"{base.median / ours.median:.1f}x", detail])


def solvers_vs_scipy(cfg: Config) -> Section:
    """Kernel-scaling and linear adaptive solves vs scipy L-BFGS-B on the same actions."""
    sec = Section(
        "Our solvers vs a hand-written numpy/scipy implementation (same action, same answer)",
        "Ours: `solve_problem` (L-BFGS over a Cholesky factor + Newton polish; weight space for the linear "
        "net when d < P), compiled ahead of time. Baseline: `scipy.optimize.minimize(method='L-BFGS-B')` "
        "with hand-written gradients on the THEORY.md sec. 3 action (scaling, over log s) and the sec. 4 "
        "action over a log-diagonal Cholesky factor of Sigma (function space, one P x P Cholesky per "
        "evaluation), `bench/baselines.py`. Tolerances: action relative 1e-8, learnability 1e-4 (both "
        "solvers stop at gradient norms ~1e-6 relative; the minimiser moves by ~sqrt of the action error).",
        ["theory", "size (d, N, P)", "ours: compile", "ours: run", "scipy: run", "speed-up", "check"],
    )
    for label, (d, N, P) in cfg.pair_sizes.items():
        for theory, activation in (("scaling", "linear"), ("scaling", "erf"), ("adaptive", "linear")):
            if theory == "scaling" and activation == "linear" and P > 500:
                continue  # the small linear case stands for it
            teacher = "linear" if activation == "linear" else "cubic"
            arch, data = _erf_problem(d, N, P, 2.0, 1000, activation, teacher)
            problem = two_layer_problem(arch, data, KAPPA2)
            log(f"ours vs scipy: {theory} {activation} d={d} N={N} P={P}")
            ours, sol = time_jitted(solve_problem, problem, theory, repeats=cfg.repeats)
            L_ours = ak.summarize(sol, arch, data, KAPPA2)["learnability"]
            X, y, Xt, yt = (np.asarray(a) for a in (data.X, data.y, data.X_test, data.y_test))
            c = float(arch.readout_scale)
            if theory == "scaling":
                prior = np.eye(d) / d
                K = baselines.nngp_kernel(X, X, prior, activation, c)
                base, (s, action, _) = time_calls(lambda: baselines.solve_scaling(K, y, N, KAPPA2),
                                                  repeats=cfg.repeats, warmup=False)
                f = baselines.gp_mean(s * K, s * baselines.nngp_kernel(Xt, X, prior, activation, c), y, KAPPA2)
            else:
                base, (Sigma, action, _) = time_calls(
                    lambda: baselines.solve_adaptive_linear(X, y, N, KAPPA2, 1.0, c), repeats=cfg.repeats,
                    warmup=False)
                f = baselines.gp_mean(c * X @ Sigma @ X.T, c * Xt @ Sigma @ X.T, y, KAPPA2)
            answers = {"action": (float(sol.action), action), "learnability": (L_ours, baselines.learnability(f, yt))}
            _pair_row(sec, f"({d}, {N}, {P})", f"{theory} ({activation})", ours, base, answers,
                      {"action": 1e-8, "learnability": 1e-4})
    return sec


# --------------------------------------------------------------------------- scaling with P and d
def _size_row(sec, label, size, P_chol, timing: Timing, sol, chol: float):
    iterations = int(sol.iterations)
    per_iteration = timing.median / max(iterations, 1)
    detail = sec.check(f"{label} at {size} converged", _converged(sol),
                       f"status {Status(int(sol.status)).name}, residual {float(sol.stats['residual']):.1e}")
    sec.rows.append([label, size, seconds(timing.compile_s), _run_time(timing), str(iterations),
                     seconds(per_iteration), f"{seconds(chol)} (P={P_chol})", f"{per_iteration / chol:.1f}",
                     detail])


def scaling_with_size(cfg: Config) -> Section:
    """Solve time vs P (scaling, adaptive erf, adaptive linear) and vs d, per iteration in Cholesky units."""
    sec = Section(
        "Scaling: solve time vs P and d, per iteration in units of one Cholesky factorisation",
        "Per iteration = run time / (quasi-Newton + Newton iterations); line-search evaluations and the "
        "Newton-CG Hessian-vector products are inside it. Cholesky: scipy `cho_factor` of a P x P SPD "
        "matrix (the machine's BLAS limit for one factorisation of the largest matrix, P x P in function "
        f"space, d x d in weight space). erf nets: d={cfg.target[0]}, N={cfg.target[1]}, gamma=2, cubic teacher; "
        f"linear nets: N={cfg.target[1]}, gamma=2, linear teacher. "
        "Check: the solver reports SUCCESS (stationarity residual <= 1e-10).",
        ["theory", "size", "compile", "run (median)", "iterations", "per iteration", "one Cholesky",
         "per iteration / Cholesky", "check"],
    )
    chol = {}

    def cholesky(n):
        if n not in chol:
            chol[n] = _cholesky_time(n)
        return chol[n]

    d, N, _ = cfg.target
    for theory, sizes, solver in (("scaling", cfg.scaling_P, None), ("adaptive", cfg.adaptive_P, FUNCTION_SPACE_SOLVER)):
        for P in sizes:
            arch, data = _erf_problem(d, N, P, P_test=10)
            problem = two_layer_problem(arch, data, KAPPA2)
            repeats = cfg.repeats if P <= 1000 else 1
            log(f"scaling: {theory} erf d={d} P={P}")
            timing, sol = time_jitted(solve_problem, problem, theory, solver, repeats=repeats)
            _size_row(sec, f"{theory} (erf, function space)", f"P={P}", P, timing, sol, cholesky(P))
    for dim in cfg.linear_d:
        arch, data = _erf_problem(dim, N, cfg.linear_P, activation="linear", teacher="linear", P_test=10)
        problem = two_layer_problem(arch, data, KAPPA2)
        log(f"scaling: adaptive linear weight space d={dim} P={cfg.linear_P}")
        timing, sol = time_jitted(solve_problem, problem, "adaptive", repeats=cfg.repeats)
        _size_row(sec, "adaptive (linear, weight space)", f"d={dim}, P={cfg.linear_P}", dim, timing, sol,
                  cholesky(dim))
    return sec


# --------------------------------------------------------------------------- deep forward-backward
def deep_forward_backward(cfg: Config) -> Section:
    """Time per forward-backward iteration vs depth L and P (conjugate form, erf, gamma = 1)."""
    sec = Section(
        "Deep forward-backward iteration: time per iteration vs L and P",
        "`solve_deep(..., solver=ForwardBackward())` (conjugate form, Gaussian-equivalent erf layers, "
        "d=20, N_l=200, gamma=1, kappa2=1e-2, linear teacher). Per iteration = run time / iterations "
        "(rejected trial steps count). Check: SUCCESS, and for P <= "
        f"{cfg.deep_check_max_P} the mean output agrees with the primal form solved by L-BFGS (a different "
        "formulation of the same saddle) to 1e-5 in learnability (only there: `solve_deep`'s default primal L-BFGS "
        "solve ran out of memory at L=2, P=100 -- a 31.6 GB allocation -- on this 23 GiB machine).",
        ["L", "P", "compile", "run (median)", "iterations", "per iteration", "check"],
    )
    points = [(L, cfg.deep_depth_P) for L in cfg.deep_depths]
    points += [(2, P) for P in cfg.deep_P if (2, P) not in points]
    for L, P in points:
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, 20, "linear", P_test=200)
        arch = ak.FCN(20, (200,) * L, "erf", 1.0, 1.0, gamma=1.0)
        log(f"deep forward-backward: L={L} P={P}")
        fb = ForwardBackward()
        timing, sol = time_calls(lambda: solve_deep(arch, data, KAPPA2, "adaptive", fb), repeats=cfg.repeats)
        ok, detail = _converged(sol), f"status {Status(int(sol.status)).name}"
        if P <= cfg.deep_check_max_P:
            primal = solve_deep(arch, data, KAPPA2, "adaptive")
            L_fb = predict_deep(sol, arch, data, KAPPA2).mean_test
            L_pr = predict_deep(primal, arch, data, KAPPA2).mean_test
            diff = abs(float(ak.learnability(L_fb, data.y_test) - ak.learnability(L_pr, data.y_test)))
            ok &= diff <= 1e-5
            detail += f"; |L_fb - L_primal| = {diff:.1e} <= 1e-5"
        detail = sec.check(f"deep forward-backward L={L} P={P}", ok, detail)
        iterations = int(sol.iterations)
        sec.rows.append([str(L), str(P), seconds(timing.compile_s), _run_time(timing), str(iterations),
                         seconds(timing.median / max(iterations, 1)), detail])
    return sec


# --------------------------------------------------------------------------- sweeps
def _sweep(points: int) -> Sweep:
    side = int(round(math.sqrt(points)))
    gammas = list(np.linspace(1.0, 2.0, side))
    kappas = list(np.geomspace(1e-3, 1e-1, points // side))
    return Sweep(grid(theory="adaptive", activation="linear", width=200, P=60, gamma=gammas, kappa2=kappas),
                 data=TeacherData("linear", d=10, P_test=200))


def _same_tables(a, b, columns=("learnability", "action")) -> tuple[bool, str]:
    worst = max(float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy()) / np.maximum(np.abs(b[c].to_numpy()), 1)))
                for c in columns)
    same_status = bool(np.all(a["converged"].to_numpy() == b["converged"].to_numpy()))
    return worst <= 1e-8 and same_status, f"max diff in {', '.join(columns)} {worst:.1e} <= 1e-8; converged flags equal: {same_status}"


SWEEP_TIMEOUT_S = {"full": 300, "quick": 120, "tiny": 60}


def sweeps(cfg: Config) -> Section:
    """vmapped batch vs a Python loop over the same points; forced host devices.

    Both run in subprocesses with a time limit: during development the vmapped ``run_sweep``
    once stopped making progress (every thread waiting on a futex), and a benchmark must finish.
    """
    points = cfg.sweep_points
    sweep = _sweep(points)
    n = len(sweep.points)
    sec = Section(
        f"Sweeps: {n} points (adaptive, linear net d=10, N=200, P=60; gamma x kappa2 grid)",
        "`run_sweep(batch=True)` (one vmapped, jitted solve) vs `run_sweep(batch=False)` (the same jitted "
        "solver point by point), in a subprocess. Compile = first call - median of later calls. Multi-device: a "
        "subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=2` runs the vmapped sweep sharded "
        "over 1 and over 2 host devices (on a CPU they share the same cores, so this measures the sharding "
        "machinery, not extra hardware). Check: the tables agree (learnability and action to 1e-8 relative, "
        f"converged flags equal) before the times are reported. Each subprocess is stopped after "
        f"{SWEEP_TIMEOUT_S[cfg.name]} s.",
        ["mode", "compile", "run (median)", "per point", "speed-up", "check"],
    )
    for devices, kind in ((1, "loop-vs-batch"), (2, "multi-device")):
        log(f"sweeps: {kind} subprocess ({n} points, {devices} host device(s))")
        result = _sweep_subprocess(kind, cfg, devices)
        if result is None:
            sec.rows.append([kind, "-", "-", "-", "-", sec.check(kind, False, f"no result within {SWEEP_TIMEOUT_S[cfg.name]} s")])
            continue
        detail = sec.check(kind, result["same"], result["detail"])
        (ref_name, ref), (name, other) = result["timings"]
        sec.rows.append([ref_name, seconds(ref["compile"]), f"{seconds(ref['median'])} (n={ref['repeats']})",
                         seconds(ref["median"] / n), "1", "(reference)"])
        sec.rows.append([name, seconds(other["compile"]), f"{seconds(other['median'])} (n={other['repeats']})",
                         seconds(other["median"] / n), f"{ref['median'] / other['median']:.2f}x", detail])
    return sec


def _sweep_subprocess(kind: str, cfg: Config, devices: int) -> dict | None:
    """Run :func:`sweep_worker` in a subprocess (with ``devices`` forced host devices); None on timeout."""
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    try:
        out = subprocess.run([sys.executable, "-m", "bench.run", "--sweep-worker", kind, cfg.name], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True, timeout=SWEEP_TIMEOUT_S[cfg.name])
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep_worker(kind: str, cfg: Config) -> dict:
    """Time two ways of running the same sweep and compare their tables.

    ``kind``: "loop-vs-batch" (batch=False vs batch=True) or "multi-device" (vmapped on 1 vs 2 devices).
    """
    sweep = _sweep(cfg.sweep_points)
    if kind == "loop-vs-batch":
        modes = {"loop (batch=False)": dict(batch=False), "vmap batch (batch=True)": dict(batch=True)}
    else:
        devices = jax.devices()
        if len(devices) < 2:
            raise RuntimeError(f"multi-device worker needs 2 devices, has {len(devices)}")
        modes = {"vmap batch, 1 forced host device": dict(devices=devices[:1]),
                 "vmap batch, 2 forced host devices": dict(devices=devices[:2])}
    timings, tables = [], []
    for name, options in modes.items():
        timing, table = time_calls(lambda: run_sweep(sweep, **options), repeats=cfg.repeats)
        timings.append((name, {"compile": timing.compile_s, "median": timing.median, "repeats": timing.repeats}))
        tables.append(table)
    same, detail = _same_tables(tables[1], tables[0])
    return {"timings": timings, "same": same, "detail": detail}


# --------------------------------------------------------------------------- issue-4 target
def target(cfg: Config) -> Section:
    """The issue-4 target: adaptive erf solve, d=50, P=1000, N=1000, gamma=2 in < 2 s after compilation."""
    d, N, P = cfg.target
    sec = Section(
        f"Issue-4 target: adaptive erf solve at d={d}, N={N}, P={P}, gamma=2 (target < 2 s after compilation)",
        "`solve_problem(problem, 'adaptive', solver)` with L-BFGS over the Cholesky factor and a Newton-CG "
        "polish to a stationarity residual of 1e-10, compiled ahead of time; run = the compiled call. "
        "Check: SUCCESS (the residual is a certificate of stationarity independent of the iterations).",
        ["solver", "compile", "run (median)", "iterations", "per iteration / Cholesky", "learnability",
         "meets < 2 s", "check"],
    )
    arch, data = _erf_problem(d, N, P, P_test=1000)
    problem = two_layer_problem(arch, data, KAPPA2)
    log(f"issue-4 target: adaptive erf d={d} N={N} P={P}")
    timing, sol = time_jitted(solve_problem, problem, "adaptive", FUNCTION_SPACE_SOLVER,
                              repeats=1 if P >= 1000 else cfg.repeats)
    learn = ak.summarize(sol, arch, data, KAPPA2)["learnability"]
    detail = sec.check(f"target solve at P={P} converged", _converged(sol),
                       f"status {Status(int(sol.status)).name}, residual {float(sol.stats['residual']):.1e}")
    iterations = int(sol.iterations)
    sec.rows.append(["L-BFGS + Newton-CG", seconds(timing.compile_s), _run_time(timing), str(iterations),
                     f"{timing.median / max(iterations, 1) / _cholesky_time(P):.1f}", f"{learn:.4f}",
                     "yes" if timing.median < 2 else "no", detail])
    return sec


CASES: dict[str, Callable[[Config], Section]] = {
    "sampling": theory_vs_sampling,
    "scipy": solvers_vs_scipy,
    "size": scaling_with_size,
    "deep": deep_forward_backward,
    "sweep": sweeps,
    "target": target,
}
"""name -> case; ``bench/run.py --only NAME`` runs a subset."""

__all__ = ["CASES", "Check", "Config", "FULL", "QUICK", "Section", "TINY", "log", "sweep_worker"]
