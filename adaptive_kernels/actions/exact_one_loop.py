"""One loop around the exact large-width measure of a two-layer net (issue 16; docs/finite_width.md, "One loop
around the exact measure"; THEORY.md secs. 9-10).

The order parameter is the P x P kernel K = (1/N) sum_i k(w_i), k(w) = phi(X w) phi(X w)^T, a mean of N iid
matrices under the prior, with the posterior exp(-D(K)) p(K). In orthonormal coordinates of symmetric matrices
(m = P(P+1)/2 entries; ``one_loop._coordinates``) the large-width theory is the saddle of

    S(K, Kt) = tr(Kt K) - W(Kt) + D(K),   W(Kt) = N log E_prior exp(k(w) . Kt / N)

(``actions.exact``: W sampled with fixed draws and proposals, a deterministic smooth function of Kt). Integrating
K and Kt over a neighbourhood of the saddle (Kt along the imaginary axis; Daniels 1954 for the density of a mean,
Zinn-Justin ch. 6 for the loop expansion) gives the one-loop effective action

    Gamma(K, Kt) = S(K, Kt) + (1/2) log det(I + D2(K) H(Kt)),   D2 = Hess_K D,   H = Hess_Kt W = Cov_t(k) / N,

Cov_t the covariance under the tilted single-neuron measure p_t(w) ∝ prior(w) exp(k(w) . Kt / N) (eliminating Kt
gives the K-only form S + (1/2) log det(I + Hess_K D C/N) of the docs, C = N H, to the same order; the joint form
needs no inverse of H, which is singular for linear phi when d < P). Its stationary point is the posterior mean of
(K, Kt) to O(1/N^2). From the exact saddle (K*, Kt*), one Newton step of the joint system

    [[D2, I], [I, -H]] (dK, dKt) = -(a, b),   a = dCorr/dK = (1/2) grad_K tr(H M D2(K)),
                                               b = dCorr/dKt = (1/(2 N^2)) E_t[(dk . G dk) dk],

M = (I + D2 H)^-1, G = M D2, dk = k - E_t k (the tilted third cumulant), gives the shift to that order:
dKt = -M (a - D2 b), dK = H dKt - b. Every per-neuron average o-bar = (1/N) sum_i o(w_i) (the first-layer weight
covariance w w^T, the test points' cross kernel phi(x* . w) phi(X w)^T) has the same shift with a source J for o in
W (Gamma's stationarity in J at J = 0): d o-bar = Cov_t(o, k) dKt / N - dCorr/dJ, so with
r(w) = dk . dKt / N - (dk . G dk) / (2 N^2)

    d o-bar = E_t[r (o - E_t o)],

a reweighting of the tilted measure (dK is its o = k case). An observable g(K, o-bar) of the two (the mean output
f(x) = c K(x, X) (c K + kappa2)^-1 y at train and test points) has the mean

    E[g] = g + grad g . (dK, d o-bar) + (1/2) tr(P_KK Hess_KK g) + tr(P_oK Hess_Ko g),

with the fluctuations' covariances P_KK = H M, P_oK = Cov_t(o, k) M / N (the Gaussian posterior of the
fluctuations: prior covariance H, data precision D2 on K). All tilted moments are self-normalised sums over the
exact measure's sampled points (no control variate: the correction terms are covariances and third cumulants; the
saddle's own K*, cross kernel and weight covariance keep theirs).

Cost. H, D2, M and G are dense m x m (O(m^3)); D2 and its derivative in closed form (O(m^2)). The S per-point
quadratic forms dk_s . G dk_s (the third cumulant contracted with G) are what keeps the path dense: matrix-free
(products with H cost S P^2, as k_s = phi_s phi_s^T) each would need a solve, S of them; with G dense they are one
S m^2 pass, the same order as forming H. Both passes run over blocks of :data:`BLOCK` sampled points; every other
sum over points works on the features phi_s (O(S P^2) or O(S P^3)), so nothing of size S x m is held. At P = 80
(m = 3240), S = 2·10^4: ~30-40 s CPU per solution; at P = 100, ~90 s and 5 GB. P is limited to :data:`MAX_P`
(memory of the m x m matrices).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import is_traced
from adaptive_kernels.actions import deep, exact
from adaptive_kernels.actions.one_loop import _coordinates, _symmetric
from adaptive_kernels.problem import Problem

MAX_P = 100
"""Largest number of training points (m = P(P+1)/2 = 5050 coordinates: dense m x m matrices, 0.2 GB each in
float64, and two S m^2 passes over the sampled points)."""

BLOCK = 1024
"""Sampled points per block of the S x m passes (:func:`reweighting`): holds (BLOCK, m) coordinate features."""


def check(problem: Problem) -> None:
    """Raise a ValueError naming ``loops`` unless the one loop around the exact measure applies to ``problem``:
    a two-layer fully connected net with one output and at most :data:`MAX_P` training points."""
    if problem.depth != 1 or problem.patches > 1:
        raise ValueError(f"loops: the one loop around the exact measure is built for two-layer fully connected nets; "
                         f"got depth {problem.depth}, {problem.patches} patches (deep FCNs with small P: "
                         f"actions.deep_exact_one_loop)")
    check_size(problem, MAX_P)


def check_size(problem: Problem, max_p: int) -> None:
    """Raise a ValueError naming ``loops`` unless ``problem`` has one output and at most ``max_p`` training points
    (the one loops around the exact measure are dense in the P(P+1)/2 kernel entries)."""
    if problem.y.ndim != 1:
        raise ValueError(f"loops: the one loop around the exact measure needs one output, y of shape (P,); got "
                         f"{problem.y.shape}")
    if problem.P > max_p:
        raise ValueError(f"loops: the one loop around the exact measure is dense in the P(P+1)/2 entries of the "
                         f"kernel; P = {problem.P} > {max_p} is refused (use loops=0, or fewer points)")


class Reweighting(eqx.Module):
    """The one loop's reweighting of the tilted measure (module docstring) on the training inputs: the sampled points
    ``u`` with their tilted weights ``omega`` and ``shift`` = omega_s r_s, M = (I + D2 H)^-1, and the means of the
    kernel and of the first layer's weight covariance, ``kernel`` = E[K] and ``sigma`` = E[w w^T], with their
    saddle values ``saddle_kernel``, ``saddle_sigma`` (control variate)."""

    u: jax.Array
    omega: jax.Array
    shift: jax.Array
    M: jax.Array
    kernel: jax.Array
    sigma: jax.Array
    saddle_kernel: jax.Array
    saddle_sigma: jax.Array


class Moments(eqx.Module):
    """One-loop posterior means: ``kernel`` E[K] (P x P), ``sigma`` E[w w^T] of the first layer (d x d), ``mean``
    E[f] at the training and then the test points; ``saddle``: the same three at the exact saddle."""

    kernel: jax.Array
    sigma: jax.Array
    mean: jax.Array
    saddle: tuple


def readout_precision(problem: Problem, K):
    """A = (c K + kappa2 I)^-1, symmetrised: the precision of the training outputs given the kernel K."""
    A = jnp.linalg.inv(problem.readout_scale * K + problem.kappa2 * jnp.eye(problem.P, dtype=K.dtype))
    return 0.5 * (A + A.T)


def data_hessian(problem: Problem, K):
    """Hess_K D in the orthonormal coordinates (m x m, closed form, O(m^2)): with A = (c K + kappa2)^-1 and t = A y,
    D = (1/2) y^T A y + (1/2) log det(c K + kappa2) has the second derivative

        D2[E, F] = c^2 [t^T E A F t - (1/2) tr(A E A F)],

    which for the coordinates' basis matrices E = s_a sym(e_i e_j^T), F = s_b sym(e_k e_l^T) (s = 1 on the diagonal,
    sqrt 2 off it) is
    c^2 s_a s_b / 4 [t_i t_l A_jk + t_i t_k A_jl + t_j t_l A_ik + t_j t_k A_il - A_ik A_jl - A_il A_jk]
    (gathers only: no basis of m P x P matrices, and cheap to differentiate once more for the third derivative)."""
    c, A = problem.readout_scale, readout_precision(problem, K)
    t = A @ problem.y
    i, j = jnp.triu_indices(problem.P)
    s = jnp.where(i == j, 1.0, math.sqrt(2.0)).astype(K.dtype)
    A_ik, A_jl, A_il, A_jk = A[i][:, i], A[j][:, j], A[i][:, j], A[j][:, i]
    ti, tj = t[i], t[j]
    T = (jnp.outer(ti, tj) * A_jk + jnp.outer(ti, ti) * A_jl + jnp.outer(tj, tj) * A_ik + jnp.outer(tj, ti) * A_il
         - A_ik * A_jl - A_il * A_jk)
    return (0.25 * c**2) * jnp.outer(s, s) * T


def _features(problem: Problem, u, X):
    """phi(X w) of the sampled points (S, P) (``exact.layer_factor``: u are the weights at unit prior variance)."""
    return problem.activation(u @ exact.layer_factor(problem, None, 0, X).T)


def _coordinate_features(phi):
    """k(w) = phi phi^T of every sampled point in orthonormal coordinates, (S, m)."""
    rows, cols = jnp.triu_indices(phi.shape[1])
    return phi[:, rows] * phi[:, cols] * jnp.where(rows == cols, 1.0, math.sqrt(2.0)).astype(phi.dtype)


def _quadratic(phi, V):
    """phi_s^T V phi_s per sampled point: the coordinates' dot product k_s . v with V = mat(v)."""
    return jnp.sum((phi @ V) * phi, axis=1)


