"""Kernel-target alignment per layer of a deep network: NNGP vs MAP kernels (THEORY.md sec. 5, 6).

Solves the adaptive per-layer kernels of a deep FCN and plots, for each hidden layer l, the
alignment y^T K_l y / (|y|^2 |K_l|_F) of the MAP kernel and of the NNGP kernel, for
standard (gamma = 1) and mean-field (gamma = 2) scaling. Feature learning makes the
alignment grow towards the output layer.

    .venv/bin/python scripts/deep_alignment.py --out deep_alignment.png
"""

from __future__ import annotations

import argparse

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.data import teacher_dataset  # noqa: E402


def alignments(arch, data, kappa2, theory):
    sol = ak.solve(arch, data, kappa2, theory)
    if not bool(sol.converged):
        raise RuntimeError(f"{theory} solve did not converge: {sol.message}")
    return ak.summarize(sol, arch, data, kappa2)["kernel_target_alignment"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="deep_alignment.png")
    parser.add_argument("--activation", default="erf")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--P", type=int, default=60)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--kappa2", type=float, default=1e-2)
    args = parser.parse_args(argv)
    data = teacher_dataset(jax.random.PRNGKey(0), args.P, args.d, teacher="cubic", P_test=10)
    layers = range(1, args.depth + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for gamma, color in ((1.0, "C0"), (2.0, "C3")):
        arch = ak.FCN(args.d, (args.width,) * args.depth, args.activation, gamma=gamma)
        ax.plot(layers, alignments(arch, data, args.kappa2, "adaptive"), "o-", color=color, label=f"MAP kernels, gamma={gamma:g}")
    ax.plot(layers, alignments(arch, data, args.kappa2, "gp"), "s--", color="gray", label="NNGP")
    ax.set_xlabel("hidden layer l")
    ax.set_ylabel("kernel-target alignment of K_l")
    ax.set_xticks(list(layers))
    ax.set_title(f"{args.activation} FCN, N={args.width}, P={args.P}, d={args.d}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
