"""Gaussian-mixture single-neuron ansatz of the two-layer FCN (issue 17; the "Gaussian mixture feature learning"
states of Rubin, Seroussi & Ringel, arXiv 2310.03789).

THEORY.md secs. 4 and 9: at large width the first-layer weights are N draws from a single-neuron density rho(w),
and the saddle is the minimum over rho of the free-energy functional

    F[rho] = N KL(rho || p) + D(K_rho),   K_rho(x, x') = c E_{w ~ rho}[phi(w.x) phi(w.x')],   p = N(0, I/a),

(c = s_a2 N**(1-gamma), a = d/s_w2, D the data term): its stationarity condition is the exact tilted measure
rho ∝ p exp((c/2N) phi^T (t t^T - A) phi) of sec. 9, and restricting rho to one Gaussian N(0, Sigma) gives the
Gaussian ansatz of sec. 4 (N KL = (N/2)[a tr Sigma - log det Sigma] - (N/2) d (1 + log a)). Here rho is a
*symmetrised mixture of Gaussians*,

    rho(w) = sum_k pi_k (1/2) [N(w; m_k, Sigma_k) + N(w; -m_k, Sigma_k)],

between the two: K components, each a pair of Gaussians at +-m_k (the posterior of an odd activation is symmetric
under w -> -w with the readout a -> -a, that of an even one under w -> -w alone), with the weights pi_k, means m_k and covariances Sigma_k as order
parameters; K = 1 with m = 0 is the Gaussian ansatz. This is a variational restriction of F, so its minimum lies
above the exact measure's and below (or at) the Gaussian ansatz's.

- Kernel: for one Gaussian, (u, v) = (w.x, w.x') is Gaussian with means (m.x, m.x') and covariance from
  x^T Sigma x'; E[erf(u) erf(v)] is a bivariate normal orthant probability, a smooth one-dimensional integral
  (:func:`gaussian_product_mean`, Gauss-Legendre). Linear phi: E[u v] = mu_u mu_v + C_uv. Other activations are
  refused.
- Entropy: with Gaussians q_j of weights pi_j (the 2K halves),
      KL(rho || p) = sum_j pi_j [log pi_j + KL(q_j || p)] + sum_j pi_j E_{q_j}[log(rho / (pi_j q_j))];
  the first sum is closed form, the overlap correction (between 0 and the mixing entropy; log 2 per pair when its
  halves coincide, which makes K = 1, m = 0 the Gaussian ansatz exactly) is a sample average over fixed standard
  normal draws w = m_j + L_j z_s (``samples`` of them from ``seed``): a deterministic, differentiable function of
  the order parameters, so the library's solvers and Hessians apply.
- Coordinates: component k is one positive-definite (d+1) x (d+1) matrix
      M_k = [[Sigma_k + s_k m_k m_k^T, s_k m_k], [s_k m_k^T, s_k]]
  (s_k > 0 from the corner, m_k = M_k[:d, d] / s_k, Sigma_k the Schur complement), so the order parameters are a
  tuple of positive-definite leaves like every other action's and ``solvers.coordinates`` keeps them valid;
  pi_k = s_k / sum_j s_j. The overall scale of the s_k is fixed by the gauge term (N/2)(tau - 1 - log tau),
  tau = a sum_k s_k / K (zero, with zero gradient along the physical directions, at tau = 1; it removes the flat
  direction of that scale from the Hessian). The prior, M_k = I/a, is K copies of p.

The action is an :class:`~actions.base.EntropicAction`: its "data term" is S minus the leaves' Gaussian entropies
(N/2)[a tr M_k - log det M_k], so that the base class's stationarity residual is that of S.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.activations import Erf, Linear, Quadratic
from adaptive_kernels.gp import data_term
from adaptive_kernels.problem import Problem
from adaptive_kernels.solvers.quasi_newton import QuasiNewton

DEFAULT_SOLVER = QuasiNewton(method="bfgs", max_steps=3000)
"""Dense BFGS: on a mean-field erf net (d = 8, P = 40, N = 50, kappa2 = 0.01) L-BFGS stopped at its step limit with
gradient norm 1.8e3 where BFGS converged to 5e-9 in 854 steps."""

QUADRATURE = 24
"""Gauss-Legendre nodes of the one-dimensional integral in :func:`gaussian_product_mean`."""


def check_problem(problem: Problem) -> None:
    """Raise a ValueError naming the option if the mixture ansatz cannot describe ``problem``."""
    if problem.depth != 1 or problem.patches != 1:
        raise ValueError("measure: 'mixture' needs a two-layer fully connected net (one hidden layer, no patches), "
                         f"got depth {problem.depth} with {problem.patches} patches")
    if not isinstance(problem.activation, (Erf, Linear, Quadratic)):
        raise ValueError("measure: 'mixture' needs activation 'erf', 'quadratic' or 'linear', "
                         f"got {problem.activation.name!r}")


def check_components(components) -> None:
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be an integer >= 1, got {components!r}")


def decode(M):
    """(s, m, Sigma) of one component's matrix M (module docstring)."""
    d = M.shape[0] - 1
    s, b = M[d, d], M[:d, d]
    return s, b / s, M[:d, :d] - jnp.outer(b, b) / s


