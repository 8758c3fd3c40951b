"""Gaussian-process regression with a fixed kernel (THEORY.md sec. 2).

    A = (K + kappa2 I)^{-1},  t = A y,  mean f(x*) = k*^T t,  variance k** - k*^T A k*
    log p(y) = -1/2 y^T A y - 1/2 log det(K + kappa2 I) - P/2 log(2 pi)

All solves go through one Cholesky factor; no explicit inverse is formed.
``y`` may be (P,) or (P, K) for several outputs sharing the kernel.

The data term of every action (THEORY.md secs. 3-5) is the GP negative log marginal likelihood without its
constant, written once here (:func:`data_term`):

    D(K) = (1/2) tr y^T (K + kappa2 I)^{-1} y + (m/2) log det(K + kappa2 I),   m outputs,
    dD/dK = (m A - t t^T)/2,   A = (K + kappa2 I)^{-1},  t = A y   (Rasmussen & Williams 2006, eq. 5.9).

Tempered likelihood (optional ``weights`` t_mu in [0, 1], issue 17: a continuous number of data points). With the
likelihood prod_mu N(y_mu | f_mu, kappa2)^{t_mu} and f ~ GP(0, K): N(y|f, kappa2)^t = N(y|f, kappa2/t) times a
factor free of f, so the evidence is N(y | 0, K + kappa2 T^{-1}), T = diag(t), up to K-independent factors; with
K + kappa2 T^{-1} = T^{-1/2} (Kt + kappa2 I) T^{-1/2} its negative logarithm is, up to a constant that depends on
t and kappa2 but not on K,

    D_t(K) = (1/2) tr yt^T (Kt + kappa2 I)^{-1} yt + (m/2) log det(Kt + kappa2 I),  Kt = T^1/2 K T^1/2, yt = T^1/2 y.

t = 1 is D; t_mu = 0 empties row and column mu, which then adds (m/2) log kappa2 only (the point is dropped).
D_t is analytic in t (also at t_mu = 0, where T^1/2 is not): :func:`tempered_precision` carries the derivatives.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels._validation import (
    check_array, check_finite_result, check_magnitude, check_positive, check_psd, is_traced,
)


class GPPrediction(eqx.Module):
    """Posterior mean (P*,) or (P*, K) and marginal variance (P*,) at test points."""

    mean: jnp.ndarray
    variance: jnp.ndarray | None


@jax.custom_vjp
def quadratic_and_logdet(A, b):
    """(tr b^T A^{-1} b, log det A) of a symmetric positive-definite A (P, P), b (P,) or (P, K),
    from one Cholesky factor (NaN if A is not positive definite).

    The gradient is written out rather than differentiated through the factorisation (which
    costs ~3-10x the value): with beta = A^{-1} b (Rasmussen & Williams 2006, eq. 5.9),

        d quad / dA = -beta beta^T,   d logdet / dA = A^{-1},   d quad / db = 2 beta.

    The rule is itself differentiable (Hessian-vector products, implicit derivatives). Used by
    the GP data term of every action and by the samplers' Gaussian evidence.
    """
    return quadratic_and_logdet_factored(A, b)[0]


def logdet_from_cholesky(L):
    """log det of L L^T from its (triangular) Cholesky factor L."""
    return 2 * jnp.sum(jnp.log(jnp.diagonal(L)))


def quadratic_and_logdet_factored(A, b):
    """((quad, log det A), (factor, beta)): the values with the Cholesky factor of A and beta = A^{-1} b,
    for callers that reuse them (the forward half of :func:`quadratic_and_logdet`'s rule)."""
    # A is symmetric: factor it as given (jnp.linalg.cholesky's symmetrisation was a transposing copy costing
    # ~1/4 of the factorisation at P = 1000), and read it transposed, which matches LAPACK's layout.
    factor = jax.lax.linalg.cholesky(A.T, symmetrize_input=False)
    beta = jsl.cho_solve((factor, True), b)
    return (jnp.sum(b * beta), logdet_from_cholesky(factor)), (factor, beta)


def quadratic_and_logdet_pullback(residuals, cotangents):
    """(dA, db) for cotangents (g_quad, g_logdet), from the (factor, beta) of
    :func:`quadratic_and_logdet_factored` (the backward half of :func:`quadratic_and_logdet`'s rule)."""
    factor, beta = residuals
    g_quad, g_logdet = cotangents
    inverse = jsl.cho_solve((factor, True), jnp.eye(factor.shape[0], dtype=factor.dtype))
    B = beta.reshape(beta.shape[0], -1)
    return g_logdet * inverse - g_quad * (B @ B.T), 2 * g_quad * beta


quadratic_and_logdet.defvjp(quadratic_and_logdet_factored, quadratic_and_logdet_pullback)


def outputs(y) -> int:
    """m: the number of output columns of y ((P,) -> 1)."""
    return 1 if y.ndim == 1 else y.shape[1]


def _regularised(K, kappa2):
    return K + kappa2 * jnp.eye(K.shape[0], dtype=K.dtype)


def data_term(K, y, kappa2, weights=None):
    """D(K) (module docstring): one Cholesky, with the closed-form gradient of :func:`quadratic_and_logdet`;
    with ``weights`` (P,) in [0, 1] the tempered D_t(K) (module docstring, :func:`tempered_precision`)."""
    if weights is not None:
        B, logdet = tempered_precision(K, weights, kappa2)
        return 0.5 * jnp.sum(y * (B @ y)) + 0.5 * outputs(y) * logdet
    quad, logdet = quadratic_and_logdet(_regularised(K, kappa2), y)
    return 0.5 * quad + 0.5 * outputs(y) * logdet


@jax.custom_jvp
def tempered_precision(K, weights, kappa2):
    """(B, log det(Kt + kappa2 I)) of the tempered data term (module docstring), with

        B = (K + kappa2 T^{-1})^{-1} = T^1/2 (Kt + kappa2 I)^{-1} T^1/2,   D_t = (1/2) tr y^T B y + (m/2) log det,

    from one Cholesky factor. Derivatives in a form regular at t_mu = 0 (T^{-1} eliminated with
    kappa2 T^{-1} B = I - K B), so that every order of them exists there:

        dB = -B dK B + (1/kappa2) (I - B K) diag(dt) (I - K B) - (dkappa2/kappa2) (B - B K B),
        dlogdet = tr(B dK) + (1/kappa2) sum_mu (K - K B K)_mu,mu dt_mu + (dkappa2/kappa2) (P - tr B K)

    (d(K + kappa2 T^{-1}) = dK - kappa2 T^{-2} dT + T^{-1} dkappa2, and log det(Kt + kappa2) = log det(K +
    kappa2 T^{-1}) + log det T). At t = 1: B = A, dD/dt_mu = ((y - K B y)_mu^2 + (K - K B K)_mu,mu)/(2 kappa2):
    the posterior's squared residual plus its variance at mu over 2 kappa2."""
    root = jnp.sqrt(weights)
    factor = jax.lax.linalg.cholesky(_regularised(root[:, None] * K * root[None, :], kappa2), symmetrize_input=False)
    inverse = jsl.cho_solve((factor, True), jnp.eye(K.shape[0], dtype=K.dtype))
    return root[:, None] * inverse * root[None, :], logdet_from_cholesky(factor)


@tempered_precision.defjvp
def _tempered_precision_jvp(primals, tangents):
    K, weights, kappa2 = primals
    dK, dt, dkappa2 = tangents
    B, logdet = tempered_precision(K, weights, kappa2)
    eye = jnp.eye(K.shape[0], dtype=K.dtype)
    BK = B @ K
    BKB = BK @ B
    left = eye - BK  # (I - B K); its transpose is I - K B (B, K symmetric)
    dB = (-B @ dK @ B + (left * dt[None, :]) @ left.T / kappa2 - dkappa2 * (B - BKB) / kappa2)
    dlogdet = (jnp.sum(B * dK) + jnp.sum(jnp.diagonal(K - K @ BK) * dt) / kappa2
               + dkappa2 * (K.shape[0] - jnp.trace(BK)) / kappa2)
    return (B, logdet), (dB, dlogdet)


def data_term_with_gradient(K, y, kappa2):
    """(D(K), dD/dK, (factor, t)): :func:`data_term` with its closed-form gradient, the Cholesky factor of
    K + kappa2 and t = (K + kappa2)^{-1} y, for callers that reuse them."""
    (quad, logdet), residuals = quadratic_and_logdet_factored(_regularised(K, kappa2), y)
    m = outputs(y)
    grad, _ = quadratic_and_logdet_pullback(residuals, (0.5, 0.5 * m))
    return 0.5 * quad + 0.5 * m * logdet, grad, residuals


def data_term_low_rank(Z, y, kappa2, weights=None):
    """(D(Z Z^T), (L, alpha)) for Z (P x m), cost m^3 + P m^2 (Woodbury and Sylvester's determinant identity):

        (K + kappa2)^{-1} = (I - Z (kappa2 I_m + Z^T Z)^{-1} Z^T)/kappa2,
        log det(K + kappa2 I_P) = (P - m) log kappa2 + log det(kappa2 I_m + Z^T Z),

    with L the Cholesky factor of kappa2 I_m + Z^T Z and alpha = (kappa2 I_m + Z^T Z)^{-1} Z^T y. With
    t = (y - Z alpha)/kappa2 = (K + kappa2)^{-1} y, y^T t = kappa2 |t|^2 + |alpha|^2 (Z^T t = alpha): a sum of
    positive terms, free of the cancellation in (y^T y - y^T Z alpha)/kappa2.

    ``weights`` (P,): the tempered D_t (module docstring) is the same with Z -> T^1/2 Z, y -> T^1/2 y, written
    without T^1/2 (so that it is analytic at t_mu = 0): Z^T T Z, alpha = (kappa2 + Z^T T Z)^{-1} Z^T T y and
    kappa2 |t|^2 = sum_mu t_mu (y - Z alpha)_mu^2 / kappa2.
    """
    m = Z.shape[1]
    Zw = Z if weights is None else weights[:, None] * Z  # T Z
    gram = Z.T @ Zw
    L = jnp.linalg.cholesky(gram + kappa2 * jnp.eye(m, dtype=gram.dtype))
    alpha = jsl.cho_solve((L, True), Zw.T @ y)
    t = (y - Z @ alpha) / kappa2
    if weights is None:
        quadratic = kappa2 * jnp.sum(t**2) + jnp.sum(alpha**2)
    else:
        quadratic = kappa2 * jnp.sum(weights.reshape((-1,) + (1,) * (y.ndim - 1)) * t**2) + jnp.sum(alpha**2)
    logdet = (y.shape[0] - m) * jnp.log(kappa2) + logdet_from_cholesky(L)
    return 0.5 * quadratic + 0.5 * outputs(y) * logdet, (L, alpha)


def posterior(K, y, kappa2, K_cross, K_test_diag=None, weights=None) -> GPPrediction:
    """GP posterior mean K_cross (K + kappa2)^{-1} y and variance K_test_diag - diag(K_cross A K_cross^T),
    without input checks (for kernels the library built itself; :func:`gp_predict` checks user input).
    ``weights``: the tempered likelihood's posterior (module docstring), A -> B of :func:`tempered_precision`."""
    if weights is not None:
        B = tempered_precision(K, weights, kappa2)[0]
        var = None if K_test_diag is None else K_test_diag - jnp.sum((K_cross @ B) * K_cross, axis=1)
        return GPPrediction(mean=K_cross @ (B @ y), variance=var)
    cf = _factor(K, kappa2)
    mean = K_cross @ jsl.cho_solve(cf, y)
    var = None
    if K_test_diag is not None:
        V = jsl.solve_triangular(cf[0], K_cross.T, lower=True)
        var = K_test_diag - jnp.sum(V**2, axis=0)
    return GPPrediction(mean=mean, variance=var)


def _factor(K, kappa2):
    P = K.shape[0]
    return jsl.cho_factor(K + kappa2 * jnp.eye(P, dtype=K.dtype), lower=True)


def _check(K, y, kappa2):
    check_positive("kappa2", kappa2)
    K = check_array("K", K, ndim=2, floating=True)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    y = check_array("y", y)
    if y.ndim not in (1, 2) or y.shape[0] != K.shape[0]:
        raise ValueError(f"y must have shape ({K.shape[0]},) or ({K.shape[0]}, K) to match K, got {y.shape}")
    if not is_traced(K):
        check_magnitude("K", K)
        check_magnitude("y", y, K.dtype)
        check_psd("K", K)
    return K, y


def _singular(K, kappa2) -> str:
    return (f"K + kappa2 I is numerically singular: kappa2 = {float(kappa2):.3g} is below the round-off of K "
            f"(largest entry {float(jnp.max(jnp.abs(K))):.3g}, {K.dtype}); raise kappa2")


def gp_predict(K, y, kappa2, K_cross=None, K_test_diag=None) -> GPPrediction:
    """GP posterior at test points.

    Args:
        K: (P, P) train kernel.  y: (P,) or (P, K) targets.  kappa2: noise variance > 0.
        K_cross: (P*, P) test-train kernel; omitted -> predictions on the training inputs.
        K_test_diag: (P*,) test variances k(x*, x*); omitted -> no variance returned
            (on the training inputs, diag(K) is used).
    """
    K, y = _check(K, y, kappa2)
    if K_cross is None:
        K_cross, K_test_diag = K, jnp.diagonal(K)
    K_cross = check_array("K_cross", K_cross, ndim=2, shape=(None, K.shape[0]), floating=True)
    if K_test_diag is not None:
        K_test_diag = check_array("K_test_diag", K_test_diag, ndim=1, shape=(K_cross.shape[0],), floating=True)
    for name, block in (("K_cross", K_cross), ("K_test_diag", K_test_diag)):
        check_magnitude(name, block, K.dtype)
    out = posterior(K, y, kappa2, K_cross, K_test_diag)
    check_finite_result("kappa2", out, lambda: _singular(K, kappa2))
    return out


def log_marginal_likelihood(K, y, kappa2):
    """log N(y | 0, K + kappa2 I), summed over output columns if y is (P, K)."""
    K, y = _check(K, y, kappa2)
    out = -data_term(K, y, kappa2) - 0.5 * outputs(y) * K.shape[0] * jnp.log(2 * jnp.pi)
    check_finite_result("kappa2", out, lambda: _singular(K, kappa2))
    return out
