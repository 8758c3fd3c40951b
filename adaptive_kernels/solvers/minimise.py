"""The entry function of the solvers: (action, solver, init, args) -> Solution.

The solver runs on stop-gradient inputs (its iterations are never differentiated); the
minimiser then gets its derivatives from the stationarity condition (``solvers.implicit``),
and the action, residual, gradient norm and domain margin are evaluated at the result.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.solvers.base import stationarity
from adaptive_kernels.solvers.implicit import implicit_minimiser
from adaptive_kernels.solvers.solution import Solution, Status


def _stop_gradient(tree):
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


def minimise(action: EntropicAction, solver, init, args, theory: str, implicit: bool = True, linear_solver=None) -> Solution:
    """Find the minimum of ``action`` over positive-definite order parameters.

    Args:
        action: an :class:`EntropicAction`.
        solver: a solver module with ``run(action, init, args) -> (Sigma, iterations, status, stats)``
            (:class:`FixedPoint` or :class:`QuasiNewton`).
        init: initial order parameters (a PyTree of positive-definite matrices / positive scalars).
        args: what the action depends on (a PyTree, e.g. a ``TwoLayerProblem``).
        theory: the name stored in the :class:`Solution`.
        implicit: attach derivatives of the minimiser with respect to ``args`` through the
            stationarity condition (``solvers.implicit``); the iterations are never differentiated.
        linear_solver: lineax solver for the Hessian system of the implicit derivatives.

    The status is SUCCESS only when the solver met its tolerance at a finite point with
    positive-definite order parameters; otherwise it says why not.
    """
    Sigma, iterations, status, stats = solver.run(action, _stop_gradient(init), _stop_gradient(args))
    if implicit:
        Sigma = implicit_minimiser(action, Sigma, args, linear_solver)
    value = action(Sigma, args)
    residual, grad_norm, margin = stationarity(action, _stop_gradient(Sigma), _stop_gradient(args))
    finite = jnp.isfinite(value) & jnp.isfinite(residual) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(Sigma)])
    )
    status = jnp.where(~finite, Status.NONFINITE, jnp.where(margin <= 0, Status.LEFT_DOMAIN, status))
    return Solution(
        theory=theory,
        value=Sigma,
        action=value,
        grad_norm=grad_norm,
        iterations=jnp.asarray(iterations),
        status=jnp.asarray(status, dtype=jnp.int32),
        domain_margin=margin,
        stats={"residual": residual, **stats},
    )
