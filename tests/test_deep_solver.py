"""The deep solver's reduced convergence matrix (issue 14; the full one: ``bench/cases/deep_matrix.py``).

The default deep solver (Newton-Krylov steps on the whitened kernel form, ``actions.krylov``) must converge in
mean-field and intermediate scaling at depth 3-4 for erf and ReLU nets. Each solution is checked against things
independent of the solver: the gradient of the primal action in the per-layer kernels K_l, written out here from
THEORY.md sec. 5 with plain slogdet and the closed-form erf / arc-cosine maps (it must vanish at the saddle), and
the forward-backward equations of the conjugate form (``Adaptive(form="conjugate")``), solved from the NNGP with
its own fixed-point iteration where that converges.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import adaptive_kernels as ak
from adaptive_kernels.actions import deep as act
from adaptive_kernels.gp import data_term
from adaptive_kernels.solvers import Continuation, TrustRegion, stationary_point

KAPPA2 = 1e-2
D, N, P = 20, 200, 24


def _erf_map(C):
    d = jnp.diag(C)
    return (2 / jnp.pi) * jnp.arcsin(2 * C / jnp.sqrt(jnp.outer(1 + 2 * d, 1 + 2 * d)))


def _relu_map(C):
    """E[relu(u) relu(v)] = sqrt(C_ii C_jj)/(2 pi) (sin t + (pi - t) cos t), cos t = rho; C_ii/2 on the diagonal
    (written so that the arccos is never differentiated at rho = 1)."""
    eye = jnp.eye(C.shape[0], dtype=bool)
    norm = jnp.sqrt(jnp.outer(jnp.diag(C), jnp.diag(C)))
    rho = jnp.where(eye, 0.0, C) / norm
    t = jnp.arccos(rho)
    off = norm / (2 * jnp.pi) * (jnp.sqrt(1 - rho**2) + (jnp.pi - t) * rho)
    return jnp.where(eye, jnp.diag(C)[:, None] / 2 * jnp.eye(C.shape[0]), off)


MAPS = {"erf": _erf_map, "relu": _relu_map}


def primal_action(kernels, arch, X, y):
    """sum_l N_l KL(N(0, K_l) || N(0, G_l)) + D(c K_L), G_1 = k_phi(s_w2 X X^T / d), G_{l+1} = k_phi(s_w2 K_l)
    (no bias), with slogdet and dense solves."""
    kmap = MAPS[arch.activation.name]
    C = arch.s_w2 * X @ X.T / arch.d
    total = 0.0
    for width, K in zip(arch.widths, kernels):
        G = kmap(C)
        kl = 0.5 * (jnp.trace(jnp.linalg.solve(G, K)) - K.shape[0] - jnp.linalg.slogdet(K)[1] + jnp.linalg.slogdet(G)[1])
        total = total + width * kl
        C = arch.s_w2 * K
    A = arch.readout_scale * kernels[-1] + KAPPA2 * jnp.eye(X.shape[0])
    return total + 0.5 * y @ jnp.linalg.solve(A, y) + 0.5 * jnp.linalg.slogdet(A)[1]


CELLS = [("erf", 3, 2.0), ("erf", 3, 1.5), ("relu", 4, 2.0)]


@functools.lru_cache(maxsize=None)
def _solved(activation, depth, gamma):
    """(arch, data, default solution) of a cell (shared by the tests of this module that use it)."""
    data = ak.teacher_dataset(jax.random.PRNGKey(3), P, D, "cubic", P_test=10)
    arch = ak.FCN(D, (N,) * depth, activation, gamma=gamma)
    return arch, data, ak.solve(arch, data, KAPPA2, "adaptive")


@pytest.fixture(scope="module", params=[pytest.param(c, marks=pytest.mark.slow) if c == ("erf", 3, 2.0) else c for c in CELLS],
                ids=[f"{a}-L{L}-gamma{g}" for a, L, g in CELLS])
def cell(request):
    return _solved(*request.param)


def test_default_solver_converges_to_a_stationary_point_of_the_primal_action(cell):
    """SUCCESS, and the gradient of the independently written primal action in the K_l vanishes: |dS/dK_l| is
    below 1e-6 of its entropic part (N_l/2)|K_l^-1| (the solver's own residual is 1e-10)."""
    arch, data, sol = cell
    assert bool(sol.converged), sol.message
    assert int(sol.iterations) < 60
    kernels = ak.layer_kernels(sol, arch, data, KAPPA2)
    grads = jax.grad(primal_action)(kernels, arch, data.X, data.y)
    for width, K, g in zip(arch.widths, kernels, grads):
        scale = 0.5 * width * float(jnp.linalg.norm(jnp.linalg.inv(K)))
        assert float(jnp.linalg.norm(g)) < 1e-6 * scale


def test_solution_satisfies_the_forward_backward_equations(cell):
    """The conjugates of the default solution (the backward pass from its kernels) are a fixed point of the
    conjugate (forward-backward) map to 5e-8 relative, inside its domain (that map's relative residual runs 100-300x
    the precision map's, whose stopping tolerance is 1e-10: measured 5e-9 / 1.4e-8 at ReLU L = 4, gamma = 2 for
    solutions stopped at 4.6e-11 / 5.5e-11 by the Newton / trust-region rules, their kernels equal to 3e-11); where the
    conjugate form's own fixed-point iteration converges from the NNGP, both give the same output kernel to 1e-8."""
    arch, data, sol = cell
    problem = ak.make_problem(arch, data, KAPPA2)
    kernels = ak.layer_kernels(sol, arch, data, KAPPA2)
    conjugates = act.backward_conjugates(problem, kernels)
    fb_map = act.ConjugateMap()
    _, residual, _, margin = fb_map.report(conjugates, problem)
    assert float(residual) < 5e-8 and float(margin) > 0
    if float(arch.gamma) < 2:  # the conjugate iteration converges from the NNGP there (at gamma = 2 it stalls)
        fb = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate"))
        assert bool(fb.converged), fb.message
        K_fb = ak.layer_kernels(fb, arch, data, KAPPA2)[-1]
        np.testing.assert_allclose(kernels[-1], K_fb, rtol=0, atol=1e-8 * float(jnp.abs(K_fb).max()))


class CholeskyWhitenedAction(act.WhitenedKernelAction):
    """The kernel form in the previous coordinates: every layer whitened by the Cholesky factor of its prior kernel
    (``deep.prior_factor``) instead of the symmetric square root (``deep.whitening_factor``). The same action of the
    same kernels K_l, so the same saddle, in other coordinates Q_l."""

    def data_term(self, covariances, problem):
        K = act.whitened_chain(problem, problem.X, covariances, act.prior_factor)[-1]
        return data_term(problem.readout_scale * K, problem.y, problem.kappa2)


def test_symmetric_whitening_gives_the_cholesky_coordinates_saddle_in_fewer_evaluations():
    """ReLU, L = 4, gamma = 2 (the reduced matrix's cell): the default solve in symmetric-root coordinates and the same
    solver in the previous Cholesky coordinates reach the same per-layer kernels (to 1e-10 relative: both stop at
    stationarity residual 1e-10), and the symmetric coordinates need fewer evaluations of the map (in Cholesky
    coordinates the raised directions of the upper layers turn with every step below them: docs/deep_solver.md)."""
    arch, data, sol = _solved("relu", 4, 2.0)
    problem = ak.make_problem(arch, data, KAPPA2)
    action = CholeskyWhitenedAction()
    old = stationary_point(action, Continuation(), action.initial(problem), problem, implicit=False)
    assert bool(sol.converged) and bool(old.converged), (sol.message, old.message)
    kernels = ak.layer_kernels(sol, arch, data, KAPPA2)
    for K, K_old in zip(kernels, act.whitened_chain(problem, problem.X, old.value, act.prior_factor)):
        np.testing.assert_allclose(K, K_old, rtol=0, atol=1e-10 * float(jnp.abs(K_old).max()))
    assert int(sol.iterations) < int(old.iterations)


# --- deep linear nets: the CLI's per-layer eigenvalue ratios against exact Gibbs sampling -------------------------
def test_cli_per_layer_eigenvalue_ratios_match_gibbs(tmp_path, capsys):
    """``adaptive-kernels solve --depth 2 --json`` on a deep linear net in mean field (d = 10, N_l = 60, P = 24,
    gamma = 2): its ``eigenvalue_ratio`` list (the input-space covariance Sigma_l of each layer along w_star, from
    the default kernel form) against exact Gibbs sampling of the finite net. The sampler's Sigma_l: its layer
    kernel E[H_l H_l^T]/N_l = X Sigma_l X^T mapped back with the pseudo-inverse of X (P > d; for layer 1 also
    E[W_1^T W_1]/N_1 directly). Within 6% per layer (the Gaussian saddle is 1-4% off at such widths, THEORY.md
    sec. 4; Monte Carlo ~0.5%)."""
    from adaptive_kernels.cli import main

    sampling = pytest.importorskip("adaptive_kernels.sampling")
    data = ak.teacher_dataset(jax.random.PRNGKey(5), 24, 10, P_test=50)
    path = tmp_path / "data.npz"
    np.savez(path, **{k: np.asarray(getattr(data, k)) for k in ("X", "y", "X_test", "y_test", "w_star")})
    argv = ["solve", "--data", str(path), "--width", "60", "--depth", "2", "--gamma", "2", "--kappa2", "0.01", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    arch = ak.FCN(10, (60, 60), "linear", gamma=2.0)
    est = sampling.sample_posterior(arch, data, 1e-2, method="gibbs", num_chains=2, num_samples=300, num_warmup=150, key=2)
    pinv = np.linalg.pinv(np.asarray(data.X))
    sampled = [float(ak.eigenvalue_ratio(pinv @ np.asarray(K.mean) @ pinv.T, data.w_star)) for K in est.kernels]
    np.testing.assert_allclose(sampled[0], float(est.eigenvalue_ratio[0].mean), rtol=1e-6)
    assert sampled[1] > sampled[0] > 1.2  # adaptation along the teacher, growing with depth
    assert len(out["eigenvalue_ratio"]) == 2
    np.testing.assert_allclose(out["eigenvalue_ratio"], sampled, rtol=0.06)


# --- the continuation fallback -------------------------------------------------------------------------------------
def test_continuation_fallback_where_the_cold_start_fails():
    """A cold start cut off after 3 evaluations (``cold_steps=3``, erf L = 2, gamma = 2) fails; the default solver
    then continues in the data term (``Continuation``) and must report it in ``Solution.stats``, converge, reach a
    stationary point of the independently written primal action (|dS/dK_l| < 1e-6 of its entropic part) and give the
    kernels of the cold start with its full budget (same compiled solve: ``cold_steps`` is a dynamic leaf) to 1e-8."""
    from adaptive_kernels.solvers import Status

    data = ak.teacher_dataset(jax.random.PRNGKey(4), 20, D, "cubic", P_test=10)
    arch = ak.FCN(D, (N, N), "erf", gamma=2.0)
    short = ak.solve(arch, data, KAPPA2, "adaptive", solver=Continuation(cold_steps=3))
    cold = ak.solve(arch, data, KAPPA2, "adaptive", solver=Continuation())
    assert bool(short.converged), short.message
    assert int(short.stats["cold_start"]) == Status.MAX_STEPS and int(short.stats["continuation_stages"]) == 4
    assert int(cold.stats["cold_start"]) == Status.SUCCESS and int(cold.stats["continuation_stages"]) == 0
    kernels = ak.layer_kernels(short, arch, data, KAPPA2)
    grads = jax.grad(primal_action)(kernels, arch, data.X, data.y)
    for width, K, g in zip(arch.widths, kernels, grads):
        assert float(jnp.linalg.norm(g)) < 1e-6 * 0.5 * width * float(jnp.linalg.norm(jnp.linalg.inv(K)))
    for K, K_cold in zip(kernels, ak.layer_kernels(cold, arch, data, KAPPA2)):
        np.testing.assert_allclose(K, K_cold, rtol=0, atol=1e-8 * float(jnp.abs(K_cold).max()))
    with pytest.raises(ValueError, match="cold_steps"):
        Continuation(cold_steps=0)


def test_trust_region_rule_checks_its_input():
    """The trust-region rule (the deep kernel form's default steps) needs a Krylov Jacobian model: on a two-layer net
    (a direct Newton model) it says so; bad settings name the parameter."""
    data = ak.teacher_dataset(jax.random.PRNGKey(4), 12, 5, P_test=4)
    with pytest.raises(TypeError, match="Krylov"):
        ak.solve(ak.FCN(5, (20,), "erf"), data, KAPPA2, "adaptive", solver=TrustRegion())
    for name, value in (("radius", 0.0), ("shrink", 1.5), ("grow", 0.5), ("max_steps", 0), ("path", "geodesic"),
                        ("subproblem", "exact")):
        with pytest.raises(ValueError, match=name):
            TrustRegion(**{name: value})


# --- the trust-region step: linear in the covariances ------------------------------------------------------------
def test_sigma_retraction_is_the_inverse_of_the_linear_covariance_step():
    """``sigma_retraction`` (the trust-region rule's trial precisions) against a dense inverse of
    Sigma - Sigma delta Sigma, Sigma = Lambda^{-1}; Lambda itself for delta = 0. ``exponential_retraction`` (the
    exponential path's) against Lambda^{1/2} expm(Lambda^{-1/2} delta Lambda^{-1/2}) Lambda^{1/2} by scipy."""
    from adaptive_kernels.actions.krylov import exponential_retraction, sigma_retraction

    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    Lam = A @ A.T + 6 * np.eye(6)
    Sigma = np.linalg.inv(Lam)
    B = rng.normal(size=(6, 6))
    delta = 0.5 * (B + B.T)  # eigenvalues of Sigma^1/2 delta Sigma^1/2 below 1: Sigma - Sigma delta Sigma stays SPD
    expected = np.linalg.inv(Sigma - Sigma @ delta @ Sigma)
    np.testing.assert_allclose(sigma_retraction(jnp.asarray(Lam), jnp.asarray(delta), jnp.asarray(Sigma @ delta)),
                               expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    zero = jnp.zeros((6, 6))
    np.testing.assert_array_equal(sigma_retraction(jnp.asarray(Lam), zero, zero), Lam)
    # the exponential path's trial point (a Cholesky factor inside) against the geodesic by scipy's sqrtm and expm
    root = np.real(scipy.linalg.sqrtm(Lam))
    inv_root = np.linalg.inv(root)
    geodesic = root @ scipy.linalg.expm(3 * inv_root @ delta @ inv_root) @ root
    np.testing.assert_allclose(exponential_retraction(jnp.asarray(Lam), 3 * jnp.asarray(delta)), geodesic, rtol=1e-10,
                               atol=1e-12 * np.abs(geodesic).max())


def test_rotation_retraction_turns_separated_eigenvectors_and_adds_the_rest():
    """``rotation_retraction`` (the default trust-region path's trial point) for Lambda = U diag(lam) U^T with two
    raised precisions below a near-degenerate bulk: along the tangent of a rotation that mixes only separated
    eigenvalues it is the rotated matrix U expm(W) diag(lam) expm(W)^T U^T by scipy (spectrum unchanged); a step that
    changes eigenvalues or mixes the bulk only is added; and any step agrees with Lambda + delta to first order."""
    from adaptive_kernels.actions.krylov import rotation_retraction

    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    lam = np.array([0.25, 0.5, 1.0, 1.02, 0.98, 1.01])
    Lam = (U * lam) @ U.T
    W = np.zeros((6, 6))
    W[:2, 2:] = rng.normal(scale=0.3, size=(2, 4))
    W[0, 1] = 0.2
    W = W - W.T  # generator mixing only separated pairs (raised-bulk and the two raised ones)
    tangent = U @ (W @ np.diag(lam) - np.diag(lam) @ W) @ U.T
    rotated = U @ scipy.linalg.expm(W) @ np.diag(lam) @ scipy.linalg.expm(W).T @ U.T
    got = np.asarray(rotation_retraction(jnp.asarray(Lam), jnp.asarray(tangent)))
    np.testing.assert_allclose(got, rotated, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(got), np.sort(lam), rtol=0, atol=1e-12)
    assert np.abs(rotated - (Lam + tangent)).max() > 1e-2  # the straight line is not the arc
    B = rng.normal(size=(4, 4))
    bulk = np.zeros((6, 6))
    bulk[2:, 2:] = B + B.T
    for added in (U @ np.diag(rng.normal(scale=0.1, size=6)) @ U.T, U @ (0.05 * bulk) @ U.T):
        np.testing.assert_allclose(rotation_retraction(jnp.asarray(Lam), jnp.asarray(added)), Lam + added, rtol=0,
                                   atol=1e-12)
    C = rng.normal(size=(6, 6))
    step = C + C.T
    errors = [np.abs(np.asarray(rotation_retraction(jnp.asarray(Lam), t * jnp.asarray(step))) - Lam - t * step).max()
              for t in (1e-2, 1e-3)]
    assert 50 < errors[0] / errors[1] < 200  # second order: the error falls 100x for a 10x shorter step


def test_additive_path_reaches_the_default_saddle():
    """The default's trial path turns separated eigenvectors (``path="rotation"``); the previous default,
    ``TrustRegion(path="additive")``, on the reduced matrix's ReLU cell (L = 4, gamma = 2) converges to the same
    per-layer kernels (to 1e-8 relative; both stop at stationarity residual 1e-10), which the tests above check
    against the primal action."""
    arch, data, sol = _solved("relu", 4, 2.0)
    additive = ak.solve(arch, data, KAPPA2, "adaptive", solver=Continuation(rule=TrustRegion(path="additive")))
    assert bool(additive.converged), additive.message
    for K, K_add in zip(ak.layer_kernels(sol, arch, data, KAPPA2), ak.layer_kernels(additive, arch, data, KAPPA2)):
        np.testing.assert_allclose(K_add, K, rtol=0, atol=1e-8 * float(jnp.abs(K).max()))


def test_lanczos_trust_step_is_the_trust_region_minimiser():
    """``trust_step(..., subproblem="lanczos")`` (GLTR) against the minimiser of the Newton model over the ball found
    densely (the operator as a matrix on an orthonormal basis of symmetric matrices, the secular equation by brentq),
    for an indefinite I - J (1 - mu_i mu_j, mu the eigenvalues of M): inside the ball (lambda = 0, the CG iterate) and
    on its boundary; Steihaug's step is not that minimiser on the boundary."""
    from scipy.optimize import brentq

    from adaptive_kernels.actions.krylov import KrylovPrecisionModel

    n, rng = 4, np.random.default_rng(1)
    A, B = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    basis = [np.outer(np.eye(n)[i], np.eye(n)[j]) for i in range(n) for j in range(i, n)]
    basis = [(E + E.T) / np.linalg.norm(E + E.T) for E in basis]
    R = B + B.T
    g = np.array([np.sum(E * R) for E in basis])

    @jax.jit
    def steps(M, radius):  # (I - J) x = x - M x M in the Frobenius metric (Sigma = I, N = 2)
        model = KrylovPrecisionModel({"a": jnp.eye(n)}, {"a": 2.0},
                                     jax.tree_util.Partial(lambda t, M: {"a": -M @ t["a"] @ M}, M=M), rtol=1e-13,
                                     max_steps=30)
        return (model.trust_step({"a": jnp.asarray(R)}, radius, "additive", "lanczos"),
                model.trust_step({"a": jnp.asarray(R)}, radius, "additive").predicted)

    for scale, radius in ((0.5, 1e3), (0.5, 2.0), (1.3, 2.0)):
        M = scale * (A + A.T) / 2 / np.sqrt(n)
        H = np.array([[np.sum(Ei * (Ej - M @ Ej @ M)) for Ej in basis] for Ei in basis])
        theta, V = np.linalg.eigh(H)
        c = V.T @ g
        size = lambda lam: np.linalg.norm(c / (theta + lam))  # noqa: E731
        lam = 0.0 if theta[0] > 0 and size(0.0) <= radius else brentq(
            lambda x: size(x) - radius, max(0.0, -theta[0]) + 1e-12, 1e6)
        x = V @ (c / (theta + lam))
        expected = sum(xi * E for xi, E in zip(x, basis))
        step, steihaug = steps(jnp.asarray(M), radius)
        np.testing.assert_allclose(step.delta["a"], expected, atol=1e-9 * np.abs(expected).max())
        np.testing.assert_allclose(step.predicted, g @ x - x @ H @ x / 2, rtol=1e-10)
        assert lam == 0 or step.predicted > steihaug * (1 + 1e-6)


def test_newton_model_is_the_taylor_expansion_along_the_trial_path():
    """Away from the saddle (the NNGP start of a mean-field ReLU net, L = 2), the decrease of the action that the
    trust-region step's Newton model predicts for t delta matches the actual decrease at the trial point
    ``TrustStep.point`` to third order in t (the error falls 8x when t halves): the model is the second-order Taylor
    expansion of S along Sigma - t Sigma delta Sigma. Along the additive step in the precisions, Lambda + t delta,
    the error is second order (falls 4x): the mismatch, proportional to the residual, that made the previous trial
    point reject more steps (docs/deep_solver.md)."""
    from adaptive_kernels.solvers.stationary import as_fixed_point_problem

    data = ak.teacher_dataset(jax.random.PRNGKey(3), 12, D, "cubic", P_test=4)
    problem = ak.make_problem(ak.FCN(D, (N,) * 2, "relu", gamma=2.0), data, KAPPA2)
    theory = ak.Adaptive().prepared(problem)
    action, args = theory.problem(problem)
    fp = as_fixed_point_problem(action, theory.init(problem, args))
    ts = (0.4, 0.2, 0.1)

    @jax.jit
    def errors(x, args):  # |actual - predicted decrease| at t delta, per path and t
        Tx, info = fp(x, args)
        model = fp.model(x, args)
        out = []
        for path in ("covariance", "additive"):
            step = model.trust_step(jax.tree.map(jnp.subtract, Tx, x), 5.0, path)
            for t in ts:
                scaled = step.scaled(t)
                out.append(jnp.abs(info.merit - fp(scaled.point(x), args)[1].merit - scaled.predicted))
        return jnp.stack(out).reshape(2, len(ts))

    linear, additive = np.asarray(errors(fp.start(theory.init(problem, args), args), args))
    assert np.all(linear < additive)
