"""The finite-width prior of fully connected nets: its connected 4-point function (Halverson, Maiti & Stoner 2021;
THEORY.md sec. 8).

Readout f = sum_i a_i phi(h_i), a_i ~ N(0, s_a2/N_L^gamma): given the last layer's kernel
Khat = (1/N_L) sum_i phi(h_i) phi(h_i)^T, f is Gaussian with covariance c Khat (c = s_a2 N_L^(1-gamma)), so

    G4c(x1, x2, x3, x4) = V[12, 34] + V[13, 24] + V[14, 23],   V = Cov(c Khat)

(Isserlis given Khat, then the average over Khat). Layer by layer, with C_l the NNGP pre-activation covariance,
G_l = K_phi(C_l) and E4_l[abce] = E_{h ~ N(0, C_l)} phi_a phi_b phi_c phi_e (the hidden units are iid given the
layer below):

    Cov(Chat_1) = 0,
    Cov(Chat_{l+1}) = s^2 [ (E4_l - G_l (x) G_l) / N_l + J_l Cov(Chat_l) J_l^T ],   J_l = dK_phi/dC at C_l,

s = s_w2 for a hidden layer (C_{l+1} = s_w2 K_l + s_b2) and c for the readout. For one hidden layer this is exact
at every N: G4c = (c^2/N)[3 E4 - (G12 G34 + G13 G24 + G14 G23)] (THEORY.md sec. 8; with gamma = 1, c = s_a2, the
closed form of Halverson et al.); deeper layers add the propagated term, the leading order in 1/N (the
recursion of Yaida 2020, "Non-Gaussian processes and neural networks at finite widths"; Roberts, Yaida & Hanin,
"The principles of deep learning theory", ch. 4). For linear phi E4(Chat) is quadratic in Chat, so its mean over
Chat adds (Cov_ac,be + Cov_ae,bc)/N and the recursion is exact at every depth and width.

E4 by tensor-product Gauss-Hermite quadrature on the P-dimensional Gaussian (P = the number of distinct inputs,
at most 4 here), h = C^{1/2} u; exact for a linear phi (Isserlis) at any order >= 3, for erf and ReLU accurate to
~1e-4 relative at the default 32 nodes per dimension.
"""

from __future__ import annotations

import functools

import equinox as eqx
import numpy as np
import jax
import jax.numpy as jnp

from adaptive_kernels.architectures import CNN, FCN
from adaptive_kernels.kernels import kernel_matrix


