"""Deep networks (THEORY.md sec. 3, 5): per-layer MAP kernels and deep kernel scaling.

Every comparison is against an independent formulation: a numpy/scipy solution of the
closed-form input-space stationarity (sec. 4), the input-space (d x d per layer) action,
autodiff of the plain slogdet conjugate action and the Legendre-dual full-rank primal action
(both written out in this file), closed-form Gaussian moments, and tabulated sampling results
of THEORY.md.
"""

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest
import scipy.optimize

import adaptive_kernels as ak
from adaptive_kernels.actions import deep as act
from adaptive_kernels.data import teacher_dataset
from adaptive_kernels.solvers import QuasiNewton

CONJUGATE = ak.Adaptive(form="conjugate")
KERNEL = ak.Adaptive(form="kernel")


def solve(arch, data, theory=KERNEL, solver=None, kappa2=1e-2):
    return ak.solve(arch, data, kappa2, theory, solver)


def predict(sol, arch, data, kappa2=1e-2):
    return ak.predict(sol, arch, data, kappa2)


def kernels_of(sol, arch, data, kappa2=1e-2):
    return ak.layer_kernels(sol, arch, data, kappa2)


# --- reference actions, written out from THEORY.md sec. 5 with plain slogdet / dense Cholesky -----------------------
def _kl(K, G):
    """KL(N(0, K) || N(0, G)) = 1/2 [tr(G^{-1} K) - P - log det K + log det G]."""
    Lg, Lk = jnp.linalg.cholesky(0.5 * (G + G.T)), jnp.linalg.cholesky(0.5 * (K + K.T))
    V = jsl.solve_triangular(Lg, Lk, lower=True)
    return 0.5 * (jnp.sum(V**2) - K.shape[0] - 2 * jnp.sum(jnp.log(jnp.diag(Lk))) + 2 * jnp.sum(jnp.log(jnp.diag(Lg))))


def _erf_map(C):
    d = jnp.diag(C)
    return (2 / jnp.pi) * jnp.arcsin(2 * C / jnp.sqrt(jnp.outer(1 + 2 * d, 1 + 2 * d)))


def _reference_data_term(K_out, y, kappa2):
    A = K_out + kappa2 * jnp.eye(K_out.shape[0])
    return 0.5 * y @ jnp.linalg.solve(A, y) + 0.5 * jnp.linalg.slogdet(A)[1]


def conjugate_action(arch, X, y, kappa2, kernels, conjugates):
    """S({K_l}, {Kt_l}) = sum_l [tr(Kt_l K_l) + (N_l/2) log det(I - (2/N_l) Kt_l G_l)] + D(c K_L), erf layers,
    G_l = K_erf(C_l), C_1 = s_w2 X X^T/d, C_{l+1} = s_w2 K_l (no bias)."""
    C = arch.s_w2 * X @ X.T / arch.d
    total = 0.0
    for N, K, Kt in zip(arch.widths, kernels, conjugates):
        total = total + jnp.sum(Kt * K) + 0.5 * N * jnp.linalg.slogdet(jnp.eye(K.shape[0]) - (2.0 / N) * Kt @ _erf_map(C))[1]
        C = arch.s_w2 * K
    return total + _reference_data_term(arch.readout_scale * kernels[-1], y, kappa2)


def primal_action(arch, X, y, kappa2, kernels):
    """sum_l N_l KL(N(0, K_l) || N(0, G_l)) + D(c K_L): the conjugates eliminated (full-rank kernels)."""
    C = arch.s_w2 * X @ X.T / arch.d
    total = 0.0
    for N, K in zip(arch.widths, kernels):
        total = total + N * _kl(K, _erf_map(C))
        C = arch.s_w2 * K
    return total + _reference_data_term(arch.readout_scale * kernels[-1], y, kappa2)


