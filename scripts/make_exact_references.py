"""HMC references for the exact large-width measure (issue 15; tests/test_exact_measure.py, docs/exact_measure.md).

Samples the posterior of finite erf networks with the library's HMC (readout integrated out exactly; THEORY.md
sec. 8) -- independent of the saddle-point code under test -- and writes, per case, the data recipe, the
architecture and the sampled observables with their Monte Carlo standard errors to a JSON file:

    nice -n 10 .venv/bin/python scripts/make_exact_references.py --set small --out tests/data/exact_small.json
    nice -n 10 .venv/bin/python scripts/make_exact_references.py --set issue --out tests/data/exact_issue.json \
        --samples 400 --warmup 200

``small``: the test case (two-layer erf, d = 5, P = 24, N = 100, gamma = 2, kappa2 = 1e-2, cubic teacher), where
the Gaussian ansatz overestimates the first-layer eigenvalue ratio by tens of percent. ``issue``: the cases of
issue 15 (two-layer erf, d = 20, N = 200, gamma in {1, 1.5, 2}, P in {20, 80}; deep erf, N1 = N2 = 80, d = 15,
gamma = 2, P = 20). The data are ``teacher_dataset(PRNGKey(data_seed), P, d, "cubic", P_test=P_test)``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.data import teacher_dataset  # noqa: E402
from adaptive_kernels.sampling import sample_posterior  # noqa: E402

KAPPA2 = 1e-2
SETS = {
    "small": [dict(d=5, P=24, widths=[100], gamma=2.0, P_test=200)],
    "issue": [dict(d=20, P=P, widths=[200], gamma=g, P_test=500) for g in (1.0, 1.5, 2.0) for P in (20, 80)]
    + [dict(d=15, P=20, widths=[80, 80], gamma=2.0, P_test=500)],
}


def _estimate(e):
    return None if e is None else [float(e.mean), float(e.se)]


def reference(case, num_chains, num_samples, num_warmup, data_seed=0, key=1):
    data = teacher_dataset(jax.random.PRNGKey(data_seed), case["P"], case["d"], "cubic", P_test=case["P_test"])
    arch = ak.FCN(case["d"], tuple(case["widths"]), "erf", gamma=case["gamma"])
    start = time.perf_counter()
    est = sample_posterior(arch, data, KAPPA2, method="hmc", num_chains=num_chains, num_samples=num_samples,
                           num_warmup=num_warmup, key=key)
    return {
        **case, "kappa2": KAPPA2, "teacher": "cubic", "data_seed": data_seed, "activation": "erf",
        "sampler": {"method": "hmc", "num_chains": num_chains, "num_samples": num_samples, "num_warmup": num_warmup,
                    "key": key, "max_rhat": float(est.max_rhat), "acceptance": float(est.acceptance),
                    "seconds": time.perf_counter() - start},
        "learnability": _estimate(est.learnability),
        "eigenvalue_ratio": [_estimate(r) for r in est.eigenvalue_ratio],
        "kernel_eigenvalue_ratio": [_estimate(r) for r in est.kernel_eigenvalue_ratio],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=tuple(SETS), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=400)
    args = parser.parse_args(argv)
    rows = []
    for case in SETS[args.set]:
        rows.append(reference(case, args.chains, args.samples, args.warmup))
        print(json.dumps(rows[-1]), flush=True)
        with open(args.out, "w") as f:  # written after every case: a long run keeps what it has
            json.dump({"script": "scripts/make_exact_references.py", "set": args.set, "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
