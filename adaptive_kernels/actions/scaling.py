"""Kernel-scaling action: one scalar s rescales the NNGP kernel (THEORY.md sec. 3).

For a linear two-layer net, f given the readout is a GP with kernel s K_NNGP where
s = |a|^2 N**gamma/(s_a2 N) has prior chi2_N/N, so the posterior of s is exact:

    S(s) = (N/2)(s - log s) + (1/2) y^T (s K + kappa2)^{-1} y + (1/2) log det(s K + kappa2)

Its saddle gives the mean output exactly as N -> infinity in every readout scaling
(Li & Sompolinsky 2021; Pacelli et al. 2023; Rubin et al. 2025). For nonlinear phi the
same form with the NNGP kernel is the heuristic of Pacelli et al.
Stationarity: 1/s = 1 + (2/N) dD/ds.
"""

from __future__ import annotations

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.actions.gp import kernel_data_term
from adaptive_kernels.actions.problem import TwoLayerProblem


def scaling_data_term(s, problem: TwoLayerProblem):
    """D(s K_NNGP)."""
    return kernel_data_term(problem, problem.prior_covariance(), scale=s)


def scaling_prior(problem: TwoLayerProblem):
    """s ~ chi2_N/N: weight N, precision 1."""
    return problem.width, 1.0


SCALING_ACTION = EntropicAction(data_term=scaling_data_term, prior=scaling_prior)
"""S(s, problem): the kernel-scaling action, s a positive scalar."""
