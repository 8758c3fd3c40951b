"""The prior's connected 4-point function (``adaptive_kernels.finite_width``) against Monte Carlo over sampled
finite networks (independent: the networks are drawn directly, numpy, no library code; with their weights where the
widths are small, in their pre-activations on the test inputs, the weights integrated out exactly, where they are
large: ``readout_kernels``)."""

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.finite_width import four_point, four_point_cnn, four_point_sampled, quartic_posterior_mean
from test_one_loop import exact_scaling_means  # the exact posterior of the readout scale, by quadrature

ACTS = {"linear": lambda h: h, "relu": lambda h: np.maximum(h, 0.0),
        "erf": lambda h: __import__("scipy.special", fromlist=["erf"]).erf(h)}


def sampled_outputs(X, widths, act, nets, rng, s_w2=1.0, s_a2=1.0):
    """Outputs (nets, P) of random FCNs (standard scaling) on the rows of X, drawn in batches."""
    out = []
    for _ in range(nets // 2000):
        H = X.T[None]  # (batch, fan_in, P)
        fan_in = X.shape[1]
        for N in widths:
            W = rng.standard_normal((2000, N, fan_in)) * np.sqrt(s_w2 / fan_in)
            H = ACTS[act](W @ H)
            fan_in = N
        a = rng.standard_normal((2000, 1, fan_in)) * np.sqrt(s_a2 / fan_in)
        out.append((a @ H)[:, 0])
    return np.concatenate(out)


def connected(f):
    """Connected 4-point estimate of zero-mean outputs f (n, P), and its standard error from 20 batches."""
    def estimate(g):
        K = g.T @ g / len(g)
        m4 = np.einsum("na,nb,nc,ne->abce", g, g, g, g) / len(g)
        return m4 - (np.einsum("ab,ce->abce", K, K) + np.einsum("ac,be->abce", K, K) + np.einsum("ae,bc->abce", K, K))
    batches = np.array([estimate(g) for g in np.array_split(f, 20)])
    return estimate(f), batches.std(axis=0) / np.sqrt(len(batches))


def readout_kernels(X, widths, act, nets, rng, s_w2=1.0, s_a2=1.0):
    """The readout covariances c Khat (nets, P, P) of random FCNs (standard scaling, c = s_a2) on the rows of X, drawn
    layer by layer in the pre-activations on the P inputs: given the layer below (empirical kernel Khat_{l-1},
    Khat_0 = X X^T / d), the N_l units' pre-activations h_i = w_i . phi_{l-1} are iid N(0, s_w2 Khat_{l-1}) (the
    Gaussian weights integrated out exactly), drawn as root(s_w2 Khat_{l-1}) z with float32 normals z; then
    Khat_l = (1/N_l) sum_i phi(h_i) phi(h_i)^T. Cost O(nets P N) per layer instead of the weights' O(nets N^2)."""
    P, d = X.shape
    C = np.broadcast_to(s_w2 * X @ X.T / d, (nets, P, P))
    for N in widths:
        lam, U = np.linalg.eigh(C)
        root = (U * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]).astype(np.float32)
        phi = ACTS[act](root @ rng.standard_normal((nets, P, N), dtype=np.float32))
        K = np.einsum("naj,nbj->nab", phi, phi, dtype=np.float64) / N
        C = s_w2 * K
    return s_a2 * K


def readout_four_point(cK):
    """(G4c, its standard error) from sampled readout covariances c Khat (nets, P, P): given Khat the outputs are
    N(0, c Khat), so G4c[abce] = V[ab, ce] + V[ac, be] + V[ae, bc] with V = Cov(c Khat); estimated as the mean over
    the networks of T = D_ab D_ce + D_ac D_be + D_ae D_bc (D = c Khat - its sample mean), SE = std(T)/sqrt(nets)
    (per network, so close to Gaussian at the test's 4000 networks: no batch means with few degrees of freedom)."""
    D = cK - cK.mean(axis=0)
    T = (np.einsum("nab,nce->nabce", D, D) + np.einsum("nac,nbe->nabce", D, D) + np.einsum("nae,nbc->nabce", D, D))
    return T.mean(axis=0), T.std(axis=0) / np.sqrt(len(T))


def scaling_slope(widths, values, se):
    """Weighted least-squares slope of log(values) against log(widths) and its standard error (relative errors
    se/values)."""
    x, y, w = np.log(widths), np.log(values), (np.asarray(values) / np.asarray(se)) ** 2
    xm = np.sum(w * x) / np.sum(w)
    slope = np.sum(w * (x - xm) * y) / np.sum(w * (x - xm) ** 2)
    return slope, 1.0 / np.sqrt(np.sum(w * (x - xm) ** 2))


X_FCN = np.array([[1.0, 0.3, -0.5], [0.2, 1.1, -0.7]])


