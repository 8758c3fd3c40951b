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
q(u) = alpha N(0, I) + (1 - alpha) N(0, Sigma_q) (stratified: the first alpha S from the prior, the rest
u = z L_q^T, Sigma_q = L_q L_q^T; Hesterberg 1995), so

    W ~ N log (1/S) sum_s w_s exp(q_s / N),   w_s = N(u_s; 0, I) / q(u_s),   q_s = phi(B u_s)^T Kt phi(B u_s)
    K = dW/dKt = sum_s omega_s phi_s phi_s^T,  omega_s ∝ w_s exp(q_s / N)  (self-normalised),  ESS = 1/sum omega_s^2.

The points u_s depend on neither Kt nor C, so W is a deterministic smooth function of (Kt, C) for fixed draws:
the conjugate forward-backward map (``actions.deep.ConjugateMap``), its solvers and implicit differentiation use it
unchanged. The weights w_s are bounded by 1/alpha, so the estimator has finite variance for any Sigma_q.

Sigma_q is adapted to the tilted measure at an anchor (the Gaussian-equivalent solution's conjugates and
covariances): moment matching Sigma_q <- E_tilted[u u^T] (restricted to the row space of B, where the tilt acts)
along a tempering path t Kt, t = 1/R, ..., 1 (:func:`adapt_proposal`). The mean-field measure can be bimodal along
the teacher; its moment-matched Gaussian is wide along that direction and covers both modes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.actions.deep import (ConjugateMap, extended_draws, input_covariance, jittered_cholesky,
                                          next_covariance, output_terms, sampled_forward, symmetrize)
from adaptive_kernels.problem import Problem

DEFENSIVE = 0.1  # alpha, the prior's share of the mixture proposal
ADAPT_ROUNDS = 4  # R, tempering steps of the proposal's adaptation
REFINE = 1  # re-adaptations of the proposals at the exact measure's own saddle
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


class Proposal(eqx.Module):
    """q(u) = alpha N(0, I) + (1 - alpha) [N(u; m, L L^T) + N(u; -m, L L^T)] / 2 in u-coordinates: the defensive
    prior and a symmetric pair of Gaussians (m = 0: one Gaussian). The tilted measure of an odd phi is even in u
    (q_s is even), so where it is bimodal its modes come in pairs +-m (mean-field neurons aligned with or against
    the teacher)."""

    mean: jax.Array  # m (r,)
    chol: jax.Array  # L (r, r), lower

    @classmethod
    def prior(cls, r: int, dtype):
        return cls(jnp.zeros(r, dtype), jnp.eye(r, dtype=dtype))

    def points(self, z, defensive: float = DEFENSIVE):
        """(u, log w): the proposal's points from standard normal draws z (S, r) -- the first alpha S rows from the
        prior, then half u = m + z L^T and half u = -m + z L^T (stratified; Hesterberg 1995) -- and their log
        importance weights log N(u; 0, I) - log q(u), bounded by -log alpha."""
        S = z.shape[0]
        n_prior = int(round(defensive * S))
        sign = jnp.where(jnp.arange(S - n_prior) < (S - n_prior) // 2, 1.0, -1.0).astype(z.dtype)
        u = jnp.concatenate([z[:n_prior], sign[:, None] * self.mean + z[n_prior:] @ self.chol.T])
        log_prior = -0.5 * jnp.sum(u**2, axis=1)
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.chol)))

        def log_gauss(mean):
            v = jax.scipy.linalg.solve_triangular(self.chol, (u - mean).T, lower=True).T
            return -0.5 * jnp.sum(v**2, axis=1) - log_det

        log_pair = jnp.logaddexp(log_gauss(self.mean), log_gauss(-self.mean)) - jnp.log(2.0)
        log_mix = jnp.logaddexp(jnp.log(defensive) + log_prior, jnp.log1p(-defensive) + log_pair)
        return u, log_prior - log_mix


def tilt_log_weights(problem: Problem, Kt, B, u, log_w, N):
    """log(w_s exp(q_s / N)), q_s = (1/S) sum_patches phi_p^T Kt phi_p with phi_p = phi(B_p u_s) (one patch for a
    fully connected net: q_s = phi(B u_s)^T Kt phi(B u_s)): the unnormalised log weights of the tilted measure."""
    phi = layer_features(problem, u, B, Kt.shape[0])
    return log_w + jnp.mean(jnp.sum((phi @ Kt) * phi, axis=-1), axis=-1) / N


