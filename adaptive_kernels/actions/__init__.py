"""Actions (negative log posteriors of order parameters) of the two-layer theories.

- ``gp``: no order parameter, the NNGP data term D(K_NNGP) (THEORY.md sec. 2);
- ``scaling``: one scalar s, S(s) (sec. 3);
- ``adaptive``: the first-layer covariance Sigma with the Gaussian ansatz, S(Sigma) (sec. 4).

Each is a pure JAX function of (order parameters, :class:`TwoLayerProblem`).
"""

from adaptive_kernels.actions.adaptive import ADAPTIVE_ACTION, adaptive_data_term
from adaptive_kernels.actions.base import EntropicAction, as_matrix, gaussian_entropy
from adaptive_kernels.actions.gp import data_term, data_term_low_rank, gp_action, kernel_data_term
from adaptive_kernels.actions.problem import SPACES, TwoLayerProblem, resolve_space, two_layer_problem
from adaptive_kernels.actions.scaling import SCALING_ACTION, scaling_data_term

__all__ = [
    "ADAPTIVE_ACTION",
    "EntropicAction",
    "SCALING_ACTION",
    "SPACES",
    "TwoLayerProblem",
    "adaptive_data_term",
    "as_matrix",
    "data_term",
    "data_term_low_rank",
    "gaussian_entropy",
    "gp_action",
    "kernel_data_term",
    "resolve_space",
    "scaling_data_term",
    "two_layer_problem",
]
