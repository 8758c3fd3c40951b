"""HMC reference for the two-layer CNN's exact filter measure (tests/test_exact_cnn.py, docs/exact_measure.md).

Samples the posterior of a finite erf CNN (non-overlapping patches, mean-field readout) with the library's HMC
(readout integrated out exactly; THEORY.md sec. 8), independent of the saddle-point code under test, and writes the
data recipe, the architecture and the sampled observables with their Monte Carlo standard errors:

    nice -n 10 .venv/bin/python scripts/make_exact_cnn_reference.py --out tests/data/exact_cnn.json

Observables: learnability of the mean output on the test set, the filter covariance E[w w^T] (n x n; HMC:
E[W^T W]/C) and the patch-averaged pre-activation kernel E[h h^T] on the training inputs with its ratio along y.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.sampling import sample_posterior  # noqa: E402

KAPPA2 = 1e-2
CASES = [dict(patch_size=4, patches=3, channels=C, gamma=2.0, P=24, P_test=200) for C in (25, 100)]


def case_data(case):
    """(arch, data) of a stored case: erf CNN, ``teacher_dataset(PRNGKey(0), P, d, "cubic")``."""
    d = case["patch_size"] * case["patches"]
    data = ak.teacher_dataset(jax.random.PRNGKey(case.get("data_seed", 0)), case["P"], d, "cubic",
                              P_test=case["P_test"])
    arch = ak.CNN(case["patch_size"], case["patches"], case["channels"], "erf", gamma=case["gamma"])
    return arch, data


def reference(case, num_chains, num_samples, num_warmup, key=1):
    arch, data = case_data(case)
    start = time.perf_counter()
    est = sample_posterior(arch, data, KAPPA2, method="hmc", num_chains=num_chains, num_samples=num_samples,
                           num_warmup=num_warmup, key=key)
    return {**case, "kappa2": KAPPA2, "teacher": "cubic", "data_seed": 0, "activation": "erf",
            "sampler": {"method": "hmc", "num_chains": num_chains, "num_samples": num_samples,
                        "num_warmup": num_warmup, "key": key, "max_rhat": float(est.max_rhat),
                        "acceptance": float(est.acceptance), "seconds": time.perf_counter() - start},
            "learnability": [float(est.learnability.mean), float(est.learnability.se)],
            "filter_covariance": [np.asarray(est.weight_covariance[0].mean).tolist(),
                                  np.asarray(est.weight_covariance[0].se).tolist()],
            "kernel_ratio": [float(est.kernel_eigenvalue_ratio[0].mean), float(est.kernel_eigenvalue_ratio[0].se)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=400)
    args = parser.parse_args()
    cases = []
    for case in CASES:
        cases.append(reference(case, args.chains, args.samples, args.warmup))
        print(json.dumps({k: v for k, v in cases[-1].items() if k != "filter_covariance"}), flush=True)
    with open(args.out, "w") as f:
        json.dump({"cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
