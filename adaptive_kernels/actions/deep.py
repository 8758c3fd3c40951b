"""Actions of deep networks in per-layer kernels (THEORY.md sec. 3 and 5).

Fully connected net with L hidden layers of widths N_1..N_L (Fischer, Lindner, Dahmen,
Ringel, Kraemer & Helias, ICML 2024; Li & Sompolinsky 2021)::

    C_1 = s_w2 X X^T / d + s_b2,     C_{l+1} = s_w2 K_l + s_b2
    G_l = K_phi(C_l)                 (NNGP map, ``Activation.kernel_matrix``; G_l = C_l if linear)
    W_l(Kt | C_l) = -(N_l/2) log det(I - (2/N_l) Kt G_l)     (exact for linear phi,
                                                             Gaussian-equivalent otherwise)
    D(K_L) = 1/2 y^T (c K_L + kappa2)^{-1} y + 1/2 log det(c K_L + kappa2),  c = s_a2 N_L^(1-gamma)
    S({K_l}, {Kt_l}) = sum_l [tr(Kt_l K_l) - W_l(Kt_l | C_l)] + D(K_L)

Its stationarity conditions are the forward-backward equations (sec. 5)::

    forward   K_l  = dW_l/dKt_l = G_l (I - (2/N_l) Kt_l G_l)^{-1}
    top       Kt_L = -dD/dK_L   = (c/2)(t t^T - A),   A = (c K_L + kappa2)^{-1},  t = A y
    backward  Kt_l = dW_{l+1}/dK_l = vjp of K_l -> G_{l+1} applied to
                     dW_{l+1}/dG_{l+1} = Kt_{l+1} (I - (2/N_{l+1}) G_{l+1} Kt_{l+1})^{-1}

All layer quantities go through a factor G_l = B_l B_l^T (B_l is P x r): with
M_l = I_r - (2/N_l) B_l^T Kt_l B_l = L L^T (Cholesky),

    K_l = F F^T,  F = B_l L^{-T};   W_l = -N_l sum log diag L;
    dW_l/dG_l = Kt_l + (2/N_l) Kt_l K_l Kt_l              (Woodbury)

The domain of W_l is M_l > 0 (the same spectrum as I - (2/N_l) G^1/2 Kt G^1/2 apart from
eigenvalues 1), so a failed Cholesky is the per-step domain check. For a linear net the
factor is propagated exactly (B_{l+1} = [sqrt(s_w2) F, sqrt(s_b2) 1]), so C_l may be
singular (P > d: the proportional regime).

Other forms of the same problem:

- ``primal_action``: Kt eliminated, sum_l N_l KL(N(0, K_l) || N(0, G_l)) + D(K_L), the
  deep kernel machine objective (Yang et al. 2023); needs every K_l and G_l full rank.
- ``whitened_data_term`` (+ entropy from ``layer_prior``): the same primal in whitened
  coordinates K_l = B_l Q_l B_l^T, valid for singular G_l and any P, N_l.
- ``input_space_data_term`` (+ ``input_space_prior``; linear nets, no bias): one d x d
  Sigma_l per layer, sum_l N_l KL(N(0, Sigma_l) || N(0, s_w2 Sigma_{l-1})) + D(X Sigma_L X^T).
- ``scaling_data_term`` (+ ``layer_prior``): deep kernel scaling (sec. 3), one scalar u_l per
  layer, sum_l (N_l/2)(u_l - log u_l) + D((prod_l u_l) K_GP).
The last three are data terms of an ``actions.base.EntropicAction`` (entropy
sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + data term), minimised by the shared solvers.
- ``second_order_cgf``: the cumulant expansion of W_l to second order in Kt (Fischer et al.),
  W_l ~ tr(Kt G_l) + (1/(2 N_l)) Var_{h ~ N(0, C_l)}[phi(h)^T Kt phi(h)], the variance
  (the four-point function of phi minus products of two-point functions, THEORY.md sec. 8)
  estimated by Monte Carlo with fixed draws.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.architectures import FCN
from adaptive_kernels.gp import quadratic_and_logdet


# --- small linear-algebra helpers ---------------------------------------------------------
def symmetrize(M):
    return 0.5 * (M + M.T)


def jittered_cholesky(G):
    """Lower Cholesky factor of a PSD matrix with a relative jitter 10 P eps mean(diag G)."""
    P = G.shape[0]
    jitter = 10 * P * jnp.finfo(G.dtype).eps * jnp.mean(jnp.diagonal(G))
    return jnp.linalg.cholesky(symmetrize(G) + jitter * jnp.eye(P, dtype=G.dtype))


def logdet_from_cholesky(L):
    return 2 * jnp.sum(jnp.log(jnp.diagonal(L)))


def gaussian_kl(K, G):
    """KL(N(0, K) || N(0, G)) = 1/2 [tr(G^{-1} K) - P - log det K + log det G] (Cholesky)."""
    Lg = jnp.linalg.cholesky(symmetrize(G))
    Lk = jnp.linalg.cholesky(symmetrize(K))
    V = jsl.solve_triangular(Lg, Lk, lower=True)
    return 0.5 * (jnp.sum(V**2) - K.shape[0] - logdet_from_cholesky(Lk) + logdet_from_cholesky(Lg))


# --- the data term ----------------------------------------------------------------------------
def _targets(y):
    return y.reshape(y.shape[0], -1)


def data_term(K_out, y, kappa2):
    """D = 1/2 tr(Y^T (K_out + kappa2)^{-1} Y) + (n_outputs/2) log det(K_out + kappa2)."""
    Y = _targets(y)
    quad, logdet = quadratic_and_logdet(symmetrize(K_out) + kappa2 * jnp.eye(K_out.shape[0], dtype=K_out.dtype), Y)
    return 0.5 * quad + 0.5 * Y.shape[1] * logdet


class OutputTerms(eqx.Module):
    """The data term at K_L and its conjugate: D, t = A y, Kt_L = (c/2)(t t^T - n_out A)."""

    value: jnp.ndarray
    t: jnp.ndarray
    conjugate: jnp.ndarray


def output_terms(K_L, y, c, kappa2) -> OutputTerms:
    """D(K_L) and Kt_L = -dD/dK_L = (c/2)(t t^T - A) for K_out = c K_L (THEORY.md sec. 5)."""
    Y = _targets(y)
    P = K_L.shape[0]
    cf = jsl.cho_factor(c * symmetrize(K_L) + kappa2 * jnp.eye(P, dtype=K_L.dtype), lower=True)
    t = jsl.cho_solve(cf, Y)
    A = jsl.cho_solve(cf, jnp.eye(P, dtype=K_L.dtype))
    value = 0.5 * jnp.sum(Y * t) + 0.5 * Y.shape[1] * logdet_from_cholesky(cf[0])
    conjugate = 0.5 * c * (t @ t.T - Y.shape[1] * symmetrize(A))
    return OutputTerms(value=value, t=t.reshape(jnp.shape(y)), conjugate=conjugate)


# --- the prior maps -----------------------------------------------------------------------------
def input_covariance(arch: FCN, X):
    """C_1 = s_w2 X X^T / d + s_b2."""
    return arch.s_w2 * X @ X.T / arch.d + arch.s_b2


def prior_kernel(arch: FCN, C):
    """G = K_phi(C): the mean of a layer's kernel K given its pre-activation covariance C."""
    return arch.activation.kernel_matrix(C)


