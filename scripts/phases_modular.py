"""Modular addition teacher, qualitatively (issue 17; Rubin, Seroussi & Ringel, arXiv 2310.03789, sec. on modular
arithmetic; docs/phases.md).

Data: all p^2 pairs (a, b) of Z_p, shuffled (seed), input x = [e_a; e_b] - 1/p (centred one-hots, d = 2p), target
y = e_{(a+b) mod p} - 1/p (p outputs); the first P pairs train, the rest test. At each P the phase tools
(``ak.stationary_points``: prior and aligned starts along the top singular direction of X^T Y) find the stationary
points of a mean-field two-layer erf net's Gaussian-ansatz action; printed: every point's action and inertia, and
the posterior's test accuracy (argmax of the predicted outputs over the held-out pairs) and its top eigenvalue
ratio -- a jump of the accuracy at some P where the posterior switches branch is the first-order transition.

    python scripts/phases_modular.py --p 5 --N 20 --kappa2 0.01 --Ps 10 13 16 19 22
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import adaptive_kernels as ak


def modular_addition(p: int, seed: int = 0):
    """(X, Y) of all p^2 pairs in a random order: centred one-hot inputs (p^2, 2p) and targets (p^2, p)."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    eye = np.eye(p)
    X = np.concatenate([eye[a], eye[b]], axis=1) - 1 / p
    Y = eye[(a + b) % p] - 1 / p
    order = np.random.default_rng(seed).permutation(p * p)
    return jnp.asarray(X[order]), jnp.asarray(Y[order])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=5)
    parser.add_argument("--N", type=int, default=20)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--kappa2", type=float, default=0.01)
    parser.add_argument("--Ps", type=int, nargs="+", default=[10, 13, 16, 19, 22])
    parser.add_argument("--ratios", type=float, nargs="+", default=[30.0, 0.05])
    args = parser.parse_args()
    X, Y = modular_addition(args.p)
    arch = ak.FCN(2 * args.p, args.N, "erf", gamma=args.gamma)
    start = time.process_time()
    for P in args.Ps:
        data = ak.Dataset(X=X[:P], y=Y[:P], X_test=X[P:], y_test=Y[P:])
        found = ak.stationary_points(arch, data, args.kappa2, ratios=tuple(args.ratios))
        print(f"P = {P}:\n{found.table().to_string()}")
        for point in found.points:
            mean = ak.predict(point.solution, arch, data, args.kappa2, X[P:]).mean_test
            accuracy = float(jnp.mean(jnp.argmax(mean, axis=1) == jnp.argmax(Y[P:], axis=1)))
            eigenvalues = jnp.linalg.eigvalsh(point.value) * ak.make_problem(arch, data, args.kappa2).prior_precision
            print(f"  action {point.action:.3f} ({point.kind}{', posterior' if point.posterior else ''}): "
                  f"test accuracy {accuracy:.3f}, largest variance ratio {float(eigenvalues[-1]):.2f} "
                  f"({time.process_time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
