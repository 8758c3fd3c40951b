"""Samplers against exact and limiting theory (THEORY.md secs. 2, 3 and 8).

1. Linear one-hidden-layer net, gamma = 2, the THEORY.md sec. 3 table setting (d = 30, N = 200,
   P = 30, kappa2 = 1e-2, unit linear teacher): f | a is a GP with kernel s K_GP, and
   s = |a|^2 N^gamma/(s_a2 N) has prior chi2_N/N, so the mean output is the exact 1-D integral
   E[f*] = ∫ p(s | y) s K*(s K + kappa2)^{-1} y ds,  p(s|y) ∝ s^{N/2-1} e^{-N s/2} N(y | 0, s K + kappa2),
   evaluated here by quadrature on a fine log-grid (an independent formulation). Gibbs must match
   its learnability within 3 combined standard errors (the quadrature error is < 1e-8).
2. gamma = 1 and growing width: the sampled mean output of an erf net (HMC) approaches the NNGP
   GP-regression prediction; the distance must shrink at least 4-fold from N = 4 to N = 64
   (the deviation is O(1/N), so ~16-fold is expected; 4 leaves room for the Monte Carlo error).
"""

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import sample_posterior


def exact_linear_mean_output(X, y, X_test, N, gamma, kappa2, s_w2=1.0, s_a2=1.0):
    """E[f(X_test)] for a linear 1-hidden-layer net by quadrature over the exact law of s."""
    c = s_a2 * N ** (1 - gamma) * s_w2 / X.shape[1]
    lam, U = np.linalg.eigh(c * X @ X.T)
    yu = U.T @ y
    s = np.exp(np.linspace(np.log(1e-4), np.log(1e4), 200_001))[:, None]
    # log density per unit log s (hence + log s): chi2 prior times the GP evidence
    log_p = (N / 2) * np.log(s[:, 0]) - N * s[:, 0] / 2 - 0.5 * np.sum(yu**2 / (s * lam + kappa2) + np.log(s * lam + kappa2), axis=1)
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    alpha = w @ (s / (s * lam + kappa2))
    return c * X_test @ X.T @ (U @ (alpha * yu))


def test_gibbs_matches_exact_scaling_integral_table_setting():
    data = ak.teacher_dataset(jax.random.key(0), P=30, d=30, P_test=2000)
    X, y, Xt, yt = (np.asarray(a) for a in (data.X, data.y, data.X_test, data.y_test))
    f_exact = exact_linear_mean_output(X, y, Xt, N=200, gamma=2.0, kappa2=1e-2)
    exact = f_exact @ yt / (yt @ yt)
    est = sample_posterior(ak.FCN(30, 200, "linear", gamma=2.0), data, 1e-2, method="gibbs",
                           num_samples=400, num_warmup=100, key=0)
    print(f"gibbs learnability {est.learnability}, exact {exact:.5f}")
    assert abs(float(est.learnability.mean) - exact) < 3 * float(est.learnability.se)
    assert est.max_rhat < 1.05 and est.min_ess > 200


def test_mean_output_approaches_nngp_with_width():
    rng = np.random.default_rng(3)
    X, Xt, w = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), np.array([1.0, -0.5, 0.3])
    data = ak.Dataset(X=X, y=np.tanh(X @ w), X_test=Xt, y_test=np.tanh(Xt @ w))
    distance = {}
    for N in (4, 64):
        arch = ak.FCN(3, N, "erf", s_w2=2.0, gamma=1.0)
        gp = ak.gp_predict(ak.nngp(arch, X), data.y, 0.1, K_cross=ak.nngp(arch, Xt, X)).mean
        est = sample_posterior(arch, data, 0.1, method="hmc", num_samples=1000, num_warmup=300, key=0)
        distance[N] = np.linalg.norm(np.asarray(est.mean_output_test.mean) - np.asarray(gp))
        print(N, distance[N], np.linalg.norm(est.mean_output_test.se))
    assert distance[64] < distance[4] / 4
