"""Shared pieces of the benchmark cases: sizes (:class:`Config`), the table type
(:class:`Section`), logging and the problems every case builds.
"""

from __future__ import annotations

import dataclasses
import time

import adaptive_kernels as ak  # first: it sizes the thread pools (README "Threads") before scipy's OpenBLAS starts

import jax
import lineax as lx
import numpy as np
import scipy.linalg as sl
from adaptive_kernels.solvers import QuasiNewton, Status

from bench.timing import Timing, time_calls

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
    sampling: dict  # d, N, P, gamma, P_test, chains, samples, warmup, batches, leapfrog, dtype
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
    sampling=dict(d=50, N=1000, P=200, gamma=2.0, P_test=1000, chains=30, samples=30, warmup=42, batches=5,
                  leapfrog=16, dtype="float32"),
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
    sampling=dict(d=10, N=100, P=40, gamma=2.0, P_test=200, chains=4, samples=40, warmup=20, batches=4,
                  leapfrog=8, dtype="float32"),
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
    sampling=dict(d=5, N=50, P=20, gamma=2.0, P_test=100, chains=2, samples=20, warmup=10, batches=4,
                  leapfrog=8, dtype="float32"),
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