def sigma_saddle(X, y, N, c, kappa2, s_w2=1.0):
    """Independent numpy/scipy solution of the one-hidden-layer linear saddle (THEORY.md sec. 4):
    minimise S(Sigma) over a Cholesky factor with L-BFGS-B and the closed-form gradient
    (N/2)((d/s_w2) I - Sigma^{-1}) - (c/2) X^T (t t^T - A) X; returns Sigma and the
    stationarity residual |Sigma^{-1} - (d/s_w2) I + (c/N) X^T (t t^T - A) X|."""
    X, y = np.asarray(X), np.asarray(y)
    P, d = X.shape
    tril = np.tril_indices(d)

    def unpack(p):
        L = np.zeros((d, d))
        L[tril] = p
        return L

    def parts(Sigma):
        A = np.linalg.inv(c * X @ Sigma @ X.T + kappa2 * np.eye(P))
        return A, A @ y

    def fun(p):
        L = unpack(p)
        Sigma = L @ L.T
        A, t = parts(Sigma)
        logdet = np.linalg.slogdet(c * X @ Sigma @ X.T + kappa2 * np.eye(P))[1]
        S = 0.5 * N * ((d / s_w2) * np.trace(Sigma) - 2 * np.sum(np.log(np.abs(np.diag(L))))) + 0.5 * y @ t + 0.5 * logdet
        G = 0.5 * N * ((d / s_w2) * np.eye(d) - np.linalg.inv(Sigma)) - 0.5 * c * X.T @ (np.outer(t, t) - A) @ X
        return S, (2 * G @ L)[tril]

    p0 = np.eye(d)[tril] * np.sqrt(s_w2 / d)
    res = scipy.optimize.minimize(fun, p0, jac=True, method="L-BFGS-B", options=dict(maxiter=20000, gtol=1e-13, ftol=1e-16))
    Sigma = unpack(res.x) @ unpack(res.x).T
    A, t = parts(Sigma)
    resid = np.linalg.inv(Sigma) - (d / s_w2) * np.eye(d) + (c / N) * X.T @ (np.outer(t, t) - A) @ X
    return Sigma, np.abs(resid).max() / (d / s_w2)


# --- THEORY.md sec. 5 domain example: L = 1, mean field, P > d ----------------------------------------
@pytest.fixture(scope="module")
def domain_example():
    data = teacher_dataset(jax.random.PRNGKey(0), 90, 30, P_test=500)
    arch = ak.FCN(30, 200, "linear", gamma=2.0)
    return arch, data, solve(arch, data, CONJUGATE)


def test_forward_backward_reaches_valid_saddle_of_domain_example(domain_example):
    """d=30, N=200, gamma=2, P=90, kappa2=1e-2 (THEORY.md sec. 5): the guarded iteration from
    the NNGP must reach the in-domain saddle, equal to the input-space Sigma saddle solved
    independently with scipy (mean output to 1e-6 relative: both solvers stop at ~1e-9
    residuals; the spurious point has learnability ~ -0.015)."""
    arch, data, sol = domain_example
    assert bool(sol.converged), sol.message
    assert float(sol.domain_margin) > 0.05  # THEORY.md: +0.19 at the valid saddle
    Sigma, resid = sigma_saddle(data.X, data.y, 200, float(arch.readout_scale), 1e-2)
    assert resid < 1e-6
    c = float(arch.readout_scale)
    X, Xt, y = map(np.asarray, (data.X, data.X_test, data.y))
    t = np.linalg.solve(c * X @ Sigma @ X.T + 1e-2 * np.eye(90), y)
    f_ref = c * Xt @ Sigma @ X.T @ t
    pred = predict(sol, arch, data)
    np.testing.assert_allclose(pred.mean_test, f_ref, rtol=0, atol=1e-6 * np.abs(f_ref).max())
    # learnability of this data draw vs THEORY.md's 0.872 on another draw: draw-to-draw spread ~0.01
    assert abs(float(ak.learnability(pred.mean_test, data.y_test)) - 0.872) < 0.03


