"""Infinite-width kernel maps, layer by layer (THEORY.md sec. 2; neural-tangents' ``stax``).

A :class:`Kernel` holds the covariances between two sets of inputs at one layer (and, optionally, the
NTK). An architecture is described once as a sequence of layer maps (``FCN.layers``, ``CNN.layers``),
each written once here and composed by :func:`serial`:

    input(Sigma):        k(x, x')      = x^T Sigma x'                       (per patch for a CNN)
    dense(s_w2, s_b2):   C             = s_w2 k + s_b2,          Theta' = C + s_w2 Theta
    nonlinearity(phi):   K(x, x')      = E[phi(u) phi(v)],       Theta' = E[phi'(u) phi'(v)] Theta
                         (u, v) ~ N(0, [[k(x,x), k(x,x')], [k(x,x'), k(x',x')]])
    patch_mean:          average over the S patches of a CNN
    readout(c):          K_out         = c K,                    Theta_out = c (K + Theta),   c = s_a2 N**(1 - gamma)

With Sigma = I/d this is the NNGP recursion k1 = s_w2 x.x'/d + s_b2, k_{l+1} = s_w2 E[phi phi] + s_b2 and the
NTK recursion of Jacot et al. (2018); with s_a2 = 1, gamma = 1 both equal neural-tangents'
``Dense(W_std=sqrt(s_w2), b_std=sqrt(s_b2))`` stacks with a ``Dense(1)`` readout. A general Sigma is the
adaptive kernel K_Sigma of a two-layer net (THEORY.md sec. 4), so the NNGP and the adaptive kernel share
one code path. On a symmetric block (the same inputs on both sides) the diagonal uses the exact rho = 1
expectation and the result is symmetrised (quadrature rules are not exactly symmetric in u, v).
"""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax.numpy as jnp

from adaptive_kernels._config import cast_floating
from adaptive_kernels._validation import check_array
from adaptive_kernels.activations import AbstractActivation


class Kernel(eqx.Module):
    """Covariances of one layer between inputs X1 (rows) and X2 (columns); leading axes for patches.

    Attributes: var1 (..., P1) = k(x1, x1); var2 (..., P2); nngp (..., P1, P2); ntk (same shape, or None);
    symmetric: X2 is X1 (the exact diagonal applies).
    """

    var1: jnp.ndarray
    var2: jnp.ndarray
    nngp: jnp.ndarray
    ntk: jnp.ndarray | None
    symmetric: bool = eqx.field(static=True)


