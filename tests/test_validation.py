"""Bad input gets an exception whose message names the argument and the problem."""

import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak

X = np.random.default_rng(0).normal(size=(6, 3))
y = np.ones(6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ak.FCN(3, 10, s_w2=-1.0), "s_w2 must be positive"),
        (lambda: ak.FCN(3, 10, s_a2=0.0), "s_a2 must be positive"),
        (lambda: ak.FCN(3, 10, s_b2=-0.1), "s_b2 must be non-negative"),
        (lambda: ak.FCN(3, 10, gamma=3.5), r"gamma must lie in \[0.0, 3.0\]"),
        (lambda: ak.FCN(3, 10, gamma=2.0, chi=3.0), "gamma and chi"),
        (lambda: ak.FCN(3, 0), r"widths\[0\] must be a positive integer"),
        (lambda: ak.FCN(0, 10), "d must be a positive integer"),
        (lambda: ak.FCN(3, 10, "swish-ish"), "activation: unknown name"),
        (lambda: ak.CNN(2, 3, 4, gamma=-1.0), "gamma must lie in"),
        (lambda: ak.FCN(3, 10, s_w2=float("nan")), "s_w2 must be finite"),
    ],
)
def test_architecture_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_kernel_inputs():
    arch = ak.FCN(3, 10)
    with pytest.raises(ValueError, match=r"X1 must have shape \(any, 3\)"):
        ak.nngp(arch, np.ones((4, 5)))
    with pytest.raises(ValueError, match="X1 must have 2 dimension"):
        ak.nngp(arch, np.ones(3))
    with pytest.raises(ValueError, match="X2 contains NaN"):
        ak.nngp(arch, X, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="X1 contains inf"):
        ak.nngp(arch, np.full((2, 3), np.inf))


def test_dataset_arguments():
    with pytest.raises(ValueError, match=r"y must have 6 rows to match X"):
        ak.Dataset(X=X, y=np.ones(5))
    with pytest.raises(ValueError, match="y contains NaN"):
        ak.Dataset(X=X, y=np.array([np.nan] + [1.0] * 5))
    with pytest.raises(ValueError, match=r"w_star must have shape \(3\)"):
        ak.Dataset(X=X, y=y, w_star=np.ones(4))
    with pytest.raises(ValueError, match="y_test given without X_test"):
        ak.Dataset(X=X, y=y, y_test=np.ones(2))


def test_gp_arguments():
    K = np.asarray(ak.nngp(ak.FCN(3, 10), X))
    with pytest.raises(ValueError, match="kappa2 must be positive"):
        ak.gp_predict(K, y, 0.0)
    with pytest.raises(ValueError, match=r"y must have shape \(6,\)"):
        ak.gp_predict(K, np.ones(4), 0.1)
    bad = K - 10 * np.eye(6)
    with pytest.raises(ValueError, match="K is not positive semi-definite"):
        ak.gp_predict(bad, y, 0.1)
    with pytest.raises(ValueError, match="K_cross must have shape"):
        ak.gp_predict(K, y, 0.1, np.ones((2, 5)))


def test_observable_arguments():
    with pytest.raises(ValueError, match=r"direction must have shape \(3\)"):
        ak.eigenvalue_ratio(jnp.eye(3), jnp.ones(2))
    with pytest.raises(ValueError, match="f must have shape"):
        ak.learnability(jnp.ones(3), jnp.ones(4))


def test_teacher_and_digits_arguments():
    import jax

    with pytest.raises(ValueError, match="teacher: unknown"):
        ak.teacher_dataset(jax.random.PRNGKey(0), 10, 3, teacher="quartic")
    with pytest.raises(ValueError, match="classes must be two or more distinct digits"):
        ak.load_digits_regression((3, 3))
