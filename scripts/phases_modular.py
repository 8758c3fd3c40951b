"""Modular addition teacher, qualitatively (issue 17; Rubin, Seroussi & Ringel, arXiv 2310.03789; Gromov,
arXiv 2301.02679; docs/phases.md, "Modular addition").

Data: ``data.modular_addition`` (all p^2 pairs of Z_p in a random order, centred one-hot inputs of d = 2p, centred
one-hot targets of the sum, the first P pairs train, the rest are held out). Network: two-layer, quadratic
activation phi(x) = x^2, mean-field scaling (gamma = 2). Theory: the Gaussian-mixture ansatz with K = (p-1)/2
components of equal weight (``Adaptive(measure="mixture", along="equal")``; free weights run away for phi = x^2,
see ``actions.mixture.MixtureAction``). At each P, ``phases.find_stationary_points`` from the prior and from the
Fourier state (``phases.fourier_state``: component k on frequency k of Z_p, the generalising state of Gromov's
nets); printed per point: action, inertia, posterior flag, held-out accuracy (argmax of the predicted outputs,
``data.modular_accuracy``), each component's Fourier concentration (``phases.fourier_concentration``: 1 = one
frequency, 1/K isotropic) and the accuracy of the Fourier start's own kernel (what a generalising state would
give).

    python scripts/phases_modular.py --p 7 --N 20 --kappa2 0.01 --Ps 28 32 36 40 44 --out docs/phases_modular_p7.csv \
        --plot docs/phases_modular_p7.png
    python scripts/phases_modular.py --points docs/phases_modular_p7.csv --plot docs/phases_modular_p7.png  # re-plot

``--trace START:P:up|down ...``: instead of fixed-P solves, pseudo-arclength continuation in a continuous P
(``phases.arclength(..., "P", at=P)``: the tempered likelihood over the first ``--high`` pairs) of the minimum that
START (``prior`` or ``fourier``) reaches at integer P, followed up or down; per point the action (the P-point
action at integer P), the Hessian's inertia, the held-out accuracy of the tempered posterior on the pairs of weight
0 and the Fourier concentrations; every point is pickled to ``--save`` as it is accepted (``arclength``'s
``callback``) and a rerun resumes from each branch's last point. ``--report`` prints the folds, turning points
and action crossings (``phases.arc_crossings``) of saved traces and writes the table and figure (action gap to the
``--reference`` branch, accuracy and concentration against P).

    python scripts/phases_modular.py --p 7 --N 20 --kappa2 0.01 --step 0.2 --trace fourier:36:up --save F.pkl
    python scripts/phases_modular.py --report F.pkl G.pkl --out docs/phases_modular_p7_trace.csv \
        --plot docs/phases_modular_p7_trace.png

``--hmc``: instead of the theory, HMC of the finite network (``sampling.HMC``: hidden weights sampled, the p readout
columns integrated out) at each P, chains from the prior and from a Fourier-aligned start (neuron i's weights on
frequency 1 + i mod (p-1)/2): held-out accuracy of the posterior mean output, split R-hat of the train MSE, and
the Fourier concentration of each neuron's sampled E[w w^T] within a chain (mean over neurons and chains), and of
w w^T of one neuron at one draw (mean over neurons, draws and chains).

    python scripts/phases_modular.py --hmc --p 7 --N 20 --kappa2 0.01 --Ps 36 44
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import pickle
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import data as D
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from adaptive_kernels.gp import posterior as gp_posterior
from adaptive_kernels.sampling import HMC, Posterior, split_rhat
from adaptive_kernels.sampling.mcmc import metropolis_step, start_chain


def test_outputs(theory, value, problem, X_test):
    """Predicted outputs at ``X_test`` of the GP with the output kernel of the order parameters ``value`` (the
    tempered posterior's, ``gp.posterior`` with ``problem.weights``, when the problem has weights)."""
    K, cross, _ = theory.output_kernels(value, problem, X_test)
    return gp_posterior(K, problem.y, problem.kappa2, cross, weights=problem.weights).mean


def accuracy(theory, value, problem, X_test, y_test):
    """Held-out accuracy (argmax hits) of :func:`test_outputs`."""
    return float(D.modular_accuracy(test_outputs(theory, value, problem, X_test), y_test))


def plot(table, path):
    """Held-out accuracy and mean Fourier concentration of every stationary point against P (the posterior's
    filled and joined by a line, the others open)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table.assign(mean_concentration=[float(np.mean(json.loads(c) if isinstance(c, str) else c))
                                             for c in table["concentration"]])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, column, label in [(axes[0], "accuracy", "held-out accuracy"),
                              (axes[1], "mean_concentration", "Fourier concentration")]:
        post = table[table["posterior"]].sort_values("P")
        ax.plot(post["P"], post[column], "k-", lw=1, label="posterior (lowest minimum)")
        for start, marker in [("fourier", "o"), ("prior", "s")]:
            rows = table[table["starts"].str.contains(start)]
            ax.scatter(rows["P"], rows[column], marker=marker, facecolors=np.where(rows["posterior"], "C0", "none"),
                       edgecolors="C0" if start == "fourier" else "C1", label=f"reached from {start}")
        ax.set_xlabel("P (training pairs)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def trace_branches(args):
    """Pseudo-arclength continuation of the theory's branches in a continuous P (module docstring, ``--trace``),
    every traced point pickled to ``--save`` as it comes (a rerun resumes from a branch's last point)."""
    K = (args.p - 1) // 2
    theory = ak.Adaptive(measure="mixture", components=K, samples=args.samples, along="equal")
    arch = ak.FCN(2 * args.p, args.N, "quadratic", gamma=args.gamma)
    data = D.modular_addition(jax.random.PRNGKey(args.seed), args.p, args.high)
    X_all, y_all = jnp.concatenate([data.X, data.X_test]), jnp.concatenate([data.y, data.y_test])
    problem = ak.make_problem(arch, data, args.kappa2)
    saved = {}
    if args.save and pathlib.Path(args.save).exists():
        with open(args.save, "rb") as f:
            saved = pickle.load(f)

    outputs = jax.jit(lambda value, lam: test_outputs(theory, value, phases.tempered_subset(problem, lam), X_all))

    def row(name, point, kind="point"):
        lam = point.coordinate
        held = math.ceil(lam - 1e-9)  # pairs of weight 0: the held-out set (the test set at integer P)
        _, m, Sigma = mixture.components(point.value)
        conc = np.sort(np.asarray(phases.fourier_concentration(Sigma + m[:, :, None] * m[:, None, :], args.p)))[::-1]
        extra = ({"index": point.index, "min_eigenvalue": point.min_eigenvalue, "slope": point.slope,
                  "dS_dcoordinate": point.daction} if kind == "point" else
                 {"index": None, "min_eigenvalue": point.eigenvalue, "refined": point.refined})
        return {"branch": name, "row": kind, "P": point.parameter, "coordinate": lam, "action": point.action,
                "kind": point.kind if kind == "point" else "fold", **extra,
                "accuracy": float(D.modular_accuracy(outputs(point.value, lam)[held:], y_all[held:])),
                "held_out": len(X_all) - held, "mean_concentration": float(conc.mean()),
                "concentration": np.round(conc, 3).tolist()}

    def checkpoint():
        if args.save:
            with open(args.save, "wb") as f:
                pickle.dump(saved, f)

    start = time.process_time()
    for spec in args.trace:
        label, at, way = spec.split(":")
        name = f"{label} from P={at} {way}"
        branch = saved.setdefault(name, {"points": [], "folds": [], "rows": [], "reason": None})
        if branch["reason"] is not None:
            continue
        if branch["points"]:  # resume from the last point, in the direction the branch was going
            last = branch["points"][-1]
            init, P0, sign = last.value, last.parameter, 1 if last.slope > 0 else -1
        else:
            init = (mixture.initial(problem, K) if label == "prior" else
                    phases.fourier_state(problem, args.p, args.gain, args.rest))
            P0, sign = float(at), {"up": 1, "down": -1}[way]
        skip = [bool(branch["points"])]  # a resumed trace's first point is the saved last one

        def accept(point, name=name, branch=branch, skip=skip):
            if skip[0]:
                skip[0] = False
                return
            branch["points"].append(point)
            branch["rows"].append(row(name, point))
            checkpoint()
            r = branch["rows"][-1]
            print(f"{name} #{len(branch['points'])}: P = {r['P']:.4f} {r['kind']} (eig {r['min_eigenvalue']:.2e}) "
                  f"action {r['action']:.4f} accuracy {r['accuracy']:.3f} ({r['held_out']}) concentration "
                  f"{r['concentration']} CPU {time.process_time() - start:.0f} s", flush=True)

        arc = phases.arclength(arch, data, args.kappa2, "P", theory, init=init, at=P0, direction=sign,
                               bounds=(args.low, args.high), step=args.step, scale=args.scale,
                               steps=max(1, args.steps - len(branch["points"])), callback=accept)
        branch["folds"] += arc.folds
        branch["rows"] += [row(name, f, "fold") for f in arc.folds]
        branch["reason"] = arc.reason
        checkpoint()
        print(f"{name}: stopped ({arc.reason}); folds "
              f"{[(round(f.parameter, 4), round(f.action, 4), f.refined, f'{f.eigenvalue:.1e}') for f in arc.folds]}",
              flush=True)
    report_trace(saved, args)


def report_trace(saved, args):
    """Print the folds and the action crossings (``phases.arc_crossings``) of the traced branches; write the table
    (the points and the folds of every branch, with the action gap to the Fourier branch's minima interpolated at
    the same P, on the range of the branch ``--reference``) and the figure (gap, held-out accuracy and
    concentration against P)."""
    arcs = {name: phases.Arc("P", tuple(b["points"]), tuple(b["folds"]), b["reason"], phases.tempered_count)
            for name, b in saved.items() if b["points"]}
    crossings = phases.arc_crossings(*arcs.values())
    for name, arc in arcs.items():
        turns = [(round(a.parameter, 5), round(b.parameter, 5), round(b.action, 4))
                 for a, b in zip(arc.points, arc.points[1:]) if np.sign(a.slope) != np.sign(b.slope)]
        print(f"{name}: {len(arc.points)} points, P {min(p.parameter for p in arc.points):.3f} .. "
              f"{max(p.parameter for p in arc.points):.3f}, stopped ({arc.reason}); folds "
              f"{[(round(f.parameter, 4), round(f.action, 4), f.refined) for f in arc.folds]}; turning points "
              f"between (P, P, action) {turns}")
    names = list(arcs)
    for c in crossings:
        (ia, pa), (ib, pb) = c["runs"]
        print(f"crossing at P = {c['parameter']:.4f} (action {c['action']:.4f}) between {names[ia]} (run from "
              f"P = {pa:.3f}) and {names[ib]} (run from P = {pb:.3f}); slopes {c['slopes']}")
    table = pd.DataFrame([r for b in saved.values() for r in b["rows"]])
    reference = [p for p in arcs[args.reference].points if p.kind == "minimum"] if args.reference in arcs else []
    if reference:  # cubic Hermite in the traced coordinate through the actions and their exact slopes
        from scipy.interpolate import CubicHermiteSpline

        reference.sort(key=lambda p: p.coordinate)
        x = np.array([p.coordinate for p in reference])
        keep = np.concatenate([[True], np.diff(x) > 1e-12])
        spline = CubicHermiteSpline(x[keep], np.array([p.action for p in reference])[keep],
                                    np.array([p.daction for p in reference])[keep])
        inside = (table["coordinate"] >= x[0]) & (table["coordinate"] <= x[-1])
        table["gap"] = np.where(inside, table["action"] - spline(table["coordinate"].clip(x[0], x[-1])), np.nan)
    if args.out:
        table.to_csv(args.out, index=False)
    if args.plot:
        plot_trace(table, crossings, args.plot)


def plot_trace(table, crossings, path):
    """Action minus the Fourier branch's (interpolated) and held-out accuracy against P, per traced branch (minima
    solid, saddles dotted; folds as crosses, action crossings as dashed lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    columns = [("gap", "S - S(reference branch's minima)"), ("accuracy", "held-out accuracy"),
               ("mean_concentration", "mean Fourier concentration")]
    for i, (name, group) in enumerate(table.groupby("branch", sort=False)):
        points, folds = group[group["row"] == "point"], group[group["row"] == "fold"]
        for ax, (column, label) in zip(axes, columns):
            if column not in group:
                continue
            for kind, style in (("minimum", "-"), ("saddle", ":")):
                part = points.where(points["kind"] == kind)
                ax.plot(part["P"], part[column], style, marker=".", ms=3, color=f"C{i}", label=f"{name} ({kind})")
            ax.plot(folds["P"], folds[column], "x", color=f"C{i}")
            ax.set(xlabel="P (continuous, tempered likelihood)", ylabel=label)
    for c in crossings:
        for ax in axes:
            ax.axvline(c["parameter"], color="k", ls="--", lw=1)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fourier_start(p, N, d, key):
    """Standardised first-layer weights (N * d,): neuron i a Gaussian draw projected on frequency 1 + i mod (p-1)/2,
    rescaled to the prior's mean norm |z_i|^2 = d."""
    g = jax.random.normal(key, (N, d))
    z = np.stack([np.asarray(D.modular_fourier_projector(p, 1 + i % ((p - 1) // 2))) @ np.asarray(g[i])
                  for i in range(N)])
    return (z * np.sqrt(d / 4)).reshape(-1)


def hmc_chains(posterior, X_test, starts, key, num_warmup, num_samples, p):
    """HMC (``sampling.HMC``, readout integrated out) from the standardised starts (chains, dim): per chain the mean
    test output (P_test, k), the per-neuron E[w w^T] (N, d, d), the train MSE per draw, the acceptance and the
    mean over draws and neurons of the Fourier concentration of w w^T (one neuron at one draw)."""
    sampler = HMC()
    value_and_grad, record, _ = sampler.potential_and_unravel(posterior)

    def step(state, k, adapt):
        return metropolis_step(value_and_grad, state, k, num_leapfrog=sampler.num_leapfrog,
                               target_accept=sampler.target_accept, adapt=adapt, jitter=sampler.jitter)

    @jax.jit
    def chain(z0, key):
        k_warm, k_draw = jax.random.split(key)
        state = start_chain(value_and_grad, z0, sampler.initial_step_size)
        state, _ = jax.lax.scan(lambda s, k: step(s, k, True), state, jax.random.split(k_warm, num_warmup))
        state = sampler.end_warmup(state)

        def draw(state, k):
            state, acc = step(state, k, False)
            features, readout = record(state.position)
            W = features.weights[0]
            ww = W[:, :, None] * W[:, None, :]
            out = (features.output(X_test, readout), ww,
                   jnp.mean((features.output(posterior.X, readout) - posterior.y) ** 2), acc,
                   jnp.mean(phases.fourier_concentration(ww, p)))
            return state, out

        _, (test, ww, mse, acc, instant) = jax.lax.scan(draw, state, jax.random.split(k_draw, num_samples))
        return test.mean(0), ww.mean(0), mse, acc.mean(), instant.mean()

    return [chain(z0, k) for z0, k in zip(starts, jax.random.split(key, len(starts)))]


def hmc_check(args):
    """The finite network's posterior by HMC at each P (module docstring, ``--hmc``)."""
    arch = ak.FCN(2 * args.p, args.N, "quadratic", gamma=args.gamma)
    rows = []
    for P in args.Ps:
        data = D.modular_addition(jax.random.PRNGKey(args.seed), args.p, P)
        posterior = Posterior(arch, data.X, data.y, jnp.asarray(args.kappa2), False)
        dim = args.N * arch.d
        for label in ["prior", "fourier"]:
            keys = jax.random.split(jax.random.PRNGKey(100 + P), args.chains)
            starts = [jax.random.normal(k, (dim,)) if label == "prior" else fourier_start(args.p, args.N, arch.d, k)
                      for k in keys]
            start = time.process_time()
            out = hmc_chains(posterior, data.X_test, starts, jax.random.PRNGKey(P), args.warmup, args.draws, args.p)
            test = np.mean([o[0] for o in out], axis=0)
            conc = [float(np.mean(phases.fourier_concentration(o[1], args.p))) for o in out]
            rows.append({"P": P, "start": label, "chains": args.chains, "draws": args.draws,
                         "accuracy": float(D.modular_accuracy(test, data.y_test)),
                         "chain_accuracies": [round(float(D.modular_accuracy(o[0], data.y_test)), 3) for o in out],
                         "neuron_concentration": round(float(np.mean(conc)), 3),
                         "chain_concentrations": [round(c, 3) for c in conc],
                         "instant_concentration": round(float(np.mean([o[4] for o in out])), 3),
                         "train_mse": float(np.mean([o[2].mean() for o in out])),
                         "rhat_train_mse": split_rhat(np.stack([np.asarray(o[2]) for o in out])),
                         "acceptance": float(np.mean([o[3] for o in out])),
                         "cpu_s": round(time.process_time() - start)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string())
    if args.out:
        table.to_csv(args.out, index=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=7)
    parser.add_argument("--N", type=int, default=2)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--Ps", type=int, nargs="+", default=[16, 22, 28, 34, 40])
    parser.add_argument("--samples", type=int, default=256, help="draws of the mixture entropy's overlap correction")
    parser.add_argument("--gain", type=float, default=2.0, help="the Fourier start's variance on its frequency")
    parser.add_argument("--rest", type=float, default=0.5, help="... and elsewhere (times the prior's)")
    parser.add_argument("--seed", type=int, default=0, help="order of the pairs")
    parser.add_argument("--out", default=None, help="CSV of the points")
    parser.add_argument("--plot", default=None, help="PNG of accuracy and concentration against P")
    parser.add_argument("--points", default=None, help="re-plot this CSV without solving")
    parser.add_argument("--hmc", action="store_true", help="sample the finite network by HMC instead (docstring)")
    parser.add_argument("--chains", type=int, default=4, help="HMC chains per start")
    parser.add_argument("--warmup", type=int, default=500, help="HMC warmup transitions per chain")
    parser.add_argument("--draws", type=int, default=1000, help="HMC draws per chain")
    parser.add_argument("--trace", nargs="+", metavar="START:P:up|down",
                        help="pseudo-arclength continuation in P instead (docstring): the minimum reached from START "
                        "(prior or fourier) at integer P, followed up or down, e.g. prior:16:up fourier:44:down")
    parser.add_argument("--low", type=float, default=16, help="--trace: lowest P")
    parser.add_argument("--high", type=int, default=46, help="--trace: highest P (the first --high pairs are used)")
    parser.add_argument("--step", type=float, default=0.1, help="--trace: arclength step")
    parser.add_argument("--scale", type=float, default=1.0, help="--trace: P's scale in the arclength norm (at 10 the "
                        "first corrector failed at every step: a whole pair enters per 0.1 of mu, moving the state ~1)")
    parser.add_argument("--steps", type=int, default=300, help="--trace: most points per branch")
    parser.add_argument("--save", default=None, help="--trace: pickle of the traced points (resumed if present)")
    parser.add_argument("--reference", default="fourier from P=40 down",
                        help="--trace/--report: the branch whose minima's action the gap column subtracts")
    parser.add_argument("--report", nargs="+", help="report the branches of these --save pickles, trace nothing")
    args = parser.parse_args(argv)
    if args.report:
        saved = {}
        for name in args.report:
            with open(name, "rb") as f:
                saved.update(pickle.load(f))
        report_trace(saved, args)
        return
    if args.trace:
        trace_branches(args)
        return
    if args.hmc:
        hmc_check(args)
        return
    if args.points:
        plot(pd.read_csv(args.points), args.plot)
        return
    K = (args.p - 1) // 2
    theory = ak.Adaptive(measure="mixture", components=K, samples=args.samples, along="equal")
    arch = ak.FCN(2 * args.p, args.N, "quadratic", gamma=args.gamma)
    rows, start = [], time.process_time()
    for P in args.Ps:
        data = D.modular_addition(jax.random.PRNGKey(args.seed), args.p, P)
        problem = ak.make_problem(arch, data, args.kappa2)
        fourier = phases.fourier_state(problem, args.p, args.gain, args.rest)
        found = phases.find_stationary_points(theory, problem, {"prior": mixture.initial(problem, K),
                                                                "fourier": fourier})
        for point in found.points:
            pi, m, Sigma = mixture.components(point.value)
            concentration = phases.fourier_concentration(Sigma + m[:, :, None] * m[:, None, :], args.p)
            rows.append({"P": P, "action": point.action, "kind": point.kind, "posterior": point.posterior,
                         "starts": "+".join(point.starts), "accuracy": accuracy(theory, point.value, problem, data.X_test, data.y_test),
                         "concentration": np.round(np.sort(np.asarray(concentration))[::-1], 3).tolist(),
                         "start_accuracy": accuracy(theory, fourier, problem, data.X_test, data.y_test)})
            print(rows[-1], f"({time.process_time() - start:.0f} s CPU)", flush=True)
        for label, message in found.failed.items():
            print(f"P = {P}: start {label} did not converge: {message}", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string())
    if args.out:
        table.to_csv(args.out, index=False)
    if args.plot:
        plot(table, args.plot)


if __name__ == "__main__":
    main()
