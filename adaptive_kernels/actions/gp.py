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

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.actions.problem import TwoLayerProblem


def _outputs(y):
    return 1 if y.ndim == 1 else y.shape[1]


def _cholesky_and_value(K, y, kappa2):
    P = K.shape[0]
    L = jnp.linalg.cholesky(K + kappa2 * jnp.eye(P, dtype=K.dtype))
    alpha = jsl.solve_triangular(L, y, lower=True)
    return L, 0.5 * jnp.sum(alpha**2) + _outputs(y) * jnp.sum(jnp.log(jnp.diagonal(L)))


@jax.custom_vjp
def data_term(K, y, kappa2):
    """D(K) from the P x P kernel (one Cholesky).

    Its gradient is written out (a custom VJP) rather than differentiated through the Cholesky
    factorisation, which costs ~3.6 times the value at P = 1000: with A = (K + kappa2)^{-1},
    t = A y (columns t_k for y (P, K)),

        dD/dK = (K A - t t^T)/2,   dD/dy = t,   dD/dkappa2 = tr dD/dK

    (Rasmussen & Williams 2006, eq. 5.9). The VJP is itself differentiable (Hessian-vector
    products, implicit derivatives).
    """
    return _cholesky_and_value(K, y, kappa2)[1]


def _data_term_fwd(K, y, kappa2):
    L, value = _cholesky_and_value(K, y, kappa2)
    return value, (L, y, kappa2)


def _data_term_bwd(residuals, g):
    L, y, kappa2 = residuals
    A = jsl.cho_solve((L, True), jnp.eye(L.shape[0], dtype=L.dtype))
    t = jsl.cho_solve((L, True), y)
    T = t.reshape(t.shape[0], -1)
    dK = 0.5 * g * (_outputs(y) * A - T @ T.T)
    return dK, (g * t).astype(y.dtype), jnp.trace(dK).astype(jnp.result_type(kappa2))


data_term.defvjp(_data_term_fwd, _data_term_bwd)


def data_term_low_rank(Z, y, kappa2):
    """D(Z Z^T) for Z (P x m), cost m^3 + P m^2.

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
    return 0.5 * quadratic + 0.5 * _outputs(y) * logdet


def kernel_data_term(problem: TwoLayerProblem, Sigma, scale=1.0):
    """D(scale * K_Sigma) in the problem's space (weight space needs a linear phi)."""
    if problem.space == "weight":
        return data_term_low_rank(jnp.sqrt(scale) * problem.weight_space_factor(Sigma), problem.y, problem.kappa2)
    return data_term(scale * problem.output_kernel(Sigma), problem.y, problem.kappa2)


def gp_action(problem: TwoLayerProblem):
    """The NNGP action D(K_NNGP): GP negative log marginal likelihood up to (P/2) log 2 pi."""
    return kernel_data_term(problem, problem.prior_covariance())