def encode(s, m, Sigma):
    """The matrix M of (s, m, Sigma): the inverse of :func:`decode`."""
    s = jnp.asarray(s, Sigma.dtype)
    top = jnp.concatenate([Sigma + s * jnp.outer(m, m), (s * m)[:, None]], axis=1)
    return jnp.concatenate([top, jnp.concatenate([s * m, s[None]])[None, :]], axis=0)


def components(value):
    """(pi (K,), m (K, d), Sigma (K, d, d)) of the order parameters (a tuple of K matrices)."""
    s, m, Sigma = (jnp.stack(x) for x in zip(*(decode(M) for M in value)))
    return s / jnp.sum(s), m, Sigma


def initial(problem: Problem, count: int):
    """The prior: ``count`` components M_k = I/a (s_k = 1/a, m_k = 0, Sigma_k = I/a)."""
    eye = jnp.eye(problem.d + 1, dtype=problem.X.dtype) / problem.prior_precision
    return tuple(eye for _ in range(count))


def aligned(problem: Problem, count: int, ratio: float, direction):
    """A teacher-aligned start: component 0 the prior, components 1..K-1 pairs at +-m, m = sqrt((ratio - 1)/a) v
    (v = direction / |direction|: the second moment along v is ``ratio`` times the prior's), Sigma = I/a."""
    a = problem.prior_precision
    v = direction / jnp.linalg.norm(direction)
    Sigma = jnp.eye(problem.d, dtype=problem.X.dtype) / a
    zero = jnp.zeros(problem.d, problem.X.dtype)
    m = jnp.sqrt((ratio - 1) / a) * v if ratio > 1 else zero
    return tuple(encode(1 / a, zero if k == 0 else m, Sigma) for k in range(count))


def with_component(value, component, weight: float):
    """``value`` (either form) with one more component: the density (1 - ``weight``) rho + ``weight`` rho_c, rho_c the
    pair of ``component`` (a matrix of the same form; its own s is ignored). The s_k are then rescaled by (K+1)/K, so
    the gauge's tau = a sum_k s_k / K keeps its value (1 at a solution): the start of a descent in the K+1 ansatz from
    a K-component state (:func:`adaptive_kernels.phases.check_richer`)."""
    if not 0 < weight < 1:
        raise ValueError(f"weight must lie in (0, 1), got {weight!r}")
    head, parts = (value[:1], value[1:]) if is_axis_form(value) else ((), value)
    if component.shape != parts[0].shape:
        raise ValueError(f"component must be a {parts[0].shape} matrix like the components of value, "
                         f"got shape {component.shape}")
    decoded = [decode(M) for M in parts]
    total = sum(s for s, _, _ in decoded)
    scale = (len(parts) + 1) / len(parts)
    _, m, Sigma = decode(component)
    return head + tuple(encode(scale * (1 - weight) * s, mk, Sk) for s, mk, Sk in decoded) + (
        encode(scale * weight * total, m, Sigma),)