@functools.lru_cache(maxsize=16)
def _hermite_grid(P: int, nodes: int):
    """Tensor-product Gauss-Hermite nodes U (nodes^P, P) and weights (nodes^P,) for the standard normal in P
    dimensions (numpy, float64, read-only)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-u^2/2)
    grids = np.meshgrid(*([x] * P), indexing="ij")
    U = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.meshgrid(*([w / w.sum()] * P), indexing="ij"), axis=0).ravel()
    U.flags.writeable = weights.flags.writeable = False
    return U, weights


def _grid(activation, P: int, nodes: int, dtype):
    """The quadrature nodes of :func:`fourth_moments` as arrays (passed to the compiled programs as arguments, not
    embedded as constants), or None for a linear phi."""
    if activation.is_linear:
        return None
    return tuple(jnp.asarray(a, dtype) for a in _hermite_grid(P, nodes))


def fourth_moments(activation, C, nodes: int = 32):
    """E[phi(h_a) phi(h_b) phi(h_c) phi(h_e)] (P, P, P, P) and E[phi_a phi_b] (P, P) for h ~ N(0, C), C (P x P):
    Isserlis' theorem for a linear phi (any P), else Gauss-Hermite quadrature with ``nodes`` points per
    dimension (P <= 4)."""
    return _compiled_moments(activation, C, _grid(activation, C.shape[0], nodes, C.dtype))


def _moments(activation, C, grid):
    """:func:`fourth_moments` on the nodes ``grid`` = (U, weights) (None: Isserlis), h = C^{1/2} u."""
    if grid is None:
        return _pairings(C), C
    U, weights = grid
    P = C.shape[0]
    phi = activation(U @ _root(C).T)
    pairs = (phi[:, :, None] * phi[:, None, :]).reshape(-1, P * P)  # memory: nodes x P^2
    E4 = ((weights[:, None] * pairs).T @ pairs).reshape(P, P, P, P)
    return E4, (weights @ pairs).reshape(P, P)


_compiled_moments = eqx.filter_jit(_moments)


def _root(C):
    """A square root R (R R^T = C) of a PSD C from its eigendecomposition (negative round-off eigenvalues clipped)."""
    lam, V = jnp.linalg.eigh(0.5 * (C + C.T))
    return V * jnp.sqrt(jnp.clip(lam, 0.0))


def _pairings(K):
    """K_ab K_ce + K_ac K_be + K_ae K_bc."""
    return (jnp.einsum("ab,ce->abce", K, K) + jnp.einsum("ac,be->abce", K, K) + jnp.einsum("ae,bc->abce", K, K))


def _checked_inputs(arch: FCN, X):
    """X as a float array of shape (P, d), P <= 4 unless phi is linear; clear errors otherwise."""
    if not isinstance(arch, FCN):
        raise TypeError(f"arch must be an FCN, got {type(arch).__name__}")
    X = jnp.asarray(X, jnp.result_type(float))
    if X.ndim != 2 or X.shape[1] != arch.d:
        raise ValueError(f"X must have shape (P, {arch.d}), got {X.shape}")
    if not bool(jnp.all(jnp.isfinite(X))):
        raise ValueError("X contains NaN or inf")
    if not arch.activation.is_linear and not 1 <= X.shape[0] <= 4:
        raise ValueError(f"X: the quadrature is over the P-dimensional Gaussian; give 1 to 4 inputs, got {X.shape[0]}")
    return X


def four_point(arch: FCN, X, nodes: int = 32):
    """Connected 4-point function G4c[a, b, c, e] of the prior's outputs on the rows of X (P <= 4 inputs unless
    phi is linear) for an
    FCN of any depth and activation (module docstring): exact for one hidden layer and for linear phi at any depth,
    leading order in 1/N otherwise.
    Returns (G4c (P, P, P, P), the NNGP output kernel (P, P))."""
    X = _checked_inputs(arch, X)
    P = X.shape[0]
    C = arch.s_w2 * X @ X.T / arch.d + arch.s_b2
    cov = jnp.zeros((P, P, P, P), X.dtype)
    grid = _grid(arch.activation, P, nodes, X.dtype)
    for layer, N in enumerate(arch.widths):
        last = layer == len(arch.widths) - 1
        scale = arch.s_a2 * N ** (1 - arch.gamma) if last else arch.s_w2
        cov, G = _layer_covariance(arch.activation, C, cov, jnp.asarray(N, X.dtype), grid)
        cov = scale**2 * cov
        C = scale * G + (0.0 if last else arch.s_b2)
    return _symmetrised(cov), C


@eqx.filter_jit
def _layer_covariance(activation, C, cov, N, grid):
    """(Cov(Khat) at width N given C = E[Chat] and cov = Cov(Chat), G = K_phi(C)) of one layer (module docstring):
    (E4 - G (x) G)/N + J cov J^T, plus for a linear phi the exact finite-N term (cov_ac,be + cov_ae,bc)/N (there
    E4(Chat) is quadratic in Chat, so its mean is the pairings of E[Chat (x) Chat] = C (x) C + cov). One compiled
    program per activation and number of inputs: the widths are traced."""
    E4, G = _moments(activation, C, grid)
    J = jax.jacfwd(lambda M: kernel_matrix(activation, M))(C)  # (P, P, P, P): dG_ab / dC_ce
    propagated = jnp.einsum("abij,ijkl,cekl->abce", J, cov, J)
    if activation.is_linear:
        propagated = propagated + (_symmetrised(cov) - cov) / N
    return (E4 - jnp.einsum("ab,ce->abce", G, G)) / N + propagated, G


class SampledFourPoint(eqx.Module):
    """:func:`four_point_sampled`'s estimate: ``G4c`` (P, P, P, P), its Monte Carlo standard error ``se`` (zero where
    the estimate is exact: one hidden layer), the output kernel ``K`` = E[c Khat_L] (P, P) and the number of
    ``samples`` (draws of the layers below the last)."""

    G4c: jax.Array
    se: jax.Array
    K: jax.Array
    samples: int = eqx.field(static=True)


def four_point_sampled(arch: FCN, X, key, samples: int = 10000, nodes: int = 32, batch: int = 1000):
    """The connected 4-point function of the prior's outputs at finite width, for an FCN of any depth and
    activation, without the expansion in 1/N: conditional Monte Carlo over the hidden layers below the last, the last
    layer and the readout integrated exactly.

    Given the last layer's input covariance C_L = s_w2 Khat_{L-1} + s_b2 (a random matrix through the layers below)
    its N_L units are iid, so (module docstring; law of total covariance)

        V = Cov(c Khat_L) = c^2 { E[E4(C_L) - G(C_L) (x) G(C_L)] / N_L + Cov(G(C_L)) },   G4c = V[12,34] + 2 perms,

    with E4, G the single-unit moments of :func:`fourth_moments` (Gauss-Hermite, ``nodes`` per dimension; Isserlis for
    linear phi). The expectations over C_L are averages over ``samples`` draws of the layers 1..L-1 in their
    pre-activations on the rows of X (given Khat_{l-1}, the N_l units' pre-activations are iid
    N(0, s_w2 Khat_{l-1} + s_b2): the Gaussian weights integrated out exactly, O(P N_l) per layer and draw). Unbiased
    at every width (the covariance with the 1/(M-1) normalisation); the standard error is that of the mean of the
    per-draw terms T_m = c^2 [(E4 - G (x) G)_m / N_L + M/(M-1) (G_m - G_bar) (x) (G_m - G_bar)], symmetrised. One
    hidden layer: C_1 is not random, and this is the exact closed form of :func:`four_point` with zero error. Where
    :func:`four_point` is only the leading order in 1/N (ReLU / erf at depth >= 2), this is what it approximates:
    their difference is the O(1/N^2) remainder (ReLU depth 2 at N = 2: +100%, docs/finite_width.md).

    Args:
        arch: the FCN (any depth, activation, gamma, biases).
        X: (P, d) inputs, 1-4 of them unless phi is linear (the quadrature is over the P-dimensional Gaussian).
        key: PRNG key of the draws.
        samples: draws M of the layers below the last (>= 2; its error falls as 1/sqrt(M)).
        nodes: Gauss-Hermite nodes per dimension of the last layer's moments.
        batch: draws per vectorised batch (memory ~ batch x nodes^P x P^2).
    Returns:
        :class:`SampledFourPoint` (G4c, se, K, samples)."""
    X = _checked_inputs(arch, X)
    if int(samples) < 2:
        raise ValueError(f"samples must be >= 2 (a covariance over draws), got {samples}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    P, L = X.shape[0], len(arch.widths)
    C0 = arch.s_w2 * X @ X.T / arch.d + arch.s_b2
    keys = jax.random.split(key, int(samples))
    A, G = _conditional_moments(arch, C0, keys, _grid(arch.activation, P, nodes, X.dtype), min(int(batch), int(samples)))
    N_L = arch.widths[-1]
    c = arch.s_a2 * N_L ** (1 - arch.gamma)
    M = int(samples)
    D = G - G.mean(axis=0)
    T = c**2 * (A / N_L + (M / (M - 1)) * jnp.einsum("mab,mce->mabce", D, D))
    T = jax.vmap(_symmetrised)(T)
    return SampledFourPoint(T.mean(axis=0), T.std(axis=0, ddof=1) / jnp.sqrt(M), c * G.mean(axis=0), M)


@eqx.filter_jit
def _conditional_moments(arch: FCN, C0, keys, grid, batch: int):
    """Per draw m of the layers 1..L-1 (key m): (E4 - G (x) G, G) of the last layer's units at C_L (m), h = C^1/2 z."""
    def one(key):
        C = C0
        for layer, N in enumerate(arch.widths[:-1]):
            z = jax.random.normal(jax.random.fold_in(key, layer), (C.shape[0], N), C.dtype)
            phi = arch.activation(_root(C) @ z)
            C = arch.s_w2 * (phi @ phi.T) / N + arch.s_b2
        E4, G = _moments(arch.activation, C, grid)
        return E4 - jnp.einsum("ab,ce->abce", G, G), G

    return jax.lax.map(one, keys, batch_size=batch)


