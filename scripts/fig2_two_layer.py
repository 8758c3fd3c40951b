"""Review Fig 2 setup: linear one-hidden-layer net, linear single-index teacher, d = 50, N = 1000.

Learnability and test MSE of the mean output vs P for the NNGP, kernel scaling, the adaptive
kernel and (with --sample) exact Gibbs sampling of the finite network, in standard (gamma = 1)
and mean-field (gamma = 2) scaling. Saves a PNG.

    python scripts/fig2_two_layer.py --out fig2.png            # full size
    python scripts/fig2_two_layer.py --small --out fig2.png    # d = 20, N = 200, a minute
"""

from __future__ import annotations

import argparse

import jax
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402

THEORIES = ("gp", "scaling", "adaptive")


def curves(d, width, kappa2, gamma, Ps, sample, seed):
    out = {name: {"learnability": [], "test_mse": []} for name in THEORIES + (("sampled",) if sample else ())}
    arch = ak.FCN(d, width, "linear", gamma=gamma)
    for P in Ps:
        data = ak.teacher_dataset(jax.random.PRNGKey(seed), P, d, P_test=1000)
        for theory in THEORIES:
            summary = ak.summarize(ak.solve(arch, data, kappa2, theory), arch, data, kappa2)
            for key in ("learnability", "test_mse"):
                out[theory][key].append(summary[key])
        if sample:
            from adaptive_kernels.sampling import sample_posterior

            est = sample_posterior(arch, data, kappa2, method="gibbs", num_samples=500, num_warmup=100,
                                   key=jax.random.PRNGKey(seed + 1))
            out["sampled"]["learnability"].append(float(est.learnability.mean))
            out["sampled"]["test_mse"].append(float(est.test_mse.mean))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="fig2_two_layer.png")
    parser.add_argument("--small", action="store_true", help="d = 20, N = 200, fewer P (quick)")
    parser.add_argument("--sample", action="store_true", help="add exact Gibbs sampling of the finite net")
    parser.add_argument("--kappa2", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    d, width = (20, 200) if args.small else (50, 1000)
    Ps = np.unique(np.geomspace(5, 4 * d, 6 if args.small else 10).astype(int))
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), sharex=True)
    for col, gamma in enumerate((1.0, 2.0)):
        res = curves(d, width, args.kappa2, gamma, Ps, args.sample, args.seed)
        for row, key in enumerate(("learnability", "test_mse")):
            ax = axes[row, col]
            for name, values in res.items():
                style = "o" if name == "sampled" else "-"
                ax.plot(Ps / d, values[key], style, label=name)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylabel(key.replace("_", " "))
            ax.set_title(f"gamma = {gamma:g}, d = {d}, N = {width}")
            if row == 1:
                ax.set_xlabel("P / d")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
