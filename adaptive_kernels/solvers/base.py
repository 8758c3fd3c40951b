"""Shared pieces of the saddle-point solvers (THEORY.md sec. 4, solver lesson).

- the positive-definite parametrisation Sigma = L L^T / a with L lower triangular and
  log-diagonal (unconstrained coordinates u; u = 0 is the prior Sigma = I/a);
- the stationarity residual  r = max |Sigma (a I + (2/N) dD/dSigma) - I|,  dimensionless and
  zero exactly at a stationary point of an :class:`EntropicAction`;
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels.actions.base import EntropicAction, as_matrix


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


def stationarity(action: EntropicAction, Sigma, args):
    """(residual r, gradient norm |dS/dSigma|_F, domain margin min eig(a Sigma)) at Sigma."""
    weights, precisions = action.prior(args)
    targets = action.target_precision(Sigma, args)

    def leaf(S, T, w, a):
        M = as_matrix(S)
        eye = jnp.eye(M.shape[0], dtype=M.dtype)
        r = jnp.max(jnp.abs(M @ T - eye))
        grad = 0.5 * w * (T - jnp.linalg.solve(M, eye))
        margin = jnp.linalg.eigvalsh(a * 0.5 * (M + M.T))[0]
        return r, jnp.sum(grad**2), margin

    leaves = zip(*(jax.tree.leaves(t) for t in (Sigma, targets, weights, precisions)))
    r, g2, margins = (jnp.stack(q) for q in zip(*(leaf(*x) for x in leaves)))
    residual, grad_norm, margin = jnp.max(r), jnp.sqrt(jnp.sum(g2)), jnp.min(margins)
    return residual, grad_norm, margin


def stationarity_tolerance(tol, tree) -> float:
    """``tol`` if given, else the default for the order parameters' float type: max(1e-10, 1000 eps)
    (1e-10 in float64; 1.2e-4 in float32, whose round-off leaves the residual at ~1e-6-1e-5)."""
    if tol is not None:
        return tol
    dtype = jnp.result_type(*jax.tree.leaves(tree))
    return max(1e-10, 1000 * float(jnp.finfo(dtype).eps))


def check_tolerance(name: str, tol):
    """Raise unless ``tol`` is None (the dtype default) or positive."""
    if not (tol is None or tol > 0):
        raise ValueError(f"{name} must be None or positive, got {tol}")


DENSE_HESSIAN_BUDGET = 5e7


def hessian_solver(u, args, linear_solver=None, rtol: float = 1e-10, max_steps: int | None = None):
    """The lineax solver for a Hessian system in the unconstrained coordinates ``u``.

    ``linear_solver`` if given; else a dense Cholesky of the materialised Hessian when
    (number of coordinates) x P^2 is below :data:`DENSE_HESSIAN_BUDGET` (P: the largest leading
    dimension of the arrays in ``args``; materialising takes one Hessian-vector product per
    coordinate, each carrying P x P intermediates), and matrix-free conjugate gradients beyond:
    for the d = 50, P = 1000 adaptive solve the dense Hessian would need ~10^2 GB.
    """
    import lineax as lx

    if linear_solver is not None:
        return linear_solver
    size = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(u))
    P = max([leaf.shape[0] for leaf in jax.tree.leaves(args) if hasattr(leaf, "shape") and leaf.ndim] + [1])
    if size * P**2 <= DENSE_HESSIAN_BUDGET:
        return lx.AutoLinearSolver(well_posed=True)
    return lx.CG(rtol=rtol, atol=0.0, max_steps=max_steps)
