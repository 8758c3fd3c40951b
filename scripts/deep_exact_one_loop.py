"""Saddle -> one loop of the deep exact measure (``Adaptive(form="conjugate", measure="exact", loops=1)``,
``actions.deep_exact_one_loop``) against the HMC references of ``tests/data/exact_deep.json`` and
``tests/data/exact_issue.json`` (issue 15's deep erf cases: d = 15, N1 = N2 = N, gamma, P; cubic teacher, kappa2 =
1e-2): learnability (the mean output at the 500 test points), the first layer's weight-covariance ratio along w* and
both layers' kernel ratios along y; one solve per key, summarised at the saddle and at one loop (``with_loops``).

    PYTHONPATH=. python scripts/deep_exact_one_loop.py --P 20 --N 80 --gamma 1 --samples 4000 --seeds 2
"""

import argparse
import json
import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.actions import deep_exact_one_loop, exact_one_loop
from adaptive_kernels.data import teacher_dataset
from adaptive_kernels.problem import make_problem

DATA = pathlib.Path(__file__).parents[1] / "tests" / "data"
KAPPA2 = 1e-2


def _line(name, out):
    return (f"{name}: learnability {out['learnability']:.4f}, ratio w* {out['eigenvalue_ratio'][0]:.4f}, "
            "kernel ratios y " + " / ".join(f"{r:.3f}" for r in out["kernel_eigenvalue_ratio"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, default=20)
    parser.add_argument("--N", type=int, default=80)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--chain", action="store_true", help="the test chain's own saddle prediction as the base "
                        "(where the saddle's joint prediction is not finite at small S)")
    parser.add_argument("--moments", action="store_true", help="only the one-loop moments (deep_exact_one_loop."
                        "moments: ratio w* of E[w w^T], kernel ratios of E[K_l], the last pre-activation ratio of "
                        "E[h h^T]), no mean output")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    data = teacher_dataset(jax.random.PRNGKey(0), args.P, 15, "cubic", P_test=500)
    arch = ak.FCN(15, (args.N, args.N), "erf", gamma=args.gamma)
    for name in ("exact_deep.json", "exact_issue.json"):
        for case in json.load(open(DATA / name))["cases"]:
            if (case["P"], case["widths"], case["gamma"], case.get("activation", "erf")) == (
                    args.P, [args.N, args.N], args.gamma, "erf"):
                print(f"HMC ({name}): learnability {case['learnability']}, ratio w* {case['eigenvalue_ratio'][0]}, "
                      f"kernel ratios y {case['kernel_eigenvalue_ratio']}", flush=True)
    loops = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        start = time.perf_counter()
        sol = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate", measure="exact", samples=args.samples,
                                                       seed=jax.numpy.asarray(seed)))
        solved = time.perf_counter()
        if not bool(sol.converged):
            print(f"seed {seed}: {sol.message} (solve {solved - start:.0f} s), skipped", flush=True)
            continue
        if args.moments:
            out = deep_exact_one_loop.moments(sol.theory.sampled, make_problem(arch, data, KAPPA2), sol.value)
            print(f"seed {seed} ({sol.message}; solve {solved - start:.0f} s, moments "
                  f"{time.perf_counter() - solved:.0f} s, |grad S|/|x| {float(out.gradient):.1e})", flush=True)
            for name, kernels, second in (("saddle", *out.saddle), ("one loop", out.kernels, out.second)):
                print(f"  {name}: ratio w* {float(ak.eigenvalue_ratio(second[0], data.w_star)):.4f}, last pre-act. "
                      f"ratio y {float(ak.eigenvalue_ratio(second[-1], data.y)):.3f}, kernel ratios y "
                      + " / ".join(f"{float(ak.eigenvalue_ratio(K, data.y)):.3f}" for K in kernels), flush=True)
            continue
        if args.chain:  # the test chain's own saddle (no joint Cholesky of P + P* points) plus the one-loop shift
            problem = make_problem(arch, data, KAPPA2)
            out = deep_exact_one_loop.moments(sol.theory.sampled, problem, sol.value)
            shifts = deep_exact_one_loop.output_moments(sol.theory.sampled, problem, out, jnp.asarray(data.X_test))
            kernels = {"saddle": out.saddle[0], "one loop": out.kernels}
            saddle, loop = ({"learnability": float(ak.learnability(mean, data.y_test)),
                             "eigenvalue_ratio": [float(ak.eigenvalue_ratio(second[0], data.w_star))],
                             "kernel_eigenvalue_ratio": [float(ak.eigenvalue_ratio(K, data.y)) for K in kernels[name]]}
                            for name, mean, second in (("saddle", shifts.saddle[1], out.saddle[1]),
                                                       ("one loop", shifts.saddle[1] + shifts.mean_test, out.second)))
        else:
            saddle = ak.summarize(sol, arch, data, KAPPA2)
            loop = ak.summarize(exact_one_loop.with_loops(sol, 1), arch, data, KAPPA2)
        loops.append(loop)
        print(f"seed {seed} ({sol.message}; solve {solved - start:.0f} s, "
              f"one loop {time.perf_counter() - solved:.0f} s, peak "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB)"
              f"\n  {_line('saddle', saddle)}\n  {_line('one loop', loop)}", flush=True)
    if len(loops) > 1:
        for key in ("learnability",):
            v = np.array([o[key] for o in loops])
            print(f"one loop {key}: {v.mean():.4f} +- {v.std(ddof=1) / np.sqrt(len(v)):.4f}")
        v = np.array([o["kernel_eigenvalue_ratio"][-1] for o in loops])
        print(f"one loop last kernel ratio y: {v.mean():.3f} +- {v.std(ddof=1) / np.sqrt(len(v)):.3f}")


if __name__ == "__main__":
    main()
