"""Ground truth for the theory: posterior sampling of finite networks (THEORY.md sec. 8).

- :func:`sample_posterior`: architecture + data + kappa2 -> :class:`PosteriorEstimates`
  (posterior means with standard errors, R-hat, ESS, acceptance).
- samplers: :class:`Gibbs` (exact, linear FCNs of any depth), :class:`HMC` (hidden weights,
  readout integrated out exactly), :class:`Langevin` (MALA or unadjusted, any architecture).
- finite networks drawn from the prior: :func:`init_network` -> :class:`Network` (``net(X)``).
- diagnostics: :func:`split_rhat`, :func:`effective_sample_size`, :func:`batch_means_se`.
"""

from adaptive_kernels.sampling.conjugate import LinearGaussian
from adaptive_kernels.sampling.diagnostics import batch_means_se, effective_sample_size, split_rhat
from adaptive_kernels.sampling.estimates import Estimate, PosteriorEstimates
from adaptive_kernels.sampling.gibbs import Gibbs
from adaptive_kernels.sampling.hmc import HMC
from adaptive_kernels.sampling.langevin import Langevin
from adaptive_kernels.sampling.networks import (
    CNNFeatures,
    FCNFeatures,
    Network,
    init_network,
    prior_std,
    readout_variance,
)
from adaptive_kernels.sampling.sampler import default_method, sample_posterior
from adaptive_kernels.sampling.target import Posterior

__all__ = [
    "CNNFeatures",
    "Estimate",
    "FCNFeatures",
    "Gibbs",
    "HMC",
    "Langevin",
    "LinearGaussian",
    "Network",
    "Posterior",
    "PosteriorEstimates",
    "batch_means_se",
    "default_method",
    "effective_sample_size",
    "init_network",
    "prior_std",
    "readout_variance",
    "sample_posterior",
    "split_rhat",
]
