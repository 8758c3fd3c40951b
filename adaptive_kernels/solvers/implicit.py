"""Derivatives of a minimiser through its stationarity condition (no unrolling).

At the minimum u*(theta) of f(u, theta), grad_u f(u*, theta) = 0, so by the implicit
function theorem

    du*/dtheta . t = -H^{-1} (d grad_u f / dtheta) . t,     H = d^2 f/du^2 at u*

(Blondel et al. 2022, "Efficient and modular implicit differentiation"). The order
parameters are taken in the unconstrained coordinates of ``solvers.base`` (Cholesky factor
with log-diagonal), where H is positive definite at a strict minimum; the Hessian system is
solved with lineax. The rule is a custom JVP, linear in the tangents, so reverse mode
(``jax.grad``) works through lineax's transpose as well.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.solvers.base import from_unconstrained, hessian_solver, to_unconstrained


def _objective(u, args, action, like):
    _, precisions = action.prior(args)
    return action(from_unconstrained(u, precisions, like), args)


@eqx.filter_custom_jvp
def _minimiser(u_star, args, *, action, like, linear_solver):
    return u_star


@_minimiser.def_jvp
def _minimiser_jvp(primals, tangents, *, action, like, linear_solver):
    u_star, args = primals
    _, t_args = tangents
    if t_args is None:
        return u_star, jax.tree.map(jnp.zeros_like, u_star)
    diff_args, static_args = eqx.partition(args, eqx.is_inexact_array)
    t_diff = jax.tree.map(
        lambda a, t: None if a is None else (jnp.zeros_like(a) if t is None else t),
        diff_args,
        t_args,
        is_leaf=lambda x: x is None,
    )

    def gradient(u, a):
        return jax.grad(_objective)(u, a, action, like)

    _, rhs = jax.jvp(lambda da: gradient(u_star, eqx.combine(da, static_args)), (diff_args,), (t_diff,))
    hessian = lx.JacobianLinearOperator(
        gradient, u_star, args, tags=(lx.symmetric_tag, lx.positive_semidefinite_tag)
    )
    t_u = lx.linear_solve(hessian, jax.tree.map(jnp.negative, rhs), linear_solver).value
    return u_star, t_u


def implicit_minimiser(action: EntropicAction, Sigma, args, linear_solver=None):
    """``Sigma`` (a minimiser of ``action(., args)``) with derivatives w.r.t. ``args`` from the IFT.

    ``linear_solver`` defaults to ``solvers.base.hessian_solver``: a dense Cholesky solve of
    the materialised Hessian for small order parameters, conjugate gradients for large ones.
    """
    _, precisions = action.prior(args)
    u_star = to_unconstrained(jax.lax.stop_gradient(Sigma), jax.lax.stop_gradient(precisions))
    linear_solver = hessian_solver(u_star, args, linear_solver)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), Sigma)
    u = _minimiser(u_star, args, action=action, like=like, linear_solver=linear_solver)
    return from_unconstrained(u, precisions, like)
