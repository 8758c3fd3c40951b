"""Infinite-width kernel maps: NNGP and NTK of an architecture (THEORY.md sec. 2).

    k1(x,x')       = s_w2 x.x'/d + s_b2
    k_{l+1}(x,x')  = s_w2 E[phi(u) phi(v)] + s_b2,    (u,v) ~ N(0, [[k11,k12],[k12,k22]])
    K_out(x,x')    = c E[phi(u) phi(v)] at the last hidden layer,  c = s_a2 N_L**(1-gamma)

NTK (Jacot et al. 2018; neural-tangents' ``stax`` recursion): Theta_1 = k1,
Theta_{l+1} = k_{l+1} + s_w2 Edot_l Theta_l with Edot_l = E[phi'(u) phi'(v)],
Theta_out = c (E_L + Edot_L Theta_L). With s_a2 = 1, gamma = 1 both equal neural-tangents'
``Dense(W_std=sqrt(s_w2), b_std=sqrt(s_b2))`` stacks with a ``Dense(1)`` readout.

CNN with non-overlapping patches (sec. 1): the same maps per patch, averaged over the S
patches, K_out = c (1/S) sum_s E[phi(w.x_s) phi(w.x'_s)], c = s_a2 C**(1-gamma).
"""

from __future__ import annotations

import jax.numpy as jnp

from adaptive_kernels._config import cast_floating
from adaptive_kernels._validation import check_array
from adaptive_kernels.activations import Activation
from adaptive_kernels.architectures import CNN, FCN


def _inputs(arch, X1, X2):
    X1 = check_array("X1", X1, ndim=2, shape=(None, arch.d))
    X2 = None if X2 is None else check_array("X2", X2, ndim=2, shape=(None, arch.d))
    return X1, X2


def _phi_maps(act: Activation, d1, K12, d2, symmetric: bool):
    """E[phi phi] and E[phi' phi'] on a (possibly symmetric) block; exact diagonal if symmetric."""
    E = act.expectation(d1[..., :, None], K12, d2[..., None, :])
    Ed = act.derivative_expectation(d1[..., :, None], K12, d2[..., None, :])
    if symmetric:
        eye = jnp.eye(K12.shape[-1], dtype=bool)
        E = jnp.where(eye, act.diagonal(d1)[..., :, None], E)
        Ed = jnp.where(eye, act.derivative_diagonal(d1)[..., :, None], Ed)
    return E, Ed


def _fcn_pass(arch: FCN, X1, X2, with_ntk: bool):
    symmetric = X2 is None
    X2_ = X1 if symmetric else X2
    d = arch.d
    act = arch.activation
    d1 = arch.s_w2 * jnp.sum(X1**2, axis=1) / d + arch.s_b2
    d2 = arch.s_w2 * jnp.sum(X2_**2, axis=1) / d + arch.s_b2
    K = arch.s_w2 * X1 @ X2_.T / d + arch.s_b2
    theta = K
    for _ in range(arch.depth - 1):
        E, Ed = _phi_maps(act, d1, K, d2, symmetric)
        K_next = arch.s_w2 * E + arch.s_b2
        if with_ntk:
            theta = K_next + arch.s_w2 * Ed * theta
        K = K_next
        d1 = arch.s_w2 * act.diagonal(d1) + arch.s_b2
        d2 = d1 if symmetric else arch.s_w2 * act.diagonal(d2) + arch.s_b2
    E, Ed = _phi_maps(act, d1, K, d2, symmetric)
    c = arch.readout_scale
    return c * E, (c * (E + Ed * theta) if with_ntk else None)


def _cnn_pass(arch: CNN, X1, X2, with_ntk: bool):
    symmetric = X2 is None
    X2_ = X1 if symmetric else X2
    n = arch.patch_size
    P1 = jnp.swapaxes(arch.split_patches(X1), 0, 1)  # (S, P, n)
    P2 = jnp.swapaxes(arch.split_patches(X2_), 0, 1)
    d1 = arch.s_w2 * jnp.sum(P1**2, axis=-1) / n  # (S, P1)
    d2 = arch.s_w2 * jnp.sum(P2**2, axis=-1) / n
    K = arch.s_w2 * jnp.einsum("spn,sqn->spq", P1, P2) / n  # (S, P1, P2)
    E, Ed = _phi_maps(arch.activation, d1, K, d2, symmetric)
    c = arch.readout_scale
    nngp_ = c * jnp.mean(E, axis=0)
    return nngp_, (c * jnp.mean(E + Ed * K, axis=0) if with_ntk else None)


def _pass(arch, X1, X2, with_ntk):
    X1, X2 = _inputs(arch, X1, X2)
    arch = cast_floating(arch, X1.dtype if X2 is None else jnp.result_type(X1, X2))
    if isinstance(arch, FCN):
        return _fcn_pass(arch, X1, X2, with_ntk)
    if isinstance(arch, CNN):
        return _cnn_pass(arch, X1, X2, with_ntk)
    raise TypeError(f"arch must be an FCN or CNN, got {type(arch).__name__}")


def nngp(arch: FCN | CNN, X1, X2=None):
    """NNGP output kernel K(X1, X2) (X2 = X1 when omitted): shape (P1, P2)."""
    return _pass(arch, X1, X2, with_ntk=False)[0]


def ntk(arch: FCN | CNN, X1, X2=None):
    """Neural tangent kernel Theta(X1, X2): shape (P1, P2)."""
    return _pass(arch, X1, X2, with_ntk=True)[1]


def hidden_kernels(arch: FCN, X):
    """Pre-activation NNGP covariances C_1..C_L of the hidden layers on inputs X (P, d).

    C_1 = s_w2 X X^T/d + s_b2, C_{l+1} = s_w2 K_phi(C_l) + s_b2 (THEORY.md sec. 5).
    """
    if not isinstance(arch, FCN):
        raise TypeError(f"arch must be an FCN, got {type(arch).__name__}")
    X = check_array("X", X, ndim=2, shape=(None, arch.d))
    arch = cast_floating(arch, X.dtype)
    C = arch.s_w2 * X @ X.T / arch.d + arch.s_b2
    out = [C]
    for _ in range(arch.depth - 1):
        C = arch.s_w2 * arch.activation.kernel_matrix(C) + arch.s_b2
        out.append(C)
    return out
