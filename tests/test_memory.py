"""Memory (issues 18 and 20): the trial's cases solved in a subprocess under an address-space limit.

Before, the deep tanh net (d = 12, P = 10, N_l = 20, L = 4, gamma = 2) asked for 18 GB with ``solver="gradient"``
and the two-layer tanh net (d = 10, N = 200, P = 60) for 79 GB: quadrature nodes times P^2 times order parameters
materialised at once. Now each solver runs under RLIMIT_AS = 3 GB (JAX reserves virtual memory up front: a trivial
import and solve needs ~1.5 GB of address space, docs/reliability.md) and either converges -- confirmed by the
action's own gradient -- or says it did not. ``"fixed-point"`` is the default solver (the same Newton rule object),
so the default's run covers both; the quasi-Newton phases are capped at a few steps (the memory is that of a
Newton polish, which materialises the Hessian, whatever the step count), keeping the test's CPU time to its
compilations. The L = 6 and larger-P rows are in bench/results/memory.md.
"""

import sys
from pathlib import Path

import jax
import pytest

import adaptive_kernels as ak
from adaptive_kernels.solvers import Continuation, Status
from adaptive_kernels.solvers.fixed_point import TrustRegion
from adaptive_kernels.theories import get_theory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cases.memory import run_worker  # noqa: E402

LIMIT_GB = 3.0


# The workers' solves run long after compiling: they compile at XLA's default optimisation level (conftest.py).
pytestmark = pytest.mark.usefixtures("default_xla_optimisation")


def _check(rows, failure, solvers):
    assert not failure, failure
    assert [r["solver"] for r in rows] == list(solvers)
    for row in rows:
        assert row["peak_rss_mb"] < LIMIT_GB * 1024
        if row["status"] == Status.SUCCESS:
            assert row["residual"] <= 1e-8, row
        else:
            assert row["message"] != "converged"


def test_trust_region_is_the_default_deep_solver():
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 10, 12, P_test=4)
    problem = ak.make_problem(ak.FCN(12, (20,) * 4, "tanh", gamma=2.0), data, 1e-2)
    default = get_theory("adaptive").default_solver(problem)  # deep kernel form: trust-region Newton-CG + fallback
    assert isinstance(default, Continuation) and default.rule == TrustRegion()


@pytest.mark.slow
def test_deep_tanh_solves_within_3_gb_with_the_default_and_gradient_solvers():
    solvers = ("default", "gradient:20")  # QuasiNewton with CG Hessian solves: bench/results/memory.md
    _check(*run_worker(LIMIT_GB, "deep", 10, 4, solvers, timeout=3600), solvers)


def test_two_layer_tanh_gradient_solver_within_3_gb():
    solvers = ("gradient:20",)
    _check(*run_worker(LIMIT_GB, "two-layer", 60, 1, solvers, timeout=3600), solvers)
