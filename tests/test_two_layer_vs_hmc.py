"""Two-layer erf nets: the adaptive kernel (Gaussian ansatz) against HMC ground truth (THEORY.md
secs. 4 and 8; issue 4, "erf net, HMC").

Setup: d = 5, P = 40, kappa2 = 1e-2, cubic teacher (500 test points), erf, s_w2 = s_a2 = 1.
Ground truth: ``sample_posterior(method="hmc")`` (readout integrated out exactly), 4 chains x 400
draws after 200 warm-up transitions: learnability SE ~1e-3, eigenvalue-ratio SE ~0.01, R-hat
checked. (Numbers below: 600 draws.) Theories: ``solve`` + ``summarize`` for "adaptive", and the NNGP ("gp") as the contrast.

Measured when written (HMC ± SE / adaptive / NNGP):

    gamma N    learnability                     ratio of E[W^T W]/N along w* (NNGP: 1)
    1     25   0.7005±0.0010 / 0.6850 / 0.6702   1.117±0.012 / 1.063
    1     100  0.6749±0.0005 / 0.6720 / 0.6702   1.012±0.005 / 1.003
    2     100  0.6048±0.0002 / 0.5859 / 0.5300   2.583±0.008 / 2.920

What holds and is asserted: at gamma = 1 HMC and the adaptive kernel both approach the NNGP as N
grows; the adaptive kernel tracks the sampled learnability and eigenvalue ratio there. In
mean-field scaling (gamma = 2) the adaptive learnability is closer to HMC than the NNGP's and
both see the first layer adapt along the teacher (ratio > 1). Where the Gaussian ansatz stops
being accurate (documented, not asserted): at gamma = 2 it overestimates the eigenvalue ratio by
13% here and up to ~40% at N = 25 or P = 24 (d = 5-8; the true mean-field weight density is
not Gaussian, THEORY.md sec. 4), its learnability is off by ~0.02 (vs 0.075 for the NNGP), and
at gamma = 2, N = 25 the solver finds no stationary Gaussian Sigma at all.
"""

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import sample_posterior

D, P, KAPPA2 = 5, 40, 1e-2


@pytest.fixture(scope="module")
def data():
    return ak.teacher_dataset(jax.random.PRNGKey(0), P, D, "cubic", P_test=500)


@pytest.fixture(scope="module")
def compare(data):
    """(gamma, N) -> (HMC estimates, adaptive summary, NNGP summary), computed once per pair."""
    cache = {}

    def run(gamma, N):
        if (gamma, N) not in cache:
            arch = ak.FCN(D, N, "erf", gamma=gamma)
            est = sample_posterior(arch, data, KAPPA2, method="hmc", num_chains=4, num_samples=400,
                                   num_warmup=200, key=1)
            assert est.max_rhat < 1.05, est.rhat
            theory = {name: ak.summarize(ak.solve(arch, data, KAPPA2, name), arch, data, KAPPA2)
                      for name in ("adaptive", "gp")}
            print(f"gamma={gamma} N={N}: L HMC {est.learnability} adaptive {theory['adaptive']['learnability']:.4f} "
                  f"NNGP {theory['gp']['learnability']:.4f}; ratio HMC {est.eigenvalue_ratio[0]} "
                  f"adaptive {theory['adaptive']['eigenvalue_ratio'][0]:.3f}")
            assert theory["adaptive"]["converged"]
            cache[gamma, N] = est, theory["adaptive"], theory["gp"]
        return cache[gamma, N]

    return run


def _learnability(est):
    return float(est.learnability.mean), float(est.learnability.se)


@pytest.mark.slow
def test_standard_scaling_hmc_and_adaptive_approach_nngp_as_width_grows(compare):
    # gamma = 1: adaptation is O(1/N). HMC's distance to the NNGP learnability must shrink at
    # least 3-fold from N = 25 to N = 100 (measured 0.030 -> 0.005, ~1/N would be 4-fold; 3 leaves
    # room for the SE ~1e-3), and HMC's eigenvalue ratio must approach 1 likewise.
    (hmc_s, _, gp_s), (hmc_l, _, gp_l) = compare(1.0, 25), compare(1.0, 100)
    (L_s, se_s), (L_l, se_l) = _learnability(hmc_s), _learnability(hmc_l)
    assert abs(L_l - gp_l["learnability"]) + 3 * se_l < (abs(L_s - gp_s["learnability"]) - 3 * se_s) / 3
    R_s, R_l = float(hmc_s.eigenvalue_ratio[0].mean), float(hmc_l.eigenvalue_ratio[0].mean)
    assert abs(R_l - 1) < abs(R_s - 1) / 3


@pytest.mark.parametrize("width", [25, 100])
def test_standard_scaling_adaptive_tracks_hmc(compare, width):
    # gamma = 1: the adaptive kernel's learnability within 0.03 + 3 SE of HMC (measured 0.016-0.019
    # at N = 25, 0.003 at N = 100: O(1/N) corrections the Gaussian saddle misses) and its eigenvalue
    # ratio within 8% (measured 4.8% and 0.9%).
    est, adaptive, _ = compare(1.0, width)
    L, se = _learnability(est)
    assert abs(adaptive["learnability"] - L) < 0.03 + 3 * se
    R = float(est.eigenvalue_ratio[0].mean)
    assert abs(adaptive["eigenvalue_ratio"][0] - R) < 0.08 * R + 3 * float(est.eigenvalue_ratio[0].se)


def test_mean_field_adaptive_closer_than_nngp(compare):
    # gamma = 2, N = 100: the adaptive learnability is within 0.04 + 3 SE of HMC (THEORY.md sec. 4
    # quotes Gaussian-ansatz errors up to 0.04; measured 0.019) and closer to it than the NNGP's
    # (measured 0.075) by a margin of 3 SE; both HMC and the theory adapt the first layer along the teacher (ratio > 1 by more
    # than 10 SE), though the theory overestimates how much (see the module docstring).
    est, adaptive, gp = compare(2.0, 100)
    L, se = _learnability(est)
    assert abs(adaptive["learnability"] - L) < 0.04 + 3 * se
    assert abs(adaptive["learnability"] - L) + 3 * se < abs(gp["learnability"] - L)
    R, R_se = float(est.eigenvalue_ratio[0].mean), float(est.eigenvalue_ratio[0].se)
    assert R - 1 > 10 * R_se and adaptive["eigenvalue_ratio"][0] > 1.1