def test_primal_gradient_solver_matches_forward_backward_depth_one(domain_example):
    """The whitened primal (L-BFGS over Cholesky factors) and the conjugate fixed point are
    different formulations of one saddle: same kernels to 1e-6 relative."""
    arch, data, fb = domain_example
    primal = solve(arch, data, KERNEL, QuasiNewton())
    assert bool(primal.converged), primal.message
    K_fb, K_pr = kernels_of(fb, arch, data)[0], kernels_of(primal, arch, data)[0]
    np.testing.assert_allclose(K_pr, K_fb, atol=1e-6 * float(jnp.abs(K_fb).max()))
    problem = ak.make_problem(arch, data, 1e-2)
    constant = sum(N * r / 2 for N, r in zip(arch.widths, act.factor_ranks(problem)))
    np.testing.assert_allclose(primal.action - constant, fb.action, rtol=1e-9)


# --- deep linear nets: P x P kernels vs input space (d x d per layer) ------------------------------------
@pytest.fixture(scope="module")
def small_linear_data():
    # P = 24 > d = 12: C_1 is singular, the proportional regime of the P x P form
    return teacher_dataset(jax.random.PRNGKey(3), 24, 12, P_test=200)


@pytest.mark.parametrize("widths,gamma", [((40, 40), 2.0), pytest.param((30, 40, 50), 1.0, marks=pytest.mark.slow)])
def test_deep_linear_kernels_match_input_space_form(small_linear_data, widths, gamma):
    """Per-layer P x P kernels (whitened primal) vs one d x d Sigma_l per layer (input-space
    action, a separate implementation of the same posterior): mean test output to 1e-6
    relative (optimiser tolerances ~1e-10 on the actions)."""
    data = small_linear_data
    arch = ak.FCN(12, widths, "linear", gamma=gamma)
    kernel = solve(arch, data, KERNEL)
    weight = solve(arch, data, ak.Adaptive(form="weight"))
    assert bool(kernel.converged) and bool(weight.converged)
    f_k = predict(kernel, arch, data).mean_test
    f_w = predict(weight, arch, data).mean_test
    np.testing.assert_allclose(f_k, f_w, atol=1e-6 * float(jnp.abs(f_w).max()))
    # each layer's kernel: K_l = X Sigma_l X^T
    for K, S in zip(kernels_of(kernel, arch, data), weight.value):
        np.testing.assert_allclose(K, data.X @ S @ data.X.T, atol=1e-5 * float(jnp.abs(K).max()))


def test_kernel_scaling_reproduces_sampling_table_at_depth_one():
    """THEORY.md sec. 3 table (exact Gibbs sampling of a linear net, d=30, N=200, kappa2=1e-2,
    gamma=2, P=90: learnability 0.8706 +- 0.0001; kernel scaling 0.8704 on that draw).
    Another data draw: allow 0.02 (draw-to-draw spread of the learnability at P_test=2000)."""
    data = teacher_dataset(jax.random.PRNGKey(0), 90, 30, P_test=2000)
    arch = ak.FCN(30, 200, "linear", gamma=2.0)
    sol = solve(arch, data, ak.Scaling())
    assert bool(sol.converged)
    L = float(ak.learnability(predict(sol, arch, data).mean_test, data.y_test))
    assert abs(L - 0.8706) < 0.02, L


# --- nonlinear nets: stationarity of the reference action, duality, solver agreement --------------------------
@pytest.fixture(scope="module")
def erf_problem():
    data = teacher_dataset(jax.random.PRNGKey(5), 12, 8, teacher="cubic", P_test=50)
    arch = ak.FCN(8, (30, 20), "erf", gamma=1.0, s_w2=2.0)
    return arch, data, solve(arch, data, KERNEL, QuasiNewton()), solve(arch, data, CONJUGATE)


def test_erf_forward_backward_and_primal_agree(erf_problem):
    """Gaussian-equivalent erf net, L = 2: the fixed point and the gradient solver give the
    same per-layer kernels (1e-6 relative) and mean output."""
    arch, data, primal, fb = erf_problem
    assert bool(primal.converged) and bool(fb.converged)
    assert float(fb.domain_margin) > 0
    for Kp, Kf in zip(kernels_of(primal, arch, data), kernels_of(fb, arch, data)):
        np.testing.assert_allclose(Kp, Kf, atol=1e-6 * float(jnp.abs(Kf).max()))


