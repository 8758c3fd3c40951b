"""One-loop finite-width corrections (THEORY.md sec. 10; ``actions.one_loop``) against independent ground truth.

- Kernel scaling of a linear two-layer net: the posterior of the scalar s (density s^(N/2-1) e^(-N s/2) times
  the GP evidence) is exact, so its means are one-dimensional integrals, done here by brute-force quadrature in
  numpy. The one-loop means must approach them as 1/N^2, the saddle's as 1/N.
- The two-layer adaptive Sigma (d x d) of the same net: its mean output is the same posterior mean (quadrature
  again); its eigenvalue ratio along the teacher against the library's exact Gibbs sampler. At d = 2 the exact
  posterior of Sigma (3 entries) is a 3-D quadrature: the width scan with fitted slopes (saddle 1/N, one loop 1/N^2).
- Deep linear nets, 3 hidden layers (input-space Sigma_l): the exact prior means E[Sigma_l] = s_w2^l/d I, and the
  per-layer ratios against Gibbs.
"""

import json
import pathlib

import jax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions import one_loop
from jax.tree_util import Partial

from adaptive_kernels.prediction import _gp_prediction, observables, predict_problem
from adaptive_kernels.problem import make_problem

D, P, KAPPA2 = 4, 10, 1e-2


def gibbs_reference(name, P, d, P_test, widths, gamma):
    """The exact Gibbs posterior of a net of this file (``tests/data/one_loop_gibbs.json``, 4 chains x 20000 draws of
    the library's Gibbs sampler of linear nets, written by ``scripts/one_loop_targets.py references``; compiling the
    sampler here cost ~14 s of CPU per test run), checked to be for the same net and data."""
    ref = json.loads((pathlib.Path(__file__).parent / "data" / "one_loop_gibbs.json").read_text())[name]
    widths = list(widths) if isinstance(widths, tuple) else widths
    assert (ref["data"], ref["widths"], ref["gamma"], ref["kappa2"]) == (
        {"P": P, "d": d, "P_test": P_test, "key": 0}, widths, gamma, KAPPA2), ref
    return ref


@pytest.fixture(scope="module")
def data():
    return ak.teacher_dataset(jax.random.PRNGKey(0), P, D, P_test=50)


def exact_scaling_means(data, N, gamma, kappa2=KAPPA2, s_max=12.0):
    """(E[s], E[f(X_test)]) over the exact posterior of s of a linear two-layer net (f | s is a GP with kernel
    s c X X^T / d, s ~ chi2_N / N), by quadrature on a fine grid (vectorised over the grid in the eigenbasis of
    K = c X X^T / d: (s K + kappa2)^-1 = V diag(1/(s e + kappa2)) V^T)."""
    X, y, Xt = (np.asarray(a, np.float64) for a in (data.X, data.y, data.X_test))
    d = X.shape[1]
    c = N ** (1 - gamma)
    K, Kc = c * X @ X.T / d, c * Xt @ X.T / d
    e, V = np.linalg.eigh(K)
    s = np.linspace(1e-3, s_max, 8001)
    inverse = 1.0 / (s[:, None] * e[None, :] + kappa2)  # (grid, P)
    yv = V.T @ y
    logp = ((N / 2 - 1) * np.log(s) - N * s / 2 - 0.5 * inverse @ yv**2 + 0.5 * np.sum(np.log(inverse), axis=1))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    means = s[:, None] * ((inverse * yv) @ V.T @ Kc.T)  # s Kc (s K + kappa2)^-1 y on the grid
    return float(w @ s), w @ means


def exact_learnability(data, N, gamma):
    mean_s, f = exact_scaling_means(data, N, gamma)
    yt = np.asarray(data.y_test)
    return mean_s, float(f @ yt / (yt @ yt))


