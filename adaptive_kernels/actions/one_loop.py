"""One-loop finite-width corrections around the saddle (THEORY.md sec. 10).

With the exact Wishart exponents the order parameters q (one n_l x n_l covariance Sigma_l per leaf of an
:class:`~adaptive_kernels.actions.base.EntropicAction`, n_l = 1 for a kernel-scaling factor) have the density
exp(-S_ex(q)) in the Lebesgue measure of their independent entries, with

    S_ex = sum_l [(N_l a_l/2) tr Sigma_l - ((N_l - n_l - 1)/2) log det Sigma_l] + D(Sigma)

(N_l Sigma_l ~ Wishart_{n_l}(N_l, I/a_l) under the prior; D the action's ``data_term``, the couplings of deep
input-space layers included). For a linear two-layer net Sigma = W^T W / N and S_ex is exact; kernel scaling:
s = |a|^2 N^gamma/(s_a2 N) ~ chi2_N/N, n = 1; deep linear nets in whitened coordinates: N_l Q_l ~
Wishart(N_l, I) independently per layer (``deep.WhitenedKernelAction``); in input-space coordinates
(``deep.InputSpaceAction``) N_l Sigma_l | Sigma_{l-1} ~ Wishart_d(N_l, s_w2 Sigma_{l-1}), whose normaliser
det(s_w2 Sigma_{l-1})^{-N_l/2} is the coupling's log det term with weight N_l (not N_l - d - 1: that is the
Jacobian of the change of coordinates Q_l -> Sigma_l, det(s_w2 Sigma_{l-1})^{(d+1)/2}).

The one-loop effective action (the Laplace expansion of the posterior to next order; e.g. Zinn-Justin,
"Quantum field theory and critical phenomena", ch. 6)

    Gamma(q) = S_ex(q) + (1/2) log det Hess_q S_ex(q)

has its minimiser at the posterior mean E[q] + O(1/N^2) (its stationarity condition reproduces the O(1/N) shift
-(1/2) H^-1 S''' H^-1 of the mean from the mode), and an observable O(q) has the mean
E[O] = O(q_Gamma) + (1/2) tr(H^-1 Hess O) + O(1/N^2), its variance over q Var[O] = grad O^T H^-1 grad O.

Coordinates in which the Hessian is well conditioned: with Sigma_l = F_l F_l^T (Cholesky) write
dSigma_l = sqrt(2/(N_l - n_l - 1)) F_l V_l F_l^T, V_l symmetric with orthonormal coordinates v (Frobenius
metric). There the Hessian of the exact entropy is the identity, so Hess_v S_ex = I + M with M the Hessian of D
along those directions, and the Jacobian of q -> v, det(F_l)^{n_l + 1} per leaf, cancels the exponent shift:

    Gamma(Sigma) = S(Sigma) + (1/2) log det(I + M(Sigma)) + const,

S the large-N action (exponents N_l) itself. Deep linear nets in input space are expanded in their whitened chain
instead (:func:`chart`). :class:`OneLoopAction` is this Gamma as an EntropicAction (same
entropy, data term D + (1/2) log det(I + M)), so every solver of the saddle also minimises Gamma.

Estimators of (1/2) log det(I + M), its gradient and the observable traces, each with pairs (w_i, z_i) such that
sum_i c w_i z_i^T = (I + M)^{-1}:

- :class:`Structured` (the default for linear two-layer FCNs in weight space): a closed form of the log det, O(d^3)
  (its class docstring), and the observables' pairs by Woodbury (:meth:`Structured.pairs_at`);
- :class:`Dense` (default up to ``DENSE_LIMIT`` independent entries): M from m Hessian-vector products,
  Cholesky I + M = L L^T, w_i = z_i = rows of L^{-1};
- :class:`Stochastic` (matrix-free, larger q, e.g. d x d with d = 100, m = 5050): Rademacher probes z_i,
  w_i = (I + M)^{-1} z_i by conjugate gradients (jax.scipy.sparse.linalg.cg), c = 1/k (Hutchinson); the log
  det by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) with the same probes. Fixed probes (``seed``)
  keep Gamma a deterministic smooth function of q (a sample-average approximation), so the solvers apply
  unchanged.

The gradient of (1/2) log det(I + M(Sigma)) is (1/2) d/dSigma sum_i c w_i^T M(Sigma) z_i with the pairs held
fixed (a custom JVP), third derivatives of D taken forward-over-reverse in chunks.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import jax.scipy.sparse.linalg as jssl

from adaptive_kernels._validation import is_traced
from adaptive_kernels.actions.adaptive import TwoLayerAdaptiveAction
from adaptive_kernels.actions.base import EntropicAction, as_matrix
from adaptive_kernels.actions.deep import InputSpaceAction
from adaptive_kernels.gp import data_term_low_rank

DENSE_LIMIT = 2000
"""Largest number of independent entries of q for which :func:`estimator_for` picks :class:`Dense`."""


# --- coordinates ---------------------------------------------------------------------------------------------
def _sizes(Sigma) -> list[int]:
    return [as_matrix(S).shape[0] for S in jax.tree.leaves(Sigma)]


def coordinate_count(Sigma) -> int:
    """m = sum_l n_l (n_l + 1)/2, the independent entries of the order parameters."""
    return sum(n * (n + 1) // 2 for n in _sizes(Sigma))


def _symmetric(v, n):
    """The symmetric n x n matrix with orthonormal coordinates v: diagonal entries, off-diagonal ones / sqrt 2."""
    rows, cols = jnp.triu_indices(n)
    scale = jnp.where(rows == cols, 1.0, 1.0 / math.sqrt(2.0)).astype(v.dtype)
    M = jnp.zeros((n, n), v.dtype).at[rows, cols].set(v * scale)
    return M + jnp.triu(M, 1).T


def _coordinates(S):
    """The orthonormal coordinates of a symmetric matrix (the inverse of :func:`_symmetric`)."""
    rows, cols = jnp.triu_indices(S.shape[0])
    return S[rows, cols] * jnp.where(rows == cols, 1.0, math.sqrt(2.0)).astype(S.dtype)


def loop_weights(action: EntropicAction, Sigma, args) -> list:
    """The exact Wishart exponents N_l - n_l - 1 per leaf."""
    weights, _ = action.prior(args)
    return [w - n - 1 for w, n in zip(jax.tree.leaves(weights), _sizes(Sigma))]


def check_widths(action: EntropicAction, Sigma, args) -> None:
    """Raise unless every N_l > n_l + 1 (the exact Wishart density of an n x n covariance of N vectors)."""
    weights, _ = action.prior(args)
    for layer, (w, n) in enumerate(zip(jax.tree.leaves(weights), _sizes(Sigma))):
        if not is_traced(w) and float(w) <= n + 1:
            raise ValueError(f"loops: the one-loop correction needs the width N_{layer + 1} = {float(w):g} > n + 1 "
                             f"= {n + 1} (its order parameter is {n} x {n}); use loops=0 or a wider layer")


def embedding(action: EntropicAction, Sigma, args):
    """v (m,) -> Sigma + dSigma (Sigma's structure): dSigma_l = sqrt(2/(N_l - n_l - 1)) F_l V_l F_l^T (module
    docstring), linear in v."""
    leaves, treedef = jax.tree.flatten(Sigma)
    sizes = _sizes(Sigma)
    factors = [jnp.linalg.cholesky(0.5 * (as_matrix(S) + as_matrix(S).T)) for S in leaves]
    scales = [jnp.sqrt(2.0 / w) for w in loop_weights(action, Sigma, args)]
    splits = [n * (n + 1) // 2 for n in sizes]

    def embed(v):
        out, start = [], 0
        for S, n, size, F, c in zip(leaves, sizes, splits, factors, scales):
            V = _symmetric(v[start:start + size], n)
            out.append(S + (c * F @ V @ F.T).reshape(jnp.shape(S)))
            start += size
        return jax.tree.unflatten(treedef, out)

    return embed


def whiten(sigmas, problem):
    """Q_l = B_{l-1}^{-1} Sigma_l B_{l-1}^{-T}, B_{l-1} = sqrt(s_w2) chol(Sigma_{l-1}), Sigma_0 = I/d: the whitened
    covariances of a deep linear net in input space (``deep.InputSpaceAction``), N_l Q_l ~ Wishart_d(N_l, I)
    independently under the prior."""
    F = jnp.eye(problem.d, dtype=sigmas[0].dtype) / math.sqrt(problem.d)
    out = []
    for S in sigmas:
        B = jnp.sqrt(problem.s_w2) * F
        half = jsl.solve_triangular(B, S, lower=True)
        out.append(jsl.solve_triangular(B, half.T, lower=True))
        F = jnp.linalg.cholesky(0.5 * (S + S.T))
    return tuple(out)


def colour(whitened, problem):
    """The inverse of :func:`whiten`: chol(Sigma_l) = sqrt(s_w2) chol(Sigma_{l-1}) chol(Q_l), Sigma_l = F_l F_l^T."""
    F = jnp.eye(problem.d, dtype=whitened[0].dtype) / math.sqrt(problem.d)
    out = []
    for Q in whitened:
        F = jnp.sqrt(problem.s_w2) * F @ jnp.linalg.cholesky(0.5 * (Q + Q.T))
        out.append(F @ F.T)
    return tuple(out)


def chart(action: EntropicAction, Sigma, args):
    """(embed, potential): coordinates v (m,) -> order parameters, embed(0) = Sigma, in which the exact density is
    exp(-S_ex) with Hess_v S_ex = I + M, M = Hess_v potential(embed(v)) at v = 0.

    Default (independent leaves, the prior a product of Wisharts): :func:`embedding` and the action's data term.
    Deep linear nets in input space (``deep.InputSpaceAction``): the prior is a Markov chain of Wisharts, N_l Sigma_l
    | Sigma_{l-1} ~ Wishart(N_l, s_w2 Sigma_{l-1}); in its own coordinates Sigma_l the Laplace expansion has
    coefficients that grow with depth (its mode is (1 - 2(d+1)/N_l) times the previous layer's, so at d = 3, N = 40
    the third layer's prior mode is 0.58 of its mean, and the one-loop means of a prior-only chain are 2-5% off at 3
    layers). The chart is the whitened chain instead, Q_l = :func:`whiten` (independent Wisharts, the mode of each
    (N_l - d - 1)/N_l of its mean): Q_l + sqrt(2/(N_l - d - 1)) G_l V_l G_l^T, G_l = chol(Q_l), mapped back by
    :func:`colour` (nonlinear in v), and the potential is the output term alone (the couplings are the Q_l's Wishart
    entropies). Its log-Jacobian, ((d + 1)/2) sum_l log det Q_l, cancels the exponent shift as in the module
    docstring, so Gamma = S + (1/2) log det(I + M) again, S the same large-N action."""
    if isinstance(action, InputSpaceAction) and len(Sigma) >= 2:
        whitened = whiten(Sigma, args)
        embed_q = embedding(action, whitened, args)
        return (lambda v: colour(embed_q(v), args)), (lambda S: action.output_term(S, args))
    return embedding(action, Sigma, args), (lambda S: action.data_term(S, args))


def affine_chart(action: EntropicAction, Sigma) -> bool:
    """Whether :func:`chart`'s embedding is affine in v (every chart but the whitened deep one): there the one-loop
    mean of the order parameters is the minimiser of Gamma itself, E[q] = q_Gamma."""
    return not (isinstance(action, InputSpaceAction) and len(Sigma) >= 2)


def _curvature(action: EntropicAction, Sigma, args):
    """v -> M v, M the Hessian of the chart's potential along its embedding (forward over reverse)."""
    embed, potential = chart(action, Sigma, args)
    m = coordinate_count(Sigma)
    dtype = jax.tree.leaves(Sigma)[0].dtype

    def grad_phi(v):
        return jax.grad(lambda u: potential(embed(u)))(v)

    return lambda v: jax.jvp(grad_phi, (jnp.zeros(m, dtype),), (v,))[1]