def _ess(logits):
    return 1.0 / jnp.sum(jax.nn.softmax(logits) ** 2)


class ExactCGF(eqx.Module):
    """The exact layer CGF W_l(Kt | C) by importance sampling with fixed draws (module docstring).

    draws: one (S, r_l) array of standard normals per layer.  proposals: one :class:`Proposal` per layer (in
    u-coordinates).  start: the conjugate kernels at which the proposals were last adapted (the solve's start).
    """

    draws: tuple
    proposals: tuple
    start: tuple | None = None

    def _log_weights(self, problem: Problem, Kt, C, layer: int, X):
        """(log(w_s exp(q_s / N)), u, B) of one layer."""
        u, log_w = self.proposals[layer].points(self.draws[layer])
        B = layer_factor(problem, C, layer, X)
        return tilt_log_weights(problem, Kt, B, u, log_w, problem.widths[layer]), u, B

    def __call__(self, problem: Problem, Kt, C, layer: int, X):
        """W_l(Kt | C) ~ N log (1/S) sum_s w_s exp(q_s / N)."""
        logits = self._log_weights(problem, Kt, C, layer, X)[0]
        return problem.widths[layer] * (jax.nn.logsumexp(logits) - jnp.log(logits.shape[0]))

    def tilted(self, problem: Problem, Kt, C, layer: int, X):
        """(u (S, r), omega (S,), B): the points, their self-normalised tilted weights and the factor (h = B u)."""
        logits, u, B = self._log_weights(problem, Kt, C, layer, X)
        return u, jax.nn.softmax(logits), B

    def ess(self, problem: Problem, Kt, C, layer: int, X):
        """Effective sample size 1 / sum omega_s^2 of the self-normalised tilted weights."""
        return _ess(self._log_weights(problem, Kt, C, layer, X)[0])

    def stats(self, problem: Problem, X, conjugates, covariances) -> dict:
        """``ess``: per layer (L,); ``samples``: S; ``mixture``: per layer, whether the proposal is a pair of
        Gaussians (m != 0: a bimodal tilted measure)."""
        ess = jnp.stack([self.ess(problem, Kt, C, layer, X)
                         for layer, (Kt, C) in enumerate(zip(conjugates, covariances))])
        mixture = jnp.stack([jnp.any(p.mean != 0) for p in self.proposals])
        return {"ess": ess, "samples": jnp.asarray(self.draws[0].shape[0]), "mixture": mixture}

    def margin(self, problem: Problem, X, conjugates, covariances):
        """min_l ESS_l / S - ESS_FLOOR: the conjugate map's domain margin. Where the weights degenerate the estimate
        is unreliable, so the solvers backtrack there, and a solution there has status LEFT_DOMAIN."""
        return jnp.min(self.stats(problem, X, conjugates, covariances)["ess"]) / self.draws[0].shape[0] - ESS_FLOOR

    def extended(self, P: int, P_all: int):
        """The CGF on P_all = P + m points (test points appended with zero conjugate rows): the first layer's factor
        is unchanged; deeper layers get new draw columns (:func:`actions.deep.extended_draws`) on which the tilt
        does not act, so their proposal is the prior there (m padded with 0, L with the identity)."""
        draws, proposals = [self.draws[0]], [self.proposals[0]]
        for layer in range(1, len(self.draws)):
            draws.append(extended_draws(self.draws[layer], P, P_all, layer))
            p = self.proposals[layer]
            proposals.append(Proposal(jnp.concatenate([p.mean, jnp.zeros(P_all - P, p.mean.dtype)]),
                                      jax.scipy.linalg.block_diag(p.chol, jnp.eye(P_all - P, dtype=p.chol.dtype))))
        return ExactCGF(tuple(draws), tuple(proposals))


def _floored_cholesky(Sigma, floor):
    evals, evecs = jnp.linalg.eigh(symmetrize(Sigma))
    return jnp.linalg.cholesky(symmetrize((evecs * jnp.maximum(evals, floor)) @ evecs.T))


