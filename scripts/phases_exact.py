"""Do the K = 2 axis mixture's two minima survive in the exact large-width measure? (issue 17; docs/phases.md,
"Chains from the two predicted states at N = 125-330").

From the minima that ``scripts/phases_barrier.py --save`` pickled, at one N:P point: the exact (non-Gaussian,
importance-sampled) measure, ``Adaptive(measure="exact")``, solved twice per key, with its proposals first adapted
at the second moment of the lowest aligned K = 2 minimum and at that of the lowest non-aligned one
(``exact.weight_form_conjugates``, as ``scripts/exact_degenerate.py --from-mixture``). Two different saddles would
be a coexistence the exact measure keeps; one saddle from both starts means the K = 2 window is the ansatz's.

    python scripts/phases_barrier.py --pool 400 --path 100:400 125:400 --ratios 30 60 --save m400.pkl
    python scripts/phases_exact.py --pool 400 --load m400.pkl --point 125:400 --seeds 0 1
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.actions import exact, mixture
from exact_degenerate import anchored_exact
from phases_barrier import (  # noqa: F401 (Minimum: the class of the pickle's entries)
    Minimum, add_setting_arguments, lowest_of_each_kind, setting)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setting_arguments(parser)
    parser.add_argument("--load", required=True, help="the minima pickled by phases_barrier.py --save")
    parser.add_argument("--point", required=True, help="N:P, a point of that pickle")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the exact measure's sampling keys")
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    pool, _ = setting(args)
    N, P = (float(x) for x in args.point.split(":"))
    with open(args.load, "rb") as f:
        minima = pickle.load(f)[(N, P)]
    starts = dict(zip(("aligned", "non-aligned"), lowest_of_each_kind(minima)))
    arch = ak.FCN(args.d, int(N), "erf", gamma=2.0)
    data = ak.Dataset(X=pool.X[:int(P)], y=pool.y[:int(P)], X_test=pool.X_test, y_test=pool.y_test,
                      w_star=pool.w_star)
    problem = ak.make_problem(arch, data, args.kappa2)
    for name, start in starts.items():
        second = mixture.second_moment(problem, start.value, pool.w_star)
        print(f"N = {N:g}, P = {P:g}, K = 2 {name} minimum: S = {start.action:.3f}, ratio along w* "
              f"{float(ak.eigenvalue_ratio(second, pool.w_star)):.3f}", flush=True)
        anchor = exact.weight_form_conjugates(problem, second)
        for seed in args.seeds:
            t = time.process_time()
            sol = ak.solve(arch, data, args.kappa2, anchored_exact(problem, args.samples, seed, anchor))
            s = ak.summarize(sol, arch, data, args.kappa2)
            print(f"  exact, from {name}, key {seed}: {sol.message}; learnability {s['learnability']:.4f}, ratio w* "
                  f"{s['eigenvalue_ratio'][0]:.3f}, ESS/S {np.asarray(sol.stats['ess']) / args.samples}, "
                  f"mcmc {np.asarray(sol.stats['mcmc'])}, {time.process_time() - t:.0f} s CPU", flush=True)


if __name__ == "__main__":
    main()