# --- estimators ----------------------------------------------------------------------------------------------
class Dense(eqx.Module):
    """Exact: I + M from m Hessian-vector products (``chunk`` at a time), its Cholesky factor."""

    chunk: int = eqx.field(static=True, default=64)

    def pairs(self, curvature, m, dtype, logdet: bool = True):
        """((1/2) log det(I + M), W, Z, c) with sum_i c w_i z_i^T = (I + M)^{-1} (the log det is free here)."""
        eye = jnp.eye(m, dtype=dtype)
        A = eye + _rows(curvature, eye, self.chunk)
        L = jnp.linalg.cholesky(0.5 * (A + A.T))
        U = jsl.solve_triangular(L, eye, lower=True)  # (I + M)^{-1} = U^T U
        return jnp.sum(jnp.log(jnp.diagonal(L))), U, U, jnp.ones((), dtype)


def lanczos_log_quadrature(matvec, z, steps: int):
    """z^T log(A) z by ``steps`` Lanczos steps from z (full reorthogonalisation): |z|^2 sum_j tau_j^2 log theta_j
    with theta_j, tau_j the Ritz values and first components of the eigenvectors of the tridiagonal matrix (Golub &
    Meurant's Gauss quadrature; Ubaru, Chen & Saad 2017)."""
    norm = jnp.linalg.norm(z)
    Q = jnp.zeros((steps + 1, z.shape[0]), z.dtype).at[0].set(z / norm)

    def body(j, carry):
        Q, alpha, beta = carry
        v = matvec(Q[j]) - jnp.where(j > 0, beta[j - 1], 0.0) * Q[jnp.maximum(j - 1, 0)]
        alpha = alpha.at[j].set(Q[j] @ v)
        v = v - alpha[j] * Q[j]
        mask = (jnp.arange(steps + 1) <= j).astype(z.dtype)
        v = v - (mask[:, None] * Q).T @ ((mask[:, None] * Q) @ v)  # reorthogonalise
        b = jnp.linalg.norm(v)
        beta = beta.at[j].set(b)
        Q = Q.at[j + 1].set(jnp.where(b > 0, v / jnp.where(b > 0, b, 1.0), 0.0))
        return Q, alpha, beta

    zeros = jnp.zeros(steps, z.dtype)
    _, alpha, beta = jax.lax.fori_loop(0, steps, body, (Q, zeros, zeros))
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, S = jnp.linalg.eigh(T)
    return norm**2 * jnp.sum(S[0] ** 2 * jnp.log(theta))