def width_scan(act, rng):
    """[(depth, N, G4c theory, sampled G4c, SE)] over depth 1-3: N = 2, 10, 100, 1000 where the formula is exact
    (one hidden layer; linear phi at any depth), N = 300, 1000 where it is the leading order in 1/N; 1e5 networks
    at N <= 10 (cheap there, and the heavy tails of Khat at N = 2 need them), 4000 beyond."""
    rows = []
    for depth in (1, 2, 3):
        for N in ((2, 10, 100, 1000) if depth == 1 or act == "linear" else (300, 1000)):
            theory, _ = four_point(ak.FCN(3, (N,) * depth, act), X_FCN)
            mc, se = readout_four_point(readout_kernels(X_FCN, (N,) * depth, act, 100000 if N <= 10 else 4000, rng))
            rows.append((depth, N, np.asarray(theory), mc, se))
    return rows


@pytest.mark.parametrize("act", ["linear", "relu", "erf"])
def test_four_point_width_scan_matches_monte_carlo(act):
    # Depth 1-3, widths 2-1000 (``width_scan``), against sampled networks' readout covariances c Khat (the readout
    # integrated out: relative error ~ sqrt(2/nets) at every width; the outputs' fourth cumulant at N = 1000 is
    # ~1e-3 of K^2 and would drown in the error of 1e5 sampled outputs). The leading order in 1/N (ReLU and erf at
    # depth 2 and 3) is compared at N = 300 and 1000 only, where its O(1/N^2) remainder is below the sampling error
    # (measured with 4e4 networks, docs/finite_width.md: ReLU depth 3 +5% at N = 100, +1% at N = 300, against
    # 2.2% SE here). Every entry within 4 SE (the scan has 40-60 distinct entries per activation: 4 SE keeps the
    # family-wise false-alarm rate below 0.5%, 3.5 SE would give ~3%), a signal > 10 SE, and the 1/N scaling from the
    # samples alone: the fitted slope of log G4c_1111 against log N is -1 within 3.5 SE (nine fits; depth >= 2 over
    # N >= 100, where the 1/N^2 terms are < 2%: a bias of the slope below 0.01, its SE 0.01-0.03).
    rows = width_scan(act, np.random.default_rng(0))
    for depth, N, theory, mc, se in rows:
        assert np.all(np.abs(theory - mc) < 4 * se), (act, depth, N, theory, mc, se)
        assert np.abs(mc).max() > 10 * se.max(), (act, depth, N, mc, se)
    for depth in (1, 2, 3):
        fitted = np.array([(N, mc[1, 1, 1, 1], se[1, 1, 1, 1]) for L, N, _, mc, se in rows
                           if L == depth and (depth == 1 or N >= 100)])
        slope, error = scaling_slope(*fitted.T)
        assert abs(slope + 1) < 3.5 * error, (act, depth, slope, error)


@pytest.mark.parametrize("act", ["linear", "relu", "erf"])
def test_outputs_four_point_at_width_two(act):
    # The step from the readout covariance to the outputs (Isserlis given Khat) against the outputs themselves of 4e4
    # networks drawn with their weights (one hidden layer of N = 2, where the fourth cumulant is large): every entry
    # within 3.5 SE (20 batches) plus 0.1% of the largest, and a real signal.
    rng = np.random.default_rng(1)
    theory, _ = four_point(ak.FCN(3, 2, act), X_FCN)
    mc, se = connected(sampled_outputs(X_FCN, (2,), act, 40000, rng))
    assert np.all(np.abs(np.asarray(theory) - mc) < 3.5 * se + 1e-3 * np.abs(mc).max()), (theory, mc, se)
    assert np.abs(mc).max() > 5 * se.max()


@pytest.mark.parametrize("act, depth, N", [("relu", 2, 2), ("relu", 3, 10), ("erf", 3, 2)])
def test_sampled_four_point_at_small_width(act, depth, N):
    # Where the 1/N formula is only the leading order (ReLU / erf at depth >= 2) and small widths, where it is off by
    # 6-26 SE (docs/finite_width.md): four_point_sampled (the layers below the last drawn in JAX, the last layer and
    # the readout integrated by quadrature) against the numpy networks' readout covariances c Khat (which sample the
    # last layer as well; 1e5 networks): every entry within 4 combined SE, a signal > 10 SE, and the leading order
    # more than 5 SE away somewhere (the remainder the estimator is for is real at this size).
    arch = ak.FCN(3, (N,) * depth, act)
    est = four_point_sampled(arch, X_FCN, jax.random.PRNGKey(1), samples=20000)
    mc, se = readout_four_point(readout_kernels(X_FCN, (N,) * depth, act, 100000, np.random.default_rng(2)))
    combined = np.sqrt(np.asarray(est.se) ** 2 + se**2)
    assert np.all(np.abs(np.asarray(est.G4c) - mc) < 4 * combined), (est.G4c, mc, combined)
    assert np.abs(mc).max() > 10 * combined.max()
    leading = np.asarray(four_point(arch, X_FCN)[0])
    assert np.max(np.abs(leading - mc) / combined) > 5


