"""The exact large-width measure of each layer, by Monte Carlo (THEORY.md sec. 9; issue 15).

At large width with P/N_l fixed the per-layer saddle is exact with the exact cumulant generating function
(Fischer, Lindner, Dahmen, Ringel, Kraemer & Helias, ICML 2024)

    W_l(Kt | C_l) = N_l log E_{h ~ N(0, C_l)} exp(phi(h)^T Kt phi(h) / N_l),

whose derivative K_l = dW_l/dKt = E_tilted[phi(h) phi(h)^T] averages over the tilted measure
p(h) ∝ N(h; 0, C_l) exp(phi(h)^T Kt phi(h) / N_l). For a two-layer net this is the non-Gaussian single-neuron
density rho(w) ∝ prior(w) exp((c/(2N)) phi(Xw)^T (t t^T - A) phi(Xw)) of THEORY.md sec. 4 (Lauditi, Bordelon &
Pehlevan 2025); the Gaussian ansatz and the Gaussian-equivalent map approximate it (exact for linear phi only).

The two-layer CNN (non-overlapping patches x_s, s = 1..S_p, readout a_cs independent per channel and patch) is the same
with phi(h) phi(h)^T replaced by a channel's patch-averaged kernel k(w) = (1/S_p) sum_s phi(X_s w) phi(X_s w)^T: its
filter measure is p(w) ∝ N(w; 0, s_w2/n I) exp(tr(Kt k(w)) / C) (docs/exact_measure.md). The first layer's factor
stacks one block per patch (:func:`layer_factor`), and q_s averages over patches (:func:`tilt_log_weights`); a fully
connected net is the one-patch case. Its proposals are first adapted at the Gaussian-ansatz saddle's conjugate
(:func:`weight_form_conjugates`: a CNN has no Gaussian-equivalent conjugate map).

Estimator (a sample-average approximation with common random numbers). Write h = B u with C = B B^T and u ~ N(0, I_r):
the first layer uses B = [sqrt(s_w2/d) X, sqrt(s_b2) 1] (u: the neuron's weights and bias at unit prior variance,
any P), deeper layers B = chol(C). The u_s are S fixed points from a defensive mixture proposal
q(u) = alpha N(0, I) + (1 - alpha) sum_k pi_k N(m_k, L_k L_k^T) (:class:`Proposal`; stratified: the first alpha S from
the prior; Hesterberg 1995), so

    W ~ N log (1/S) sum_s w_s exp(q_s / N),   w_s = N(u_s; 0, I) / q(u_s),   q_s = phi(B u_s)^T Kt phi(B u_s)
    K = dW/dKt = sum_s omega_s phi_s phi_s^T,  omega_s ∝ w_s exp(q_s / N)  (self-normalised),  ESS = 1/sum omega_s^2.

The points u_s depend on neither Kt nor C, so W is a deterministic smooth function of (Kt, C) for fixed draws:
the conjugate forward-backward map (``actions.deep.ConjugateMap``), its solvers and implicit differentiation use it
unchanged. The weights w_s are bounded by 1/alpha, so the estimator has finite variance for any proposal. A control
variate (the proposal's zero-mean component, whose kernel is known in closed form) leaves only the tilted measure's
departure from it to Monte Carlo (:meth:`ExactCGF.__call__`).

The proposal is adapted to the tilted measure at an anchor (the Gaussian-equivalent solution's conjugates and
covariances): moment matching to E_tilted[u u^T], restricted to the row space of B where the tilt acts (one Gaussian
or mixtures for a bimodal or skewed measure, :func:`moment_matched_proposal`), along a tempering path t Kt,
t = 1/R, ..., 1 (:func:`adapt_proposal`), then re-adapted at the exact saddle (:func:`exact_cgf`). Where its weights
degenerate (ESS < 5% of S at the adaptation point), the layer's proposal is instead a kernel mixture on draws of
Markov chains (HMC) on the tilted measure (:func:`rescued`, :class:`ParticleProposal`): the chains find the modes, the
importance weights keep the map deterministic and smooth for a key.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._config import brief_jit
from adaptive_kernels.actions.deep import (ConjugateMap, extended_draws, input_covariance, jittered_cholesky,
                                          next_covariance, output_terms, sampled_forward, symmetrize)
from adaptive_kernels.kernels import kernel_matrix
from adaptive_kernels.problem import Problem

DEFENSIVE = 0.1  # alpha, the prior's share of the mixture proposal
ADAPT_ROUNDS = 4  # R, tempering steps of the proposal's adaptation
REFINE = 4  # at most this many re-adaptations of the proposals at the exact measure's own saddle
MCMC_REFINE = 8  # ... and this many where a proposal is adapted by Markov chains (its continuation takes more)
SETTLED = 0.02  # ... stopped once a re-adapted solve moves the conjugates by less than this (relative)
RETREATS = 4  # at most this many halvings of the start towards the prior where its ESS stays low (:func:`retreated`)
ANCHOR_ESS = 0.05  # ESS / S an adapted proposal must keep along the tempering path (adapt_proposal)
ESS_FLOOR = 0.01  # ESS / S below which the estimate is called degenerate (outside the conjugate map's domain)


def layer_factor(problem: Problem, C, layer: int, X):
    """B with h = B u, C = B B^T: the first layer's weight-space factor [sqrt(s_w2/n) X_s, sqrt(s_b2) 1] (its
    columns do not depend on P: test points append rows), deeper layers the Cholesky factor of C. A CNN's first
    layer stacks one block per patch x_s (n = d/S entries; patch-major rows, (S P, n + 1)): h_s = B_s u is the
    filter's pre-activation on patch s; a fully connected net is the one-patch case (n = d)."""
    if layer > 0:
        return jittered_cholesky(C)
    patches = problem.split(X)  # (S, P, n)
    ones = jnp.ones(patches.shape[:2] + (1,), X.dtype)
    blocks = jnp.concatenate([jnp.sqrt(problem.s_w2 / problem.patch_size) * patches, jnp.sqrt(problem.s_b2) * ones],
                             axis=2)
    return blocks.reshape(-1, blocks.shape[2])


def factor_rank(problem: Problem, layer: int) -> int:
    """Columns of :func:`layer_factor` on the training inputs."""
    return problem.patch_size + 1 if layer == 0 else problem.P


def layer_features(problem: Problem, u, B, P: int):
    """phi(h) per patch, (..., S, P), with h = B u (u: (..., r)); deeper layers and fully connected nets: S = 1."""
    phi = problem.activation(u @ B.T)
    return phi.reshape(phi.shape[:-1] + (-1, P))


def feature_kernel(phi):
    """k = (1/S) sum_s phi_s phi_s^T (P x P) of one draw's per-patch features (S, P): the layer's kernel of that
    neuron (a CNN channel: its readout weights a_cs are independent across patches, so patches do not mix)."""
    return jnp.einsum("sp,sq->pq", phi, phi) / phi.shape[0]


COMPONENTS = 3  # Gaussian components of a proposal: the zero-mean reference and a pair
REFERENCE_SHARE = 0.2  # pi_0 of a mixture proposal: the zero-mean component, the control variate's reference


