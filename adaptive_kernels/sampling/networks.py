"""Finite networks drawn from the prior of THEORY.md sec. 1, as equinox Modules.

A :class:`Network` is a feature map (every layer but the readout) and a readout vector::

    f(x) = Phi(x) . a

FCN (L hidden layers, optional biases)::

    h1 = W1 x + b1,            W1_ij ~ N(0, s_w2/d),       b_l ~ N(0, s_b2)
    hl = Wl phi(h_{l-1}) + bl,  Wl_ij ~ N(0, s_w2/N_{l-1})
    Phi(x) = phi(hL),           a_i ~ N(0, s_a2/N_L**gamma)

Two-layer CNN with non-overlapping patches x_s (d = S n), C channels::

    h_cs = w_c . x_s,           w_c ~ N(0, s_w2/n)
    Phi(x)_{cs} = phi(h_cs),    a_cs ~ N(0, s_a2/(S C**gamma))

The readout is stored flat, (C S,) in channel-major order for the CNN.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import is_traced
from adaptive_kernels.activations import AbstractActivation
from adaptive_kernels.architectures import CNN, FCN


class FCNFeatures(eqx.Module):
    """Hidden layers of an FCN: weights W_l (N_l, N_{l-1}), optional biases b_l (N_l,)."""

    weights: tuple
    biases: tuple | None
    activation: AbstractActivation

    def preactivations(self, X):
        """[H_1 .. H_L], H_l (P, N_l): the pre-activations of every hidden layer."""
        out, Z = [], X
        for layer, W in enumerate(self.weights):
            H = Z @ W.T
            if self.biases is not None:
                H = H + self.biases[layer]
            out.append(H)
            Z = self.activation(H)
        return out

    def __call__(self, X):
        """Phi(X) = phi(H_L), (P, N_L)."""
        return self.activation(self.preactivations(X)[-1])

    def input_maps(self):
        """[M_1 .. M_k], H_l = X M_l^T with M_l = W_l ... W_1, for the leading layers that are
        linear maps of the input: none with biases, else the first layer, or all of them when
        phi is linear."""
        if self.biases is not None:
            return []
        maps = [self.weights[0]]
        if self.activation.is_linear:
            for W in self.weights[1:]:
                maps.append(W @ maps[-1])
        return maps

    def output(self, X, readout):
        """phi(H_L(X)) . a; a linear net without biases as X (M_L^T a): O(P d) per input, no
        P x N_L features."""
        if self.biases is None and self.activation.is_linear:
            return X @ (self.input_maps()[-1].T @ readout)
        return self(X) @ readout

    def kernels(self, X):
        """[H_l H_l^T / N_l] on inputs X. Layers linear in the input give X (M_l^T M_l / N_l) X^T,
        O(N d^2 + P d^2 + P^2 d) instead of O(P^2 N); the rest go through H_l."""
        maps = self.input_maps()
        grams = [X @ (M.T @ M / M.shape[0]) @ X.T for M in maps]
        return grams + [_gram(H) for H in self.preactivations(X)[len(maps):]]

    def weight_matrices(self):
        """Per layer, the matrix whose W^T W / rows is the layer's weight covariance."""
        return list(self.weights)


class CNNFeatures(eqx.Module):
    """Hidden layer of a two-layer CNN: shared filters w_c (C, n) applied to S patches."""

    filters: jnp.ndarray
    activation: AbstractActivation
    patches: int = eqx.field(static=True)

    def preactivations(self, X):
        """[H], H (P, C S) with H[mu, c S + s] = w_c . x_s."""
        Xp = X.reshape(X.shape[0], self.patches, -1)
        H = jnp.einsum("psn,cn->pcs", Xp, self.filters)
        return [H.reshape(X.shape[0], -1)]

    def __call__(self, X):
        return self.activation(self.preactivations(X)[0])

    def output(self, X, readout):
        return self(X) @ readout

    def kernels(self, X):
        """[H H^T / (C S)]: the filter kernel averaged over patches."""
        return [_gram(H) for H in self.preactivations(X)]

    def weight_matrices(self):
        return [self.filters]