def exact_two_layer_d2(data, N, gamma, kappa2, n=64):
    """(E[Sigma], E[f(X_test)]) over the exact posterior of Sigma = W^T W / N (2 x 2, d = 2) of a linear two-layer net
    (s_w2 = s_a2 = 1): the density |Sigma|^((N-3)/2) e^(-N tr Sigma) e^(-D(Sigma)) (N Sigma ~ Wishart_2(N, I/2)),
    D = (1/2) y^T K^-1 y + (1/2) log det K, K = c X Sigma X^T + kappa2 (Woodbury: A = kappa2 + c G Sigma, G = X^T X,
    b = X^T y; y^T K^-1 y = (y.y - c b^T Sigma A^-1 b)/kappa2, det K ~ det A, E[f | Sigma](x) = c x^T Sigma A^-1 b),
    by a tensor trapezoid rule in log-Cholesky coordinates (Jacobian 4 l11^3 l22^2), the box refitted to +-9 sd."""
    X, y, Xt = (np.asarray(a, np.float64) for a in (data.X, data.y, data.X_test))
    c = N ** (1.0 - gamma)
    G, b = X.T @ X, X.T @ y

    def grid(center, half):
        p, q, r = np.meshgrid(*(np.linspace(m - h, m + h, n) for m, h in zip(center, half)), indexing="ij")
        S = np.exp(2 * p), np.exp(p) * q, q**2 + np.exp(2 * r)
        A = np.array([[kappa2 + c * (G[0, 0] * S[0] + G[0, 1] * S[1]), c * (G[0, 0] * S[1] + G[0, 1] * S[2])],
                      [c * (G[1, 0] * S[0] + G[1, 1] * S[1]), kappa2 + c * (G[1, 0] * S[1] + G[1, 1] * S[2])]])
        det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
        u = (A[1, 1] * b[0] - A[0, 1] * b[1]) / det, (A[0, 0] * b[1] - A[1, 0] * b[0]) / det
        v = S[0] * u[0] + S[1] * u[1], S[1] * u[0] + S[2] * u[1]  # Sigma A^-1 b
        logw = ((N - 3) / 2) * 2 * (p + r) - N * (S[0] + S[2]) - 0.5 * (y @ y - c * (b[0] * v[0] + b[1] * v[1])) / kappa2
        logw = logw - 0.5 * np.log(det) + 3 * p + 2 * r
        w = np.exp(logw - logw.max())
        return w / w.sum(), (p, q, r), S, v

    center, half = np.array([-0.35, 0.0, -0.35]), np.full(3, 3.0)
    for _ in range(4):
        w, coords, S, v = grid(center, half)
        center = np.array([np.sum(w * x) for x in coords])
        half = 9 * np.array([np.sqrt(np.sum(w * (x - m) ** 2)) for x, m in zip(coords, center)])
    faces = [w[0], w[-1], w[:, 0], w[:, -1], w[:, :, 0], w[:, :, -1]]
    assert max(f.max() for f in faces) < 1e-7 * w.max()  # the box holds the posterior
    mean = [np.sum(w * x) for x in S]
    return np.array([[mean[0], mean[1]], [mean[1], mean[2]]]), c * Xt @ np.array([np.sum(w * x) for x in v])


def test_two_layer_width_scan_slopes():
    # Mean-field (gamma = 2) with kappa2 = 0.5/N, so the saddle is the same problem at every width (the data term
    # and the entropy both O(N)): against the exact posterior (3-D quadrature, d = 2, no sampling noise) the saddle's
    # errors in the first-layer ratio and the learnability fall as 1/N, the one loop's as 1/N^2 (measured slopes
    # -1.01, -1.01 and -1.99, -2.07 over N = 10-320; errors at N = 20: 2.0e-2, 2.8e-3 against 7.6e-4, 1.6e-4).
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 8, 2, P_test=50)
    widths = np.array([20.0, 40.0, 80.0, 160.0])
    errors = {0: [], 1: []}
    for N in widths:
        kappa2 = 0.5 / N
        arch = ak.FCN(2, int(N), "linear", gamma=2.0)
        problem = make_problem(arch, data, kappa2)
        Sigma, f = exact_two_layer_d2(data, N, 2.0, kappa2)
        ratio, learn = float(ak.eigenvalue_ratio(Sigma, data.w_star)), float(ak.learnability(f, data.y_test))
        for loops in (0, 1):
            sol = ak.solve(arch, data, kappa2, "adaptive", loops=loops)
            assert bool(sol.converged), sol.message
            out = observables(sol, problem, predict_problem(sol, problem, jnp.asarray(data.X_test)), data.y_test,
                              data.w_star)
            errors[loops].append((abs(out["eigenvalue_ratio"][0] / ratio - 1), abs(out["learnability"] - learn)))
    saddle, loop = np.array(errors[0]), np.array(errors[1])
    assert np.all(loop < saddle / 10)
    for column in range(2):
        slopes = [np.polyfit(np.log(widths), np.log(e[:, column]), 1)[0] for e in (saddle, loop)]
        assert -1.3 < slopes[0] < -0.7 and -2.4 < slopes[1] < -1.7, slopes