class Proposal(eqx.Module):
    """q(u) = alpha N(0, I) + (1 - alpha) sum_k pi_k N(u; m_k, L_k L_k^T), k = 0, 1, 2, in u-coordinates: the
    defensive prior and a Gaussian mixture whose component 0 has mean zero (the control variate's reference,
    :meth:`ExactCGF.__call__`; pi_0 > 0, so the reference's weights N(u; 0, L_0 L_0^T) / q(u) <= 1/((1 - alpha) pi_0)
    are bounded). One Gaussian: pi = (1, 0, 0). A pair (pi_0 = :data:`REFERENCE_SHARE`): +-m with one covariance
    (the tilted measure of an odd phi is even in u, so where it is bimodal its modes come in pairs: mean-field
    neurons aligned with or against the teacher), or two unrelated components (any phi: ReLU's measure is not even;
    near the edge of its domain it has a heavy tail along a ray)."""

    means: jax.Array  # m_k (K, r); m_0 = 0
    chols: jax.Array  # L_k (K, r, r), lower
    shares: jax.Array  # pi_k (K,), summing to 1

    @classmethod
    def gaussian(cls, chol):
        """One zero-mean Gaussian N(0, L L^T)."""
        r = chol.shape[0]
        return cls(jnp.zeros((COMPONENTS, r), chol.dtype), jnp.broadcast_to(chol, (COMPONENTS, r, r)),
                   jnp.zeros(COMPONENTS, chol.dtype).at[0].set(1.0))

    @classmethod
    def prior(cls, r: int, dtype):
        """N(0, I) (:meth:`gaussian` of the identity), made on the host: no operations to compile."""
        return cls(jnp.asarray(np.zeros((COMPONENTS, r), dtype)),
                   jnp.asarray(np.broadcast_to(np.eye(r, dtype=dtype), (COMPONENTS, r, r))),
                   jnp.asarray(np.eye(1, COMPONENTS, dtype=dtype)[0]))

    @property
    def mixture(self):
        """Whether the proposal is more than one Gaussian (a bimodal or skewed tilted measure)."""
        return jnp.any(self.shares[1:] > 0)

    @property
    def reference(self):
        """L_0: the factor of the zero-mean component N(0, L_0 L_0^T), the control variate's reference."""
        return self.chols[0]

    def padded(self, extra: int):
        """The proposal on r + extra coordinates, the prior on the new ones (zero means, identity factors)."""
        eye = jnp.eye(extra, dtype=self.chols.dtype)
        return Proposal(jnp.pad(self.means, ((0, 0), (0, extra))),
                        jax.vmap(lambda L: jax.scipy.linalg.block_diag(L, eye))(self.chols), self.shares)

    def log_components(self, u):
        """log N(u; m_k, L_k L_k^T), (S, K)."""
        def one(mean, chol):
            v = jax.scipy.linalg.solve_triangular(chol, (u - mean).T, lower=True).T
            return -0.5 * jnp.sum(v**2, axis=1) - jnp.sum(jnp.log(jnp.diagonal(chol)))

        # one triangular solve per component: the batched (vmapped) solve deadlocked in jaxlib's CPU thread pool
        return jnp.stack([one(self.means[k], self.chols[k]) for k in range(COMPONENTS)], axis=1)

    def points(self, z, defensive: float = DEFENSIVE):
        """(u, log w, log v): the proposal's points from standard normal draws z (S, r) -- the first alpha S rows
        from the prior, the others u = m_k + L_k z with component k from a stratified grid over pi (Hesterberg
        1995) -- their log importance weights log w = log N(u; 0, I) - log q(u), bounded by -log alpha, and the
        reference's log v = log N(u; 0, L_0 L_0^T) - log q(u)."""
        S = z.shape[0]
        n_prior = int(round(defensive * S))
        grid = (jnp.arange(S - n_prior, dtype=z.dtype) + 0.5) / (S - n_prior)
        k = jnp.sum(grid[:, None] > jnp.cumsum(self.shares)[None, :-1], axis=1)  # the component of each point
        moved = self.means[:, None, :] + z[n_prior:] @ jnp.swapaxes(self.chols, 1, 2)  # (K, S', r)
        chosen = jax.nn.one_hot(k, COMPONENTS, dtype=z.dtype).T[:, :, None]  # (K, S', 1)
        u = jnp.concatenate([z[:n_prior], jnp.sum(chosen * moved, axis=0)])
        log_prior = -0.5 * jnp.sum(u**2, axis=1)
        components = self.log_components(u)
        log_mix = jax.nn.logsumexp(components, axis=1, b=self.shares)
        log_q = jnp.logaddexp(jnp.log(defensive) + log_prior, jnp.log1p(-defensive) + log_mix)
        return u, log_prior - log_q, components[:, 0] - log_q


class ParticleProposal(eqx.Module):
    """q(u) = alpha N(0, I) + (1 - alpha) [pi_0 N(u; 0, L_0 L_0^T) + (1 - pi_0) (1/M) sum_j N(u; c_j, H H^T)]: the
    defensive prior, the zero-mean reference (the control variate's, as in :class:`Proposal`) and a kernel density
    estimate whose centres c_j are Markov-chain draws from the tilted measure (:func:`mcmc_proposal`; West 1993's
    kernel mixtures as importance densities). Any number of modes at any distance is covered where the chains
    reached it: the proposal of last resort where the moment-matched Gaussian mixtures' weights degenerate. The
    importance weights still correct the chains' share of each mode, so the chains only need to find the modes."""

    reference: jax.Array  # L_0 (r, r), lower
    centers: jax.Array  # c_j (M, r)
    spread: jax.Array  # H (r, r), lower: the kernels' common factor

    @property
    def mixture(self):
        return jnp.asarray(True)

    def padded(self, extra: int):
        """The proposal on r + extra coordinates, the prior on the new ones (:meth:`Proposal.padded`)."""
        eye = jnp.eye(extra, dtype=self.spread.dtype)
        return ParticleProposal(jax.scipy.linalg.block_diag(self.reference, eye),
                                jnp.pad(self.centers, ((0, 0), (0, extra))),
                                jax.scipy.linalg.block_diag(self.spread, eye))

    def points(self, z, defensive: float = DEFENSIVE):
        """(u, log w, log v) as :meth:`Proposal.points`: the first alpha S rows from the prior, the next pi_0 of the
        rest from the reference, the others u = c_j + H z with j cycling over the centres (stratified)."""
        S, M = z.shape[0], self.centers.shape[0]
        n_prior = int(round(defensive * S))
        n_ref = int(round(REFERENCE_SHARE * (S - n_prior)))
        kernel = z[n_prior + n_ref:]
        u = jnp.concatenate([z[:n_prior], z[n_prior:n_prior + n_ref] @ self.reference.T,
                             self.centers[jnp.arange(kernel.shape[0]) % M] + kernel @ self.spread.T])
        log_prior = -0.5 * jnp.sum(u**2, axis=1)

        def whitened(L, a):
            return jax.scipy.linalg.solve_triangular(L, a.T, lower=True).T

        v = whitened(self.reference, u)
        log_ref = -0.5 * jnp.sum(v**2, axis=1) - jnp.sum(jnp.log(jnp.diagonal(self.reference)))
        a, c = whitened(self.spread, u), whitened(self.spread, self.centers)  # |H^-1 (u - c)|^2 as one matmul
        squared = jnp.sum(a**2, axis=1)[:, None] - 2.0 * a @ c.T + jnp.sum(c**2, axis=1)[None, :]
        log_kde = (jax.nn.logsumexp(-0.5 * squared, axis=1) - jnp.log(M)
                   - jnp.sum(jnp.log(jnp.diagonal(self.spread))))
        log_mix = jnp.logaddexp(jnp.log(REFERENCE_SHARE) + log_ref, jnp.log1p(-REFERENCE_SHARE) + log_kde)
        log_q = jnp.logaddexp(jnp.log(defensive) + log_prior, jnp.log1p(-defensive) + log_mix)
        return u, log_prior - log_q, log_ref - log_q


