"""The posterior being sampled (THEORY.md sec. 1) and flat standardised coordinates.

    p(theta | D) ∝ prior(theta) * exp(-|f(X) - y|^2 / (2 kappa2))

Gradient samplers work on z = theta/std (prior N(0, I)), flattened to one vector, so a
single identity mass matrix suits every layer whatever its prior variance.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from adaptive_kernels.architectures import CNN, FCN
from adaptive_kernels.sampling.networks import Network, prior_std, readout_variance, scale, zeros_network


class Posterior(eqx.Module):
    """Architecture, training data X (P, d), y (P,), the noise variance kappa2, and whether the
    network has biases (static: decided from a concrete ``arch.s_b2`` before jit)."""

    arch: FCN | CNN
    X: jnp.ndarray
    y: jnp.ndarray
    kappa2: jnp.ndarray
    biases: bool = eqx.field(static=True)

    @property
    def readout_variance(self):
        return readout_variance(self.arch)

    def flat_network(self):
        """(dimension, unravel): flat standardised vector -> Network of parameters."""
        flat, unravel = ravel_pytree(zeros_network(self.arch, self.X.dtype, self.biases))
        std = prior_std(self.arch, self.biases)
        return flat.size, lambda z: scale(unravel(z), std)

    def flat_features(self):
        """(dimension, unravel) for the hidden layers only (the readout integrated out)."""
        flat, unravel = ravel_pytree(zeros_network(self.arch, self.X.dtype, self.biases).features)
        std = prior_std(self.arch, self.biases).features
        return flat.size, lambda z: scale(unravel(z), std)

    def log_likelihood(self, network: Network):
        """-|f(X) - y|^2 / (2 kappa2)."""
        r = network(self.X) - self.y
        return -0.5 * r @ r / self.kappa2