class Stochastic(eqx.Module):
    """Matrix-free: ``probes`` Rademacher vectors (fixed by ``seed``), CG solves (relative tolerance
    ``rtol``) and ``lanczos_steps`` steps of stochastic Lanczos quadrature for the log det."""

    probes: int = eqx.field(static=True, default=32)
    lanczos_steps: int = eqx.field(static=True, default=30)
    seed: int = eqx.field(static=True, default=0)
    rtol: float = eqx.field(static=True, default=1e-8)
    max_steps: int = eqx.field(static=True, default=1000)

    def pairs(self, curvature, m, dtype, logdet: bool = True):
        """As :meth:`Dense.pairs`; ``logdet=False`` skips the Lanczos quadrature (returns None in its place)."""
        Z = jax.random.rademacher(jax.random.PRNGKey(self.seed), (self.probes, m)).astype(dtype)

        def matvec(v):
            return v + curvature(v)

        W = jax.vmap(lambda z: jssl.cg(matvec, z, tol=self.rtol, atol=self.rtol, maxiter=self.max_steps)[0])(Z)
        c = jnp.asarray(1.0 / self.probes, dtype)
        if not logdet:
            return None, W, Z, c
        steps = min(self.lanczos_steps, m - 1)
        value = jnp.mean(jax.vmap(lambda z: lanczos_log_quadrature(matvec, z, steps))(Z))
        return 0.5 * value, W, Z, c