def tilts(problem: Problem, Kt, B, u):
    """q_s = (1/S) sum_patches phi_p^T Kt phi_p with phi_p = phi(B_p u_s) (one patch for a fully connected net:
    q_s = phi(B u_s)^T Kt phi(B u_s))."""
    phi = layer_features(problem, u, B, Kt.shape[0])
    return jnp.mean(jnp.sum((phi @ Kt) * phi, axis=-1), axis=-1)


def tilt_log_weights(problem: Problem, Kt, B, u, log_w, N):
    """log(w_s exp(q_s / N)) (:func:`tilts`): the unnormalised log weights of the tilted measure."""
    return log_w + tilts(problem, Kt, B, u) / N


def reference_kernel(problem: Problem, B, chol, P: int):
    """E[k(u)] for u ~ N(0, L L^T) in closed form (the activation's Gaussian expectation): the patch average of
    K_phi(B_p L L^T B_p^T), the mean of the control variate."""
    F = (B @ chol).reshape(-1, P, chol.shape[1])  # (patches, P, r)
    return jnp.mean(kernel_matrix(problem.activation, jnp.einsum("pai,pbi->pab", F, F)), axis=0)


def _ess(logits):
    return 1.0 / jnp.sum(jax.nn.softmax(logits) ** 2)


class ExactCGF(eqx.Module):
    """The exact layer CGF W_l(Kt | C) by importance sampling with fixed draws (module docstring).

    draws: one (S, r_l) array of standard normals per layer.  proposals: one :class:`Proposal` per layer (in
    u-coordinates).  start: the conjugate kernels at which the proposals were last adapted (the solve's start).
    control: subtract the control variate (:meth:`__call__`).
    """

    draws: tuple
    proposals: tuple
    start: tuple | None = None
    control: bool = eqx.field(static=True, default=True)

    def _terms(self, problem: Problem, Kt, C, layer: int, X):
        """(log(w_s exp(q_s / N)), q_s, log v_s, u, B) of one layer."""
        u, log_w, log_v = self.proposals[layer].points(self.draws[layer])
        B = layer_factor(problem, C, layer, X)
        q = tilts(problem, Kt, B, u)
        return log_w + q / problem.widths[layer], q, log_v, u, B

    def __call__(self, problem: Problem, Kt, C, layer: int, X):
        """W_l(Kt | C) ~ N log (1/S) sum_s w_s exp(q_s / N) - [sum_s v_s q_s - tr(Kt K_ref)] (control variate).

        The bracket has mean ~0 (O(1/S), self-normalised v_s ∝ N(u_s; 0, L_0 L_0^T) / q(u_s)): the same draws
        estimate the reference Gaussian N(0, L_0 L_0^T) of the proposal, whose kernel K_ref = E_ref[k(u)]
        (:func:`reference_kernel`) is known in closed form. So K = dW/dKt = sum_s (omega_s - v_s) k(u_s) + K_ref:
        only the tilted measure's departure from the reference is estimated by Monte Carlo, and the noise of the
        kernel (amplified by the data term when kappa2 is small) falls the closer the two are (ESS near S)."""
        logits, q, log_v, _, B = self._terms(problem, Kt, C, layer, X)
        W = problem.widths[layer] * (jax.nn.logsumexp(logits) - jnp.log(logits.shape[0]))
        if not self.control:
            return W
        K_ref = reference_kernel(problem, B, self.proposals[layer].reference, Kt.shape[0])
        return W - (jnp.sum(jax.nn.softmax(log_v) * q) - jnp.sum(Kt * K_ref))

    def tilted(self, problem: Problem, Kt, C, layer: int, X):
        """(u (S, r), omega (S,), v (S,), B): the points, their self-normalised tilted and reference weights and the
        factor (h = B u)."""
        logits, _, log_v, u, B = self._terms(problem, Kt, C, layer, X)
        return u, jax.nn.softmax(logits), jax.nn.softmax(log_v), B

    def ess(self, problem: Problem, Kt, C, layer: int, X):
        """Effective sample size 1 / sum omega_s^2 of the self-normalised tilted weights."""
        return _ess(self._terms(problem, Kt, C, layer, X)[0])

    def stats(self, problem: Problem, X, conjugates, covariances) -> dict:
        """``ess``: per layer (L,); ``samples``: S; ``mixture``: per layer, whether the proposal is a mixture of
        Gaussians (a bimodal or skewed tilted measure); ``mcmc``: per layer, whether it was adapted by Markov chains
        (:class:`ParticleProposal`: the moment-matched proposals' weights had degenerated)."""
        ess = jnp.stack([self.ess(problem, Kt, C, layer, X)
                         for layer, (Kt, C) in enumerate(zip(conjugates, covariances))])
        mixture = jnp.stack([p.mixture for p in self.proposals])
        mcmc = jnp.asarray([isinstance(p, ParticleProposal) for p in self.proposals])
        return {"ess": ess, "samples": jnp.asarray(self.draws[0].shape[0]), "mixture": mixture, "mcmc": mcmc}

    def margin(self, problem: Problem, X, conjugates, covariances):
        """The conjugate map's domain margin: min_l ESS_l / S - ESS_FLOOR (where the weights degenerate the estimate
        is unreliable) and, for a positively homogeneous phi (ReLU, linear: q(t u) = t^2 q(u), so the tilted measure
        is normalisable only if sup_u q(u) / |u|^2 < N/2), min_l 1 - (2/N_l) sup_u q(u) / |u|^2 (:func:`sphere_sup`,
        climbing from the draws: the draws alone cannot see a tilt beyond the domain, and a solve with them converged
        there: ReLU gamma = 2, P = 80, one key of four). The solvers backtrack from points where it is
        negative, and a solution there has status LEFT_DOMAIN."""
        margins = []
        for layer, (Kt, C) in enumerate(zip(conjugates, covariances)):
            logits, q, _, u, B = self._terms(problem, Kt, C, layer, X)
            margins.append(_ess(logits) / logits.shape[0] - ESS_FLOOR)
            if homogeneous(problem.activation):
                margins.append(1.0 - 2.0 * sphere_sup(problem, Kt, B, u, q) / problem.widths[layer])
        return jnp.min(jnp.stack(margins))

    def extended(self, P: int, P_all: int):
        """The CGF on P_all = P + m points (test points appended with zero conjugate rows): the first layer's factor
        is unchanged; deeper layers get new draw columns (:func:`actions.deep.extended_draws`) on which the tilt
        does not act, so their proposal is the prior there (:meth:`Proposal.padded`)."""
        draws = (self.draws[0],) + tuple(extended_draws(self.draws[layer], P, P_all, layer)
                                         for layer in range(1, len(self.draws)))
        proposals = (self.proposals[0],) + tuple(p.padded(P_all - P) for p in self.proposals[1:])
        return ExactCGF(draws, proposals, control=self.control)


def _finite(A, fallback):
    """A where every entry is finite, else ``fallback`` (LAPACK's eigh may not return on non-finite input)."""
    return jnp.where(jnp.all(jnp.isfinite(A)), A, fallback)


def _floored_cholesky(Sigma, floor):
    evals, evecs = jnp.linalg.eigh(_finite(symmetrize(Sigma), jnp.eye(Sigma.shape[0], dtype=Sigma.dtype)))
    return jnp.linalg.cholesky(symmetrize((evecs * jnp.maximum(evals, floor)) @ evecs.T))


