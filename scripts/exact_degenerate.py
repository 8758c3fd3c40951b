"""The exact large-width measure where moment-matched proposals' importance weights degenerate (issue 15;
docs/exact_measure.md, "Where the weights degenerate"): the solve switches the proposal of such a layer to one
adapted by Markov chains (``actions.exact.rescued``, ``ParticleProposal``). Two cases:

- ``relu``: two-layer ReLU, d = 20, N = 200, gamma = 2, P = 80, kappa2 = 1e-2, cubic teacher (the HMC reference of
  the finite net in tests/data/exact_relu.json); one key of four ended LEFT_DOMAIN at 4·10^4 samples before.
- ``phases``: the mean-field cubic point of docs/phases.md ("Is the K = 2 mixture the cause of the overstated
  alignment?"): erf, d = 6, N = 20, gamma = 2, kappa2 = 0.1, eps = 1, P = 120 (HMC of the finite N = 20 net:
  docs/phases_hmc_cubic.csv), from the theory's own start and from the K = 2 axis mixture's conjugates
  (``--from-mixture``).

    nice -n 10 .venv/bin/python scripts/exact_degenerate.py relu --seeds 0 1 2 3 --samples 40000
    nice -n 10 .venv/bin/python scripts/exact_degenerate.py phases --seeds 0 1 --samples 20000
    nice -n 10 .venv/bin/python scripts/exact_degenerate.py phases --seeds 0 --samples 20000 --from-mixture
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.actions import exact, mixture

ROOT = pathlib.Path(__file__).resolve().parent.parent


def relu_case():
    (case,) = [c for c in json.loads((ROOT / "tests/data/exact_relu.json").read_text())["cases"]
               if c["gamma"] == 2.0 and c["P"] == 80]
    data = ak.teacher_dataset(jax.random.PRNGKey(case["data_seed"]), case["P"], case["d"], case["teacher"],
                              P_test=case["P_test"])
    arch = ak.FCN(case["d"], tuple(case["widths"]), "relu", gamma=case["gamma"])
    reference = f"HMC learnability {case['learnability'][0]:.4f}, ratio {case['eigenvalue_ratio'][0][0]:.3f}"
    return arch, data, case["kappa2"], reference


def phases_case():
    pool = ak.teacher_dataset(jax.random.PRNGKey(0), 120, 6, teacher="cubic", eps=1.0, P_test=2000)
    arch = ak.FCN(6, 20, "erf", gamma=2.0)
    return arch, pool, 0.1, "HMC (N = 20, docs/phases_hmc_cubic.csv, P = 120): ratio 1.82 (prior) / 2.97 (aligned), " \
                            "learnability 0.126 / 0.131 (1000 test points)"


def mixture_anchor(arch, data, kappa2):
    """The conjugates (``exact.weight_form_conjugates``) of the second moment of the K = 2 axis mixture's
    lowest-action minimum (scripts/phases_aligned_gap.py: pair weight 0.18 at a m^2 40, ratio along w* 12.1)."""
    theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=data.w_star)
    aligned = min(ak.stationary_points(arch, data, kappa2, theory).minima, key=lambda p: p.action)
    problem = ak.make_problem(arch, data, kappa2)
    second = mixture.second_moment(problem, aligned.value, data.w_star)
    print(f"K = 2 mixture: ratio along w* {float(ak.eigenvalue_ratio(second, data.w_star)):.3f}", flush=True)
    return exact.weight_form_conjugates(problem, second)


def anchored_exact(problem, samples: int, seed: int, anchor=None):
    """``Adaptive(form="conjugate", measure="exact")`` with ``samples`` draws from key ``seed``; with ``anchor``
    (conjugates, e.g. ``exact.weight_form_conjugates`` of a second moment) its proposals first adapted there."""
    theory = ak.Adaptive(form="conjugate", measure="exact", samples=samples, seed=jnp.asarray(seed))
    if anchor is None:
        return theory
    return eqx.tree_at(lambda t: t.sampled, theory, exact.exact_cgf(problem, samples, jax.random.PRNGKey(seed),
                                                                      anchor=anchor), is_leaf=lambda x: x is None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("relu", "phases"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--from-mixture", action="store_true",
                        help="phases: adapt the proposals first at the K = 2 axis mixture's aligned state")
    parser.add_argument("--hmc-check", action="store_true",
                        help="also compare the importance-sampled kernel with HMC on the tilted measure "
                             "(ak.exact_hmc_check, 16 chains x 1000 draws after 500)")
    args = parser.parse_args()
    arch, data, kappa2, reference = {"relu": relu_case, "phases": phases_case}[args.case]()
    print(reference, flush=True)
    anchor = mixture_anchor(arch, data, kappa2) if args.from_mixture else None
    for seed in args.seeds:
        start = time.process_time()
        theory = anchored_exact(ak.make_problem(arch, data, kappa2), args.samples, seed, anchor)
        sol = ak.solve(arch, data, kappa2, theory)
        s = ak.summarize(sol, arch, data, kappa2)
        print(f"key {seed}: {sol.message}; learnability {s['learnability']:.4f}, ratio w* {s['eigenvalue_ratio'][0]:.3f}, "
              f"ESS/S {np.asarray(sol.stats['ess']) / args.samples}, mcmc {np.asarray(sol.stats['mcmc'])}, "
              f"{time.process_time() - start:.0f} s CPU", flush=True)
        if args.hmc_check:
            (check,) = ak.exact_hmc_check(sol, arch, data, kappa2, num_chains=16, num_samples=1000, num_warmup=500)
            K, K_hmc, se = (np.asarray(check[k]) for k in ("kernel", "kernel_hmc", "se_hmc"))
            print(f"  HMC on the tilted measure: |K - K_hmc| = {np.linalg.norm(K - K_hmc):.4f}, HMC SE "
                  f"{np.sqrt(np.sum(se**2)):.4f}, |K| {np.linalg.norm(K):.2f}; ratio along y "
                  f"{float(ak.eigenvalue_ratio(K, data.y)):.3f} vs {float(ak.eigenvalue_ratio(K_hmc, data.y)):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