class Structured(eqx.Module):
    """Closed form for a linear two-layer FCN in weight space (``adaptive.TwoLayerAdaptiveAction``, space
    ``"weight"``), cost O(d^3 + (d m)^3) for m outputs instead of the dense path's d(d+1)/2 Hessian-vector products.

    With K = Z Z^T, Z = sqrt(c) X F (Sigma = F F^T), A = (K + kappa2)^{-1}, C = Z^T A Z = I - kappa2 (kappa2 +
    Z^T Z)^{-1} and Om = Z^T A Y (d x m; ``gp.data_term_low_rank``'s alpha), the Hessian of
    D = (1/2) tr(Y^T A Y) + (m/2) log det(K + kappa2) along dSigma = sqrt(2/w) F V F^T (w = N - d - 1) is

        M[V, V] = (2/w) [tr(Om^T V C V Om) - (m/2) tr(C V C V)].

    In the eigenbasis C = U diag(lam) U^T (V' = U^T V U, Om' = U^T Om) the second term is diagonal, so
    I + M = Dg + W^T L W with Dg V'_ij = (1 - (m/w) lam_i lam_j) V'_ij, W V' = V' Om' (d x m) and L = (2/w) diag(lam)
    on its rows: rank d m beyond a diagonal. Then (matrix determinant lemma)

        log det(I + M) = sum_{i<=j} log Dg_ij + log det(I_{dm} + L W Dg^{-1} W^T),
        (W Dg^{-1} W^T)[(i,k),(i',l)] = (1/2)[delta_ii' sum_j Om'_jl Om'_jk / Dg_ij + Om'_il Om'_i'k / Dg_ii'].

    lam in [0, 1), so Dg_ij > 0 for w > m. The gradient is autodiff through the eigendecomposition (smooth while C has
    distinct eigenvalues, the generic case for d < P, where the weight space is used). The observables' moments take
    their pairs from the same closed form (:meth:`pairs_at`)."""

    def _parts(self, action, Sigma, problem):
        """(lam, U, Om' = U^T Om, Dg, w) of the class docstring."""
        Z = problem.weight_space_factor(Sigma)
        factor, Om = data_term_low_rank(Z, problem.y, problem.kappa2)[1]
        Om = Om.reshape(Om.shape[0], -1)
        d, m = Om.shape
        eye = jnp.eye(d, dtype=Z.dtype)
        C = eye - problem.kappa2 * jsl.cho_solve((factor, True), eye)
        lam, U = jnp.linalg.eigh(0.5 * (C + C.T))
        w = loop_weights(action, Sigma, problem)[0]
        return lam, U, U.T @ Om, 1.0 - (m / w) * lam[:, None] * lam[None, :], w

    def half_logdet(self, action, Sigma, problem):
        """(1/2) log det(I + M(Sigma)) in closed form (class docstring)."""
        lam, _, Om, Dg, w = self._parts(action, Sigma, problem)
        d, m = Om.shape
        eye = jnp.eye(d, dtype=Om.dtype)
        logdet_diag = 0.5 * (jnp.sum(jnp.log(Dg)) + jnp.sum(jnp.log(jnp.diagonal(Dg))))
        H = 0.5 * (jnp.einsum("ab,jl,jk,aj->akbl", eye, Om, Om, 1.0 / Dg)
                   + jnp.einsum("al,bk,ab->akbl", Om, Om, 1.0 / Dg)).reshape(d * m, d * m)
        scale = jnp.repeat((2.0 / w) * lam, m)
        logdet_low_rank = jnp.linalg.slogdet(jnp.eye(d * m, dtype=Om.dtype) + scale[:, None] * H)[1]
        return 0.5 * (logdet_diag + logdet_low_rank)

    def pairs_at(self, action, Sigma, problem):
        """Pairs (W, Z, c = 1) with sum_i w_i z_i^T = (I + M)^{-1} in closed form (for the observables' moments):
        with R the rotation v -> v' (the coordinates of V' = U^T V U) and B = L^{1/2} W (d m x n, n = d(d+1)/2),
        Woodbury gives

            (I + M)^{-1} = R^T [Dg^{-1} - G^T G] R,   G = chol(I + B Dg^{-1} B^T)^{-1} B Dg^{-1},

        so w_i = z_i = Dg_i^{-1/2} R_i (n pairs) and (w, z) = (-g_k, g_k), g_k the rows of G R (d m pairs): cost
        O(n d^3 + n (d m)^2) instead of n Hessian-vector products and the Cholesky factor of an n x n matrix."""
        lam, U, Om, Dg, w = self._parts(action, Sigma, problem)
        d, m = Om.shape
        n = d * (d + 1) // 2
        basis = jnp.eye(n, dtype=Om.dtype)
        R = jax.vmap(lambda v: _coordinates(U.T @ _symmetric(v, d) @ U))(basis).T
        B = jax.vmap(lambda v: (jnp.sqrt((2.0 / w) * lam)[:, None] * (_symmetric(v, d) @ Om)).reshape(-1))(basis).T
        dg = Dg[jnp.triu_indices(d)]
        factor = jnp.linalg.cholesky(jnp.eye(d * m, dtype=Om.dtype) + (B / dg) @ B.T)
        GR = jsl.solve_triangular(factor, (B / dg) @ R, lower=True)
        diagonal = R / jnp.sqrt(dg)[:, None]
        return (jnp.concatenate([diagonal, -GR]), jnp.concatenate([diagonal, GR]), jnp.ones((), Om.dtype))