def moment_matched_proposal(problem: Problem, Kt, B, z, proposal: Proposal, N, floor: float = 0.05):
    """(proposal, its ESS on the draws z; 0 where nothing finite was found): the best (largest ESS on z) of four
    moment-matched proposals, from the tilted moments estimated with ``proposal`` and restricted to the row space of
    B (Pi = B^+ B: the tilt does not act elsewhere; a covariance G enters as I + Pi (G - I) Pi). With M = E[u u^T]
    and v the top eigenvector of Pi M Pi (the direction along which a bimodal measure splits, or a skewed one has its
    heavy tail), and the halves u . v >= 0 and < 0:

    - one Gaussian N(0, M);
    - a symmetric pair (odd phi: an even measure): fold u -> sign(u . v) u, m = Pi E[u_folded], +-m with the folded
      covariance;
    - two components fitted to the halves, each with its mass, mean and covariance (any phi);
    - two zero-mean components with the halves' second moments E[u u^T | half] (a measure with a heavy tail along
      one side of v, ReLU's near the edge of its domain: each covers its half, the pair of half-Gaussians).

    The mixtures keep N(0, M) as component 0 with share :data:`REFERENCE_SHARE` (the control variate's reference).
    Eigenvalues floored at ``floor`` (a guard against a degenerate estimate)."""
    u, log_w, _ = proposal.points(z)
    omega = jax.nn.softmax(tilt_log_weights(problem, Kt, B, u, log_w, N))
    Pi = symmetrize(jnp.linalg.pinv(B) @ B)
    eye = jnp.eye(B.shape[1], dtype=B.dtype)

    def factor(G):
        return _floored_cholesky(eye + Pi @ (G - eye) @ Pi, floor)

    def moments(weights):  # (mass, Pi mean, covariance, second moment) of the weighted points
        mass = jnp.sum(weights)
        p = weights / jnp.maximum(mass, jnp.finfo(u.dtype).tiny)
        m, M = Pi @ (p @ u), (u * p[:, None]).T @ u
        return mass, m, M - jnp.outer(m, m), M

    M = moments(omega)[3]
    reference = factor(M)
    v = jnp.linalg.eigh(_finite(symmetrize(Pi @ M @ Pi), eye))[1][:, -1]
    upper = u @ v >= 0
    sign = jnp.where(upper, 1.0, -1.0).astype(u.dtype)
    rest = 1.0 - REFERENCE_SHARE

    def mixture(means, factors, share):  # N(0, M) as component 0, then two components, the first with ``share``
        return Proposal(jnp.stack([jnp.zeros_like(v), *means]), jnp.stack([reference, *factors]),
                        jnp.stack([REFERENCE_SHARE, rest * share, rest * (1.0 - share)]).astype(u.dtype))

    folded = sign[:, None] * u
    m = Pi @ (omega @ folded)
    pair_factor = factor((folded * omega[:, None]).T @ folded - jnp.outer(m, m))
    halves = [moments(jnp.where(upper, omega, 0.0)), moments(jnp.where(upper, 0.0, omega))]
    share = jnp.clip(halves[0][0], 0.05, 0.95)
    candidates = [
        Proposal.gaussian(reference),
        mixture((m, -m), (pair_factor, pair_factor), 0.5),
        mixture((halves[0][1], halves[1][1]), (factor(halves[0][2]), factor(halves[1][2])), share),
        mixture((jnp.zeros_like(v), jnp.zeros_like(v)), (factor(halves[0][3]), factor(halves[1][3])), share),
    ]
    candidates.append(proposal)  # kept where every fit failed (non-finite: a tilt beyond the measure's domain)
    quality = jnp.stack([_ess(tilt_log_weights(problem, Kt, B, *c.points(z)[:2], N)) for c in candidates])
    finite = jnp.stack([jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(c)])) for c in candidates])
    quality = jnp.where(finite & jnp.isfinite(quality), quality, -1.0).at[-1].max(0.0)
    best = jnp.argmax(quality)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves)[best], *candidates), quality[best]


def adapt_proposal(problem: Problem, Kt, C, layer: int, z, start: Proposal | None = None, path=None):
    """(proposal, t): a proposal adapted to the tilted measure of one layer at (t Kt, C) by moment matching
    (:func:`moment_matched_proposal`) along the tempering path t Kt, ``path`` (default t = 1/R, ..., 1, 1), from
    ``start`` (default: the prior), stopped at the last t of the path up to which every adapted proposal keeps an
    ESS of at least ANCHOR_ESS S (where the ESS collapses, t Kt is beyond the tilted measure's domain or beyond
    what the moment-matched mixtures cover: ReLU's tilt grows like |u|^2, and the Gaussian anchor can lie outside
    the exact measure's domain, sup_u q(u)/|u|^2 < N/2; the solve then starts at the last t Kt inside). Each step is
    one call of the compiled :func:`_tempering_step`, whatever the path: the first adaptation (:func:`initial_cgf`)
    and the re-adaptations (:func:`readapted`) share its compilation."""
    if path is None:
        path = [min(k / ADAPT_ROUNDS, 1.0) for k in range(1, ADAPT_ROUNDS + 2)]
    dtype = problem.X.dtype
    proposal = Proposal.prior(factor_rank(problem, layer), dtype) if start is None else start
    carry = (proposal, proposal, np.asarray(path[0], dtype), np.asarray(True))
    for step, t in enumerate(path):
        carry = _tempering_step(problem, Kt, C, layer, z, carry, np.asarray(t, dtype), np.asarray(step == 0))
    return carry[1], carry[2]


@brief_jit
def _tempering_step(problem: Problem, Kt, C, layer: int, z, carry, t, first):
    """One step of :func:`adapt_proposal`'s tempering path: carry (proposal, kept, t_kept, good) -> the proposal
    moment-matched at (t Kt, C), kept (with its t) where it and every earlier one on the path kept an ESS of at
    least ANCHOR_ESS S (``good``), and always at the ``first`` step."""
    proposal, kept, kept_t, good = carry
    B = layer_factor(problem, C, layer, problem.X)
    N = problem.widths[layer]
    proposal, ess = moment_matched_proposal(problem, t * Kt, B, z, proposal, N)
    good = good & (ess >= ANCHOR_ESS * z.shape[0])
    keep = good | first
    kept = jax.tree.map(lambda new, old: jnp.where(keep, new, old), proposal, kept)
    return proposal, kept, jnp.where(keep, t, kept_t), good


CHAINS = 64  # Markov chains of an MCMC-adapted proposal (mcmc_proposal) ...
MCMC_WARMUP = 200  # ... their warm-up transitions (step size tuned by dual averaging)
MCMC_DRAWS = 8  # ... and the draws each contributes as a kernel centre (CHAINS x MCMC_DRAWS centres)
BANDWIDTHS = (2.0, 1.0, 0.5)  # candidate multiples of Silverman's bandwidth (the one with the largest ESS is kept)


