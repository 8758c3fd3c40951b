"""Minima and barrier of the cubic teacher's mixture action along the mean-field line N = c N0, kappa2 = kappa2_0 / c
(issue 17; docs/phases.md, "Barriers along the mean-field line").

With gamma = 2 the readout kernel is K = s_a2 N^-1 E_rho[phi phi], so on this line K + kappa2 I = (K_1 + kappa2_0 I) / c
and the action of every state rho is S_c = c A(rho) + B(rho) - (P/2) log c, with A = N0 KL + (1/2) y^T (K_1 +
kappa2_0)^-1 y and B = (1/2) log det(K_1 + kappa2_0) (tests/test_mixture.py checks the law). The stationary points
tend to those of A, and action gaps and barriers grow like c: the line is the way to make a barrier of the theory
as high as wanted on a fixed data set, at the cost of width (HMC cost) and noise kappa2_0 / c.

At each c (in the order given) the axis-form K = 2 minima are found from the prior, aligned starts (--ratios) and
the minima of the previous c; between the lowest aligned (a m^2 > 5 along w*) and the lowest non-aligned minimum,
``phases.barrier`` (string method, then Newton to the index-1 saddle, then descents from it): the string's maximum
over each minimum (an upper bound on the barrier out of it) and, where Newton reaches the saddle, the barrier.

    python scripts/phases_mean_field_line.py --P 25 --c 5 10 20 40 --csv docs/phases_mean_field_line.csv
"""

from __future__ import annotations

import argparse
import time

import jax
import pandas as pd

from adaptive_kernels import phases
from phases_barrier import ALIGNED, observables, problem_at, setting

jax.config.update("jax_enable_x64", True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--N", type=float, default=10, help="N0: the width at c = 1")
    parser.add_argument("--kappa2", type=float, default=0.1, help="kappa2_0: the noise at c = 1")
    parser.add_argument("--P", type=int, default=25)
    parser.add_argument("--c", type=float, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--ratios", type=float, nargs="+", default=[30.0, 3.0, 1.5])
    parser.add_argument("--images", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--csv")
    args = parser.parse_args(argv)
    pool, theory = setting(args)
    carried, rows = {}, []
    for c in args.c:
        t = time.process_time()
        N, kappa2 = int(round(args.N * c)), args.kappa2 / c
        problem = problem_at(argparse.Namespace(d=args.d, kappa2=kappa2), pool, N, args.P)
        starts = phases.default_starts(problem, theory, pool.w_star, args.ratios) | carried
        found = phases.find_stationary_points(theory, problem, starts)
        minima = [(p, observables(pool, problem, p.value)) for p in found.points if p.is_minimum(zero_modes=True)]
        for p, o in minima:
            print(f"c={c:g} N={N} kappa2={kappa2:.4g}: S={p.action:.4f} {p.kind} a m^2={o['am2']:.3f} "
                  f"weight={o['pair_weight']:.3f} ratio={o['ratio']:.4f} starts={p.starts}", flush=True)
        carried = {f"c={c:g} #{j}": p.value for j, (p, _) in enumerate(minima)}
        aligned = [(p, o) for p, o in minima if o["am2"] > ALIGNED]
        other = [(p, o) for p, o in minima if o["am2"] <= ALIGNED]
        row = {"c": c, "N": N, "kappa2": kappa2, "P": args.P, "d": args.d}
        if aligned and other:
            (a, oa), (b, ob) = aligned[0], other[0]  # the lowest of each kind (points are sorted by action)
            pass_ = phases.barrier(theory, problem, a, b, images=args.images, iterations=args.iterations, dt=args.dt)
            row |= {"S_aligned": a.action, "S_nonaligned": b.action, "gap": b.action - a.action,
                    "path_max_from_nonaligned": pass_.path_maximum - b.action,
                    "path_max_from_aligned": pass_.path_maximum - a.action,
                    "saddle_found": pass_.saddle is not None,
                    "barrier_from_nonaligned": pass_.from_b, "barrier_from_aligned": pass_.from_a,
                    **{f"{k}_aligned": v for k, v in oa.items()}, **{f"{k}_nonaligned": v for k, v in ob.items()}}
        print(row, f"CPU {time.process_time() - t:.0f} s", flush=True)
        rows.append(row)
        if args.csv:
            pd.DataFrame(rows).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
