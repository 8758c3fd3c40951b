"""Quasi-Newton minimisation of an entropic action over a positive-definite parametrisation.

THEORY.md sec. 4 (solver lesson): minimising S over a Cholesky factor of Sigma with a quasi-Newton method
converges where the plain fixed-point iteration loses positive definiteness. Sigma = L L^T / a with log-diagonal
L (``solvers.coordinates``) keeps every iterate positive definite; optimistix's BFGS or L-BFGS takes the steps
(its ``init``/``step``/``terminate`` driven by ``solvers.driver.iterate``). A quasi-Newton method stops on
changes of S, which round-off limits to gradients of order sqrt(eps) |S|; up to ``newton_steps`` Newton steps
(a second phase of the same driver, Hessian systems by ``solve_linear``) then bring the stationarity residual to
``tol``. A different method from the fixed-point rules, reaching the same minimiser: a cross-check.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from adaptive_kernels.actions.base import EntropicAction, stationarity
from adaptive_kernels.solvers.coordinates import (
    check_steps, check_tolerance, data_size, from_unconstrained, solve_linear, stationarity_tolerance, to_unconstrained,
)
from adaptive_kernels.solvers.driver import AbstractRule, IterationResult, iterate
from adaptive_kernels.solvers.solution import Status

METHODS = ("bfgs", "lbfgs")


def _cast(x, dtype):
    return x.astype(dtype) if eqx.is_inexact_array(x) else x


class _Objective(eqx.Module):
    """S as a function of the unconstrained coordinates u."""

    action: EntropicAction
    like: object = eqx.field(static=True)

    def sigma(self, u, args):
        return from_unconstrained(u, self.action.prior(args)[1], self.like)

    def __call__(self, u, args):
        return self.action(self.sigma(u, args), args)

    def residual(self, u, args):
        return stationarity(self.action, self.sigma(u, args), args)[0]


class _OptimistixState(eqx.Module):
    u: object
    inner: object
    done: jnp.ndarray
    failed: jnp.ndarray


class _OptimistixPhase(AbstractRule):
    """optimistix's (L-)BFGS steps on the objective."""

    solver: optx.AbstractMinimiser
    max_steps: int = eqx.field(static=True)

    def _fn(self, objective):
        return lambda u, args: (objective(u, args), None)

    def init(self, objective, u0, args):
        f_struct = jax.eval_shape(lambda: objective(u0, args))
        inner = self.solver.init(self._fn(objective), u0, args, {}, f_struct, None, frozenset())
        return _OptimistixState(u0, inner, jnp.asarray(False), jnp.asarray(False))

    def step(self, objective, s, args):
        fn = self._fn(objective)
        u, inner, _ = self.solver.step(fn, s.u, args, {}, s.inner, frozenset())
        done, result = self.solver.terminate(fn, u, args, {}, inner, frozenset())
        return _OptimistixState(u, inner, done | (result != optx.RESULTS.successful),
                                result != optx.RESULTS.successful)

    def terminate(self, objective, s, args):
        return s.done, jnp.where(s.failed, Status.LINE_SEARCH_FAILED, Status.SUCCESS)

    def result(self, objective, s, args):
        return s.u, {}


class _NewtonState(eqx.Module):
    u: object
    residual: jnp.ndarray
    stalled: jnp.ndarray


class _NewtonPolish(AbstractRule):
    """Newton steps u <- u - H^{-1} grad S while they lower the stationarity residual, until it is below tol."""

    tol: float
    max_steps: int = eqx.field(static=True)
    linear_solver: lx.AbstractLinearSolver | None = eqx.field(static=True, default=None)

    def init(self, objective, u0, args):
        return _NewtonState(u0, objective.residual(u0, args), jnp.asarray(False))

    def step(self, objective, s, args):
        gradient = jax.grad(objective)

        def hessian(v):
            return jax.jvp(lambda u: gradient(u, args), (s.u,), (v,))[1]

        step = solve_linear(hessian, gradient(s.u, args), data_size(args), self.linear_solver, symmetric=True,
                            rtol=1e-6, max_steps=300)
        candidate = jax.tree.map(jnp.subtract, s.u, step)
        residual = objective.residual(candidate, args)
        better = jnp.isfinite(residual) & (residual < s.residual)
        return _NewtonState(jax.tree.map(lambda a, b: jnp.where(better, a, b), candidate, s.u),
                            jnp.where(better, residual, s.residual), ~better)

    def terminate(self, objective, s, args):
        return (s.residual <= self.tol) | s.stalled, jnp.where(s.residual <= self.tol, Status.SUCCESS,
                                                               Status.LINE_SEARCH_FAILED)

    def result(self, objective, s, args):
        return s.u, {}


