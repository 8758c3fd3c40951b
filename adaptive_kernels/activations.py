"""Elementwise activations, each carrying its Gaussian kernel (neural-tangents' ``stax.elementwise``).

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]) an activation gives

- ``expectation(k11, k12, k22)``            = E[phi(u) phi(v)]      (NNGP map, THEORY.md sec. 2)
- ``derivative_expectation(k11, k12, k22)`` = E[phi'(u) phi'(v)]    (NTK recursion)
- ``diagonal(k)``, ``derivative_diagonal(k)``: the same at rho = 1 exactly (u = v, u ~ N(0, k))

Closed forms (THEORY.md sec. 2; Cho & Saul 2009 for ReLU; Williams 1997 for erf):

- :class:`Linear`:  E = k12,  E' = 1
- :class:`ReLU`:    E = sqrt(k11 k22)/(2 pi) (sin t + (pi - t) cos t),  E' = (pi - t)/(2 pi),
                    cos t = k12/sqrt(k11 k22)
- :class:`Erf`:     E = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))),
                    E' = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)
- :class:`Quadratic` (phi = x^2): E = k11 k22 + 2 k12^2 (Isserlis),  E' = 4 k12

:class:`Numerical` (any jnp function; neural-tangents' ``ElementwiseNumerical``) integrates by
two-dimensional Gauss-Hermite quadrature, u = sqrt(k11) z1, v = sqrt(k22)(rho z1 + sqrt(1 - rho^2) z2).
The nodes are summed in chunks, and the derivatives of the rule (of every order) are sums of the same kind
(``_expectation``): memory is bounded by ``QUADRATURE_BUDGET`` array elements per evaluation, never
(nodes x P^2 x order parameters) -- the 79 GB of issue #20. Results keep the dtype of the inputs.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._validation import check_positive_int

QUADRATURE_BUDGET = 1 << 22
"""Array elements one chunk of a quadrature may hold (nodes in the chunk x entries of the kernel)."""


def _safe_rho(k11, k12, k22):
    dtype = jnp.result_type(k11, k12, k22, float)
    tiny = jnp.finfo(dtype).tiny
    eps = 8 * jnp.finfo(dtype).eps
    norm = jnp.sqrt(jnp.maximum(k11 * k22, tiny))
    return jnp.clip(k12 / norm, -1 + eps, 1 - eps), norm


class AbstractActivation(eqx.Module):
    """An elementwise nonlinearity phi with its Gaussian expectations (see the module docstring)."""

    name: eqx.AbstractVar[str]
    is_linear: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, x): ...

    @abc.abstractmethod
    def derivative(self, x):
        """phi'(x), elementwise."""

    @abc.abstractmethod
    def expectation(self, k11, k12, k22):
        """E[phi(u) phi(v)] for (u, v) Gaussian with variances k11, k22 and covariance k12."""

    @abc.abstractmethod
    def derivative_expectation(self, k11, k12, k22):
        """E[phi'(u) phi'(v)] (the NTK's derivative kernel)."""

    @abc.abstractmethod
    def diagonal(self, k):
        """E[phi(u)^2], u ~ N(0, k): the exact rho = 1 limit of :meth:`expectation`."""

    @abc.abstractmethod
    def derivative_diagonal(self, k):
        """E[phi'(u)^2], u ~ N(0, k)."""


class Linear(AbstractActivation):
    name: str = eqx.field(static=True, default="linear")
    is_linear: ClassVar[bool] = True

    def __call__(self, x):
        return x

    def derivative(self, x):
        return jnp.ones_like(x)

    def expectation(self, k11, k12, k22):
        return k12 * jnp.ones_like(k11 * k22)

    def derivative_expectation(self, k11, k12, k22):
        return jnp.ones_like(k11 * k12 * k22)

    def diagonal(self, k):
        return k

    def derivative_diagonal(self, k):
        return jnp.ones_like(k)


class ReLU(AbstractActivation):
    name: str = eqx.field(static=True, default="relu")

    def __call__(self, x):
        return jax.nn.relu(x)

    def derivative(self, x):
        return (x > 0).astype(jnp.result_type(x, float))

    def expectation(self, k11, k12, k22):
        rho, norm = _safe_rho(k11, k12, k22)
        t = jnp.arccos(rho)
        return norm / (2 * jnp.pi) * (jnp.sqrt(1 - rho**2) + (jnp.pi - t) * rho)

    def derivative_expectation(self, k11, k12, k22):
        rho, _ = _safe_rho(k11, k12, k22)
        return (jnp.pi - jnp.arccos(rho)) / (2 * jnp.pi)

    def diagonal(self, k):
        return k / 2

    def derivative_diagonal(self, k):
        return 0.5 * jnp.ones_like(k)


