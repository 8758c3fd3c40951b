"""Adaptive-kernel action with the Gaussian ansatz (THEORY.md sec. 4).

Integrate the readout out and treat the N first-layer weight vectors as drawn from
N(0, Sigma) (d x d for a fully connected net, n x n for the shared CNN filters); the
large-N saddle is the minimum of

    S(Sigma) = (N/2)[(n/s_w2) tr Sigma - log det Sigma]
             + (1/2) y^T (K_Sigma + kappa2)^{-1} y + (1/2) log det(K_Sigma + kappa2)
    K_Sigma(x, x') = c (1/S) sum_s k_phi(x_s^T Sigma x_s, x_s^T Sigma x'_s, x'_s^T Sigma x'_s)

with c = s_a2 N**(1 - gamma) (Seroussi, Naveh & Ringel 2023; Rubin et al. 2025). For a
linear phi the stationarity condition is
    Sigma^{-1} = (d/s_w2) I - (c/N) X^T (t t^T - A) X,   A = (K_Sigma + kappa2)^{-1}, t = A y,
and for any phi it is the autodiff gradient of S (``EntropicAction.target_precision``).
"""

from __future__ import annotations

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.actions.gp import kernel_data_term
from adaptive_kernels.actions.problem import TwoLayerProblem


def adaptive_data_term(Sigma, problem: TwoLayerProblem):
    """D(K_Sigma)."""
    return kernel_data_term(problem, Sigma)


def adaptive_prior(problem: TwoLayerProblem):
    """N weight vectors with prior N(0, (s_w2/n) I): weight N, precision n/s_w2."""
    return problem.width, problem.prior_precision


ADAPTIVE_ACTION = EntropicAction(data_term=adaptive_data_term, prior=adaptive_prior)
"""S(Sigma, problem): the adaptive-kernel action, Sigma positive definite (n x n)."""