@pytest.mark.parametrize("theory,solver", [(CONJUGATE, None), (KERNEL, None), (KERNEL, "gradient")])
def test_float32_data_solve_in_float32(erf_problem, theory, solver):
    """float32 data: the forward-backward and the primal solves converge (to float32's tolerances),
    return float32 kernels, and predict (in float32) the float64 mean output to 1e-3 relative."""
    arch, data, primal, _ = erf_problem
    data32 = jax.tree.map(lambda a: a.astype(jnp.float32), data)
    sol = solve(arch, data32, theory, solver)
    assert bool(sol.converged)
    assert all(K.dtype == jnp.float32 for K in kernels_of(sol, arch, data32))
    f32 = predict(sol, arch, data32).mean_test
    f64 = predict(primal, arch, data).mean_test
    assert f32.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(f32 - f64))) < 1e-3 * float(jnp.max(jnp.abs(f64)))


def test_solution_is_stationary_point_of_reference_conjugate_action(erf_problem):
    """Autodiff of the plain slogdet action S({K}, {Kt}) (sec. 5) must vanish at the solution
    in every K_l and Kt_l (relative to the gradient scale at the NNGP point, 1e-6)."""
    arch, data, _, fb = erf_problem
    kappa2 = jnp.asarray(1e-2)
    grad = jax.grad(conjugate_action, argnums=(4, 5))
    g_sol = grad(arch, data.X, data.y, kappa2, kernels_of(fb, arch, data), fb.value)
    nngp_K = kernels_of(solve(arch, data, ak.NNGP()), arch, data)
    g_0 = grad(arch, data.X, data.y, kappa2, nngp_K, tuple(jnp.zeros_like(K) for K in nngp_K))
    norm = lambda g: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(g))))  # noqa: E731
    assert norm(g_sol) < 1e-6 * norm(g_0)


def test_primal_and_conjugate_actions_agree_at_saddle(erf_problem):
    """Legendre duality: the full P x P primal sum_l N_l KL + D equals the conjugate action at
    the saddle (P <= N_l, full-rank kernels), to 1e-8 relative."""
    arch, data, _, fb = erf_problem
    kappa2 = jnp.asarray(1e-2)
    kernels = kernels_of(fb, arch, data)
    primal = primal_action(arch, data.X, data.y, kappa2, kernels)
    conj = conjugate_action(arch, data.X, data.y, kappa2, kernels, fb.value)
    np.testing.assert_allclose(primal, conj, rtol=1e-8)
    np.testing.assert_allclose(conj, fb.action, rtol=1e-8)


# --- second-order cumulant expansion -----------------------------------------------------------------------
def test_second_order_cgf_variance_matches_gaussian_moments_for_linear_phi():
    """For linear phi, Var(h^T Kt h) = 2 tr(Kt C Kt C): the Monte Carlo second-order CGF must
    match tr(Kt C) + tr((Kt C)^2)/N within 4 standard errors of the variance estimate."""
    key = jax.random.PRNGKey(1)
    P, N, S = 5, 10, 100_000
    problem = ak.make_problem(ak.FCN(3, N, "linear"), ak.Dataset(jnp.zeros((P, 3)), jnp.zeros(P)), 1.0)
    A = jax.random.normal(key, (P, P))
    C = A @ A.T / P + jnp.eye(P)
    Kt = jax.random.normal(jax.random.PRNGKey(2), (P, P))
    Kt = 0.5 * (Kt + Kt.T)
    draws = jax.random.normal(jax.random.PRNGKey(3), (S, P))
    W2 = act.second_order_cgf(problem, Kt, C, N, draws)
    exact = jnp.trace(Kt @ C) + jnp.trace(Kt @ C @ Kt @ C) / N
    var = 2 * jnp.trace(Kt @ C @ Kt @ C)
    # Var of the sample variance of a Gaussian quadratic form ~ (kurtosis) var^2 / S: bound by 12 var^2/S
    se = jnp.sqrt(12.0 / S) * var / (2 * N)
    assert abs(float(W2 - exact)) < 4 * float(se)


