"""Actions of deep networks in per-layer kernels (THEORY.md sec. 5).

Fully connected net with L hidden layers of widths N_1..N_L (Fischer, Lindner, Dahmen, Ringel, Kraemer &
Helias, ICML 2024)::

    C_1 = s_w2 X X^T / d + s_b2,     C_{l+1} = s_w2 K_l + s_b2
    G_l = K_phi(C_l)                 (NNGP map, ``kernels.kernel_matrix``; G_l = C_l if linear)
    W_l(Kt | C_l) = -(N_l/2) log det(I - (2/N_l) Kt G_l)     (exact for linear phi, Gaussian-equivalent otherwise)
    D(K_L) = 1/2 y^T (c K_L + kappa2)^{-1} y + 1/2 log det(c K_L + kappa2),  c = s_a2 N_L^(1-gamma)
    S({K_l}, {Kt_l}) = sum_l [tr(Kt_l K_l) - W_l(Kt_l | C_l)] + D(K_L)

Its stationarity conditions are the forward-backward equations (sec. 5)::

    forward   K_l  = dW_l/dKt_l = G_l (I - (2/N_l) Kt_l G_l)^{-1}
    top       Kt_L = -dD/dK_L   = (c/2)(t t^T - A),   A = (c K_L + kappa2)^{-1},  t = A y
    backward  Kt_l = dW_{l+1}/dK_l = vjp of K_l -> G_{l+1} applied to
                     dW_{l+1}/dG_{l+1} = Kt_{l+1} (I - (2/N_{l+1}) G_{l+1} Kt_{l+1})^{-1}

All layer quantities go through a factor G_l = B_l B_l^T (B_l is P x r): with M_l = I_r - (2/N_l) B_l^T Kt_l B_l
= L L^T (Cholesky), K_l = F F^T, F = B_l L^{-T}; W_l = -N_l sum log diag L; dW_l/dG_l = Kt_l + (2/N_l) Kt_l K_l
Kt_l (Woodbury). The domain of W_l is M_l > 0 (the spectrum of I - (2/N_l) G^1/2 Kt G^1/2 apart from
eigenvalues 1), so a failed Cholesky is the per-step domain check. For a linear net the factor is propagated
exactly (B_{l+1} = [sqrt(s_w2) F, sqrt(s_b2) 1]), so C_l may be singular (P > d: the proportional regime).

Three forms of the same saddle, each a problem for the shared solvers:

- :class:`WhitenedKernelAction`: Kt eliminated (the Legendre transform of W_l), sum_l N_l KL(N(0, K_l) ||
  N(0, G_l)) + D(K_L), the deep kernel machine objective (Yang et al. 2023), in whitened coordinates
  K_l = B_l Q_l B_l^T: an entropic action over the Q_l, finite for singular G_l and any P, N_l, d;
- :class:`ConjugateMap`: the forward-backward equations as a fixed-point map on the conjugates {Kt_l}
  (a saddle: the merit is the residual); with a sampled layer CGF (fixed Monte Carlo draws: a smooth function of
  Kt and C) instead of the Gaussian-equivalent one: :class:`SecondOrderCGF`, the cumulant expansion to second order
  in Kt (Fischer et al.), W_l ~ tr(Kt G_l) + (1/(2 N_l)) Var_{h ~ N(0, C_l)}[phi(h)^T Kt phi(h)], or
  ``actions.exact.ExactCGF``, the exact W_l by importance sampling (THEORY.md sec. 9);
- :class:`InputSpaceAction` (linear nets without bias): one d x d Sigma_l per layer,
  sum_l N_l KL(N(0, Sigma_l) || N(0, s_w2 Sigma_{l-1})) + D(X Sigma_L X^T); for L = 1 the two-layer S(Sigma).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.actions.krylov import krylov_linearisation
from adaptive_kernels.gp import data_term, data_term_with_gradient, logdet_from_cholesky
from adaptive_kernels.kernels import kernel_matrix
from adaptive_kernels.problem import Problem
from adaptive_kernels.actions.base import AbstractFixedPointProblem, StepInfo


def symmetrize(M):
    return 0.5 * (M + M.T)


@jax.custom_jvp
def cholesky_with_inverse(A):
    """(L, L^{-1}) for the lower Cholesky factor L of a symmetric positive-definite A, differentiable by matrix
    products alone. The tangent (Murray 2016, "Differentiation of the Cholesky decomposition", eq. 8):

        dL = L Phi(L^{-1} dA L^{-T}),   d(L^{-1}) = -Phi(L^{-1} dA L^{-T}) L^{-1},

    Phi the lower triangle with the diagonal halved. JAX's own rule solves with L (two triangular solves per tangent,
    and more in a forward-over-reverse pass, which differentiates the solves again); with L^{-1} formed once in the
    primal (one triangular solve) every derivative of any order is matrix products. On this CPU a P x P triangular
    solve costs 3-7 matrix products (OpenBLAS dtrsm, one thread), so the deep kernel form's Jacobian products took
    half the time with this rule (erf L = 4, P = 200: 60 -> 30 ms; docs/deep_solver.md)."""
    L = jnp.linalg.cholesky(A)
    return L, jsl.solve_triangular(L, jnp.eye(A.shape[0], dtype=A.dtype), lower=True)


@cholesky_with_inverse.defjvp
def _cholesky_with_inverse_jvp(primals, tangents):
    (A,), (dA,) = primals, tangents
    L, L_inv = cholesky_with_inverse(A)
    X = L_inv @ symmetrize(dA) @ L_inv.T
    Phi = jnp.tril(X) - 0.5 * jnp.diag(jnp.diagonal(X))
    return (L, L_inv), (L @ Phi, -Phi @ L_inv)


@jax.custom_jvp
def _eigh(A):
    """``jnp.linalg.eigh`` whose derivative leaves out the eigenvector rotation between equal eigenvalues: JAX's rule
    divides by w_j - w_i (NaN where two coincide); here those terms are 0. Only the second derivatives of
    :func:`symmetric_sqrt` (the Jacobian products of the whitened kernel form) go through it; its first derivative is
    exact for any spectrum. Returns a plain (w, U) pair, the structure its JVP rule returns (``EighResult`` would not
    match it when the rule itself is differentiated: third derivatives, the one loop of the kernel form)."""
    w, U = jnp.linalg.eigh(A)
    return w, U


@_eigh.defjvp
def _eigh_jvp(primals, tangents):
    (A,), (dA,) = primals, tangents
    w, U = _eigh(A)
    Ad = U.T @ symmetrize(dA) @ U
    gap = w[None, :] - w[:, None]
    distinct = jnp.abs(gap) > 16 * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(w))
    F = jnp.where(distinct, 1.0 / jnp.where(distinct, gap, 1.0), 0.0)
    return (w, U), (jnp.diagonal(Ad), U @ (F * Ad))


@jax.custom_jvp
def symmetric_sqrt(A):
    """A^{1/2} (symmetric) of a symmetric positive-definite A, from one eigendecomposition (NaN where A has a negative
    eigenvalue: the domain guard rejects the point, as a failed Cholesky factor). Its tangent solves the Sylvester
    equation B dB + dB B = dA (B = A^{1/2}; Higham, Functions of Matrices, 2008, sec. 6.1.1): in A's eigenbasis
    dB_ij = dA_ij / (r_i + r_j), r = sqrt(w), finite for any spectrum; its derivative in turn goes through
    :func:`_eigh`."""
    w, U = _eigh(A)
    return (U * jnp.sqrt(w)) @ U.T


@symmetric_sqrt.defjvp
def _symmetric_sqrt_jvp(primals, tangents):
    (A,), (dA,) = primals, tangents
    w, U = _eigh(A)
    r = jnp.sqrt(w)
    return symmetric_sqrt(A), U @ ((U.T @ symmetrize(dA) @ U) / (r[:, None] + r[None, :])) @ U.T


def _jittered(G):
    """symmetrize(G) + 10 P eps mean(diag G) I: the relative jitter of the layer factors."""
    P = G.shape[0]
    jitter = 10 * P * jnp.finfo(G.dtype).eps * jnp.mean(jnp.diagonal(G))
    return symmetrize(G) + jitter * jnp.eye(P, dtype=G.dtype)


def jittered_cholesky(G):
    """Lower Cholesky factor of a PSD matrix with a relative jitter 10 P eps mean(diag G)
    (:func:`cholesky_with_inverse`'s derivatives)."""
    return cholesky_with_inverse(_jittered(G))[0]


# --- the layer maps on P x P matrices -------------------------------------------------------------------------
def input_covariance(problem: Problem, X):
    """C_1 = s_w2 X X^T / d + s_b2."""
    return problem.s_w2 * X @ X.T / problem.d + problem.s_b2


def next_covariance(problem: Problem, K):
    """C_{l+1} = s_w2 K_l + s_b2."""
    return problem.s_w2 * K + problem.s_b2


def prior_kernel(problem: Problem, C):
    """G = K_phi(C): the mean of a layer's kernel K given its pre-activation covariance C."""
    return kernel_matrix(problem.activation, C)


def output_terms(K_L, problem: Problem):
    """(D(c K_L), Kt_L = -dD/dK_L = (c/2)(t t^T - m A)) (THEORY.md sec. 5), from one Cholesky factor."""
    c = problem.readout_scale
    value, grad, _ = data_term_with_gradient(c * K_L, problem.y, problem.kappa2)
    return value, -c * grad


# --- factors G_l = B_l B_l^T ------------------------------------------------------------------------------------
def factor_ranks(problem: Problem) -> tuple[int, ...]:
    """Columns r_l of the factors B_l: a linear net propagates the explicit factor while it has fewer columns
    than P (d + 1 at the input, one more per layer for the bias); otherwise a P x P Cholesky factor is used."""
    linear, P = problem.activation.is_linear, problem.P
    ranks = [problem.d + 1 if linear and problem.d + 1 <= P else P]
    for _ in range(problem.depth - 1):
        ranks.append(ranks[-1] + 1 if linear and ranks[-1] + 1 <= P else P)
    return tuple(ranks)


def input_factor(problem: Problem, X):
    """B_1 with B_1 B_1^T = G_1: explicit [sqrt(s_w2/d) X, sqrt(s_b2) 1] for a linear net when it has fewer
    columns than rows (rank-deficient C_1 allowed), else a Cholesky factor."""
    P, d = X.shape
    if problem.activation.is_linear and d + 1 <= P:  # factor_ranks' rule
        ones = jnp.ones((P, 1), X.dtype)
        return jnp.concatenate([jnp.sqrt(problem.s_w2 / d) * X, jnp.sqrt(problem.s_b2) * ones], axis=1)
    return jittered_cholesky(prior_kernel(problem, input_covariance(problem, X)))


def explicit_factor(problem: Problem, columns: int, P: int) -> bool:
    """Whether the next layer's factor is propagated explicitly (``factor_ranks``' rule): a linear net whose factor
    with one more column (the bias) still has fewer columns than rows."""
    return problem.activation.is_linear and columns + 1 <= P


def next_factor(problem: Problem, F):
    """Factor B_{l+1} of G_{l+1} from a factor F of K_l (K_l = F F^T): for linear phi G_{l+1} = s_w2 F F^T + s_b2
    = B B^T with B = [sqrt(s_w2) F, sqrt(s_b2) 1] while that has fewer columns than rows."""
    P = F.shape[0]
    if explicit_factor(problem, F.shape[1], P):
        return jnp.concatenate([jnp.sqrt(problem.s_w2) * F, jnp.sqrt(problem.s_b2) * jnp.ones((P, 1), F.dtype)], axis=1)
    return prior_factor(problem, F @ F.T)


def prior_factor(problem: Problem, K):
    """The Cholesky factor of G_{l+1} = K_phi(s_w2 K_l + s_b2) (jittered)."""
    return jittered_cholesky(prior_kernel(problem, next_covariance(problem, K)))


def whitening_factor(problem: Problem, K):
    """The symmetric square root B_{l+1} = G_{l+1}^{1/2} of G_{l+1} = K_phi(s_w2 K_l + s_b2) (jittered as
    :func:`jittered_cholesky`): the whitening of the kernel form's layers l >= 2 (:func:`whitened_chain`).

    Any factor B with B B^T = G gives the same action, but the coordinates Q_{l+1} of the layers above move with the
    factor when K_l changes: a Cholesky factor B' = G^{1/2} O turns with G by an orthogonal O(G) that is first order in
    the change of G, so a fixed Q_{l+1} = I + (q - 1) v v^T points its raised direction elsewhere in function space
    after every step below it. In mean field, where the saddle raises the top eigenvalues of every Q_l together, that
    couples all layers (the top eigenvector of Q_8 at the solution of a ReLU L = 8, gamma = 2 net has overlap 0.2 with
    the NNGP's gradient direction in Cholesky coordinates, 0.92 in symmetric ones) and the trust-region steps cycled
    along it. The symmetric root does not turn (its change dB is symmetric: the orthogonal polar factor of B + dB is I
    to first order): with it
    the P = 100 ReLU L = 8 solves take 11 / 10 / 20 evaluations at gamma = 1 / 1.5 / 2 instead of 15 / 22 / 58
    (docs/deep_solver.md). One eigendecomposition per layer replaces the Cholesky factor."""
    return symmetric_sqrt(_jittered(prior_kernel(problem, next_covariance(problem, K))))


# --- one layer's cumulant generating function ---------------------------------------------------------------------
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
    return LayerTerms(kernel=F @ F.T, factor=F, cgf=-N * jnp.sum(jnp.log(jnp.diagonal(Lm))), domain=M,
                      in_domain=jnp.all(jnp.isfinite(Lm)))


def domain_margin(terms: LayerTerms):
    """Smallest eigenvalue of I - (2/N) G^1/2 Kt G^1/2 (eigenvalues of M, and 1 if r < P)."""
    low = jnp.min(jnp.linalg.eigvalsh(terms.domain))
    return jnp.where(terms.domain.shape[0] < terms.kernel.shape[0], jnp.minimum(low, 1.0), low)


def cgf_prior_gradient(Kt, K, N):
    """dW/dG at the forward kernel K = dW/dKt: Kt (I - (2/N) G Kt)^{-1} = Kt + (2/N) Kt K Kt."""
    return symmetrize(Kt + (2.0 / N) * Kt @ K @ Kt)


def pullback(problem: Problem, K, cotangent):
    """Vector-Jacobian product of K_l -> G_{l+1} = K_phi(s_w2 K_l + s_b2) with a cotangent on G: the backward step
    Kt_l = dW_{l+1}/dK_l when ``cotangent`` = dW_{l+1}/dG_{l+1}."""
    _, vjp = jax.vjp(lambda k: prior_kernel(problem, next_covariance(problem, k)), K)
    return symmetrize(vjp(cotangent)[0])


def gaussian_forward(problem: Problem, X, conjugates) -> list[LayerTerms]:
    """Forward pass of the Gaussian-equivalent (exact for linear phi) CGF on inputs X: LayerTerms per layer."""
    B = input_factor(problem, X)
    terms = []
    for layer, Kt in enumerate(conjugates):
        terms.append(layer_terms(B, Kt, problem.widths[layer]))
        if layer + 1 < problem.depth:
            B = next_factor(problem, terms[-1].factor)
    return terms


def backward_conjugates(problem: Problem, kernels) -> tuple:
    """The backward pass from given kernels: Kt_L = -dD/dK_L, Kt_l = dW_{l+1}/dK_l (sec. 5)."""
    conjugates = [output_terms(kernels[-1], problem)[1]]
    for layer in range(problem.depth - 2, -1, -1):
        grad_G = cgf_prior_gradient(conjugates[0], kernels[layer + 1], problem.widths[layer + 1])
        conjugates.insert(0, pullback(problem, kernels[layer], grad_G))
    return tuple(conjugates)


def second_order_cgf(problem: Problem, Kt, C, N, draws):
    """Second-order cumulant expansion of W(Kt | C) = N log E exp(phi(h)^T Kt phi(h) / N):

        W ~ tr(Kt K_phi(C)) + (1/(2N)) Var_{h ~ N(0, C)}[phi(h)^T Kt phi(h)]

    The mean is exact (NNGP map); the variance, sum_ijkl Kt_ij Kt_kl (E[phi_i phi_j phi_k phi_l] - E[phi_i phi_j]
    E[phi_k phi_l]), is the sample variance over h = z B^T, C = B B^T, with fixed standard normal ``draws`` z
    (S x P), so W is a smooth function of Kt and C (its Monte Carlo error is ~ sqrt(2/S) relative on the 1/N
    correction). For linear phi the variance is 2 tr(Kt C Kt C) exactly.
    """
    phi = problem.activation(draws @ jittered_cholesky(C).T)
    q = jnp.sum((phi @ Kt) * phi, axis=1)
    return jnp.sum(Kt * prior_kernel(problem, C)) + jnp.var(q) / (2.0 * N)


def extended_draws(z, P: int, P_all: int, layer: int):
    """Standard normal draws z (S, P) of a layer whose h = z B^T, B = chol(C), extended to P_all = P + m points (test
    points appended): with the Cholesky factor of C in the (train, test) order the training block keeps its draws
    and its values; the new columns are fixed draws too (key P_all, layer)."""
    key = jax.random.fold_in(jax.random.PRNGKey(P_all), layer)
    return jnp.concatenate([z, jax.random.normal(key, (z.shape[0], P_all - P), z.dtype)], axis=1)


class SecondOrderCGF(eqx.Module):
    """The layer CGF W_l(Kt | C) = :func:`second_order_cgf` with fixed draws, one (S, P) array per layer."""

    draws: tuple

    def __call__(self, problem: Problem, Kt, C, layer: int, X):
        return second_order_cgf(problem, Kt, C, problem.widths[layer], self.draws[layer])

    def extended(self, P: int, P_all: int):
        """The CGF on P_all = P + m points (test points appended; :func:`extended_draws`)."""
        return SecondOrderCGF(tuple(extended_draws(z, P, P_all, layer) for layer, z in enumerate(self.draws)))

    def stats(self, problem: Problem, X, conjugates, covariances) -> dict:
        return {}

    def margin(self, problem: Problem, X, conjugates, covariances):
        """No domain check beyond finiteness: NaN."""
        return jnp.asarray(jnp.nan, X.dtype)


def sampled_forward(problem: Problem, X, conjugates, cgf) -> tuple:
    """(kernels K_l = dW_l/dKt_l, sum_l [tr(Kt_l K_l) - W_l], covariances C_l) of a sampled layer CGF ``cgf``
    (``cgf(problem, Kt, C, layer, X)``: :class:`SecondOrderCGF`, ``actions.exact.ExactCGF``), layer by layer."""
    C, kernels, covariances, total = input_covariance(problem, X), [], [], 0.0
    for layer, Kt in enumerate(conjugates):
        W, K = jax.value_and_grad(cgf, argnums=1)(problem, Kt, C, layer, X)
        covariances.append(C)
        kernels.append(symmetrize(K))
        total = total + jnp.sum(Kt * kernels[-1]) - W
        C = next_covariance(problem, kernels[-1])
    return tuple(kernels), total, tuple(covariances)


@eqx.filter_jit
def extended_kernels(problem: Problem, X_all, conjugates, cgf) -> tuple:
    """Per-layer kernels of a sampled CGF on X_all = [X; X_test] (``conjugates`` padded with zero rows and columns
    for the appended test points; ``cgf.extended``)."""
    return sampled_forward(problem, X_all, conjugates, cgf.extended(problem.P, X_all.shape[0]))[0]


# --- the forms -----------------------------------------------------------------------------------------------------
def layer_factors(problem: Problem, X, covariances, factor=whitening_factor) -> tuple:
    """The factors B_1..B_L of the whitened primal form on inputs X (K_l = B_l Q_l B_l^T, ``covariances`` =
    (Q_1..Q_L)). Only a linear net's explicitly propagated factor needs F = B_l chol(Q_l) (B_{l+1} = [sqrt(s_w2) F,
    sqrt(s_b2) 1]); otherwise B_{l+1} = ``factor(problem, K_l)``, a factor of G_{l+1}(K_l) (default the symmetric
    square root, :func:`whitening_factor`; :func:`prior_factor`, its Cholesky factor, gives the coordinates used
    before and by the one loop) and Q_l is not factorised."""
    B = input_factor(problem, X)
    factors = [B]
    for Q in covariances[:-1]:
        if explicit_factor(problem, B.shape[1], B.shape[0]):
            B = next_factor(problem, B @ jnp.linalg.cholesky(symmetrize(Q)))
        else:
            B = factor(problem, symmetrize(B @ Q @ B.T))
        factors.append(B)
    return tuple(factors)


def whitened_chain(problem: Problem, X, covariances, factor=whitening_factor) -> tuple:
    """Kernels K_l = B_l Q_l B_l^T of the whitened primal form on inputs X (:func:`layer_factors`)."""
    return tuple(symmetrize(B @ Q @ B.T) for B, Q in zip(layer_factors(problem, X, covariances, factor), covariances))


class WhitenedKernelAction(EntropicAction):
    """sum_l N_l KL(N(0, Q_l) || N(0, I)) + D(c K_L), K_l = B_l Q_l B_l^T (module docstring): the Legendre transform
    of the CGF, N_l KL(N(0, K_l) || N(0, G_l)), restricted to the range of G_l. The entropy part is the shared
    (N_l/2)[tr Q_l - log det Q_l]; for a linear net this is the input-space form in whitened coordinates.
    ``factor``: the factor of G_l (:func:`whitened_chain`): the symmetric root for the solves; :func:`prior_factor`
    (Cholesky) for the one loop, whose third and fourth derivatives are matrix products (``cholesky_with_inverse``)
    where the eigendecomposition's nest of custom derivatives compiles for many minutes (the one-loop means of
    observables do not depend on the choice: Q_l -> O^T Q_l O, O orthogonal, leaves the Wishart prior unchanged)."""

    factor: Callable = eqx.field(static=True, default=whitening_factor)

    def data_term(self, covariances, problem: Problem):
        return data_term(problem.readout_scale * whitened_chain(problem, problem.X, covariances, self.factor)[-1],
                         problem.y, problem.kappa2)

    def prior(self, problem: Problem):
        one = jnp.ones((), problem.X.dtype)
        return tuple(problem.widths[i] for i in range(problem.depth)), tuple(one for _ in range(problem.depth))

    def linearised_data_term(self, covariances, problem: Problem):
        """(D, dD/dQ, the exact Jacobian model of the precision map): Newton-Krylov steps (``actions.krylov``)."""
        return krylov_linearisation(self, covariances, problem)

    def initial(self, problem: Problem) -> tuple:
        """Q_l = I (the NNGP)."""
        return tuple(jnp.eye(r, dtype=problem.X.dtype) for r in factor_ranks(problem))


class InputSpaceAction(EntropicAction):
    """Linear nets without bias, one d x d Sigma_l per layer (Sigma_l: covariance of the effective input-space weight
    vector of layer l's units, (1/N_l)(W_l..W_1)^T(W_l..W_1)): the action
    sum_l N_l KL(N(0, Sigma_l) || N(0, s_w2 Sigma_{l-1})) + D(c X Sigma_L X^T), Sigma_0 = I/d, written as the entropy
    sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] (a_l = d/s_w2^l, the prior's) plus this data term: D and the
    couplings (N_l/2)[tr((s_w2 Sigma_{l-1})^{-1} Sigma_l) - a_l tr Sigma_l + log det(s_w2 Sigma_{l-1})], l >= 2.
    For L = 1 it is S(Sigma) of THEORY.md sec. 4."""

    def output_term(self, sigmas, problem: Problem):
        """D(c X Sigma_L X^T): the data term without the couplings."""
        X = problem.X
        return data_term(problem.readout_scale * X @ sigmas[-1] @ X.T, problem.y, problem.kappa2)

    def data_term(self, sigmas, problem: Problem):
        _, precisions = self.prior(problem)
        total = self.output_term(sigmas, problem)
        for layer in range(1, problem.depth):
            N, a, S_prev, S = problem.widths[layer], precisions[layer], sigmas[layer - 1], sigmas[layer]
            L = jnp.linalg.cholesky(problem.s_w2 * symmetrize(S_prev))
            V = jsl.solve_triangular(L, jnp.linalg.cholesky(symmetrize(S)), lower=True)
            total = total + 0.5 * N * (jnp.sum(V**2) - a * jnp.trace(S) + logdet_from_cholesky(L))
        return total

    def prior(self, problem: Problem):
        """Weights N_l and precisions a_l = d / s_w2^l (the prior's)."""
        return (tuple(problem.widths[i] for i in range(problem.depth)),
                tuple(problem.d / problem.s_w2 ** (layer + 1) for layer in range(problem.depth)))

    def initial(self, problem: Problem) -> tuple:
        """Sigma_l = s_w2^l / d I (the prior)."""
        return tuple(problem.s_w2 ** (layer + 1) / problem.d * jnp.eye(problem.d, dtype=problem.X.dtype)
                     for layer in range(problem.depth))


class ConjugateMap(AbstractFixedPointProblem):
    """The forward-backward equations as a fixed-point map on the conjugate kernels {Kt_l} (module docstring).

    T({Kt}): the forward pass for the kernels, then Kt_L = -dD/dK_L and Kt_l = dW_{l+1}/dK_l. A saddle, so the
    merit a step must not increase is the residual |T(x) - x|; the stationarity residual is |T(x) - x| / |T(x)|.
    ``cgf``: None (the Gaussian-equivalent CGF) or a sampled layer CGF with fixed Monte Carlo draws,
    ``cgf(problem, Kt, C, layer, X)`` (:class:`SecondOrderCGF`; ``actions.exact.ExactCGF``, the exact one).
    """

    cgf: eqx.Module | None = None

    def start(self, value, args):
        return value

    def value(self, x, args):
        return x

    def kernels(self, problem: Problem, X, conjugates):
        """(per-layer kernels on X, sum_l [tr(Kt_l K_l) - W_l], in_domain, margin) of the forward pass."""
        if self.cgf is None:
            terms = gaussian_forward(problem, X, conjugates)
            kernels = tuple(t.kernel for t in terms)
            cgf = sum(jnp.sum(Kt * t.kernel) - t.cgf for Kt, t in zip(conjugates, terms))
            in_domain = jnp.all(jnp.stack([t.in_domain for t in terms]))
            return kernels, cgf, in_domain, jnp.min(jnp.stack([domain_margin(t) for t in terms]))
        kernels, cgf, covariances = sampled_forward(problem, X, conjugates, self.cgf)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(K)) for K in kernels]))
        margin = self.cgf.margin(problem, X, conjugates, covariances)
        return kernels, cgf, finite & ~(margin <= 0), margin

    def _backward(self, problem: Problem, kernels, conjugates):
        if self.cgf is None:
            return backward_conjugates(problem, kernels)
        new = [output_terms(kernels[-1], problem)[1]]
        for layer in range(problem.depth - 2, -1, -1):
            _, vjp = jax.vjp(lambda K: self.cgf(problem, new[0], next_covariance(problem, K), layer + 1, problem.X),
                             kernels[layer])
            new.insert(0, symmetrize(vjp(jnp.ones((), kernels[layer].dtype))[0]))
        return tuple(new)

    def _evaluate(self, conjugates, problem: Problem):
        kernels, cgf, in_domain, margin = self.kernels(problem, problem.X, conjugates)
        new = self._backward(problem, kernels, conjugates)
        action = cgf + output_terms(kernels[-1], problem)[0]
        step = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(new, conjugates)))
        scale = jnp.sqrt(sum(jnp.sum(a**2) for a in new))
        return new, StepInfo(in_domain=in_domain, merit=step, residual=step / jnp.maximum(scale, jnp.finfo(
            step.dtype).tiny), action=action), margin

    def __call__(self, conjugates, problem: Problem):
        return self._evaluate(conjugates, problem)[:2]

    def report(self, conjugates, problem: Problem):
        _, info, margin = self._evaluate(conjugates, problem)
        return info.action, info.residual, info.merit, margin

    def stats(self, conjugates, problem: Problem) -> dict:
        """The sampled CGF's statistics at the solution (the exact measure's effective sample sizes)."""
        if self.cgf is None:
            return {}
        _, _, covariances = sampled_forward(problem, problem.X, conjugates, self.cgf)
        return self.cgf.stats(problem, problem.X, conjugates, covariances)
