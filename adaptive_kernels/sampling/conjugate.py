"""Exact Gaussian posterior of a Bayesian linear model (the building block of every sampler).

    x ~ N(0, s I_n),   y | x ~ N(G x, kappa2 I_P)
    posterior precision A = G^T G / kappa2 + I/s,   mean m = A^{-1} G^T y / kappa2
    evidence y ~ N(0, s G G^T + kappa2 I_P)

With k outputs, y (P, k) and x (n, k): the k columns are independent models sharing G, so the
mean is the same formula column by column, the draws are independent per column and the log
evidence is the sum over columns (one factorisation serves all of them).

Two equivalent forms, chosen from the static shapes: the primal form factors the n x n
precision A (cheap when n <= P); the dual form factors the P x P matrix K = s G G^T + kappa2 I
(Woodbury: m = s G^T K^{-1} y) and samples by Matheron's rule / Bhattacharya et al. (2016):
x0 ~ N(0, s I), e ~ N(0, kappa2 I), x = x0 + s G^T K^{-1} (y - G x0 - e).

The design may be given factored, G = B R with B (P, m) and R (m, n) (a linear network's
features X W^T are of rank d): then G G^T = B (R R^T) B^T costs O(m^2 n + P m^2 + P^2 m)
instead of O(P^2 n), and G is never formed.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.gp import outputs, quadratic_and_logdet


class LinearGaussian(eqx.Module):
    """Posterior of x in y = G x + noise, x ~ N(0, prior_var I), noise ~ N(0, kappa2 I).

    Args:
        G: design (P, n), or its left factor (P, m) when ``right`` is given.
        y: observations (P,) or (P, k) (k independent outputs).  prior_var, kappa2: the variances s and kappa2.
        right: optional right factor (m, n) of the design G @ right (kept factored).
    """

    G: jnp.ndarray
    right: jnp.ndarray | None
    y: jnp.ndarray
    prior_var: jnp.ndarray
    kappa2: jnp.ndarray
    matrix: jnp.ndarray
    factor: jnp.ndarray
    primal: bool = eqx.field(static=True)

    def __init__(self, G, y, prior_var, kappa2, right=None):
        self.G, self.right, self.y = G, right, y
        self.prior_var = jnp.asarray(prior_var, G.dtype)
        self.kappa2 = jnp.asarray(kappa2, G.dtype)
        P, n = self.shape
        self.primal = n <= P
        if self.primal:
            Gn = G if right is None else G @ right
            self.matrix = Gn.T @ Gn / self.kappa2 + jnp.eye(n, dtype=G.dtype) / self.prior_var
        else:
            gram = G @ G.T if right is None else G @ (right @ right.T) @ G.T
            self.matrix = self.prior_var * gram + self.kappa2 * jnp.eye(P, dtype=G.dtype)
        self.factor = jnp.linalg.cholesky(self.matrix)

    @property
    def shape(self):
        """(P, n) of the design."""
        return self.G.shape[0], (self.G if self.right is None else self.right).shape[1]

    def _apply(self, x):
        """G x."""
        return self.G @ (x if self.right is None else self.right @ x)

    def _apply_transpose(self, r):
        """G^T r."""
        r = self.G.T @ r
        return r if self.right is None else self.right.T @ r

    def _solve(self, b):
        return jsl.cho_solve((self.factor, True), b)

    @property
    def mean(self):
        """Posterior mean of x, (n,) or (n, k)."""
        if self.primal:
            return self._solve(self._apply_transpose(self.y) / self.kappa2)
        return self.prior_var * self._apply_transpose(self._solve(self.y))

    def sample(self, key):
        """One exact draw of x from the posterior (independent per output column)."""
        P, n = self.shape
        columns = self.y.shape[1:]
        if self.primal:
            xi = jax.random.normal(key, (n,) + columns, self.G.dtype)
            return self.mean + jsl.solve_triangular(self.factor.T, xi, lower=False)
        k0, k1 = jax.random.split(key)
        x0 = jnp.sqrt(self.prior_var) * jax.random.normal(k0, (n,) + columns, self.G.dtype)
        e = jnp.sqrt(self.kappa2) * jax.random.normal(k1, self.y.shape, self.G.dtype)
        return x0 + self.prior_var * self._apply_transpose(self._solve(self.y - self._apply(x0) - e))

    def log_evidence(self):
        """sum_j log N(y_j | 0, K) over the k output columns, K = s G G^T + kappa2 I:
        -tr(y^T K^{-1} y)/2 - (k/2) log det K - (P k/2) log 2 pi. In the primal form through
        tr y^T K^{-1} y = (|y|^2 - tr b^T A^{-1} b / kappa2)/kappa2 with b = G^T y (Woodbury), and
        log det K = P log kappa2 + n log s + log det A (matrix determinant lemma).
        Differentiable with the closed-form gradient of :func:`quadratic_and_logdet`."""
        P, n = self.shape
        k = outputs(self.y)
        if self.primal:
            quad_A, logdet_A = quadratic_and_logdet(self.matrix, self._apply_transpose(self.y))
            quad = (jnp.vdot(self.y, self.y) - quad_A / self.kappa2) / self.kappa2
            logdet = P * jnp.log(self.kappa2) + n * jnp.log(self.prior_var) + logdet_A
        else:
            quad, logdet = quadratic_and_logdet(self.matrix, self.y)
        return -0.5 * quad - 0.5 * k * logdet - 0.5 * P * k * jnp.log(2 * jnp.pi)