def canonical(value):
    """The same density with its components sorted by weight (descending; equal weights to 6 digits by the trace of
    their matrices, descending) and each mean's sign chosen so that its
    largest-magnitude entry is positive (M -> D M D, D = diag(1, ..., 1, -1)): a representative for comparing
    solutions (the axis form's leading r unchanged)."""
    if is_axis_form(value):
        return value[:1] + canonical(value[1:])

    def flip(M):
        b = M[:-1, -1]
        sign = jnp.where(b[jnp.argmax(jnp.abs(b))] < 0, -1.0, 1.0)
        D = jnp.concatenate([jnp.ones(M.shape[0] - 1, M.dtype), sign[None].astype(M.dtype)])
        return M * D[:, None] * D[None, :]

    weights = np.array([float(M[-1, -1]) for M in value])
    spreads = np.array([float(jnp.trace(M)) for M in value])
    order = np.lexsort((-spreads, -np.round(weights / weights.max(), 6)))  # equal weights (along="equal"): by spread
    return tuple(flip(value[i]) for i in order)


def second_moment(problem: Problem, value, direction=None):
    """E_rho[w w^T] = sum_k pi_k (Sigma_k + m_k m_k^T) (the symmetrised mixture has mean zero)."""
    pi, m, Sigma = full_components(problem, value, direction)
    return jnp.einsum("k,kij->ij", pi, Sigma + m[:, :, None] * m[:, None, :])


def gaussian_product_mean(activation, mu1, mu2, c11, c12, c22):
    """E[phi(u) phi(v)] for (u, v) Gaussian with means (mu1, mu2) and covariance [[c11, c12], [c12, c22]]
    (broadcasting arrays). Linear phi: mu1 mu2 + c12. Quadratic phi: :meth:`activations.Quadratic.mean_expectation`.
    Erf: with erf(u) = E_eta[sign(sqrt2 u - eta)], eta ~ N(0, 1),
    the average is that of sign(A) sign(B) for a Gaussian pair, i.e. a bivariate normal orthant probability:

        E[erf(u) erf(v)] = erf(alpha) erf(beta)
                           + (2/pi) int_0^{arcsin rho} exp(-(alpha^2 - 2 alpha beta sin th + beta^2) / cos^2 th) dth,

    alpha = mu1 / sqrt(1 + 2 c11), beta = mu2 / sqrt(1 + 2 c22), rho = 2 c12 / sqrt((1 + 2 c11)(1 + 2 c22))
    (Sheppard's formula for the orthant probability, substituted r = sin th). The integrand is smooth on the whole
    interval, so Gauss-Legendre with :data:`QUADRATURE` nodes is accurate to round-off; at zero means it is the
    arcsine kernel exactly."""
    if isinstance(activation, Linear):
        return mu1 * mu2 + c12
    if isinstance(activation, Quadratic):
        return activation.mean_expectation(mu1, mu2, c11, c12, c22)
    x, w = np.polynomial.legendre.leggauss(QUADRATURE)
    x, w = jnp.asarray(x, mu1.dtype), jnp.asarray(w, mu1.dtype)
    s1, s2 = jnp.sqrt(1 + 2 * c11), jnp.sqrt(1 + 2 * c22)
    alpha, beta = mu1 / s1, mu2 / s2
    top = jnp.arcsin(jnp.clip(2 * c12 / (s1 * s2), -1.0, 1.0))
    theta = 0.5 * top[..., None] * (x + 1)
    exponent = (alpha[..., None] ** 2 - 2 * (alpha * beta)[..., None] * jnp.sin(theta) + beta[..., None] ** 2)
    integral = 0.5 * top * jnp.sum(w * jnp.exp(-exponent / jnp.cos(theta) ** 2), axis=-1)
    erf = jax.scipy.special.erf
    return erf(alpha) * erf(beta) + (2 / jnp.pi) * integral


def is_axis_form(value) -> bool:
    """Whether ``value`` is the axis form (:class:`AxisMixtureAction`: a 1 x 1 leaf r, then 2 x 2 component
    matrices) rather than the free form ((d+1) x (d+1) component matrices, d >= 1)."""
    return value[0].shape[0] == 1


def axis(problem: Problem, direction=None):
    """The axis of the axis form: ``direction`` normalised (e.g. the teacher's w*), or without one the unit
    direction of X^T y (``phases.data_direction``: the direction the linear part of the targets points along; for
    the cubic teacher E[x y] = w*, but at small P its estimate is noisy when eps He3 dominates y)."""
    if direction is not None:
        v = jnp.asarray(direction, problem.X.dtype)
        return v / jnp.linalg.norm(v)
    from adaptive_kernels.phases import data_direction  # phases imports this module

    return data_direction(problem)


