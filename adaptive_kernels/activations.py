"""Elementwise activations and their Gaussian expectations.

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]) an :class:`Activation` gives

- ``expectation(k11, k12, k22)``  = E[phi(u) phi(v)]        (NNGP map, THEORY.md sec. 2)
- ``derivative_expectation(...)``  = E[phi'(u) phi'(v)]      (NTK recursion)
- ``diagonal(k)``                   = E[phi(u)^2], u ~ N(0, k)

Closed forms (THEORY.md sec. 2; Cho & Saul 2009 for ReLU; Williams 1997 for erf):

- linear:  E = k12,  E' = 1
- relu:    E = sqrt(k11 k22)/(2 pi) (sin t + (pi - t) cos t),  E' = (pi - t)/(2 pi),
           cos t = k12/sqrt(k11 k22)
- erf:     E = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))),
           E' = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)

Any other elementwise function uses two-dimensional Gauss-Hermite quadrature
(neural-tangents' ``ElementwiseNumerical``): u = sqrt(k11) z1,
v = sqrt(k22) (rho z1 + sqrt(1 - rho^2) z2), a product rule in (z1, z2).
All functions broadcast over arrays and are jit/vmap/grad friendly: correlations are
clipped a few ulps inside [-1, 1] so that gradients stay finite on the diagonal.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._validation import check_positive_int

_CLOSED_FORMS = ("linear", "relu", "erf")


def _safe_rho(k11, k12, k22):
    dtype = jnp.result_type(k11, k12, k22, float)
    tiny = jnp.finfo(dtype).tiny
    eps = 8 * jnp.finfo(dtype).eps
    norm = jnp.sqrt(jnp.maximum(k11 * k22, tiny))
    return jnp.clip(k12 / norm, -1 + eps, 1 - eps), norm


def _hermite_rule(n: int):
    """Nodes and weights for E_{z ~ N(0,1)} f(z) ~= sum_i w_i f(z_i) (probabilists' Hermite)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / w.sum()


class Activation(eqx.Module):
    """An elementwise nonlinearity with its Gaussian expectations.

    Build one with :func:`get_activation` (``"linear"``, ``"relu"``, ``"erf"``, ``"tanh"``,
    ``"gelu"``, ``"softplus"``, ``"sigmoid"`` or any ``jnp`` function).
    """

    name: str = eqx.field(static=True)
    fn: Callable = eqx.field(static=True)
    quadrature_points: int = eqx.field(static=True, default=64)

    def __call__(self, x):
        return self.fn(x)

    @property
    def closed_form(self) -> bool:
        return self.name in _CLOSED_FORMS

    @property
    def is_linear(self) -> bool:
        return self.name == "linear"

    def derivative(self, x):
        """phi'(x), elementwise (by autodiff for non-closed forms)."""
        if self.name == "linear":
            return jnp.ones_like(x)
        if self.name == "relu":
            return (x > 0).astype(jnp.result_type(x, float))
        if self.name == "erf":
            return 2.0 / jnp.sqrt(jnp.pi) * jnp.exp(-(x**2))
        flat = jnp.ravel(x)
        return jax.vmap(jax.grad(self.fn))(flat).reshape(jnp.shape(x))

    # --- Gaussian expectations -------------------------------------------------------
    def expectation(self, k11, k12, k22):
        """E[phi(u) phi(v)] for (u, v) Gaussian with variances k11, k22 and covariance k12."""
        if self.name == "linear":
            return k12 * jnp.ones_like(k11 * k22)
        if self.name == "relu":
            rho, norm = _safe_rho(k11, k12, k22)
            t = jnp.arccos(rho)
            return norm / (2 * jnp.pi) * (jnp.sqrt(1 - rho**2) + (jnp.pi - t) * rho)
        if self.name == "erf":
            return (2 / jnp.pi) * jnp.arcsin(2 * k12 / jnp.sqrt((1 + 2 * k11) * (1 + 2 * k22)))
        return self._quadrature(self.fn, k11, k12, k22)

    def derivative_expectation(self, k11, k12, k22):
        """E[phi'(u) phi'(v)] (the NTK's derivative kernel)."""
        if self.name == "linear":
            return jnp.ones_like(k11 * k12 * k22)
        if self.name == "relu":
            rho, _ = _safe_rho(k11, k12, k22)
            return (jnp.pi - jnp.arccos(rho)) / (2 * jnp.pi)
        if self.name == "erf":
            det = (1 + 2 * k11) * (1 + 2 * k22) - 4 * k12**2
            return (4 / jnp.pi) / jnp.sqrt(det)
        return self._quadrature(self.derivative, k11, k12, k22)

    def diagonal(self, k):
        """E[phi(u)^2] for u ~ N(0, k): the exact rho = 1 limit of :meth:`expectation`."""
        if self.name == "linear":
            return k
        if self.name == "relu":
            return k / 2
        if self.name == "erf":
            return (2 / jnp.pi) * jnp.arcsin(2 * k / (1 + 2 * k))
        return self._diagonal_quadrature(self.fn, k)

    def derivative_diagonal(self, k):
        """E[phi'(u)^2] for u ~ N(0, k): the rho = 1 limit of :meth:`derivative_expectation`."""
        if self.name == "linear":
            return jnp.ones_like(k)
        if self.name == "relu":
            return 0.5 * jnp.ones_like(k)
        if self.name == "erf":
            return (4 / jnp.pi) / jnp.sqrt(1 + 4 * k)
        return self._diagonal_quadrature(self.derivative, k)

    def _diagonal_quadrature(self, f, k):
        z, w = _hermite_rule(self.quadrature_points)
        z = jnp.asarray(z, dtype=jnp.result_type(k, float))
        u = jnp.sqrt(jnp.maximum(k, 0.0))[..., None] * z
        return jnp.sum(jnp.asarray(w) * f(u) ** 2, axis=-1)

    def _quadrature(self, f, k11, k12, k22):
        n = self.quadrature_points
        z, w = _hermite_rule(n)
        dtype = jnp.result_type(k11, k12, k22, float)
        z1 = jnp.asarray(np.repeat(z, n), dtype)
        z2 = jnp.asarray(np.tile(z, n), dtype)
        ww = jnp.asarray(np.outer(w, w).ravel(), dtype)
        rho, _ = _safe_rho(k11, k12, k22)
        s11 = jnp.sqrt(jnp.maximum(k11, 0.0))[..., None]
        s22 = jnp.sqrt(jnp.maximum(k22, 0.0))[..., None]
        rho = rho[..., None]
        u = s11 * z1
        v = s22 * (rho * z1 + jnp.sqrt(1 - rho**2) * z2)
        return jnp.sum(ww * f(u) * f(v), axis=-1)

    # --- matrix maps --------------------------------------------------------------------
    def kernel_matrix(self, C):
        """The NNGP map on a covariance matrix: K_ij = E[phi(h_i) phi(h_j)], h ~ N(0, C).

        The diagonal uses :meth:`diagonal` (rho = 1 exactly), the rest :meth:`expectation`.
        """
        d = jnp.diagonal(C)
        K = self.expectation(d[:, None], C, d[None, :])
        return jnp.where(jnp.eye(C.shape[0], dtype=bool), jnp.diag(self.diagonal(d)), K)

    def cross_kernel(self, d1, C12, d2):
        """E[phi(h_i) phi(h'_j)] for variances d1 (rows), d2 (columns) and covariances C12."""
        return self.expectation(d1[:, None], C12, d2[None, :])


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


_NAMED: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "erf": jax.scipy.special.erf,
    "tanh": jnp.tanh,
    "gelu": _gelu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}

ACTIVATIONS = tuple(_NAMED)


def get_activation(activation: str | Callable | Activation, quadrature_points: int = 64) -> Activation:
    """An :class:`Activation` from a name in :data:`ACTIVATIONS`, a jnp function, or itself.

    A user function is integrated numerically by Gauss-Hermite quadrature with
    ``quadrature_points`` nodes per dimension.
    """
    if isinstance(activation, Activation):
        return activation
    check_positive_int("quadrature_points", quadrature_points)
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key not in _NAMED:
            raise ValueError(
                f"activation: unknown name {activation!r}; choose one of {', '.join(ACTIVATIONS)} "
                "or pass a jnp function"
            )
        return Activation(key, _NAMED[key], quadrature_points)
    if callable(activation):
        name = getattr(activation, "__name__", "custom")
        if name in _CLOSED_FORMS:  # a user function never takes a closed form by accident
            name = f"custom_{name}"
        return Activation(name, activation, quadrature_points)
    raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