def tilted_chains(problem: Problem, Kt, B, N, starts, key, num_warmup: int, num_samples: int, num_leapfrog: int = 8):
    """HMC draws (chains, num_samples, r) from one layer's tilted measure p(u) ∝ N(u; 0, I) exp(tr(Kt k(B u)) / N),
    i.e. the potential U(u) = |u|^2/2 - tr(Kt k(B u)) / N (``sampling.mcmc.metropolis_step``; step size tuned by
    dual averaging during ``num_warmup`` transitions, then frozen), one chain from each row of ``starts``."""
    from adaptive_kernels.sampling.mcmc import metropolis_step, start_chain

    def potential(u):
        return 0.5 * u @ u - jnp.sum(Kt * feature_kernel(layer_features(problem, u, B, Kt.shape[0]))) / N

    value_and_grad = jax.value_and_grad(potential)

    def step(adapt):
        def body(state, k):
            state = metropolis_step(value_and_grad, state, k, num_leapfrog=num_leapfrog, target_accept=0.8,
                                    adapt=adapt, jitter=0.9)[0]
            return state, state.position
        return body

    def chain(u, key):
        k1, k2 = jax.random.split(key)
        state = jax.lax.scan(step(True), start_chain(value_and_grad, u, 0.1), jax.random.split(k1, num_warmup))[0]
        state = eqx.tree_at(lambda s: s.adaptation, state, state.adaptation.freeze())
        return jax.lax.scan(step(False), state, jax.random.split(k2, num_samples))[1]

    return jax.vmap(chain)(starts, jax.random.split(key, starts.shape[0]))


SPHERE_STARTS = 16  # draws with the largest q / |u|^2 from which sphere_sup climbs ...
SPHERE_STEPS = 30  # ... for this many normalised gradient steps


def sphere_sup(problem: Problem, Kt, B, u, q):
    """sup_{|u| = 1} q(u) (q(u) = tr(Kt k(B u))) for a positively homogeneous phi, from below: normalised gradient
    ascent on the sphere (steps of 0.3 down to 0.01 radians) from the SPHERE_STARTS draws with the largest
    q_s / |u_s|^2, the largest value met (not differentiated: a domain check)."""
    u, q = jax.lax.stop_gradient((u, q))
    Kt, B = jax.lax.stop_gradient((Kt, B))
    top = jax.lax.top_k(q / jnp.sum(u**2, axis=1), SPHERE_STARTS)[1]

    def ratio(v):
        return jnp.sum(Kt * feature_kernel(layer_features(problem, v, B, Kt.shape[0]))) / (v @ v)

    value_and_grad = jax.vmap(jax.value_and_grad(ratio))

    def step(carry, eta):
        v, best = carry
        value, g = value_and_grad(v)
        g = g - jnp.sum(g * v, axis=1, keepdims=True) * v  # along the sphere
        v = v + eta * g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), jnp.finfo(v.dtype).tiny)
        return (v / jnp.linalg.norm(v, axis=1, keepdims=True), jnp.maximum(best, jnp.max(value))), None

    v = u[top] / jnp.linalg.norm(u[top], axis=1, keepdims=True)
    etas = jnp.geomspace(0.3, 0.01, SPHERE_STEPS).astype(v.dtype)
    v, best = jax.lax.scan(step, (v, jnp.max(jax.vmap(ratio)(v))), etas)[0]
    return jnp.maximum(best, jnp.max(jax.vmap(ratio)(v)))


def _probed(activation, scale: float):
    """(phi(x), phi(scale x)) on a grid of 13 points in [-3, 3], as numpy arrays (the grid and the comparison on the
    host: only phi is compiled)."""
    with jax.ensure_compile_time_eval():
        x = np.linspace(-3.0, 3.0, 13)
        return np.asarray(activation(x)), np.asarray(activation(scale * x))


def homogeneous(activation) -> bool:
    """Whether phi(t x) = t phi(x) for t > 0 (ReLU, linear): then q(t u) = t^2 q(u)."""
    phi, phi2 = _probed(activation, 2.0)
    return bool(np.allclose(phi2, 2.0 * phi))


def odd(activation) -> bool:
    """Whether phi(-x) = -phi(x) (then every layer's tilted measure is even in u: tr(Kt k(-B u)) = tr(Kt k(B u)))."""
    phi, mirrored = _probed(activation, -1.0)
    return bool(np.allclose(mirrored, -phi))


def mcmc_proposal(problem: Problem, Kt, B, z, proposal, N, key) -> ParticleProposal:
    """A :class:`ParticleProposal` for the tilted measure at Kt from Markov chains (:func:`tilted_chains`): CHAINS
    chains, half started from points resampled by the current importance weights, half from the current proposal's
    own points (every component of it), MCMC_DRAWS draws each after MCMC_WARMUP warm-up transitions. The draws,
    projected on the row space of B (Pi = B^+ B; the tilt does not act elsewhere, where the kernels are the prior),
    and for an odd phi also their mirror images -u (the measure is even; a chain stays in the mode it started in),
    are the centres. The kernels' covariance is h^2 times the chains' pooled within-chain covariance (the spread of
    a mode, not the distance between modes), h a multiple (:data:`BANDWIDTHS`, the largest ESS on the draws z) of
    Silverman's rule (4 / (M (r + 2)))^(1/(r + 4)), r = rank Pi; the reference is N(0, E[u u^T])."""
    u, log_w, _ = proposal.points(z)
    logits = tilt_log_weights(problem, Kt, B, u, log_w, N)
    k_resample, k_spread, k_chains = jax.random.split(key, 3)
    half = CHAINS // 2
    starts = jnp.concatenate([u[jax.random.categorical(k_resample, logits, shape=(half,))],
                              u[jax.random.choice(k_spread, u.shape[0], (CHAINS - half,), replace=False)]])
    Pi = symmetrize(jnp.linalg.pinv(B) @ B)
    draws = tilted_chains(problem, Kt, B, N, starts, k_chains, MCMC_WARMUP, MCMC_DRAWS) @ Pi  # (chains, draws, r)
    centered = draws - jnp.mean(draws, axis=1, keepdims=True)
    within = jnp.einsum("cni,cnj->ij", centered, centered) / (CHAINS * (MCMC_DRAWS - 1))
    centers = draws.reshape(-1, B.shape[1])
    if odd(problem.activation):
        centers = jnp.concatenate([centers, -centers])
    M = centers.shape[0]
    rank = jnp.trace(Pi)
    silverman = (4.0 / (M * (rank + 2.0))) ** (1.0 / (rank + 4.0))
    eye = jnp.eye(B.shape[1], dtype=B.dtype)

    def factor(G, floor):
        return _floored_cholesky(eye + Pi @ (G - eye) @ Pi, floor)

    reference = factor(centers.T @ centers / M, 0.05)
    candidates = [ParticleProposal(reference, centers, factor((c * silverman) ** 2 * within, 1e-4)) for c in BANDWIDTHS]
    quality = jnp.stack([_ess(tilt_log_weights(problem, Kt, B, *c.points(z)[:2], N)) for c in candidates])
    quality = jnp.where(jnp.isfinite(quality), quality, -1.0)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves)[jnp.argmax(quality)], *candidates)


