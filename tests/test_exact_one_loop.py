"""The one loop around the exact large-width measure (``Adaptive(form="conjugate", measure="exact", loops=1)``,
``actions.exact_one_loop``; issue 16's nonlinear target; docs/finite_width.md).

Checked against two independent references: the Gaussian-measure one loop of the weight form (a linear net, whose
exact measure is Gaussian: another formulation, with the exact Wishart exponents, of the same 1/N correction), and
HMC posteriors of finite ReLU nets (``tests/data/exact_one_loop.json``, scripts/make_exact_one_loop_references.py),
where the saddle's O(1/N) error is many HMC standard errors; and the blocked, closed-form implementation against
the same equations written densely with autodiff derivatives.
"""

import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions import deep, exact
from adaptive_kernels.actions.exact_one_loop import MAX_P, moments
from adaptive_kernels.actions.one_loop import _coordinates, _symmetric
from adaptive_kernels.data import teacher_dataset
from adaptive_kernels.problem import make_problem
from adaptive_kernels.theories import Adaptive

REFERENCES = pathlib.Path(__file__).parent / "data" / "exact_one_loop.json"
KAPPA2 = 1e-2


def _summary(kernel, sigma, mean, data):
    """(learnability, first-layer ratio along w*, kernel ratio along y) from a kernel, a weight covariance and the
    mean output at the training and then the test points."""
    return np.array([float(ak.learnability(mean[data.P:], data.y_test)), float(ak.eigenvalue_ratio(sigma, data.w_star)),
                     float(ak.eigenvalue_ratio(kernel, data.y))])


@eqx.filter_jit
def _gaussian_measure(problem, sigma):
    """(the exact measure sampled with its own tilted Gaussian as the proposal, Kt = -dD/dK) of a linear net at the
    weight form's saddle ``sigma``."""
    Kt = deep.output_terms(problem.X @ sigma @ problem.X.T, problem)[1]
    B = exact.layer_factor(problem, None, 0, problem.X)
    tilted = jnp.linalg.inv(jnp.eye(B.shape[1]) - (2.0 / problem.widths[0]) * B.T @ Kt @ B)
    draws = jax.random.normal(jax.random.PRNGKey(1), (4000, B.shape[1]))
    return exact.ExactCGF((draws,), (exact.Proposal.gaussian(jnp.linalg.cholesky(tilted)),)), Kt


@pytest.fixture(scope="module")
def linear_case():
    """A linear net (d = 5, P = 12, N = 50, gamma = 1) with its exact measure sampled at the weight form's saddle
    (4000 draws: more than one block of ``exact_one_loop.BLOCK``) and the one-loop moments there."""
    data = teacher_dataset(jax.random.PRNGKey(0), 12, 5, "cubic", P_test=100)
    arch = ak.FCN(5, 50, "linear")
    problem = make_problem(arch, data, KAPPA2)
    sigma = ak.solve(arch, data, KAPPA2, Adaptive()).value
    cgf, Kt = _gaussian_measure(problem, sigma)
    X_all = jnp.concatenate([problem.X, data.X_test])
    return arch, data, problem, cgf, Kt, X_all, moments(cgf, problem, Kt, X_all)


def test_linear_net_reproduces_the_gaussian_one_loop(linear_case):
    """For linear phi the exact measure is Gaussian: the one loop around it must move the saddle's learnability,
    first-layer ratio along w* and kernel ratio along y as the weight form's one loop does (``Adaptive(loops=1)``:
    Wishart exponents N - d - 1, Gamma's minimiser; THEORY.md sec. 10), up to Monte Carlo error and O(1/N^2).
    The sampled measure is made at the weight form's saddle (there the tilted measure is the Gaussian
    N(0, (I - (2/N) B^T Kt B)^-1) in the weights' coordinates, so its proposal is exact)."""
    arch, data, _, _, _, _, out = linear_case
    saddle, loop = _summary(*out.saddle, data), _summary(out.kernel, out.sigma, out.mean, data)
    s = ak.summarize(ak.solve(arch, data, KAPPA2, Adaptive(loops=1)), arch, data, KAPPA2)
    weight = np.array([s["learnability"], s["eigenvalue_ratio"][0], s["kernel_eigenvalue_ratio"][0]])
    effect = np.abs(weight - saddle)  # 7e-4, 0.008, 0.02
    assert np.all(effect > [3e-4, 3e-3, 1e-2])
    np.testing.assert_array_less(np.abs(loop - weight), 0.3 * effect)


