"""The prior's connected 4-point function (``adaptive_kernels.finite_width``) against Monte Carlo over sampled
finite networks (independent: the networks are drawn directly, numpy, no library code)."""

import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.finite_width import four_point, four_point_cnn, quartic_posterior_mean
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


@pytest.mark.parametrize("act", ["linear", "relu", "erf"])
def test_one_hidden_layer_four_point_matches_monte_carlo(act):
    # Exact at any width: widths 2 and 8, 4e4 networks each; every entry within 3.5 standard errors, and the
    # function falls like 1/N (the ratio of the two widths' values is 4 within the Monte Carlo error).
    rng = np.random.default_rng(0)
    X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.7]])
    sampled = []
    for N in (2, 8):
        theory, _ = four_point(ak.FCN(3, N, act), X)
        mc, se = connected(sampled_outputs(X, (N,), act, 40000, rng))
        assert np.all(np.abs(np.asarray(theory) - mc) < 3.5 * se + 1e-3 * np.abs(mc).max()), (theory, mc, se)
        assert np.abs(mc).max() > 5 * se.max()  # a real signal, not noise
        sampled.append((mc[0, 0, 0, 0], se[0, 0, 0, 0]))
    (g2, s2), (g8, s8) = sampled
    assert abs(g2 / g8 - 4) < 3 * 4 * np.hypot(s2 / g2, s8 / g8) + 0.1  # 1/N, from the samples alone


def test_two_hidden_layers_leading_order():
    # Depth 2 (ReLU, N = 30 per layer): the 1/N recursion against 4e4 sampled networks, within 3.5 standard
    # errors plus 10% (the O(1/N^2) remainder).
    rng = np.random.default_rng(1)
    X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.7]])
    theory, _ = four_point(ak.FCN(3, (30, 30), "relu"), X)
    mc, se = connected(sampled_outputs(X, (30, 30), "relu", 40000, rng))
    theory = np.asarray(theory)
    assert np.all(np.abs(theory - mc) < 3.5 * se + 0.1 * np.abs(theory))


def test_quartic_posterior_correction_is_the_one_loop_result():
    # Linear net, d = 10, P = 6 training and 3 test points, kappa2 = 0.1, gamma = 1: the GP mean is off by O(1/N),
    # the quartic-corrected mean by O(1/N^2) (measured: 1.6e-4, 3.8e-5, 9.2e-6, 2.3e-6 at
    # N = 50-400 against 7.2e-3 ... 9.1e-4 for the GP), and it agrees with the one-loop mean of the
    # weight-space action (kernel scaling here) to O(1/N^2).
    data = ak.teacher_dataset(__import__("jax").random.PRNGKey(0), 6, 10, P_test=3)
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
    scaling, readout a_cs ~ N(0, s_a2/(S C))), drawn directly in numpy."""
    P, n = X.shape[0], X.shape[1] // S
    Xp = X.reshape(P, S, n)
    W = rng.standard_normal((nets, C, n)) * np.sqrt(s_w2 / n)
    Phi = ACTS[act](np.einsum("psn,kcn->kpcs", Xp, W)).reshape(nets, P, C * S)
    a = rng.standard_normal((nets, C * S)) * np.sqrt(s_a2 / (S * C))
    return np.einsum("kpj,kj->kp", Phi, a), s_a2 * np.einsum("kpj,kqj->kpq", Phi, Phi) / (S * C)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_cnn_four_point_matches_monte_carlo(act):
    # Two-layer CNN, S = 2 patches of n = 2, two inputs: against 4e4 sampled networks' outputs at C = 2 and 4
    # (every entry within 3.5 SE), and against the covariance of the sampled readout covariances (the readout
    # integrated out, so the error does not grow with C) at C = 10, 100, 1000: within 4 SE, and C * G4c constant
    # (the 1/C scaling of the samples themselves).
    rng = np.random.default_rng(2)
    X = np.array([[1.0, 0.3, -0.5, 0.8], [0.2, -1.1, 0.7, 0.4]])
    for C in (2, 4):
        theory, K = four_point_cnn(ak.CNN(2, 2, C, act), X)
        f, Khat = sampled_cnn(X, 2, C, act, 40000, rng)
        mc, se = connected(f)
        assert np.abs(mc).max() > 5 * se.max()
        assert np.all(np.abs(np.asarray(theory) - mc) < 3.5 * se + 1e-3 * np.abs(mc).max()), (theory, mc, se)
        np.testing.assert_allclose(np.asarray(K), Khat.mean(axis=0), atol=0.01 * np.abs(K).max())  # MC: ~0.3%
    scaled = []
    for C in (10, 100, 1000):
        theory, _ = four_point_cnn(ak.CNN(2, 2, C, act), X)
        _, Khat = sampled_cnn(X, 2, C, act, 4000, rng)

        def estimate(k):  # Cov(c Khat) symmetrised, ~ 1/C
            V = np.cov(k.reshape(len(k), -1).T).reshape(2, 2, 2, 2)
            return V + V.transpose(0, 2, 1, 3) + V.transpose(0, 3, 2, 1)
        mc = estimate(Khat)
        se = np.array([estimate(k) for k in np.array_split(Khat, 20)]).std(axis=0) / np.sqrt(20)
        assert np.all(np.abs(np.asarray(theory) - mc) < 4 * se), (C, theory, mc, se)
        scaled.append(C * mc[0, 0, 1, 1])
    assert np.ptp(scaled) < 0.15 * np.mean(scaled)  # C * G4c constant: 1/C
