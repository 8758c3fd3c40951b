"""GP regression and observables against dense closed forms (independent formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import adaptive_kernels as ak


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X, Xs = rng.normal(size=(12, 4)), rng.normal(size=(5, 4))
    arch = ak.FCN(4, 50, "erf", s_w2=1.3)
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=12)
    return arch, X, Xs, y


def test_gp_posterior_matches_dense_inverse(problem):
    arch, X, Xs, y = problem
    K, Ks, Kss = (np.asarray(ak.nngp(arch, *a)) for a in ((X,), (Xs, X), (Xs,)))
    kappa2 = 0.05
    A = np.linalg.inv(K + kappa2 * np.eye(len(y)))
    pred = ak.gp_predict(K, y, kappa2, Ks, np.diag(Kss))
    np.testing.assert_allclose(pred.mean, Ks @ A @ y, rtol=1e-10)
    np.testing.assert_allclose(pred.variance, np.diag(Kss - Ks @ A @ Ks.T), rtol=1e-9, atol=1e-13)
    Y2 = np.stack([y, -2 * y], axis=1)  # several outputs share the kernel
    np.testing.assert_allclose(ak.gp_predict(K, Y2, kappa2, Ks).mean, Ks @ A @ Y2, rtol=1e-10)


def test_log_marginal_likelihood_matches_scipy(problem):
    arch, X, _, y = problem
    K = np.asarray(ak.nngp(arch, X))
    ref = stats.multivariate_normal(np.zeros(len(y)), K + 0.05 * np.eye(len(y))).logpdf(y)
    assert abs(float(ak.log_marginal_likelihood(K, y, 0.05)) - ref) < 1e-10


def test_linear_kernel_learns_linear_teacher():
    # Linear kernel, P >> d, kappa2 -> 0: the GP interpolates the linear teacher, L -> 1.
    data = ak.teacher_dataset(jax.random.PRNGKey(0), P=400, d=10, teacher="linear", P_test=500)
    arch = ak.FCN(10, 100, "linear")
    K, Ks = ak.nngp(arch, data.X), ak.nngp(arch, data.X_test, data.X)
    f = ak.gp_predict(K, data.y, 1e-8, Ks).mean
    assert abs(float(ak.learnability(f, data.y_test)) - 1) < 1e-6
    assert float(ak.mse(f, data.y_test)) < 1e-6


def test_eigenvalue_ratio_closed_form():
    # Sigma = I + a w w^T: along w the eigenvalue is 1 + a, elsewhere 1 -> R = 1 + a.
    d, a = 7, 2.5
    w = np.random.default_rng(1).normal(size=d)
    u = w / np.linalg.norm(w)
    assert abs(float(ak.eigenvalue_ratio(np.eye(d) + a * np.outer(u, u), 3 * w)) - (1 + a)) < 1e-12
    assert abs(float(ak.eigenvalue_ratio(2.0 * np.eye(d), w)) - 1.0) < 1e-12


def test_alignment_learnability_mse_spectrum_closed_forms():
    y = np.array([1.0, -2.0, 0.5])
    assert abs(float(ak.kernel_target_alignment(np.outer(y, y), y)) - 1) < 1e-12
    assert abs(float(ak.kernel_target_alignment(np.eye(3), y)) - 1 / np.sqrt(3)) < 1e-12
    assert abs(float(ak.learnability(0.5 * y, y)) - 0.5) < 1e-12
    assert abs(float(ak.mse(y + 1, y)) - 1) < 1e-12
    M = np.diag([1.0, 3.0, 2.0])
    np.testing.assert_allclose(ak.spectrum(M), [3.0, 2.0, 1.0])
