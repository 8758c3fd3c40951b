"""Review Fig 1: learning-curve theories vs GP regression.

Left: sklearn digits (two classes as +-1 targets), ReLU NNGP, spectrum from the full pool of
both classes; training sets from the train split, held-out test split.
Right: polynomial target on the hypersphere S^{d-1} (degrees 1, 2, 4), Funk-Hecke spectrum.
Each panel: GP regression (mean +- SE over draws) with eigenlearning, equivalent kernel and
Wilsonian RG. Usage: python scripts/fig1_learning_curves.py [--out fig1_learning_curves.png]
"""

import argparse

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.data import polynomial_sphere_teacher, sphere_inputs, unit_vector  # noqa: E402
from adaptive_kernels.learning_curves import (  # noqa: E402
    THEORIES,
    empirical_learning_curve,
    empirical_spectrum,
    optimal_ridge,
    sphere_spectrum,
)

STYLE = {"eigenlearning": "-", "equivalent_kernel": "--", "rg": ":"}


def panel(ax, title, spectrum, curve, kappa2):
    P_fine = jnp.geomspace(float(curve.P[0]), float(curve.P[-1]), 60)
    ax.errorbar(curve.P, curve.test_error, 2 * curve.test_error_se, fmt="ko", ms=4, label="GP regression (±2 SE)")
    for name, fn in THEORIES.items():
        ax.plot(P_fine, fn(spectrum, P_fine, kappa2).test_error, STYLE[name], label=name.replace("_", " "))
    ax.set(xscale="log", yscale="log", xlabel="P", ylabel="test MSE", title=title)
    ax.legend(fontsize=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="fig1_learning_curves.png")
    parser.add_argument("--classes", type=int, nargs=2, default=(3, 5))
    parser.add_argument("--kappa2", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=30)
    args = parser.parse_args()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))

    ds = ak.load_digits_regression(classes=tuple(args.classes), seed=0)
    arch = ak.FCN(ds.d, 1, "relu")
    sp, _ = empirical_spectrum(arch, jnp.concatenate([ds.X, ds.X_test]), jnp.concatenate([ds.y, ds.y_test]))
    sizes = np.array([4, 8, 16, 32, 64, 128])
    lc = empirical_learning_curve(
        arch, ds.X, ds.y, sizes, args.kappa2, key=jax.random.PRNGKey(0),
        X_test=ds.X_test, y_test=ds.y_test, n_draws=args.draws,
    )
    panel(axes[0], f"digits {args.classes[0]} vs {args.classes[1]}, ReLU NNGP, κ²={args.kappa2}", sp, lc, args.kappa2)
    grid = jnp.logspace(-4, 1, 11)
    best, _ = optimal_ridge(sp, jnp.asarray(sizes, float), grid)
    grid_curve = empirical_learning_curve(
        arch, ds.X, ds.y, sizes, grid, key=jax.random.PRNGKey(1),
        X_test=ds.X_test, y_test=ds.y_test, n_draws=args.draws,
    )
    print("digits: P", sizes)
    print("  predicted-optimal kappa2", np.asarray(best))
    print("  empirical-optimal kappa2", np.asarray(grid[jnp.argmin(grid_curve.test_error, axis=0)]))

    d, coefficients = 10, [0, 1, 1, 0, 0.5]
    arch = ak.FCN(d, 1, "relu")
    kw, kx = jax.random.split(jax.random.PRNGKey(2))
    X = sphere_inputs(kx, 6000, d)
    y = polynomial_sphere_teacher(X, unit_vector(kw, d), coefficients)
    sp = sphere_spectrum(arch, d, 30, coefficients)
    sizes = np.array([10, 30, 100, 300, 1000])
    lc = empirical_learning_curve(arch, X, y, sizes, args.kappa2, key=jax.random.PRNGKey(3), n_draws=args.draws)
    panel(axes[1], f"sphere d={d}, Q1+Q2+Q4/2, ReLU NNGP, κ²={args.kappa2}", sp, lc, args.kappa2)

    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print("saved", args.out)


if __name__ == "__main__":
    main()