def full_components(problem: Problem, value, direction=None):
    """(pi (K,), m (K, d), Sigma (K, d, d)) of the mixture in weight space, for either form: the axis form's
    component k is m_k v, Sigma_k = s_k v v^T + r (I - v v^T), v = :func:`axis`."""
    if not is_axis_form(value):
        return components(value)
    pi, m, s = components(value[1:])
    v = axis(problem, direction)
    perp = value[0][0, 0] * (jnp.eye(problem.d, dtype=v.dtype) - jnp.outer(v, v))
    return pi, m[:, :1] * v, s[:, :1, :1] * jnp.outer(v, v) + perp


def mixture_kernel(problem: Problem, value, X1, X2=None, direction=None):
    """K_rho between X1 and X2 (P1 x P2; X2 None: X1 with itself) and its diagonal on X1:
    c sum_k pi_k E_{N(m_k, Sigma_k)}[phi(w.x) phi(w.x')] (the -m_k half gives the same for odd or even phi;
    ``direction``: the axis form's, :func:`axis`)."""
    pi, m, Sigma = full_components(problem, value, direction)
    act, c = problem.activation, problem.readout_scale
    X2 = X1 if X2 is None else X2
    mu1, mu2 = X1 @ m.T, X2 @ m.T  # (P, K)
    c11 = jnp.einsum("pi,kij,pj->kp", X1, Sigma, X1)
    c22 = jnp.einsum("pi,kij,pj->kp", X2, Sigma, X2)
    c12 = jnp.einsum("pi,kij,qj->kpq", X1, Sigma, X2)
    block = gaussian_product_mean(act, mu1.T[:, :, None], mu2.T[:, None, :], c11[:, :, None], c12,
                                  c22[:, None, :])
    diag = gaussian_product_mean(act, mu1.T, mu1.T, c11, c11, c11)
    return c * jnp.einsum("k,kpq->pq", pi, block), c * pi @ diag


def kl_divergence(value, precision, draws):
    """KL(rho || N(0, I/a)) of the symmetrised mixture (module docstring), the overlap correction averaged over the
    fixed standard normal ``draws`` (S, d).

    Limitation: a sample average over fixed draws is a function the solvers can exploit. For a linear net (d = 4,
    P = 40, N = 20), where no density beats the Gaussian of the same second moment, the K = 2 free form's lowest
    minimum lies 0.08 below the Gaussian ansatz's action at S = 2·10^4 (0.45 at S = 2·10^3), with one component
    of variance 7e-5 along one axis; a telescoping rule as in :func:`axis_kl_divergence` moved rather than removed
    the bias (0.14 below, no narrow component). Compare a free-form minimum with the Gaussian ansatz and with
    ``along="axis"`` (deterministic, :func:`axis_kl_divergence`) before trusting action gaps of that size."""
    pi, m, Sigma = components(value)
    d = m.shape[1]
    L = jnp.linalg.cholesky(Sigma)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
    kl = 0.5 * (precision * (jnp.trace(Sigma, axis1=1, axis2=2) + jnp.sum(m**2, axis=1)) - d
                - d * jnp.log(precision) - logdet)
    half = pi / 2
    closed = 2 * jnp.sum(half * (jnp.log(half) + kl))
    # halves j = (k, +-): means +-m_k; by symmetry the correction of (k, -) equals that of (k, +)
    means = jnp.concatenate([m, -m])
    chol = jnp.concatenate([L, L])
    log_w = jnp.log(jnp.concatenate([half, half])) - 0.5 * jnp.concatenate([logdet, logdet])
    points = m[:, None, :] + jnp.einsum("kij,sj->ksi", L, draws)  # (K, S, d): draws of the + halves

    def log_density(mean, Lj):  # log N(points; mean, Lj Lj^T) + d/2 log 2 pi, for every (k, s)
        v = jax.scipy.linalg.solve_triangular(Lj, (points - mean).reshape(-1, d).T, lower=True)
        return -0.5 * jnp.sum(v**2, axis=0).reshape(points.shape[:2])

    log_all = jax.vmap(log_density)(means, chol) + log_w[:, None, None]  # (2K, K, S)
    own = log_all[jnp.arange(m.shape[0]), jnp.arange(m.shape[0])]  # (K, S)
    correction = jnp.mean(jax.nn.logsumexp(log_all, axis=0) - own, axis=1)
    return closed + 2 * jnp.sum(half * correction)


