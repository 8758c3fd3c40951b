"""The Gaussian-mixture single-neuron ansatz (``measure="mixture"``, ``actions.mixture``; issue 17).

References independent of the code under test: scipy's bivariate normal CDF (the erf kernel at nonzero means is an
orthant probability) and Monte Carlo over weights; a quadrature grid for the mixture's KL divergence; the Gaussian
ansatz's closed-form arcsine kernel and action (``actions.adaptive``), which a collapsed mixture must reproduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import adaptive_kernels as ak
from adaptive_kernels.actions import mixture
from adaptive_kernels.actions.adaptive import TwoLayerAdaptiveAction


@pytest.fixture(scope="module")
def setup():
    d = 4
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 12, d, teacher="cubic", eps=1.0, P_test=50)
    arch = ak.FCN(d, 30, "erf", gamma=2.0)
    problem = ak.make_problem(arch, data, 0.1)
    A = jax.random.normal(jax.random.PRNGKey(1), (d, d))
    Sigma = A @ A.T / d + 0.2 * jnp.eye(d)
    return arch, data, problem, Sigma


def test_erf_product_mean_against_bivariate_normal_cdf_and_monte_carlo():
    """E[erf(u) erf(v)] = E[sign(sqrt2 u - eta1) sign(sqrt2 v - eta2)] = 4 F(0, 0) - 2 F_A(0) - 2 F_B(0) + 1 with F
    the CDF of (eta - sqrt2 u) (scipy); and a Monte Carlo average of erf(u) erf(v)."""
    mu1, mu2, c11, c12, c22 = 0.7, -0.4, 2.5, -1.1, 0.9
    ours = float(mixture.gaussian_product_mean(ak.activations.Erf(), *map(jnp.asarray, (mu1, mu2, c11, c12, c22))))
    mean = -np.sqrt(2) * np.array([mu1, mu2])
    cov = 2 * np.array([[c11, c12], [c12, c22]]) + np.eye(2)
    F = multivariate_normal(mean, cov).cdf(np.zeros(2))
    Fa = multivariate_normal(mean[0], cov[0, 0]).cdf(0.0)
    Fb = multivariate_normal(mean[1], cov[1, 1]).cdf(0.0)
    assert ours == pytest.approx(4 * F - 2 * Fa - 2 * Fb + 1, abs=1e-6)  # scipy's CDF integrates to ~1e-8
    uv = np.random.default_rng(0).multivariate_normal([mu1, mu2], [[c11, c12], [c12, c22]], size=400_000)
    samples = jax.scipy.special.erf(uv[:, 0]) * jax.scipy.special.erf(uv[:, 1])
    assert abs(ours - float(jnp.mean(samples))) < 4 * float(jnp.std(samples)) / np.sqrt(len(samples))


def test_mixture_kernel_against_monte_carlo_and_arcsine(setup):
    """K_rho between inputs (one pair at +-m): a Monte Carlo average over weights; at m = 0 the arcsine kernel."""
    arch, data, problem, Sigma = setup
    m = jnp.array([0.6, -0.3, 0.2, 0.5])
    value = (mixture.encode(1.0, m, Sigma),)
    K, diag = mixture.mixture_kernel(problem, value, problem.X)
    L = jnp.linalg.cholesky(Sigma)
    z = jax.random.normal(jax.random.PRNGKey(2), (200_000, 4))
    W = jnp.concatenate([m + z @ L.T, -m + z @ L.T])
    phi = jax.scipy.special.erf(problem.X @ W.T)
    K_mc = problem.readout_scale * phi @ phi.T / W.shape[0]
    assert np.max(np.abs(K - K_mc)) < 8e-3 * problem.readout_scale  # ~5 standard errors of 4e5 draws
    np.testing.assert_allclose(diag, jnp.diagonal(K), rtol=1e-12)
    centred = (mixture.encode(1.0, jnp.zeros(4), Sigma),)
    np.testing.assert_allclose(mixture.mixture_kernel(problem, centred, problem.X)[0],
                               problem.two_layer_kernel(Sigma).nngp, rtol=1e-10, atol=1e-15)


def test_kl_divergence_against_quadrature_grid():
    """KL(rho || N(0, I/a)) of a two-component symmetrised mixture in d = 2, on a grid; with coinciding halves the
    sampled overlap correction is exact and the KL is the Gaussian's closed form."""
    a, d = 2.0, 2
    rng = np.random.default_rng(0)
    comps = []
    for s, m in [(0.3, [1.2, 0.0]), (0.7, [0.5, 1.5])]:
        A = rng.normal(size=(d, d))
        comps.append((s, np.array(m), A @ A.T / 4 + 0.2 * np.eye(d)))
    value = tuple(mixture.encode(s, jnp.asarray(m), jnp.asarray(S)) for s, m, S in comps)
    x = np.linspace(-7, 7, 701)
    pts = np.stack([g.ravel() for g in np.meshgrid(x, x)], 1)
    pi = np.array([c[0] for c in comps]) / sum(c[0] for c in comps)
    rho = sum(p * 0.5 * (multivariate_normal(m, S).pdf(pts) + multivariate_normal(-m, S).pdf(pts))
              for p, (_, m, S) in zip(pi, comps))
    log_prior = multivariate_normal(np.zeros(d), np.eye(d) / a).logpdf(pts)
    grid = np.sum(rho * (np.log(rho) - log_prior)) * (x[1] - x[0]) ** 2
    ours = [float(mixture.kl_divergence(value, a, mixture.antithetic_draws(100_000, seed, d)))
            for seed in range(3)]
    assert abs(np.mean(ours) - grid) < 3e-3, (ours, grid)  # sampling spread of one estimate ~2e-3
    _, _, S = comps[1]
    same = (mixture.encode(0.2, jnp.zeros(d), jnp.asarray(S)), mixture.encode(0.5, jnp.zeros(d), jnp.asarray(S)))
    closed = 0.5 * (a * np.trace(S) - d - d * np.log(a) - np.linalg.slogdet(S)[1])
    assert float(mixture.kl_divergence(same, a, jnp.ones((3, d)))) == pytest.approx(closed, rel=1e-12)


