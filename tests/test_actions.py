"""Actions of the two-layer theories against independent formulations (THEORY.md secs. 2-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions import ScaledKernel, ScalingAction, TwoLayerAdaptiveAction, resolve_space
from adaptive_kernels.gp import data_term


def two_layer_problem(arch, data, kappa2, space="auto"):
    """(problem, adaptive action evaluated in ``space``)."""
    problem = ak.make_problem(arch, data, kappa2)
    return problem, TwoLayerAdaptiveAction(resolve_space(space, problem))


def _random_spd(key, n, scale):
    A = jax.random.normal(key, (n, n))
    return scale * (jnp.eye(n) + A @ A.T / n)


@pytest.fixture(scope="module")
def data():
    return ak.teacher_dataset(jax.random.PRNGKey(0), 14, 6, P_test=5)


@pytest.mark.parametrize("arch", [ak.FCN(6, 20, "linear", gamma=1.5), ak.CNN(3, 2, 20, "linear", gamma=2.0)],
                         ids=["fcn", "cnn"])
def test_weight_and_function_space_actions_agree(arch, data):
    # Woodbury/Sylvester (d x d) vs Cholesky of the P x P kernel: the same number up to round-off.
    n = 6 if isinstance(arch, ak.FCN) else 3
    Sigma = _random_spd(jax.random.PRNGKey(1), n, 1.0 / n)
    (problem, weight), (_, function) = (two_layer_problem(arch, data, 0.05, space) for space in ("weight", "function"))
    vw, gw = jax.value_and_grad(weight)(Sigma, problem)
    vf, gf = jax.value_and_grad(function)(Sigma, problem)
    np.testing.assert_allclose(vw, vf, rtol=1e-11)
    np.testing.assert_allclose(gw, gf, rtol=1e-9, atol=1e-12)
    # kernel scaling: the factor Z (K = Z Z^T, Woodbury) against the P x P kernel
    Z = problem.weight_space_factor(problem.prior_covariance())
    low, full = (ScaledKernel(k, problem.y, problem.kappa2, problem.widths, r)
                 for k, r in ((Z, True), (problem.nngp_kernel().nngp, False)))
    vw, gw = jax.value_and_grad(ScalingAction())(jnp.asarray(1.7), low)
    vf, gf = jax.value_and_grad(ScalingAction())(jnp.asarray(1.7), full)
    np.testing.assert_allclose(vw, vf, rtol=1e-11)
    np.testing.assert_allclose(gw, gf, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", [ak.FCN(6, 20, "erf", s_w2=1.3, s_a2=0.7, gamma=1.5),
                                  ak.CNN(3, 2, 20, "relu", gamma=1.0)], ids=["fcn-erf", "cnn-relu"])
def test_prior_kernel_and_gp_action_are_the_nngp(arch, data):
    # At Sigma_0 = (s_w2/n) I the adaptive kernel is the NNGP of kernels.nngp, and the GP action
    # is minus gp.log_marginal_likelihood without (P/2) log 2 pi (both independent modules).
    problem, _ = two_layer_problem(arch, data, 0.05)
    K = ak.nngp(arch, data.X)
    np.testing.assert_allclose(problem.two_layer_kernel(problem.prior_covariance()).nngp, K, rtol=1e-12, atol=1e-14)
    cross = ak.nngp(arch, data.X_test, data.X)
    np.testing.assert_allclose(problem.two_layer_kernel(problem.prior_covariance(), data.X_test, data.X).nngp, cross,
                               rtol=1e-12, atol=1e-14)
    lml = ak.log_marginal_likelihood(K, data.y, 0.05)
    np.testing.assert_allclose(ak.NNGP().action(problem), -lml - 0.5 * data.P * np.log(2 * np.pi), rtol=1e-12)


def test_adaptive_erf_kernel_matches_monte_carlo(data):
    # K_Sigma = c E_{w ~ N(0, Sigma)}[phi(w.x) phi(w.x')]: 4e5 Gaussian weight draws, 5 standard errors.
    arch = ak.FCN(6, 20, "erf", gamma=1.5)
    problem, _ = two_layer_problem(arch, data, 0.05)
    Sigma = _random_spd(jax.random.PRNGKey(2), 6, 0.5)
    W = jax.random.normal(jax.random.PRNGKey(3), (400_000, 6)) @ jnp.linalg.cholesky(Sigma).T
    features = jax.scipy.special.erf(data.X[:5] @ W.T)
    products = features[:, None, :] * features[None, :, :]
    c = float(arch.readout_scale)
    mc, se = c * products.mean(-1), c * products.std(-1) / np.sqrt(W.shape[0])
    theory = problem.two_layer_kernel(Sigma, data.X[:5]).nngp
    assert np.all(np.abs(theory - mc) < 5 * se + 1e-12)


def test_entropy_is_width_times_gaussian_kl(data):
    # (N/2)[a tr Sigma - log det Sigma] = N KL(N(0,Sigma) || N(0, I/a)) + (N/2) n (1 + log a):
    # the KL written out from its textbook formula.
    arch = ak.FCN(6, 20, "linear", s_w2=2.0)
    problem, action = two_layer_problem(arch, data, 0.05)
    Sigma = np.asarray(_random_spd(jax.random.PRNGKey(4), 6, 0.3))
    a, n, N = 6 / 2.0, 6, 20
    kl = 0.5 * (a * np.trace(Sigma) - n - np.linalg.slogdet(a * Sigma)[1])
    expected = N * kl + 0.5 * N * n * (1 + np.log(a))
    np.testing.assert_allclose(action.entropy(jnp.asarray(Sigma), problem), expected, rtol=1e-12)


def test_invalid_space_and_arguments(data):
    with pytest.raises(ValueError, match="^space"):
        two_layer_problem(ak.FCN(6, 20, "erf"), data, 0.05, space="weight")
    with pytest.raises(ValueError, match="^space"):
        two_layer_problem(ak.FCN(6, 20, "linear"), data, 0.05, space="dual")
    with pytest.raises(ValueError, match="^kappa2"):
        two_layer_problem(ak.FCN(6, 20, "linear"), data, -1.0)
    with pytest.raises(ValueError, match="^data.X"):
        two_layer_problem(ak.FCN(7, 20, "linear"), data, 0.05)
    with pytest.raises(ValueError, match="^arch"):
        ak.solve(ak.FCN(6, 20, "linear", s_b2=0.1), data, 0.05, "adaptive")


@pytest.mark.parametrize("outputs", [1, 2], ids=["y-vector", "y-matrix"])
def test_data_term_gradient_and_hessian_match_autodiff_of_the_marginal_likelihood(outputs):
    # data_term has a hand-written VJP (dD/dK = (k A - t t^T)/2, dD/dy = t, dD/dkappa2 = tr dD/dK);
    # reference: autodiff through the Cholesky of gp.log_marginal_likelihood (an independent module),
    # D = -LML - (kP/2) log 2 pi. First and second derivatives (a Hessian-vector product, which
    # differentiates the VJP itself) agree to round-off (rtol 1e-9); dD/dkappa2 also matches a central
    # finite difference (step 1e-6 relative: truncation ~1e-12, round-off ~1e-10 relative). Derivatives
    # in K are compared by their symmetric parts: cho_factor reads one triangle, so the reference puts
    # each off-diagonal derivative into that triangle alone.
    def sym(M):
        return 0.5 * (M + M.T) if M.shape == (P, P) else M

    P = 9
    K = _random_spd(jax.random.PRNGKey(3), P, 0.3)
    y = jax.random.normal(jax.random.PRNGKey(4), (P, outputs) if outputs > 1 else (P,))
    kappa2 = 0.05

    def reference(K, y, kappa2):
        return -ak.log_marginal_likelihood(K, y, kappa2) - 0.5 * outputs * P * jnp.log(2 * jnp.pi)

    np.testing.assert_allclose(data_term(K, y, kappa2), reference(K, y, kappa2), rtol=1e-12)
    ours, theirs = (jax.grad(f, argnums=(0, 1, 2))(K, y, kappa2) for f in (data_term, reference))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(sym(a), sym(b), rtol=1e-9, atol=1e-12)
    V = jax.random.normal(jax.random.PRNGKey(5), (P, P))
    ours, theirs = (jax.jvp(lambda k: jax.grad(f)(k, y, kappa2), (K,), (V + V.T,))[1] for f in (data_term, reference))
    np.testing.assert_allclose(sym(ours), sym(theirs), rtol=1e-9, atol=1e-12)
    h = 1e-6 * kappa2
    fd = (data_term(K, y, kappa2 + h) - data_term(K, y, kappa2 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(data_term, argnums=2)(K, y, kappa2), fd, rtol=1e-7)
