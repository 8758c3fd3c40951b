"""Kernel scaling by one eigendecomposition (THEORY.md sec. 3; ``actions.scaling``) against the previous
implementation: the action written with the Cholesky-based GP data term ``gp.data_term`` at the NNGP kernel of
``kernels.nngp`` (a P x P factorisation per evaluation), its stationarity equations solved by scipy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import root

import adaptive_kernels as ak
from adaptive_kernels.api import solve_problem
from adaptive_kernels.gp import data_term

KAPPA2 = 1e-2


def cholesky_reference(arch, data, kappa2, widths):
    """(u_1..u_L, S) of S(u) = sum_l (N_l/2)(u_l - log u_l) + D((prod u) K) with D from ``gp.data_term``:
    the roots of u_l dS/du_l = (N_l/2)(u_l - 1) + s dD/ds in v = log u (scipy's hybrid method,
    then Newton steps to round-off)."""
    K = ak.nngp(arch, data.X)
    N = jnp.asarray(widths, dtype=float)

    def action(v):
        u = jnp.exp(v)
        return jnp.sum(0.5 * N * (u - v)) + data_term(jnp.prod(u) * K, data.y, kappa2)

    grad, hess = jax.jit(jax.grad(action)), jax.jit(jax.hessian(action))
    out = root(lambda v: np.asarray(grad(v)), np.zeros(len(widths)), jac=lambda v: np.asarray(hess(v)),
               method="hybr", options={"xtol": 1e-12})
    v = out.x
    for _ in range(3):  # Newton polish to round-off
        v = v - np.linalg.solve(hess(v), grad(v))
    assert np.max(np.abs(grad(v))) < 1e-9 * np.max(N), (out.message, grad(v))
    return np.exp(v), float(action(v))


def _data(P, d, outputs=1, seed=0):
    data = ak.teacher_dataset(jax.random.PRNGKey(seed), P, d, "cubic")
    if outputs == 1:
        return data
    y2 = jnp.stack([data.y, jnp.sin(data.X[:, 0]) + 0.1 * data.X[:, 1]], axis=1)
    return ak.Dataset(X=data.X, y=y2)


CASES = {
    # name: (arch, P, outputs); d < P for the linear nets without bias (the factor's SVD, P - d zero eigenvalues)
    "erf-1-gamma1": (ak.FCN(8, 30, "erf", s_w2=1.3, s_a2=0.7), 40, 1),
    "erf-1-gamma2-two-outputs": (ak.FCN(8, 30, "erf", gamma=2.0), 40, 2),
    "linear-2-gamma1": (ak.FCN(8, (30, 45), "linear"), 40, 1),
    "linear-3-gamma2": (ak.FCN(8, (30, 30, 50), "linear", s_w2=0.8, gamma=2.0), 40, 1),
    "linear-1-bias-gamma2": (ak.FCN(8, 30, "linear", s_b2=0.3, gamma=2.0), 40, 1),
    "cnn-erf-gamma2": (ak.CNN(4, 2, 30, "erf", gamma=2.0), 40, 1),
    "relu-2-gamma1-d-above-P": (ak.FCN(30, (20, 25), "relu"), 20, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_solution_equals_cholesky_implementation(name):
    arch, P, m = CASES[name]
    data = _data(P, arch.d, m)
    sol = ak.solve(arch, data, KAPPA2, "scaling")
    assert bool(sol.converged)
    widths = np.atleast_1d(np.asarray(arch.widths))
    u_ref, action_ref = cholesky_reference(arch, data, KAPPA2, widths)
    u = np.atleast_1d(np.asarray(jax.tree.leaves(sol.value)))
    np.testing.assert_allclose(u, u_ref, rtol=1e-10)
    # the action up to the terms constant in u: (N_l/2)(u_l - log u_l) is what both write
    np.testing.assert_allclose(float(sol.action), action_ref, rtol=1e-10)


def test_implicit_derivatives_match_finite_differences():
    # d/d(kappa2, s_w2, s_a2, gamma, X_00, y_0) of sum_l u_l + 1e-3 S through the stationarity condition vs
    # central differences of converged solves (step 1e-5 relative, 1e-5 at 0): relative 1e-6. A linear two-layer-deep net
    # with d < P (the factor path, P - d coinciding zero eigenvalues) and an erf net (the eigendecomposition).
    for arch in (ak.FCN(6, (20, 30), "linear", gamma=1.5), ak.FCN(6, 20, "erf", gamma=1.5)):
        base = ak.make_problem(arch, _data(16, 6), KAPPA2)

        @jax.jit
        def observable(v):
            p = eqx.tree_at(lambda p: (p.kappa2, p.s_w2, p.s_a2, p.gamma), base, tuple(v[:4]))
            p = eqx.tree_at(lambda p: (p.X, p.y), p, (p.X.at[0, 0].add(v[4]), p.y.at[0].add(v[5])))
            sol = solve_problem(p, ak.Scaling())
            return sum(jax.tree.leaves(sol.value)) + 1e-3 * sol.action

        v0 = jnp.array([KAPPA2, 1.0, 1.0, 1.5, 0.0, 0.0])
        grad = np.asarray(jax.grad(observable)(v0))
        fd = []
        for i in range(6):
            h = 1e-5 * (abs(float(v0[i])) or 1.0)
            e = jnp.zeros(6).at[i].set(h)
            fd.append((observable(v0 + e) - observable(v0 - e)) / (2 * h))
        np.testing.assert_allclose(grad, np.asarray(fd), rtol=1e-6)
