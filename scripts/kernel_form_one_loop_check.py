"""The deep kernel form's one-loop mean output and predictive variance against importance sampling of the model it
expands (docs/finite_width.md, "Deep nets: the kernel form at one loop"):

    .venv/bin/python scripts/kernel_form_one_loop_check.py --N 48 --activation erf

The Gaussian-equivalent chain of Wisharts on [X; X_test], N_l K_l ~ Wishart(N_l, K_phi(s_w2 K_{l-1} + s_b2)), is
sampled in numpy (closed-form erf / ReLU kernels, no library code) and weighted by the evidence exp(-D(c K_L)) of
the training block (self-normalised importance sampling from the prior); the library's ``Adaptive(form="kernel")``
saddle and ``loops=1`` predictions are printed beside it. Not a test: the one-loop solve compiles for minutes.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.problem import make_problem  # noqa: E402


def layer_kernel(C, activation):
    """E[phi(u) phi(v)], (u, v) ~ N(0, C), entrywise over a batch of matrices (erf or ReLU)."""
    dg = np.diagonal(C, axis1=-2, axis2=-1)
    if activation == "erf":
        return 2 / np.pi * np.arcsin(2 * C / np.sqrt((1 + 2 * dg[..., :, None]) * (1 + 2 * dg[..., None, :])))
    norm = np.sqrt(dg[..., :, None] * dg[..., None, :])
    rho = np.clip(C / norm, -1, 1)
    return norm / (2 * np.pi) * (np.sqrt(1 - rho ** 2) + (np.pi - np.arccos(rho)) * rho)


def sampled_posterior(arch, data, kappa2, c, samples, seed, chunk=20000):
    """(mean, its standard error, predictive variance, ESS) at the test inputs by importance sampling."""
    P, T = data.X.shape[0], data.X_test.shape[0]
    X_all = np.concatenate([np.asarray(data.X), np.asarray(data.X_test)])
    y = np.asarray(data.y)
    C0 = arch.s_w2 * X_all @ X_all.T / X_all.shape[1] + arch.s_b2
    rng = np.random.default_rng(seed)
    log_w, f, v = [], [], []
    for _ in range(samples // chunk):
        C = np.broadcast_to(C0, (chunk, P + T, P + T))
        for N in arch.widths:
            B = np.linalg.cholesky(layer_kernel(C, arch.activation.name) + 1e-12 * np.eye(P + T))
            W = rng.standard_normal((chunk, N, P + T)) @ np.swapaxes(B, -1, -2)
            K = np.swapaxes(W, -1, -2) @ W / N
            C = arch.s_w2 * K + arch.s_b2
        A = c * K[:, :P, :P] + kappa2 * np.eye(P)
        a = np.linalg.solve(A, y)
        log_w.append(-0.5 * a @ y - np.sum(np.log(np.diagonal(np.linalg.cholesky(A), axis1=1, axis2=2)), axis=1))
        cross = c * K[:, P:, :P]
        f.append(np.einsum("stp,sp->st", cross, a))
        v.append(c * np.diagonal(K, axis1=1, axis2=2)[:, P:]
                 - np.einsum("stp,spt->st", cross, np.linalg.solve(A, np.swapaxes(cross, 1, 2))))
    log_w, f, v = np.concatenate(log_w), np.concatenate(f), np.concatenate(v)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = w @ f
    return mean, np.sqrt(w ** 2 @ (f - mean) ** 2), w @ v + w @ (f - mean) ** 2, 1 / np.sum(w ** 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=48)
    parser.add_argument("--activation", default="erf", choices=("erf", "relu"))
    parser.add_argument("--P", type=int, default=4)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--kappa2", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=200000)
    args = parser.parse_args()
    data = ak.teacher_dataset(jax.random.PRNGKey(0), args.P, args.d, "cubic", P_test=3)
    arch = ak.FCN(args.d, (args.N,) * args.depth, args.activation, s_w2=2.0 if args.activation == "erf" else 1.5,
                  s_b2=0.1)
    predictions = {}
    for loops in (0, 1):
        start = time.time()
        sol = ak.solve(arch, data, args.kappa2, ak.Adaptive(form="kernel", loops=loops))
        predictions[loops] = ak.predict(sol, arch, data, args.kappa2)
        print(f"loops={loops}: converged {bool(sol.converged)}, {time.time() - start:.0f} s", flush=True)
    c = float(make_problem(arch, data, args.kappa2).readout_scale)
    mean, se, var, ess = sampled_posterior(arch, data, args.kappa2, c, args.samples, 1)
    print(f"importance sampling: ESS {ess:.0f} of {args.samples}")
    print("x*  sampled mean (se)      one loop   saddle     | sampled var  one loop  saddle")
    for t in range(len(mean)):
        print(f"{t}   {mean[t]: .6f} ({se[t]:.1e})  {float(predictions[1].mean_test[t]): .6f}  "
              f"{float(predictions[0].mean_test[t]): .6f}  | {var[t]:.5f}      "
              f"{float(predictions[1].var_test[t]):.5f}   "
              f"{float(predictions[0].var_test[t]):.5f}")


if __name__ == "__main__":
    main()
