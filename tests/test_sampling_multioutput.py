"""HMC with several outputs, y (P, k): k readout columns integrated out with one hidden network.

Checked against formulas written here in numpy: the readout-integrated log posterior is the sum over
columns of log N(y_j | 0, s_a Phi Phi^T + kappa2 I) (both evidence forms and the gradient), and the
sampled mean outputs of a one-weight net match a quadrature over that weight, and so does a user observable of
the draws (``observe``: the posterior probability of |w| > 1, an indicator, not a moment).
"""

import numpy as np
import pytest
from scipy.special import erf

import adaptive_kernels as ak
from adaptive_kernels.sampling import HMC, Posterior, sample_posterior
from adaptive_kernels.sampling.networks import readout_variance


def _numpy_potential(z, arch, X, Y, kappa2):
    """|z|^2/2 - sum_j log N(y_j | 0, s_a Phi Phi^T + kappa2 I), two-layer erf FCN, W = z sqrt(s_w2/d)."""
    N, d = arch.width, arch.d
    W = z.reshape(N, d) * np.sqrt(arch.s_w2 / d)
    Phi = erf(X @ W.T)
    K = arch.s_a2 / N**arch.gamma * Phi @ Phi.T + kappa2 * np.eye(len(X))
    _, logdet = np.linalg.slogdet(K)
    P, k = Y.shape
    evidence = -0.5 * np.sum(Y * np.linalg.solve(K, Y)) - 0.5 * k * logdet - 0.5 * P * k * np.log(2 * np.pi)
    return 0.5 * z @ z - evidence, Phi, K


@pytest.mark.parametrize("width", [3, 9])  # N <= P: primal (Woodbury) form; N > P: dual form
def test_potential_is_sum_over_columns(width):
    rng = np.random.default_rng(0)
    P, d, k, kappa2 = 6, 2, 3, 0.05
    arch = ak.FCN(d, width, "erf", gamma=1.5)
    X, Y = rng.normal(size=(P, d)), rng.normal(size=(P, k))
    posterior = Posterior(arch, X, Y, np.float64(kappa2), False)
    value_and_grad, record, dim = HMC().potential_and_unravel(posterior)
    z = rng.normal(size=dim)
    U, g = value_and_grad(z)
    expected, Phi, K = _numpy_potential(z, arch, X, Y, kappa2)
    np.testing.assert_allclose(U, expected, rtol=1e-10)
    v, h = rng.normal(size=dim), 1e-5
    slope = (_numpy_potential(z + h * v, arch, X, Y, kappa2)[0] - _numpy_potential(z - h * v, arch, X, Y, kappa2)[0]) / (2 * h)
    np.testing.assert_allclose(g @ v, slope, rtol=1e-6)
    features, readout = record(z)
    s_a = readout_variance(arch)
    np.testing.assert_allclose(readout, s_a * Phi.T @ np.linalg.solve(K, Y), rtol=1e-9, atol=1e-12)
    assert features.output(X, readout).shape == (P, k)


def test_one_weight_net_matches_quadrature():
    """d = N = 1, erf, two output columns: the posterior of the single hidden weight w is
    prior(w) prod_j N(y_j | 0, s_a phi phi^T + kappa2 I); E[f(x_test)], E[w^2] and P(|w| > 1) by quadrature over w."""
    X = np.array([[1.0], [-0.5], [0.3], [1.5]])
    Y = np.array([[0.8, -0.2], [-0.5, 0.1], [0.2, 0.3], [0.9, -0.4]])
    X_test = np.array([[0.7], [-1.2]])
    arch, kappa2 = ak.FCN(1, 1, "erf"), 0.1
    w = np.linspace(-8, 8, 4001)
    s_a = readout_variance(arch)
    log_post, outputs = [], []
    for wi in w:
        phi, phi_test = erf(wi * X[:, 0]), erf(wi * X_test[:, 0])
        K = s_a * np.outer(phi, phi) + kappa2 * np.eye(len(X))
        alpha = np.linalg.solve(K, Y)
        log_post.append(-0.5 * wi**2 / arch.s_w2 - 0.5 * np.sum(Y * alpha) - np.linalg.slogdet(K)[1])
        outputs.append(s_a * np.outer(phi_test, phi @ alpha))
    p = np.exp(np.array(log_post) - max(log_post))
    p /= p.sum()
    mean_test = np.tensordot(p, np.array(outputs), axes=1)
    data = ak.Dataset(X=X, y=Y, X_test=X_test, y_test=np.ones((2, 2)))
    est = sample_posterior(arch, data, kappa2, num_chains=4, num_samples=1000, num_warmup=300, key=1,
                           observe=lambda features: {"tail": (features.weight_matrices()[0][0, 0] ** 2 > 1.0) * 1.0})
    assert est.method == "hmc"  # 'auto' with output columns
    assert est.mean_output_test.mean.shape == (2, 2)
    assert est.max_rhat < 1.05
    err = np.abs(est.mean_output_test.mean - mean_test)
    assert np.all(err < 4 * est.mean_output_test.se + 1e-3), (est.mean_output_test.mean, mean_test, est.mean_output_test.se)
    w2 = p @ w**2
    assert abs(float(est.weight_covariance[0].mean[0, 0]) - w2) < 4 * float(est.weight_covariance[0].se[0, 0]) + 1e-3
    tail = p @ (w**2 > 1.0)
    observed = est.observed["tail"]
    assert abs(float(observed.mean) - tail) < 4 * float(observed.se) + 1e-3, (observed, tail)
    trace = est.observed_trace["tail"]  # batch means per chain: each chain on its own agrees with the quadrature
    assert trace.shape == (4, 20)
    per_chain_se = trace.std(axis=1, ddof=1) / np.sqrt(trace.shape[1])
    assert np.all(np.abs(trace.mean(axis=1) - tail) < 5 * per_chain_se + 1e-3), (trace.mean(axis=1), tail)