@pytest.mark.slow
def test_collapsed_mixture_is_the_gaussian_ansatz(setup):
    """One pair at m = 0, or two identical components (any weights), with the gauge at 1: S equals the Gaussian
    ansatz's action; solving K = 1 from the prior (m stays 0 by symmetry) gives the Gaussian ansatz's Sigma."""
    arch, data, problem, Sigma = setup
    a = problem.prior_precision
    gaussian = TwoLayerAdaptiveAction("function")(Sigma, problem)
    zero = jnp.zeros(problem.d)
    one = mixture.mixture_action(1, 64, 0, problem)((mixture.encode(1 / a, zero, Sigma),), problem)
    two = mixture.mixture_action(2, 64, 0, problem)(
        (mixture.encode(0.4 / a, zero, Sigma), mixture.encode(1.6 / a, zero, Sigma)), problem)
    assert float(one) == pytest.approx(float(gaussian), rel=1e-12)
    assert float(two) == pytest.approx(float(gaussian), rel=1e-12)

    ref = ak.solve(arch, data, 0.1, solver="gradient", implicit=False)
    sol = ak.solve(arch, data, 0.1, ak.Adaptive(measure="mixture", components=1, samples=64), implicit=False)
    assert int(sol.status) == 0 and int(ref.status) == 0
    pi, m, Sigmas = mixture.components(sol.value)
    np.testing.assert_allclose(m, 0.0, atol=1e-12)
    np.testing.assert_allclose(Sigmas[0], ref.value, rtol=1e-6, atol=1e-9)
    assert float(sol.action) == pytest.approx(float(ref.action), rel=1e-10)


@pytest.mark.parametrize("options, arch, match", [
    (dict(measure="mixture", form="conjugate"), ak.FCN(4, 10, "erf"), "form"),
    (dict(measure="mixture", components=0), ak.FCN(4, 10, "erf"), "components"),
    (dict(measure="mixture"), ak.FCN(4, 10, "relu"), "activation"),
    (dict(measure="mixture"), ak.FCN(4, (10, 10), "erf"), "two-layer"),
    (dict(measure="mixture", along="sideways"), ak.FCN(4, 10, "erf"), "along"),
    (dict(measure="mixture", along="axis", direction=jnp.ones(3)), ak.FCN(4, 10, "erf"), "direction"),
    (dict(measure="mixture", direction=jnp.ones(4)), ak.FCN(4, 10, "erf"), "direction"),
])
def test_bad_mixture_options(options, arch, match):
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 6, 4, P_test=2)
    with pytest.raises(ValueError, match=match):
        ak.solve(arch, data, 0.1, ak.Adaptive(**options))


