"""Damped fixed-point iteration with domain guard and backtracking (THEORY.md sec. 4, 5).

Solves x = T(x) for a PyTree x (the conjugate kernels {Kt_l} of the deep action, where T is
a forward pass for the kernels followed by a backward pass for the conjugates):

    x <- x + eta (T(x) - x)        (optionally Anderson-extrapolated, ``anderson_memory``)

The residual r(x) = |T(x) - x| is the norm of the action's gradient in the kernels
(Kt_l - dW_{l+1}/dK_l = dS/dK_l at K = K(Kt)), the merit function the step is backtracked on.
A step is accepted only if the new point is inside the domain (``step`` reports it; for the
deep action I - (2/N_l) C_l^1/2 Kt_l C_l^1/2 > 0), everything is finite and the residual did
not grow by more than ``growth_tolerance`` (with ``merit="action"``: the action did not
increase -- the precision iteration of ``solvers.FixedPoint``, whose map can expand the residual
along strongly learned directions while its step still lowers the action); then eta grows by
``grow`` up to ``damping``. Otherwise the step is retried from the same point with eta * ``shrink``. This guards
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
from jax.flatten_util import ravel_pytree

from adaptive_kernels._validation import check_in_range, check_positive, check_positive_int
from adaptive_kernels.solvers.solution import Solution, Status


MERITS = ("residual", "action")


class ForwardBackward(eqx.Module):
    """Settings of the damped forward-backward fixed-point iteration.

    Attributes:
        damping: largest step eta in (0, 1] (also the first one tried). Default 1: on deep erf nets
            (d=20, N_l=200, P=200, gamma=1) eta <= 0.5 stalled at L = 4 (every shorter step raised
            the residual) where eta = 1 converged in 76 steps; L = 1-3 converged either way.
        min_damping: the iteration gives up when backtracking pushes eta below this.
        rtol, atol: converged when |T(x) - x| <= atol + rtol |T(x)| (unless ``step`` reports its own
            ``StepInfo.converged``); None: 1e-10 and 1e-12 in float64, 1000 eps and 10 eps of the
            iterate's float type otherwise (float32 round-off never reaches float64's).
        max_steps: iteration limit (rejected trial steps count).
        grow, shrink: factors applied to eta after an accepted / rejected step.
        growth_tolerance: an accepted step may raise the residual by this factor at most.
        merit: what a step must not increase: ``"residual"`` |T(x) - x| (for a saddle, as in the deep
            conjugate form), or ``"action"`` (for a minimisation whose step T(x) - x is a descent
            direction of the action, but whose map may expand the residual: the precision iteration of
            ``solvers.FixedPoint`` in mean-field scaling). With ``"action"`` a step is accepted when the
            action drops by more than its round-off, or stays within round-off and the residual drops.
        anderson_memory: m > 0 extrapolates from the last m accepted iterates (Anderson
            acceleration, type II: x+ = x + eta g - (dX + eta dG) c, c = argmin |g - dG c|,
            g = T(x) - x); the same domain check and backtracking apply, and a rejected step
            clears the history. 0: plain damping. Measured (THEORY.md sec. 5 example,
            L = 1): 30 iterations with m = 5 against 100 with plain damping.
    """

    damping: float = 1.0
    min_damping: float = 1e-7
    rtol: float | None = None
    atol: float | None = None
    max_steps: int = eqx.field(static=True, default=5000)
    grow: float = 1.5
    shrink: float = 0.3
    growth_tolerance: float = 1.0
    merit: str = eqx.field(static=True, default="residual")
    anderson_memory: int = eqx.field(static=True, default=5)

    def __check_init__(self):
        check_in_range("damping", self.damping, 0.0, 1.0)
        check_positive("damping", self.damping)
        check_positive("min_damping", self.min_damping)
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_positive_int("max_steps", self.max_steps)
        check_in_range("shrink", self.shrink, 0.0, 1.0)
        check_in_range("grow", self.grow, 1.0, 10.0)
        check_in_range("growth_tolerance", self.growth_tolerance, 1.0, 10.0)
        if self.merit not in MERITS:
            raise ValueError(f"merit must be one of {', '.join(MERITS)}, got {self.merit!r}")
        if not (isinstance(self.anderson_memory, int) and self.anderson_memory >= 0):
            raise ValueError(f"anderson_memory must be a non-negative integer, got {self.anderson_memory!r}")


class StepInfo(eqx.Module):
    """What ``step`` reports about the point it was evaluated at.

    ``converged``: whether x meets the caller's own convergence test (e.g. a stationarity residual
    in other units); None: the default test |T(x) - x| <= atol + rtol |T(x)|.
    """

    in_domain: jnp.ndarray
    action: jnp.ndarray
    converged: jnp.ndarray | None = None


def _improves(solver: ForwardBackward, action, res, old_action, old_res):
    """Whether a trial point with (action, res) is accepted after one with (old_action, old_res)."""
    if solver.merit == "residual":
        return res <= solver.growth_tolerance * old_res
    # The action's round-off: a P x P log-determinant amplifies the kernel's rounding by the condition
    # number of K + kappa2 (measured: ~4e-12 relative for a tanh kernel by 2-d quadrature at P = 40,
    # where the stationarity residual still had two decades to go), so no finer than 1e-10 relative.
    noise = jnp.maximum(64 * jnp.finfo(jnp.result_type(old_action)).eps, 1e-10) * (1 + jnp.abs(old_action))
    return (action < old_action - noise) | ((action <= old_action + noise) & (res <= old_res))


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def _axpy(eta, x, Tx):
    return jax.tree_util.tree_map(lambda a, b: a + eta * (b - a), x, Tx)


def _anderson(x, g, X_hist, G_hist, count, eta):
    """Type-II Anderson candidate from flattened history rows (oldest first, ``count`` valid)."""
    m = X_hist.shape[0]
    valid = (jnp.arange(m - 1) >= m - count)[:, None]  # differences between valid consecutive rows
    dX = jnp.where(valid, X_hist[1:] - X_hist[:-1], 0.0)
    dG = jnp.where(valid, G_hist[1:] - G_hist[:-1], 0.0)
    coef = jnp.linalg.lstsq(dG.T, g)[0]
    return x + eta * g - (dX + eta * dG).T @ coef


def _push(hist, row):
    return jnp.concatenate([hist[1:], row[None]], axis=0)


def fixed_point_solve(
    step: Callable, solver: ForwardBackward, init, args, theory: str = "fixed_point"
) -> Solution:
    """Iterate x <- x + eta (T(x) - x) with ``(T(x), StepInfo) = step(x, args)`` from ``init``.

    Returns a :class:`Solution` whose ``value`` is x, ``action`` the action there,
    ``grad_norm`` |T(x) - x|, ``domain_margin`` NaN (the caller knows the domain; see
    :func:`adaptive_kernels.deep.solve_deep`), ``stats`` {"damping": final eta,
    "accepted": accepted steps}.
    """

    flat0, unravel = ravel_pytree(init)
    eps = float(jnp.finfo(flat0.dtype).eps)
    rtol = solver.rtol if solver.rtol is not None else max(1e-10, 1000 * eps)
    atol = solver.atol if solver.atol is not None else max(1e-12, 10 * eps)

    def evaluate(x):
        Tx, info = step(x, args)
        Tx = jax.tree.map(lambda t, a: t.astype(a.dtype), Tx, x)  # a step may promote (float64 constants)
        res = _norm(jax.tree_util.tree_map(jnp.subtract, Tx, x))
        ok = info.in_domain & jnp.isfinite(res) & jnp.isfinite(info.action)
        return Tx, info, res, ok

    def converged(Tx, res, info):
        return res <= atol + rtol * _norm(Tx) if info.converged is None else info.converged

    Tx0, info0, res0, ok0 = evaluate(init)
    dtype = res0.dtype
    status0 = jnp.where(
        ok0, jnp.where(converged(Tx0, res0, info0), Status.SUCCESS, Status.MAX_STEPS),
        jnp.where(info0.in_domain, Status.NONFINITE, Status.LEFT_DOMAIN),
    )
    memory = solver.anderson_memory + 1
    state0 = dict(
        X_hist=jnp.zeros((memory, flat0.size), flat0.dtype).at[-1].set(flat0),
        G_hist=jnp.zeros((memory, flat0.size), flat0.dtype).at[-1].set(ravel_pytree(Tx0)[0] - flat0),
        count=jnp.asarray(1),
        x=init, Tx=Tx0, res=res0, action=info0.action, eta=jnp.asarray(solver.damping, dtype),
        steps=jnp.asarray(0), accepted=jnp.asarray(0), status=jnp.asarray(status0, jnp.int32),
        last_rejection=jnp.asarray(Status.LINE_SEARCH_FAILED, jnp.int32),
    )

    def cond(s):
        return (s["status"] == Status.MAX_STEPS) & (s["steps"] < solver.max_steps)

    def body(s):
        if solver.anderson_memory:
            flat, g = ravel_pytree(s["x"])[0], ravel_pytree(s["Tx"])[0] - ravel_pytree(s["x"])[0]
            x_new = unravel(_anderson(flat, g, s["X_hist"], s["G_hist"], s["count"], s["eta"]))
        else:
            x_new = _axpy(s["eta"], s["x"], s["Tx"])
        Tx_new, info, res_new, ok = evaluate(x_new)
        accept = ok & _improves(solver, info.action, res_new, s["action"], s["res"])
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        decreased = accept & ((res_new <= s["res"]) | (solver.merit == "action"))
        eta = jnp.where(decreased, jnp.minimum(s["eta"] * solver.grow, solver.damping), s["eta"] * solver.shrink)
        reason = jnp.where(
            info.in_domain, jnp.where(ok, Status.LINE_SEARCH_FAILED, Status.NONFINITE), Status.LEFT_DOMAIN
        )
        last_rejection = jnp.where(accept, s["last_rejection"], reason).astype(jnp.int32)
        res = jnp.where(accept, res_new, s["res"])
        Tx = pick(Tx_new, s["Tx"])
        status = jnp.where(
            accept & converged(Tx_new, res_new, info), Status.SUCCESS,
            jnp.where(eta < solver.min_damping, last_rejection, Status.MAX_STEPS),
        ).astype(jnp.int32)
        flat_new = ravel_pytree(x_new)[0]
        g_new = ravel_pytree(Tx_new)[0] - flat_new
        return dict(
            X_hist=jnp.where(accept, _push(s["X_hist"], flat_new), s["X_hist"]),
            G_hist=jnp.where(accept, _push(s["G_hist"], g_new), s["G_hist"]),
            count=jnp.where(accept, jnp.minimum(s["count"] + 1, memory), 1),
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
