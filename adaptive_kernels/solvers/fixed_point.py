"""Damped, guarded fixed-point iteration of the stationarity condition (THEORY.md sec. 4).

Each order parameter is solved from its own stationarity equation
(``EntropicAction.target_precision``):

    Sigma^{-1} <- (1 - eta) Sigma^{-1} + eta [a I + (2/N) dD/dSigma]

eta = 1 is the plain iteration (for a linear net Sigma^{-1} = (d/s_w2) I - (c/N) X^T (t t^T - A) X);
the data gradient comes from autodiff for any phi. The step on the precision is a descent
direction of S (dS = -(N/2) eta tr(R Sigma R Sigma) to first order, R the residual precision),
so backtracking on the action always succeeds for small eta. THEORY.md's lesson: undamped or
unguarded iteration loses positive definiteness at gamma = 2, P = 30. Here a step is accepted
only when the new precision is positive definite (finite Cholesky factor) and S decreases
sufficiently (Armijo); otherwise eta is halved. After an accepted step eta doubles back up
to ``damping``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.actions.base import EntropicAction, as_matrix
from adaptive_kernels.solvers.solution import Status


def _inverse_spd(M):
    """M^{-1} through a Cholesky factor: NaN when M is not positive definite."""
    L = jnp.linalg.cholesky(M)
    eye = jnp.eye(M.shape[0], dtype=M.dtype)
    return jax.scipy.linalg.cho_solve((L, True), eye)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class FixedPoint(eqx.Module):
    """Forward-backward fixed-point iteration with damping, backtracking and a positivity guard.

    Attributes:
        damping: the largest step eta in (0, 1] on the precision (1: the plain iteration).
        tol: stationarity residual max|Sigma (aI + (2/N) dD/dSigma) - I| for SUCCESS.
        max_steps: iteration limit (accepted steps).
        max_backtracks: halvings of eta tried before giving up on a step.
    """

    damping: float = eqx.field(static=True, default=1.0)
    tol: float = eqx.field(static=True, default=1e-10)
    max_steps: int = eqx.field(static=True, default=5000)
    max_backtracks: int = eqx.field(static=True, default=40)

    def __check_init__(self):
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must lie in (0, 1], got {self.damping}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol}")
        for name in ("max_steps", "max_backtracks"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def run(self, action: EntropicAction, init, args):
        weights, _ = action.prior(args)
        like = init

        def unflatten(mats):
            return jax.tree.map(lambda m, x: m.reshape(x.shape), mats, like)

        def evaluate(mats):
            """S, target precisions and residual at Sigma = mats."""
            Sigma = unflatten(mats)
            value = action(Sigma, args)
            targets = action.target_precision(Sigma, args)
            eye = [jnp.eye(m.shape[0], dtype=m.dtype) for m in jax.tree.leaves(mats)]
            residual = jnp.max(jnp.stack([
                jnp.max(jnp.abs(m @ t - e)) for m, t, e in zip(jax.tree.leaves(mats), jax.tree.leaves(targets), eye)
            ]))
            return value, targets, residual

        Sigma0 = jax.tree.map(as_matrix, init)
        value0, targets0, residual0 = evaluate(Sigma0)
        precision0 = jax.tree.map(_inverse_spd, Sigma0)
        slack = 64 * jnp.finfo(jnp.result_type(value0)).eps
        eta_max = jnp.asarray(self.damping, jnp.result_type(value0))

        def slope(Sigma, precision, targets):
            """-dS/deta at eta = 0: (N/2) sum_l tr(R Sigma R Sigma), R = target - Sigma^{-1} >= 0."""
            terms = [0.5 * w * jnp.sum((R @ S) * (R @ S).T) for S, R, w in zip(
                jax.tree.leaves(Sigma),
                jax.tree.leaves(jax.tree.map(jnp.subtract, targets, precision)),
                jax.tree.leaves(weights),
            )]
            return sum(terms)

        def try_step(carry):
            """Backtrack eta until the step keeps Sigma positive definite and decreases S enough.

            Sufficient decrease S(eta) <= S - c eta slope (c = 1/4: for a quadratic the accepted
            eta is at most 1.5 times the best one, so every mode contracts at least by half);
            once that predicted decrease is below the action's round-off, the residual must fall.
            """
            Sigma, precision, value, targets, residual, eta, _ = carry
            rate = slope(Sigma, precision, targets)
            noise = slack * (1 + jnp.abs(value))

            def propose(eta):
                new_precision = jax.tree.map(lambda p, t: p + eta * (t - p), precision, targets)
                new_Sigma = jax.tree.map(_inverse_spd, new_precision)
                new_value, new_targets, new_residual = evaluate(new_Sigma)
                in_domain = _all_finite(new_Sigma)
                decrease = jnp.where(
                    eta * rate > noise,
                    new_value <= value - 0.25 * eta * rate,
                    (new_value <= value + noise) & (new_residual < residual),
                )
                accept = in_domain & jnp.isfinite(new_value) & jnp.isfinite(new_residual) & decrease
                return accept, in_domain, (new_Sigma, new_precision, new_value, new_targets, new_residual)

            def cond(state):
                k, accept, _, _, _ = state
                return (~accept) & (k < self.max_backtracks)

            def body(state):
                k, _, _, eta, _ = state
                accept, in_domain, proposal = propose(eta / 2)
                return k + 1, accept, in_domain, eta / 2, proposal

            first = propose(eta)
            state = jax.lax.while_loop(cond, body, (jnp.asarray(0), first[0], first[1], eta, first[2]))
            _, accept, in_domain, eta, proposal = state
            return accept, in_domain, eta, proposal

        def cond(carry):
            _, _, _, _, residual, _, (k, status) = carry
            return (status == -1) & (residual > self.tol) & (k < self.max_steps)

        def body(carry):
            Sigma, precision, value, targets, residual, eta, (k, status) = carry
            accept, in_domain, eta_used, proposal = try_step(carry)
            failure = jnp.where(in_domain, Status.LINE_SEARCH_FAILED, Status.LEFT_DOMAIN)
            new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposal, (Sigma, precision, value, targets, residual))
            eta_next = jnp.minimum(2 * eta_used, eta_max)
            return (*new, eta_next, (k + accept.astype(k.dtype), jnp.where(accept, status, failure)))

        start = (Sigma0, precision0, value0, targets0, residual0, eta_max, (jnp.asarray(0), jnp.asarray(-1)))
        Sigma, _, _, _, residual, _, (k, status) = jax.lax.while_loop(cond, body, start)
        status = jnp.where(
            status >= 0, status, jnp.where(residual <= self.tol, Status.SUCCESS, Status.MAX_STEPS)
        )
        return unflatten(Sigma), k, status, {}