def test_permuted_and_flipped_mixture_is_one_point(setup):
    """The same density written with its components swapped and a mean's sign flipped is one point for the phase
    tools' deduplication (distance 0 between canonical forms), and the canonical form is sorted by weight."""
    from adaptive_kernels.phases import distance

    arch, data, problem, Sigma = setup
    m = jnp.array([0.6, -0.3, 0.2, 0.5])
    A, B = mixture.encode(0.1, m, Sigma), mixture.encode(0.3, 0.5 * m, 2 * Sigma)
    B_flipped = mixture.encode(0.3, -0.5 * m, 2 * Sigma)
    theory = ak.Adaptive(measure="mixture")
    assert distance((A, B), (B_flipped, A), theory) < 1e-14
    assert distance((A, B), (B_flipped, A)) > 0.1
    pi, means, _ = mixture.components(mixture.canonical((A, B)))
    np.testing.assert_allclose(pi, [0.75, 0.25])
    np.testing.assert_allclose(means[0], 0.5 * m)


def test_axis_kl_resolves_a_narrow_half_inside_a_wide_one():
    """The axis form's KL against a fine grid (numpy, 4e6 points) where one Gaussian half is 10^2 - 10^3 times
    narrower than another that covers it: one Gauss-Hermite rule per half steps over such a bump (the value
    before the telescoping rule of ``axis_kl_divergence`` was off by 0.05, negative where the KL is 0.022)."""
    from scipy.stats import norm

    a = 4.0
    for comps in ([(0.922, 0.0, 0.258), (0.078, 0.031, 3.6e-4)], [(0.5, 0.3, 1.0), (0.3, 0.0, 1e-4), (0.2, 1.5, 0.01)]):
        value = tuple(mixture.encode(w, jnp.array([m]), jnp.full((1, 1), s)) for w, m, s in comps)
        u = np.linspace(-8, 8, 4_000_001)
        rho = sum(w * 0.5 * (norm.pdf(u, m, np.sqrt(s)) + norm.pdf(u, -m, np.sqrt(s))) for w, m, s in comps)
        grid = np.sum(rho * (np.log(rho) - norm.logpdf(u, 0, 1 / np.sqrt(a)))) * (u[1] - u[0])
        assert float(mixture.axis_kl_divergence(value, a)) == pytest.approx(grid, abs=1e-8)


def test_linear_net_mixture_cannot_beat_the_gaussian():
    """For a linear net the kernel depends on rho only through its second moment, and at a fixed second moment the
    Gaussian has the least KL to the Gaussian prior (maximum entropy). So no K = 2 axis mixture can have a lower
    action than the best Gaussian of the same axis form, Sigma = s v v^T + r (I - v v^T), found here by scipy over
    (s, r) on the Gaussian ansatz's action (``actions.adaptive``). Both descents must end at that action, neither
    below: with one Hermite rule per half, the one from the aligned start found a narrow-spike "minimum" 0.65 below
    it."""
    from scipy.optimize import minimize

    d = 4
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 40, d, teacher="cubic", eps=1.0, P_test=5)
    arch = ak.FCN(d, 20, "linear")
    problem = ak.make_problem(arch, data, 0.05)
    v = data.w_star / jnp.linalg.norm(data.w_star)
    gaussian = TwoLayerAdaptiveAction("function")

    def axis_gaussian(log_sr):
        s, r = np.exp(log_sr)
        return float(gaussian(s * jnp.outer(v, v) + r * (jnp.eye(d) - jnp.outer(v, v)), problem))

    best = minimize(axis_gaussian, np.log([0.25, 0.25]), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}).fun
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=data.w_star)
    found = ak.stationary_points(arch, data, 0.05, theory)
    ends = [p.action for p in found.points] + [float(s.action) for s in found.unconverged.values()]
    assert len(ends) == 2
    assert min(ends) >= best - 1e-8 * abs(best), (ends, best)
    assert min(ends) == pytest.approx(best, abs=1e-6)


