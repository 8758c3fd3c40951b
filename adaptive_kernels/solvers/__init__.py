"""Solvers for the stationary points of the actions; all return a :class:`Solution`."""

from adaptive_kernels.solvers.solution import Solution, Status

__all__ = ["Solution", "Status"]