def moment_matched_proposal(problem: Problem, Kt, B, z, proposal: Proposal, N, floor: float = 0.05) -> Proposal:
    """The better (larger ESS on the draws z) of two moment-matched proposals, from the tilted moments estimated
    with ``proposal`` and restricted to the row space of B (Pi = B^+ B: the tilt does not act elsewhere):

    - one Gaussian: m = 0, Sigma = I + Pi (E[u u^T] - I) Pi;
    - a symmetric pair: fold u -> sign(u . v) u along the top eigenvector v of Pi E[u u^T] Pi (the direction
      along which a bimodal measure splits), m = Pi E[u_folded], Sigma = I + Pi (Cov[u_folded] - I) Pi.

    Eigenvalues floored at ``floor`` (a guard against a degenerate estimate)."""
    u, log_w = proposal.points(z)
    omega = jax.nn.softmax(tilt_log_weights(problem, Kt, B, u, log_w, N))
    Pi = symmetrize(jnp.linalg.pinv(B) @ B)
    eye = jnp.eye(B.shape[1], dtype=B.dtype)
    M = (u * omega[:, None]).T @ u
    single = Proposal(jnp.zeros_like(proposal.mean), _floored_cholesky(eye + Pi @ (M - eye) @ Pi, floor))
    v = jnp.linalg.eigh(symmetrize(Pi @ M @ Pi))[1][:, -1]
    folded = jnp.where(u @ v >= 0, 1.0, -1.0)[:, None] * u
    m = Pi @ (omega @ folded)
    cov = (folded * omega[:, None]).T @ folded - jnp.outer(m, m)
    pair = Proposal(m, _floored_cholesky(eye + Pi @ (cov - eye) @ Pi, floor))

    def quality(candidate):
        return _ess(tilt_log_weights(problem, Kt, B, *candidate.points(z), N))

    better = quality(pair) > quality(single)
    return jax.tree.map(lambda a, b: jnp.where(better, a, b), pair, single)


def adapt_proposal(problem: Problem, Kt, C, layer: int, z, start: Proposal | None = None, tilts=None) -> Proposal:
    """A proposal adapted to the tilted measure of one layer at (Kt, C) by moment matching
    (:func:`moment_matched_proposal`) along the tempering path t Kt, ``tilts`` (default t = 1/R, ..., 1, 1), from
    ``start`` (default: the prior)."""
    B = layer_factor(problem, C, layer, problem.X)
    if tilts is None:
        tilts = jnp.minimum(jnp.arange(1, ADAPT_ROUNDS + 2, dtype=B.dtype) / ADAPT_ROUNDS, 1.0)
    start = Proposal.prior(B.shape[1], B.dtype) if start is None else start

    def step(proposal, t):
        return moment_matched_proposal(problem, t * Kt, B, z, proposal, problem.widths[layer]), None

    return jax.lax.scan(step, start, jnp.asarray(tilts, B.dtype))[0]


