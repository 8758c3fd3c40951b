"""Saddle -> one loop of the deep exact measure (``actions.deep_exact_one_loop``) against the HMC references of
``tests/data/exact_deep.json`` (issue 15's deep erf cases: d = 15, N1 = N2 = N, gamma, P; cubic teacher, kappa2 =
1e-2): the first layer's weight-covariance ratio along w* and the last hidden layer's pre-activation ratio along y.

    PYTHONPATH=. python scripts/deep_exact_one_loop.py --P 20 --N 80 --samples 5000 --seeds 1
"""

import argparse
import json
import pathlib
import time

import jax
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.actions import deep_exact_one_loop
from adaptive_kernels.data import teacher_dataset
from adaptive_kernels.problem import make_problem

REFERENCES = pathlib.Path(__file__).parents[1] / "tests" / "data" / "exact_deep.json"
KAPPA2 = 1e-2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, default=20)
    parser.add_argument("--N", type=int, default=80)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    data = teacher_dataset(jax.random.PRNGKey(0), args.P, 15, "cubic", P_test=500)
    arch = ak.FCN(15, (args.N, args.N), "erf", gamma=args.gamma)
    problem = make_problem(arch, data, KAPPA2)
    for case in json.load(open(REFERENCES))["cases"]:
        if (case["P"], case["widths"], case["gamma"]) == (args.P, [args.N, args.N], args.gamma):
            print(f"HMC: ratio w* {case['eigenvalue_ratio'][0]}, last pre-act. ratio y {case['kernel_eigenvalue_ratio'][-1]}")
    for seed in range(args.seeds):
        start = time.perf_counter()
        sol = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate", measure="exact", samples=args.samples,
                                                       seed=jax.numpy.asarray(seed)))
        solved = time.perf_counter()
        out = deep_exact_one_loop.moments(sol.theory.sampled, problem, sol.value)
        jax.block_until_ready(out)
        w = [float(ak.eigenvalue_ratio(s[0], data.w_star)) for s in (out.saddle[1], out.second)]
        y = [float(ak.eigenvalue_ratio(s[-1], data.y)) for s in (out.saddle[1], out.second)]
        k = [float(ak.eigenvalue_ratio(s[-1], data.y)) for s in (out.saddle[0], out.kernels)]
        print(f"seed {seed} ({sol.message}; solve {solved - start:.0f} s, one loop {time.perf_counter() - solved:.0f} s,"
              f" |grad S|/|x| {float(out.gradient):.1e}): ratio w* {w[0]:.4f} -> {w[1]:.4f}; last pre-act. ratio y "
              f"{y[0]:.3f} -> {y[1]:.3f}; last kernel ratio y {k[0]:.3f} -> {k[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