class QuasiNewton(eqx.Module):
    """BFGS / L-BFGS on the unconstrained Cholesky coordinates of the order parameters, then Newton steps.

    Attributes:
        method: ``"bfgs"`` (dense inverse Hessian) or ``"lbfgs"`` (limited memory).
        rtol, atol: optimistix's Cauchy termination (changes of the coordinates and of S).
        tol: the stationarity residual max|Sigma (aI + (2/N) dD/dSigma) - I| required for SUCCESS
            (None: 1e-10 in float64, 1.2e-4 in float32; ``solvers.coordinates.stationarity_tolerance``).
        max_steps: iteration limit of the quasi-Newton phase.
        newton_steps: largest number of Newton steps after it (0: none).
        linear_solver: lineax solver for the Newton steps (default: dense for small order parameters, conjugate
            gradients -- at most 300 steps, rtol 1e-6: a Newton step from the quasi-Newton result needs only a
            rough solve -- for large ones; ``solvers.coordinates.solve_linear``).
    """

    method: str = eqx.field(static=True, default="lbfgs")
    rtol: float = eqx.field(static=True, default=1e-13)
    atol: float = eqx.field(static=True, default=1e-13)
    tol: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=1000)
    newton_steps: int = eqx.field(static=True, default=4)
    linear_solver: lx.AbstractLinearSolver | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("rtol", "atol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_tolerance("tol", self.tol)
        check_steps("max_steps", self.max_steps)
        check_steps("newton_steps", self.newton_steps, minimum=0)

    def run(self, action: EntropicAction, init, args) -> IterationResult:
        """Minimise ``action`` from ``init``: the order parameters, status, steps of both phases."""
        tol = stationarity_tolerance(self.tol, init)
        dtype = jnp.result_type(*jax.tree.leaves(init))
        if jax.config.jax_enable_x64 and dtype != jnp.float64:
            # optimistix's (L-)BFGS mixes float64 scalars into float32 states when x64 is on (optimistix issue
            # #207: a scan carry type error), so solve in float64 to the float32 tolerance, then cast back.
            wide = dataclasses.replace(self, tol=tol).run(
                action, jax.tree.map(lambda x: _cast(x, jnp.float64), init), jax.tree.map(lambda x: _cast(x, jnp.float64), args))
            return eqx.tree_at(lambda r: r.value, wide, jax.tree.map(lambda x: _cast(x, dtype), wide.value))
        objective = _Objective(action, jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), init))
        u0 = to_unconstrained(init, action.prior(args)[1])
        minimiser = (optx.LBFGS if self.method == "lbfgs" else optx.BFGS)(rtol=self.rtol, atol=self.atol)
        first = iterate(_OptimistixPhase(solver=minimiser, max_steps=self.max_steps), objective, u0, args)
        second = iterate(_NewtonPolish(tol=tol, max_steps=self.newton_steps, linear_solver=self.linear_solver), objective,
                         first.value, args)
        # SUCCESS once Newton's residual is below tol; otherwise why the first phase stopped
        status = jnp.where(second.status == Status.SUCCESS, Status.SUCCESS, jnp.where(
            first.status == Status.MAX_STEPS, Status.MAX_STEPS, Status.LINE_SEARCH_FAILED))
        nonfinite = (first.status == Status.NONFINITE) | (second.status == Status.NONFINITE)
        status = jnp.where(nonfinite, Status.NONFINITE, status).astype(jnp.int32)
        return IterationResult(value=objective.sigma(second.value, args), status=status,
                               steps=first.steps + second.steps, stats={})