def four_point_cnn(arch: CNN, X, nodes: int = 24):
    """Connected 4-point function of the prior's outputs of the two-layer CNN on the rows of X (1 or 2 inputs unless
    phi is linear), exact at every number of channels C. Returns (G4c (P, P, P, P), the NNGP output kernel (P, P)).

    f(x) = sum_{c,s} a_cs phi(w_c . x_s), a_cs ~ N(0, s_a2/(S C^gamma)), w_c ~ N(0, (s_w2/n) I) (S patches x_s of
    size n; ``sampling.networks``). Given the filters f is Gaussian with covariance (c/C) sum_c g_c, c = s_a2
    C^(1-gamma), g_c(x, x') = (1/S) sum_s phi(w_c . x_s) phi(w_c . x'_s), and the channels are iid, so as for the FCN
    G4c(1234) = V[12, 34] + V[13, 24] + V[14, 23] with

        V[ab, ce] = (c^2/C) [ (1/S^2) sum_{s,t} E phi(h_s(x_a)) phi(h_s(x_b)) phi(h_t(x_c)) phi(h_t(x_e))
                              - E g_ab E g_ce ],

    h_s(x) = w . x_s jointly Gaussian over patches and inputs, Cov(h_s(x), h_t(x')) = (s_w2/n) x_s . x'_t (the
    weight sharing couples the patches; Naveh & Ringel 2021 for the two-layer CNN's kernel). Each (s, t) term is a
    fourth moment over the 2P variables (h_s(x_a), h_t(x_a)): Isserlis for linear phi, else Gauss-Hermite
    quadrature (``nodes`` per dimension)."""
    if not isinstance(arch, CNN):
        raise TypeError(f"arch must be a CNN, got {type(arch).__name__}")
    X = jnp.asarray(X, jnp.result_type(float))
    d = arch.patch_size * arch.patches
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must have shape (P, {d}), got {X.shape}")
    if not arch.activation.is_linear and not 1 <= X.shape[0] <= 2:
        raise ValueError(f"X: the quadrature is over 2P patch pre-activations; give 1 or 2 inputs, got {X.shape[0]}")
    P, S = X.shape[0], arch.patches
    Xp = X.reshape(P, S, arch.patch_size)
    H = arch.s_w2 * jnp.einsum("asn,btn->satb", Xp, Xp) / arch.patch_size  # Cov(h_s(x_a), h_t(x_b))
    c = arch.s_a2 * arch.channels ** (1 - arch.gamma)
    E4 = jnp.zeros((P, P, P, P), X.dtype)
    G = jnp.zeros((P, P), X.dtype)
    for si in range(S):
        for ti in range(S):
            joint = jnp.block([[H[si, :, si], H[si, :, ti]], [H[ti, :, si], H[ti, :, ti]]])
            moments, second = fourth_moments(arch.activation, joint, nodes)
            E4 = E4 + moments[:P, :P, P:, P:] / S**2
            if si == ti:
                G = G + second[:P, :P] / S
    cov = c**2 * (E4 - jnp.einsum("ab,ce->abce", G, G)) / arch.channels
    return _symmetrised(cov), c * G


