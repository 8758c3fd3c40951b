"""The barrier between the aligned and the non-aligned minima of the cubic teacher's mixture action (issue 17;
docs/phases.md, "How high is the barrier?").

Mean-field two-layer erf net (gamma = 2), y = He1 + eps He3 on the first P points of one data set (seed 0, d = 6),
``Adaptive(measure="mixture", components=2, along="axis", direction=w*)``. At each (N, P, kappa2) of --points the
two kinds of minima are found by warm-started solves along a path of (N, P) values (--path: the lowest aligned
minimum is carried from point to point, from the first path point, where a fixed start finds it; fixed starts prior
/ aligned x--ratios at every point), then the index-1 saddle between the lowest aligned and the lowest (or the
--nonaligned-th) non-aligned minimum:

``phases.barrier``: the minimum energy path by the string method in the solvers' unconstrained coordinates (both
pairings of the two exchangeable components; the lower path kept), Newton from its maximum to the index-1 saddle,
barrier = S(saddle) - S(minimum) from each side (the path's maximum is an upper bound), and the connection check
(descents from the saddle along its negative mode must land on the two minima). The tables in docs were made before
the preconditioner got its ridge (1e-2 of the largest eigenvalue, for minima with zero modes): that changes the
path, not the saddle.

    python scripts/phases_barrier.py --N 20 --path 60 59 58 57 56 55 54 53 52 \
        --barriers 20:59 20:58 20:57 20:56 20:55 20:54 20:53 20:52 --csv docs/phases_barrier_P.csv
    python scripts/phases_barrier.py --path 20:120 25:120 30:120 35:120 40:120 44:120 --ratios 30 60 \
        --csv docs/phases_barrier_N.csv
    python scripts/phases_barrier.py --N 20 --kappa2 0.03 --path 40 38 36 34 32 --ratios 30 1.5 --zero-modes \
        --barriers 20:38 20:32 --csv k03.csv      # docs/phases_barrier_scan.csv (other settings: --d, --eps, --pool)

``--zero-modes`` counts a stationary point whose only non-positive Hessian eigenvalues are zeros as a minimum
(``StationaryPoint.is_minimum``); ``--ratios 1.5`` adds a slightly split aligned start, which reaches non-aligned minima that the
prior start cannot (from the prior m = 0 stays 0: the action is even in m).
"""

from __future__ import annotations

import argparse
import pickle
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture

jax.config.update("jax_enable_x64", True)
ALIGNED = 5.0  # a m^2 of the displaced pair above this: the aligned (GMFL) state


class Minimum(NamedTuple):
    action: float
    value: tuple


def setting(args):
    pool = ak.teacher_dataset(jax.random.PRNGKey(args.seed), args.pool, args.d, teacher="cubic", eps=args.eps,
                              P_test=2000)
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    return pool, theory


def problem_at(args, pool, N, P):
    P = int(P)
    data = ak.Dataset(X=pool.X[:P], y=pool.y[:P], w_star=pool.w_star)
    return ak.make_problem(ak.FCN(args.d, int(N), "erf", gamma=2.0), data, args.kappa2)


def observables(pool, problem, value):
    """a m^2 and weight of the displaced pair, second moment along w* over the prior's."""
    v = pool.w_star / jnp.linalg.norm(pool.w_star)
    pi, m, _ = mixture.full_components(problem, value, pool.w_star)
    am2 = np.asarray(problem.prior_precision * (m @ v) ** 2)
    k = int(np.argmax(am2))
    ratio = float(v @ mixture.second_moment(problem, value, pool.w_star) @ v * problem.prior_precision)
    return {"am2": float(am2[k]), "pair_weight": float(pi[k]), "ratio": ratio}


def lowest_of_each_kind(minima):
    """(aligned, non-aligned): the lowest-action entry of each kind among [(Minimum, observables)] (a m^2 of the
    displaced pair above / at most ``ALIGNED``)."""
    return tuple(min((m for m, o in minima if (o["am2"] > ALIGNED) == aligned), key=lambda m: m.action)
                 for aligned in (True, False))


def follow(args, pool, theory):
    """Along --path: yields (N, P, problem, minima) at every point, the minima [(Minimum, observables)], the aligned
    one carried from point to point (warm start), the others from the fixed starts prior / aligned x30."""
    carried = None
    for point in args.path:
        N, P = (float(x) for x in point.split(":")) if ":" in point else (args.N, float(point))
        problem = problem_at(args, pool, N, P)
        starts = phases.default_starts(problem, theory, pool.w_star, args.ratios)
        if carried is not None:
            starts["carried"] = carried
        found = phases.find_stationary_points(theory, problem, starts)
        rows = [(p, observables(pool, problem, p.value)) for p in found.points]
        for p, o in rows:
            print(f"  N={N} P={P}: S={p.action:.4f} {p.kind} index={p.index} eig0={p.hessian_eigenvalues[0]:.3g} "
                  f"a m^2={o['am2']:.2f} weight={o['pair_weight']:.3f} starts={p.starts}", flush=True)
        rows = [(p, o) for p, o in rows if p.is_minimum(args.zero_modes)]
        aligned = [p for p, o in rows if o["am2"] > ALIGNED]
        if aligned:
            carried = min(aligned, key=lambda p: p.action).value
        yield N, P, problem, [(Minimum(p.action, jax.tree.map(np.asarray, p.value)), o) for p, o in rows]


