"""Is a K = 2 minimum of the axis mixture still a minimum in the K = 3 ansatz? (issue 17; docs/phases.md, "Chains
from the two predicted states at N = 125-330").

From the minima that ``scripts/phases_barrier.py --save`` pickled, at one N:P point: the lowest non-aligned K = 2
minimum with a third component added -- a fraction ``--weights`` of the neurons placed at the lowest aligned
minimum's displaced pair (+-m v, its variance), the other two components scaled down by that fraction, the gauge
kept (``actions.mixture.with_component``) -- and a descent of the K = 3 action (``phases.find_stationary_points``)
from each such start (``phases.check_richer`` does this for the minima of a ``PhaseStructure``).
If every descent, even from a tiny third component, ends at the aligned state, the non-aligned minimum is a minimum
of the K = 2 family only: the richer density lowers the action from it without a barrier.

    python scripts/phases_barrier.py --pool 400 --path 100:400 125:400 --ratios 30 60 --save m400.pkl
    python scripts/phases_richer.py --pool 400 --load m400.pkl --point 125:400 --weights 1e-3 1e-2
"""

from __future__ import annotations

import argparse
import pickle
import time

import jax.numpy as jnp

import adaptive_kernels as ak
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from phases_barrier import (  # noqa: F401 (Minimum: the class of the pickle's entries)
    Minimum, add_setting_arguments, lowest_of_each_kind, observables, problem_at, setting)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setting_arguments(parser)
    parser.add_argument("--load", required=True, help="the minima pickled by phases_barrier.py --save")
    parser.add_argument("--point", required=True, help="N:P, a point of that pickle")
    parser.add_argument("--weights", type=float, nargs="+", default=[1e-3, 1e-2], help="the third component's weight")
    args = parser.parse_args()
    pool, _ = setting(args)
    N, P = (float(x) for x in args.point.split(":"))
    with open(args.load, "rb") as f:
        minima = pickle.load(f)[(N, P)]
    aligned, nonaligned = lowest_of_each_kind(minima)
    problem = problem_at(args, pool, N, P)
    theory = ak.Adaptive(measure="mixture", components=3, along="axis", direction=pool.w_star)
    pair = max(aligned.value[1:], key=lambda M: float(jnp.sum(mixture.decode(jnp.asarray(M))[1] ** 2)))
    value = tuple(jnp.asarray(M) for M in nonaligned.value)
    starts = {f"weight {w:g}": mixture.with_component(value, jnp.asarray(pair), w) for w in args.weights}
    t = time.process_time()
    for p in phases.find_stationary_points(theory, problem, starts).points:
        o = observables(pool, problem, p.value)
        print(f"K = 3 from the non-aligned minimum + {p.starts}: S = {p.action:.4f}, {p.kind} (index {p.index}, "
              f"smallest eigenvalue {p.hessian_eigenvalues[0]:.3g}), a m^2 = {o['am2']:.2f} on weight "
              f"{o['pair_weight']:.3f}, alignment {o['ratio']:.3f}")
    print(f"K = 2 at N = {N:g}, P = {P:g}: aligned {aligned.action:.4f}, non-aligned {nonaligned.action:.4f}; "
          f"CPU {time.process_time() - t:.0f} s")


if __name__ == "__main__":
    main()