class MixtureAction(EntropicAction):
    """S = N KL(rho || p) + (N/2) d (1 + log a) + gauge + D(K_rho) over K component matrices (module docstring);
    the constant makes S equal to the Gaussian ansatz's action when the mixture is one Gaussian.

    draws: (S, d) fixed standard normals of the entropy's overlap correction; count: K; equal: the weights are
    fixed, pi_k = 1/K (``along="equal"``): S is evaluated on the components re-encoded with s_k = 1/a (same m_k,
    Sigma_k), and the gauge is per component, (N/2) sum_k (a s_k - 1 - log a s_k), so every stationary point has
    s_k = 1/a exactly and the library's kernels (which read pi_k = s_k / sum s) see the same density.

    Why fixed weights: with an unbounded activation (quadratic) the free weights run away -- a component whose
    weight pi -> 0 while its variance grows like pi^(-1/2) keeps a finite kernel c pi E[(w.x)^4] at a KL cost
    ~ pi a tr Sigma -> 0 (observed at p = 5, P = 14, N = 20: one weight below 5e-4 with variances up to 9e3 times
    the prior's, the solver unconverged): the large-width saddle of a phi = x^2 net puts a vanishing fraction of
    neurons at infinite weights, outside the theory's validity (a fraction is at least 1/N). With the weights fixed
    the KL cost of a growing component is linear in its variance and the data term's log det only logarithmic, so
    S is bounded below. Equal weights are the symmetric states of the modular task (its frequencies are equivalent
    under a -> j a, b -> j b); a variational restriction of the free form.
    """

    draws: jnp.ndarray
    count: int = eqx.field(static=True)
    equal: bool = eqx.field(static=True, default=False)

    def prior(self, problem: Problem):
        """Each component matrix counts with weight N and precision a (its prior value I/a)."""
        return tuple(problem.width for _ in range(self.count)), tuple(problem.prior_precision
                                                                      for _ in range(self.count))

    def total(self, value, problem: Problem):
        """S(value) (the module docstring's F plus the constant and the gauge term)."""
        N, a, d = problem.width, problem.prior_precision, problem.d
        if self.equal:
            tau = a * jnp.stack([M[-1, -1] for M in value])
            gauge = 0.5 * N * jnp.sum(tau - 1 - jnp.log(tau))
            value = tuple(encode(1 / a, *decode(M)[1:]) for M in value)
        else:
            tau = a * sum(M[-1, -1] for M in value) / len(value)
            gauge = 0.5 * N * (tau - 1 - jnp.log(tau))
        entropy = N * kl_divergence(value, a, self.draws) + 0.5 * N * d * (1 + jnp.log(a))
        K = mixture_kernel(problem, value, problem.X)[0]
        return entropy + gauge + data_term(K, problem.y, problem.kappa2, problem.weights)

    def data_term(self, value, problem: Problem):
        """S minus the leaves' Gaussian entropies (module docstring)."""
        return self.total(value, problem) - self.entropy(value, problem)



HERMITE = 80
"""Gauss-Hermite nodes per Gaussian of the axis form's one-dimensional KL divergence (:func:`axis_kl_divergence`)."""


def _log_softplus(z):
    """log(log(1 + e^z)), = z to within e^z / 2 where e^z underflows the softplus (z < -30)."""
    small = z < -30
    return jnp.where(small, z, jnp.log(jax.nn.softplus(jnp.where(small, 0.0, z))))


