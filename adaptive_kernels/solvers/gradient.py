"""Quasi-Newton minimisation of an action over a positive-definite parametrisation.

THEORY.md sec. 4 (solver lesson): minimising S over a Cholesky factor of Sigma with a
quasi-Newton method converges where the plain fixed-point iteration loses positive
definiteness. Sigma = L L^T / a with log-diagonal L (``solvers.base``) keeps every iterate
positive definite; optimistix's BFGS or L-BFGS does the minimisation. A quasi-Newton
method stops on changes of S, which round-off limits to gradients of order sqrt(eps) |S|;
up to ``newton_steps`` Newton steps (Hessian solve with lineax) then bring the stationarity
residual to ``tol``.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.solvers.base import (
    check_tolerance, from_unconstrained, hessian_solver, stationarity, stationarity_tolerance, to_unconstrained,
)
from adaptive_kernels.solvers.solution import Status

METHODS = ("bfgs", "lbfgs")


def _cast(x, dtype):
    return x.astype(dtype) if eqx.is_inexact_array(x) else x


class QuasiNewton(eqx.Module):
    """BFGS / L-BFGS on the unconstrained Cholesky coordinates of the order parameters.

    Attributes:
        method: ``"bfgs"`` (dense inverse Hessian) or ``"lbfgs"`` (limited memory).
        rtol, atol: optimistix's Cauchy termination (changes of the coordinates and of S).
        tol: the stationarity residual max|Sigma (aI + (2/N) dD/dSigma) - I| required for SUCCESS
            (None: 1e-10 in float64, 1.2e-4 in float32; ``solvers.base.stationarity_tolerance``).
        max_steps: iteration limit of the quasi-Newton phase.
        newton_steps: largest number of Newton steps after it (0: none).
        linear_solver: lineax solver for the Newton steps (default: ``solvers.base.hessian_solver``,
            dense Cholesky for small order parameters, matrix-free CG (at most 300 steps) for large ones:
            a Newton step from the quasi-Newton result needs only a rough solve).
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
        if not (isinstance(self.max_steps, int) and self.max_steps > 0):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if not (isinstance(self.newton_steps, int) and self.newton_steps >= 0):
            raise ValueError(f"newton_steps must be a non-negative integer, got {self.newton_steps!r}")

    def _optimistix_solver(self):
        if self.method == "lbfgs":
            return optx.LBFGS(rtol=self.rtol, atol=self.atol)
        return optx.BFGS(rtol=self.rtol, atol=self.atol)

    def run(self, action: EntropicAction, init, args):
        tol = stationarity_tolerance(self.tol, init)
        dtype = jnp.result_type(*jax.tree.leaves(init))
        if jax.config.jax_enable_x64 and dtype != jnp.float64:
            # optimistix's (L-)BFGS mixes float64 scalars into float32 states when x64 is on (optimistix
            # issue #207: a scan carry type error), so solve in float64 to the float32 tolerance, then cast back.
            wide, narrow = (lambda x: _cast(x, jnp.float64)), (lambda x: _cast(x, dtype))
            Sigma, iterations, status, stats = dataclasses.replace(self, tol=tol).run(
                action, jax.tree.map(wide, init), jax.tree.map(wide, args))
            return jax.tree.map(narrow, Sigma), iterations, status, stats
        _, precisions = action.prior(args)

        def objective(u, args):
            return action(from_unconstrained(u, precisions, init), args)

        result = optx.minimise(
            objective,
            self._optimistix_solver(),
            to_unconstrained(init, precisions),
            args,
            max_steps=self.max_steps,
            throw=False,
        )
        gradient = jax.grad(objective)

        def residual_at(u):
            return stationarity(action, from_unconstrained(u, precisions, init), args)[0]

        def newton_cond(carry):
            k, _, residual = carry
            return (k < self.newton_steps) & (residual > tol)

        def newton_body(carry):
            k, u, residual = carry
            hessian = lx.JacobianLinearOperator(
                gradient, u, args, tags=(lx.symmetric_tag, lx.positive_semidefinite_tag)
            )
            linear_solver = hessian_solver(u, args, self.linear_solver, rtol=1e-6, max_steps=300)
            step = lx.linear_solve(hessian, gradient(u, args), linear_solver, throw=False).value
            candidate = jax.tree.map(jnp.subtract, u, step)
            new_residual = residual_at(candidate)
            better = jnp.isfinite(new_residual) & (new_residual < residual)
            # a Newton step that does not reduce the residual ends the polish
            return (jnp.where(better, k + 1, self.newton_steps),
                    jax.tree.map(lambda a, b: jnp.where(better, a, b), candidate, u),
                    jnp.where(better, new_residual, residual))

        u0 = result.value
        polished, u, residual = jax.lax.while_loop(newton_cond, newton_body, (jnp.asarray(0), u0, residual_at(u0)))
        Sigma = from_unconstrained(u, precisions, init)
        status = jnp.where(
            residual <= tol,
            Status.SUCCESS,
            jnp.where(result.stats["num_steps"] >= self.max_steps, Status.MAX_STEPS, Status.LINE_SEARCH_FAILED),
        )
        return Sigma, result.stats["num_steps"] + polished, status, {}
