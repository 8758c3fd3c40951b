"""The data term D and the NNGP action (THEORY.md secs. 2-4).

Integrating the readout out of a two-layer net leaves y ~ N(0, K + kappa2 I) given the
first layer, so every two-layer action carries the data term

    D(K) = (1/2) y^T (K + kappa2 I)^{-1} y + (1/2) log det(K + kappa2 I)

(summed over output columns when y is (P, K)): the GP negative log marginal likelihood
without its constant (P/2) log 2 pi. The NNGP theory has no order parameter; its action is
D(K_NNGP). Two evaluations of D:

- function space, from the P x P kernel (one Cholesky, cost P^3);
- weight space, for K = Z Z^T with Z (P x m) (Woodbury and Sylvester's determinant identity):
  (K + kappa2)^{-1} = (I - Z (kappa2 I_m + Z^T Z)^{-1} Z^T)/kappa2,
  log det(K + kappa2 I_P) = (P - m) log kappa2 + log det(kappa2 I_m + Z^T Z)   (cost m^3 + P m^2).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.actions.problem import TwoLayerProblem
from adaptive_kernels.gp import quadratic_and_logdet, quadratic_and_logdet_factored, quadratic_and_logdet_pullback


def _outputs(y):
    return 1 if y.ndim == 1 else y.shape[1]


def data_term(K, y, kappa2):
    """D(K) = 1/2 tr y^T (K + kappa2)^{-1} y + (n_outputs/2) log det(K + kappa2), from the P x P
    kernel: one Cholesky, with the closed-form gradient of :func:`adaptive_kernels.gp.quadratic_and_logdet`
    (dD/dK = (n_outputs A - t t^T)/2, A = (K + kappa2)^{-1}, t = A y; Rasmussen & Williams 2006, eq. 5.9).
    """
    quad, logdet = quadratic_and_logdet(K + kappa2 * jnp.eye(K.shape[0], dtype=K.dtype), y)
    return 0.5 * quad + 0.5 * _outputs(y) * logdet


def data_term_with_gradient(K, y, kappa2):
    """(D(K), dD/dK, (factor, t)): :func:`data_term` with its closed-form gradient and the Cholesky
    factor of K + kappa2 and t = (K + kappa2)^{-1} y, for callers that reuse them."""
    (quad, logdet), residuals = quadratic_and_logdet_factored(K + kappa2 * jnp.eye(K.shape[0], dtype=K.dtype), y)
    n = _outputs(y)
    grad, _ = quadratic_and_logdet_pullback(residuals, (0.5, 0.5 * n))
    return 0.5 * quad + 0.5 * n * logdet, grad, residuals


def data_term_low_rank(Z, y, kappa2):
    """D(Z Z^T) for Z (P x m), cost m^3 + P m^2 (:func:`data_term_low_rank_factored`'s value)."""
    return data_term_low_rank_factored(Z, y, kappa2)[0]


def data_term_low_rank_factored(Z, y, kappa2):
    """(D(Z Z^T), (L, alpha)): the value with the Cholesky factor L of kappa2 I_m + Z^T Z and alpha.

    With alpha = (kappa2 I_m + Z^T Z)^{-1} Z^T y and t = (y - Z alpha)/kappa2 = (K + kappa2)^{-1} y,
    y^T t = kappa2 |t|^2 + |alpha|^2 (Z^T t = alpha): a sum of positive terms, free of the
    cancellation in (y^T y - y^T Z alpha)/kappa2.
    """
    m = Z.shape[1]
    P = y.shape[0]
    gram = Z.T @ Z
    L = jnp.linalg.cholesky(gram + kappa2 * jnp.eye(m, dtype=gram.dtype))
    alpha = jsl.cho_solve((L, True), Z.T @ y)
    t = (y - Z @ alpha) / kappa2
    quadratic = kappa2 * jnp.sum(t**2) + jnp.sum(alpha**2)
    logdet = (P - m) * jnp.log(kappa2) + 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
    return 0.5 * quadratic + 0.5 * _outputs(y) * logdet, (L, alpha)


def kernel_data_term(problem: TwoLayerProblem, Sigma, scale=1.0):
    """D(scale * K_Sigma) in the problem's space (weight space needs a linear phi)."""
    if problem.space == "weight":
        return data_term_low_rank(jnp.sqrt(scale) * problem.weight_space_factor(Sigma), problem.y, problem.kappa2)
    return data_term(scale * problem.output_kernel(Sigma), problem.y, problem.kappa2)


def gp_action(problem: TwoLayerProblem):
    """The NNGP action D(K_NNGP): GP negative log marginal likelihood up to (P/2) log 2 pi."""
    return kernel_data_term(problem, problem.prior_covariance())
