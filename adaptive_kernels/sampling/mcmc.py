"""Metropolis-adjusted gradient samplers on a flat parameter vector: HMC and MALA.

Both use an identity mass matrix in standardised coordinates (prior N(0, I)), leapfrog
integration and a Metropolis test (Neal 2011, "MCMC using Hamiltonian dynamics"). MALA is
HMC with a single leapfrog step: theta' = theta - (eps^2/2) grad U + eps xi, i.e. the Langevin
update theta - eta grad U + sqrt(2 eta) xi with eta = eps^2/2, followed by the Metropolis test
that removes its step-size bias. Without the test (``metropolis=False``) it is unadjusted
Langevin dynamics ("training with noise and weight decay").

During warmup the step size is tuned by dual averaging (Hoffman & Gelman 2014, Alg. 5) towards
a target acceptance probability, then frozen at the averaged value.
"""

from __future__ import annotations

import abc

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


class DualAveraging(eqx.Module):
    """Dual-averaging state for log(step size) (Hoffman & Gelman 2014, eqs. 5-6)."""

    log_step: jnp.ndarray
    log_step_avg: jnp.ndarray
    error_avg: jnp.ndarray
    count: jnp.ndarray
    shrink_to: jnp.ndarray

    @classmethod
    def start(cls, step_size, dtype):
        log_eps = jnp.log(jnp.asarray(step_size, dtype))
        zero = jnp.zeros((), dtype)
        return cls(log_eps, log_eps, zero, zero, jnp.log(10.0) + log_eps)

    def update(self, accept_prob, target, gamma=0.05, t0=10.0, kappa=0.75):
        t = self.count + 1
        error_avg = (1 - 1 / (t + t0)) * self.error_avg + (target - accept_prob) / (t + t0)
        log_step = self.shrink_to - jnp.sqrt(t) / gamma * error_avg
        weight = t ** (-kappa)
        log_step_avg = weight * log_step + (1 - weight) * self.log_step_avg
        return DualAveraging(log_step, log_step_avg, error_avg, t, self.shrink_to)

    def freeze(self):
        """After warmup: use the averaged step size from now on."""
        return eqx.tree_at(lambda s: s.log_step, self, self.log_step_avg)


class ChainState(eqx.Module):
    """Position, cached potential and gradient, step-size adaptation of one chain."""

    position: jnp.ndarray
    potential: jnp.ndarray
    gradient: jnp.ndarray
    adaptation: DualAveraging

    @property
    def step_size(self):
        return jnp.exp(self.adaptation.log_step)


def start_chain(value_and_grad: Callable, position, step_size) -> ChainState:
    U, g = value_and_grad(position)
    return ChainState(position, U, g, DualAveraging.start(step_size, position.dtype))


def _finite(U, g):
    return jnp.isfinite(U) & jnp.all(jnp.isfinite(g))


def metropolis_step(
    value_and_grad: Callable,
    state: ChainState,
    key,
    *,
    num_leapfrog: int,
    target_accept: float,
    adapt: bool,
    metropolis: bool = True,
    jitter: float = 0.0,
):
    """One HMC (``num_leapfrog`` > 1) or MALA (= 1) transition. Returns (state, accept_prob).

    ``jitter`` draws the step size uniformly in eps*(1 +- jitter) to break periodic orbits.
    Where ``adapt`` (a boolean, may be traced) the dual-averaging state is updated with this
    step's acceptance probability.
    """
    k_mom, k_jit, k_acc = jax.random.split(key, 3)
    theta = state.position
    eps = state.step_size * (1 + jitter * jax.random.uniform(k_jit, (), theta.dtype, -1.0, 1.0))
    p0 = jax.random.normal(k_mom, theta.shape, theta.dtype)

    def leapfrog(carry, _):
        q, p, U, g = carry
        p = p - 0.5 * eps * g
        q = q + eps * p
        U, g = value_and_grad(q)
        p = p - 0.5 * eps * g
        return (q, p, U, g), None

    (q, p, U, g), _ = jax.lax.scan(leapfrog, (theta, p0, state.potential, state.gradient), None, length=num_leapfrog)
    log_ratio = state.potential + 0.5 * p0 @ p0 - U - 0.5 * p @ p
    ok = _finite(U, g)
    accept_prob = jnp.where(ok, jnp.minimum(1.0, jnp.exp(jnp.minimum(log_ratio, 0.0))), 0.0)
    accept = ok & (jax.random.uniform(k_acc, (), theta.dtype) < accept_prob) if metropolis else ok
    new = ChainState(
        jnp.where(accept, q, theta),
        jnp.where(accept, U, state.potential),
        jnp.where(accept, g, state.gradient),
        state.adaptation,
    )
    adapted = state.adaptation.update(accept_prob, target_accept)
    adaptation = jax.tree.map(lambda a, b: jnp.where(adapt, a, b), adapted, state.adaptation)
    return eqx.tree_at(lambda s: s.adaptation, new, adaptation), accept_prob


class GradientSampler(eqx.Module):
    """Shared plumbing of HMC and Langevin: a flat potential sampled by :func:`metropolis_step`."""

    num_leapfrog: int = eqx.field(static=True)
    target_accept: float = eqx.field(static=True)
    initial_step_size: float = eqx.field(static=True)
    jitter: float = eqx.field(static=True)
    metropolis: bool = eqx.field(static=True)

    def check(self, arch):
        pass

    @abc.abstractmethod
    def potential_and_unravel(self, posterior):
        """(value_and_grad of U on flat z, z -> (features, readout to record), dimension of z)."""

    def init(self, posterior, key):
        value_and_grad, _, dim = self.potential_and_unravel(posterior)
        z = jax.random.normal(key, (dim,), posterior.X.dtype)
        return start_chain(value_and_grad, z, self.initial_step_size)

    def step(self, posterior, state, key, adapt):
        value_and_grad, _, _ = self.potential_and_unravel(posterior)
        return metropolis_step(
            value_and_grad, state, key, num_leapfrog=self.num_leapfrog, target_accept=self.target_accept,
            adapt=adapt, metropolis=self.metropolis, jitter=self.jitter,
        )

    def end_warmup(self, state):
        return eqx.tree_at(lambda s: s.adaptation, state, state.adaptation.freeze())

    def step_size(self, state):
        return state.step_size

    def current(self, posterior, state):
        _, unravel, _ = self.potential_and_unravel(posterior)
        return unravel(state.position)
