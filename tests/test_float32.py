"""float32 with quadrature activations (issue 20): kernels in the input's dtype and symmetric by construction;
predict/summarize judged by float32 round-off; solves that stop in about as many steps as in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from residual_check import action_gradient_residual

KAPPA2 = 1e-2


@pytest.fixture(scope="module")
def data64():
    return ak.teacher_dataset(jax.random.PRNGKey(3), 10, 5, P_test=6)


@pytest.fixture(scope="module")
def data32(data64):
    cast = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return ak.Dataset(X=cast(data64.X), y=cast(data64.y), X_test=cast(data64.X_test), y_test=cast(data64.y_test),
                      w_star=cast(data64.w_star))


@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus"])
def test_quadrature_kernel_keeps_float32_and_is_exactly_symmetric(activation, data32, data64):
    arch = ak.FCN(5, 200, activation)
    K = ak.nngp(arch, data32.X)
    assert K.dtype == jnp.float32 and bool(jnp.all(K == K.T))
    cross = ak.nngp(arch, data32.X_test, data32.X)
    assert cross.dtype == jnp.float32 and cross.shape == (6, 10)
    # float32 round-off, not a float64 answer in disguise: within ~100 eps of the float64 kernel
    np.testing.assert_allclose(K, ak.nngp(arch, data64.X), rtol=100 * np.finfo(np.float32).eps, atol=1e-6)


@pytest.mark.parametrize("theory", ["gp", "scaling", "adaptive"])
def test_predict_and_summarize_in_float32(theory, data32, data64):
    arch = ak.FCN(5, 50, "tanh", gamma=2.0)
    sol32 = ak.solve(arch, data32, KAPPA2, theory)
    prediction = ak.predict(sol32, arch, data32, KAPPA2)
    summary = ak.summarize(sol32, arch, data32, KAPPA2, prediction)
    assert prediction.mean_test.dtype == jnp.float32 and summary["converged"] is True
    sol64 = ak.solve(arch, data64, KAPPA2, theory)
    expected = ak.summarize(sol64, arch, data64, KAPPA2)
    np.testing.assert_allclose(summary["learnability"], expected["learnability"], rtol=1e-3)
    residual = action_gradient_residual(sol32, arch, data32, KAPPA2)
    assert residual is None or residual < 1e-2  # the float64 action is stationary at the float32 solution


def test_float32_softplus_solve_stops_like_float64(data32, data64):
    # the trial's float32 softplus solve ran 1000 iterations (732 s); the float32 stopping rule is 1000 eps
    arch = ak.FCN(5, 50, "softplus", gamma=2.0)
    sol32 = ak.solve(arch, data32, KAPPA2)
    sol64 = ak.solve(arch, data64, KAPPA2)
    assert bool(sol32.converged) and bool(sol64.converged)
    assert int(sol32.iterations) <= int(sol64.iterations) + 3
    assert float(sol32.stats["residual"]) <= 1000 * np.finfo(np.float32).eps
    assert action_gradient_residual(sol32, arch, data32, KAPPA2) < 1e-2
    assert action_gradient_residual(sol64, arch, data64, KAPPA2) < 1e-8
