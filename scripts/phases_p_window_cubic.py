"""The cubic teacher's metastable window in P by warm-started solves on a fine grid of continuous P (issue 17;
docs/phases.md, "Folds in P", "This round").

Setting of ``scripts/phases_p_homotopy_cubic.py`` (d = 6, N = 20, gamma = 2, kappa2 = 0.1, eps = 1, nested
subsets of one data set, axis mixture along w*, K = 2). The non-aligned minimum (from the aligned x30 start at
--low, which fixed starts reach there) is followed up in P and the aligned minimum (from the aligned x30 start at
--high) down in P, each solve warm-started at the previous P's point of the same family (``tempered_subset``:
non-integer P allowed), with the Hessian's inertia at every point. Pseudo-arclength is not used for the
non-aligned family: its points carry an exactly flat Hessian direction (the mean of a component at m = 0), which
makes the bordered system singular and the trace turn back at a spurious fold. At every P the lowest minimum of
each family (up to one flat direction; aligned: the displaced pair's a m^2 > 5) among the points reached from the
prior, the aligned x30 start and the family's previous point is kept, with L3 (learnability of He3, eps = 1) of its
tempered posterior; the actions of the two families on the common P give the crossing (linear interpolation of
the difference), if any.

    python scripts/phases_p_window_cubic.py --csv docs/phases_p_window_cubic.csv
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

ALIGNED = 5.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--low", type=float, default=45.0)
    parser.add_argument("--high", type=float, default=60.0)
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--csv")
    args = parser.parse_args()
    start = time.process_time()
    pool = ak.teacher_dataset(jax.random.PRNGKey(0), 120, 6, teacher="cubic", eps=1.0, P_test=2000)
    n = int(np.ceil(args.high))
    data = ak.Dataset(X=pool.X[:n], y=pool.y[:n], w_star=pool.w_star)
    problem = ak.make_problem(ak.FCN(6, 20, "erf", gamma=2.0), data, 0.1)
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    v = pool.w_star / jnp.linalg.norm(pool.w_star)
    z = pool.X_test @ pool.w_star
    half_log = 0.5 * float(jnp.log(problem.kappa2))
    def describe(inst, point, P):
        pi, m, _ = mixture.full_components(inst, point.value, pool.w_star)
        am2 = np.asarray(inst.prior_precision * (m @ v) ** 2)
        k = int(np.argmax(am2))
        eig = point.hessian_eigenvalues
        f = predict_problem(point.solution, inst, pool.X_test).mean_test
        return {"P": float(P), "action": point.action - half_log * (n - P), "kind": point.kind, "index": point.index,
                "eig0": eig[0], "eig1": eig[1], "pair_weight": float(pi[k]), "am2": float(am2[k]),
                "L3": float(jnp.mean(f * he3(z)) / jnp.mean(he3(z) ** 2)),
                "aligned": bool(am2[k] > ALIGNED), "stable": bool(eig[1] > 0 and eig[0] > -1e-6),
                "starts": ", ".join(point.starts), "value": point.value}

    rows = []
    for name, Ps in (("non-aligned", np.arange(args.low, args.high + 1e-9, args.step)),
                     ("aligned", np.arange(args.high, args.low - 1e-9, -args.step))):
        value = None
        for P in Ps:
            inst = phases.tempered_subset(problem, phases.tempered_coordinate(float(P)))
            starts = phases.default_starts(inst, theory, pool.w_star)
            if value is not None:
                starts["previous"] = value
            found = phases.find_stationary_points(theory, inst, starts)
            described = [describe(inst, point, P) for point in found.points]
            mine = [r for r in described if r["aligned"] == (name == "aligned") and r["stable"]]
            if not mine:
                print(name, P, "no minimum of this family:", [(r["action"], r["kind"], r["am2"]) for r in described],
                      flush=True)
                continue
            best = min(mine, key=lambda r: r["action"])
            value = best.pop("value")
            rows.append({"family": name, **best})
            print(rows[-1], flush=True)
        if args.csv:
            pd.DataFrame(rows).to_csv(args.csv, index=False)
    table = pd.DataFrame(rows)
    both = table.pivot_table(index="P", columns="family", values="action").dropna()
    gap = (both["aligned"] - both["non-aligned"]).to_numpy()
    print(both.assign(gap=gap).to_string())
    for i in np.flatnonzero(np.sign(gap[:-1]) != np.sign(gap[1:])):
        P0, P1 = both.index[i], both.index[i + 1]
        print("crossing at P =", P0 + (P1 - P0) * gap[i] / (gap[i] - gap[i + 1]))
    print(f"CPU {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