def _finite_or_prior(conjugates):
    """The conjugates where all are finite, else Kt = 0 (the prior): a failed Gaussian anchor."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(Kt)) for Kt in conjugates]))
    return tuple(jnp.where(ok, Kt, 0.0) for Kt in conjugates)


def weight_form_conjugates(problem: Problem, Sigma) -> tuple:
    """(Kt,), Kt = -dD/dK at K = K_Sigma / c, the two-layer kernel of a Gaussian-ansatz weight (filter) covariance
    Sigma (THEORY.md sec. 4): the conjugate of a two-layer net's Gaussian-ansatz saddle, the CNN's anchor."""
    return (output_terms(problem.two_layer_kernel(Sigma).nngp / problem.readout_scale, problem)[1],)


@brief_jit(options={"xla_cpu_use_fusion_emitters": False})
def gaussian_anchor(problem: Problem):
    """The conjugates of the Gaussian-equivalent saddle (the conjugate map, FixedPoint; a CNN, which has no such
    form, the Gaussian-ansatz filter covariance's, :func:`weight_form_conjugates`), where the proposals are first
    adapted; where that solve fails (non-finite), Kt = 0: the prior. Compiled on CPU with XLA's elemental emitters
    (``_config.brief_jit``; erf, d = 50, P = 200: 1.4 instead of 2.3-3.4 s CPU, its run 0.44 s unchanged; LLVM level 0
    as well would compile in 0.9 s but run 2.5x longer), so it is a program of its own: a user's Gaussian
    ``solve(..., Adaptive(form="conjugate"))`` in the same process compiles apart from it."""
    from adaptive_kernels.actions.adaptive import TwoLayerAdaptiveAction, resolve_space
    from adaptive_kernels.solvers import FixedPoint, Newton, stationary_point

    if problem.patches > 1:
        action = TwoLayerAdaptiveAction(resolve_space("auto", problem))
        Sigma = stationary_point(action, Newton(), problem.prior_covariance(), problem, implicit=False).value
        return jax.lax.stop_gradient(_finite_or_prior(weight_form_conjugates(problem, Sigma)))
    zeros = tuple(jnp.zeros((problem.P, problem.P), problem.X.dtype) for _ in range(problem.depth))
    sol = stationary_point(ConjugateMap(), FixedPoint(), zeros, problem, implicit=False)
    return jax.lax.stop_gradient(_finite_or_prior(sol.value))


@eqx.filter_jit
def _draws(problem: Problem, samples: int, key):
    """(estimation draws, adaptation draws): per layer (S, r_l) standard normals from fold_in(key, layer) and
    fold_in(key, depth + layer)."""
    def normal(index, layer):
        return jax.random.normal(jax.random.fold_in(key, index), (samples, factor_rank(problem, layer)), problem.X.dtype)

    return (tuple(normal(layer, layer) for layer in range(problem.depth)),
            tuple(normal(problem.depth + layer, layer) for layer in range(problem.depth)))


@brief_jit
def _anchor_covariances(problem: Problem, anchor):
    """(anchor, C_l): the anchor's conjugates (the prior where not finite) and the Gaussian-equivalent forward pass's
    layer covariances there."""
    anchor = _finite_or_prior(anchor)
    kernels = ConjugateMap().kernels(problem, problem.X, anchor)[0]
    return anchor, [input_covariance(problem, problem.X)] + [next_covariance(problem, K) for K in kernels[:-1]]


def initial_cgf(problem: Problem, samples: int, key, anchor) -> ExactCGF:
    """``samples`` draws per layer from ``key``, proposals adapted to the tilted measures at the Gaussian anchor's
    conjugates ``anchor`` (tempered from the prior; :func:`adapt_proposal`); the start is t_l Kt_l, each layer's
    anchor tempered to where its adapted proposal's ESS held (t_l = 1 unless the anchor lies beyond the domain)."""
    draws, adapt_draws = _draws(problem, samples, key)
    anchor, covariances = _anchor_covariances(problem, anchor)
    adapted = [adapt_proposal(problem, anchor[layer], covariances[layer], layer, adapt_draws[layer])
               for layer in range(problem.depth)]
    start = tuple(t * Kt for Kt, (_, t) in zip(anchor, adapted))
    return jax.lax.stop_gradient(ExactCGF(draws, tuple(p for p, _ in adapted), start))


def _mcmc_key(problem: Problem, key, layer: int):
    """The key of a layer's Markov chains (:func:`mcmc_proposal`): distinct from the draws' (:func:`_draws`)."""
    return jax.random.fold_in(key, 2 * problem.depth + layer)


@eqx.filter_jit
def _saddle_covariances(problem: Problem, cgf: ExactCGF, conjugates):
    """The layer covariances C_l of the sampled forward pass at ``conjugates``."""
    return sampled_forward(problem, problem.X, conjugates, cgf)[2]


@eqx.filter_jit
def _mcmc_adapted(problem: Problem, Kt, C, layer: int, z, proposal, key) -> ParticleProposal:
    """:func:`mcmc_proposal` for one layer at (Kt, C)."""
    B = layer_factor(problem, C, layer, problem.X)
    return mcmc_proposal(problem, Kt, B, z, proposal, problem.widths[layer], key)


def readapted(problem: Problem, cgf: ExactCGF, key, conjugates, mcmc: tuple = ()) -> ExactCGF:
    """The same draws with the proposals re-adapted at the exact measure's saddle ``conjugates`` (``key``: the one the
    draws came from): two moment-matching rounds from the current proposals (:func:`adapt_proposal`), or, for the
    layers in ``mcmc`` and those whose proposal already is one, a new MCMC-adapted :class:`ParticleProposal`
    (:func:`mcmc_proposal`, chains started from the current proposal)."""
    adapt_draws = _draws(problem, cgf.draws[0].shape[0], key)[1]
    covariances = _saddle_covariances(problem, cgf, conjugates)

    def adapted(layer):
        current = cgf.proposals[layer]
        if layer in mcmc or isinstance(current, ParticleProposal):
            return _mcmc_adapted(problem, conjugates[layer], covariances[layer], layer, adapt_draws[layer], current,
                                 _mcmc_key(problem, key, layer))
        return adapt_proposal(problem, conjugates[layer], covariances[layer], layer, adapt_draws[layer], current,
                              (1.0, 1.0))[0]

    proposals = tuple(adapted(layer) for layer in range(problem.depth))
    return jax.lax.stop_gradient(ExactCGF(cgf.draws, proposals, jax.lax.stop_gradient(conjugates), cgf.control))


@brief_jit
def start_ess(problem: Problem, cgf: ExactCGF):
    """Per layer, the ESS of the importance weights at the proposals' adaptation point ``cgf.start``."""
    covariances = sampled_forward(problem, problem.X, cgf.start, cgf)[2]
    return cgf.stats(problem, problem.X, cgf.start, covariances)["ess"]


def rescued(problem: Problem, cgf: ExactCGF, key) -> ExactCGF:
    """``cgf`` with an MCMC-adapted proposal (:func:`readapted` with ``mcmc``) for every layer whose importance weights
    at its adaptation point have degenerated below ANCHOR_ESS S (where moment-matched Gaussian mixtures no longer
    cover the tilted measure: a mean-field measure with far modes, ReLU's near the edge of its domain); unchanged
    where none has, where the chains' proposal has a lower ESS at that point than the one it would replace, or where
    traced (the ESS is not known then)."""
    ess = _concrete_start_ess(problem, cgf)
    mcmc = () if ess is None else tuple(layer for layer, e in enumerate(ess) if e < ANCHOR_ESS * cgf.draws[0].shape[0])
    if not mcmc:
        return cgf
    candidate = readapted(problem, cgf, key, cgf.start, mcmc)
    # A layer keeps its proposal where the chains' one covers the tilted measure worse (a lower or non-finite ESS at
    # the same point): chains on a ReLU tilt at a start beyond its domain run off to where the measure is improper
    # (d = 20, P = 80, gamma = 1.5, S = 2e4: ESS 381 -> 1, and the solve ended NONFINITE on 4 of 5 keys).
    improved = [n > e for e, n in zip(ess, (float(n) for n in start_ess(problem, candidate)))]
    proposals = tuple(new if better else old for old, new, better in zip(cgf.proposals, candidate.proposals, improved))
    return ExactCGF(cgf.draws, proposals, cgf.start, cgf.control)


def retreated(problem: Problem, cgf: ExactCGF, key, tries: int = RETREATS) -> ExactCGF:
    """``cgf`` with its start moved halfway to the prior (every layer's Kt halved) and the proposals re-adapted there
    (:func:`readapted`), up to ``tries`` times, while a layer's ESS at the start stays below ANCHOR_ESS S after
    :func:`rescued`: the solve's first point must lie inside the domain (ESS above ESS_FLOOR S), and the re-adaptation
    rounds of :func:`exact_cgf` follow the saddle from there. (ReLU, d = 20, P = 80, gamma = 1.5, S = 2e4: the
    tempered anchor kept an ESS of 0.1-2.6% on 4 of 5 keys, and every solve from it left the domain at once.)
    Unchanged where traced."""
    for _ in range(tries):
        ess = _concrete_start_ess(problem, cgf)
        if ess is None or min(ess) >= ANCHOR_ESS * cgf.draws[0].shape[0]:
            break
        cgf = readapted(problem, cgf, key, tuple(0.5 * Kt for Kt in cgf.start))
    return cgf


def _concrete_start_ess(problem: Problem, cgf: ExactCGF) -> list[float] | None:
    """:func:`start_ess` as floats, None where traced (the ESS is not known then)."""
    try:
        return np.asarray(start_ess(problem, cgf)).tolist()
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


@eqx.filter_jit
def sampled_saddle(problem: Problem, cgf: ExactCGF, init):
    """The solution (conjugates, status) at the saddle of the exact measure with the fixed draws and proposals of
    ``cgf``."""
    from adaptive_kernels.solvers import stationary_point

    return stationary_point(ConjugateMap(cgf), default_solver(), init, problem, implicit=False)


def default_solver():
    """FixedPoint with damping 1/2: the sampled map's residual, the merit its steps must lower, is rough at the
    round-off level, so the undamped Anderson iteration stalled in its line search (deep linear net, gamma = 2: 2 of
    4 keys; damped: all 4 converged in 13-16 evaluations)."""
    from adaptive_kernels.solvers import FixedPoint

    return FixedPoint(damping=0.5)


def exact_cgf(problem: Problem, samples: int, key, solve=None, anchor=None) -> ExactCGF:
    """The exact-measure CGF of every layer: ``samples`` draws per layer from the PRNG ``key``; proposals adapted
    first at the Gaussian anchor (:func:`initial_cgf`), then up to ``REFINE`` times at the exact measure's own saddle
    (:func:`readapted`): the solve with the current proposals from the last adaptation point (where it leaves the
    domain, its last point inside: a continuation), until a round's solve converged and moved the saddle by less
    than ``SETTLED`` (ReLU, gamma = 2, P = 80: one round ended outside the domain; four reached the saddle for one key
    of two). Where a layer's importance weights at its adaptation point degenerate (ESS < ANCHOR_ESS S), its proposal
    is adapted by Markov chains instead (:func:`rescued`), and the rounds go on up to ``MCMC_REFINE``; where the first
    adaptation point's ESS stays low even so, the start retreats towards the prior (:func:`retreated`).

    ``solve(cgf, init)``: the conjugates of the Gaussian-equivalent saddle (cgf None) or the solution (``value``,
    ``converged``) of the sampled one. None: inline solves (jittable); ``Adaptive.prepared`` passes compiled solves
    instead, outside jit: :func:`gaussian_anchor` (its own program, compiled for a short run: ``_config.brief_jit``)
    and the library's solve, whose compilation the final solve reuses. ``anchor``: the conjugates at which the
    proposals are first adapted instead of the Gaussian anchor's (e.g. another order parameter's saddle, to follow
    the exact measure's saddle near it)."""
    if solve is None:
        def solve(cgf, init):
            return gaussian_anchor(problem) if cgf is None else sampled_saddle(problem, cgf, init)

    anchor = solve(None, None) if anchor is None else tuple(anchor)
    cgf = retreated(problem, rescued(problem, initial_cgf(problem, samples, key, anchor), key), key)
    for round_ in range(MCMC_REFINE):
        if round_ >= REFINE and not any(isinstance(p, ParticleProposal) for p in cgf.proposals):
            break
        previous = cgf.start
        solution = solve(cgf, cgf.start)
        cgf = rescued(problem, readapted(problem, cgf, key, solution.value), key)
        if round_ > 0 and _settled(previous, cgf.start) and _concrete(solution.converged):
            break
    return cgf


def _concrete(flag) -> bool:
    """bool(flag), False where traced."""
    try:
        return bool(flag)
    except jax.errors.ConcretizationTypeError:
        return False


def _settled(previous, current) -> bool:
    """|current - previous| < SETTLED |current| over all layers' conjugates (False where traced: all rounds run; on
    the host otherwise, with no operations to compile)."""
    try:
        previous, current = [np.asarray(a) for a in previous], [np.asarray(b) for b in current]
    except jax.errors.TracerArrayConversionError:
        return False
    change = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(previous, current)))
    return bool(change < SETTLED * np.sqrt(sum(np.sum(b**2) for b in current)))


