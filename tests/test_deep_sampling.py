"""Deep linear nets against exact Gibbs sampling (THEORY.md sec. 8; issue 5 acceptance).

Setup: d = 15, two hidden layers of N = 100, P = 30, kappa2 = 1e-2, unit linear teacher,
gamma in {1, 2}; Gibbs: 4 chains x 600 draws after 300 warmup (Monte Carlo standard errors
~3e-5 on the learnability, ~0.3% on the ratios; R-hat checked). Measured when written:
learnability sampler / kernel scaling / adaptive = 0.99096 / 0.99124 / 0.99289 (gamma=1),
0.89015 / 0.89065 / 0.89492 (gamma=2); per-layer kernel ratios along y within 2.7%,
first-layer Sigma ratio along w* within 2.7%.
"""

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.data import teacher_dataset

sampling = pytest.importorskip("adaptive_kernels.sampling")


@pytest.fixture(scope="module", params=[1.0, 2.0], ids=["gamma1", "gamma2"])
def gibbs_and_theory(request):
    data = teacher_dataset(jax.random.PRNGKey(7), 30, 15, P_test=500)
    arch = ak.FCN(15, (100, 100), "linear", gamma=request.param)
    est = sampling.sample_posterior(arch, data, 1e-2, method="gibbs", num_chains=4, num_samples=600, num_warmup=300, key=1)
    assert all(abs(r - 1) < 0.05 for r in est.rhat.values()), est.rhat
    return arch, data, est


def _learnability(sol, arch, data):
    return float(ak.learnability(ak.predict(sol, arch, data, 1e-2).mean_test, data.y_test))


def test_kernel_scaling_learnability_matches_gibbs(gibbs_and_theory):
    """Deep kernel scaling (one scalar per layer) gives the mean output: learnability within
    0.002 of exact sampling (the issue's tolerance; measured 3e-4 and 5e-4)."""
    arch, data, est = gibbs_and_theory
    sol = ak.solve(arch, data, 1e-2, "scaling")
    assert abs(_learnability(sol, arch, data) - float(est.learnability.mean)) < 0.002


def test_adaptive_kernels_match_gibbs_per_layer(gibbs_and_theory):
    """Adaptive per-layer kernels: learnability within 0.01 (measured 0.002 and 0.005: the
    Gaussian per-layer saddle carries O(1/N) errors that kernel scaling does not), each layer's
    kernel eigenvalue ratio along y (sampler: E[H_l H_l^T]/N_l) within 5%, and the first-layer
    input-space Sigma's ratio along w* (sampler: E[W_1^T W_1]/N_1) within 5%, as ``summarize`` reports them
    (lists, one entry per layer) for the P x P kernel form and the d x d weight form alike."""
    arch, data, est = gibbs_and_theory
    for form in ("kernel", "weight"):
        sol = ak.solve(arch, data, 1e-2, "adaptive", form=form)
        assert bool(sol.converged), sol.message
        summary = ak.summarize(sol, arch, data, 1e-2)
        assert abs(summary["learnability"] - float(est.learnability.mean)) < 0.01
        assert len(summary["kernel_eigenvalue_ratio"]) == len(summary["eigenvalue_ratio"]) == 2
        for ours, ratio in zip(summary["kernel_eigenvalue_ratio"], est.kernel_eigenvalue_ratio):
            np.testing.assert_allclose(ours, float(ratio.mean), rtol=0.05)
        np.testing.assert_allclose(summary["eigenvalue_ratio"][0], float(est.eigenvalue_ratio[0].mean), rtol=0.05)
