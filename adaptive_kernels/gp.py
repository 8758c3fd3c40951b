"""Gaussian-process regression with a fixed kernel (THEORY.md sec. 2).

    A = (K + kappa2 I)^{-1},  t = A y,  mean f(x*) = k*^T t,  variance k** - k*^T A k*
    log p(y) = -1/2 y^T A y - 1/2 log det(K + kappa2 I) - P/2 log(2 pi)

All solves go through one Cholesky factor; no explicit inverse is formed.
``y`` may be (P,) or (P, K) for several outputs sharing the kernel.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels._validation import check_array, check_positive, check_psd, is_traced


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


def quadratic_and_logdet_factored(A, b):
    """((quad, log det A), (factor, beta)): the values with the Cholesky factor of A and beta = A^{-1} b,
    for callers that reuse them (the forward half of :func:`quadratic_and_logdet`'s rule)."""
    # A is symmetric: factor it as given (jnp.linalg.cholesky's symmetrisation was a transposing copy costing
    # ~1/4 of the factorisation at P = 1000), and read it transposed, which matches LAPACK's layout.
    factor = jax.lax.linalg.cholesky(A.T, symmetrize_input=False)
    beta = jsl.cho_solve((factor, True), b)
    return (jnp.sum(b * beta), 2 * jnp.sum(jnp.log(jnp.diagonal(factor)))), (factor, beta)


def quadratic_and_logdet_pullback(residuals, cotangents):
    """(dA, db) for cotangents (g_quad, g_logdet), from the (factor, beta) of
    :func:`quadratic_and_logdet_factored` (the backward half of :func:`quadratic_and_logdet`'s rule)."""
    factor, beta = residuals
    g_quad, g_logdet = cotangents
    inverse = jsl.cho_solve((factor, True), jnp.eye(factor.shape[0], dtype=factor.dtype))
    B = beta.reshape(beta.shape[0], -1)
    return g_logdet * inverse - g_quad * (B @ B.T), 2 * g_quad * beta


quadratic_and_logdet.defvjp(quadratic_and_logdet_factored, quadratic_and_logdet_pullback)


def _factor(K, kappa2):
    P = K.shape[0]
    return jsl.cho_factor(K + kappa2 * jnp.eye(P, dtype=K.dtype), lower=True)


def _check(K, y, kappa2):
    check_positive("kappa2", kappa2)
    K = check_array("K", K, ndim=2)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square, got shape {K.shape}")
    y = check_array("y", y)
    if y.ndim not in (1, 2) or y.shape[0] != K.shape[0]:
        raise ValueError(f"y must have shape ({K.shape[0]},) or ({K.shape[0]}, K) to match K, got {y.shape}")
    if not is_traced(K):
        check_psd("K", K)
    return K, y


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
    K_cross = check_array("K_cross", K_cross, ndim=2, shape=(None, K.shape[0]))
    cf = _factor(K, kappa2)
    mean = K_cross @ jsl.cho_solve(cf, y)
    var = None
    if K_test_diag is not None:
        K_test_diag = check_array("K_test_diag", K_test_diag, ndim=1, shape=(K_cross.shape[0],))
        V = jsl.solve_triangular(cf[0], K_cross.T, lower=True)
        var = K_test_diag - jnp.sum(V**2, axis=0)
    return GPPrediction(mean=mean, variance=var)


def log_marginal_likelihood(K, y, kappa2):
    """log N(y | 0, K + kappa2 I), summed over output columns if y is (P, K)."""
    K, y = _check(K, y, kappa2)
    L, lower = _factor(K, kappa2)
    Y = y.reshape(y.shape[0], -1)
    alpha = jsl.solve_triangular(L, Y, lower=True)
    P, k = Y.shape
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
    return -0.5 * jnp.sum(alpha**2) - 0.5 * k * logdet - 0.5 * k * P * jnp.log(2 * jnp.pi)