def tilted_measures(cgf: ExactCGF, problem: Problem, conjugates) -> list:
    """Per layer (u, omega, v, B) of the tilted measures at the conjugates ``conjugates`` on the training inputs:
    E_tilted[f(h)] ~ sum_s omega_s f(B u_s) (v: the weights of the proposal's reference Gaussian); for the first
    layer u = (w sqrt(d/s_w2), b/sqrt(s_b2)), the neuron's
    weights and bias (the single-neuron density of a two-layer net)."""
    covariances = sampled_forward(problem, problem.X, conjugates, cgf)[2]
    return [cgf.tilted(problem, Kt, C, layer, problem.X) for layer, (Kt, C) in enumerate(zip(conjugates, covariances))]


@eqx.filter_jit
def first_layer_covariance(cgf: ExactCGF, problem: Problem, conjugates):
    """Sigma = E_tilted[w w^T] (n x n; n = d for a fully connected net, the filter size for a CNN) of the first
    layer's weights under the exact measure; with the control variate (as the kernel, :meth:`ExactCGF.__call__`)
    sum_s (omega_s - v_s) u_s u_s^T + L_0 L_0^T, the reference Gaussian's covariance known exactly."""
    u, omega, v, _ = tilted_measures(cgf, problem, conjugates[:1])[0]
    second = (u * omega[:, None]).T @ u
    if cgf.control:
        L = cgf.proposals[0].reference
        second = second - (u * v[:, None]).T @ u + L @ L.T
    n = problem.patch_size
    return (problem.s_w2 / n) * second[:n, :n]


# --- user-level helpers (``ak.exact_error_bars``, ``ak.exact_measure``) -------------------------------------------
def _check_exact(solution):
    theory = getattr(solution, "theory", None)
    if getattr(theory, "measure", None) != "exact":
        raise ValueError("solution: needs a solve with Adaptive(form='conjugate', measure='exact')")