def test_sampled_four_point_is_exact_for_one_hidden_layer():
    # One hidden layer: nothing below the last layer is random, so the estimate is the closed form with zero error;
    # and bad arguments are refused by name.
    arch = ak.FCN(3, 7, "erf", gamma=1.5)
    est = four_point_sampled(arch, X_FCN, jax.random.PRNGKey(0), samples=4)
    G4c, K = four_point(arch, X_FCN)
    np.testing.assert_allclose(est.G4c, G4c, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.K, K, rtol=1e-12)
    assert float(np.max(est.se)) < 1e-12 * float(np.max(np.abs(G4c)))
    with pytest.raises(ValueError, match="samples"):
        four_point_sampled(arch, X_FCN, jax.random.PRNGKey(0), samples=1)
    with pytest.raises(ValueError, match="NaN"):
        four_point_sampled(arch, X_FCN * np.nan, jax.random.PRNGKey(0))


def test_quartic_posterior_correction_is_the_one_loop_result():
    # Linear net, d = 10, P = 6 training and 3 test points, kappa2 = 0.1, gamma = 1: the GP mean is off by O(1/N),
    # the quartic-corrected mean by O(1/N^2) (measured: 1.6e-4, 3.8e-5, 9.2e-6, 2.3e-6 at
    # N = 50-400 against 7.2e-3 ... 9.1e-4 for the GP), and it agrees with the one-loop mean of the
    # weight-space action (kernel scaling here) to O(1/N^2).
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 6, 10, P_test=3)
    errors = []
    for N in (100, 400):
        arch = ak.FCN(10, N, "linear", gamma=1.0)
        gp, quartic = (np.asarray(v) for v in quartic_posterior_mean(arch, data, 0.1))
        exact = exact_scaling_means(data, N, 1.0, kappa2=0.1, s_max=4.0)[1]
        loop = np.asarray(ak.predict(ak.solve(arch, data, 0.1, "scaling", loops=1), arch, data, 0.1).mean_test)
        errors.append([np.abs(v - exact).max() for v in (gp, quartic)] + [np.abs(quartic - loop).max()])
    (gp100, q100, ql100), (gp400, q400, ql400) = errors
    assert 3 < gp100 / gp400 < 5  # 1/N
    assert q100 / q400 > 10 and q100 < gp100 / 20  # 1/N^2
    assert ql100 < gp100 / 20 and ql100 / ql400 > 10


def sampled_cnn(X, S, C, act, nets, rng, s_w2=1.0, s_a2=1.0):
    """(outputs (nets, P), empirical readout covariances c Khat (nets, P, P)) of random two-layer CNNs (standard
    scaling, readout a_cs ~ N(0, s_a2/(S C))), drawn directly in numpy (float32 weights)."""
    P, n = X.shape[0], X.shape[1] // S
    Xp = X.reshape(P, S, n).astype(np.float32)
    W = rng.standard_normal((nets, C, n), dtype=np.float32) * np.float32(np.sqrt(s_w2 / n))
    Phi = ACTS[act](np.einsum("psn,kcn->kpcs", Xp, W)).reshape(nets, P, C * S)
    a = rng.standard_normal((nets, C * S), dtype=np.float32) * np.float32(np.sqrt(s_a2 / (S * C)))
    return (np.einsum("kpj,kj->kp", Phi, a, dtype=np.float64),
            s_a2 * np.einsum("kpj,kqj->kpq", Phi, Phi, dtype=np.float64) / (S * C))


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_cnn_four_point_matches_monte_carlo(act):
    # Two-layer CNN, S = 2 patches of n = 2, two inputs, exact at every C: against 4e4 sampled networks' outputs at
    # C = 2 (every entry within 3.5 SE plus 0.1% of the largest), and against the covariance of the sampled readout
    # covariances (the readout integrated out, so the error does not grow with C; 4e4 networks at C = 2, 2000 at
    # C = 10, 100, 1000): every entry within 3.5 SE, and the 1/C scaling of the samples themselves (fitted slope of
    # log G4c_0011 against log C: -1 within 3 SE).
    rng = np.random.default_rng(2)
    X = np.array([[1.0, 0.3, -0.5, 0.8], [0.2, -1.1, 0.7, 0.4]])
    theory, K = four_point_cnn(ak.CNN(2, 2, 2, act), X)
    f, Khat = sampled_cnn(X, 2, 2, act, 40000, rng)
    mc, se = connected(f)
    assert np.abs(mc).max() > 5 * se.max()
    assert np.all(np.abs(np.asarray(theory) - mc) < 3.5 * se + 1e-3 * np.abs(mc).max()), (theory, mc, se)
    np.testing.assert_allclose(np.asarray(K), Khat.mean(axis=0), atol=0.01 * np.abs(K).max())  # MC: ~0.3%
    samples = []
    for C in (2, 10, 100, 1000):
        theory, _ = four_point_cnn(ak.CNN(2, 2, C, act), X)
        mc, se = readout_four_point(Khat if C == 2 else sampled_cnn(X, 2, C, act, 2000, rng)[1])
        assert np.all(np.abs(np.asarray(theory) - mc) < 3.5 * se), (C, theory, mc, se)
        assert np.abs(mc).max() > 10 * se.max(), (C, mc, se)
        samples.append((C, mc[0, 0, 1, 1], se[0, 0, 1, 1]))
    slope, error = scaling_slope(*np.array(samples).T)
    assert abs(slope + 1) < 3 * error, (slope, error)