def test_second_order_cgf_four_point_moment_for_erf_single_input():
    """P = 1, erf: the correction is Kt^2 (E[phi^4] - E[phi^2]^2)/(2N), computed here by 1-d
    Gauss-Hermite quadrature; Monte Carlo (2e5 draws) within 2% relative."""
    N, k, kt = 10, 1.5, 0.7
    problem = ak.make_problem(ak.FCN(1, N, "erf"), ak.Dataset(jnp.zeros((1, 1)), jnp.zeros(1)), 1.0)
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    phi = np.asarray(jax.scipy.special.erf(np.sqrt(k) * z))
    exact = kt**2 * (w @ phi**4 - (w @ phi**2) ** 2) / (2 * N)
    draws = jax.random.normal(jax.random.PRNGKey(0), (200_000, 1))
    W2 = act.second_order_cgf(problem, jnp.array([[kt]]), jnp.array([[k]]), N, draws)
    mean = kt * (w @ phi**2)
    np.testing.assert_allclose(float(W2) - mean, exact, rtol=2e-2)


# --- depth one vs the two-layer API; input validation --------------------------------------------------------
def test_depth_one_reproduces_two_layer_solve(domain_example):
    """L = 1 must reproduce the two-layer adaptive solution of ``adaptive_kernels.api.solve``
    (a separate implementation: Sigma-space action): mean test output to 1e-6 relative."""
    arch, data, fb = domain_example
    two_layer = ak.solve(arch, data, 1e-2, "adaptive")
    f_two = ak.predict(two_layer, arch, data, 1e-2).mean_test
    f_deep = predict(fb, arch, data).mean_test
    np.testing.assert_allclose(f_deep, f_two, atol=1e-6 * float(jnp.abs(f_two).max()))


def test_bad_arguments_are_reported_by_name(small_linear_data):
    arch = ak.FCN(12, (20, 20), "linear")
    with pytest.raises(ValueError, match="^theory"):
        ak.solve(arch, small_linear_data, 1e-2, "wishart")
    with pytest.raises(ValueError, match="^kappa2"):
        ak.solve(arch, small_linear_data, -1.0)
    with pytest.raises(ValueError, match="^form"):
        ak.solve(ak.FCN(12, (20, 20), "erf"), small_linear_data, 1e-2, form="weight")
    with pytest.raises(ValueError, match="^form"):
        ak.Adaptive(form="dual")
    with pytest.raises(TypeError, match="^solver"):
        ak.solve(arch, small_linear_data, 1e-2, CONJUGATE, QuasiNewton())
    with pytest.raises(ValueError, match="^data"):
        ak.solve(ak.FCN(5, (20, 20)), small_linear_data, 1e-2)


def test_cholesky_with_inverse_derivatives_match_lapack_rule():
    """The matrix-product rule of ``cholesky_with_inverse`` against JAX's own Cholesky derivative (triangular solves)
    and the inverse from a triangular solve: value, first derivative and the forward-over-reverse second derivative
    that the Newton-CG products use."""
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(3), 3)
    Z = jax.random.normal(key1, (7, 7))
    A = Z @ Z.T + 0.5 * jnp.eye(7)
    dA = jax.random.normal(key2, (7, 7))
    W = jax.random.normal(key3, (7, 7))

    def ours(M):
        L, L_inv = act.cholesky_with_inverse(M)
        return jnp.sum(W * L) + jnp.sum(jnp.sin(L_inv))

    def reference(M):
        L = jnp.linalg.cholesky(M)
        return jnp.sum(W * L) + jnp.sum(jnp.sin(jsl.solve_triangular(L, jnp.eye(7), lower=True)))

    L, L_inv = act.cholesky_with_inverse(A)
    np.testing.assert_allclose(L_inv @ L, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(jax.grad(ours)(A), jax.grad(reference)(A), rtol=1e-10, atol=1e-12)
    hvp = lambda f: jax.jvp(jax.grad(f), (A,), (dA,))[1]  # noqa: E731
    np.testing.assert_allclose(hvp(ours), hvp(reference), rtol=1e-9, atol=1e-11)
