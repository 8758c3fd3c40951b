"""A continuous number of data points (issue 17): the tempered likelihood prod_mu N(y_mu | f_mu, kappa2)^{t_mu}
(``gp.data_term(..., weights)``, ``problem.with_weights``, ``phases.tempered_subset``) and pseudo-arclength
continuation in P (``phases.arclength(..., "P")``), checked against numpy/scipy implementations written here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arcsine_action import arcsine_action, local_minima
from arcsine_action import tempered_data_term as numpy_D

import adaptive_kernels as ak
from adaptive_kernels import phases
from adaptive_kernels.gp import data_term, data_term_low_rank, posterior
from adaptive_kernels.problem import with_weights
from adaptive_kernels.sweep import Sweep, TeacherData, build_regime, grid


@pytest.fixture(scope="module")
def kernel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 3))
    K = X @ X.T + np.exp(-0.5 * np.sum((X[:, None] - X[None]) ** 2, axis=-1))
    return X, K, rng.normal(size=9), 0.1


def test_weights_drop_a_point_and_match_the_tempered_evidence(kernel):
    X, K, y, kappa2 = kernel
    t = np.ones(9)
    t[-1] = 0.0
    # weight 0: the (P-1)-point data term plus the constant (1/2) log kappa2 (also with several outputs: m/2)
    P1 = numpy_D(K[:-1, :-1], y[:-1], kappa2, np.ones(8))
    assert float(data_term(K, y, kappa2, jnp.asarray(t))) == pytest.approx(P1 + 0.5 * np.log(kappa2), abs=1e-11)
    Y = np.stack([y, y[::-1]], axis=1)
    both = sum(numpy_D(K[:-1, :-1], Y[:-1, j], kappa2, np.ones(8)) for j in range(2))
    assert float(data_term(K, Y, kappa2, jnp.asarray(t))) == pytest.approx(both + np.log(kappa2), abs=1e-11)
    # weights 1: the plain data term; general weights: the numpy formula; Woodbury in feature space alike
    assert float(data_term(K, y, kappa2, jnp.ones(9))) == pytest.approx(float(data_term(K, y, kappa2)), abs=1e-11)
    tt = np.random.default_rng(1).uniform(0, 1, 9)
    assert float(data_term(K, y, kappa2, jnp.asarray(tt))) == pytest.approx(numpy_D(K, y, kappa2, tt), abs=1e-11)
    low = data_term_low_rank(jnp.asarray(X), y, kappa2, jnp.asarray(tt))[0]
    assert float(low) == pytest.approx(numpy_D(X @ X.T, y, kappa2, tt), abs=1e-11)
    # the tempered posterior mean is the GP's on the kept points (weight 0 drops one)
    mean = posterior(jnp.asarray(K), y, kappa2, jnp.asarray(K), weights=jnp.asarray(t)).mean
    expect = K[:, :-1] @ np.linalg.solve(K[:-1, :-1] + kappa2 * np.eye(8), y[:-1])
    np.testing.assert_allclose(mean, expect, rtol=1e-10)


def test_derivatives_in_the_weights_match_finite_differences(kernel):
    X, K, y, kappa2 = kernel
    tt = np.random.default_rng(2).uniform(0.1, 1, 9)
    h = 1e-6
    E = np.eye(9)
    function_space = jax.jit(lambda t: data_term(K, y, kappa2, t))
    weight_space = jax.jit(lambda t: data_term_low_rank(jnp.asarray(X), y, kappa2, t)[0])
    for D, K_used in ((function_space, K), (weight_space, X @ X.T)):
        g = np.asarray(jax.jit(jax.grad(D))(jnp.asarray(tt)))
        fd = [(numpy_D(K_used, y, kappa2, tt + h * e) - numpy_D(K_used, y, kappa2, tt - h * e)) / (2 * h) for e in E]
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
        # at t_mu = 0 (where T^1/2 is not differentiable) the derivative exists: the one-sided difference and the
        # closed form (posterior residual^2 + variance at mu, from the other points) / (2 kappa2)
        t0 = np.ones(9)
        t0[-1] = 0.0
        g0 = float(jax.jit(jax.grad(D))(jnp.asarray(t0))[-1])
        A = np.linalg.inv(K_used[:-1, :-1] + kappa2 * np.eye(8))
        r = y[-1] - K_used[-1, :-1] @ A @ y[:-1]
        var = K_used[-1, -1] - K_used[-1, :-1] @ A @ K_used[:-1, -1]
        assert g0 == pytest.approx((r**2 + var) / (2 * kappa2), rel=1e-10)
        one_sided = (numpy_D(K_used, y, kappa2, t0 + 1e-7 * E[-1]) - numpy_D(K_used, y, kappa2, t0)) / 1e-7
        assert g0 == pytest.approx(one_sided, rel=1e-5)
    # second derivatives (Hessians of the continuation) are finite at t_mu = 0 and match differences of gradients
    hessian, grad = jax.jit(jax.hessian(function_space)), jax.jit(jax.grad(function_space))
    fdH = (np.asarray(grad(jnp.asarray(tt + h * E[3]))) - np.asarray(grad(jnp.asarray(tt - h * E[3])))) / (2 * h)
    np.testing.assert_allclose(np.asarray(hessian(jnp.asarray(tt)))[3], fdH, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(hessian(jnp.asarray(np.eye(9)[0])))))


# The small instance of tests/test_sweep_branches.py (mean-field erf net, d = 2, N = 3, y = z + 3 He3(z),
# kappa2 = 0.01, Gaussian ansatz), 17 points: the minimum reached from the prior ends at a fold in P near 16.09.
RECIPE = TeacherData("cubic", d=2, P_test=20, eps=3.0)


def test_fold_in_P_is_where_the_independent_tempered_action_loses_a_minimum():
    point = Sweep(grid(theory="adaptive", activation="erf", P=17, width=3, gamma=2.0, kappa2=[0.01]), RECIPE).points[0]
    regime = build_regime(point, RECIPE)
    seen = []
    arc = phases.arclength(regime.arch, regime.data, 0.01, "P", start="prior", at=17, bounds=(15, 17),
                           direction=-1, step=0.05, steps=12, scale=1.0, solver=ak.Newton(), callback=seen.append)
    # the callback got every point as it was accepted, already reported in P (with the constant removed)
    assert [(p.parameter, p.coordinate, p.action) for p in seen] == [(p.parameter, p.coordinate, p.action)
                                                                      for p in arc.points]
    (fold,) = arc.folds
    assert fold.refined and abs(fold.eigenvalue) < 1e-6 and 16 < fold.parameter < 17
    kinds = [p.kind for p in arc.points]
    assert kinds[0] == "minimum" and "saddle" in kinds and kinds.index("saddle") == fold.after
    X, y = np.asarray(regime.data.X), np.asarray(regime.data.y)

    def count(P):  # minima of the action of the first 16 points and point 17 at weight P - 16
        t = np.clip(P - np.arange(17), 0, 1)
        return len(local_minima(arcsine_action(X, y, 3, 2.0, 0.01, t), 10))

    assert count(fold.parameter + 2e-3) == count(fold.parameter - 2e-3) + 1
    # at an integer P the reported action is the P-point action (the constant of the dropped points removed)
    first = arc.points[0]
    L = np.linalg.cholesky(np.asarray(first.value))
    u = np.array([np.log(L[0, 0]), L[1, 0], np.log(L[1, 1])])
    assert first.action == pytest.approx(arcsine_action(X, y, 3, 2.0, 0.01)(u), rel=1e-10)


def test_weights_are_refused_where_not_implemented():
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 6, 3, teacher="linear")
    problem = ak.make_problem(ak.FCN(3, 4, "erf"), data, 0.1)
    with pytest.raises(ValueError, match="weights"):
        with_weights(problem, jnp.ones(5))
    with pytest.raises(ValueError, match="weights"):
        with_weights(problem, jnp.full(6, 1.5))
    weighted = with_weights(problem, jnp.linspace(0, 1, 6))
    for theory in (ak.Scaling(), ak.Adaptive(form="kernel"), ak.Adaptive(loops=1)):
        with pytest.raises(ValueError, match="weights"):
            theory.problem(weighted)
