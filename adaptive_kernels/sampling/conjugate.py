"""Exact Gaussian posterior of a Bayesian linear model (the building block of every sampler).

    x ~ N(0, s I_n),   y | x ~ N(G x, kappa2 I_P)
    posterior precision A = G^T G / kappa2 + I/s,   mean m = A^{-1} G^T y / kappa2
    evidence y ~ N(0, s G G^T + kappa2 I_P)

Two equivalent forms, chosen from the static shapes: the primal form factors the n x n
precision A (cheap when n <= P); the dual form factors the P x P matrix K = s G G^T + kappa2 I
(Woodbury: m = s G^T K^{-1} y) and samples by Matheron's rule / Bhattacharya et al. (2016):
x0 ~ N(0, s I), e ~ N(0, kappa2 I), x = x0 + s G^T K^{-1} (y - G x0 - e).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl


class LinearGaussian(eqx.Module):
    """Posterior of x in y = G x + noise, x ~ N(0, prior_var I), noise ~ N(0, kappa2 I)."""

    G: jnp.ndarray
    y: jnp.ndarray
    prior_var: jnp.ndarray
    kappa2: jnp.ndarray
    factor: jnp.ndarray
    primal: bool = eqx.field(static=True)

    def __init__(self, G, y, prior_var, kappa2):
        self.G, self.y = G, y
        self.prior_var = jnp.asarray(prior_var, G.dtype)
        self.kappa2 = jnp.asarray(kappa2, G.dtype)
        P, n = G.shape
        self.primal = n <= P
        if self.primal:
            A = G.T @ G / self.kappa2 + jnp.eye(n, dtype=G.dtype) / self.prior_var
        else:
            A = self.prior_var * G @ G.T + self.kappa2 * jnp.eye(P, dtype=G.dtype)
        self.factor = jnp.linalg.cholesky(A)

    def _solve(self, b):
        return jsl.cho_solve((self.factor, True), b)

    @property
    def mean(self):
        """Posterior mean of x, (n,)."""
        if self.primal:
            return self._solve(self.G.T @ self.y / self.kappa2)
        return self.prior_var * self.G.T @ self._solve(self.y)

    def sample(self, key):
        """One exact draw of x from the posterior."""
        P, n = self.G.shape
        if self.primal:
            xi = jax.random.normal(key, (n,), self.G.dtype)
            return self.mean + jsl.solve_triangular(self.factor.T, xi, lower=False)
        k0, k1 = jax.random.split(key)
        x0 = jnp.sqrt(self.prior_var) * jax.random.normal(k0, (n,), self.G.dtype)
        e = jnp.sqrt(self.kappa2) * jax.random.normal(k1, (P,), self.G.dtype)
        return x0 + self.prior_var * self.G.T @ self._solve(self.y - self.G @ x0 - e)

    def log_evidence(self):
        """log N(y | 0, s G G^T + kappa2 I); in the primal form through
        y^T K^{-1} y = (|y|^2 - b^T A^{-1} b / kappa2)/kappa2 with b = G^T y, and
        log det K = P log kappa2 + n log s + log det A (matrix determinant lemma)."""
        P, n = self.G.shape
        logdet_factor = 2 * jnp.sum(jnp.log(jnp.diagonal(self.factor)))
        if self.primal:
            b = self.G.T @ self.y
            r = jsl.solve_triangular(self.factor, b, lower=True)
            quad = (self.y @ self.y - r @ r / self.kappa2) / self.kappa2
            logdet = P * jnp.log(self.kappa2) + n * jnp.log(self.prior_var) + logdet_factor
        else:
            r = jsl.solve_triangular(self.factor, self.y, lower=True)
            quad = r @ r
            logdet = logdet_factor
        return -0.5 * quad - 0.5 * logdet - 0.5 * P * jnp.log(2 * jnp.pi)