@eqx.filter_jit
def _dense_one_loop(cgf, problem, Kt, X_all):
    """The module docstring's one loop written densely, as a reference for the blocked, closed-form implementation:
    D2 and the third derivative of D by autodiff of D(K) = (1/2) y^T (c K + kappa2)^-1 y + (1/2) log det(c K +
    kappa2) in orthonormal coordinates, the centred features dk (S, m) held whole, and the mean output's gradient and
    Hessians by autodiff of g(K, O) = c O (c K + kappa2)^-1 y (through t(K) = (c K + kappa2)^-1 y: g is linear in
    the cross kernel O). Returns (E[K], E[w w^T], E[f] at X_all)."""
    P, N, c = problem.P, problem.widths[0], problem.readout_scale
    u, omega, _, _ = cgf.tilted(problem, Kt, deep.input_covariance(problem, problem.X), 0, problem.X)
    K = deep.sampled_forward(problem, problem.X, (Kt,), cgf)[0][0]
    eye = jnp.eye(P)

    def D(x):
        C = c * _symmetric(x, P) + problem.kappa2 * eye
        return 0.5 * problem.y @ jnp.linalg.solve(C, problem.y) + 0.5 * jnp.linalg.slogdet(C)[1]

    x0 = _coordinates(K)
    D2 = jax.hessian(D)(x0)
    factor = exact.layer_factor(problem, None, 0, X_all)
    phi_all = problem.activation(u @ factor.T)
    phi = phi_all[:, :P]
    k = jax.vmap(lambda f: _coordinates(jnp.outer(f, f)))(phi)
    dk = k - omega @ k
    H = (dk * omega[:, None]).T @ dk / N
    M = jnp.linalg.inv(jnp.eye(k.shape[1]) + D2 @ H)
    G = M @ D2
    HM = H @ M
    a = 0.5 * jax.grad(lambda x: jnp.sum(HM * jax.hessian(D)(x)))(x0)
    quad = jnp.einsum("sa,ab,sb->s", dk, G, dk)
    dKt = -M @ (a - D2 @ ((omega * quad) @ dk / (2.0 * N**2)))
    r = omega * (dk @ dKt / N - quad / (2.0 * N**2))
    dK = _symmetric(r @ dk, P)
    w = jnp.sqrt(problem.s_w2 / problem.d) * u[:, : problem.d]
    ww = jnp.einsum("si,sj->sij", w, w)
    dww = ww - jnp.einsum("s,sij->ij", omega, ww)
    sigma = exact.first_layer_covariance(cgf, problem, (Kt,)) + jnp.einsum("s,sij->ij", r, dww)
    o = jnp.einsum("si,sj->sij", phi_all, phi)  # per-neuron cross kernels
    do = o - jnp.einsum("s,sij->ij", omega, o)
    padded = jnp.zeros((X_all.shape[0],) * 2).at[:P, :P].set(Kt)
    cross = deep.extended_kernels(problem, X_all, (padded,), cgf)[0][:, :P]

    def t(x):  # g(K, O) = c O t(K): linear in O, so its O derivatives are those of t
        return jnp.linalg.solve(c * _symmetric(x, P) + problem.kappa2 * eye, problem.y)

    shift = c * (cross @ jax.jvp(t, (x0,), (_coordinates(dK),))[1] + jnp.einsum("s,sij->ij", r, do) @ t(x0))
    curvature = 0.5 * c * cross @ jnp.einsum("ab,jab->j", HM, jax.hessian(t)(x0))  # (1/2) tr(P_KK Hess_KK g)
    P_oK = jnp.einsum("sij,s,sa->ija", do, omega, dk @ M) / N
    mixed = c * jnp.einsum("nja,ja->n", P_oK, jax.jacfwd(t)(x0))  # tr(P_oK Hess_Ko g)
    return K + dK, sigma, c * cross @ t(x0) + shift + curvature + mixed


