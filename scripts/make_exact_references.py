"""HMC references for the exact large-width measure (issue 15; tests/test_exact_measure.py, docs/exact_measure.md).

Samples the posterior of finite erf networks with the library's HMC (readout integrated out exactly; THEORY.md
sec. 8) -- independent of the saddle-point code under test -- and writes, per case, the data recipe, the
architecture and the sampled observables with their Monte Carlo standard errors to a JSON file:

    nice -n 10 .venv/bin/python scripts/make_exact_references.py --set small --out tests/data/exact_small.json
    nice -n 10 .venv/bin/python scripts/make_exact_references.py --set small25 --overlaps \
        --out tests/data/exact_small25.json
    nice -n 10 .venv/bin/python scripts/make_exact_references.py --set issue --out tests/data/exact_issue.json \
        --samples 400 --warmup 200

With ``--table REFERENCES.json`` it instead solves the Gaussian ansatz (``solve``'s default form) and the exact
measure (``--seeds`` keys x ``--exact-samples`` samples) on each stored case and prints a markdown table against
the HMC numbers (docs/exact_measure.md):

    nice -n 10 .venv/bin/python scripts/make_exact_references.py --table tests/data/exact_issue.json

``small25``: the same at N = 25 (P = 24, 40), where no Gaussian-ansatz saddle exists, with ``--overlaps``
(the bimodality test). ``small``: the test case (two-layer erf, d = 5, P = 24, N = 100, gamma = 2, kappa2 = 1e-2, cubic teacher), where
the Gaussian ansatz overestimates the first-layer eigenvalue ratio by tens of percent. ``issue``: the cases of
issue 15 (two-layer erf, d = 20, N = 200, gamma in {1, 1.5, 2}, P in {20, 80}; deep erf, N1 = N2 = 80, d = 15,
gamma = 2, P = 20). The data are ``teacher_dataset(PRNGKey(data_seed), P, d, "cubic", P_test=P_test)``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.data import teacher_dataset  # noqa: E402
from adaptive_kernels.sampling import sample_posterior  # noqa: E402

KAPPA2 = 1e-2
SETS = {
    "small": [dict(d=5, P=24, widths=[100], gamma=2.0, P_test=200)],
    "small25": [dict(d=5, P=P, widths=[25], gamma=2.0, P_test=200) for P in (24, 40)],
    "issue": [dict(d=20, P=P, widths=[200], gamma=g, P_test=500) for g in (1.0, 1.5, 2.0) for P in (20, 80)]
    + [dict(d=15, P=20, widths=[80, 80], gamma=2.0, P_test=500)],
    "relu": [dict(d=20, P=P, widths=[200], gamma=g, P_test=500, activation="relu") for g in (1.0, 1.5, 2.0)
             for P in (20, 80)],
    "deep": [dict(d=15, P=P, widths=[80, 80], gamma=g, P_test=500) for P in (20, 60) for g in (1.0, 2.0)
             if (P, g) != (20, 2.0)],
}


def _estimate(e):
    return None if e is None else [float(e.mean), float(e.se)]


def reference(case, num_chains, num_samples, num_warmup, data_seed=0, key=1):
    case = {"activation": "erf", **case}
    arch, data = _case_data({**case, "data_seed": data_seed, "teacher": "cubic"})
    start = time.perf_counter()
    est = sample_posterior(arch, data, KAPPA2, method="hmc", num_chains=num_chains, num_samples=num_samples,
                           num_warmup=num_warmup, key=key)
    return {
        **case, "kappa2": KAPPA2, "teacher": "cubic", "data_seed": data_seed,
        "sampler": {"method": "hmc", "num_chains": num_chains, "num_samples": num_samples, "num_warmup": num_warmup,
                    "key": key, "max_rhat": float(est.max_rhat), "acceptance": float(est.acceptance),
                    "seconds": time.perf_counter() - start},
        "learnability": _estimate(est.learnability),
        "eigenvalue_ratio": [_estimate(r) for r in est.eigenvalue_ratio],
        "kernel_eigenvalue_ratio": [_estimate(r) for r in est.kernel_eigenvalue_ratio],
    }


OVERLAP_EDGES = np.linspace(-3.0, 3.0, 31)  # bins of the first-layer overlap w . w* / |w*|, in units of sqrt(s_w2)


def overlap_histogram(case, num_chains, num_samples, num_warmup, key=2):
    """Density histogram (over :data:`OVERLAP_EDGES`) of the first-layer overlaps w_i . w* / |w*| of every neuron
    and draw of an HMC run (the library's ``HMC`` sampler: readout integrated out, step size adapted during warmup).
    The posterior is even under w_i -> -w_i (odd phi, no bias), so the histogram is symmetrised."""
    from adaptive_kernels.sampling import HMC
    from adaptive_kernels.sampling.target import Posterior

    arch, data = _case_data(case)
    posterior = Posterior(arch, data.X, data.y, jax.numpy.asarray(KAPPA2), False)
    sampler = HMC()
    direction = data.w_star / np.linalg.norm(data.w_star)

    def chain(key):
        k0, k1, k2 = jax.random.split(key, 3)
        state = sampler.init(posterior, k0)
        step = lambda adapt: lambda s, k: (sampler.step(posterior, s, k, adapt)[0], None)  # noqa: E731
        state = jax.lax.scan(step(True), state, jax.random.split(k1, num_warmup))[0]
        state = sampler.end_warmup(state)

        def record(s, k):
            s = sampler.step(posterior, s, k, False)[0]
            return s, sampler.current(posterior, s)[0].weight_matrices()[0] @ direction

        return jax.lax.scan(record, state, jax.random.split(k2, num_samples))[1]

    overlaps = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.PRNGKey(key), num_chains))).ravel()
    overlaps = np.concatenate([overlaps, -overlaps])
    density = np.histogram(overlaps, bins=OVERLAP_EDGES, density=True)[0]
    return {"edges": OVERLAP_EDGES.tolist(), "density": density.tolist(), "draws": int(overlaps.size // 2),
            "key": key, "num_chains": num_chains, "num_samples": num_samples, "num_warmup": num_warmup}


def _case_data(case):
    data = teacher_dataset(jax.random.PRNGKey(case["data_seed"]), case["P"], case["d"], case["teacher"],
                           P_test=case["P_test"])
    return ak.FCN(case["d"], tuple(case["widths"]), case["activation"], gamma=case["gamma"]), data


def _fmt(mean, se=None, digits=3):
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f}±{se:.{digits}f}"


def table(path, seeds, samples):
    """Markdown rows: Gaussian / exact (mean ± SE over keys) / HMC for learnability, the first-layer eigenvalue ratio
    along w* and the last layer's pre-activation kernel ratio along y (E[h h^T] under the tilted measure; HMC:
    E[H_L H_L^T]/N_L), with the exact measure's smallest ESS."""
    print("| net | gamma | P | learnability G / exact / HMC | ratio w* G / exact / HMC "
          "| last pre-act. ratio y exact / HMC | ESS/S | s/solve |")
    print("|---|---|---|---|---|---|---|---|")
    for case in json.load(open(path))["cases"]:
        arch, data = _case_data(case)
        kappa2 = case["kappa2"]
        gauss = ak.summarize(ak.solve(arch, data, kappa2), arch, data, kappa2)
        L, R, pre, ess, seconds = [], [], [], [], []
        for seed in range(seeds):
            start = time.perf_counter()
            sol = ak.solve(arch, data, kappa2, ak.Adaptive(form="conjugate", measure="exact", samples=samples,
                                                           seed=jax.numpy.asarray(seed)))  # one compilation
            s = ak.summarize(sol, arch, data, kappa2)
            seconds.append(time.perf_counter() - start)
            last = ak.exact_measure(sol, arch, data, kappa2)[-1]
            h, w = np.asarray(last["preactivations"]), np.asarray(last["weights"])
            L.append(s["learnability"]), R.append(s["eigenvalue_ratio"][0])
            pre.append(float(ak.eigenvalue_ratio((h * w[:, None]).T @ h, data.y)))
            ess.append(float(np.min(sol.stats["ess"])) / samples)
            if not s["converged"]:
                print(f"# seed {seed}: {sol.message}")
        se = lambda a: np.std(a, ddof=1) / np.sqrt(len(a))  # noqa: E731
        g_ratio = gauss.get("eigenvalue_ratio")
        net = "2-layer" if len(case["widths"]) == 1 else f"{len(case['widths'])} hidden"
        print(f"| {case.get('activation', 'erf')} {net} d={case['d']} N={case['widths'][0]} | {case['gamma']} | {case['P']} "
              f"| {_fmt(gauss['learnability'])} / {_fmt(np.mean(L), se(L))} / {_fmt(*case['learnability'])} "
              f"| {_fmt(g_ratio[0]) if g_ratio else 'n/a'} / {_fmt(np.mean(R), se(R))} / "
              f"{_fmt(*case['eigenvalue_ratio'][0])} "
              f"| {_fmt(np.mean(pre), se(pre), 2)} / {_fmt(*case['kernel_eigenvalue_ratio'][-1], 2)} "
              f"| {min(ess):.2f} | {np.mean(seconds):.0f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=tuple(SETS))
    parser.add_argument("--out")
    parser.add_argument("--table", help="a references JSON: print Gaussian / exact / HMC instead of sampling")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--exact-samples", type=int, default=20000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--overlaps", action="store_true", help="also an HMC histogram of the first-layer overlaps "
                        "with w* (two-layer nets; the bimodality test)")
    args = parser.parse_args(argv)
    if args.table:
        return table(args.table, args.seeds, args.exact_samples)
    if args.set is None or args.out is None:
        parser.error("--set and --out are required to make references")
    rows = []
    for case in SETS[args.set]:
        rows.append(reference(case, args.chains, args.samples, args.warmup))
        if args.overlaps:
            rows[-1]["overlaps"] = overlap_histogram(rows[-1], args.chains, args.samples, args.warmup)
        print(json.dumps(rows[-1]), flush=True)
        with open(args.out, "w") as f:  # written after every case: a long run keeps what it has
            json.dump({"script": "scripts/make_exact_references.py", "set": args.set, "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
