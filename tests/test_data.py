"""Data sets and teachers: moments by Monte Carlo against closed forms; the digits loader."""

import jax
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels import data as akd


def test_cubic_teacher_moments():
    # z ~ N(0,1): He3 is orthogonal to z and E[He3^2] = 3! = 6, so E[y z] = 1, E[y He3(z)] = 6 eps.
    eps = 0.3
    ds = ak.teacher_dataset(jax.random.PRNGKey(0), P=10, d=20, teacher="cubic", P_test=200000, eps=eps)
    z = np.asarray(ds.X_test @ ds.w_star)
    y = np.asarray(ds.y_test)
    assert abs(np.linalg.norm(ds.w_star) - 1) < 1e-12
    for feature, expected in ((z, 1.0), (z**3 - 3 * z, 6 * eps)):
        samples = y * feature
        se = samples.std() / np.sqrt(len(samples))
        assert abs(samples.mean() - expected) < 4 * se


def test_gegenbauer_targets_are_orthonormal_on_the_sphere():
    X = np.asarray(akd.sphere_inputs(jax.random.PRNGKey(1), 200000, 6))
    w = np.asarray(akd.unit_vector(jax.random.PRNGKey(2), 6))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), np.sqrt(6), rtol=1e-12)
    Q = np.stack([np.asarray(akd.polynomial_sphere_teacher(X, w, [0] * k + [1])) for k in range(4)])
    gram = Q @ Q.T / X.shape[0]
    np.testing.assert_allclose(gram, np.eye(4), atol=0.02)  # Monte Carlo SE ~ 0.005


def test_digits_binary_and_multiclass():
    ds = ak.load_digits_regression((3, 8), n_train=200)
    assert ds.X.shape[0] == 200 and set(np.unique(ds.y)) == {-1.0, 1.0}
    assert ds.X.shape[0] + ds.X_test.shape[0] == 357  # 183 threes + 174 eights in sklearn's set
    np.testing.assert_allclose(np.mean(np.sum(np.concatenate([ds.X, ds.X_test]) ** 2, 1)) / ds.d, 1.0)
    multi = ak.load_digits_regression(None)
    assert multi.y.shape[1] == 10 and multi.X.shape[0] + multi.X_test.shape[0] == 1797
