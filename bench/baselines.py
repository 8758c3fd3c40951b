"""What a user would write by hand: the same actions in numpy/scipy, minimised with
``scipy.optimize.minimize(method="L-BFGS-B")`` and hand-written gradients.

These are the "straightforward implementation" side of the benchmark pairs; they share no
code with ``adaptive_kernels`` (so agreeing answers are also a cross-check of the library).

- kernel scaling (THEORY.md sec. 3), over u = log s:
      S(s) = (N/2)(s - log s) + (1/2) y^T (s K + kappa2)^{-1} y + (1/2) log det(s K + kappa2)
      dS/ds = (N/2)(1 - 1/s) + (1/2)[tr(A K) - t^T K t],  A = (s K + kappa2)^{-1}, t = A y
- adaptive kernel of a linear net (sec. 4), over a Cholesky factor Sigma = L L^T
  (log-diagonal, so Sigma stays positive definite), in function space K = c X Sigma X^T:
      S(Sigma) = (N/2)[a tr Sigma - log det Sigma] + (1/2) y^T (K + kappa2)^{-1} y
                 + (1/2) log det(K + kappa2),   a = d/s_w2
      dS/dSigma = (N/2)(a I - Sigma^{-1}) + (c/2) X^T (A - t t^T) X,  dS/dL = 2 (dS/dSigma) L
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl
import scipy.optimize as so

LBFGS_OPTIONS = {"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 20}


def nngp_kernel(X1, X2, Sigma, activation: str, readout_scale: float):
    """c E_{w ~ N(0, Sigma)}[phi(w.x) phi(w.x')] for phi in {linear, erf} (THEORY.md sec. 2)."""
    C12 = X1 @ Sigma @ X2.T
    if activation == "linear":
        return readout_scale * C12
    if activation != "erf":
        raise ValueError(f"activation: the numpy baseline knows linear and erf, got {activation!r}")
    d1 = np.einsum("pi,ij,pj->p", X1, Sigma, X1)
    d2 = np.einsum("pi,ij,pj->p", X2, Sigma, X2)
    return readout_scale * (2 / np.pi) * np.arcsin(2 * C12 / np.sqrt(np.outer(1 + 2 * d1, 1 + 2 * d2)))


def _data_term(K, y, kappa2):
    """D(K) = (1/2) y^T A y + (1/2) log det(A^{-1}); returns (D, t = A y, Cholesky factor)."""
    factor = sl.cho_factor(K + kappa2 * np.eye(len(y)), lower=True)
    t = sl.cho_solve(factor, y)
    return 0.5 * y @ t + np.sum(np.log(np.diag(factor[0]))), t, factor


def scaling_action(log_s, K, y, N, kappa2):
    """(S, dS/dlog s) of the kernel-scaling action."""
    s = np.exp(log_s[0])
    D, t, factor = _data_term(s * K, y, kappa2)
    A = sl.cho_solve(factor, np.eye(len(y)))
    dD_ds = 0.5 * (np.sum(A * K) - t @ K @ t)
    value = 0.5 * N * (s - np.log(s)) + D
    return value, np.array([s * (0.5 * N * (1 - 1 / s) + dD_ds)])


def solve_scaling(K, y, N, kappa2):
    """Minimise S(s) from s = 1. Returns (s, action, scipy result)."""
    result = so.minimize(scaling_action, np.zeros(1), args=(K, y, N, kappa2), jac=True, method="L-BFGS-B",
                         options=LBFGS_OPTIONS)
    return float(np.exp(result.x[0])), float(result.fun), result


def _factor(params, d):
    L = np.zeros((d, d))
    i, j = np.tril_indices(d)
    L[i, j] = np.where(i == j, np.exp(params), params)
    return L


def adaptive_linear_action(params, X, y, N, kappa2, s_w2, c):
    """(S, dS/dparams) of the linear adaptive action over Cholesky coordinates."""
    d = X.shape[1]
    L = _factor(params, d)
    Sigma = L @ L.T
    D, t, factor = _data_term(c * X @ Sigma @ X.T, y, kappa2)
    A = sl.cho_solve(factor, np.eye(len(y)))
    logdet_sigma = 2 * np.sum(np.log(np.diag(L)))
    value = 0.5 * N * (d / s_w2 * np.trace(Sigma) - logdet_sigma) + D
    Sigma_inv = sl.cho_solve((L, True), np.eye(d))
    G = 0.5 * N * (d / s_w2 * np.eye(d) - Sigma_inv) + 0.5 * c * X.T @ (A - np.outer(t, t)) @ X
    dL = 2 * G @ L
    i, j = np.tril_indices(d)
    return value, np.where(i == j, dL[i, j] * L[i, j], dL[i, j])


def solve_adaptive_linear(X, y, N, kappa2, s_w2, c):
    """Minimise S(Sigma) from the prior Sigma = (s_w2/d) I. Returns (Sigma, action, scipy result)."""
    d = X.shape[1]
    i, j = np.tril_indices(d)
    init = np.where(i == j, 0.5 * np.log(s_w2 / d), 0.0)
    result = so.minimize(adaptive_linear_action, init, args=(X, y, N, kappa2, s_w2, c), jac=True,
                         method="L-BFGS-B", options=LBFGS_OPTIONS)
    L = _factor(result.x, d)
    return L @ L.T, float(result.fun), result


def gp_mean(K, K_cross, y, kappa2):
    """GP mean K(x*, X) (K + kappa2)^{-1} y."""
    return K_cross @ sl.cho_solve(sl.cho_factor(K + kappa2 * np.eye(len(y)), lower=True), y)


def learnability(f, y):
    """L = f.y / y.y (THEORY.md sec. 6)."""
    return float(f @ y / (y @ y))