def _symmetrised(M):
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def split_patches(X, patches: int):
    """(P, d) inputs -> (S, P, n) non-overlapping patches x_s, the patch axis first (S = 1: the fully connected net)."""
    return jnp.swapaxes(X.reshape(X.shape[0], patches, X.shape[1] // patches), 0, 1)


def input_kernel(X1, X2=None, Sigma=None, with_ntk: bool = False) -> Kernel:
    """k(x, x') = x^T Sigma x' for inputs (..., P, n) (Sigma = I/n by default); X2 = None: X1 against itself."""
    symmetric = X2 is None
    X2_ = X1 if symmetric else X2
    n = X1.shape[-1]
    M = jnp.eye(n, dtype=X1.dtype) / n if Sigma is None else Sigma
    X1M = X1 @ M
    cov = X1M @ jnp.swapaxes(X2_, -1, -2)
    var1 = jnp.sum(X1M * X1, axis=-1)
    var2 = var1 if symmetric else jnp.sum((X2_ @ M) * X2_, axis=-1)
    return Kernel(var1, var2, _symmetrised(cov) if symmetric else cov, jnp.zeros_like(cov) if with_ntk else None,
                  symmetric)


def dense(kernel: Kernel, s_w2, s_b2=0.0) -> Kernel:
    """C = s_w2 k + s_b2; Theta' = C + s_w2 Theta."""
    nngp = s_w2 * kernel.nngp + s_b2
    ntk = None if kernel.ntk is None else nngp + s_w2 * kernel.ntk
    return Kernel(s_w2 * kernel.var1 + s_b2, s_w2 * kernel.var2 + s_b2, nngp, ntk, kernel.symmetric)


def nonlinearity(kernel: Kernel, activation: AbstractActivation) -> Kernel:
    """K = E[phi(u) phi(v)]; Theta' = E[phi'(u) phi'(v)] Theta (exact diagonal on symmetric blocks)."""
    v1, v2 = kernel.var1[..., :, None], kernel.var2[..., None, :]
    nngp = activation.expectation(v1, kernel.nngp, v2)
    ntk = None if kernel.ntk is None else activation.derivative_expectation(v1, kernel.nngp, v2) * kernel.ntk
    var1 = activation.diagonal(kernel.var1)
    var2 = var1 if kernel.symmetric else activation.diagonal(kernel.var2)
    if kernel.symmetric:
        eye = jnp.eye(nngp.shape[-1], dtype=bool)
        nngp = _symmetrised(jnp.where(eye, var1[..., :, None], nngp))
        if ntk is not None:
            ntk = _symmetrised(jnp.where(eye, (activation.derivative_diagonal(kernel.var1) * jnp.diagonal(
                kernel.ntk, axis1=-2, axis2=-1))[..., :, None], ntk))
    return Kernel(var1, var2, nngp, ntk, kernel.symmetric)


def patch_mean(kernel: Kernel) -> Kernel:
    """Average over the leading (patch) axis: the CNN's output kernel (1/S) sum_s K_s."""
    mean = lambda a: None if a is None else jnp.mean(a, axis=0)  # noqa: E731
    return Kernel(mean(kernel.var1), mean(kernel.var2), mean(kernel.nngp), mean(kernel.ntk), kernel.symmetric)


def readout(kernel: Kernel, c) -> Kernel:
    """K_out = c K, Theta_out = c (K + Theta): a dense readout of variance c without bias."""
    return dense(kernel, c)


def serial(*layers: Callable[[Kernel], Kernel]) -> Callable[[Kernel], Kernel]:
    """The composition layers[-1] o ... o layers[0] (neural-tangents' ``stax.serial``)."""

    def apply(kernel: Kernel) -> Kernel:
        for layer in layers:
            kernel = layer(kernel)
        return kernel

    return apply


def network_layers(activation: AbstractActivation, s_w2, s_b2, depth: int, c) -> tuple[tuple, tuple]:
    """(covariance layers, head) of a net with ``depth`` hidden layers: the maps input -> C_1 = s_w2 k + s_b2 and
    C_l -> C_{l+1} = s_w2 K_phi(C_l) + s_b2, then the head phi, patch mean, readout c (THEORY.md secs. 1-2).
    A fully connected net is the one-patch case, where the patch mean is the identity."""
    first = functools.partial(dense, s_w2=s_w2, s_b2=s_b2)
    step = serial(functools.partial(nonlinearity, activation=activation), first)
    head = (functools.partial(nonlinearity, activation=activation), patch_mean, functools.partial(readout, c=c))
    return (first,) + (step,) * (depth - 1), head


def kernel_matrix(activation: AbstractActivation, C):
    """The NNGP map on a covariance matrix: K_ij = E[phi(h_i) phi(h_j)], h ~ N(0, C) (exact diagonal)."""
    d = jnp.diagonal(C, axis1=-2, axis2=-1)
    return nonlinearity(Kernel(d, d, C, None, True), activation).nngp


# --- architecture-level maps ------------------------------------------------------------------------------------
def _pass(arch, X1, X2, with_ntk: bool) -> Kernel:
    X1 = check_array("X1", X1, ndim=2, shape=(None, arch.d))
    X2 = None if X2 is None else check_array("X2", X2, ndim=2, shape=(None, arch.d))
    arch = cast_floating(arch, X1.dtype if X2 is None else jnp.result_type(X1, X2))
    P1 = arch.split_patches(X1)
    P2 = None if X2 is None else arch.split_patches(X2)
    return serial(*arch.layers())(input_kernel(P1, P2, with_ntk=with_ntk))


def nngp(arch, X1, X2=None):
    """NNGP output kernel K(X1, X2) (X2 = X1 when omitted) of an ``FCN`` or ``CNN``: shape (P1, P2)."""
    return _pass(arch, X1, X2, with_ntk=False).nngp


def ntk(arch, X1, X2=None):
    """Neural tangent kernel Theta(X1, X2): shape (P1, P2)."""
    return _pass(arch, X1, X2, with_ntk=True).ntk


def hidden_kernels(arch, X) -> list:
    """Pre-activation NNGP covariances C_1..C_L of an FCN's hidden layers on inputs X (P, d).

    C_1 = s_w2 X X^T/d + s_b2, C_{l+1} = s_w2 K_phi(C_l) + s_b2 (THEORY.md sec. 5): the dense layers of
    ``FCN.layers`` recorded one by one.
    """
    X = check_array("X", X, ndim=2, shape=(None, arch.d))
    arch = cast_floating(arch, X.dtype)
    kernel = input_kernel(arch.split_patches(X))
    out = []
    for layer in arch.layers()[: arch.depth]:
        kernel = layer(kernel)
        out.append(kernel.nngp[0])
    return out
