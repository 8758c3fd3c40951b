"""Langevin dynamics for any architecture (the general fallback; THEORY.md secs. 1 and 8)."""

from __future__ import annotations

import jax

from adaptive_kernels.sampling.mcmc import GradientSampler


class Langevin(GradientSampler):
    """Langevin dynamics on all weights (any architecture), Metropolis-adjusted by default (MALA).

    theta <- theta - eta grad U + sqrt(2 eta) xi with U = |z|^2/2 + |f(X) - y|^2/(2 kappa2) in
    standardised coordinates, eta = eps^2/2 (one leapfrog step of size eps), then a Metropolis test.
    ``metropolis=False`` skips the test (unadjusted Langevin: biased by O(eta), as in "training
    with noise"); eps is still tuned during warmup on the would-be acceptance probability.

    Args:
        target_accept: dual-averaging target (0.574 is optimal for MALA, Roberts & Rosenthal 1998).
        initial_step_size: first guess of eps.  metropolis: apply the Metropolis test.
    """

    name = "langevin"
    multi_output = False

    def __init__(self, target_accept: float = 0.574, initial_step_size: float = 0.05, metropolis: bool = True):
        self.num_leapfrog, self.target_accept = 1, target_accept
        self.initial_step_size, self.jitter, self.metropolis = initial_step_size, 0.0, metropolis

    def potential_and_unravel(self, posterior):
        dim, unravel = posterior.flat_network()

        def potential(z):
            return 0.5 * z @ z - posterior.log_likelihood(unravel(z))

        def record(z):
            net = unravel(z)
            return net.features, net.readout

        return jax.value_and_grad(potential), record, dim
