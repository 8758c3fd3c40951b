"""Actions (negative log posteriors of the order parameters) of the theories (THEORY.md secs. 3-5).

- ``entropic``: the shared form  sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + D;
- ``adaptive``: the two-layer adaptive kernel, Gaussian ansatz for the first-layer weights (sec. 4);
- ``scaling``: kernel scaling, one scalar per layer (sec. 3);
- ``deep``: per-layer kernels of deep nets (sec. 5): whitened primal, conjugate forward-backward map,
  input-space form for linear nets.

The NNGP has no order parameter: its action is the data term ``gp.data_term`` at the NNGP kernel.
"""

from adaptive_kernels.actions.adaptive import LinearisedPrecisionMap, TwoLayerAdaptiveAction, resolve_space
from adaptive_kernels.actions.deep import ConjugateMap, InputSpaceAction, WhitenedKernelAction
from adaptive_kernels.actions.base import EntropicAction, as_matrix, gaussian_entropy
from adaptive_kernels.actions.scaling import ScaledKernel, ScalingAction, scaled_kernel

__all__ = [
    "ConjugateMap",
    "EntropicAction",
    "InputSpaceAction",
    "LinearisedPrecisionMap",
    "ScaledKernel",
    "ScalingAction",
    "TwoLayerAdaptiveAction",
    "WhitenedKernelAction",
    "as_matrix",
    "gaussian_entropy",
    "resolve_space",
    "scaled_kernel",
]
