"""Observables of a prediction or of a kernel (THEORY.md sec. 6).

- learnability  L = f.y / y.y  (review Figs 2-4), on held-out test points
- test/train MSE  mean (f - y)^2
- eigenvalue ratio along a direction w (teacher w* for a d x d covariance, the target
  vector for a P x P kernel):  R = w^T M w / ((tr M - w^T M w)/(D - 1)),  w = w/|w|;
  R = 1 for an isotropic M (initialisation)
- kernel-target alignment  y^T C y / (|y|^2 ||C||_F)  (Cristianini et al. 2002)
- spectrum: eigenvalues, descending
"""

from __future__ import annotations

import jax.numpy as jnp

from adaptive_kernels._validation import check_array


def _pair(f, y):
    y = check_array("y", y)
    f = check_array("f", f, shape=y.shape)
    return f, y


def learnability(f, y):
    """L = f.y / y.y: 1 when the target is learned, 0 when nothing is."""
    f, y = _pair(f, y)
    return jnp.sum(f * y) / jnp.sum(y * y)


def mse(f, y):
    """Mean squared error mean((f - y)^2)."""
    f, y = _pair(f, y)
    return jnp.mean((f - y) ** 2)


def _square(name, M):
    M = check_array(name, M, ndim=2)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be square, got shape {M.shape}")
    return M


def eigenvalue_ratio(M, direction):
    """R = w^T M w / ((tr M - w^T M w)/(D - 1)) with w = direction/|direction|.

    ``M`` is a D x D covariance (first-layer Sigma, ``direction`` the teacher w*) or a
    P x P kernel (``direction`` the target vector y).
    """
    M = _square("M", M)
    w = check_array("direction", direction, ndim=1, shape=(M.shape[0],))
    D = M.shape[0]
    if D < 2:
        raise ValueError("M must be at least 2 x 2 for an eigenvalue ratio")
    w = w / jnp.linalg.norm(w)
    along = w @ M @ w
    return along / ((jnp.trace(M) - along) / (D - 1))


def kernel_target_alignment(C, y):
    """A = y^T C y / (|y|^2 ||C||_F), in [0, 1] for PSD C."""
    C = _square("C", C)
    y = check_array("y", y, ndim=1, shape=(C.shape[0],))
    return (y @ C @ y) / (jnp.sum(y**2) * jnp.linalg.norm(C))


def spectrum(M):
    """Eigenvalues of a symmetric matrix, largest first."""
    M = _square("M", M)
    return jnp.linalg.eigvalsh(0.5 * (M + M.T))[::-1]