class Erf(AbstractActivation):
    name: str = eqx.field(static=True, default="erf")

    def __call__(self, x):
        return jax.scipy.special.erf(x)

    def derivative(self, x):
        return 2.0 / jnp.sqrt(jnp.pi) * jnp.exp(-(x**2))

    def expectation(self, k11, k12, k22):
        return (2 / jnp.pi) * jnp.arcsin(2 * k12 / jnp.sqrt((1 + 2 * k11) * (1 + 2 * k22)))

    def derivative_expectation(self, k11, k12, k22):
        return (4 / jnp.pi) / jnp.sqrt((1 + 2 * k11) * (1 + 2 * k22) - 4 * k12**2)

    def diagonal(self, k):
        return (2 / jnp.pi) * jnp.arcsin(2 * k / (1 + 2 * k))

    def derivative_diagonal(self, k):
        return (4 / jnp.pi) / jnp.sqrt(1 + 4 * k)


class Quadratic(AbstractActivation):
    """phi(x) = x^2 (the modular-addition networks of Gromov, arXiv 2301.02679, and Rubin, Seroussi & Ringel,
    arXiv 2310.03789). Gaussian moments by Isserlis' theorem: E[u^2 v^2] = k11 k22 + 2 k12^2, E[(2u)(2v)] = 4 k12;
    at nonzero means see :meth:`mean_expectation`."""

    name: str = eqx.field(static=True, default="quadratic")

    def __call__(self, x):
        return x**2

    def derivative(self, x):
        return 2 * x

    def expectation(self, k11, k12, k22):
        return k11 * k22 + 2 * k12**2

    def derivative_expectation(self, k11, k12, k22):
        return 4 * k12 * jnp.ones_like(k11 * k22)

    def diagonal(self, k):
        return 3 * k**2

    def derivative_diagonal(self, k):
        return 4 * k

    @staticmethod
    def mean_expectation(mu1, mu2, c11, c12, c22):
        """E[u^2 v^2] for (u, v) Gaussian with means (mu1, mu2) and covariance [[c11, c12], [c12, c22]]:
        expanding (mu + centred)^2 and keeping the even moments (Isserlis),
        mu1^2 mu2^2 + mu1^2 c22 + mu2^2 c11 + 4 mu1 mu2 c12 + c11 c22 + 2 c12^2."""
        return (mu1**2 * mu2**2 + mu1**2 * c22 + mu2**2 * c11 + 4 * mu1 * mu2 * c12 + c11 * c22 + 2 * c12**2)