def axis_kl_divergence(value, precision, nodes: int = HERMITE):
    """KL(rho_1 || N(0, 1/a)) of the one-dimensional symmetrised mixture rho_1(u) = sum_k pi_k (1/2)[N(u; m_k, s_k)
    + N(u; -m_k, s_k)] given by 2 x 2 component matrices (``value``, :func:`decode` with d = 1).

    Write rho_1 = sum_j w_j q_j over its 2K halves (w_j = pi_k / 2, q_j = N(m_j, s_j)), sorted by variance,
    widest first, and R_t = sum_{i <= t} w_i q_i. Then KL = sum_j w_j E_{q_j}[log rho_1 - log N(0, 1/a)] with the
    telescoping sum

        log rho_1 = log R_j + sum_{t > j} log(1 + w_t q_t / R_{t-1}),

        E_{q_j}[log(1 + w_t q_t / R_{t-1})] = E_{q_t}[(q_j / q_t) log(1 + w_t q_t / R_{t-1})],

    every expectation by ``nodes``-point Gauss-Hermite quadrature in its own Gaussian (u = m + sqrt(2 s) x_i,
    weights w_i / sqrt(pi)). Each integrand is smooth on the scale of the Gaussian whose nodes it uses: R_j holds
    only halves at least as wide as q_j, and the narrower half q_t's bump, a feature that q_j's nodes would step
    over, is integrated on q_t's own nodes. (A plain rule per half, E_{q_j}[log rho_1], misses such a bump: a
    linear net's K = 2 "minimum" with a spike of variance 4e-4 inside a bulk of 0.26 had KL -0.032 where a grid
    gives +0.022, an action 0.65 below the Gaussian's, which no density with that second moment can reach.)"""
    pi, m, s = components(value)
    w = jnp.concatenate([pi, pi]) / 2
    mu = jnp.concatenate([m[:, 0], -m[:, 0]])
    var = jnp.concatenate([s[:, 0, 0], s[:, 0, 0]])
    order = jnp.argsort(-var)
    w, mu, var = w[order], mu[order], var[order]
    H = w.shape[0]
    x, h = np.polynomial.hermite.hermgauss(nodes)
    x, h = jnp.asarray(x, mu.dtype), jnp.asarray(h / np.sqrt(np.pi), mu.dtype)
    u = mu[:, None] + jnp.sqrt(2 * var)[:, None] * x  # (H, nodes): the nodes of each half
    # log N(u_t; mu_i, var_i) for every half i at every half t's nodes: (H_i, H_t, nodes)
    log_q = -0.5 * jnp.log(2 * jnp.pi * var)[:, None, None] - (u[None] - mu[:, None, None]) ** 2 / (2 * var[:, None, None])
    log_wq = jnp.log(w)[:, None, None] + log_q
    # log R_t at every half's nodes (R_t: halves 0..t): (H_t, H_nodes, nodes)
    log_R = jax.lax.cumlogsumexp(log_wq, axis=0)
    log_p = 0.5 * jnp.log(precision / (2 * jnp.pi)) - 0.5 * precision * u**2
    own = jnp.diagonal(log_R, axis1=0, axis2=1).T  # log R_j at q_j's nodes: (H, nodes)
    kl = jnp.sum(w * ((own - log_p) @ h))
    for t in range(1, H):  # the bump of half t on its own nodes, for every wider half j < t
        bump = _log_softplus(log_wq[t, t] - log_R[t - 1, t])  # log log(1 + w_t q_t / R_{t-1}) at q_t's nodes
        ratio = log_q[:t, t] - log_q[t, t]  # log(q_j / q_t) there, j < t
        kl = kl + jnp.sum(w[:t] * (jnp.exp(ratio + bump) @ h))
    return kl