def test_axis_form_against_quadrature_monte_carlo_and_free_form(setup):
    """The axis form (``along="axis"``): its one-dimensional KL equals scipy's adaptive quadrature; its kernel equals
    a Monte Carlo average over weights drawn from the factorised density (mixture along v, isotropic across); its
    action equals the free form's for the same density when the halves are far apart (the free form's sampled
    overlap correction is then exact), and with K = 1, m = 0 the Gaussian ansatz's with
    Sigma = s v v^T + r (I - v v^T)."""
    from scipy.integrate import quad
    from scipy.stats import norm

    arch, data, problem, _ = setup
    a, d = problem.prior_precision, problem.d
    comps = [(0.7, 0.0, 0.05), (0.3, 0.9, 0.02)]  # (weight, mean along v, variance along v)
    value = (jnp.full((1, 1), 0.2),) + tuple(mixture.encode(w, jnp.array([m]), jnp.full((1, 1), s))
                                              for w, m, s in comps)

    def rho(u):
        return sum(w * 0.5 * (norm.pdf(u, m, np.sqrt(s)) + norm.pdf(u, -m, np.sqrt(s))) for w, m, s in comps)

    exact = quad(lambda u: rho(u) * (np.log(rho(u)) - norm.logpdf(u, 0, 1 / np.sqrt(a))), -4, 4, points=[-0.9, 0, 0.9],
                 limit=200, epsabs=1e-12)[0]
    assert float(mixture.axis_kl_divergence(value[1:], a)) == pytest.approx(exact, rel=1e-5)  # 80 nodes: 3e-6

    v = mixture.axis(problem)
    rng = np.random.default_rng(3)
    n = 200_000
    k = rng.random(n) < comps[1][0]
    u = np.where(k, comps[1][1], 0.0) * rng.choice([-1, 1], n) + np.sqrt(np.where(k, comps[1][2], comps[0][2])) \
        * rng.normal(size=n)
    z = rng.normal(size=(n, d)) * np.sqrt(0.2)
    W = u[:, None] * np.asarray(v) + z - (z @ np.asarray(v))[:, None] * np.asarray(v)
    phi = np.asarray(jax.scipy.special.erf(problem.X @ W.T))
    K_mc = problem.readout_scale * phi @ phi.T / n
    K = mixture.mixture_kernel(problem, value, problem.X)[0]
    assert np.max(np.abs(K - K_mc)) < 6e-3 * problem.readout_scale  # ~5 standard errors of 2e5 draws

    separated = (value[0], mixture.encode(1.0, jnp.array([1.5]), jnp.full((1, 1), 0.01)))
    free_sep = tuple(mixture.encode(w, mk, Sk) for w, mk, Sk in zip(*mixture.full_components(problem, separated)))
    axis_action = mixture.mixture_action(1, 2, 0, problem, "axis")
    free_action = mixture.mixture_action(1, 64, 0, problem)
    assert float(axis_action(separated, problem)) == pytest.approx(float(free_action(free_sep, problem)), rel=1e-10)
    s, r = 0.3, 0.2
    centred = (jnp.full((1, 1), r), mixture.encode(1 / a, jnp.zeros(1), jnp.full((1, 1), s)))
    Sigma_g = s * jnp.outer(v, v) + r * (jnp.eye(d) - jnp.outer(v, v))
    assert float(axis_action(centred, problem)) == pytest.approx(
        float(TwoLayerAdaptiveAction("function")(Sigma_g, problem)), rel=1e-12)


def test_check_richer_keeps_a_true_minimum_and_rejects_an_ansatz_one():
    """``phases.check_richer`` from the K = 1 axis mixture (one symmetric pair; the Gaussian at m = 0) to K = 2, the
    extra component at a teacher-aligned pair (ratio 30), weight 1e-2:

    - linear net: by maximum entropy no density beats the best Gaussian of the same second moment, so the
      Gaussian state must hold (the descents come back to its action);
    - erf net in mean-field scaling (gamma = 2): the Gaussian state is a K = 1 minimum, but the descent leaves it
      for an aligned state; that state's density, written as a free-form mixture and evaluated with the free form's
      action (Monte Carlo overlap correction, full-space kernel: another formulation; s_k = 2 pi_k / a puts its
      gauge at tau = 1), lies below the Gaussian state by the reported drop, within that estimate's sampling
      error."""
    from adaptive_kernels import phases

    d = 4
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 40, d, teacher="cubic", eps=1.0, P_test=5)
    for activation, gamma in (("linear", 1.0), ("erf", 2.0)):
        arch = ak.FCN(d, 20, activation, gamma=gamma)
        problem = ak.make_problem(arch, data, 0.05)
        theory = ak.Adaptive(measure="mixture", components=1, along="axis", direction=data.w_star)
        found = ak.stationary_points(arch, data, 0.05, theory, ratios=())
        pair = mixture.axis_aligned(problem, 1, 30.0)[1]
        (check,) = phases.check_richer(theory, problem, found, components=[pair])
        assert check.point is found.points[0] and check.point.is_minimum(zero_modes=True)
        if activation == "linear":
            assert check.holds and abs(check.drop) < 1e-8 * abs(check.point.action), check.drop
            continue
        assert check.holds is False and check.drop > 1.0 and check.moved > 0.1, (check.drop, check.moved)
        end = min(check.descents.points, key=lambda p: p.action)
        pi, means, covariances = mixture.full_components(problem, end.value, data.w_star)
        free = tuple(mixture.encode(2 * p / problem.prior_precision, m, S) for p, m, S in zip(pi, means, covariances))
        free_action = float(mixture.mixture_action(2, 200_000, 0, problem)(free, problem))
        assert free_action == pytest.approx(end.action, abs=0.05), (free_action, end.action)
        assert check.point.action - free_action == pytest.approx(check.drop, abs=0.05)


