"""Bad input gets an exception whose message names the argument and the problem."""

import jax
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


# --- issue 18: every case of the trial, through the API -------------------------------------------------------------
LINEAR = ak.FCN(3, 20, "linear")
DATA = ak.Dataset(X=X, y=X[:, 0])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ak.Dataset(X=X, y=X[:, 0] + 1j), TypeError, "y must be real, got complex"),
        (lambda: ak.Dataset(X=X, y=np.zeros((6, 0))), ValueError, r"y must not be empty, got shape \(6, 0\)"),
        (lambda: ak.Dataset(X=np.zeros((6, 0)), y=y), ValueError, r"X must not be empty, got shape \(6, 0\)"),
        (lambda: ak.Dataset(X=np.zeros((0, 3)), y=np.zeros(0)), ValueError, r"X must not be empty"),
        (lambda: ak.Dataset(X=X.astype(str), y=y), TypeError, "X must be a numeric array"),
        (lambda: ak.Dataset(X=X, y=y > 0), TypeError, "y must be a numeric array, got dtype bool"),
        (lambda: ak.gp_predict(np.eye(6) + 0j, y, 0.1), TypeError, "K must be real"),
        (lambda: ak.gp_predict(np.eye(6, dtype=int), y, 0.1), TypeError, "K must be a floating-point array"),
        (lambda: ak.gp_predict(np.ones((6, 6)), y, 1e-300), ValueError, "kappa2: K [+] kappa2 I is numerically singular"),
        (lambda: ak.solve(LINEAR, DATA, 1e300), ValueError, "kappa2 = 1e[+]300 is outside the range float64 can square"),
        (lambda: ak.solve(ak.FCN(3, 20, s_w2=1e300), DATA, 0.1), ValueError, "pre-activation variance of hidden layer 1"),
        (lambda: ak.solve(ak.FCN(3, 20, "tanh", s_w2=1e300), DATA, 0.1), ValueError, r"s_w2 \|x\|\^2/d"),
        (lambda: ak.solve(LINEAR, ak.Dataset(X=X, y=1e200 * y), 0.1), ValueError, "data.y: values up to"),
        (lambda: ak.solve(LINEAR, DATA, 0.1, init=jnp.eye(4)), ValueError, r"init: order parameters of shapes \[\(4, 4\)\]"),
        (lambda: ak.solve(LINEAR, (X, y), 0.1), TypeError, "data must be a Dataset"),
    ],
)
def test_silent_wrong_answers_and_obscure_failures_now_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_non_finite_prediction_raises_instead_of_returning_nan():
    """Training inputs repeated 10 times (a rank-4 NNGP kernel, P = 40) and kappa2 = 1e-150: K + kappa2 I is singular
    to float64, its Cholesky factor fails, and the GP mean would be NaN (before: ``predict`` returned it, ``summarize``
    failed with "f contains NaN values"). Both now name the prediction and the cause."""
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 40, 3, P_test=5)
    data = ak.Dataset(X=jnp.tile(data.X[:4], (10, 1)), y=jnp.tile(data.y[:4], 10), X_test=data.X_test,
                      y_test=data.y_test)
    arch = ak.FCN(3, 50, "erf")
    sol = ak.solve(arch, data, 1e-150, "gp")
    for call in (ak.predict, ak.summarize):
        with pytest.raises(ValueError, match="prediction: the mean output is not finite"):
            call(sol, arch, data, 1e-150)


def test_a_solution_used_with_other_data_is_rejected():
    # Sigma is d x d whatever P is, so shapes cannot tell; its stationarity residual on the other problem can.
    sol = ak.solve(LINEAR, DATA, 0.1)
    other = ak.Dataset(X=X[:4], y=X[:4, 0])
    with pytest.raises(ValueError, match="solution: not a stationary point of this problem"):
        ak.summarize(sol, LINEAR, other, 0.1)
    with pytest.raises(ValueError, match="solution: not a stationary point"):
        ak.predict(sol, LINEAR, DATA, 0.5)  # another kappa2
    with pytest.raises(ValueError, match=r"solution: order parameters of shapes \[\(3, 3\)\]"):
        ak.predict(sol, ak.FCN(4, 20), ak.Dataset(X=np.ones((6, 4)), y=y), 0.1)
    assert ak.summarize(sol, LINEAR, DATA, 0.1)["converged"] is True  # its own problem passes


def test_float16_is_computed_in_float32_with_a_warning():
    with pytest.warns(ak.PrecisionWarning, match="float16 data: JAX has no float16 linear algebra"):
        data = ak.Dataset(X=X.astype(np.float16), y=X[:, 0].astype(np.float16))
        sol = ak.solve(LINEAR, data, 0.1)
    assert sol.value.dtype == jnp.float32 and bool(sol.converged)
    reference = ak.solve(LINEAR, ak.Dataset(X=np.asarray(data.X, float), y=np.asarray(data.y, float)), 0.1)
    np.testing.assert_allclose(sol.value, reference.value, rtol=1e-3)


def test_huge_width_gives_the_nngp_and_a_lost_kernel_warns():
    # gamma = 1: the corrections ~1/N = 1e-30 are below round-off, the answer is the NNGP's (closed form, gp_predict)
    Xt = X[:3] + 0.1
    data = ak.Dataset(X=X, y=X[:, 0], X_test=Xt)
    arch = ak.FCN(3, 10**30, "erf")
    mean = ak.predict(ak.solve(arch, data, 0.1), arch, data, 0.1).mean_test
    reference = ak.gp_predict(np.asarray(ak.nngp(arch, X)), data.y, 0.1, np.asarray(ak.nngp(arch, Xt, X))).mean
    np.testing.assert_allclose(mean, reference, rtol=1e-12, atol=1e-14)
    # gamma = 2: c = 1/N = 1e-30, the kernel is below the round-off of kappa2
    with pytest.warns(ak.PrecisionWarning, match="kappa2 = 0.1 is more than 1/eps"):
        ak.solve(ak.FCN(3, 10**30, "erf", gamma=2.0), data, 0.1)


def test_cli_with_one_training_point_gives_a_result_without_the_kernel_ratio(tmp_path, capsys):
    import json

    from adaptive_kernels.cli import main

    path = tmp_path / "one.npz"
    np.savez(path, X=X[:1], y=X[:1, 0], w_star=np.eye(3)[0])
    assert main(["solve", "--data", str(path), "--width", "20", "--kappa2", "0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["converged"] is True and "kernel_eigenvalue_ratio" not in out and len(out["eigenvalue_ratio"]) == 1