def _gram(H):
    """H H^T / (number of units)."""
    return H @ H.T / H.shape[1]


class Network(eqx.Module):
    """A finite network f(X) = features(X) @ readout."""

    features: FCNFeatures | CNNFeatures
    readout: jnp.ndarray

    def __call__(self, X):
        """Outputs on inputs X (P, d) -> (P,)."""
        return self.features.output(X, self.readout)


def readout_variance(arch):
    """Prior variance of each readout weight: s_a2/N**gamma (FCN), s_a2/(S C**gamma) (CNN)."""
    if isinstance(arch, CNN):
        return arch.s_a2 / (arch.patches * arch.channels**arch.gamma)
    return arch.s_a2 / arch.width**arch.gamma


def has_biases(arch) -> bool:
    """Whether the network has bias parameters (an FCN with s_b2 > 0); needs a concrete s_b2."""
    if not isinstance(arch, FCN):
        return False
    if is_traced(arch.s_b2):
        raise TypeError("arch.s_b2 must be a concrete number here (it decides whether biases exist); pass biases=")
    return float(arch.s_b2) > 0


def _check_arch(arch):
    if not isinstance(arch, (FCN, CNN)):
        raise TypeError(f"arch must be an FCN or a CNN, got {type(arch).__name__}")


def _structure(arch, leaf, biases):
    """A Network whose array leaves are ``leaf(shape, std)``."""
    if isinstance(arch, CNN):
        std_w = jnp.sqrt(arch.s_w2 / arch.patch_size)
        features = CNNFeatures(
            filters=leaf((arch.channels, arch.patch_size), std_w),
            activation=arch.activation,
            patches=arch.patches,
        )
        width = arch.channels * arch.patches
    else:
        fan_in = (arch.d,) + arch.widths[:-1]
        weights = tuple(leaf((n, m), jnp.sqrt(arch.s_w2 / m)) for n, m in zip(arch.widths, fan_in))
        biases = tuple(leaf((n,), jnp.sqrt(arch.s_b2)) for n in arch.widths) if biases else None
        features = FCNFeatures(weights=weights, biases=biases, activation=arch.activation)
        width = arch.width
    return Network(features=features, readout=leaf((width,), jnp.sqrt(readout_variance(arch))))


def _resolve_biases(arch, biases):
    _check_arch(arch)
    return has_biases(arch) if biases is None else biases


def prior_std(arch, biases: bool | None = None) -> Network:
    """A Network whose leaves are the prior standard deviations (scalars) of each parameter block.

    ``biases``: whether the FCN has biases; None decides from ``arch.s_b2 > 0`` (needs it concrete).
    """
    biases = _resolve_biases(arch, biases)
    return _structure(arch, lambda shape, std: jnp.asarray(std), biases)


def zeros_network(arch, dtype=None, biases: bool | None = None) -> Network:
    """A Network of zeros with the shapes of ``arch`` (a template for flattening)."""
    biases = _resolve_biases(arch, biases)
    dtype = dtype or jnp.result_type(float)
    return _structure(arch, lambda shape, std: jnp.zeros(shape, dtype), biases)


def init_network(arch, key, dtype=None, biases: bool | None = None) -> Network:
    """Draw a network from the prior of THEORY.md sec. 1 (all parameters independent Gaussians).

    ``key``: int seed or PRNG key.  ``dtype``: of the parameters (default float).
    ``biases``: as in :func:`prior_std`.
    """
    key = jax.random.key(key) if isinstance(key, int) else key
    std = prior_std(arch, biases)
    template = zeros_network(arch, dtype, biases)
    leaves, treedef = jax.tree.flatten(template)
    keys = jax.random.split(key, len(leaves))
    z = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    return scale(z, std)


def scale(z: Network, std: Network) -> Network:
    """Standardised coordinates (prior N(0, 1)) -> parameters: theta = std * z, leaf by leaf."""
    return jax.tree.map(lambda a, s: a * s.astype(a.dtype), z, std)
