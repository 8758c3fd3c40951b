"""Derivatives of a fixed point through its defining equation (no unrolling of the iterations).

At a fixed point x*(theta) = T(x*(theta), theta), by the implicit function theorem

    dx*/dtheta . t = (I - dT/dx)^{-1} (dT/dtheta . t)

(Blondel et al. 2022, "Efficient and modular implicit differentiation"; optimistix's ``ImplicitAdjoint``).
Every form of every theory is a fixed point of a map (``solvers.fixed_point``): the precision map of a
minimisation (where I - dT/dx is the Hessian of the action up to a change of coordinates) and the deep conjugate
forward-backward map alike, so one rule serves them all. It is a custom JVP, linear in the tangents, so reverse
mode (``jax.grad``) works through the transposed linear solve as well. The system is solved by
``solvers.coordinates.solve_linear`` (dense for small order parameters, GMRES beyond).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.solvers.coordinates import data_size, solve_linear


@eqx.filter_custom_jvp
def _fixed_point(x_star, args, *, problem, linear_solver):
    return x_star


@_fixed_point.def_jvp
def _fixed_point_jvp(primals, tangents, *, problem, linear_solver):
    x_star, args = primals
    _, t_args = tangents
    if t_args is None:
        return x_star, jax.tree.map(jnp.zeros_like, x_star)
    diff_args, static_args = eqx.partition(args, eqx.is_inexact_array)
    t_diff = jax.tree.map(lambda a, t: None if a is None else (jnp.zeros_like(a) if t is None else t),
                          diff_args, t_args, is_leaf=lambda x: x is None)

    def T(x, a):
        return problem(x, eqx.combine(a, static_args))[0]

    _, rhs = jax.jvp(lambda a: T(x_star, a), (diff_args,), (t_diff,))

    def matvec(v):
        return jax.tree.map(jnp.subtract, v, jax.jvp(lambda x: T(x, diff_args), (x_star,), (v,))[1])

    return x_star, solve_linear(matvec, rhs, data_size(args), linear_solver)


def implicit_fixed_point(problem, x_star, args, linear_solver=None):
    """``x_star`` (a fixed point of ``problem``, an ``AbstractFixedPointProblem``) with derivatives with respect
    to ``args`` from the implicit function theorem; ``linear_solver`` (lineax) for the system, default
    ``solve_linear``'s choice."""
    return _fixed_point(jax.lax.stop_gradient(x_star), args, problem=problem, linear_solver=linear_solver)