def _finite_or_prior(conjugates):
    """The conjugates where all are finite, else Kt = 0 (the prior): a failed Gaussian anchor."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(Kt)) for Kt in conjugates]))
    return tuple(jnp.where(ok, Kt, 0.0) for Kt in conjugates)


def weight_form_conjugates(problem: Problem, Sigma) -> tuple:
    """(Kt,), Kt = -dD/dK at K = K_Sigma / c, the two-layer kernel of a Gaussian-ansatz weight (filter) covariance
    Sigma (THEORY.md sec. 4): the conjugate of a two-layer net's Gaussian-ansatz saddle, the CNN's anchor."""
    return (output_terms(problem.two_layer_kernel(Sigma).nngp / problem.readout_scale, problem)[1],)


@eqx.filter_jit
def gaussian_anchor(problem: Problem):
    """The conjugates of the Gaussian-equivalent saddle (the conjugate map, FixedPoint; a CNN, which has no such
    form, the Gaussian-ansatz filter covariance's, :func:`weight_form_conjugates`), where the proposals are first
    adapted; where that solve fails (non-finite), Kt = 0: the prior."""
    from adaptive_kernels.actions.adaptive import TwoLayerAdaptiveAction, resolve_space
    from adaptive_kernels.solvers import FixedPoint, Newton, stationary_point

    if problem.patches > 1:
        action = TwoLayerAdaptiveAction(resolve_space("auto", problem))
        Sigma = stationary_point(action, Newton(), problem.prior_covariance(), problem, implicit=False).value
        return jax.lax.stop_gradient(_finite_or_prior(weight_form_conjugates(problem, Sigma)))
    zeros = tuple(jnp.zeros((problem.P, problem.P), problem.X.dtype) for _ in range(problem.depth))
    sol = stationary_point(ConjugateMap(), FixedPoint(), zeros, problem, implicit=False)
    return jax.lax.stop_gradient(_finite_or_prior(sol.value))


def _draws(problem: Problem, samples: int, key):
    """(estimation draws, adaptation draws): per layer (S, r_l) standard normals from fold_in(key, layer) and
    fold_in(key, depth + layer)."""
    def normal(index, layer):
        return jax.random.normal(jax.random.fold_in(key, index), (samples, factor_rank(problem, layer)), problem.X.dtype)

    return (tuple(normal(layer, layer) for layer in range(problem.depth)),
            tuple(normal(problem.depth + layer, layer) for layer in range(problem.depth)))


@eqx.filter_jit
def initial_cgf(problem: Problem, samples: int, key, anchor) -> ExactCGF:
    """``samples`` draws per layer from ``key``, proposals adapted to the tilted measures at the Gaussian anchor's
    conjugates ``anchor`` (tempered from the prior; :func:`adapt_proposal`)."""
    draws, adapt_draws = _draws(problem, samples, key)
    anchor = _finite_or_prior(anchor)
    kernels = ConjugateMap().kernels(problem, problem.X, anchor)[0]
    covariances = [input_covariance(problem, problem.X)] + [next_covariance(problem, K) for K in kernels[:-1]]
    proposals = tuple(adapt_proposal(problem, anchor[layer], covariances[layer], layer, adapt_draws[layer])
                      for layer in range(problem.depth))
    return jax.lax.stop_gradient(ExactCGF(draws, proposals, anchor))


@eqx.filter_jit
def readapted(problem: Problem, cgf: ExactCGF, key, conjugates) -> ExactCGF:
    """The same draws with the proposals re-adapted (two moment-matching rounds from the current ones) at the exact
    measure's saddle ``conjugates`` (``key``: the one the draws came from)."""
    adapt_draws = _draws(problem, cgf.draws[0].shape[0], key)[1]
    covariances = sampled_forward(problem, problem.X, conjugates, cgf)[2]
    proposals = tuple(adapt_proposal(problem, conjugates[layer], covariances[layer], layer, adapt_draws[layer],
                                     cgf.proposals[layer], (1.0, 1.0))
                      for layer in range(problem.depth))
    return jax.lax.stop_gradient(ExactCGF(cgf.draws, proposals, jax.lax.stop_gradient(conjugates)))


@eqx.filter_jit
def sampled_saddle(problem: Problem, cgf: ExactCGF, init):
    """The conjugates at the saddle of the exact measure with the fixed draws and proposals of ``cgf``."""
    from adaptive_kernels.solvers import stationary_point

    return stationary_point(ConjugateMap(cgf), default_solver(), init, problem, implicit=False).value


def default_solver():
    """FixedPoint with damping 1/2: the sampled map's residual, the merit its steps must lower, is rough at the
    round-off level, so the undamped Anderson iteration stalled in its line search (deep linear net, gamma = 2: 2 of
    4 keys; damped: all 4 converged in 13-16 evaluations)."""
    from adaptive_kernels.solvers import FixedPoint

    return FixedPoint(damping=0.5)


def exact_cgf(problem: Problem, samples: int, key, solve=None) -> ExactCGF:
    """The exact-measure CGF of every layer: ``samples`` draws per layer from the PRNG ``key``; proposals adapted
    first at the Gaussian anchor (:func:`initial_cgf`), then ``REFINE`` times at the exact measure's own saddle
    (:func:`readapted`): the solve with the current proposals from the last adaptation point (where it leaves the
    domain, its last point inside: a continuation).

    ``solve(cgf, init)``: the conjugates of the Gaussian-equivalent saddle (cgf None) or of the sampled one. None:
    inline solves (jittable); ``Adaptive.prepared`` passes the library's compiled solves instead, outside jit, so the
    final solve and the user's Gaussian solves reuse their compilations."""
    if solve is None:
        def solve(cgf, init):
            return gaussian_anchor(problem) if cgf is None else sampled_saddle(problem, cgf, init)

    cgf = initial_cgf(problem, samples, key, solve(None, None))
    for _ in range(REFINE):
        cgf = readapted(problem, cgf, key, solve(cgf, cgf.start))
    return cgf


def tilted_measures(cgf: ExactCGF, problem: Problem, conjugates) -> list:
    """Per layer (u, omega, B) of the tilted measures at the conjugates ``conjugates`` on the training inputs:
    E_tilted[f(h)] ~ sum_s omega_s f(B u_s); for the first layer u = (w sqrt(d/s_w2), b/sqrt(s_b2)), the neuron's
    weights and bias (the single-neuron density of a two-layer net)."""
    covariances = sampled_forward(problem, problem.X, conjugates, cgf)[2]
    return [cgf.tilted(problem, Kt, C, layer, problem.X) for layer, (Kt, C) in enumerate(zip(conjugates, covariances))]


@eqx.filter_jit
def first_layer_covariance(cgf: ExactCGF, problem: Problem, conjugates):
    """Sigma = E_tilted[w w^T] (n x n; n = d for a fully connected net, the filter size for a CNN) of the first
    layer's weights under the exact measure."""
    u, omega, _ = tilted_measures(cgf, problem, conjugates[:1])[0]
    w = u[:, : problem.patch_size]
    return (problem.s_w2 / problem.patch_size) * (w * omega[:, None]).T @ w


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
    for layer, (u, omega, B) in enumerate(tilted_measures(solution.theory._cgf(problem), problem, solution.value)):
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
    """Markov-chain estimates of K_l = E_tilted[phi(h) phi(h)^T] (independent of the importance weights): per layer
    HMC (``sampling.mcmc.metropolis_step``, step size tuned by dual averaging in warm-up) on u with the potential
    U(u) = |u|^2/2 - phi(B u)^T Kt phi(B u) / N, h = B u (B at the covariances of the importance-sampled forward
    pass), ``num_chains`` chains started at the proposal's points. Returns per layer (mean, standard error from the
    spread of the chain means)."""
    from adaptive_kernels.sampling.mcmc import metropolis_step, start_chain

    covariances = sampled_forward(problem, problem.X, conjugates, cgf)[2]
    out = []
    for layer, (Kt, C) in enumerate(zip(conjugates, covariances)):
        B, N = layer_factor(problem, C, layer, problem.X), problem.widths[layer]

        def potential(u, B=B, Kt=Kt, N=N):
            phi = layer_features(problem, u, B, Kt.shape[0])
            return 0.5 * u @ u - jnp.sum(Kt * feature_kernel(phi)) / N

        value_and_grad = jax.value_and_grad(potential)
        u0 = cgf.proposals[layer].points(cgf.draws[layer])[0][-num_chains:]

        def chain(u, key, B=B, value_and_grad=value_and_grad):
            def step(adapt):
                def body(state, k):
                    return metropolis_step(value_and_grad, state, k, num_leapfrog=num_leapfrog, target_accept=0.8,
                                           adapt=adapt, jitter=0.9)[0], None
                return body

            k1, k2 = jax.random.split(key)
            state = jax.lax.scan(step(True), start_chain(value_and_grad, u, 0.1), jax.random.split(k1, num_warmup))[0]
            state = eqx.tree_at(lambda s: s.adaptation, state, state.adaptation.freeze())

            def record(state, k):
                state = step(False)(state, k)[0]
                return state, feature_kernel(layer_features(problem, state.position, B, problem.P))

            return jnp.mean(jax.lax.scan(record, state, jax.random.split(k2, num_samples))[1], axis=0)

        means = jax.vmap(chain)(u0, jax.random.split(jax.random.fold_in(key, layer), num_chains))
        out.append((jnp.mean(means, axis=0), jnp.std(means, axis=0, ddof=1) / jnp.sqrt(num_chains)))
    return out


def exact_hmc_check(solution, arch, data, kappa2, *, key: int = 0, num_chains: int = 8, num_samples: int = 400,
                    num_warmup: int = 200) -> list:
    """The importance-sampling estimate of each layer's K_l = E_tilted[phi phi^T] at an exact-measure solution
    against a Markov-chain (HMC) estimate of the same average (:func:`hmc_tilted_kernels`): a check independent of
    the importance weights, for where the ESS is low. Per layer a dict with ``kernel`` (importance sampling),
    ``kernel_hmc``, ``se_hmc`` (its standard error over chains) and ``max_z`` = max |kernel - kernel_hmc| / se_hmc."""
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
