"""Kernel-scaling action: one scalar per layer rescales the NNGP kernel (THEORY.md sec. 3).

For a linear two-layer net, f given the readout is a GP with kernel s K_NNGP where s = |a|^2 N**gamma/(s_a2 N)
has prior chi2_N/N, so the posterior of s is exact:

    S(s) = (N/2)(s - log s) + (1/2) y^T (s K + kappa2)^{-1} y + (1/2) log det(s K + kappa2)

Its saddle gives the mean output exactly as N -> infinity in every readout scaling (Li & Sompolinsky 2021;
Pacelli et al. 2023; Rubin et al. 2025). Deep nets: one scalar u_l per layer, kernel (prod_l u_l) K_NNGP,
entropy sum_l (N_l/2)(u_l - log u_l) (exact for deep linear nets; for nonlinear phi the same form with the NNGP
kernel is the heuristic of Pacelli et al.). Stationarity: 1/u_l = 1 + (2/N_l) dD/du_l.
The order parameters are a scalar for one hidden layer and a tuple of L scalars otherwise.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.gp import data_term, data_term_low_rank
from adaptive_kernels.problem import Problem


class ScaledKernel(eqx.Module):
    """The fixed kernel of kernel scaling and the numbers its action needs.

    ``kernel``: the NNGP output kernel K (P x P), or, when ``low_rank``, a factor Z (P x m, K = Z Z^T; a linear
    two-layer net with d < P, evaluated by Woodbury).
    """

    kernel: jnp.ndarray
    y: jnp.ndarray
    kappa2: jnp.ndarray
    widths: jnp.ndarray
    low_rank: bool = eqx.field(static=True)


def scaled_kernel(problem: Problem) -> ScaledKernel:
    """The NNGP kernel of ``problem`` (its factor for linear two-layer nets with d < P)."""
    low_rank = problem.depth == 1 and problem.activation.is_linear and problem.d < problem.P
    kernel = problem.weight_space_factor(problem.prior_covariance()) if low_rank else problem.nngp_kernel().nngp
    return ScaledKernel(kernel, problem.y, problem.kappa2, problem.widths, low_rank)


def scales_like(widths, dtype):
    """Initial scales u_l = 1: a scalar for one layer, a tuple of L scalars otherwise."""
    ones = tuple(jnp.ones((), dtype) for _ in range(widths.shape[0]))
    return ones[0] if len(ones) == 1 else ones


class ScalingAction(EntropicAction):
    """S(u, scaled_kernel) = sum_l (N_l/2)(u_l - log u_l) + D((prod_l u_l) K)."""

    def data_term(self, scales, args: ScaledKernel):
        s = jnp.prod(jnp.stack(jax.tree.leaves(scales)))
        if args.low_rank:
            return data_term_low_rank(jnp.sqrt(s) * args.kernel, args.y, args.kappa2)[0]
        return data_term(s * args.kernel, args.y, args.kappa2)

    def prior(self, args: ScaledKernel):
        """s_l ~ chi2_{N_l}/N_l: weight N_l, precision 1."""
        weights = tuple(args.widths[i] for i in range(args.widths.shape[0]))
        ones = tuple(jnp.ones((), args.widths.dtype) for _ in weights)
        return (weights[0], ones[0]) if len(weights) == 1 else (weights, ones)
