"""The one iteration driver (after optimistix's ``_iterate.py``).

A solver is a small Module -- a *step rule* -- with

    init(problem, y0, args) -> state          (a typed Module, never a dict)
    step(problem, state, args) -> state
    terminate(problem, state, args) -> (done, status)
    result(problem, state, args) -> (y, stats)

and :func:`iterate` alone runs the ``jax.lax.while_loop``: it stops when the rule says so or at ``max_steps``
(status MAX_STEPS), turns a non-finite iterate into NONFINITE, and counts the steps. Every solver of the
package (the fixed-point and Newton rules, the quasi-Newton phases) runs through it, so the stopping rules
and the statuses are written once.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.solvers.solution import Status


class AbstractRule(eqx.Module):
    """A step rule for :func:`iterate`."""

    max_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init(self, problem, y0, args): ...

    @abc.abstractmethod
    def step(self, problem, state, args): ...

    @abc.abstractmethod
    def terminate(self, problem, state, args):
        """(done, status): ``status`` is the :class:`Status` to report if ``done``."""

    @abc.abstractmethod
    def result(self, problem, state, args):
        """(y, stats): the iterate to return and a dict of statistics (arrays)."""


class IterationResult(eqx.Module):
    """What :func:`iterate` returns: the final iterate, the status, the steps taken, the rule's statistics."""

    value: object
    status: jnp.ndarray
    steps: jnp.ndarray
    stats: dict


def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def iterate(rule: AbstractRule, problem, y0, args) -> IterationResult:
    """Run ``rule`` from ``y0`` until it terminates or takes ``rule.max_steps`` steps."""
    state = rule.init(problem, y0, args)
    done, status = rule.terminate(problem, state, args)
    dynamic, static = eqx.partition(state, eqx.is_array)

    def cond(carry):
        _, steps, done, _ = carry
        return ~done & (steps < rule.max_steps)

    def body(carry):
        dynamic, steps, _, _ = carry
        state = rule.step(problem, eqx.combine(dynamic, static), args)
        done, status = rule.terminate(problem, state, args)
        return eqx.partition(state, eqx.is_array)[0], steps + 1, done, jnp.asarray(status, jnp.int32)

    carry = (dynamic, jnp.asarray(0), jnp.asarray(done), jnp.asarray(status, jnp.int32))
    dynamic, steps, done, status = jax.lax.while_loop(cond, body, carry)
    state = eqx.combine(dynamic, static)
    y, stats = rule.result(problem, state, args)
    status = jnp.where(done, status, Status.MAX_STEPS)
    status = jnp.where(_all_finite(y), status, Status.NONFINITE).astype(jnp.int32)
    return IterationResult(value=y, status=status, steps=steps, stats=stats)
