"""Phase diagram over (P, N) of a mean-field two-layer erf net on the cubic teacher, mixture ansatz along w*
(issue 17; docs/phases.md, docs/phase_diagram_cubic.png).

At every (N, P) -- nested training subsets of one data set, padded to one size so that each N compiles once --
``phases.find_stationary_points`` solves ``Adaptive(measure="mixture", components=2, along="axis",
direction=w*)`` from the prior, from a teacher-aligned state and from the minima found at the neighbouring P
(a sweep up and one down: fixed starts alone miss minima that a neighbour's state reaches), classifies the minima
as *aligned* (a component with a m^2 > 5 along w*: the Gaussian-mixture feature-learning state) or not, and
records the posterior's (lowest minimum's) kind and He3 learnability, whether both kinds are minima there
(metastable), and per N the P where the posterior switches from non-aligned to aligned (the bracketing grid values) and, where both kinds are
minima on both sides, where their lowest actions cross (linear interpolation).

    python scripts/phase_diagram_cubic.py --out docs/phase_diagram_cubic.png --csv docs/phase_diagram_cubic.csv
"""

from __future__ import annotations

import argparse

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


def scan(d, widths, Ps, kappa2, eps, gamma, seed=0):
    """Per N: a sweep up P (starts: the prior, aligned x30 and the minima found at the previous P) and one down P
    (starts: the minima found at the next P), the distinct points of both merged per P (``phases.distance``)."""
    pool = ak.teacher_dataset(jax.random.PRNGKey(seed), max(Ps), d, teacher="cubic", eps=eps, P_test=2000)
    z = pool.X_test @ pool.w_star
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    rows = []
    for N in widths:
        base = ak.make_problem(ak.FCN(d, N, "erf", gamma=gamma), pool, kappa2)
        insts = {P: phases.with_parameter(base, "P", P, pad_to=max(Ps)) for P in Ps}
        merged = {P: [] for P in Ps}
        for sweep in (list(Ps), list(Ps)[::-1]):
            previous = []
            for i, P in enumerate(sweep):
                inst = insts[P]
                starts = phases.default_starts(inst.problem, theory, pool.w_star, ratios=(30.0,)) if sweep[0] == min(
                    Ps) else {}
                starts |= {f"P={sweep[i - 1]}#{j}": value for j, value in enumerate(previous)}
                found = phases.find_stationary_points(theory, inst.problem, starts, action_offset=inst.offset)
                for point in found.points:
                    if all(phases.distance(point.value, q.value, theory) >= 1e-4 for q in merged[P]):
                        merged[P].append(point)
                previous = [point.value for point in found.minima]
        for P in Ps:
            inst, a = insts[P], insts[P].report.prior_precision
            minima = [p for p in merged[P] if p.kind != "saddle"]
            lowest = min(minima, key=lambda p: p.action) if minima else None
            for point in merged[P]:
                f = predict_problem(point.solution, inst.report, pool.X_test).mean_test
                m = mixture.full_components(inst.report, point.value, pool.w_star)[1] @ pool.w_star
                rows.append({"N": N, "P": P, "action": point.action, "kind": point.kind,
                             "posterior": point is lowest, "am2": float(jnp.max(a * m**2)),
                             "L3": float(jnp.mean(f * he3(z)) / (eps * jnp.mean(he3(z) ** 2)))})
                print(rows[-1], flush=True)
    points = pd.DataFrame(rows)
    points["aligned"] = points.am2 > ALIGNED
    return points


def summarise(points):
    """Per (N, P): the posterior's kind and L3, the lowest action of each kind of minimum, metastable (both kinds
    are minima); per N: the action crossings along P."""
    grid, lines = [], []
    for (N, P), here in points.groupby(["N", "P"]):
        minima = here[here.kind != "saddle"]
        post = here[here.posterior]
        best = {k: minima[minima.aligned == k].action.min() for k in (False, True)}
        grid.append({"N": N, "P": P, "posterior_aligned": bool(post.aligned.iloc[0]) if len(post) else np.nan,
                     "L3": post.L3.iloc[0] if len(post) else np.nan, "S_plain": best[False], "S_aligned": best[True],
                     "metastable": bool(np.isfinite(best[False]) and np.isfinite(best[True]))})
    grid = pd.DataFrame(grid)
    grid["gap"] = grid.S_aligned - grid.S_plain
    for N, rows in grid.groupby("N"):
        rows = rows.sort_values("P").reset_index(drop=True)
        switch = [i for i in range(len(rows) - 1)
                  if rows.posterior_aligned[i] == False  # noqa: E712 (a NaN, no minimum, is neither)
                  and rows.posterior_aligned[i + 1] == True]  # noqa: E712
        crossing = np.nan
        both = rows.dropna(subset=["gap"]).reset_index(drop=True)
        for i in range(len(both) - 1):
            g0, g1 = both.gap[i], both.gap[i + 1]
            if np.sign(g0) != np.sign(g1):
                crossing = both.P[i] + (both.P[i + 1] - both.P[i]) * g0 / (g0 - g1)
        lines.append({"N": N, "last_plain": rows.P[switch[0]] if switch else np.nan,
                      "first_aligned": rows.P[switch[0] + 1] if switch else np.nan, "crossing": crossing})
    return grid, pd.DataFrame(lines)


def plot(grid, lines, title, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for aligned, marker, label in ((False, "o", "posterior non-aligned"), (True, "s", "posterior aligned (GMFL)")):
        sel = grid[grid.posterior_aligned == aligned]
        sc = ax.scatter(sel.P, sel.N, c=sel.L3, marker=marker, s=80, cmap="viridis", vmin=0,
                        vmax=max(0.05, grid.L3.max()), label=label)
    meta = grid[grid.metastable]
    ax.scatter(meta.P, meta.N, s=220, facecolors="none", edgecolors="r", label="both kinds are minima")
    found = lines.dropna(subset=["first_aligned"])
    ax.errorbar(0.5 * (found.last_plain + found.first_aligned), found.N,
                xerr=0.5 * (found.first_aligned - found.last_plain), fmt="k|--", capsize=4,
                label="posterior switches (bracket)")
    fig.colorbar(sc, ax=ax, label="He3 learnability L3 of the posterior")
    ax.set(xlabel="P", ylabel="N", yscale="log", title=title, ylim=(0.8 * grid.N.min(), 2.2 * grid.N.max()))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--N", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--P", type=int, nargs="+", default=[30, 45, 60, 90, 120])
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--out", default="docs/phase_diagram_cubic.png")
    parser.add_argument("--csv", default=None, help="write the stationary points here")
    parser.add_argument("--points", default=None, help="re-plot from a --csv file instead of solving")
    args = parser.parse_args(argv)
    if args.points:
        points = pd.read_csv(args.points)
    else:
        points = scan(args.d, args.N, args.P, args.kappa2, args.eps, args.gamma)
    grid, lines = summarise(points)
    print(grid.round(4).to_string())
    print(lines.to_string())
    if args.csv:
        points.to_csv(args.csv, index=False)
    plot(grid, lines, f"erf net d={args.d}, gamma={args.gamma:g}, kappa2={args.kappa2:g}, y = He1 + {args.eps:g} He3",
         args.out)


if __name__ == "__main__":
    main()