def barrier(args, pool, theory, problem, a, b):
    """The index-1 saddle between minima a and b (:class:`Minimum`) by ``phases.barrier``: dict with its action,
    inertia, the path's maximum, the actions where the descents from it end and whether they reach a and b."""
    r = phases.barrier(theory, problem, a.value, b.value, images=args.images, iterations=args.iterations, dt=args.dt)
    o = observables(pool, problem, r.saddle) if r.saddle is not None else {"am2": np.nan, "pair_weight": np.nan}
    eig = r.saddle_eigenvalues if r.saddle is not None else np.full(2, np.nan)
    return {"am2_saddle": o["am2"], "weight_saddle": o["pair_weight"], "S_path_max": r.path_maximum,
            "S_saddle": r.saddle_action if r.saddle is not None else np.nan, "saddle_found": r.saddle is not None,
            "saddle_index": int(np.sum(eig < 0)), "saddle_eig0": float(eig[0]), "saddle_eig1": float(eig[1]),
            "descent_ends": r.ends, "connects": r.saddle is not None, "path_S": r.path_actions}

def add_setting_arguments(parser):
    """The options of :func:`setting` and :func:`problem_at`: --d, --pool, --kappa2, --eps, --seed."""
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setting_arguments(parser)
    parser.add_argument("--N", type=float, default=20, help="the width of plain --path entries")
    parser.add_argument("--path", nargs="+", help="P values (at --N) or N:P pairs, from a point where a fixed start "
                        "finds the aligned minimum")
    parser.add_argument("--ratios", type=float, nargs="+", default=[30.0], help="the aligned starts at every path "
                        "point (which non-aligned minimum one reaches depends on the solver's rounding)")
    parser.add_argument("--images", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--save", help="pickle the minima found (to rerun the barrier with --load)")
    parser.add_argument("--load", help="the minima pickled by --save (instead of --path)")
    parser.add_argument("--barriers", nargs="+", help="N:P points of --path at which to find the saddle (default: the "
                        "last)")
    parser.add_argument("--nonaligned", type=int, nargs="+", default=[0], help="which non-aligned minima to connect "
                        "to the lowest aligned one, by rank in action (0: the lowest)")
    parser.add_argument("--zero-modes", action="store_true", help="count a point whose only non-positive Hessian "
                        "eigenvalues are zeros as a minimum (StationaryPoint.is_minimum)")
    parser.add_argument("--csv")
    args = parser.parse_args()
    t0 = time.process_time()
    pool, theory = setting(args)
    if args.load:
        with open(args.load, "rb") as f:
            points = pickle.load(f)
    else:
        points = {(N, P): minima for N, P, _, minima in follow(args, pool, theory)}
        if args.save:
            with open(args.save, "wb") as f:
                pickle.dump(points, f)
    at = [tuple(float(x) for x in b.split(":")) for b in args.barriers] if args.barriers else [list(points)[-1]]
    rows = []
    for N, P in at:
        minima = points[(N, P)]
        aligned = [(p, o) for p, o in minima if o["am2"] > ALIGNED]
        other = [(p, o) for p, o in minima if o["am2"] <= ALIGNED]
        if not (aligned and other):
            print(f"N={N} P={P}: not both kinds of minima", flush=True)
            continue
        a, oa = min(aligned, key=lambda m: m[0].action)
        for rank in args.nonaligned:
            if rank >= len(other):
                print(f"N={N} P={P}: fewer than {rank + 1} non-aligned minima", flush=True)
                continue
            b, ob = sorted(other, key=lambda m: m[0].action)[rank]
            t = time.process_time()
            r = barrier(args, pool, theory, problem_at(args, pool, N, P), a, b)
            row = {"d": args.d, "N": N, "P": P, "kappa2": args.kappa2, "eps": args.eps, "images": args.images,
                   "iterations": args.iterations, "nonaligned_rank": rank, "S_aligned": a.action,
                   "S_nonaligned": b.action, "am2_aligned": oa["am2"], "weight_aligned": oa["pair_weight"],
                   "ratio_aligned": oa["ratio"], "am2_nonaligned": ob["am2"], "weight_nonaligned": ob["pair_weight"],
                   "ratio_nonaligned": ob["ratio"],
                   **{k: v for k, v in r.items() if k != "path_S"}}
            row["barrier_from_aligned"] = r["S_saddle"] - a.action
            row["barrier_from_nonaligned"] = r["S_saddle"] - b.action
            row["path_max_from_nonaligned"] = r["S_path_max"] - b.action  # the string's maximum: an upper bound
            print(row, f"CPU {time.process_time() - t:.0f} s", flush=True)
            print("path S - S_aligned:", np.round(r["path_S"] - a.action, 4), flush=True)
            rows.append(row)
            if args.csv:
                pd.DataFrame(rows).to_csv(args.csv, index=False)
    print(f"CPU {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