@pytest.mark.slow
def test_deep_three_layers_one_loop():
    # Deep linear net, 3 hidden layers (input-space Sigma_l, d = 2, N = 20). (1) No data (kappa2 = 1e6): the exact
    # prior means E[Sigma_l] = s_w2^l/d I; the one-loop means must equal them (the whitened chain's expansion is
    # exact there; the expansion in Sigma_l itself was +6% off at layer 3). (2) gamma = 2 against exact Gibbs
    # (``gibbs_reference``): every per-layer kernel ratio within 1% (+ 2 SE) where the saddle is 3.5-6% low.
    from adaptive_kernels.theories import Adaptive

    data = ak.teacher_dataset(jax.random.PRNGKey(0), 6, 2, P_test=20)
    arch = ak.FCN(2, (20, 20, 20), "linear", gamma=2.0)
    theory = Adaptive(form="weight", loops=1)

    def mean_covariances(kappa2):
        problem = make_problem(arch, data, kappa2)
        sol = ak.solve(arch, data, kappa2, theory)
        assert bool(sol.converged), sol.message
        fn = Partial(type(theory).input_covariances, sol.theory, problem=problem)
        return sol, problem, theory.mean(fn, sol.value, problem, linear=theory.kernels_linear(problem))[0]

    _, _, prior = mean_covariances(1e6)
    for layer, S in enumerate(prior):
        np.testing.assert_allclose(S, np.eye(2) / 2, atol=1e-6, err_msg=f"layer {layer + 1}")
    ref = gibbs_reference("deep", 6, 2, 20, (20, 20, 20), 2.0)["kernel_eigenvalue_ratio"]
    saddle = ak.solve(arch, data, KAPPA2, Adaptive(form="weight"))
    sol, problem, covariances = mean_covariances(KAPPA2)
    for layer, (mean, se) in enumerate(zip(ref["mean"], ref["se"])):
        # the layer kernel X Sigma_l X^T is linear in Sigma_l: its mean is that of the mean Sigma_l (``summarize``)
        corrected = float(ak.eigenvalue_ratio(problem.X @ covariances[layer] @ problem.X.T, data.y))
        bare = float(ak.eigenvalue_ratio(problem.X @ saddle.value[layer] @ problem.X.T, data.y))
        assert abs(corrected - mean) < 0.01 * mean + 2 * se, (layer, corrected, mean, se)
        assert bare < 0.97 * mean, (layer, bare, mean)


