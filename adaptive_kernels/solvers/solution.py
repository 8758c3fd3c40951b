"""The result every saddle-point solver returns (optimistix-style: value, status, stats).

A :class:`Solution` is a PyTree of arrays (vmappable, jit-returnable); ``theory`` (the theory object that
posed the problem, e.g. ``Adaptive()``) is static, so predictions dispatch on it rather than on strings.
``converged`` is true only when ``status == Status.SUCCESS``; a solver never marks a
non-finite or out-of-domain point as converged.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from typing import Any

import equinox as eqx
import jax.numpy as jnp


class Status(enum.IntEnum):
    """Why a solver stopped. Stored in :class:`Solution` as an int array."""

    SUCCESS = 0
    MAX_STEPS = 1  # iteration limit reached before the tolerance
    NONFINITE = 2  # the action or the iterate became NaN/inf
    LEFT_DOMAIN = 3  # no positive-definite / in-domain point could be kept (backtracking failed)
    LINE_SEARCH_FAILED = 4  # no step decreased the action

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.SUCCESS: "converged",
    Status.MAX_STEPS: "iteration limit reached before convergence",
    Status.NONFINITE: "non-finite action or iterate",
    Status.LEFT_DOMAIN: "iterate left the domain (positive definiteness) and backtracking failed",
    Status.LINE_SEARCH_FAILED: "line search found no decrease of the merit function (action, or residual for a saddle)",
}


class Solution(eqx.Module):
    """A stationary point of an action.

    Attributes:
        value: the order parameters at the solution, in the coordinates of the theory's action (a PyTree:
            the scale s or scales u_l, Sigma or Sigma_l, whitened per-layer covariances Q_l, conjugate kernels).
        action: the action at ``value``.
        grad_norm: norm of the stationarity residual (gradient of the action) at ``value``.
        iterations: iterations taken.
        status: a :class:`Status` code (int array).
        domain_margin: smallest eigenvalue that must stay positive (Sigma, or
            I - (2/N) C^1/2 Kt C^1/2 for conjugate forms); NaN where not applicable.
        stats: extra solver statistics (a dict of arrays): ``residual`` (the stationarity residual), ...
        theory: the theory object (static); None for a solve of a bare action.
    """

    value: Any
    action: jnp.ndarray
    grad_norm: jnp.ndarray
    iterations: jnp.ndarray
    status: jnp.ndarray
    domain_margin: jnp.ndarray
    stats: dict = eqx.field(default_factory=dict)
    theory: Any = eqx.field(static=True, default=None)

    @property
    def converged(self):
        """True (as an array, vmappable) iff status is SUCCESS."""
        return self.status == Status.SUCCESS

    @property
    def message(self) -> str:
        """Human-readable status (for an unbatched solution)."""
        return Status(int(self.status)).message

    def with_theory(self, theory) -> "Solution":
        """This solution with ``theory`` attached. A theory with array fields (``Adaptive(seed=jnp.asarray(k))``, so
        that keys share one compilation; traced under jit) makes JAX warn "A JAX array is being set as static" for
        the static field: expected here, so silenced."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "A JAX array is being set as static")
            return dataclasses.replace(self, theory=theory)