def has_structure(action: EntropicAction, args) -> bool:
    """Whether :class:`Structured` applies: a linear two-layer FCN (one patch) whose D is evaluated in weight space
    (also where ``prediction`` evaluates the one-loop moments of the prediction in weight space)."""
    return isinstance(action, TwoLayerAdaptiveAction) and action.space == "weight" and args.patches == 1


def estimator_for(action: EntropicAction, Sigma, args, estimator=None):
    """``estimator``, or :class:`Structured` where it applies (:func:`has_structure`), else :class:`Dense` up to
    :data:`DENSE_LIMIT` independent entries, :class:`Stochastic` beyond."""
    if estimator is not None:
        return estimator
    if has_structure(action, args):
        return Structured()
    return Dense() if coordinate_count(Sigma) <= DENSE_LIMIT else Stochastic()


def _rows(fn, rows, chunk):
    """fn over the rows of ``rows`` (a PyTree), vectorised ``chunk`` rows at a time."""
    if jax.tree.leaves(rows)[0].shape[0] <= chunk:
        return jax.vmap(fn)(rows)
    return jax.lax.map(fn, rows, batch_size=chunk)


def _pair_sum(fn, W, Z, chunk):
    """sum_i fn(w_i, z_i) over the rows of W, Z, ``chunk`` rows at a time (fn returns a PyTree)."""
    per_pair = _rows(lambda wz: fn(*wz), (W, Z), chunk)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_pair)


