"""HMC references for the one-loop correction around the exact large-width measure (issue 16's nonlinear target;
tests/test_exact_one_loop.py, docs/finite_width.md).

Width scans of two-layer erf and ReLU nets at gamma = 1 (d = 5, P = 20, kappa2 = 1e-2, cubic teacher,
``teacher_dataset(PRNGKey(0), P, d, "cubic", P_test=200)``), sampled with the library's HMC (readout integrated out;
``make_exact_references.reference``; 8 chains x 2000 draws after 500 warm-up, key 1), long enough that the standard
errors are several times smaller than the large-width saddle's O(1/N) error:

    nice -n 10 .venv/bin/python scripts/make_exact_one_loop_references.py --out tests/data/exact_one_loop.json

With ``--table tests/data/exact_one_loop.json`` it solves the exact saddle and its one-loop correction
(``Adaptive(form="conjugate", measure="exact", loops=0 / 1)``, ``--seeds`` keys x ``--exact-samples`` samples) on
each stored case and prints a markdown table against the HMC numbers (docs/finite_width.md: ``--seeds 4
--exact-samples 40000``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402

_spec = importlib.util.spec_from_file_location("make_exact_references",
                                               pathlib.Path(__file__).with_name("make_exact_references.py"))
references = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(references)

WIDTHS = (25, 50, 100, 200)
CASES = [dict(d=5, P=20, widths=[N], gamma=1.0, P_test=200, activation=act) for act in ("erf", "relu")
         for N in WIDTHS]


def observables(solution, arch, data, kappa2):
    """(learnability, first-layer eigenvalue ratio along w*, pre-activation kernel ratio along y) of a solution: the
    last from the first-layer weight covariance, X Sigma X^T (no biases), HMC's E[H H^T]/N."""
    from jax.tree_util import Partial

    from adaptive_kernels.problem import make_problem

    s = ak.summarize(solution, arch, data, kappa2)
    problem, theory = make_problem(arch, data, kappa2), solution.theory
    sigma = theory.mean(Partial(type(theory).input_covariances, theory, problem=problem), solution.value, problem)[0][0]
    pre = float(ak.eigenvalue_ratio(data.X @ sigma @ data.X.T, data.y))
    return s["learnability"], s["eigenvalue_ratio"][0], pre


def table(path, seeds, samples):
    """Markdown rows: exact saddle / one loop (mean ± SE over keys) / HMC for the learnability, the first-layer
    eigenvalue ratio along w* and the pre-activation kernel ratio along y, with the one-loop's error in HMC SEs."""
    from adaptive_kernels.actions.exact_one_loop import with_loops

    print("| net | N | learnability saddle / one loop / HMC | ratio w* saddle / one loop / HMC "
          "| pre-act. ratio y saddle / one loop / HMC | s/solve |")
    print("|---|---|---|---|---|---|")
    for case in json.load(open(path))["cases"]:
        arch, data = references._case_data(case)
        kappa2 = case["kappa2"]
        values, seconds = {0: [], 1: []}, []
        for seed in range(seeds):
            start = time.perf_counter()
            sol = ak.solve(arch, data, kappa2, ak.Adaptive(form="conjugate", measure="exact", samples=samples,
                                                           seed=jax.numpy.asarray(seed)))
            for loops in (0, 1):
                values[loops].append(observables(with_loops(sol, loops), arch, data, kappa2))
            seconds.append(time.perf_counter() - start)
        cells = []
        for i, key in enumerate(("learnability", "eigenvalue_ratio", "kernel_eigenvalue_ratio")):
            hmc = case[key] if key == "learnability" else case[key][0]
            digits = 4 if i == 0 else 3
            parts = []
            for loops in (0, 1):
                a = np.array([v[i] for v in values[loops]])
                parts.append(references._fmt(a.mean(), a.std(ddof=1) / np.sqrt(len(a)), digits))
            cells.append(" / ".join(parts + [references._fmt(*hmc, digits)]))
        print(f"| {case['activation']} 2-layer d={case['d']} P={case['P']} | {case['widths'][0]} | "
              + " | ".join(cells) + f" | {np.mean(seconds):.0f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--table", help="a references JSON: print saddle / one loop / HMC instead of sampling")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--exact-samples", type=int, default=20000)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--only", help="activation to sample (erf or relu; default both)")
    args = parser.parse_args(argv)
    if args.table:
        return table(args.table, args.seeds, args.exact_samples)
    if args.out is None:
        parser.error("--out is required to make references")
    rows = []
    for case in CASES:
        if args.only and case["activation"] != args.only:
            continue
        rows.append(references.reference(case, args.chains, args.samples, args.warmup))
        print(json.dumps(rows[-1]), flush=True)
        with open(args.out, "w") as f:  # written after every case: a long run keeps what it has
            json.dump({"script": "scripts/make_exact_one_loop_references.py", "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
