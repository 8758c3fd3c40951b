"""Coordinates, stationarity and linear solves shared by the solvers (THEORY.md sec. 4, solver lesson).

- the positive-definite parametrisation Sigma = L L^T / a with L lower triangular and log-diagonal
  (unconstrained coordinates u; u = 0 is the prior Sigma = I/a), used by the quasi-Newton solver;
- :func:`solve_linear`: Hessian and Jacobian systems in bounded memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from adaptive_kernels.actions.base import as_matrix


def leaf_size(leaf) -> int:
    """n for an n x n matrix leaf (array or ShapeDtypeStruct), 1 for a scalar."""
    return leaf.shape[0] if len(leaf.shape) else 1


def to_unconstrained(Sigma, precisions):
    """u = (entries of L on and below the diagonal, log on the diagonal), L = chol(a Sigma)."""

    def leaf(S, a):
        n = leaf_size(S)
        i, j = np.tril_indices(n)
        L = jnp.linalg.cholesky(a * as_matrix(S))
        values = L[i, j]
        return jnp.where(i == j, jnp.log(jnp.abs(values)), values)

    return jax.tree.map(leaf, Sigma, precisions)


def from_unconstrained(u, precisions, like):
    """Inverse of :func:`to_unconstrained`: Sigma = L L^T / a, shaped like ``like``."""

    def leaf(v, a, x):
        n = leaf_size(x)
        i, j = np.tril_indices(n)
        L = jnp.zeros((n, n), dtype=v.dtype).at[i, j].set(jnp.where(i == j, jnp.exp(v), v))
        return (L @ L.T / a).reshape(x.shape)

    return jax.tree.map(leaf, u, precisions, like)


def stationarity_tolerance(tol, tree) -> float:
    """``tol`` if given, else the default for the order parameters' float type: max(1e-10, 1000 eps)
    (1e-10 in float64; 1.2e-4 in float32, whose round-off leaves the residual at ~1e-6-1e-5)."""
    if tol is not None:
        return tol
    dtype = jnp.result_type(*jax.tree.leaves(tree))
    return max(1e-10, 1000 * float(jnp.finfo(dtype).eps))


TRUST_PATHS = ("additive", "covariance", "hybrid", "exponential", "rotation")
"""Where the trust-region rule puts a trial point (``solvers.fixed_point.TrustRegion.path``,
``actions.krylov.KrylovPrecisionModel.trust_step``)."""


TRUST_SUBPROBLEMS = ("steihaug", "lanczos")
"""How the trust-region rule minimises the Newton model in the ball (``TrustRegion.subproblem``)."""


def check_tolerance(name: str, tol):
    """Raise unless ``tol`` is None (the dtype default) or positive."""
    if not (tol is None or tol > 0):
        raise ValueError(f"{name} must be None or positive, got {tol}")


def check_steps(name: str, value, minimum: int = 1):
    """Raise unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


DENSE_BUDGET = 5e7
"""Dense systems: (coordinates) x (largest data dimension)^2 at most; beyond, Krylov (matrix-free)."""

BATCH_BUDGET = 1 << 24
"""Elements of the intermediates of the operator products evaluated at once while materialising."""


def data_size(args) -> int:
    """The largest leading dimension of the arrays in ``args`` (P for a data set): what one operator product's
    intermediates scale with (P x P kernels)."""
    return max([leaf.shape[0] for leaf in jax.tree.leaves(args) if hasattr(leaf, "ndim") and leaf.ndim] + [1])


def solve_linear(matvec, rhs, size: int, linear_solver=None, symmetric: bool = False, rtol: float = 1e-10,
                 max_steps: int | None = None):
    """x with matvec(x) = rhs (``matvec`` linear on PyTrees like ``rhs``).

    ``linear_solver`` (a lineax solver) runs matrix-free when given. Otherwise a small system (coordinates n with
    n size^2 <= :data:`DENSE_BUDGET`, ``size`` the data dimension) is materialised column by column with
    ``jax.lax.map`` in batches whose products hold about :data:`BATCH_BUDGET` elements -- memory one batch of
    products, never (coordinates x quadrature nodes x size^2) -- and solved densely; a large one by conjugate
    gradients (``symmetric``) or GMRES.
    """
    flat, unravel = ravel_pytree(rhs)
    n = flat.size

    def flat_matvec(v):
        return ravel_pytree(matvec(unravel(v)))[0]

    if linear_solver is None and n * size**2 <= DENSE_BUDGET:
        batch = max(1, min(n, BATCH_BUDGET // (16 * size**2)))
        columns = jax.lax.map(flat_matvec, jnp.eye(n, dtype=flat.dtype), batch_size=batch)
        return unravel(jnp.linalg.solve(columns.T, flat))
    if linear_solver is None:
        linear_solver = (lx.CG if symmetric else lx.GMRES)(rtol=rtol, atol=0.0, max_steps=max_steps)
    tags = (lx.symmetric_tag, lx.positive_semidefinite_tag) if symmetric else ()
    operator = lx.FunctionLinearOperator(flat_matvec, jax.ShapeDtypeStruct(flat.shape, flat.dtype), tags=tags)
    return unravel(lx.linear_solve(operator, flat, linear_solver, throw=False).value)