class AxisMixtureAction(EntropicAction):
    """The mixture restricted to the form of Rubin, Seroussi & Ringel's cubic-teacher states: along one axis v
    (:func:`axis`) a symmetrised one-dimensional mixture, across it one isotropic Gaussian shared by all components,

        rho(w) = [sum_k pi_k (1/2)(N(u; m_k, s_k) + N(u; -m_k, s_k))] x N(w_perp; 0, r (I - v v^T)),  u = v.w,

    e.g. K = 2: a bulk (m_1 = 0: the Gaussian feature-learning state, variance s_1 along v) plus a fraction pi_2 of
    neurons at +-m_2 v (the "Gaussian mixture feature learning" state); K = 1, m_1 = 0 is the Gaussian ansatz
    with Sigma = s v v^T + r (I - v v^T). Because rho factorises, KL(rho || p) = (d-1)/2 (a r - 1 - log a r) +
    KL(rho_1 || N(0, 1/a)) is computed without sampling (:func:`axis_kl_divergence`); the kernel is
    :func:`mixture_kernel` of the full components (:func:`full_components`). Order parameters: (R, M_1, ..., M_K)
    with R = [[r]] and M_k the 2 x 2 matrix of (pi_k, m_k, s_k) (:func:`encode` with d = 1), gauge as
    :class:`MixtureAction`'s. A variational restriction of the free form: its minimum lies above the free
    mixture's and below (or at) the Gaussian ansatz's restricted to the same axis.

    count: K; direction: the axis (None: :func:`axis` of the problem's data).
    """

    count: int = eqx.field(static=True)
    direction: jnp.ndarray | None = None

    def prior(self, problem: Problem):
        """R counts with weight N (d - 1) (the d - 1 directions across v), each M_k with weight N; precision a."""
        N, a = problem.width, problem.prior_precision
        return (N * (problem.d - 1),) + tuple(N for _ in range(self.count)), tuple(a for _ in range(self.count + 1))

    def total(self, value, problem: Problem):
        """S(value): N KL(rho || p) + (N/2) d (1 + log a) + gauge + D(K_rho)."""
        N, a, d = problem.width, problem.prior_precision, problem.d
        ar = a * value[0][0, 0]
        kl = 0.5 * (d - 1) * (ar - 1 - jnp.log(ar)) + axis_kl_divergence(value[1:], a)
        tau = a * sum(M[-1, -1] for M in value[1:]) / self.count
        K = mixture_kernel(problem, value, problem.X, direction=self.direction)[0]
        return (N * kl + 0.5 * N * d * (1 + jnp.log(a)) + 0.5 * N * (tau - 1 - jnp.log(tau))
                + data_term(K, problem.y, problem.kappa2, problem.weights))

    def data_term(self, value, problem: Problem):
        """S minus the leaves' Gaussian entropies (module docstring)."""
        return self.total(value, problem) - self.entropy(value, problem)


def axis_initial(problem: Problem, count: int):
    """The prior in the axis form: r = 1/a, M_k = I_2/a (s_k = 1/a, m_k = 0, variance 1/a along v)."""
    eye = jnp.eye(2, dtype=problem.X.dtype) / problem.prior_precision
    return (eye[:1, :1],) + tuple(eye for _ in range(count))


def axis_aligned(problem: Problem, count: int, ratio: float, pair: float = 0.5):
    """An aligned start in the axis form: with one component the pair at +-m v carrying ``ratio`` times the prior's
    second moment along v (m^2 = (ratio - 1)/a); with K >= 2 component 0 the prior (the bulk) with weight
    1 - ``pair``, the others pairs at +-m v, m^2 = (ratio - 1)/a, sharing the weight ``pair``."""
    a = problem.prior_precision
    dtype = problem.X.dtype
    m = jnp.sqrt(jnp.asarray(max(ratio - 1, 0.0) / a, dtype))[None]
    var = jnp.ones((1, 1), dtype) / a
    if count == 1:
        return (var, encode(1 / a, m, var))
    weights = [(1 - pair)] + [pair / (count - 1)] * (count - 1)
    scale = count / (a * sum(weights))  # sum of the s_k = K/a: the gauge's tau = 1
    return (var,) + tuple(encode(scale * wk, 0 * m if k == 0 else m, var) for k, wk in enumerate(weights))


def antithetic_draws(samples: int, seed: int, d: int, dtype=jnp.float64):
    """``samples`` standard normal draws (samples, d) from ``seed``, antithetic (z and -z): the estimate of the
    overlap correction is then exactly even in each m_k, as the exact one is, so m = 0 stays stationary."""
    half = jax.random.normal(jax.random.PRNGKey(seed), ((samples + 1) // 2, d), dtype)
    return jnp.concatenate([half, -half])[:samples]


def mixture_action(count: int, samples: int, seed: int, problem: Problem, along: str = "free", direction=None):
    """The action of ``count`` components: the free form with ``samples`` :func:`antithetic_draws` from ``seed``
    (``along="free"``; ``along="equal"``: the same with the weights fixed at 1/K, :class:`MixtureAction`) or the
    axis form (``along="axis"``, :class:`AxisMixtureAction` along ``direction``, no draws)."""
    if along == "axis":
        return AxisMixtureAction(count, direction)
    return MixtureAction(antithetic_draws(samples, seed, problem.d, problem.X.dtype), count, along == "equal")


ALONG = ("free", "axis", "equal")


def check_along(along) -> None:
    if along not in ALONG:
        raise ValueError(f"along must be one of {', '.join(ALONG)}, got {along!r}")