def next_covariance(arch: FCN, K):
    """C_{l+1} = s_w2 K_l + s_b2."""
    return arch.s_w2 * K + arch.s_b2


def factor_ranks(arch: FCN, P: int) -> tuple[int, ...]:
    """Columns r_l of the factors B_l (G_l = B_l B_l^T): a linear net propagates the explicit
    factor while it has fewer than P columns (d + 1 at the input, one more per layer for the
    bias); otherwise a P x P Cholesky factor is used."""
    ranks = [arch.d + 1 if arch.activation.is_linear and arch.d + 1 <= P else P]
    for _ in range(arch.depth - 1):
        ranks.append(ranks[-1] + 1 if arch.activation.is_linear and ranks[-1] + 1 <= P else P)
    return tuple(ranks)


def input_factor(arch: FCN, X):
    """B_1 with B_1 B_1^T = G_1: explicit [sqrt(s_w2/d) X, sqrt(s_b2) 1] for a linear net
    when it has fewer columns than rows (rank-deficient C_1 allowed), else a Cholesky factor."""
    P, d = X.shape
    if arch.activation.is_linear and d + 1 <= P:  # factor_ranks' rule
        ones = jnp.ones((P, 1), X.dtype)
        return jnp.concatenate([jnp.sqrt(arch.s_w2 / d) * X, jnp.sqrt(arch.s_b2) * ones], axis=1)
    return jittered_cholesky(prior_kernel(arch, input_covariance(arch, X)))


