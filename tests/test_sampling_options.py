"""sample_posterior options: the progress bar and float32 inputs (THEORY.md sec. 8).

- progress=True shows a tqdm bar over the sampling chunks and changes nothing else: with the same
  key the estimates are bit-identical to progress=False.
- float32 data run in float32 end to end (draws, batch means, estimates and their standard errors)
  and give the posterior of the float64 run: a linear net sampled by exact Gibbs and an erf net by
  HMC, each compared with the float64 run of the same sampler within 4 combined standard errors
  (independent random streams: the float32 draws differ, the law must not; 4 rather than 3 as
  several entries are compared at once).
"""

import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import sample_posterior

RNG = np.random.default_rng(5)
X, X_TEST, W_STAR = RNG.normal(size=(6, 3)), RNG.normal(size=(5, 3)), np.array([1.0, -0.5, 0.2])
DATA = ak.Dataset(X=X, y=np.tanh(X @ W_STAR), X_test=X_TEST, y_test=np.tanh(X_TEST @ W_STAR), w_star=W_STAR)
BUDGET = dict(num_chains=2, num_samples=400, num_warmup=200, key=3)


def _float32(data):
    return ak.Dataset(*(None if a is None else np.asarray(a, np.float32) for a in
                        (data.X, data.y, data.X_test, data.y_test, data.w_star)))


def test_progress_bar_is_shown_and_changes_nothing(capsys):
    arch = ak.FCN(3, 4, "linear")
    quiet = sample_posterior(arch, DATA, 0.1, num_chains=2, num_samples=20, num_warmup=10, num_batches=4, key=0)
    shown = sample_posterior(arch, DATA, 0.1, num_chains=2, num_samples=20, num_warmup=10, num_batches=4, key=0,
                             progress=True)
    err = capsys.readouterr().err
    assert "sampling (gibbs)" in err and "chunk" in err
    np.testing.assert_array_equal(np.asarray(quiet.mean_output_test.mean), np.asarray(shown.mean_output_test.mean))
    np.testing.assert_array_equal(np.asarray(quiet.weight_covariance[0].se), np.asarray(shown.weight_covariance[0].se))


@pytest.mark.parametrize("arch, method", [(ak.FCN(3, 4, "linear", gamma=2.0), "gibbs"), (ak.FCN(3, 4, "erf"), "hmc")],
                         ids=["linear-gibbs", "erf-hmc"])
def test_float32_inputs_sample_in_float32(arch, method):
    est32 = sample_posterior(arch, _float32(DATA), 0.1, method=method, **BUDGET)
    est64 = sample_posterior(arch, DATA, 0.1, method=method, **BUDGET)
    for e in (est32.mean_output_test, est32.learnability, est32.weight_covariance[0], est32.eigenvalue_ratio[0]):
        assert np.asarray(e.mean).dtype == np.float32 and np.asarray(e.se).dtype == np.float32
    assert est32.max_rhat < 1.1 and np.all(np.isfinite(np.asarray(est32.mean_output_test.mean)))
    for e32, e64 in [(est32.mean_output_test, est64.mean_output_test), (est32.weight_covariance[0], est64.weight_covariance[0]),
                     (est32.learnability, est64.learnability)]:
        se = np.sqrt(np.asarray(e32.se, float) ** 2 + np.asarray(e64.se, float) ** 2)
        assert np.all(np.abs(np.asarray(e32.mean, float) - np.asarray(e64.mean, float)) < 4 * se + 1e-6)
