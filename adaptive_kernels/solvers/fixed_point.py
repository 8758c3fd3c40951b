"""Guarded, Anderson-accelerated step rules for fixed-point problems x = T(x) (THEORY.md secs. 4-5).

Every saddle point of the package is a fixed point of a map (optimistix's lesson: convert problems instead of
writing parallel solvers; ``actions.base``): the precision map Lambda <- a I + (2/N) sym dD/dSigma of any
entropic action (the two-layer Sigma, kernel scaling, the deep whitened primal, the deep input-space form), and
the deep conjugate (forward-backward) map on the conjugate kernels.

Step rules (``solvers.driver``): :class:`FixedPoint` iterates x <- x + eta (T(x) - x), Anderson-extrapolated
(type II) from the last accepted iterates; a step is accepted only if the new point is in the domain, finite,
and does not raise the merit beyond its round-off, otherwise eta shrinks (backtracking) -- THEORY.md's
lessons: the plain iteration loses positive definiteness at gamma = 2, P = 30, and a fixed damping can
converge to a spurious point outside the domain. :class:`Newton` iterates the Newton-preconditioned map
x + (I - J)^{-1} (T(x) - x) instead, with the model J of T's Jacobian that the problem supplies (for the
two-layer FCN: the Gaussian-equivalent linear part of the kernel, ``actions.adaptive.LinearisedPrecisionMap``;
exact Newton for linear nets; for the deep whitened kernel form: the exact Jacobian, solved by truncated CG,
``actions.krylov.KrylovPrecisionModel``). Same fixed points, same guards. :class:`TrustRegion` takes the Newton-CG
steps of a Krylov model inside a trust region instead of backtracking a step length (the deep kernel form: cheap
rejections, a radius that follows the model's accuracy). :class:`Continuation` runs a rule from the initial value and,
where that cold start fails, again through a sequence of problems with the data term switched on gradually (the
default of the deep kernel form, with :class:`TrustRegion`; issue 14).

Measured (erf, d = 50, P = 1000, N = 1000, gamma = 2, kappa2 = 1e-2, 2-core CPU, ``make bench``): 19 evaluations
with Newton steps (1.45 s after compilation), 37 without (2.3 s); an evaluation is one Cholesky of the P x P
kernel, one inverse and one kernel pullback. L-BFGS with a Newton-CG polish (``QuasiNewton``) took 13 s.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from adaptive_kernels._validation import check_in_range
from adaptive_kernels.actions.base import AbstractFixedPointProblem, StepInfo
from adaptive_kernels.solvers.coordinates import (TRUST_PATHS, TRUST_SUBPROBLEMS, check_steps, check_tolerance,
                                                  stationarity_tolerance)
from adaptive_kernels.solvers.driver import AbstractRule
from adaptive_kernels.solvers.solution import Status


# --- the step rules -------------------------------------------------------------------------------------------------
class FixedPointState(eqx.Module):
    x: object
    Tx: object
    info: StepInfo
    eta: jnp.ndarray
    X_hist: jnp.ndarray
    G_hist: jnp.ndarray
    count: jnp.ndarray
    accepted: jnp.ndarray
    status: jnp.ndarray
    last_rejection: jnp.ndarray
    fresh: jnp.ndarray  # x not yet evaluated (:meth:`FixedPoint.restart`): the next step evaluates at x, accepts it


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree)))


def _checked(x, Tx, info):
    """(T(x), info, |T(x) - x|, whether x is usable: in the domain with a finite residual and merit)."""
    Tx = jax.tree.map(lambda t, a: t.astype(a.dtype), Tx, x)  # a step may promote (float64 constants)
    res = _norm(jax.tree.map(jnp.subtract, Tx, x))
    ok = info.in_domain & jnp.isfinite(res) & jnp.isfinite(info.merit)
    return Tx, info, res, ok


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


def _improves(new: StepInfo, old: StepInfo, res, old_res):
    """Accept a trial point whose merit dropped by more than round-off, or stayed within round-off while the
    residual |T(x) - x| dropped. The round-off of an action: a P x P log-determinant amplifies the kernel's
    rounding by cond(K + kappa2) (measured ~4e-12 relative for a tanh kernel by 2-d quadrature at P = 40, with
    two decades of stationarity residual to go), so no finer than 1e-10 relative."""
    noise = jnp.maximum(64 * jnp.finfo(jnp.result_type(old.merit)).eps, 1e-10) * (1 + jnp.abs(old.merit))
    return (new.merit < old.merit - noise) | ((new.merit <= old.merit + noise) & (res <= old_res))


class FixedPoint(AbstractRule):
    """x <- x + eta (T(x) - x) with Anderson acceleration, backtracking and a domain guard (module docstring).

    Attributes:
        damping: the largest step eta in (0, 1] (also the first tried; 1: the plain iteration).
        tol: stationarity residual for SUCCESS (None: 1e-10 in float64, 1000 eps = 1.2e-4 in float32;
            ``solvers.coordinates.stationarity_tolerance``). For a precision map: max|Sigma T - I|; for the
            deep conjugate map: |T(x) - x| / |T(x)|.
        max_steps: iteration limit (evaluations of the map, rejected trial steps included).
        anderson_memory: accepted iterates the extrapolation uses (0: plain damped iteration), at most the number
            of free parameters. None (default): 0 with an exact Newton model (linear phi), 5 with an approximate
            one, 20 without. Measured at d = 50, P = 1000 (erf): without Newton steps 54 / 42 / 37 / 37 evaluations
            with memory 5 / 10 / 20 / 30; with them 26 / 19 / 19 / 21 with memory 0 / 3 / 5 / 20. On linear nets
            (exact Newton; 15 problems, d = 5-50, gamma = 1-2) memory 0 takes 2-6 evaluations, memory 5 3-14. Over 35
            small nonlinear problems (erf, ReLU, GELU, tanh; gamma = 1-2; d = 5-20) memory 5 took 8-24 evaluations
            (502 in all) where the plain iteration with memory 20 took 11-53 (866). Kernel scaling (one scalar) at
            d = 8, P = 12: 9 evaluations with memory 1 (the secant method), 17 with 10.
        min_damping: the iteration gives up (LINE_SEARCH_FAILED or LEFT_DOMAIN) when backtracking pushes eta below.
        grow, shrink: factors applied to eta after an accepted / rejected step.
    """

    damping: float = eqx.field(static=True, default=1.0)
    tol: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=1000)
    anderson_memory: int | None = eqx.field(static=True, default=None)
    min_damping: float = eqx.field(static=True, default=1e-7)
    grow: float = eqx.field(static=True, default=1.5)
    shrink: float = eqx.field(static=True, default=0.3)
    uses_model: ClassVar[bool] = False

    def __check_init__(self):
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must lie in (0, 1], got {self.damping}")
        check_tolerance("tol", self.tol)
        check_steps("max_steps", self.max_steps)
        if self.anderson_memory is not None:
            check_steps("anderson_memory", self.anderson_memory, minimum=0)
        check_in_range("min_damping", self.min_damping, 0.0, 1.0)
        check_in_range("shrink", self.shrink, 0.0, 1.0)
        check_in_range("grow", self.grow, 1.0, 10.0)

    def _map(self, problem: AbstractFixedPointProblem, x, args):
        return problem.newton(x, args) if self.uses_model else problem(x, args)

    def _memory(self, problem, x0, args) -> int:
        kind = problem.model_kind(x0, args) if self.uses_model else None
        memory = self.anderson_memory
        if memory is None:
            memory = {"exact": 0, "approximate": 5, None: 20}[kind]
        return min(memory, ravel_pytree(x0)[0].size)

    def _evaluate(self, problem, x, args):
        return _checked(x, *self._map(problem, x, args))

    def init(self, problem, x0, args):
        tol = stationarity_tolerance(self.tol, x0)
        Tx, info, res, ok = self._evaluate(problem, x0, args)
        flat = ravel_pytree(x0)[0]
        rows = self._memory(problem, x0, args) + 1
        status = jnp.where(ok, jnp.where(info.residual <= tol, Status.SUCCESS, Status.MAX_STEPS),
                           jnp.where(info.in_domain, Status.NONFINITE, Status.LEFT_DOMAIN))
        return FixedPointState(
            x=x0, Tx=Tx, info=info, eta=jnp.asarray(self.damping, res.dtype),
            X_hist=jnp.zeros((rows, flat.size), flat.dtype).at[-1].set(flat),
            G_hist=jnp.zeros((rows, flat.size), flat.dtype).at[-1].set(ravel_pytree(Tx)[0] - flat),
            count=jnp.asarray(1), accepted=jnp.asarray(0), status=jnp.asarray(status, jnp.int32),
            last_rejection=jnp.asarray(Status.LINE_SEARCH_FAILED, jnp.int32), fresh=jnp.asarray(False),
        )

    def restart(self, s: FixedPointState, x) -> FixedPointState:
        """A state at x that is not yet evaluated (no new trace of the map): its next :meth:`step` evaluates the map
        at x (T(x) := x there, so the candidate is x itself) and accepts x if it is finite and in the domain. Used by
        :class:`Continuation` to start a stage inside the loop."""
        flat = ravel_pytree(x)[0]
        return FixedPointState(
            x=x, Tx=x, info=s.info, eta=jnp.asarray(self.damping, s.eta.dtype),
            X_hist=jnp.zeros_like(s.X_hist).at[-1].set(flat), G_hist=jnp.zeros_like(s.G_hist), count=jnp.asarray(1),
            accepted=s.accepted, status=jnp.asarray(Status.MAX_STEPS, jnp.int32), last_rejection=s.last_rejection,
            fresh=jnp.asarray(True),
        )

    def step(self, problem, s: FixedPointState, args):
        tol = stationarity_tolerance(self.tol, s.x)
        flat, unravel = ravel_pytree(s.x)
        g = ravel_pytree(s.Tx)[0] - flat
        if s.X_hist.shape[0] > 1:
            x_new = unravel(_anderson(flat, g, s.X_hist, s.G_hist, s.count, s.eta))
        else:
            x_new = unravel(flat + s.eta * g)
        Tx_new, info, res_new, ok = self._evaluate(problem, x_new, args)
        old_res = _norm(jax.tree.map(jnp.subtract, s.Tx, s.x))
        accept = ok & (s.fresh | _improves(info, s.info, res_new, old_res))
        eta = jnp.where(accept, jnp.minimum(s.eta * self.grow, self.damping), s.eta * self.shrink)
        reason = jnp.where(info.in_domain, jnp.where(ok, Status.LINE_SEARCH_FAILED, Status.NONFINITE),
                           Status.LEFT_DOMAIN)
        last_rejection = jnp.where(accept, s.last_rejection, reason).astype(jnp.int32)
        status = jnp.where(accept & (info.residual <= tol), Status.SUCCESS,
                           jnp.where(eta < self.min_damping, last_rejection, Status.MAX_STEPS)).astype(jnp.int32)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        flat_new = ravel_pytree(x_new)[0]
        return FixedPointState(
            x=pick(x_new, s.x), Tx=pick(Tx_new, s.Tx), info=pick(info, s.info), eta=eta,
            X_hist=jnp.where(accept, _push(s.X_hist, flat_new), s.X_hist),
            G_hist=jnp.where(accept, _push(s.G_hist, ravel_pytree(Tx_new)[0] - flat_new), s.G_hist),
            count=jnp.where(accept, jnp.minimum(s.count + 1, s.X_hist.shape[0]), 1),
            accepted=s.accepted + accept.astype(jnp.int32), status=status, last_rejection=last_rejection,
            fresh=s.fresh & ~accept,
        )

    def terminate(self, problem, s: FixedPointState, args):
        return s.status != Status.MAX_STEPS, s.status

    def result(self, problem, s: FixedPointState, args):
        return s.x, {"accepted": s.accepted, "damping": s.eta}


class Newton(FixedPoint):
    """:class:`FixedPoint` on the Newton-preconditioned map x + (I - J)^{-1}(T(x) - x), J the problem's Jacobian
    model (where it has none: the plain map). The default solver of the two-layer theories."""

    uses_model: ClassVar[bool] = True


# --- Newton-CG in a trust region: the deep kernel form's steps ------------------------------------------------------
class TrustRegionState(eqx.Module):
    x: object
    Tx: object
    info: StepInfo
    step: eqx.Module  # actions.krylov.TrustStep: the step proposed at x (computed when x was accepted)
    radius: jnp.ndarray
    radius0: jnp.ndarray
    accepted: jnp.ndarray
    products: jnp.ndarray
    status: jnp.ndarray
    last_rejection: jnp.ndarray
    fresh: jnp.ndarray  # x not yet evaluated (:meth:`TrustRegion.restart`): the next step evaluates at x, accepts it


class TrustRegion(AbstractRule):
    """Newton-CG steps in a trust region on a precision map whose Jacobian model solves by Krylov iterations
    (``actions.krylov.KrylovPrecisionModel.trust_step``; the deep kernel form): at an accepted point x the Newton
    model m of the action S (gradient -R, R = T(x) - x, Hessian I - J in the entropy's metric) is minimised by
    Steihaug-Toint CG inside |delta| <= radius; the trial x + delta (or the point of ``path``) is accepted under
    :class:`FixedPoint`'s rule (in the domain, finite, the action not raised beyond round-off), and the radius follows
    the ratio rho of the actual to the predicted decrease (Nocedal & Wright, alg. 4.1): x grow where rho > 3/4 and
    the step reached the boundary, x shrink (of the step's length) where rho < 1/4 or the trial was rejected; where
    the prediction is below the action's round-off, rho counts as 1. A rejected trial costs one evaluation of the
    map: the next trial is the same step shortened to the new radius (its prediction along the line is known): the
    model is linearised in the evaluation's pass (no further factorisation), the CG solve runs only at accepted points
    and not at the last one.

    Against :class:`Newton` on the same model (backtracking a step length that regrows by 1.5 per accepted step, the
    CG solve run at every trial point): docs/deep_solver.md.

    Attributes:
        tol: stationarity residual for SUCCESS (None: :func:`~adaptive_kernels.solvers.coordinates.stationarity_tolerance`).
        max_steps: evaluations of the map (trial points, rejected ones included).
        radius: the initial radius in units of sqrt(min_l N_l / 2), a unit relative change of one eigenvalue of one
            layer's Q_l in the metric; at most |R| (the fixed-point step).
        min_radius: give up (with the last rejection's status) below this fraction of the initial radius.
        grow, shrink: the radius factors.
        path: where a trial point lies (``actions.krylov.KrylovPrecisionModel.trust_step``): ``"rotation"``
            (default: Lambda + delta, except that the part of delta mixing well-separated eigenvalues of Lambda turns
            its eigenvectors, ``actions.krylov.rotation_retraction``; docs/deep_solver.md, thirteenth pass),
            ``"additive"`` (Lambda + delta, the default before), ``"covariance"`` (Sigma - Sigma delta Sigma, along
            which the Newton model is exact to second order), ``"hybrid"`` (per step, whichever of the two the
            second-order term favours) or ``"exponential"`` (the geodesic Lambda^{1/2} expm(Lambda^{-1/2} delta
            Lambda^{-1/2}) Lambda^{1/2}: a step in the log-eigenvalues of the whitened Q_l, positive definite for any
            delta; eighth pass).
        subproblem: how the model is minimised in the ball: ``"steihaug"`` (default; CG cut at the first boundary
            crossing) or ``"lanczos"`` (GLTR: the model's minimiser over the ball in the Krylov space, which takes
            more products on the boundary; ``actions.krylov.KrylovPrecisionModel.trust_step``).
    Statistics (``Solution.stats``): ``accepted``, ``radius``, ``jacobian_products`` (products with J in all).
    """

    tol: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=1000)
    radius: float = eqx.field(static=True, default=1.0)
    min_radius: float = eqx.field(static=True, default=1e-10)
    grow: float = eqx.field(static=True, default=2.0)
    shrink: float = eqx.field(static=True, default=0.5)
    path: str = eqx.field(static=True, default="rotation")
    subproblem: str = eqx.field(static=True, default="steihaug")

    def __check_init__(self):
        if self.path not in TRUST_PATHS:
            raise ValueError(f"path must be one of {TRUST_PATHS}, got {self.path!r}")
        if self.subproblem not in TRUST_SUBPROBLEMS:
            raise ValueError(f"subproblem must be one of {TRUST_SUBPROBLEMS}, got {self.subproblem!r}")
        check_tolerance("tol", self.tol)
        check_steps("max_steps", self.max_steps)
        if not 0 < self.radius < float("inf"):
            raise ValueError(f"radius must be positive and finite, got {self.radius}")
        check_in_range("min_radius", self.min_radius, 0.0, 1.0)
        check_in_range("shrink", self.shrink, 0.0, 1.0)
        check_in_range("grow", self.grow, 1.0, 10.0)

    def _model(self, problem, x, args):
        model = problem.model(x, args)
        if not hasattr(model, "trust_step"):
            raise TypeError(f"TrustRegion needs a Krylov Jacobian model (actions.krylov); {type(problem).__name__} "
                            f"gives {type(model).__name__}: use Newton or FixedPoint")
        return model

    def init(self, problem, x0, args):
        tol = stationarity_tolerance(self.tol, x0)
        Tx, info, res, ok = _checked(x0, *problem(x0, args))
        model = self._model(problem, x0, args)
        weights = jnp.min(jnp.stack([jnp.asarray(w, res.dtype) for w in jax.tree.leaves(model.weights)]))
        R = jax.tree.map(jnp.subtract, Tx, x0)
        radius = jnp.minimum(self.radius * jnp.sqrt(0.5 * weights), model.norm(R))
        step = model.trust_step(R, radius, self.path, self.subproblem)
        status = jnp.where(ok, jnp.where(info.residual <= tol, Status.SUCCESS, Status.MAX_STEPS),
                           jnp.where(info.in_domain, Status.NONFINITE, Status.LEFT_DOMAIN))
        return TrustRegionState(
            x=x0, Tx=Tx, info=info, step=step, radius=radius, radius0=radius, accepted=jnp.asarray(0),
            products=step.products.astype(jnp.int32), status=jnp.asarray(status, jnp.int32),
            last_rejection=jnp.asarray(Status.LINE_SEARCH_FAILED, jnp.int32), fresh=jnp.asarray(False))

    def restart(self, s: TrustRegionState, x) -> TrustRegionState:
        """A state at x that is not yet evaluated: its next :meth:`step` evaluates the map at x (a zero step), accepts
        x if it is finite and in the domain and proposes the step from there (:class:`Continuation`'s stages)."""
        zero = s.step.scaled(jnp.zeros_like(s.radius))
        return TrustRegionState(x=x, Tx=x, info=s.info, step=zero, radius=s.radius0, radius0=s.radius0,
                                accepted=s.accepted, products=s.products, status=jnp.asarray(Status.MAX_STEPS, jnp.int32),
                                last_rejection=s.last_rejection, fresh=jnp.asarray(True))

    def step(self, problem, s: TrustRegionState, args):
        tol = stationarity_tolerance(self.tol, s.x)
        trial = s.step.point(s.x)
        Tt, info, res, ok = _checked(trial, *problem(trial, args))
        model = self._model(problem, trial, args)  # the same pass (XLA merges the two traces: 3L + 1 Cholesky, L - 1 eigh)
        old_res = _norm(jax.tree.map(jnp.subtract, s.Tx, s.x))
        accept = ok & (s.fresh | _improves(info, s.info, res, old_res))
        noise = jnp.maximum(64 * jnp.finfo(res.dtype).eps, 1e-10) * (1 + jnp.abs(s.info.merit))
        rho = jnp.where(s.step.predicted > noise, (s.info.merit - info.merit) / s.step.predicted, 1.0)
        length = s.step.length
        boundary = length >= 0.99 * s.radius
        radius = jnp.where(s.fresh, s.radius, jnp.where(
            ~accept | (rho < 0.25), self.shrink * length,
            jnp.where((rho > 0.75) & boundary, self.grow * s.radius, s.radius)))
        success = accept & (info.residual <= tol)
        x = jax.tree.map(lambda a, b: jnp.where(accept, a, b), trial, s.x)
        Tx = jax.tree.map(lambda a, b: jnp.where(accept, a, b), Tt, s.Tx)
        step = jax.lax.cond(accept & ~success, lambda: model.trust_step(jax.tree.map(jnp.subtract, Tt, trial), radius,
                                                                    self.path, self.subproblem),
                            lambda: s.step.scaled(jnp.minimum(1.0, radius / jnp.maximum(length, jnp.finfo(
                                res.dtype).tiny))))
        reason = jnp.where(info.in_domain, jnp.where(ok, Status.LINE_SEARCH_FAILED, Status.NONFINITE),
                           Status.LEFT_DOMAIN)
        last_rejection = jnp.where(accept, s.last_rejection, reason).astype(jnp.int32)
        status = jnp.where(success, Status.SUCCESS, jnp.where(radius < self.min_radius * s.radius0, last_rejection,
                                                              Status.MAX_STEPS)).astype(jnp.int32)
        return TrustRegionState(
            x=x, Tx=Tx, info=jax.tree.map(lambda a, b: jnp.where(accept, a, b), info, s.info), step=step,
            radius=radius, radius0=s.radius0, accepted=s.accepted + accept.astype(jnp.int32),
            products=s.products + step.products.astype(jnp.int32), status=status, last_rejection=last_rejection,
            fresh=s.fresh & ~accept)

    def terminate(self, problem, s: TrustRegionState, args):
        return s.status != Status.MAX_STEPS, s.status

    def result(self, problem, s: TrustRegionState, args):
        return s.x, {"accepted": s.accepted, "radius": s.radius, "jacobian_products": s.products}


# --- continuation in the data term: the fallback where a cold start fails -------------------------------------------
def data_strength(args, strength):
    """The problem with its data term at ``strength`` in [0, 1]: targets y -> sqrt(strength) y, so the fit term
    y^T A y / 2 scales by ``strength`` (0: only the log-determinant, a small change of the NNGP; 1: the problem)."""
    if not hasattr(args, "y"):
        raise TypeError(f"Continuation scales the targets args.y; args of type {type(args).__name__} have none")
    return eqx.tree_at(lambda p: p.y, args, jnp.sqrt(jnp.asarray(strength, args.y.dtype)) * args.y)


def _cold_steps(value):
    """``cold_steps`` as an int32 array (a dynamic leaf: solvers that differ only in it share one compilation)."""
    if not isinstance(value, jax.Array):
        check_steps("cold_steps", value)
    return jnp.asarray(value, jnp.int32)


class ContinuationState(eqx.Module):
    inner: FixedPointState
    x0: object
    stage: jnp.ndarray  # 0: the cold start on the problem itself; k = 1..stages: data strength k / stages
    stage_steps: jnp.ndarray
    cold_status: jnp.ndarray
    status: jnp.ndarray


class Continuation(AbstractRule):
    """``rule`` from the initial value (the cold start); where that fails -- a failed status, or no convergence within
    ``cold_steps`` evaluations -- continuation in the data term: ``rule`` again from the initial value on the problem
    with its targets scaled to strength 1/stages (:func:`data_strength`), each stage's solution the start of the next,
    up to strength 1, the problem itself. Every stage is solved to ``rule``'s tolerance; the answer is a stationary
    point of the problem itself (the last stage), so it is what a successful cold start would give where both converge
    to the same saddle. Stages start inside the one loop (:meth:`FixedPoint.restart`: no second trace of the map).

    Attributes:
        rule: the step rule of every stage (default :class:`TrustRegion`; its tolerance and step sizes are used, its
            ``max_steps`` is not).
        stages: continuation stages after a failed cold start.
        cold_steps: evaluations the cold start may take before the fallback starts.
        max_steps: evaluations in all (cold start and stages).
    Statistics (``Solution.stats``): ``cold_start`` (the cold start's :class:`Status`; MAX_STEPS also when it ran out
    of ``cold_steps``), ``continuation_stages`` (stages run: 0 when the cold start succeeded).
    """

    rule: FixedPoint | TrustRegion = TrustRegion()
    stages: int = eqx.field(static=True, default=4)
    cold_steps: jnp.ndarray = eqx.field(default=200, converter=_cold_steps)
    max_steps: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        if not isinstance(self.rule, (FixedPoint, TrustRegion)):
            raise TypeError(f"rule must be a FixedPoint, Newton or TrustRegion step rule, got {type(self.rule).__name__}")
        check_steps("stages", self.stages)
        check_steps("max_steps", self.max_steps)

    def _args(self, args, stage):
        return data_strength(args, jnp.where(stage == 0, 1.0, stage / self.stages))

    def init(self, problem, x0, args):
        inner = self.rule.init(problem, x0, args)
        done, status = self.rule.terminate(problem, inner, args)
        running = jnp.asarray(Status.MAX_STEPS, jnp.int32)
        zero = jnp.asarray(0, jnp.int32)
        return ContinuationState(inner=inner, x0=x0, stage=zero, stage_steps=zero,
                                 cold_status=jnp.where(done, status, running).astype(jnp.int32),
                                 status=jnp.where(done & (status == Status.SUCCESS), status, running).astype(jnp.int32))

    def step(self, problem, s: ContinuationState, args):
        inner = self.rule.step(problem, s.inner, self._args(args, s.stage))
        done, status = self.rule.terminate(problem, inner, args)
        success = done & (status == Status.SUCCESS)
        cold, final = s.stage == 0, s.stage == self.stages
        fallback = cold & ~success & (done | (s.stage_steps + 1 >= self.cold_steps))
        advance = ~cold & ~final & success
        restart = self.rule.restart(inner, jax.tree.map(lambda a, b: jnp.where(fallback, a, b), s.x0, inner.x))
        inner = jax.tree.map(lambda a, b: jnp.where(fallback | advance, a, b), restart, inner)
        stage = jnp.where(fallback, 1, jnp.where(advance, s.stage + 1, s.stage)).astype(jnp.int32)
        finished = (cold | final) & success | ~cold & done & ~success
        cold_status = jnp.where(cold & (success | fallback), jnp.where(done, status, Status.MAX_STEPS), s.cold_status)
        return ContinuationState(
            inner=inner, x0=s.x0, stage=stage,
            stage_steps=jnp.where(fallback | advance, 0, s.stage_steps + 1).astype(jnp.int32),
            cold_status=cold_status.astype(jnp.int32),
            status=jnp.where(finished, status, Status.MAX_STEPS).astype(jnp.int32))

    def terminate(self, problem, s: ContinuationState, args):
        return s.status != Status.MAX_STEPS, s.status

    def result(self, problem, s: ContinuationState, args):
        x, stats = self.rule.result(problem, s.inner, args)
        return x, {**stats, "cold_start": s.cold_status, "continuation_stages": s.stage.astype(jnp.int32)}
