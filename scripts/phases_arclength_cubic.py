"""Folds of the cubic teacher's metastable window by pseudo-arclength continuation (issue 17; docs/phases.md).

Mean-field two-layer erf net (d = 6, gamma = 2, kappa2 = 0.1, y = He1 + eps He3, eps = 1), the first P points of
one data set (seed 0), the Gaussian-mixture ansatz along w* (``Adaptive(measure="mixture", components=2,
along="axis", direction=w*)``). At (P, N0) ``ak.stationary_points`` finds the minima from the prior and the aligned
start; ``phases.arclength`` follows each through its folds in a continuous parameter (N by default: P is discrete),
so the ends of the metastable window at this P are located where the Hessian is singular, and the saddle branch
between the two kinds of minima is traced. Prints the folds and writes the branch table (with the alignment
a m^2 of the displaced pair along w* and the learnability L3 of He3).

    python scripts/phases_arclength_cubic.py --P 60 --N 20 --parameter N --bounds 4 100 --csv docs/phases_arclength_cubic.csv
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from adaptive_kernels.data import he3
from adaptive_kernels.prediction import predict_problem

ALIGNED = 5.0  # a m^2 above this: a component displaced along w* (the aligned, GMFL state)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--P", type=int, default=60)
    parser.add_argument("--N", type=float, default=20.0)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--parameter", default="N")
    parser.add_argument("--bounds", type=float, nargs=2, default=(4.0, 100.0))
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--csv")
    args = parser.parse_args()

    pool = ak.teacher_dataset(jax.random.PRNGKey(0), 120, args.d, teacher="cubic", eps=args.eps, P_test=2000)
    data = ak.Dataset(X=pool.X[:args.P], y=pool.y[:args.P], X_test=pool.X_test, y_test=pool.y_test,
                      w_star=pool.w_star)
    arch = ak.FCN(args.d, int(args.N), "erf", gamma=args.gamma)
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    problem = ak.make_problem(arch, data, args.kappa2)
    z = pool.X_test @ pool.w_star

    def describe(value, p):
        inst = phases.set_parameter(problem, args.parameter, p)
        m = mixture.full_components(inst, value, pool.w_star)[1] @ pool.w_star
        solution = eqx.tree_at(lambda s: s.value, template, value)
        f = predict_problem(solution, inst, pool.X_test).mean_test
        return {"am2": float(jnp.max(inst.prior_precision * m**2)),
                "L3": float(jnp.mean(f * he3(z)) / (args.eps * jnp.mean(he3(z) ** 2)))}

    start = time.process_time()
    found = phases.stationary_points(arch, data, args.kappa2, theory)
    print(found.table().to_string(), flush=True)
    template = found.points[0].solution
    rows, folds = [], []
    for k, point in enumerate(found.minima):
        kind = "aligned" if describe(point.value, args.N)["am2"] > ALIGNED else "non-aligned"
        for direction in (1, -1):
            arc = phases.arclength(arch, data, args.kappa2, args.parameter, theory, init=point.value,
                                   step=args.step, steps=args.steps, bounds=tuple(args.bounds), direction=direction)
            name = f"{kind} {'up' if direction > 0 else 'down'}"
            for i, p in enumerate(arc.points):
                rows.append({"branch": name, "step": i, args.parameter: p.parameter, "action": p.action,
                             "kind": p.kind, "index": p.index, "min_eigenvalue": p.min_eigenvalue,
                             **describe(p.value, p.parameter)})
            for f in arc.folds:
                folds.append({"branch": name, args.parameter: f.parameter, "action": f.action,
                              "eigenvalue": f.eigenvalue, "refined": f.refined, **describe(f.value, f.parameter)})
            print(f"{name}: {len(arc.points)} points, stopped ({arc.reason}); folds "
                  f"{[(round(f.parameter, 4), f.refined, f'{f.eigenvalue:.1e}') for f in arc.folds]}", flush=True)
    table = pd.DataFrame(rows)
    print(pd.DataFrame(folds).to_string())
    print(f"CPU {time.process_time() - start:.0f} s")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
