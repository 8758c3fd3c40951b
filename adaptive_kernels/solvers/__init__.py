"""Solvers for the stationary points of the actions; all return a :class:`Solution`.

- :class:`FixedPoint`: damped, backtracked, positivity-guarded iteration of the stationarity
  equations (THEORY.md sec. 4);
- :class:`QuasiNewton`: BFGS / L-BFGS over a Cholesky parametrisation (optimistix);
- :func:`minimise`: (action, solver, init, args) -> Solution, with implicit derivatives.
"""

from adaptive_kernels.solvers.base import from_unconstrained, stationarity, to_unconstrained
from adaptive_kernels.solvers.fixed_point import FixedPoint
from adaptive_kernels.solvers.gradient import QuasiNewton
from adaptive_kernels.solvers.implicit import implicit_minimiser
from adaptive_kernels.solvers.minimise import minimise
from adaptive_kernels.solvers.solution import Solution, Status

__all__ = [
    "FixedPoint",
    "QuasiNewton",
    "Solution",
    "Status",
    "from_unconstrained",
    "implicit_minimiser",
    "minimise",
    "stationarity",
    "to_unconstrained",
]
