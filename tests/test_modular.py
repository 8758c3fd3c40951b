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


def test_fourier_projectors_and_concentration():
    """The frequency projectors of Z_p against their defining properties (rank 4, orthogonal, summing to the
    projector onto the centred inputs' span, which the inputs themselves span), and the concentration of single
    waves (1) and of the isotropic second moment (1/K)."""
    from adaptive_kernels import phases

    p = 7
    Ps = [np.asarray(D.modular_fourier_projector(p, k)) for k in (1, 2, 3)]
    for i, Pk in enumerate(Ps):
        np.testing.assert_allclose(Pk @ Pk, Pk, atol=1e-12)
        assert round(np.trace(Pk)) == 4
        for Pj in Ps[i + 1:]:
            np.testing.assert_allclose(Pk @ Pj, 0, atol=1e-12)
    data = D.modular_addition(jax.random.PRNGKey(0), p, 48)
    X = np.concatenate([data.X, data.X_test])
    U, s, _ = np.linalg.svd(X.T, full_matrices=False)
    span = U[:, s > 1e-8]  # the inputs span 2(p - 1) dimensions: both halves minus their constant vectors
    np.testing.assert_allclose(sum(Ps), span @ span.T, atol=1e-12)
    n = np.arange(p)
    wave = np.r_[np.cos(2 * np.pi * 3 * n / p + 0.4), np.sin(2 * np.pi * 3 * n / p - 1.0)]  # one neuron, k = 3
    np.testing.assert_allclose(phases.fourier_concentration(jnp.outer(wave, wave), p), 1.0, rtol=1e-12)
    np.testing.assert_allclose(phases.fourier_concentration(jnp.eye(2 * p), p), 1 / 3, rtol=1e-12)
    with pytest.raises(ValueError, match="k must be a frequency"):
        D.modular_fourier_projector(p, 4)


def test_equal_weight_mixture_gauge_and_identity():
    """``along="equal"``: the weights are 1/K whatever the s_k, which only enter through the gauge
    (N/2)(a s_k - 1 - log a s_k) (closed form); at s_k = 1/a it is the free mixture's action; a permuted state is
    one point for the deduplication; the Fourier start is a valid state whose components carry one frequency."""
    from adaptive_kernels import phases

    p = 5
    data = D.modular_addition(jax.random.PRNGKey(0), p, 12)
    arch = ak.FCN(2 * p, 4, "quadratic", gamma=2.0)
    problem = ak.make_problem(arch, data, 0.1)
    a, N = float(problem.prior_precision), 4
    equal = mixture.mixture_action(2, 64, 0, problem, along="equal")
    free = mixture.mixture_action(2, 64, 0, problem, along="free")
    value = phases.fourier_state(problem, p, gain=3.0, rest=0.4)
    ak.Adaptive(measure="mixture", components=2, along="equal").check_value(value, problem, "value")
    np.testing.assert_allclose(equal.total(value, problem), free.total(value, problem), rtol=1e-12)
    _, m, Sigma = mixture.decode(value[1])
    moved = (value[0], mixture.encode(jnp.asarray(1.3 / a), m, Sigma))
    np.testing.assert_allclose(equal.total(moved, problem) - equal.total(value, problem),
                               0.5 * N * (1.3 - 1 - np.log(1.3)), rtol=1e-9)
    assert float(free.total(moved, problem)) != pytest.approx(float(free.total(value, problem)), rel=1e-6)
    assert phases.distance(value, value[::-1], ak.Adaptive(measure="mixture", components=2, along="equal")) < 1e-12
    pi, m, Sigma = mixture.components(value)
    np.testing.assert_allclose(phases.fourier_concentration(Sigma, p), 3.0 * 4 / (3.0 * 4 + 0.4 * 4), rtol=1e-12)
    with pytest.raises(ValueError, match="p: the inputs have d = 10"):
        phases.fourier_state(problem, 7)
