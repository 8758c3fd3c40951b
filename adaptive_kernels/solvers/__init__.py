"""Solvers for the stationary points of the actions; all return a :class:`Solution`.

- step rules run by one driver (``solvers.driver.iterate``): :class:`FixedPoint` (guarded, Anderson-accelerated
  iteration of a fixed-point map), :class:`Newton` (the same on the Newton-preconditioned map),
  :class:`TrustRegion` (Steihaug Newton-CG steps on the action inside a trust region) and :class:`Continuation`
  (a path in gamma / data strength from a cold start, each stage solved by an inner rule);
- :class:`QuasiNewton`: L-BFGS / BFGS over a Cholesky parametrisation (optimistix), then Newton steps;
- :func:`stationary_point`: (action, solver, init, args) -> Solution, with implicit derivatives.
"""

from adaptive_kernels.actions.base import AbstractFixedPointProblem, PrecisionMap, StepInfo
from adaptive_kernels.solvers.driver import AbstractRule, IterationResult, iterate
from adaptive_kernels.solvers.fixed_point import Continuation, FixedPoint, Newton, TrustRegion
from adaptive_kernels.solvers.implicit import implicit_fixed_point
from adaptive_kernels.solvers.quasi_newton import QuasiNewton
from adaptive_kernels.solvers.solution import Solution, Status
from adaptive_kernels.solvers.stationary import as_fixed_point_problem, stationary_point

__all__ = [
    "AbstractFixedPointProblem",
    "AbstractRule",
    "Continuation",
    "FixedPoint",
    "IterationResult",
    "Newton",
    "PrecisionMap",
    "QuasiNewton",
    "Solution",
    "Status",
    "StepInfo",
    "TrustRegion",
    "as_fixed_point_problem",
    "implicit_fixed_point",
    "iterate",
    "stationary_point",
]