@pytest.mark.parametrize("theory_kind", ["gaussian", "axis mixture"])
def test_mean_field_action_is_affine_along_the_line_N_c_kappa2_over_c(theory_kind):
    """Mean-field scaling law (closed form, independent of the code): with gamma = 2 the readout kernel is
    K = s_a2 N^-1 E_rho[phi phi], so at N -> c N, kappa2 -> kappa2 / c the matrix K + kappa2 I is (K_1 + kappa2 I) / c.
    Then N KL and the fit term (1/2) y^T (K + kappa2)^-1 y scale by c, (1/2) log det by -(P/2) log c only:
    f(c) = S_c + (P/2) log c = c A + B is affine in c at every state rho, and the action gap between two states
    grows like c (docs/phases.md, "Barriers along the mean-field line")."""
    d, P, N, kappa2 = 4, 15, 10, 0.1
    data = ak.teacher_dataset(jax.random.PRNGKey(2), P, d, teacher="cubic", eps=1.0, P_test=5)
    theory = (ak.Adaptive() if theory_kind == "gaussian"
              else ak.Adaptive(measure="mixture", components=2, along="axis", direction=data.w_star))

    def f(c, value, kappa2_over_c=True):
        problem = ak.make_problem(ak.FCN(d, int(N * c), "erf", gamma=2.0), data, kappa2 / c if kappa2_over_c else kappa2)
        action, args = theory.problem(problem)
        return float(action(value, args)) + 0.5 * P * np.log(c)

    base = ak.make_problem(ak.FCN(d, N, "erf", gamma=2.0), data, kappa2)
    for value in (theory.init(base, theory.problem(base)[1]), ak.phases.aligned_state(base, theory, 3.0)):
        f1, f2, f4 = f(1, value), f(2, value), f(4, value)
        assert f4 - f2 == pytest.approx(2 * (f2 - f1), rel=1e-10, abs=1e-9)
        # the law is specific to the line: at N -> c N with kappa2 fixed, f is not affine
        g1, g2, g4 = (f(c, value, kappa2_over_c=False) for c in (1, 2, 4))
        assert abs((g4 - g2) - 2 * (g2 - g1)) > 1e-3


def test_barrier_tries_every_relabelling_of_a_mixture(setup):
    """The strings of ``phases.barrier`` run to every relabelling of b's components (two minima may list their
    bulk and their pair in different orders): for K = 3 there are 3! orders, all the same density (equal KL to the
    1-d quadrature and equal kernels) and no two the same list."""
    arch, data, problem, _ = setup
    theory = ak.Adaptive(measure="mixture", components=3, along="axis", direction=data.w_star)
    value = (jnp.full((1, 1), 0.7),) + tuple(mixture.encode(w, jnp.array([m]), jnp.full((1, 1), v))
                                        for w, m, v in ((0.5, 0.1, 0.9), (0.3, 1.2, 0.2), (0.2, 0.0, 2.0)))
    orders = ak.phases._relabelings(theory, value)
    assert len(orders) == 6
    flat = [np.concatenate([np.ravel(x) for x in order]) for order in orders]
    assert min(np.abs(a - b).max() for i, a in enumerate(flat) for b in flat[i + 1:]) > 1e-3
    a = problem.prior_precision
    kl = [float(mixture.axis_kl_divergence(order[1:], a)) for order in orders]
    K = [mixture.mixture_kernel(problem, order, problem.X, direction=data.w_star)[0] for order in orders]
    np.testing.assert_allclose(kl, kl[0], rtol=1e-12)
    for k in K[1:]:
        np.testing.assert_allclose(k, K[0], rtol=1e-12, atol=1e-14)
