"""The cubic teacher's metastable window in P by pseudo-arclength continuation in a continuous P (issue 17;
docs/phases.md, "Folds in P").

Mean-field two-layer erf net (d = 6, N = 20, gamma = 2, kappa2 = 0.1, y = He1 + eps He3, eps = 1; the first P
points of one data set, seed 0, as in notebook 06 and the phase diagram), the Gaussian-mixture ansatz along w*
(``Adaptive(measure="mixture", components=2, along="axis", direction=w*)``). P is made continuous by the tempered
likelihood (``phases.tempered_subset``: point p enters with a weight t in [0, 1]); ``phases.arclength(...,
"P")`` follows the aligned minimum (found at --high) down in P and the non-aligned one (found at --low) up in P,
through their folds; ``phases.arc_crossings`` gives the P where the two minima's actions cross. Prints the folds
and crossings and writes the points (with the displaced pair's weight and a m^2 along w*, the second moment along
w* over the prior's, and the learnability L3 of He3 of the tempered posterior).

    python scripts/phases_p_homotopy_cubic.py --csv docs/phases_p_homotopy_cubic.csv --plot docs/phases_p_homotopy.png
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import pickle
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
    parser.add_argument("--N", type=int, default=20)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--components", type=int, default=2,
                        help="K of the axis mixture (1: one symmetrised Gaussian pair, the unsplit non-aligned state "
                        "without the flat direction that two coinciding components have)")
    parser.add_argument("--low", type=int, default=40)
    parser.add_argument("--high", type=int, default=120)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--chunk", type=int, default=150, help="continue (and save) every this many steps")
    parser.add_argument("--only", choices=("aligned", "non-aligned"))
    parser.add_argument("--start", type=int, help="trace only the --only branch, from its minimum at this P "
                        "(fixed starts on the first --start points), in --direction")
    parser.add_argument("--direction", type=int, choices=(-1, 1), help="with --start: down (-1) or up (+1) in P")
    parser.add_argument("--warm", type=int, nargs="*", default=(),
                        help="with --start: find the minima at these P first (fixed starts at the first, then the "
                        "previous P's minima) and add them to the starts at --start (how the sweeps reached the "
                        "non-aligned minima at P = 45 and 60: fixed starts there find none)")
    parser.add_argument("--csv")
    parser.add_argument("--plot")
    parser.add_argument("--save", help="pickle the traced arcs, points and folds here (to --combine later)")
    parser.add_argument("--combine", nargs="+", help="pickles of --save runs: report them together, trace nothing")
    args = parser.parse_args()
    if args.combine:
        arcs, rows, folds = {}, [], []
        for path in args.combine:
            with open(path, "rb") as f:
                saved = pickle.load(f)
            if isinstance(saved, phases.Arc):  # a bare arc (a continued run): its points without observables
                name = pathlib.Path(path).stem
                saved = ({name: saved}, [{"branch": name, "step": i, "P": p.parameter, "coordinate": p.coordinate,
                                          "action": p.action, "dS_dcoordinate": p.daction, "kind": p.kind,
                                          "index": p.index, "min_eigenvalue": p.min_eigenvalue}
                                         for i, p in enumerate(saved.points)],
                         [{"branch": name, "P": f.parameter, "action": f.action, "eigenvalue": f.eigenvalue,
                           "refined": f.refined} for f in saved.folds])
            a, r, fo = saved
            arcs.update(a), rows.extend(r), folds.extend(fo)
        return report(arcs, rows, folds, args)

    pool = ak.teacher_dataset(jax.random.PRNGKey(0), 120, args.d, teacher="cubic", eps=args.eps, P_test=2000)
    data = ak.Dataset(X=pool.X[:args.high], y=pool.y[:args.high], X_test=pool.X_test, y_test=pool.y_test,
                      w_star=pool.w_star)
    arch = ak.FCN(args.d, args.N, "erf", gamma=args.gamma)
    theory = ak.Adaptive(measure="mixture", components=args.components, along="axis", direction=pool.w_star)
    problem = ak.make_problem(arch, data, args.kappa2)
    z = pool.X_test @ pool.w_star
    v = pool.w_star / jnp.linalg.norm(pool.w_star)

    def describe(value, lam, template):
        inst = phases.tempered_subset(problem, lam)
        pi, m, _ = mixture.full_components(inst, value, pool.w_star)
        am2 = inst.prior_precision * (m @ v) ** 2
        k = int(jnp.argmax(am2))
        ratio = float(v @ mixture.second_moment(inst, value, pool.w_star) @ v * inst.prior_precision)
        f = predict_problem(eqx.tree_at(lambda s: s.value, template, value), inst, pool.X_test).mean_test
        return {"am2": float(am2[k]), "pair_weight": float(pi[k]), "ratio_w_star": ratio,
                "L3": float(jnp.mean(f * he3(z)) / (args.eps * jnp.mean(he3(z) ** 2)))}

    start = time.process_time()
    arcs, rows, folds = {}, [], []
    branches = (("aligned", args.high, -1), ("non-aligned", args.low, +1))
    if args.start is not None:
        if not args.only or not args.direction:
            parser.error("--start needs --only and --direction")
        branches = ((args.only, args.start, args.direction),)
    for name, at, direction in branches:
        if args.only and name != args.only:
            continue
        warm = {}
        for P in (*args.warm, at) if args.start is not None else (at,):
            sub = ak.Dataset(X=pool.X[:P], y=pool.y[:P], w_star=pool.w_star)
            found = phases.stationary_points(arch, sub, args.kappa2, theory, starts=warm)
            warm = {f"P={P}#{j}": p.value for j, p in enumerate(found.minima)}
            print(f"P = {P}: {found.table().to_string()}", flush=True)
        template = found.points[0].solution
        # minima, and points whose only non-positive Hessian eigenvalue is ~0 (a flat direction, "degenerate")
        flat = [p for p in found.points if p.kind == "minimum" or (
            p.kind == "degenerate" and p.min_eigenvalue > -1e-6 and p.hessian_eigenvalues[1] > 0)]
        described = [(p, describe(p.value, float(at), template)) for p in flat]
        kinds = [(p, d["am2"] > ALIGNED) for p, d in described]
        print(f"P = {at}: minima (action, pair weight, a m^2) "
              f"{[(round(p.action, 3), round(d['pair_weight'], 3), round(d['am2'], 3)) for p, d in described]}",
              flush=True)
        init = min((p for p, a in kinds if a == (name == "aligned")), key=lambda p: p.action).value
        if args.start is not None:
            name = f"{name} K={args.components} from P={at} {'up' if direction > 0 else 'down'}"
        points, arc_folds, where, left = [], [], (init, float(at), direction), args.steps
        while left > 0:  # in chunks of --chunk steps, each continued from the last point, saved as it goes
            value, P0, sign = where
            piece = phases.arclength(arch, data, args.kappa2, "P", theory, init=value, at=P0, direction=sign,
                                     bounds=(args.low, args.high), step=args.step, steps=min(args.chunk, left),
                                     scale=args.scale)
            new = piece.points[1:] if points else piece.points
            points += new
            arc_folds += piece.folds
            arc = dataclasses.replace(piece, points=tuple(points), folds=tuple(arc_folds))
            arcs[name] = arc
            for i, p in enumerate(new, start=len(points) - len(new)):
                rows.append({"branch": name, "step": i, "P": p.parameter, "coordinate": p.coordinate,
                             "action": p.action, "dS_dcoordinate": p.daction, "kind": p.kind, "index": p.index,
                             "min_eigenvalue": p.min_eigenvalue, **describe(p.value, p.coordinate, template)})
            for f in piece.folds:
                folds.append({"branch": name, "P": f.parameter, "action": f.action, "eigenvalue": f.eigenvalue,
                              "refined": f.refined, **describe(f.value, f.coordinate, template)})
            print(f"{name}: {len(arc.points)} points, stopped ({arc.reason}) at P = {points[-1].parameter:.4f}; "
                  f"folds {[(round(f.parameter, 4), f.refined, f'{f.eigenvalue:.1e}') for f in arc.folds]}; "
                  f"CPU {time.process_time() - start:.0f} s", flush=True)
            if args.csv:
                pd.DataFrame(rows).to_csv(args.csv, index=False)
            save(args.save, arcs, rows, folds)
            left -= args.chunk
            if piece.reason != "steps":
                break
            last = points[-1]
            where = (last.value, last.parameter, 1 if last.slope > 0 else -1)
    save(args.save, arcs, rows, folds)
    print(f"CPU {time.process_time() - start:.0f} s")
    report(arcs, rows, folds, args)


def save(path, arcs, rows, folds):
    if path:
        with open(path, "wb") as f:
            pickle.dump((arcs, rows, folds), f)


def report(arcs, rows, folds, args):
    """Print the folds and the crossings of the traced minima; write the table and the figure."""
    print(pd.DataFrame(folds).to_string())
    crossings = phases.arc_crossings(*arcs.values())
    for c in crossings:
        print("crossing", c)
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        table = pd.DataFrame(rows)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, group in table.groupby("branch"):
            for kind, marker in (("minimum", "-"), ("saddle", ":")):
                part = group.where(group.kind == kind)
                axes[0].plot(part.P, part.ratio_w_star, marker, label=f"{name} ({kind})")
                axes[1].plot(part.P, part.L3, marker, label=f"{name} ({kind})")
        for f in folds:
            axes[0].axvline(f["P"], color="r", ls=":", lw=1)
        axes[0].set(xlabel="P (continuous)", ylabel="second moment along w* / prior")
        for c in crossings:
            axes[1].axvline(c["parameter"], color="k", ls="--", lw=1)
        axes[1].set(xlabel="P (continuous)", ylabel="learnability of He3 (L3)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