def _symmetrised(cov):
    """V[12, 34] + V[13, 24] + V[14, 23]: Isserlis given the readout's conditional covariance V."""
    return cov + jnp.transpose(cov, (0, 2, 1, 3)) + jnp.transpose(cov, (0, 3, 2, 1))


def quartic_posterior_mean(arch: FCN, data, kappa2, X_test=None):
    """The GP posterior mean on X_test plus its first-order (1/N) correction from the prior's 4-point function.

    The finite-width prior of the outputs f on the joint points (training and test) is, to O(1/N), the Edgeworth
    series p(f) = N(f; 0, K)[1 + A(f)], A = (1/24) G4c_ijkl He_ijkl(f), with the Hermite tensor of u = K^-1 f,
    He_ijkl = u_i u_j u_k u_l - (6 terms K^-1_ij u_k u_l) + (3 terms K^-1_ij K^-1_kl) (McCullagh, "Tensor
    methods in statistics", ch. 5). Under the Gaussian likelihood the posterior mean is then
    E[f*] = m* + Cov_GP-post(f*, A) + O(1/N^2), and by Stein's lemma with the GP posterior N(m, S) of the joint f,
    mu = K^-1 m, Omega = K^-1 S K^-1:

        dE[f*] = (S K^-1)_{*b} [ (1/6) G4c_bjkl mu_j mu_k mu_l + (1/2) G4c_bjkl (Omega - K^-1)_jk mu_l ].

    Returns (GP mean, corrected mean) on X_test (default ``data.X_test``). Needs an invertible joint NNGP kernel
    (e.g. P + P* <= d for a linear net)."""
    X_test = data.X_test if X_test is None else X_test
    X_all = jnp.concatenate([jnp.asarray(data.X), jnp.asarray(X_test)])
    P = data.X.shape[0]
    G4c, K = four_point(arch, X_all)
    y = jnp.asarray(data.y, K.dtype)
    Ktr = K[:P, :P] + kappa2 * jnp.eye(P, dtype=K.dtype)
    m = K[:, :P] @ jnp.linalg.solve(Ktr, y)
    S = K - K[:, :P] @ jnp.linalg.solve(Ktr, K[:P, :])
    B = jnp.linalg.inv(K)
    mu, Omega = B @ m, B @ S @ B
    dA = (jnp.einsum("bjkl,j,k,l->b", G4c, mu, mu, mu) / 6 + jnp.einsum("bjkl,jk,l->b", G4c, Omega - B, mu) / 2)
    return m[P:], m[P:] + (S @ B @ dA)[P:]
