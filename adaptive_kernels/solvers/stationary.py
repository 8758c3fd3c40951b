"""The entry function of the solvers: (action, solver, initial value, args) -> :class:`Solution`.

The solver runs on stop-gradient inputs (its iterations are never differentiated); the fixed point then gets its
derivatives from its defining equation (``solvers.implicit``), and the action, stationarity residual, gradient
norm and domain margin are evaluated at the result. The :class:`Solution` is built here, once.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.actions.base import AbstractFixedPointProblem, EntropicAction, PrecisionMap
from adaptive_kernels.solvers.driver import AbstractRule, iterate
from adaptive_kernels.solvers.implicit import implicit_fixed_point
from adaptive_kernels.solvers.quasi_newton import QuasiNewton
from adaptive_kernels.solvers.solution import Solution, Status


def _stop_gradient(tree):
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def as_fixed_point_problem(action, like) -> AbstractFixedPointProblem:
    """An :class:`EntropicAction` as its :class:`PrecisionMap` (``like``: the order parameters' structure);
    a fixed-point problem (e.g. the deep conjugate map) as itself."""
    if isinstance(action, AbstractFixedPointProblem):
        return action
    if isinstance(action, EntropicAction):
        return PrecisionMap(action, jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), like))
    raise TypeError(f"action must be an EntropicAction or a fixed-point problem, got {type(action).__name__}")


def stationary_point(action, solver, init, args, *, implicit: bool = True, linear_solver=None,
                     theory=None) -> Solution:
    """Find a stationary point of ``action`` (an :class:`EntropicAction` or a fixed-point problem) from ``init``.

    Args:
        solver: a step rule (:class:`~adaptive_kernels.solvers.FixedPoint`, :class:`~adaptive_kernels.solvers.Newton`,
            ...) or :class:`QuasiNewton` (minimisation forms only).
        init: initial order parameters (a PyTree in the action's coordinates).
        args: what the action depends on (e.g. a :class:`~adaptive_kernels.problem.Problem`).
        implicit: attach derivatives of the solution with respect to ``args`` through its defining equation.
        linear_solver: lineax solver for that equation's linear system (default: dense when small, GMRES).
        theory: stored in the :class:`Solution` (static).

    The status is SUCCESS only when the solver met its tolerance at a finite point inside the domain; otherwise it
    says why not.
    """
    problem = as_fixed_point_problem(action, init)
    init_, args_ = _stop_gradient(init), _stop_gradient(args)
    if isinstance(solver, AbstractRule):
        result = iterate(solver, problem, problem.start(init_, args_), args_)
        x = result.value
    elif isinstance(solver, QuasiNewton):
        if not isinstance(action, EntropicAction):
            raise TypeError("solver: QuasiNewton minimises an action; this form is a saddle point "
                            "(use FixedPoint or Newton)")
        result = solver.run(action, init_, args_)
        x = problem.start(result.value, args_)
    else:
        raise TypeError(f"solver must be a step rule (FixedPoint, Newton, ...) or QuasiNewton, got {type(solver).__name__}")
    if implicit:
        x = implicit_fixed_point(problem, x, args, linear_solver)
    value = problem.value(x, args)
    action_value, residual, grad_norm, margin = problem.report(x, args)
    residual, grad_norm, margin = _stop_gradient((residual, grad_norm, margin))
    finite = jnp.isfinite(action_value) & jnp.isfinite(residual) & _all_finite(value)
    status = jnp.where(~finite, Status.NONFINITE, jnp.where(margin <= 0, Status.LEFT_DOMAIN, result.status))
    return Solution(
        value=value,
        action=action_value,
        grad_norm=grad_norm,
        iterations=jnp.asarray(result.steps),
        status=jnp.asarray(status, dtype=jnp.int32),
        domain_margin=margin,
        stats={"residual": residual, **result.stats, **_stop_gradient(problem.stats(x, args))},
        theory=theory,
    )