def linear_next_factor(arch: FCN, F):
    """For linear phi, G_{l+1} = s_w2 F F^T + s_b2 = B B^T with B = [sqrt(s_w2) F, sqrt(s_b2) 1]."""
    P = F.shape[0]
    if F.shape[1] + 1 > P:  # factor_ranks' rule
        return jittered_cholesky(next_covariance(arch, F @ F.T))
    return jnp.concatenate([jnp.sqrt(arch.s_w2) * F, jnp.sqrt(arch.s_b2) * jnp.ones((P, 1), F.dtype)], axis=1)


# --- one layer's cumulant generating function ---------------------------------------------------------
class LayerTerms(eqx.Module):
    """Forward quantities of one layer at (Kt, G = B B^T), Gaussian-equivalent / exact linear CGF.

    kernel: K = dW/dKt.  factor: F with K = F F^T.  cgf: W.
    domain: M = I - (2/N) B^T Kt B (its Cholesky succeeded iff the point is in the domain).
    """

    kernel: jnp.ndarray
    factor: jnp.ndarray
    cgf: jnp.ndarray
    domain: jnp.ndarray
    in_domain: jnp.ndarray


def layer_terms(B, Kt, N) -> LayerTerms:
    """W(Kt | G) = -(N/2) log det(I - (2/N) Kt G) and K = dW/dKt through G = B B^T.

    Order of the products (THEORY.md sec. 5): K = G (I - a Kt G)^{-1} = (I - a G Kt)^{-1} G
    = B (I - a B^T Kt B)^{-1} B^T, a = 2/N.
    """
    r = B.shape[1]
    M = jnp.eye(r, dtype=B.dtype) - (2.0 / N) * symmetrize(B.T @ Kt @ B)
    Lm = jnp.linalg.cholesky(M)
    F = jsl.solve_triangular(Lm, B.T, lower=True).T
    return LayerTerms(
        kernel=F @ F.T,
        factor=F,
        cgf=-N * jnp.sum(jnp.log(jnp.diagonal(Lm))),
        domain=M,
        in_domain=jnp.all(jnp.isfinite(Lm)),
    )


def cgf_prior_gradient(Kt, K, N):
    """dW/dG at the forward kernel K = dW/dKt: Kt (I - (2/N) G Kt)^{-1} = Kt + (2/N) Kt K Kt."""
    return symmetrize(Kt + (2.0 / N) * Kt @ K @ Kt)


def pullback(arch: FCN, K, cotangent):
    """Vector-Jacobian product of K_l -> G_{l+1} = K_phi(s_w2 K_l + s_b2) with a cotangent on G:
    the backward step Kt_l = dW_{l+1}/dK_l when ``cotangent`` = dW_{l+1}/dG_{l+1}."""
    _, vjp = jax.vjp(lambda k: prior_kernel(arch, next_covariance(arch, k)), K)
    return symmetrize(vjp(cotangent)[0])


