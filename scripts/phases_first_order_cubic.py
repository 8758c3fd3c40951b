"""A first-order transition of the cubic teacher in the width N: the aligned and the non-aligned minima of the axis
mixture traced through their folds by pseudo-arclength, and the N where their actions cross (issue 17;
docs/phases.md, "Looking for a first-order transition").

Mean-field two-layer erf net, d = 6, P = 120 (the first 120 points of one data set, seed 0), gamma = 2, kappa2 =
0.1, y = He1 + eps He3 (eps = 1), ``Adaptive(measure="mixture", components=2, along="axis", direction=w*)`` -- the
setting of notebook 06 and scripts/phases_p_homotopy_cubic.py at its largest P. At fixed P and kappa2 the width N
sets both the weight of the entropy (N KL) and chi = N kappa2; the aligned branch (the posterior at N = 20, a pair
of ~18 % of the neurons at a m^2 ~ 40 along w*) is followed up in N from --aligned-at, the non-aligned one (the
lowest minimum with a m^2 < 5 found at N = 50, warm-started from N = 40) down and up in N.
``phases.arc_crossings`` gives the N where their actions cross (the Maxwell point); each arc's first fold is the
end of its branch of minima (a spinodal). Between the folds both are minima: the metastable window.

    python scripts/phases_first_order_cubic.py --only aligned --save /tmp/aligned.pkl
    python scripts/phases_first_order_cubic.py --only non-aligned --save /tmp/nonaligned.pkl
    python scripts/phases_first_order_cubic.py --combine /tmp/aligned.pkl /tmp/nonaligned.pkl \
        --csv docs/phases_first_order_cubic.csv --plot docs/phases_first_order_cubic.png
"""

from __future__ import annotations

import argparse
import functools
import pickle
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

ALIGNED = 5.0  # a m^2 of the displaced pair above this: the aligned (GMFL) state


def setting(args):
    pool = ak.teacher_dataset(jax.random.PRNGKey(args.seed), args.P, args.d, teacher="cubic", eps=args.eps,
                              P_test=2000)
    data = ak.Dataset(X=pool.X, y=pool.y, w_star=pool.w_star)
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=pool.w_star)
    return pool, data, theory


def arch(args, N):
    return ak.FCN(args.d, int(N), "erf", gamma=args.gamma)


def observables(args, pool, problem, value, template):
    """a m^2 and weight of the displaced pair, second moment along w* over the prior's, L3 of the posterior."""
    v = pool.w_star / jnp.linalg.norm(pool.w_star)
    pi, m, _ = mixture.full_components(problem, value, pool.w_star)
    am2 = np.asarray(problem.prior_precision * (m @ v) ** 2)
    k = int(np.argmax(am2))
    ratio = float(v @ mixture.second_moment(problem, value, pool.w_star) @ v * problem.prior_precision)
    z = pool.X_test @ v
    import equinox as eqx

    f = predict_problem(eqx.tree_at(lambda s: s.value, template, value), problem, pool.X_test).mean_test
    return {"am2": float(am2[k]), "pair_weight": float(pi[k]), "ratio_w_star": ratio,
            "L3": float(jnp.mean(f * he3(z)) / (args.eps * jnp.mean(he3(z) ** 2)))}


def start(args, pool, data, theory, name):
    """The branch's first minimum: at --aligned-at the lowest aligned minimum, at the last of --nonaligned-at the
    lowest non-aligned one, among the points reached from the prior, the aligned x30 start and (along the values of
    --nonaligned-at) the previous value's minima."""
    chain = [args.aligned_at] if name == "aligned" else args.nonaligned_at
    warm = {}
    for N in chain:
        found = phases.stationary_points(arch(args, N), data, args.kappa2, theory, starts=warm)
        warm = {f"N={N}#{j}": p.value for j, p in enumerate(found.minima)}
        print(f"N = {N}:\n{found.table().to_string()}", flush=True)
    problem = ak.make_problem(arch(args, N), data, args.kappa2)
    template = found.points[0].solution
    mine = [p for p in found.minima
            if (observables(args, pool, problem, p.value, template)["am2"] > ALIGNED) == (name == "aligned")]
    if not mine:
        raise SystemExit(f"no {name} minimum at N = {N}")
    return N, min(mine, key=lambda p: p.action).value, template


def trace(args, name):
    pool, data, theory = setting(args)
    if args.resume:  # continue the saved arc from its last point, in the direction it was going
        with open(args.resume, "rb") as f:
            last = next(iter(pickle.load(f)[0].values())).points[-1]
        problem = ak.make_problem(arch(args, args.aligned_at), data, args.kappa2)
        template = phases.find_stationary_points(theory, phases.set_parameter(problem, "N", last.parameter),
                                                 {"last": last.value}).points[0].solution
        N, init, direction = last.parameter, last.value, 1 if last.slope > 0 else -1
        arc = phases.trace_arclength(theory, functools.partial(phases.set_parameter, problem, "N"), N, init,
                                     direction=direction, bounds=(args.low, args.high), step=args.step,
                                     steps=args.steps, scale=args.scale, label="N")
    else:
        N, init, template = start(args, pool, data, theory, name)
        direction = 1 if name == "aligned" else (args.direction or -1)
        arc = phases.arclength(arch(args, N), data, args.kappa2, "N", theory, init=init, direction=direction,
                               bounds=(args.low, args.high), step=args.step, steps=args.steps, scale=args.scale)
    print(f"{name}: {len(arc.points)} points, stopped ({arc.reason}) at N = {arc.points[-1].parameter:.4f}; folds "
          f"{[(round(f.parameter, 4), f.refined, f'{f.eigenvalue:.1e}') for f in arc.folds]}", flush=True)
    return arc, template


