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
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import data as D
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from adaptive_kernels.gp import gp_predict


def accuracy(theory, value, problem, data):
    """Held-out accuracy of the GP with the output kernel of the order parameters ``value``."""
    K, cross, _ = theory.output_kernels(value, problem, data.X_test)
    return float(D.modular_accuracy(gp_predict(K, problem.y, problem.kappa2, cross).mean, data.y_test))


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
    args = parser.parse_args(argv)
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
                         "starts": "+".join(point.starts), "accuracy": accuracy(theory, point.value, problem, data),
                         "concentration": np.round(np.sort(np.asarray(concentration))[::-1], 3).tolist(),
                         "start_accuracy": accuracy(theory, fourier, problem, data)})
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