# --- Gauss-Hermite quadrature, memory-bounded at every order of differentiation ----------------------------------
def _hermite_rule(n: int):
    """Nodes and weights for E_{z ~ N(0,1)} f(z) ~= sum_i w_i f(z_i) (probabilists' Hermite)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / w.sum()


def _elementwise_derivative(f: Callable) -> Callable:
    return lambda x: jax.vmap(jax.grad(f))(jnp.ravel(x)).reshape(jnp.shape(x))


def _chunked_sum(term, nodes, weights, size: int):
    """sum_i weights_i term(nodes_i) over the leading axis of ``nodes``, in chunks whose arrays hold at most
    ``QUADRATURE_BUDGET`` elements (``size``: elements of one node's term)."""
    count = weights.shape[0]
    chunk = max(1, min(count, QUADRATURE_BUDGET // max(size, 1)))
    steps = math.ceil(count / chunk)
    pad = steps * chunk - count
    nodes = jnp.concatenate([nodes, jnp.zeros((pad,) + nodes.shape[1:], nodes.dtype)]).reshape(steps, chunk, -1)
    weights = jnp.concatenate([weights, jnp.zeros((pad,), weights.dtype)]).reshape(steps, chunk)
    first = jnp.tensordot(weights[0], term(nodes[0]), axes=(0, 0))
    if steps == 1:
        return first
    return jax.lax.scan(lambda total, block: (total + jnp.tensordot(block[1], term(block[0]), axes=(0, 0)), None),
                        first, (nodes[1:], weights[1:]))[0]


def _expectation(integrand: Callable, nodes, weights, ks: tuple):
    """sum_i w_i integrand(z_i, *ks), where the integrand is elementwise in the (equal-shaped) arrays ``ks``.

    Its derivatives are those of the quadrature rule itself (so that the gradient an iteration follows is exactly
    that of the value it compares), computed as expectations of the same kind -- dE/dk_j = sum_i w_i
    d integrand(z_i)/dk_j, chunk by chunk -- so every order costs memory for one chunk only, and reverse mode
    stores no per-node residuals.
    """

    size = max(ks[0].size, 1) * len(ks)

    @jax.custom_jvp
    def expectation(*ks):
        return _chunked_sum(lambda z: integrand(z, *ks), nodes, weights, size)

    @expectation.defjvp
    def _jvp(primals, tangents):
        def derivatives(z, *ks):  # (len(ks), chunk, ...): d integrand / d k_j, elementwise
            return jnp.stack([jax.jvp(lambda kj: integrand(z, *ks[:j], kj, *ks[j + 1:]), (ks[j],),
                                      (jnp.ones_like(ks[j]),))[1] for j in range(len(ks))], axis=1)

        coefficients = _expectation(derivatives, nodes, weights, primals)
        return expectation(*primals), sum(c * t for c, t in zip(coefficients, tangents))

    return expectation(*ks)


def _gauss2(f: Callable, g: Callable, n: int, k11, k12, k22):
    """E[f(u) g(v)] by n x n Gauss-Hermite quadrature, u = sqrt(k11) z1, v = sqrt(k22)(rho z1 + sqrt(1-rho^2) z2)."""
    dtype = jnp.result_type(k11, k12, k22, float)
    z, w = _hermite_rule(n)
    nodes = jnp.asarray(np.stack([np.repeat(z, n), np.tile(z, n)], axis=1), dtype)
    weights = jnp.asarray(np.outer(w, w).ravel(), dtype)
    ks = jnp.broadcast_arrays(*(jnp.asarray(k, dtype) for k in (k11, k12, k22)))

    def integrand(zz, k11, k12, k22):  # zz (chunk, 2) -> (chunk, ...)
        z1 = zz[:, 0].reshape((-1,) + (1,) * k11.ndim)
        z2 = zz[:, 1].reshape((-1,) + (1,) * k11.ndim)
        rho, _ = _safe_rho(k11, k12, k22)
        u = jnp.sqrt(jnp.maximum(k11, 0.0)) * z1
        v = jnp.sqrt(jnp.maximum(k22, 0.0)) * (rho * z1 + jnp.sqrt(1 - rho**2) * z2)
        return f(u) * g(v)

    return _expectation(integrand, nodes, weights, tuple(ks))


def _gauss1(f: Callable, n: int, k):
    """E[f(u)], u ~ N(0, k), by n-point Gauss-Hermite quadrature."""
    dtype = jnp.result_type(k, float)
    z, w = _hermite_rule(n)
    k = jnp.asarray(k, dtype)

    def integrand(zz, k):
        return f(jnp.sqrt(jnp.maximum(k, 0.0)) * zz[:, 0].reshape((-1,) + (1,) * k.ndim))

    return _expectation(integrand, jnp.asarray(z[:, None], dtype), jnp.asarray(w, dtype), (k,))


class Numerical(AbstractActivation):
    """Any elementwise jnp function, integrated by Gauss-Hermite quadrature with ``quadrature_points``
    nodes per dimension (64 give ~1e-6 relative accuracy for saturating functions at unit-scale
    variances; raise it for more)."""

    name: str = eqx.field(static=True)
    fn: Callable = eqx.field(static=True)
    quadrature_points: int = eqx.field(static=True, default=64)

    def __check_init__(self):
        check_positive_int("quadrature_points", self.quadrature_points)

    def __call__(self, x):
        return self.fn(x)

    def derivative(self, x):
        return _elementwise_derivative(self.fn)(x)

    def expectation(self, k11, k12, k22):
        return _gauss2(self.fn, self.fn, self.quadrature_points, k11, k12, k22)

    def derivative_expectation(self, k11, k12, k22):
        df = _elementwise_derivative(self.fn)
        return _gauss2(df, df, self.quadrature_points, k11, k12, k22)

    def diagonal(self, k):
        return _gauss1(lambda x: self.fn(x) ** 2, self.quadrature_points, k)

    def derivative_diagonal(self, k):
        df = _elementwise_derivative(self.fn)
        return _gauss1(lambda x: df(x) ** 2, self.quadrature_points, k)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


_CLOSED_FORMS: dict[str, type[AbstractActivation]] = {"linear": Linear, "relu": ReLU, "erf": Erf,
                                                      "quadratic": Quadratic}
_NUMERICAL: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "gelu": _gelu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}

ACTIVATIONS = tuple(_CLOSED_FORMS) + tuple(_NUMERICAL)


def get_activation(activation: str | Callable | AbstractActivation, quadrature_points: int = 64) -> AbstractActivation:
    """An activation from a name in :data:`ACTIVATIONS`, a jnp function (:class:`Numerical`), or itself.

    ``quadrature_points`` (nodes per dimension) applies to activations without a closed form.
    """
    if isinstance(activation, AbstractActivation):
        return activation
    check_positive_int("quadrature_points", quadrature_points)
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key in _CLOSED_FORMS:
            return _CLOSED_FORMS[key]()
        if key in _NUMERICAL:
            return Numerical(key, _NUMERICAL[key], quadrature_points)
        raise ValueError(
            f"activation: unknown name {activation!r}; choose one of {', '.join(ACTIVATIONS)} or pass a jnp function"
        )
    if callable(activation):
        name = getattr(activation, "__name__", "custom")
        if name in ACTIVATIONS:  # a user function never takes a named activation's place by accident
            name = f"custom_{name}"
        return Numerical(name, activation, quadrature_points)
    raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