def _mixed_curvature(action, Sigma, args, w, z):
    """w^T M(Sigma, args) z, differentiable in Sigma (through D and the embedding) and in args."""
    return w @ _curvature(action, Sigma, args)(z)


# --- the correction as a function with its own derivative ---------------------------------------------------------
@eqx.filter_custom_jvp
def half_logdet(Sigma, args, *, action, estimator):
    """(1/2) log det(I + M(Sigma)) (module docstring)."""
    m = coordinate_count(Sigma)
    dtype = jax.tree.leaves(Sigma)[0].dtype
    return estimator.pairs(_curvature(action, Sigma, args), m, dtype)[0]


@half_logdet.def_jvp
def _half_logdet_jvp(primals, tangents, *, action, estimator):
    Sigma, args = primals
    t_Sigma, t_args = tangents
    m = coordinate_count(Sigma)
    dtype = jax.tree.leaves(Sigma)[0].dtype
    value, W, Z, c = estimator.pairs(_curvature(action, Sigma, args), m, dtype)
    W, Z = jax.lax.stop_gradient((W, Z))
    chunk = 16
    tangent = jnp.zeros((), dtype)
    if t_Sigma is not None:
        grad = _pair_sum(lambda w, z: jax.grad(lambda S: _mixed_curvature(action, S, args, w, z))(Sigma), W, Z, chunk)
        tangent = tangent + 0.5 * c * sum(jnp.sum(g * t) for g, t in zip(jax.tree.leaves(grad),
                                                                          jax.tree.leaves(t_Sigma)))
    if t_args is not None:
        diff, static = eqx.partition(args, eqx.is_inexact_array)
        t_diff = jax.tree.map(lambda a, t: None if a is None else (jnp.zeros_like(a) if t is None else t),
                              diff, t_args, is_leaf=lambda x: x is None)

        def along_args(w, z):
            return jax.jvp(lambda a: _mixed_curvature(action, Sigma, eqx.combine(a, static), w, z), (diff,),
                           (t_diff,))[1]

        tangent = tangent + 0.5 * c * _pair_sum(along_args, W, Z, chunk)
    return value, tangent


def _correction(Sigma, args, action, estimator):
    """(1/2) log det(I + M(Sigma)): :meth:`Structured.half_logdet` (plain autodiff) or :func:`half_logdet`."""
    if isinstance(estimator, Structured):
        return estimator.half_logdet(action, Sigma, args)
    return half_logdet(Sigma, args, action=action, estimator=estimator)


@eqx.filter_jit
def _compiled_half_logdet(Sigma, args, action, estimator):
    """:func:`_correction` as one compiled program: eager callers of the action (``OneLoopAction.correction`` outside
    a solve) would otherwise dispatch the vmapped third derivatives primitive by primitive, compiling each (~30 s).
    Inside a jitted caller (the solvers, ``api``'s stationarity check) it is inlined."""
    return _correction(Sigma, args, action, estimator)


@eqx.filter_jit
def _correction_and_gradient(Sigma, args, action, estimator):
    """(1/2) log det(I + M) and its gradient in Sigma, one compiled program (as :func:`_compiled_half_logdet`)."""
    return jax.value_and_grad(lambda S: _correction(S, args, action, estimator))(Sigma)