def test_blocked_one_loop_equals_the_dense_formulas(linear_case):
    """The implementation (closed-form D2 and its derivative, blocked S x m passes, the output's fluctuation terms
    contracted through m x P matrices) equals the dense autodiff form of the same equations to round-off, on a
    sample count that spans several blocks with padding; the one-loop shifts are far above round-off."""
    _, _, problem, cgf, Kt, X_all, out = linear_case
    for got, want, saddle in zip((out.kernel, out.sigma, out.mean), _dense_one_loop(cgf, problem, Kt, X_all),
                                 out.saddle):
        assert float(jnp.max(jnp.abs(want - saddle))) > 1e-4 * float(jnp.max(jnp.abs(saddle)))
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * float(jnp.max(jnp.abs(want))))


@pytest.mark.slow
def test_relu_one_loop_closes_the_finite_width_gap_to_hmc():
    """ReLU, d = 5, P = 20, N = 50, gamma = 1 (P/N = 0.4): the exact saddle is off the HMC posterior by many standard
    errors (its O(1/N) error); ``summarize`` of the one loop is within 3 combined standard errors in the learnability
    and much closer in the first-layer ratio along w*."""
    case = next(c for c in json.load(open(REFERENCES))["cases"] if c["activation"] == "relu" and c["widths"] == [50])
    data = teacher_dataset(jax.random.PRNGKey(case["data_seed"]), case["P"], case["d"], case["teacher"],
                           P_test=case["P_test"])
    arch = ak.FCN(case["d"], tuple(case["widths"]), "relu", gamma=case["gamma"])
    problem = make_problem(arch, data, KAPPA2)
    X_all = jnp.concatenate([problem.X, data.X_test])
    values = {0: [], 1: []}
    for seed in range(2):
        sol = ak.solve(arch, data, KAPPA2, Adaptive(form="conjugate", measure="exact", samples=10000,
                                                    seed=jnp.asarray(seed), loops=1))
        assert sol.converged
        s = ak.summarize(sol, arch, data, KAPPA2)
        values[1].append([s["learnability"], s["eigenvalue_ratio"][0]])
        saddle = moments(sol.theory.sampled, problem, sol.value[0], X_all).saddle  # compiled by summarize
        values[0].append(_summary(*saddle, data)[:2])
    hmc = np.array([case["learnability"][0], case["eigenvalue_ratio"][0][0]])
    hmc_se = np.array([case["learnability"][1], case["eigenvalue_ratio"][0][1]])
    saddle, loop = np.mean(values[0], axis=0), np.mean(values[1], axis=0)
    loop_se = np.std(values[1], axis=0, ddof=1) / np.sqrt(2)
    assert np.all(np.abs(saddle - hmc) > 5 * hmc_se)  # the gap to be closed
    assert abs(loop[0] - hmc[0]) < 3 * np.hypot(hmc_se[0], loop_se[0])
    np.testing.assert_array_less(np.abs(loop - hmc), 0.3 * np.abs(saddle - hmc))


def test_bad_options_name_loops():
    rng = np.random.default_rng(0)
    theory = Adaptive(form="conjugate", measure="exact", loops=1)
    wide = ak.Dataset(rng.standard_normal((MAX_P + 1, 3)), rng.standard_normal(MAX_P + 1))
    with pytest.raises(ValueError, match=f"loops.*P = {MAX_P + 1}"):
        theory.check(make_problem(ak.FCN(3, 50, "erf"), wide, KAPPA2))
    small = ak.Dataset(rng.standard_normal((8, 3)), rng.standard_normal(8))
    with pytest.raises(ValueError, match=f"loops.*P = {MAX_P + 1}"):  # deep nets: actions.deep_exact_one_loop
        theory.check(make_problem(ak.FCN(3, (50, 50), "erf"), wide, KAPPA2))
    with pytest.raises(ValueError, match="loops.*one output"):
        theory.check(make_problem(ak.FCN(3, 50, "erf"), ak.Dataset(small.X, rng.standard_normal((8, 2))), KAPPA2))
