"""Every sampler against brute-force importance sampling from the prior (THEORY.md sec. 8).

Linear nets are sampled by all three samplers at gamma = 1 and gamma = 2, so Gibbs, HMC and
Langevin also agree with each other there; nonlinear, deep and CNN cases use HMC or Langevin.

The reference is independent of the library: numpy draws of all parameters from the prior of
THEORY.md sec. 1, weighted by the likelihood exp(-|f(X) - y|^2/(2 kappa2)) and self-normalised.
Its standard error is the delta-method one, sqrt(sum w^2 (h - h_bar)^2)/sum w. Networks are tiny
(d = 2, N = 3, P = 3) and kappa2 = 0.3, so the importance weights are not degenerate.

Tolerance: every compared number (mean output at 3 test points, the distinct entries of E[W1^T W1]/N1)
within 3 combined standard errors sqrt(se_mcmc^2 + se_is^2). Seeds are fixed; we also require
the standard errors to be small (< 0.03) so that agreement is a meaningful statement.
"""

import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import HMC, Langevin, sample_posterior

KAPPA2 = 0.3
X = np.array([[1.0, 0.3], [-0.4, 1.2], [0.8, -1.1]])
Y = np.array([0.9, -0.6, 1.2])
X_TEST = np.array([[0.5, 0.5], [-1.0, 0.2], [0.3, -0.9]])
DATA = ak.Dataset(X=X, y=Y, X_test=X_TEST, y_test=X_TEST @ np.array([1.0, -0.5]), w_star=np.array([1.0, -0.5]))
NUM_PRIOR_DRAWS = 1_000_000


def _prior_outputs(arch, rng, M):
    """Outputs on [X; X_test] of M prior networks (numpy) and their first-layer W^T W / N."""
    phi = arch.activation
    Z = np.concatenate([X, X_TEST])
    s_w2, s_a2, gamma = float(arch.s_w2), float(arch.s_a2), float(arch.gamma)
    if isinstance(arch, ak.CNN):
        n, S, C = arch.patch_size, arch.patches, arch.channels
        W = rng.normal(0, np.sqrt(s_w2 / n), (M, C, n))
        a = rng.normal(0, np.sqrt(s_a2 / (S * C**gamma)), (M, C, S))
        H = np.einsum("psn,mcn->mpcs", Z.reshape(len(Z), S, n), W)
        f = np.einsum("mpcs,mcs->mp", np.asarray(phi(H)), a)
        return f, np.einsum("mci,mcj->mij", W, W) / C
    widths, fan_in = arch.widths, (arch.d,) + arch.widths[:-1]
    W1 = rng.normal(0, np.sqrt(s_w2 / arch.d), (M, widths[0], arch.d))
    h = np.einsum("pi,mni->mpn", Z, W1)
    for N, m in zip(widths[1:], fan_in[1:]):
        h = np.einsum("mpi,mni->mpn", np.asarray(phi(h)), rng.normal(0, np.sqrt(s_w2 / m), (M, N, m)))
    a = rng.normal(0, np.sqrt(s_a2 / widths[-1] ** gamma), (M, widths[-1]))
    return np.einsum("mpn,mn->mp", np.asarray(phi(h)), a), np.einsum("mni,mnj->mij", W1, W1) / widths[0]


def importance_reference(arch, seed=0, chunk=250_000):
    """Self-normalised importance sampling: (mean test outputs, E[W1^T W1]/N1 entries) and SEs."""
    rng = np.random.default_rng(seed)
    logw, values = [], []
    for _ in range(NUM_PRIOR_DRAWS // chunk):
        f, cov = _prior_outputs(arch, rng, chunk)
        logw.append(-0.5 * np.sum((f[:, : len(X)] - Y) ** 2, axis=1) / KAPPA2)
        rows, cols = np.triu_indices(cov.shape[-1])
        values.append(np.concatenate([f[:, len(X):], cov[:, rows, cols]], axis=1))
    logw, values = np.concatenate(logw), np.concatenate(values)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ values
    se = np.sqrt((w**2) @ (values - mean) ** 2)
    assert 1 / np.sum(w**2) > 5000, "importance sampling degenerate: reference not trustworthy"
    return mean, se


def _sampled(est):
    cov = est.weight_covariance[0]
    rows, cols = np.triu_indices(cov.mean.shape[-1])
    return (
        np.concatenate([np.asarray(est.mean_output_test.mean), np.asarray(cov.mean)[rows, cols]]),
        np.concatenate([np.asarray(est.mean_output_test.se), np.asarray(cov.se)[rows, cols]]),
    )


def _check_against_importance(arch, est):
    ref, ref_se = importance_reference(arch)
    got, got_se = _sampled(est)
    z = (got - ref) / np.sqrt(got_se**2 + ref_se**2)
    print(f"{est.method}: max |z| = {np.max(np.abs(z)):.2f}, max se = {got_se.max():.4f}, is se = {ref_se.max():.4f}")
    assert np.max(got_se) < 0.03 and np.max(ref_se) < 0.03
    assert np.all(np.abs(z) < 3), f"z-scores {z}"
    assert est.max_rhat < 1.05


LINEAR = ak.FCN(2, 3, "linear", gamma=1.0)
LINEAR_G2 = ak.FCN(2, 3, "linear", gamma=2.0)
CASES = [
    pytest.param(LINEAR, "gibbs", dict(num_samples=2000, num_warmup=200), id="linear-gibbs"),
    pytest.param(LINEAR, "hmc", dict(num_samples=2000, num_warmup=400), id="linear-hmc"),
    pytest.param(LINEAR, "langevin", dict(num_samples=4000, num_warmup=1000, thin=5), id="linear-langevin"),
    pytest.param(LINEAR_G2, "gibbs", dict(num_samples=2000, num_warmup=200), id="linear-g2-gibbs"),
    pytest.param(LINEAR_G2, "hmc", dict(num_samples=2000, num_warmup=400), id="linear-g2-hmc"),
    pytest.param(LINEAR_G2, "langevin", dict(num_samples=4000, num_warmup=1000, thin=5), id="linear-g2-langevin"),
    pytest.param(ak.FCN(2, (3, 3), "linear"), "gibbs", dict(num_samples=2000, num_warmup=200), id="deep-linear-gibbs"),
    pytest.param(ak.FCN(2, 3, "erf", s_w2=2.0), "hmc", dict(num_samples=2000, num_warmup=400), id="erf-hmc"),
    pytest.param(ak.FCN(2, (3, 3), "tanh"), "langevin", dict(num_samples=4000, num_warmup=1000, thin=5), id="deep-tanh-langevin"),
    pytest.param(ak.CNN(1, 2, 4, "relu"), "auto", dict(num_samples=4000, num_warmup=1000, thin=5), id="cnn-relu-langevin"),
]


@pytest.mark.parametrize("arch, method, budget", CASES)
def test_sampler_matches_importance_sampling(arch, method, budget):
    est = sample_posterior(arch, DATA, KAPPA2, method=method, num_chains=4, key=1, **budget)
    _check_against_importance(arch, est)
