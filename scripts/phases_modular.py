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
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels import data as D
from adaptive_kernels import phases
from adaptive_kernels.actions import mixture
from adaptive_kernels.gp import gp_predict
from adaptive_kernels.sampling import HMC, Posterior, split_rhat
from adaptive_kernels.sampling.mcmc import metropolis_step, start_chain


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
    args = parser.parse_args(argv)
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