class OneLoopAction(EntropicAction):
    """Gamma = S + (1/2) log det(I + M) of a saddle action ``base`` (module docstring): the same entropy, the data
    term D + (1/2) log det(I + M). ``estimator``: :class:`Dense`, :class:`Stochastic` or None (by size,
    :func:`estimator_for`)."""

    base: EntropicAction
    estimator: Dense | Stochastic | Structured | None = None

    def correction(self, Sigma, args):
        """(1/2) log det(I + M(Sigma))."""
        return _compiled_half_logdet(Sigma, args, self.base, estimator_for(self.base, Sigma, args, self.estimator))

    def data_term(self, Sigma, args):
        return self.base.data_term(Sigma, args) + self.correction(Sigma, args)

    def prior(self, args):
        return self.base.prior(args)

    def linearised_data_term(self, Sigma, args):
        """The base's (D, dD/dSigma, Newton model) plus the correction and its gradient; the model (the base's, a
        model of the saddle's Jacobian) is then approximate."""
        value, grads, model = self.base.linearised_data_term(Sigma, args)
        extra, extra_grads = _correction_and_gradient(Sigma, args, self.base,
                                                     estimator_for(self.base, Sigma, args, self.estimator))
        if model is not None:
            model = dataclasses.replace(model, exact=False)
        return value + extra, jax.tree.map(jnp.add, grads, extra_grads), model


def with_loops(action, loops: int):
    """``action`` itself (loops = 0) or its :class:`OneLoopAction` (loops = 1)."""
    if loops == 0:
        return action
    if not isinstance(action, EntropicAction):
        raise ValueError("loops: the one-loop correction needs an action to minimise (forms 'weight' and 'kernel', "
                         f"kernel scaling), not the saddle map {type(action).__name__} (form='conjugate')")
    return OneLoopAction(action)


def check_loops(loops) -> None:
    if isinstance(loops, bool) or loops not in (0, 1):
        raise ValueError(f"loops must be 0 (the saddle) or 1 (one-loop corrections), got {loops!r}")


# --- observables ----------------------------------------------------------------------------------------------
@eqx.filter_jit
def moments(action: OneLoopAction, Sigma, args, fn, linear: bool = False):
    """(E[fn], Var[fn]) over the order parameters' posterior at one loop, for a PyTree-valued ``fn(Sigma)``:

        E[fn] = fn(Sigma_Gamma) + (1/2) tr((I + M)^{-1} Hess_v fn),   Var[fn] = diag(J (I + M)^{-1} J^T),

    J = d fn / dv, in the coordinates v of :func:`chart` (Sigma = ``Sigma``, the minimiser of Gamma). Compiled
    once per ``fn``: pass a ``jax.tree_util.Partial`` of a module-level function for repeated calls.

    ``linear=True`` (the caller's promise that fn is linear in the order parameters, e.g. the kernels X Sigma_l X^T
    of linear nets): E[fn] = fn(E[q]) exactly, with E[q] = Sigma on an affine chart (:func:`affine_chart`; no
    pairs are formed, so a P x P kernel costs one evaluation instead of m second derivatives), and Var None."""
    if linear:
        mean_q = Sigma if affine_chart(action.base, Sigma) else moments(action, Sigma, args, lambda q: q)[0]
        return fn(mean_q), None
    base = action.base
    embed = chart(base, Sigma, args)[0]
    m = coordinate_count(Sigma)
    dtype = jax.tree.leaves(Sigma)[0].dtype
    estimator = estimator_for(base, Sigma, args, action.estimator)
    if isinstance(estimator, Structured):
        W, Z, c = estimator.pairs_at(base, Sigma, args)
    else:
        _, W, Z, c = estimator.pairs(_curvature(base, Sigma, args), m, dtype, logdet=False)
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)

    def along(w, z):
        def first(s):
            return jax.jvp(lambda t: fn(embed(s * w + t * z)), (zero,), (one,))[1]

        dz, second = jax.jvp(first, (zero,), (one,))
        dw = jax.jvp(lambda t: fn(embed(t * w)), (zero,), (one,))[1]
        return second, jax.tree.map(jnp.multiply, dw, dz)

    second, spread = _pair_sum(along, W, Z, 16)
    mean = jax.tree.map(lambda f, h: f + 0.5 * c * h, fn(Sigma), second)
    return mean, jax.tree.map(lambda x: c * x, spread)
