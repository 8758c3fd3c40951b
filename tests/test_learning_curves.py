"""Learning-curve theories vs GP regression (issue 7; THEORY.md sec. 7).

Every comparison is against an independent computation: empirical GP regression averaged over
data draws (mean +- standard error), a Nystrom spectrum vs Funk-Hecke quadrature, finite
differences for gradients, closed forms for the multiplicities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.data import polynomial_sphere_teacher, sphere_inputs, unit_vector
from adaptive_kernels.learning_curves import (
    Spectrum,
    effective_ridge,
    eigenlearning,
    empirical_learning_curve,
    empirical_spectrum,
    equivalent_kernel,
    harmonic_multiplicity,
    optimal_ridge,
    renormalised_ridge,
    sphere_spectrum,
    wilsonian_rg,
)

D = 10
SIZES = np.array([20, 200, 800])  # one compilation per size, shared by the sphere tests
N_DRAWS = 20
MAX_DEGREE = 30  # trace beyond degree 30 of the ReLU NNGP at d = 10 is ~3e-5


@pytest.fixture(scope="module")
def sphere():
    kw, kx = jax.random.split(jax.random.PRNGKey(0))
    return ak.FCN(D, 1, "relu"), unit_vector(kw, D), sphere_inputs(kx, 6000, D)


def _curve(sphere, coefficients, kappa2, noise_var, sizes=SIZES, seed=5):
    arch, w, X = sphere
    y = polynomial_sphere_teacher(X, w, coefficients)
    return empirical_learning_curve(
        arch, X, y, sizes, kappa2, key=jax.random.PRNGKey(seed), n_draws=N_DRAWS, noise_var=noise_var
    )


def test_harmonic_multiplicity_closed_forms():
    # N(d,1) = d, N(d,2) = d(d+1)/2 - 1, N(3,k) = 2k+1 (Legendre).
    assert harmonic_multiplicity(10, 1) == 10 and harmonic_multiplicity(10, 2) == 54
    assert [harmonic_multiplicity(3, k) for k in range(5)] == [1, 3, 5, 7, 9]


def test_funk_hecke_matches_nystrom_spectrum(sphere):
    """Funk-Hecke quadrature vs eigenvalues of K/M on M = 1000 sphere samples (independent).

    Degrees 0, 1, 2 occupy the top 1 + 10 + 54 Nystrom eigenvalues; their group means agree to
    5% (the Nystrom group mean fluctuates by ~sqrt(N_k/M) relative, a few %). The Nystrom
    trace E[k(x,x)] equals the Funk-Hecke one (k(1) = 1/2) to 1e-10: all diagonals are k(1).
    """
    arch, w, X = sphere
    fh = sphere_spectrum(arch, D, MAX_DEGREE, [0, 1, 1])
    ny, _ = empirical_spectrum(arch, X[:1000], polynomial_sphere_teacher(X[:1000], w, [0, 1, 1]))
    lam = np.asarray(ny.eigenvalues)
    start = 0
    for k in range(3):
        m = harmonic_multiplicity(D, k)
        np.testing.assert_allclose(lam[start : start + m].mean(), float(fh.eigenvalues[k]), rtol=0.05)
        start += m
    np.testing.assert_allclose(float(ny.trace), float(fh.trace), rtol=1e-10)
    np.testing.assert_allclose(float(fh.trace), 0.5, rtol=1e-12)


def test_eigenlearning_matches_gp_on_sphere(sphere):
    """Effective ridge vs GP regression, degree-1 and 2 target (65 modes) plus label noise 0.25.

    At P = 200 and 800 (well above the 65 learned modes) the prediction lies within
    3 SE + 5% of the measured test error and learnability (measured: |z| <= 1).
    """
    kappa2, noise_var = 0.01, 0.25
    lc = _curve(sphere, [0, 1, 1], kappa2, noise_var)
    arch = sphere[0]
    pred = eigenlearning(sphere_spectrum(arch, D, MAX_DEGREE, [0, 1, 1]), jnp.asarray(SIZES, float), kappa2, noise_var)
    for i in (1, 2):
        for got, mean, se in (
            (pred.test_error, lc.test_error, lc.test_error_se),
            (pred.learnability, lc.learnability, lc.learnability_se),
        ):
            assert abs(float(got[i]) - float(mean[i])) <= 3 * float(se[i]) + 0.05 * abs(float(mean[i])), (i, got, mean, se)


@pytest.fixture(scope="module")
def structured_curve(sphere):
    """Degrees 1, 2 and 4 (powers 1, 1, 1/4), no noise, kappa2 = 0.3."""
    return _curve(sphere, [0, 1, 1, 0, 0.5], 0.3, 0.0)


def test_equivalent_kernel_accurate_only_once_loss_reaches_kappa2(sphere, structured_curve):
    """Review Fig 1 / Cohen, Malka & Ringel 2021: the equivalent kernel holds once the loss is ~kappa2.

    kappa2 = 0.3. At P = 800 the measured loss (0.35) is at the scale of kappa2: the EK is within
    3 SE + 15% (measured: 20% low, z = -3.3). At P = 20 the loss is ~6 kappa2: the EK is off,
    more than 20% and 3 SE below the measurement (measured: 31% low, z = -7).
    Eigenlearning, for contrast, holds at both (3 SE + 10%).
    """
    lc = structured_curve
    sp = sphere_spectrum(sphere[0], D, MAX_DEGREE, [0, 1, 1, 0, 0.5])
    P = jnp.asarray(SIZES, float)
    ek = np.asarray(equivalent_kernel(sp, P, 0.3).test_error)
    el = np.asarray(eigenlearning(sp, P, 0.3).test_error)
    mean, se = np.asarray(lc.test_error), np.asarray(lc.test_error_se)
    assert mean[2] < 1.5 * 0.3 and mean[0] > 4 * 0.3
    assert abs(ek[2] - mean[2]) <= 3 * se[2] + 0.15 * mean[2]
    assert ek[0] < 0.8 * mean[0] and ek[0] < mean[0] - 3 * se[0]
    np.testing.assert_array_less(np.abs(el - mean)[[0, 2]], 3 * se[[0, 2]] + 0.1 * mean[[0, 2]])


def test_rg_cut_matches_fixed_point_iteration(sphere):
    """The RG's renormalised ridge vs a brute-force fixed-point iteration (independent solver).

    kappa2_eff = kappa2 + trace_rest + sum over modes with P lambda < r kappa2_eff of m lambda,
    r = l_c/(1 - l_c); iterating from kappa2 increases monotonically to the smallest fixed point,
    which the sorted-tail cut must reproduce (rtol 1e-12), and the kept modes must be exactly
    those with EK learnability >= l_c at kappa2_eff.
    """
    sp = sphere_spectrum(sphere[0], D, MAX_DEGREE, [0, 1, 1])
    lam, mult = np.asarray(sp.eigenvalues), np.asarray(sp.multiplicity)
    P = np.array([10.0, 100.0, 1000.0, 10000.0])
    for cutoff in (0.1, 0.5):
        ridge, keep = renormalised_ridge(sp, jnp.asarray(P), 0.01, cutoff)
        r = cutoff / (1 - cutoff)
        for i, P_ in enumerate(P):
            k_eff = 0.01
            for _ in range(200):
                k_eff = 0.01 + float(sp.trace_rest) + np.sum((mult * lam)[P_ * lam < r * k_eff])
            np.testing.assert_allclose(float(ridge[i]), k_eff, rtol=1e-12)
            np.testing.assert_array_equal(np.asarray(keep[i]), lam / (lam + k_eff / P_) >= cutoff)


def test_predicted_ridge_matches_empirical_optimum(sphere):
    """Theory-chosen kappa2 vs the empirical argmin on a half-decade grid (P = 200, noise 0.25).

    Same draws for every kappa2. Passes if the predicted optimum is within a factor 3.2 (one grid
    step) of the empirical one and the measured error there is within 3 SE of the measured
    minimum (measured: both argmins at 0.01).
    """
    grid = jnp.logspace(-3, 1, 9)
    arch = sphere[0]
    best, _ = optimal_ridge(sphere_spectrum(arch, D, MAX_DEGREE, [0, 1, 1]), 200.0, grid, noise_var=0.25)
    lc = _curve(sphere, [0, 1, 1], grid, 0.25, sizes=np.array([200]))
    err, se = np.asarray(lc.test_error[:, 0]), np.asarray(lc.test_error_se[:, 0])
    emp_best = float(grid[np.argmin(err)])
    assert 1 / 3.2 <= float(best) / emp_best <= 3.2
    chosen = int(np.argmin(np.abs(np.asarray(grid) - best)))
    assert err[chosen] <= err.min() + 3 * se[chosen]


def test_digits_theories_vs_gp():
    """Review Fig 1 on sklearn digits 3 vs 5 (+-1), ReLU NNGP, spectrum from all 365 images.

    Training sets from the 182-image train split, fixed held-out test split, kappa2 = 0.01, 30
    draws, P = 10, 20, 40 (<= pool/4, where the pool's empirical measure stands in for the
    population). Measured: eigenlearning within 3 SE + 20% (its |log ratio| <= 0.17); the RG
    (cut-off 1/2) next (|log ratio| 0.3-0.6); the equivalent kernel worst, more than 3x too low.
    The assertion is this ordering plus those tolerances.
    """
    ds = ak.load_digits_regression(classes=(3, 5), seed=0)
    arch = ak.FCN(ds.d, 1, "relu")
    sp, _ = empirical_spectrum(arch, jnp.concatenate([ds.X, ds.X_test]), jnp.concatenate([ds.y, ds.y_test]))
    sizes = np.array([10, 20, 40])
    lc = empirical_learning_curve(
        arch, ds.X, ds.y, sizes, 0.01, key=jax.random.PRNGKey(0), X_test=ds.X_test, y_test=ds.y_test, n_draws=30
    )
    P = jnp.asarray(sizes, float)
    mean, se = np.asarray(lc.test_error), np.asarray(lc.test_error_se)
    el = np.asarray(eigenlearning(sp, P, 0.01).test_error)
    rg = np.asarray(wilsonian_rg(sp, P, 0.01).test_error)
    ek = np.asarray(equivalent_kernel(sp, P, 0.01).test_error)
    np.testing.assert_array_less(np.abs(el - mean), 3 * se + 0.2 * mean)
    gap = lambda pred: np.abs(np.log(pred / mean))  # noqa: E731
    assert np.all(gap(el) < gap(rg)) and np.all(gap(rg) < gap(ek))
    assert np.all(ek < mean / 3)


def test_effective_ridge_solves_its_equation_and_has_implicit_gradient(sphere):
    """delta solves sum m lambda/(lambda+delta) + kappa2/delta = P (residual check, rtol 1e-10);
    d(test error)/d(kappa2) matches central finite differences to 1e-6 relative."""
    sp = sphere_spectrum(sphere[0], D, MAX_DEGREE, [0, 1, 1])
    P = jnp.asarray([5.0, 50.0, 500.0])
    delta = effective_ridge(sp, P, 0.01)
    lhs = jnp.sum(sp.multiplicity * sp.eigenvalues / (sp.eigenvalues + delta[:, None]), axis=1)
    np.testing.assert_allclose(lhs + (0.01 + sp.trace_rest) / delta, P, rtol=1e-10)
    f = lambda k: eigenlearning(sp, 50.0, k, noise_var=0.1).test_error  # noqa: E731
    h = 1e-6
    fd = (f(0.01 + h) - f(0.01 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(f)(0.01), fd, rtol=1e-6)


def test_bad_input_raises_clear_errors():
    sp = Spectrum(jnp.array([1.0, 0.5]), jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="^eigenvalues must be non-negative"):
        Spectrum(jnp.array([1.0, -0.1]), jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="^target_power must have one entry per eigenvalue"):
        Spectrum(jnp.array([1.0, 0.5]), jnp.array([1.0]))
    with pytest.raises(ValueError, match="^kappa2 must be positive"):
        eigenlearning(sp, 10.0, 0.0)
    with pytest.raises(ValueError, match="^kappa2 must be positive"):
        wilsonian_rg(sp, 10.0, -1.0)
    with pytest.raises(ValueError, match="^P must be positive"):
        equivalent_kernel(sp, jnp.array([10.0, 0.0]), 0.1)
    with pytest.raises(ValueError, match="^cutoff must lie"):
        wilsonian_rg(sp, 10.0, 0.1, cutoff=1.0)
    with pytest.raises(TypeError, match="^spectrum must be a Spectrum"):
        eigenlearning(np.ones(2), 10.0, 0.1)
    with pytest.raises(ValueError, match="^target_coefficients must be 1-D"):
        sphere_spectrum(ak.FCN(5, 1, "relu"), 5, 2, [0, 1, 1, 1])
    X = jnp.ones((6, 3))
    with pytest.raises(ValueError, match="^P must be at most the pool size"):
        empirical_learning_curve(ak.FCN(3, 1, "relu"), X, jnp.ones(6), [5], 0.1, key=jax.random.PRNGKey(0), n_test=2)
    with pytest.raises(ValueError, match="^kappa2 must be positive"):
        empirical_learning_curve(ak.FCN(3, 1, "relu"), X, jnp.ones(6), [2], 0.0, key=jax.random.PRNGKey(0), n_test=2)


def test_predicted_error_differentiable_in_weight_variance():
    """d(predicted test error)/d(s_w2) through the Funk-Hecke spectrum of an erf NNGP (whose shape,
    not only its scale, changes with s_w2) matches central finite differences to 1e-5 relative,
    so s_w2 can be chosen by gradient descent on the theory."""

    def predicted(s_w2):
        sp = sphere_spectrum(ak.FCN(D, 1, "erf", s_w2=s_w2), D, 12, [0, 1, 0, 0.5])
        return eigenlearning(sp, 100.0, 0.01, noise_var=0.1).test_error

    h = 1e-5
    fd = (predicted(1.0 + h) - predicted(1.0 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(predicted)(1.0), fd, rtol=1e-5)
