"""Finite networks drawn from the prior (THEORY.md sec. 1) against the NNGP kernel.

For one hidden layer the prior output covariance E[f(x) f(x')] equals the NNGP kernel at every
width (the readout is independent of the hidden units); for deep *linear* nets too (the covariance
is linear in every layer's). We draw 20000 networks and compare the empirical covariance with
``adaptive_kernels.nngp`` within 4 Monte Carlo standard errors per entry (16 entries per case, so
a 4-sigma bound keeps the test deterministic-in-practice while a wrong variance by >~3% fails).
"""

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import init_network, prior_std

X = np.array([[1.0, 0.5, -0.3, 0.2], [-0.7, 1.1, 0.4, 0.0], [0.3, -0.2, 1.5, -1.0], [0.0, 0.8, -0.6, 1.3]])
NUM_NETS = 20_000


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param(ak.FCN(4, 5, "erf", s_w2=1.5, s_a2=0.7, s_b2=0.2, gamma=1.5), id="fcn-erf-bias"),
        pytest.param(ak.FCN(4, (3, 6), "linear", s_w2=1.3, s_b2=0.1), id="deep-linear-bias"),
        pytest.param(ak.CNN(2, 2, 3, "relu", s_w2=1.2, gamma=2.0), id="cnn-relu"),
    ],
)
def test_prior_output_covariance_is_nngp(arch):
    keys = jax.random.split(jax.random.key(0), NUM_NETS)
    f = np.asarray(jax.vmap(lambda k: init_network(arch, k)(X))(keys))
    products = f[:, :, None] * f[:, None, :]
    cov, se = products.mean(0), products.std(0) / np.sqrt(NUM_NETS)
    K = np.asarray(ak.nngp(arch, X))
    assert np.all(np.abs(cov - K) < 4 * se), np.max(np.abs(cov - K) / se)


def test_weight_covariance_and_shapes():
    """E[W1^T W1]/N1 = s_w2/d I under the prior; shapes follow the architecture."""
    arch = ak.FCN(4, (200, 7), "relu", s_w2=2.0)
    net = init_network(arch, 3)
    W1, W2 = net.features.weights
    assert W1.shape == (200, 4) and W2.shape == (7, 200) and net.readout.shape == (7,)
    assert net.features.biases is None and net(X).shape == (4,)
    cov = np.asarray(W1.T @ W1 / 200)
    # entries of W1^T W1/N1 have standard deviation s_w2/d * sqrt(2/N1) ~ 0.05 on the diagonal
    assert np.allclose(cov, 0.5 * np.eye(4), atol=0.2)
    std = prior_std(arch)
    assert np.isclose(std.readout, np.sqrt(1.0 / 7))
    cnn = init_network(ak.CNN(2, 2, 3), 0)
    assert cnn.features.filters.shape == (3, 2) and cnn.readout.shape == (6,) and cnn(X).shape == (4,)
