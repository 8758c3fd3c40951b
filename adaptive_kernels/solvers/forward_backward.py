"""Damped fixed-point iteration with domain guard and backtracking (THEORY.md sec. 4, 5).

Solves x = T(x) for a PyTree x (the conjugate kernels {Kt_l} of the deep action, where T is
a forward pass for the kernels followed by a backward pass for the conjugates):

    x <- x + eta (T(x) - x)

The residual r(x) = |T(x) - x| is the norm of the action's gradient in the kernels
(Kt_l - dW_{l+1}/dK_l = dS/dK_l at K = K(Kt)), the merit function the step is backtracked on.
A step is accepted only if the new point is inside the domain (``step`` reports it; for the
deep action I - (2/N_l) C_l^1/2 Kt_l C_l^1/2 > 0), everything is finite and the residual did
not grow by more than ``growth_tolerance``; then eta grows by ``grow`` up to ``damping``.
Otherwise the step is retried from the same point with eta * ``shrink``. This guards
against the lesson of THEORY.md sec. 5: a fixed damping can converge to a spurious
stationary point outside the domain.

The loop is a ``jax.lax.while_loop`` (jit-able, vmappable); the result is a
:class:`Solution` with status SUCCESS, MAX_STEPS, NONFINITE, LEFT_DOMAIN (no in-domain step
however small) or LINE_SEARCH_FAILED (no step reduced the residual).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import check_in_range, check_positive, check_positive_int
from adaptive_kernels.solvers.solution import Solution, Status


class ForwardBackward(eqx.Module):
    """Settings of the damped forward-backward fixed-point iteration.

    Attributes:
        damping: largest step eta in (0, 1] (also the first one tried).
        min_damping: the iteration gives up when backtracking pushes eta below this.
        rtol, atol: converged when |T(x) - x| <= atol + rtol |T(x)|.
        max_steps: iteration limit (rejected trial steps count).
        grow, shrink: factors applied to eta after an accepted / rejected step.
        growth_tolerance: an accepted step may raise the residual by this factor at most.
    """

    damping: float = 0.5
    min_damping: float = 1e-7
    rtol: float = 1e-10
    atol: float = 1e-12
    max_steps: int = eqx.field(static=True, default=5000)
    grow: float = 1.5
    shrink: float = 0.3
    growth_tolerance: float = 1.0

    def __check_init__(self):
        check_in_range("damping", self.damping, 0.0, 1.0)
        check_positive("damping", self.damping)
        check_positive("min_damping", self.min_damping)
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        check_positive_int("max_steps", self.max_steps)
        check_in_range("shrink", self.shrink, 0.0, 1.0)
        check_in_range("grow", self.grow, 1.0, 10.0)
        check_in_range("growth_tolerance", self.growth_tolerance, 1.0, 10.0)


class StepInfo(eqx.Module):
    """What ``step`` reports about the point it was evaluated at."""

    in_domain: jnp.ndarray
    action: jnp.ndarray


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def _axpy(eta, x, Tx):
    return jax.tree_util.tree_map(lambda a, b: a + eta * (b - a), x, Tx)


def fixed_point_solve(
    step: Callable, solver: ForwardBackward, init, args, theory: str = "fixed_point"
) -> Solution:
    """Iterate x <- x + eta (T(x) - x) with ``(T(x), StepInfo) = step(x, args)`` from ``init``.

    Returns a :class:`Solution` whose ``value`` is x, ``action`` the action there,
    ``grad_norm`` |T(x) - x|, ``domain_margin`` NaN (the caller knows the domain; see
    :func:`adaptive_kernels.deep.solve_deep`), ``stats`` {"damping": final eta,
    "accepted": accepted steps}.
    """

    def evaluate(x):
        Tx, info = step(x, args)
        res = _norm(jax.tree_util.tree_map(jnp.subtract, Tx, x))
        ok = info.in_domain & jnp.isfinite(res) & jnp.isfinite(info.action)
        return Tx, info, res, ok

    def converged(Tx, res):
        return res <= solver.atol + solver.rtol * _norm(Tx)

    Tx0, info0, res0, ok0 = evaluate(init)
    dtype = res0.dtype
    status0 = jnp.where(
        ok0, jnp.where(converged(Tx0, res0), Status.SUCCESS, Status.MAX_STEPS),
        jnp.where(info0.in_domain, Status.NONFINITE, Status.LEFT_DOMAIN),
    )
    state0 = dict(
        x=init, Tx=Tx0, res=res0, action=info0.action, eta=jnp.asarray(solver.damping, dtype),
        steps=jnp.asarray(0), accepted=jnp.asarray(0), status=jnp.asarray(status0, jnp.int32),
        last_rejection=jnp.asarray(Status.LINE_SEARCH_FAILED, jnp.int32),
    )

    def cond(s):
        return (s["status"] == Status.MAX_STEPS) & (s["steps"] < solver.max_steps)

    def body(s):
        x_new = _axpy(s["eta"], s["x"], s["Tx"])
        Tx_new, info, res_new, ok = evaluate(x_new)
        accept = ok & (res_new <= solver.growth_tolerance * s["res"])
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        decreased = accept & (res_new <= s["res"])
        eta = jnp.where(decreased, jnp.minimum(s["eta"] * solver.grow, solver.damping), s["eta"] * solver.shrink)
        reason = jnp.where(
            info.in_domain, jnp.where(ok, Status.LINE_SEARCH_FAILED, Status.NONFINITE), Status.LEFT_DOMAIN
        )
        last_rejection = jnp.where(accept, s["last_rejection"], reason).astype(jnp.int32)
        res = jnp.where(accept, res_new, s["res"])
        Tx = pick(Tx_new, s["Tx"])
        status = jnp.where(
            accept & converged(Tx, res), Status.SUCCESS,
            jnp.where(eta < solver.min_damping, last_rejection, Status.MAX_STEPS),
        ).astype(jnp.int32)
        return dict(
            x=pick(x_new, s["x"]), Tx=Tx, res=res, action=jnp.where(accept, info.action, s["action"]),
            eta=eta, steps=s["steps"] + 1, accepted=s["accepted"] + accept.astype(jnp.int32),
            status=status, last_rejection=last_rejection,
        )

    s = jax.lax.while_loop(cond, body, state0)
    return Solution(
        theory=theory,
        value=s["x"],
        action=s["action"],
        grad_norm=s["res"],
        iterations=s["steps"],
        status=s["status"],
        domain_margin=jnp.asarray(jnp.nan, dtype),
        stats={"damping": s["eta"], "accepted": s["accepted"]},
    )