def backward_conjugates(arch: FCN, kernels, y, kappa2):
    """The backward pass from given kernels: Kt_L = -dD/dK_L, Kt_l = dW_{l+1}/dK_l (sec. 5)."""
    conjugates = [output_terms(kernels[-1], y, arch.readout_scale, kappa2).conjugate]
    for layer in range(arch.depth - 2, -1, -1):
        N = arch.widths[layer + 1]
        grad_G = cgf_prior_gradient(conjugates[0], kernels[layer + 1], N)
        conjugates.insert(0, pullback(arch, kernels[layer], grad_G))
    return tuple(conjugates)


def domain_margin(terms: LayerTerms):
    """Smallest eigenvalue of I - (2/N) G^1/2 Kt G^1/2 (eigenvalues of M, and 1 if r < P)."""
    low = jnp.min(jnp.linalg.eigvalsh(terms.domain))
    return jnp.where(terms.domain.shape[0] < terms.kernel.shape[0], jnp.minimum(low, 1.0), low)


def logdet_cgf(Kt, G, N):
    """W(Kt | G) = -(N/2) log det(I - (2/N) Kt G) by slogdet: the plain formula, for checks."""
    sign, logdet = jnp.linalg.slogdet(jnp.eye(G.shape[0], dtype=G.dtype) - (2.0 / N) * Kt @ G)
    return jnp.where(sign > 0, -0.5 * N * logdet, jnp.nan)


def second_order_cgf(arch: FCN, Kt, C, N, draws):
    """Second-order cumulant expansion of W(Kt | C) = N log E exp(phi(h)^T Kt phi(h) / N):

        W ~ tr(Kt K_phi(C)) + (1/(2N)) Var_{h ~ N(0, C)}[phi(h)^T Kt phi(h)]

    The mean is exact (NNGP map); the variance, sum_ijkl Kt_ij Kt_kl (E[phi_i phi_j phi_k phi_l]
    - E[phi_i phi_j] E[phi_k phi_l]), is the sample variance over h = z B^T, C = B B^T, with fixed
    standard normal ``draws`` z (S x P), so W is a smooth function of Kt and C (its Monte Carlo
    error is ~ sqrt(2/S) relative on the 1/N correction). For linear phi the variance is
    2 tr(Kt C Kt C) exactly.
    """
    B = jittered_cholesky(C)
    phi = arch.activation(draws @ B.T)
    q = jnp.sum((phi @ Kt) * phi, axis=1)
    return jnp.sum(Kt * prior_kernel(arch, C)) + jnp.var(q) / (2.0 * N)


# --- whole-network actions -----------------------------------------------------------------------------
def conjugate_action(arch: FCN, X, y, kappa2, kernels, conjugates):
    """S({K_l}, {Kt_l}) of THEORY.md sec. 5 with the slogdet CGF (a reference implementation;
    stationary in every K_l and Kt_l at the MAP kernels)."""
    C = input_covariance(arch, X)
    total = 0.0
    for N, K, Kt in zip(arch.widths, kernels, conjugates):
        total = total + jnp.sum(Kt * K) - logdet_cgf(Kt, prior_kernel(arch, C), N)
        C = next_covariance(arch, K)
    return total + data_term(arch.readout_scale * kernels[-1], y, kappa2)


def primal_action(arch: FCN, X, y, kappa2, kernels):
    """sum_l N_l KL(N(0, K_l) || N(0, K_phi(C_l))) + D(K_L): the conjugates eliminated
    (Legendre transform of W_l; the deep kernel machine objective). Needs full-rank kernels."""
    C = input_covariance(arch, X)
    total = 0.0
    for N, K in zip(arch.widths, kernels):
        total = total + N * gaussian_kl(K, prior_kernel(arch, C))
        C = next_covariance(arch, K)
    return total + data_term(arch.readout_scale * kernels[-1], y, kappa2)


def next_factor(arch: FCN, F):
    """Factor B_{l+1} of G_{l+1} from a factor F of K_l (K_l = F F^T)."""
    if arch.activation.is_linear:
        return linear_next_factor(arch, F)
    return jittered_cholesky(prior_kernel(arch, next_covariance(arch, F @ F.T)))


