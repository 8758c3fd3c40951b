"""Architecture descriptions shared by the theory and the samplers (THEORY.md sec. 1).

Both are small immutable equinox Modules. Their numeric hyper-parameters (variances,
gamma) are PyTree leaves, so they can be differentiated and vmapped; the sizes are static.

Fully connected net with L hidden layers of widths N_1..N_L::

    h1 = W1 x + b1,            W1_ij ~ N(0, s_w2/d),       b ~ N(0, s_b2)
    hl = Wl phi(h_{l-1}) + bl,  Wl_ij ~ N(0, s_w2/N_{l-1})
    f  = sum_i a_i phi(hL_i),   a_i ~ N(0, s_a2/N_L**gamma)

gamma = 1 is standard scaling, gamma = 2 mean-field; the review's chi = N**(gamma - 1)
is accepted instead of gamma. Two-layer CNN with non-overlapping patches
(Seroussi, Naveh & Ringel 2023): d = S n, C channels with shared filters::

    f = sum_{c,s} a_{cs} phi(w_c . x_s),  w_c ~ N(0, s_w2/n),  a_{cs} ~ N(0, s_a2/(S C**gamma))
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import equinox as eqx
import jax.numpy as jnp

from adaptive_kernels._validation import (
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    is_traced,
)
from adaptive_kernels.activations import AbstractActivation, get_activation
from adaptive_kernels.kernels import network_layers, split_patches

GAMMA_RANGE = (0.0, 3.0)


def readout_scale(s_a2, width, gamma):
    """c = s_a2 N**(1 - gamma): the readout's weight in the output kernel (THEORY.md sec. 1)."""
    return s_a2 * width ** (1.0 - gamma)


def _resolve_gamma(gamma, chi, width: int):
    if chi is not None and gamma is not None:
        raise ValueError("gamma and chi: give one of them, not both (chi = N**(gamma - 1))")
    if chi is None:
        return 1.0 if gamma is None else gamma
    check_positive("chi", chi)
    if width == 1:
        raise ValueError("chi: needs a readout width N > 1 to define gamma = 1 + log(chi)/log(N)")
    return 1.0 + jnp.log(chi) / math.log(width) if is_traced(chi) else 1.0 + math.log(chi) / math.log(width)


def _as_float(x):
    return x if is_traced(x) else jnp.asarray(x, dtype=float)


class AbstractArchitecture(eqx.Module):
    """What the theories and samplers need of an architecture: sizes, hyper-parameters, its kernel map.

    A fully connected net is the one-patch case of the CNN (S = 1, n = d), so both split their inputs into
    (S, P, n) patches and share one kernel map (``kernels.network_layers``).
    """

    activation: eqx.AbstractVar[AbstractActivation]
    s_w2: eqx.AbstractVar[jnp.ndarray]
    s_a2: eqx.AbstractVar[jnp.ndarray]
    gamma: eqx.AbstractVar[jnp.ndarray]

    @property
    def d(self) -> int:
        return self.patch_size * self.patches

    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return len(self.widths)

    @property
    def width(self) -> int:
        """Width of the last hidden layer (the one the readout sees; C for a CNN)."""
        return self.widths[-1]

    @property
    def readout_scale(self):
        """c = s_a2 * N_L**(1 - gamma): the readout's weight in the output kernel."""
        return readout_scale(self.s_a2, float(self.width), self.gamma)  # a float: ints beyond int64 (10**30) too

    @property
    def chi(self):
        """chi = N_L**(gamma - 1), the review's way of writing the readout scaling."""
        return float(self.width) ** (self.gamma - 1.0)

    def split_patches(self, X):
        """(P, d) inputs -> (S, P, n) patches x_s (the patch axis first, as ``kernels`` expects)."""
        return split_patches(X, self.patches)

    def layers(self) -> tuple:
        """The kernel map from the input kernel x_s.x'_s/n to the output kernel (neural-tangents' ``serial``)."""
        covariances, head = network_layers(self.activation, self.s_w2, self.s_b2, self.depth, self.readout_scale)
        return covariances + head


class FCN(AbstractArchitecture):
    """Fully connected network: input dimension ``d``, hidden ``widths`` (N_1..N_L).

    Args:
        d: input dimension.
        widths: hidden-layer widths, an int for one hidden layer or a sequence.
        activation: name (``"linear"``, ``"relu"``, ``"erf"``, ...), jnp function or an activation object.
        s_w2: weight variance (times fan-in).  s_a2: readout variance.
        s_b2: bias variance of the hidden layers (0: no biases).
        gamma: readout exponent in [0, 3]; or ``chi`` = N_L**(gamma - 1) instead.
    """

    input_dim: int = eqx.field(static=True)
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: AbstractActivation
    s_w2: jnp.ndarray
    s_a2: jnp.ndarray
    s_b2: jnp.ndarray
    gamma: jnp.ndarray

    def __init__(
        self,
        d: int,
        widths: int | tuple[int, ...] | list[int],
        activation: str | Callable | AbstractActivation = "linear",
        s_w2: float = 1.0,
        s_a2: float = 1.0,
        s_b2: float = 0.0,
        gamma: float | None = None,
        chi: float | None = None,
    ):
        self.input_dim = check_positive_int("d", d)
        widths = (widths,) if isinstance(widths, numbers.Integral) else tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one hidden layer")
        self.widths = tuple(check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        self.activation = get_activation(activation)
        check_positive("s_w2", s_w2)
        check_positive("s_a2", s_a2)
        check_nonnegative("s_b2", s_b2)
        gamma = _resolve_gamma(gamma, chi, self.widths[-1])
        check_in_range("gamma", gamma, *GAMMA_RANGE)
        self.s_w2, self.s_a2, self.s_b2, self.gamma = map(_as_float, (s_w2, s_a2, s_b2, gamma))

    @property
    def patches(self) -> int:
        return 1

    @property
    def patch_size(self) -> int:
        return self.input_dim


class CNN(AbstractArchitecture):
    """Two-layer CNN with non-overlapping patches: d = S * n, C channels, shared filters (no biases).

    Args:
        patch_size: n.  patches: S.  channels: C (the width of the hidden layer).
        activation, s_w2, s_a2, gamma/chi: as for :class:`FCN` (N -> C).
    """

    patch_size: int = eqx.field(static=True)
    patches: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    activation: AbstractActivation
    s_w2: jnp.ndarray
    s_a2: jnp.ndarray
    gamma: jnp.ndarray

    def __init__(
        self,
        patch_size: int,
        patches: int,
        channels: int,
        activation: str | Callable | AbstractActivation = "linear",
        s_w2: float = 1.0,
        s_a2: float = 1.0,
        gamma: float | None = None,
        chi: float | None = None,
    ):
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.patches = check_positive_int("patches", patches)
        self.channels = check_positive_int("channels", channels)
        self.activation = get_activation(activation)
        check_positive("s_w2", s_w2)
        check_positive("s_a2", s_a2)
        gamma = _resolve_gamma(gamma, chi, self.channels)
        check_in_range("gamma", gamma, *GAMMA_RANGE)
        self.s_w2, self.s_a2, self.gamma = map(_as_float, (s_w2, s_a2, gamma))

    @property
    def widths(self) -> tuple[int]:
        return (self.channels,)

    @property
    def s_b2(self):
        """0: the filters have no bias."""
        return jnp.zeros_like(self.s_w2)