def _blockwise(step, init, phi, weights):
    """``lax.scan`` of ``step(carry, (phi_b, weights_b))`` over blocks of :data:`BLOCK` sampled points (zero-weight
    padding; ``weights`` (S,) or (S, k)), so that the (block, m) coordinate features are all that is held of the S x m
    ones; returns the final carry and the per-point outputs (S,). Also ``deep_exact_one_loop``'s structured sums."""
    S = phi.shape[0]
    block = min(BLOCK, S)
    count = -(-S // block)
    pad = count * block - S
    padding = ((0, pad),) + ((0, 0),) * (weights.ndim - 1)
    blocks = (jnp.pad(phi, ((0, pad), (0, 0))).reshape(count, block, -1),
              jnp.pad(weights, padding).reshape((count, block) + weights.shape[1:]))
    carry, out = jax.lax.scan(step, init, blocks)
    return carry, out.reshape(-1)[:S]


@eqx.filter_jit
def reweighting(cgf: exact.ExactCGF, problem: Problem, Kt) -> Reweighting:
    """The shift of the tilted measure from the exact saddle ``Kt`` (the conjugate kernel; ``cgf`` the sampled
    measure it was solved with) to Gamma's stationary point (module docstring), and E[K], E[w w^T].

    The two S x m x m passes (H and the quadratic forms dk . G dk) run over blocks of sampled points; everything else
    is O(S P^2) on the features phi_s (k_s . v = phi_s^T mat(v) phi_s) or O(m^3) on dense m x m matrices."""
    P, N = problem.P, problem.widths[0]
    dtype = problem.X.dtype
    u, omega, _, _ = cgf.tilted(problem, Kt, deep.input_covariance(problem, problem.X), 0, problem.X)
    K = deep.sampled_forward(problem, problem.X, (Kt,), cgf)[0][0]  # the saddle's kernel (control variate)
    phi = _features(problem, u, problem.X)
    K_bar = (phi * omega[:, None]).T @ phi  # E_t[k] (self-normalised; no control variate: the centring of k)
    k_bar = _coordinates(K_bar)
    m = k_bar.shape[0]

    def second_moment(H, xs):
        p, w = xs
        dk = _coordinate_features(p) - k_bar
        return H + (dk * w[:, None]).T @ dk, jnp.zeros(p.shape[0], dtype)

    H = _blockwise(second_moment, jnp.zeros((m, m), dtype), phi, omega)[0] / N
    D2 = data_hessian(problem, K)
    M = jnp.linalg.inv(jnp.eye(m, dtype=dtype) + D2 @ H)
    G = M @ D2  # = (D2^-1 + H)^-1, symmetric
    HM = jax.lax.stop_gradient(H @ M)
    a = 0.5 * jax.grad(lambda x: jnp.sum(HM * data_hessian(problem, _symmetric(x, P))))(_coordinates(K))

    def third_moment(b, xs):
        p, w = xs
        dk = _coordinate_features(p) - k_bar
        quad = jnp.sum(dk * (dk @ G), axis=1)  # dk . G dk
        return b + (w * quad) @ dk, quad

    third, quad = _blockwise(third_moment, jnp.zeros(m, dtype), phi, omega)
    b = third / (2.0 * N**2)
    dKt = -M @ (a - D2 @ b)
    r = omega * ((_quadratic(phi, _symmetric(dKt, P)) - k_bar @ dKt) / N - quad / (2.0 * N**2))  # omega_s r_s
    # first-layer weight covariance (s_w2/d) E[u u^T] on the weight coordinates (exact.first_layer_covariance)
    w = jnp.sqrt(problem.s_w2 / problem.d) * u[:, : problem.d]
    sigma = exact.first_layer_covariance(cgf, problem, (Kt,))
    kernel = K + (phi * r[:, None]).T @ phi - jnp.sum(r) * K_bar  # K + sum_s omega_s r_s (k_s - E_t k)
    return Reweighting(u, omega, r, M, kernel,
                       sigma + (w * r[:, None]).T @ w - jnp.sum(r) * ((w * omega[:, None]).T @ w), K, sigma)


@eqx.filter_jit
def output_moments(cgf: exact.ExactCGF, problem: Problem, Kt, X_all, rw: Reweighting):
    """(one-loop mean, saddle mean, saddle predictive variance) of the output at the points ``X_all`` = [X; X_test]
    (module docstring: g = c O A y, O the cross kernel of the points with the training set, A = (c K + kappa2)^-1).

    The fluctuation terms need mat(M^T dk_s) only contracted with t (per point) and, weighted by omega_s, with a
    per-point vector T2_s; both are linear in dk_s, so they are taken through m x P matrices, O(S P^3 + m^2 P),
    using (mat(v) x) . z = v . coords(sym(z x^T)) (orthonormal coordinates: Frobenius products are dot products)."""
    P, N, c = problem.P, problem.widths[0], problem.readout_scale
    dtype = problem.X.dtype
    omega, r, K = rw.omega, rw.shift, rw.saddle_kernel
    phi_all = _features(problem, rw.u, X_all)
    phi = phi_all[:, :P]
    padded = jnp.zeros((X_all.shape[0],) * 2, dtype).at[:P, :P].set(Kt)
    K_all = deep.extended_kernels(problem, X_all, (padded,), cgf)[0]  # the saddle's (control variate)
    cross = K_all[:, :P]
    A = readout_precision(problem, K)
    t = A @ problem.y
    O_bar = (phi_all * omega[:, None]).T @ phi  # E_t[o] (no control variate: the centring of o)
    K_bar = O_bar[:P]
    k_bar = _coordinates(K_bar)
    eye = jnp.eye(P, dtype=dtype)

    def along_o(weights, vectors):
        """sum_s weights_s (o_s - E_t o) vectors_s, o_s = phi_all_s phi_s^T (vectors: (S, P) or (P,))."""
        if vectors.ndim == 1:
            return phi_all.T @ (weights * (phi @ vectors)) - jnp.sum(weights) * (O_bar @ vectors)
        return phi_all.T @ (weights * jnp.sum(phi * vectors, axis=1)) - O_bar @ (weights @ vectors)

    def along_k(vectors):
        """(k_s - E_t k) vectors_s per s (matrices; vectors (S, P))."""
        return phi * jnp.sum(phi * vectors, axis=1, keepdims=True) - vectors @ K_bar

    def sym_coordinates(x):
        """coords(sym(e_p x^T)) for p = 1..P, as the columns of an m x P matrix."""
        return jax.vmap(lambda e: _coordinates(0.5 * (jnp.outer(e, x) + jnp.outer(x, e))), out_axes=1)(eye)

    # Bt_s = mat(M^T dk_s) t = (dk_s . L_p)_p, L = M coords(sym(e_p t^T))
    L = rw.M @ sym_coordinates(t)
    V = jax.vmap(lambda v: _symmetric(v, P))(L.T)  # (P, P, P)
    Bt = jax.lax.map(lambda v: _quadratic(phi, v), V).T - k_bar @ L  # one P at a time: no (S, P, P) array
    T2 = along_k(jnp.broadcast_to(t, phi.shape)) @ A
    # sum_s omega_s mat(M^T dk_s) T2_s = (sum_q mat(Y_q)[p, q])_p, Y = M^T sum_s omega_s dk_s T2_s^T
    weighted = (jax.lax.map(lambda x: (phi * x[:, None]).T @ phi, (omega[:, None] * T2).T)
                - (omega @ T2)[:, None, None] * K_bar)
    Y = rw.M.T @ jax.vmap(_coordinates, out_axes=1)(weighted)
    along_M = jnp.einsum("qpq->p", jax.vmap(lambda v: _symmetric(v, P))(Y.T))
    shift = c * along_o(r, t) - c**2 * cross @ (A @ ((rw.kernel - K) @ t))  # grad g . (dK, d o-bar)
    mixed = -(c**2 / N) * along_o(omega, Bt @ A)  # tr(P_oK Hess_Ko g)
    second = omega @ along_k(Bt @ A) + along_M
    curvature = (c**3 / (2.0 * N)) * cross @ (A @ second)  # (1/2) tr(P_KK Hess_KK g)
    saddle = c * cross @ t
    variance = c * jnp.diagonal(K_all) - c**2 * jnp.sum((cross @ A) * cross, axis=1)
    return saddle + shift + mixed + curvature, saddle, variance


def moments(cgf: exact.ExactCGF, problem: Problem, Kt, X_all) -> Moments:
    """The one-loop means (module docstring) at the exact saddle ``Kt`` (the conjugate kernel), with ``cgf`` the
    sampled measure the saddle was solved with, on the inputs ``X_all`` = [X; X_test]."""
    rw = reweighting(cgf, problem, Kt)
    mean, saddle, _ = output_moments(cgf, problem, Kt, X_all, rw)
    return Moments(rw.kernel, rw.sigma, mean, (rw.saddle_kernel, rw.saddle_sigma, saddle))


_LAST: list = []
"""[(theory, Kt, problem, cgf, reweighting)] of the last :func:`mean` on concrete inputs: ``summarize`` asks for three
means of one solution (prediction, layer kernels, input covariances), which share one :func:`reweighting` (two
S m^2 passes: ~30 s CPU at P = 80). Matched by identity of the (immutable) inputs, whose references it holds."""


def shared_per_solution(cache: list, theory, problem: Problem, value, compute):
    """(cgf, compute(cgf, problem, value)) for the saddle ``value`` of ``theory`` on ``problem``, made once per
    solution: ``cache`` holds the last concrete (theory, value, problem, cgf, result), matched by identity (traced
    inputs are never cached). Shared by this module's and ``deep_exact_one_loop``'s ``mean``."""
    traced = is_traced(jax.tree.leaves(value)[0])
    for entry in [] if traced else cache:
        if entry[0] is theory and entry[1] is value and entry[2] is problem:
            return entry[3], entry[4]
    cgf = theory._cgf(problem)
    out = compute(cgf, problem, value)
    if not traced:
        cache[:] = [(theory, value, problem, cgf, out)]
    return cgf, out


def mean(theory, fn, value, problem: Problem):
    """``Adaptive.mean`` for ``measure="exact", loops=1``: (E[fn], None) for the observables ``summarize`` and
    ``predict`` take means of -- the GP prediction (its mean output corrected; the test variance that of the
    saddle, and the kernel c E[K]), the layer kernels (E[K],) and the input covariances (E[w w^T],) -- at the saddle
    ``value`` (one :func:`reweighting`, shared by all three: :func:`shared_per_solution`)."""
    from adaptive_kernels.prediction import Prediction, _gp_prediction

    cgf, rw = shared_per_solution(_LAST, theory, problem, value[0], reweighting)
    Kt = value[0]
    func = getattr(fn, "func", None)
    if func is type(theory).layer_kernels:
        return (rw.kernel,), None
    if func is type(theory).input_covariances:
        return (rw.sigma,), None
    if func is _gp_prediction:
        X_test, P = fn.keywords.get("X_test"), problem.P
        X_all = problem.X if X_test is None else jnp.concatenate([problem.X, X_test])
        means, _, variance = output_moments(cgf, problem, Kt, X_all, rw)
        test = (None, None) if X_test is None else (means[P:], variance[P:])
        return Prediction(means[:P], *test, problem.readout_scale * rw.kernel), None
    raise NotImplementedError(f"loops: the one loop around the exact measure has no mean of {fn!r}")


def with_loops(solution, loops: int = 1):
    """An exact-measure solution with its theory's ``loops`` set: the same saddle (the one loop acts on the
    observables), so one solve gives both ``summarize(solution)`` and ``summarize(with_loops(solution))``."""
    exact._check_exact(solution)
    return solution.with_theory(dataclasses.replace(solution.theory, loops=loops))