def whitened_chain(arch: FCN, X, covariances):
    """Kernels K_l = B_l Q_l B_l^T of the whitened primal form (``covariances`` = (Q_1..Q_L))."""
    B = input_factor(arch, X)
    kernels = []
    for layer, Q in enumerate(covariances):
        F = B @ jnp.linalg.cholesky(symmetrize(Q))
        kernels.append(F @ F.T)
        if layer + 1 < arch.depth:
            B = next_factor(arch, F)
    return tuple(kernels)


def whitened_data_term(covariances, problem):
    """D(K_L) with K_L from :func:`whitened_chain`; ``problem`` = (arch, X, y, kappa2).

    With the entropy sum_l (N_l/2)[tr Q_l - log det Q_l] = sum_l N_l KL(N(0, Q_l) || N(0, I))
    (+ const) this is the primal action in whitened coordinates K_l = B_l Q_l B_l^T,
    G_l = B_l B_l^T: the Legendre transform of the CGF, N_l KL(N(0, K_l) || N(0, G_l)),
    restricted to the range of G_l. It is finite for singular G_l (linear nets with P > d)
    and any P / N_l; for a linear net it is the input-space form in whitened coordinates.
    """
    arch, X, y, kappa2 = problem
    return data_term(arch.readout_scale * whitened_chain(arch, X, covariances)[-1], y, kappa2)


def layer_prior(problem):
    """(weights N_l, precisions 1) per layer: the entropic part of the whitened and scaling forms."""
    arch = problem[0]
    one = jnp.ones((), problem[1].dtype)
    return tuple(N * one for N in arch.widths), tuple(one for _ in arch.widths)


def input_space_prior(problem):
    """Weights N_l and precisions a_l = d / s_w2^l (the prior's) of the input-space form."""
    arch, X = problem[0], problem[1]
    return (
        tuple(N * jnp.ones((), X.dtype) for N in arch.widths),
        tuple(arch.d / arch.s_w2**layer * jnp.ones((), X.dtype) for layer in range(1, arch.depth + 1)),
    )


def input_space_data_term(sigmas, problem):
    """Linear nets without bias, one d x d Sigma_l per layer: the action is
    sum_l N_l KL(N(0, Sigma_l) || N(0, s_w2 Sigma_{l-1})) + D(X Sigma_L X^T), Sigma_0 = I/d
    (Sigma_l: covariance of the effective input-space weight vector of layer l's units,
    (1/N_l)(W_l..W_1)^T(W_l..W_1)). Written as entropy sum_l (N_l/2)[a_l tr Sigma_l - log det
    Sigma_l] (:func:`input_space_prior`) plus this term: D and the couplings
    (N_l/2)[tr((s_w2 Sigma_{l-1})^{-1} Sigma_l) - a_l tr Sigma_l + log det(s_w2 Sigma_{l-1})], l >= 2.
    For L = 1 it is S(Sigma) of THEORY.md sec. 4."""
    arch, X, y, kappa2 = problem
    _, precisions = input_space_prior(problem)
    total = data_term(arch.readout_scale * X @ sigmas[-1] @ X.T, y, kappa2)
    for N, a, S_prev, S in zip(arch.widths[1:], precisions[1:], sigmas[:-1], sigmas[1:]):
        L = jnp.linalg.cholesky(arch.s_w2 * symmetrize(S_prev))
        V = jsl.solve_triangular(L, jnp.linalg.cholesky(symmetrize(S)), lower=True)
        total = total + 0.5 * N * (jnp.sum(V**2) - a * jnp.trace(S) + logdet_from_cholesky(L))
    return total


def scaling_data_term(scales, problem):
    """Deep kernel scaling (THEORY.md sec. 3): D((prod_l u_l) K_GP), K_GP the NNGP output
    kernel (c included); with the entropy sum_l (N_l/2)(u_l - log u_l) of :func:`layer_prior`."""
    arch, K_gp, y, kappa2 = problem
    return data_term(jnp.prod(jnp.stack(scales)) * K_gp, y, kappa2)
