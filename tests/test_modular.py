"""The modular-addition teacher (``data.modular_addition``) and the quadratic activation (``activations.Quadratic``)
of issue 17's modular setting (Gromov, arXiv 2301.02679; Rubin, Seroussi & Ringel, arXiv 2310.03789).

References independent of the code under test: the pairs decoded back from the inputs and summed by integer
arithmetic; Gauss-Hermite quadrature of x^2 (exact for polynomials: the library's ``Numerical`` rule, which never
sees the closed forms) and Monte Carlo over Gaussian pairs and weight draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels import data as D
from adaptive_kernels.actions import mixture
from adaptive_kernels.activations import Numerical, Quadratic, get_activation


def test_modular_addition_pairs_targets_and_split():
    p, P = 7, 20
    data = D.modular_addition(jax.random.PRNGKey(3), p, P)
    X = np.concatenate([data.X, data.X_test])
    Y = np.concatenate([data.y, data.y_test])
    assert data.X.shape == (P, 2 * p) and data.y.shape == (P, p) and data.X_test.shape == (p * p - P, 2 * p)
    a, b = np.argmax(X[:, :p], axis=1), np.argmax(X[:, p:], axis=1)
    assert sorted(zip(a, b)) == [(i, j) for i in range(p) for j in range(p)]  # every pair once, train or test
    np.testing.assert_array_equal(np.argmax(Y, axis=1), (a + b) % p)
    np.testing.assert_allclose(np.sum(X**2, axis=1), 2 * p, rtol=1e-12)  # |x|^2 = d
    np.testing.assert_allclose(X.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(Y.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(Y.max(axis=1) - Y.min(axis=1), 1, rtol=1e-12)
    assert float(D.modular_accuracy(Y, Y)) == 1.0 and float(D.modular_accuracy(-Y, Y)) == 0.0
    other = D.modular_addition(jax.random.PRNGKey(4), p, P)
    assert not np.array_equal(other.X, data.X)  # the key orders the pairs


@pytest.mark.parametrize("p, P, match", [(1, 1, "p must be at least 2"), (5, 25, "P must be below p"),
                                         (5, 0, "P must be a positive"), (2.5, 3, "p must be a positive")])
def test_modular_addition_bad_input(p, P, match):
    with pytest.raises(ValueError, match=match):
        D.modular_addition(jax.random.PRNGKey(0), p, P)


def test_quadratic_closed_forms_against_quadrature_and_monte_carlo():
    act = get_activation("quadratic")
    assert isinstance(act, Quadratic) and act.name == "quadratic"
    reference = Numerical("square", lambda x: x**2, 8)  # Gauss-Hermite with 8 nodes integrates degree <= 15 exactly
    k11, k12, k22 = jnp.array([2.5, 0.3]), jnp.array([-1.1, 0.2]), jnp.array([0.9, 0.4])
    for ours, theirs in [(act.expectation(k11, k12, k22), reference.expectation(k11, k12, k22)),
                         (act.derivative_expectation(k11, k12, k22), reference.derivative_expectation(k11, k12, k22)),
                         (act.diagonal(k11), reference.diagonal(k11)),
                         (act.derivative_diagonal(k11), reference.derivative_diagonal(k11))]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(act(jnp.array([-3.0])), 9.0)
    np.testing.assert_allclose(act.derivative(jnp.array([-3.0])), -6.0)
    # at nonzero means (the mixture ansatz): Monte Carlo over the Gaussian pair
    mu1, mu2, c11, c12, c22 = 0.7, -0.4, 2.5, -1.1, 0.9
    L = np.linalg.cholesky(np.array([[c11, c12], [c12, c22]]))
    uv = np.array([mu1, mu2]) + np.random.default_rng(0).standard_normal((400_000, 2)) @ L.T
    f = uv[:, 0] ** 2 * uv[:, 1] ** 2
    ours = float(act.mean_expectation(*map(jnp.asarray, (mu1, mu2, c11, c12, c22))))
    assert abs(ours - f.mean()) < 4 * f.std() / np.sqrt(f.size)
    # ... and at zero means it is the NNGP map
    np.testing.assert_allclose(act.mean_expectation(0.0, 0.0, c11, c12, c22), act.expectation(c11, c12, c22))


def test_quadratic_mixture_kernel_against_weight_draws():
    """K_rho = c E_rho[(w.x)^2 (w.x')^2] of a two-component symmetrised mixture on modular inputs, against 2e5
    weights drawn from rho (components by their weights, halves +-m with equal probability)."""
    p = 5
    data = D.modular_addition(jax.random.PRNGKey(0), p, 6)
    arch = ak.FCN(2 * p, 10, "quadratic", gamma=2.0)
    problem = ak.make_problem(arch, data, 0.1)
    rng = np.random.default_rng(1)
    d = 2 * p
    Ms = []
    for s in (0.3, 0.7):
        A = rng.standard_normal((d, d)) / d
        Ms.append(mixture.encode(jnp.asarray(s), jnp.asarray(rng.standard_normal(d) / 3), A @ A.T + 0.05 * jnp.eye(d)))
    value = tuple(Ms)
    K, diag = mixture.mixture_kernel(problem, value, problem.X)
    pi, m, Sigma = (np.asarray(x) for x in mixture.components(value))
    n = 200_000
    comp = rng.choice(2, size=n, p=pi)
    sign = rng.choice([-1.0, 1.0], size=n)
    chol = np.linalg.cholesky(Sigma)
    w = sign[:, None] * m[comp] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, d)))
    phi = (w @ np.asarray(problem.X).T) ** 2  # (n, P)
    c = float(problem.readout_scale)
    sampled = c * phi.T @ phi / n
    se = c * np.sqrt(np.var(phi[:, :, None] * phi[:, None, :], axis=0) / n)
    assert np.all(np.abs(np.asarray(K) - sampled) < 5 * se)
    np.testing.assert_allclose(diag, np.diagonal(K), rtol=1e-12)
