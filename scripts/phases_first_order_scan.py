"""Scan for a first-order transition of the cubic teacher in the axis mixture (issue 17; docs/phases.md, "Looking
for a first-order transition").

Mean-field two-layer erf net (``--d``, ``--N``, ``--gamma``, ``--kappa2``), y = He1(z) + eps He3(z), the first P
points of one data set (``--seed``), ``Adaptive(measure="mixture", components=2, along="axis", direction=w*)``.
One compilation serves every P: the problem holds max(P) points and P is set by the tempered likelihood
(``phases.tempered_subset``, non-integer P allowed). At each P (up the grid, then down it) the stationary points
are solved from the prior, aligned starts (``--ratios``: a pair carrying r times the prior's second moment along
w*) and the minima of the previous P of the same sweep (warm starts: hysteresis). Every minimum (strict, or with
one ~0 Hessian eigenvalue and the rest positive: a flat direction) is printed and written with its action (the
P-point action at integer P), the displaced pair's ``a m^2`` along w* and weight, and L3 (learnability of He3 of the
tempered posterior). Per P the lowest "aligned" (``a m^2 > --aligned``) and "non-aligned" minima and their action
gap are printed: both kinds minima at one P = a metastable window; a sign change of the gap = a crossing.

    python scripts/phases_first_order_scan.py --d 20 --N 20 --kappa2 0.1 --eps 1 --values 40 60 80 100 --csv out.csv
    python scripts/phases_first_order_scan.py --d 6 --P 120 --vary N --values 30 45 55 65 80 --csv out.csv
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from adaptive_kernels.data import he3
from adaptive_kernels.prediction import predict_problem


def setting(args):
    """(pool, problem on the largest P's points, theory) of the command-line setting."""
    n = int(np.ceil(max(args.values) if args.vary == "P" else args.P))
    pool = ak.teacher_dataset(jax.random.PRNGKey(args.seed), n, args.d, teacher="cubic", eps=args.eps,
                              P_test=2000)
    data = ak.Dataset(X=pool.X, y=pool.y, w_star=pool.w_star)
    problem = ak.make_problem(ak.FCN(args.d, args.N, "erf", gamma=args.gamma, s_w2=args.s_w2), data, args.kappa2)
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    return pool, problem, theory


def instance(problem, vary, value):
    """The problem at one value of the scanned parameter: P by the tempered likelihood (``phases.tempered_subset``;
    the same shapes for every P), else ``phases.set_parameter`` (N, kappa2, gamma, ...)."""
    if vary == "P":
        return phases.tempered_subset(problem, phases.tempered_coordinate(float(value)))
    return phases.set_parameter(problem, vary, value)


def describe(pool, inst, point, P, n, eps):
    """One row: the point's action (the P-point action: the constant of the points out removed), inertia, the
    displaced pair's a m^2 and weight, and L3."""
    v = pool.w_star / jnp.linalg.norm(pool.w_star)
    pi, m, _ = mixture.full_components(inst, point.value, pool.w_star)
    am2 = np.asarray(inst.prior_precision * (m @ v) ** 2)
    k = int(np.argmax(am2))
    z = pool.X_test @ v
    f = predict_problem(point.solution, inst, pool.X_test).mean_test
    eig = point.hessian_eigenvalues
    half_log = 0.5 * float(jnp.log(inst.kappa2))
    return {"action": point.action - half_log * (n - P), "kind": point.kind, "eig0": float(eig[0]),
            "eig1": float(eig[1]), "am2": float(am2[k]), "pair_weight": float(pi[k]),
            "L3": float(jnp.mean(f * he3(z)) / (eps * jnp.mean(he3(z) ** 2))), "starts": ", ".join(point.starts)}


def stable(point) -> bool:
    """A minimum, or a point whose only non-positive Hessian eigenvalue is ~0 (a flat direction of the ansatz)."""
    eig = point.hessian_eigenvalues
    return point.kind == "minimum" or (eig[0] > -1e-6 * max(1.0, abs(eig[-1])) and eig[1] > 0)


def scan(args, log=print):
    pool, problem, theory = setting(args)
    n = problem.P
    rows = []
    for sweep, values in (("up", sorted(args.values)), ("down", sorted(args.values, reverse=True))):
        previous = {}
        for value in values:
            inst = instance(problem, args.vary, value)
            P = float(value) if args.vary == "P" else n
            starts = phases.default_starts(inst, theory, pool.w_star, tuple(args.ratios))
            starts.update(previous)
            found = phases.find_stationary_points(theory, inst, starts)
            minima = [p for p in found.points if stable(p)]
            previous = {f"{sweep} {args.vary}={value:g} #{j}": p.value for j, p in enumerate(minima)}
            for p in minima:
                rows.append({"sweep": sweep, args.vary: float(value), **describe(pool, inst, p, P, n, args.eps)})
                log(f"{sweep} {args.vary}={value:g} action={rows[-1]['action']:.4f} am2={rows[-1]['am2']:.3f} "
                    f"w={rows[-1]['pair_weight']:.3f} L3={rows[-1]['L3']:.4f} eig=({rows[-1]['eig0']:.2e}, "
                    f"{rows[-1]['eig1']:.2e}) [{rows[-1]['starts']}]", flush=True)
            if not minima:
                log(f"{sweep} {args.vary}={value:g}: no minimum; points {[(round(p.action, 3), p.kind) for p in found.points]}",
                    flush=True)
    return pd.DataFrame(rows)


def gaps(table, vary, threshold):
    """Per value: the lowest aligned and non-aligned minima (both sweeps pooled) and S_aligned - S_non-aligned."""
    table = table.assign(family=np.where(table.am2 > threshold, "aligned", "non-aligned"))
    lowest = table.groupby([vary, "family"]).action.min().unstack()
    for family in ("aligned", "non-aligned"):
        if family not in lowest:
            lowest[family] = np.nan
    return lowest.assign(gap=lowest["aligned"] - lowest["non-aligned"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--N", type=int, default=20)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--s_w2", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vary", default="P", choices=("P",) + phases.PROBLEM_PARAMETERS)
    parser.add_argument("--values", type=float, nargs="+", required=True, help="of the --vary parameter")
    parser.add_argument("--P", type=int, help="the data points when --vary is not P")
    parser.add_argument("--ratios", type=float, nargs="+", default=[30.0])
    parser.add_argument("--aligned", type=float, default=5.0, help="a m^2 above this: an aligned minimum")
    parser.add_argument("--csv")
    args = parser.parse_args()
    start = time.process_time()
    table = scan(args)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(gaps(table, args.vary, args.aligned).to_string())
    print(f"CPU {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