def exact_measure(solution, arch, data, kappa2) -> list:
    """The sampled tilted measure of every layer at an exact-measure solution (THEORY.md sec. 9): per layer a dict
    with ``preactivations`` h_s (S, P) on the training inputs (a CNN: (S, patches, P), the filter on each patch),
    ``weights`` omega_s (S,; self-normalised, summing to 1) and ``ess``; for the first layer also ``w`` (S, d), the
    neuron's input weights (the single-neuron density of a two-layer net; a CNN: (S, n), the filter), e.g.
    ``np.histogram(w @ w_star, weights=omega)`` for the overlap with the teacher."""
    from adaptive_kernels.problem import make_problem

    _check_exact(solution)
    problem = make_problem(arch, data, kappa2)
    solution.theory.check(problem)
    solution.theory.check_value(solution.value, problem, "solution")
    out = []
    for layer, (u, omega, _, B) in enumerate(tilted_measures(solution.theory._cgf(problem), problem, solution.value)):
        h = u @ B.T
        if layer == 0 and problem.patches > 1:
            h = h.reshape(h.shape[0], problem.patches, problem.P)
        entry = {"preactivations": h, "weights": omega, "ess": 1.0 / jnp.sum(omega**2)}
        if layer == 0:
            entry["w"] = jnp.sqrt(problem.s_w2 / problem.patch_size) * u[:, : problem.patch_size]
        out.append(entry)
    return out


def _mean_and_se(values):
    """(mean, standard error over seeds) of a list of equal-shaped numbers / lists (None stays None)."""
    import numpy as np

    if any(v is None for v in values):
        return None
    a = np.asarray(values, dtype=float)
    return a.mean(axis=0).tolist(), (a.std(axis=0, ddof=1) / np.sqrt(len(values))).tolist()


def exact_error_bars(arch, data, kappa2, *, seeds: int = 4, samples: int = 20000, target: float | None = None,
                     observable: str = "learnability", max_samples: int = 1_000_000, solver=None) -> dict:
    """Monte Carlo error bars of the exact measure's observables from independent keys.

    Solves ``Adaptive(form="conjugate", measure="exact", samples=S, seed=jnp.asarray(k))`` for k = 0..seeds-1 (one
    compilation per S) and returns, for
    every numeric observable of ``summarize`` (learnability, test_mse, per-layer ratios, ...), (mean over seeds,
    standard error of that mean), plus ``samples`` (S per seed), ``ess`` (per layer, the smallest over seeds) and
    ``converged`` (all seeds). With ``target``: S is raised to ~S (se / target)^2 (the error of a sample average
    falls as 1/sqrt(S)) until the standard error of ``observable`` is at most ``target``, or warns at
    ``max_samples``. Warns where the importance weights degenerate (ESS < 1% of S) or a solve did not converge.
    """
    import math
    import warnings

    import numpy as np

    from adaptive_kernels.api import solve, summarize
    from adaptive_kernels.theories import Adaptive

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds must be an integer >= 2 (a standard error needs two keys), got {seeds!r}")
    if target is not None and not target > 0:
        raise ValueError(f"target must be a positive standard error, got {target!r}")
    while True:
        summaries, ess = [], []
        for seed in range(seeds):
            theory = Adaptive(form="conjugate", measure="exact", samples=samples, seed=jnp.asarray(seed))
            sol = solve(arch, data, kappa2, theory, solver)  # an array seed: the keys share one compilation
            summaries.append(summarize(sol, arch, data, kappa2))
            ess.append(np.asarray(sol.stats["ess"]))
        out = {key: _mean_and_se([s[key] for s in summaries]) for key, value in summaries[0].items()
               if isinstance(value, (float, list)) and key not in ("status",)}
        out.update(samples=samples, ess=np.min(ess, axis=0).tolist(), converged=all(s["converged"] for s in summaries))
        if observable not in out or out[observable] is None:
            raise ValueError(f"observable: {observable!r} is not among the observables {', '.join(out)}")
        se = float(np.max(out[observable][1]))
        if target is None or se <= target:
            break
        if samples >= max_samples:
            warnings.warn(f"exact_error_bars: standard error {se:.2g} of {observable} above target {target:.2g} at "
                          f"max_samples = {max_samples}", stacklevel=2)
            break
        samples = min(max_samples, math.ceil(1.2 * samples * (se / target) ** 2))
    if min(out["ess"]) < ESS_FLOOR * samples:
        warnings.warn(f"exact measure: importance weights degenerate (ESS {min(out['ess']):.0f} of {samples} samples);"
                      " the estimates are unreliable -- more samples or a better proposal are needed", stacklevel=2)
    if not out["converged"]:
        warnings.warn("exact measure: a solve did not converge (see the status of the solutions)", stacklevel=2)
    return out


@eqx.filter_jit
def hmc_tilted_kernels(cgf: ExactCGF, problem: Problem, conjugates, key, num_chains: int, num_samples: int,
                       num_warmup: int, num_leapfrog: int = 8):
    """Markov-chain estimates of K_l = E_tilted[k(u)] (independent of the importance weights): per layer HMC
    (:func:`tilted_chains`; B at the covariances of the importance-sampled forward pass), ``num_chains`` chains
    started at the proposal's points. Returns per layer (mean, standard error from the spread of the chain means)."""
    covariances = sampled_forward(problem, problem.X, conjugates, cgf)[2]
    out = []
    for layer, (Kt, C) in enumerate(zip(conjugates, covariances)):
        B = layer_factor(problem, C, layer, problem.X)
        u0 = cgf.proposals[layer].points(cgf.draws[layer])[0][-num_chains:]
        draws = tilted_chains(problem, Kt, B, problem.widths[layer], u0, jax.random.fold_in(key, layer), num_warmup,
                              num_samples, num_leapfrog)
        phi = layer_features(problem, draws, B, problem.P)  # (chains, samples, patches, P)
        means = jnp.einsum("cnsp,cnsq->cpq", phi, phi) / (phi.shape[1] * phi.shape[2])
        out.append((jnp.mean(means, axis=0), jnp.std(means, axis=0, ddof=1) / jnp.sqrt(num_chains)))
    return out


def exact_hmc_check(solution, arch, data, kappa2, *, key: int = 0, num_chains: int = 8, num_samples: int = 400,
                    num_warmup: int = 200) -> list:
    """The importance-sampling estimate of each layer's K_l = E_tilted[phi phi^T] at an exact-measure solution
    against a Markov-chain (HMC) estimate of the same average (:func:`hmc_tilted_kernels`): a check independent of
    the importance weights, for where the ESS is low. Per layer a dict with ``kernel`` (importance sampling),
    ``kernel_hmc``, ``se_hmc`` (its standard error over chains) and ``max_z`` = max |kernel - kernel_hmc| / se_hmc.

    ``max_z`` is a maximum over P(P+1)/2 entries of a t-like statistic with num_chains - 1 degrees of freedom, so it is
    large by chance with few chains (ReLU, P = 80, 8 chains x 400 draws: 6.9 where 16 x 2000 gave 4.6-5.0, both
    consistent with importance sampling); compare the Frobenius distance |kernel - kernel_hmc| with |se_hmc| too."""
    from adaptive_kernels.problem import make_problem

    _check_exact(solution)
    problem = make_problem(arch, data, kappa2)
    solution.theory.check(problem)
    cgf = solution.theory._cgf(problem)
    kernels = sampled_forward(problem, problem.X, solution.value, cgf)[0]
    hmc = hmc_tilted_kernels(cgf, problem, solution.value, jax.random.PRNGKey(key), num_chains, num_samples,
                             num_warmup)
    return [{"kernel": K, "kernel_hmc": m, "se_hmc": se,
             "max_z": jnp.max(jnp.abs(K - m) / jnp.maximum(se, jnp.finfo(se.dtype).tiny))}
            for K, (m, se) in zip(kernels, hmc)]