def test_scaling_one_loop_converges_as_one_over_n_squared(data):
    # Errors of E[s] and of the learnability against quadrature at N = 20, 40, 80 (gamma = 1): the one loop's fall
    # like 1/N^2 or faster and faster than the saddle's (measured: learnability 8.6e-5, 2.0e-5, ~4e-6 one loop
    # against 1.1e-3, 7.2e-4, 4.1e-4 saddle, slopes ~ -2.2 and -0.7; E[s] 1.3e-3, 1.4e-4, ... against 1.7e-2,
    # 5.3e-3, 1.5e-3).
    widths = np.array([20.0, 40.0, 80.0])
    errors = {0: [], 1: []}
    for N in widths:
        arch = ak.FCN(D, int(N), "linear", gamma=1.0)
        mean_s, learn = exact_learnability(data, N, 1.0)
        for loops in (0, 1):
            sol = ak.solve(arch, data, KAPPA2, "scaling", loops=loops)
            assert bool(sol.converged), sol.message
            summary = ak.summarize(sol, arch, data, KAPPA2)
            errors[loops].append((abs(summary["scale"] - mean_s), abs(summary["learnability"] - learn)))
    saddle, loop = np.array(errors[0]), np.array(errors[1])
    assert np.all(loop < saddle / 5)
    for column in range(2):
        slopes = [np.polyfit(np.log(widths), np.log(e[:, column]), 1)[0] for e in (saddle, loop)]
        assert slopes[1] < -1.8 and slopes[1] < slopes[0] - 0.7, slopes


@pytest.fixture(scope="module")
def two_layer(data):
    """Linear two-layer net, N = 30, gamma = 1.5: the problem, its one-loop action, and the saddle and one-loop
    solutions with their observables (``prediction.observables`` directly: ``summarize``'s stationarity check
    compiles the correction's gradient once more, and the scaling and CLI tests cover ``summarize``)."""
    arch = ak.FCN(D, 30, "linear", gamma=1.5)
    problem = make_problem(arch, data, KAPPA2)
    X_test = jnp.asarray(data.X_test)
    out = {"arch": arch, "problem": problem}
    for loops in (0, 1):
        sol = ak.solve(arch, data, KAPPA2, "adaptive", loops=loops)
        prediction = predict_problem(sol, problem, X_test)
        out[loops] = (sol, observables(sol, problem, prediction, data.y_test, data.w_star), prediction)
    return out


def test_two_layer_one_loop_mean_output_and_ratio(data, two_layer):
    # The Sigma action's one-loop mean output against the exact quadrature (saddle error ~20x larger), and its
    # first-layer eigenvalue ratio (of the posterior mean of Sigma = W^T W / N) against exact Gibbs
    # (``gibbs_reference``): within 1% where the saddle is 2.8% low.
    _, learn = exact_learnability(data, 30, 1.5)
    ref = gibbs_reference("two_layer", P, D, 50, 30, 1.5)["eigenvalue_ratio"]
    ratio, se = ref["mean"][0], ref["se"][0]
    saddle, loop = two_layer[0][1], two_layer[1][1]
    assert loop["converged"]
    assert abs(loop["learnability"] - learn) < abs(saddle["learnability"] - learn) / 5
    assert abs(loop["eigenvalue_ratio"][0] - ratio) < 0.01 * ratio + 3 * se
    assert abs(saddle["eigenvalue_ratio"][0] - ratio) > 0.02 * ratio