def rows_of(args, name, arc, template):
    pool, data, _ = setting(args)
    rows = []
    for i, p in enumerate(arc.points):
        problem = phases.set_parameter(ak.make_problem(arch(args, args.aligned_at), data, args.kappa2), "N",
                                       p.parameter)
        rows.append({"branch": name, "step": i, "N": p.parameter, "action": p.action, "dS_dN": p.daction,
                     "kind": p.kind, "index": p.index, "min_eigenvalue": p.min_eigenvalue,
                     **observables(args, pool, problem, p.value, template)})
    return rows


def report(args, arcs, rows):
    """Folds, crossing, table and figure."""
    table = pd.DataFrame(rows)
    for name, arc in arcs.items():
        for f in arc.folds:
            print(f"{name}: fold at N = {f.parameter:.5f} (refined {f.refined}, eigenvalue {f.eigenvalue:.1e}, "
                  f"action {f.action:.4f})")
    crossings = phases.arc_crossings(*arcs.values(), slopes=args.slopes)
    for c in crossings:
        print("crossing", c)
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.plot:
        plot(table, arcs, crossings, args.plot)
    return crossings


def plot(table, arcs, crossings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scipy.interpolate import CubicHermiteSpline

    reference = (table[table.branch.str.startswith("non-aligned") & (table.kind == "minimum")]
                 .drop_duplicates("N").sort_values("N"))
    reference = CubicHermiteSpline(reference.N, reference.action, reference.dS_dN, extrapolate=False)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, group in table.groupby("branch"):
        for kind, style in (("minimum", "-"), ("saddle", ":")):
            part = group.where(group.kind == kind)
            gap = part.action - reference(part.N)  # the non-aligned minimum by cubic Hermite (actions and dS/dN)
            axes[0].plot(part.N, gap, style, label=f"{name} ({kind})")
            axes[1].plot(part.N, part.am2, style, label=f"{name} ({kind})")
            axes[2].plot(part.N, part.L3, style, label=f"{name} ({kind})")
    for arc in arcs.values():
        for f in arc.folds:
            for ax in axes:
                ax.axvline(f.parameter, color="r", ls=":", lw=1)
    for c in crossings:
        for ax in axes:
            ax.axvline(c["parameter"], color="k", ls="--", lw=1)
    axes[0].axhline(0, color="gray", lw=0.5)
    axes[0].set(xlabel="N", ylabel="S - S(non-aligned minimum)", xlim=(36, 64))
    axes[0].set_yscale("symlog", linthresh=1e-3)
    axes[1].set(xlabel="N", ylabel="a m^2 of the displaced pair", yscale="log")
    axes[2].set(xlabel="N", ylabel="learnability of He3 (L3)")
    axes[0].legend(fontsize=7)
    fig.suptitle("cubic teacher, d = 6, P = 120, kappa2 = 0.1: folds (red), Maxwell point (black)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--P", type=int, default=120)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aligned-at", type=int, default=20)
    parser.add_argument("--nonaligned-at", type=int, nargs="+", default=[40, 50],
                        help="solve here in turn, each from the prior, aligned x30 and the previous minima; the "
                        "non-aligned branch starts at the last")
    parser.add_argument("--direction", type=int, choices=(-1, 1),
                        help="of the non-aligned trace (default -1: down in N)")
    parser.add_argument("--low", type=float, default=15.0)
    parser.add_argument("--high", type=float, default=95.0)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--scale", type=float, default=40.0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--only", choices=("aligned", "non-aligned"))
    parser.add_argument("--save", help="pickle (arcs, rows) here")
    parser.add_argument("--resume", help="a --save pickle of one arc: continue it from its last point")
    parser.add_argument("--combine", nargs="+", help="pickles of --save runs: report them together")
    parser.add_argument("--slopes", type=float, default=1e-4,
                        help="arc_crossings' relative slope tolerance (its default 1e-2 would take the aligned and "
                        "the non-aligned minima, whose dS/dN differ by ~0.15 %% at their crossing, for one branch)")
    parser.add_argument("--csv")
    parser.add_argument("--plot")
    args = parser.parse_args()
    if args.combine:
        arcs, rows = {}, []
        for path in args.combine:
            with open(path, "rb") as f:
                a, r = pickle.load(f)
            arcs.update({name if name not in arcs else f"{name} ({path})": arc for name, arc in a.items()})
            rows.extend(r)
        return report(args, arcs, rows)
    start_time = time.process_time()
    arcs, rows = {}, []
    for name in ("aligned", "non-aligned"):
        if args.only and name != args.only:
            continue
        arc, template = trace(args, name)
        label = name if name == "aligned" or not args.direction else f"{name} {'up' if args.direction > 0 else 'down'}"
        label += " (resumed)" if args.resume else ""
        arcs[label] = arc
        rows += rows_of(args, label, arc, template)
        if args.save:
            with open(args.save, "wb") as f:
                pickle.dump((arcs, rows), f)
    print(f"CPU {time.process_time() - start_time:.0f} s")
    report(args, arcs, rows)


if __name__ == "__main__":
    main()