@pytest.mark.slow
def test_matrix_free_estimator_matches_dense(data, two_layer):
    # The closed form of the linear two-layer net (the default here) against the dense Hessian from m Hessian-vector
    # products: the correction equal to rounding, and its gradient (autodiff through the eigendecomposition) against
    # central differences of the dense correction. The stochastic estimator (Hutchinson + CG, Lanczos log det) against
    # the dense one at the one-loop solution: the log det within its probe error, and the one-loop mean output within
    # 20% of the correction's size.
    problem = two_layer["problem"]
    theory = two_layer[1][0].theory
    default, args = theory.problem(problem)
    Sigma = two_layer[1][0].value
    assert isinstance(one_loop.estimator_for(default.base, Sigma, args), one_loop.Structured)
    dense = one_loop.OneLoopAction(default.base, one_loop.Dense())
    direction = jax.random.normal(jax.random.PRNGKey(2), (D, D))
    direction = direction + direction.T
    h = 1e-4
    for point in (Sigma, Sigma + 0.1 * jnp.diag(jnp.arange(1.0, D + 1.0))):  # the second: a non-zero gradient
        np.testing.assert_allclose(default.correction(point, args), dense.correction(point, args), rtol=1e-10)
        grads = default.linearised_data_term(point, args)[1] - default.base.linearised_data_term(point, args)[1]
        difference = (dense.correction(point + h * direction, args) - dense.correction(point - h * direction, args))
        np.testing.assert_allclose(jnp.sum(grads * direction), difference / (2 * h), rtol=2e-5)  # O(h^2)
    # the closed-form pairs of the observables' moments (Woodbury) against the inverse of the dense I + M
    m = one_loop.coordinate_count(Sigma)
    M = jax.jit(lambda S: jax.vmap(one_loop._curvature(default.base, S, args))(jnp.eye(m)))(Sigma)  # dense, m HVPs
    W, Z, c = eqx.filter_jit(one_loop.Structured().pairs_at)(default.base, Sigma, args)
    np.testing.assert_allclose(c * W.T @ Z, np.linalg.inv(np.eye(m) + M), atol=1e-12)
    # 192 probes: a multiple of the moments' chunk of 16 pairs (no second compiled copy for a remainder)
    stochastic = one_loop.OneLoopAction(dense.base, one_loop.Stochastic(probes=192, lanczos_steps=20))
    # Hutchinson: relative error ~ sqrt(2/k) |log(I + M)|_F / tr log(I + M)
    np.testing.assert_allclose(stochastic.correction(Sigma, args), dense.correction(Sigma, args), rtol=0.15)
    fn = Partial(_gp_prediction, theory, problem=problem, X_test=jnp.asarray(data.X_test))  # the P x P GP
    generic, spread = one_loop.moments(dense, Sigma, args, fn)
    exact = generic.mean_test
    approx = one_loop.moments(stochastic, Sigma, args, fn)[0].mean_test
    shift = np.abs(exact - fn(Sigma).mean_test).max()
    assert shift > 0 and np.abs(approx - exact).max() < 0.2 * shift
    # predict_problem takes this net's one-loop moments in weight space (d x d solves, the kernel as the linear
    # function of Sigma it is): equal to the generic moments of the P x P GP prediction to rounding
    fast = two_layer[1][2]
    for name in ("mean_train", "mean_test", "kernel"):
        np.testing.assert_allclose(getattr(fast, name), getattr(generic, name), rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(fast.var_test, generic.var_test + spread.mean_test, rtol=1e-9)


def test_loops_errors(data):
    arch = ak.FCN(D, 5, "linear")
    with pytest.raises(ValueError, match="loops must be 0"):
        ak.Adaptive(loops=2)
    with pytest.raises(ValueError, match="width N_1"):  # a 4 x 4 Sigma needs N > 5
        ak.solve(arch, data, KAPPA2, "adaptive", loops=1)
    with pytest.raises(ValueError, match="loops: one-loop corrections need an action to expand"):  # a saddle map
        ak.solve(ak.FCN(D, (50, 50), "linear"), data, KAPPA2, "adaptive", form="conjugate", loops=1)


def test_cli_loops_flag(data, tmp_path, capsys):
    # `adaptive-kernels solve --loops 1` reports the one-loop learnability (that of ak.solve(..., loops=1)),
    # not the saddle's; --loops with the NNGP is a usage error.
    from adaptive_kernels.cli import main

    path = tmp_path / "data.npz"
    np.savez(path, **{k: np.asarray(getattr(data, k)) for k in ("X", "y", "X_test", "y_test")})
    argv = ["solve", "--data", str(path), "--theory", "scaling", "--width", "20", "--kappa2", str(KAPPA2), "--json"]
    outs = []
    for loops in ("0", "1"):
        assert main(argv + ["--loops", loops]) == 0
        outs.append(json.loads(capsys.readouterr().out)["learnability"])
    arch = ak.FCN(D, 20, "linear")
    expected = [ak.summarize(ak.solve(arch, data, KAPPA2, "scaling", loops=k), arch, data, KAPPA2)["learnability"]
                for k in (0, 1)]
    np.testing.assert_allclose(outs, expected, rtol=1e-10)
    assert abs(outs[1] - outs[0]) > 1e-5
    assert main(["solve", "--data", str(path), "--theory", "gp", "--width", "20", "--kappa2", "0.01",
                 "--loops", "1"]) == 2
