"""Issue 16's targets for the one-loop corrections (``loops=1``) against the library's exact Gibbs sampler of linear
nets, and the cost of the correction. Writes markdown tables to stdout (collected in
``bench/results/one_loop_targets.md``).

    PYTHONPATH=$PWD python scripts/one_loop_targets.py two_layer|scan|deep|speed|references

two_layer: d = 40, N = 300, P = 60, kappa2 = 1e-2, gamma in {1, 1.5, 2} (the issue's nets): first-layer eigenvalue
ratio along the teacher and learnability, saddle and one loop against Gibbs. scan: d = 2, P = 8, gamma = 2,
kappa2 = 0.5/N (the same saddle problem at every width), N = 20-640: errors of the first-layer ratio and the
learnability against the exact posterior (the 3-D quadrature of ``tests/test_one_loop.py``), Gibbs alongside, with
fitted slopes in log N. deep: deep linear nets (2 and 3 hidden layers), the
per-layer kernel ratios along y and the first layer's covariance ratio. speed: d = 50, P = 500, CPU seconds of the
saddle solve and of the one-loop solve (compile included, then two more calls) and of ``summarize`` (the
one-loop observables' moments included; first and second call). references: the exact Gibbs references of
``tests/test_one_loop.py`` (its two-layer net, d = 4, N = 30, gamma = 1.5, and its 3-hidden-layer net, d = 2, N = 20,
gamma = 2; 4 chains x 20000 draws), written to ``tests/data/one_loop_gibbs.json``: compiling the Gibbs sampler for
these two nets took ~14 s of the test file's CPU time, drawing 20000 samples takes seconds here.
"""

import json
import sys
import time

import adaptive_kernels as ak  # first (thread pools)

import jax
import numpy as np

from adaptive_kernels.sampling import sample_posterior

KAPPA2 = 1e-2


def gibbs(arch, data, chains, samples, seed=1):
    return sample_posterior(arch, data, KAPPA2, method="gibbs", num_chains=chains, num_samples=samples,
                            num_warmup=samples // 5, key=jax.random.PRNGKey(seed))


def theory(arch, data, loops, **opts):
    sol = ak.solve(arch, data, KAPPA2, "adaptive", loops=loops, **opts)
    return ak.summarize(sol, arch, data, KAPPA2)


def pct(a, b):
    return f"{100 * (a - b) / b:+.2f}%"


def two_layer():
    print("| gamma | Gibbs ratio | saddle | one loop | Gibbs learnability | saddle | one loop |")
    print("|---|---|---|---|---|---|---|")
    data = ak.teacher_dataset(jax.random.PRNGKey(0), 60, 40, P_test=200)
    for gamma in (1.0, 1.5, 2.0):
        arch = ak.FCN(40, 300, "linear", gamma=gamma)
        est = gibbs(arch, data, 4, 2000)
        r, rse = float(est.eigenvalue_ratio[0].mean), float(est.eigenvalue_ratio[0].se)
        L, Lse = float(est.learnability.mean), float(est.learnability.se)
        s0, s1 = theory(arch, data, 0), theory(arch, data, 1)
        print(f"| {gamma} | {r:.4f} +- {rse:.4f} | {s0['eigenvalue_ratio'][0]:.4f} ({pct(s0['eigenvalue_ratio'][0], r)}) "
              f"| {s1['eigenvalue_ratio'][0]:.4f} ({pct(s1['eigenvalue_ratio'][0], r)}) | {L:.5f} +- {Lse:.5f} "
              f"| {s0['learnability']:.5f} ({s0['learnability'] - L:+.5f}) | {s1['learnability']:.5f} "
              f"({s1['learnability'] - L:+.5f}) |", flush=True)


def scan():
    sys.path.insert(0, "tests")
    from test_one_loop import exact_two_layer_d2  # the exact posterior of the 2 x 2 Sigma (3-D quadrature)

    data = ak.teacher_dataset(jax.random.PRNGKey(0), 8, 2, P_test=50)
    widths, err = [20, 40, 80, 160, 320, 640], {0: [], 1: []}
    print("| N | kappa2 | exact ratio | Gibbs ratio | saddle error | one-loop error | exact learnability | Gibbs | "
          "saddle error | one-loop error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for N in widths:
        kappa2 = 0.5 / N
        arch = ak.FCN(2, N, "linear", gamma=2.0)
        Sigma, f = exact_two_layer_d2(data, N, 2.0, kappa2)
        r, L = float(ak.eigenvalue_ratio(Sigma, data.w_star)), float(ak.learnability(f, data.y_test))
        est = sample_posterior(arch, data, kappa2, method="gibbs", num_chains=4, num_samples=4000, num_warmup=800,
                               key=jax.random.PRNGKey(1))
        s = [ak.summarize(ak.solve(arch, data, kappa2, "adaptive", loops=k), arch, data, kappa2) for k in (0, 1)]
        e = [(x["eigenvalue_ratio"][0] / r - 1, x["learnability"] - L) for x in s]
        for k in (0, 1):
            err[k].append(np.abs(e[k]))
        print(f"| {N} | {kappa2:.4g} | {r:.5f} | {float(est.eigenvalue_ratio[0].mean):.4f} +- "
              f"{float(est.eigenvalue_ratio[0].se):.4f} | {e[0][0]:+.2e} | {e[1][0]:+.2e} | {L:.6f} | "
              f"{float(est.learnability.mean):.5f} +- {float(est.learnability.se):.5f} | {e[0][1]:+.2e} | "
              f"{e[1][1]:+.2e} |", flush=True)
    for k, name in ((0, "saddle"), (1, "one loop")):
        slopes = [np.polyfit(np.log(widths), np.log(np.array(err[k])[:, j]), 1)[0] for j in range(2)]
        print(f"\nslopes of log|error| in log N, {name}: ratio {slopes[0]:.2f}, learnability {slopes[1]:.2f}")


def deep():
    print("| hidden layers | gamma | d, N, P | quantity | Gibbs | saddle | one loop |")
    print("|---|---|---|---|---|---|---|")
    for L, gamma, (d, N, P) in ((2, 1.0, (3, 40, 6)), (2, 2.0, (3, 40, 6)), (3, 1.0, (3, 40, 6)), (3, 2.0, (3, 40, 6)),
                                (2, 2.0, (6, 30, 12))):
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, d, P_test=50)
        arch = ak.FCN(d, (N,) * L, "linear", gamma=gamma)
        est = gibbs(arch, data, 4, 3000)
        s0 = theory(arch, data, 0, form="weight")
        s1 = theory(arch, data, 1, form="weight")
        rows = [("Sigma_1 ratio", est.eigenvalue_ratio[0], s0["eigenvalue_ratio"][0], s1["eigenvalue_ratio"][0])]
        rows += [(f"kernel ratio {l + 1}", est.kernel_eigenvalue_ratio[l], s0["kernel_eigenvalue_ratio"][l],
                  s1["kernel_eigenvalue_ratio"][l]) for l in range(L)]
        rows.append(("learnability", est.learnability, s0["learnability"], s1["learnability"]))
        for name, e, a, b in rows:
            m, se = float(e.mean), float(e.se)
            print(f"| {L} | {gamma} | {d}, {N}, {P} | {name} | {m:.4f} +- {se:.4f} | {a:.4f} ({pct(a, m)}) | "
                  f"{b:.4f} ({pct(b, m)}) | converged {s1['converged']}", flush=True)


def speed():
    d, P = 50, 500
    data = ak.teacher_dataset(jax.random.PRNGKey(0), P, d, P_test=100)
    arch = ak.FCN(d, 1000, "linear", gamma=1.0)
    print("| theory | solve, first call (compile + run), CPU s | later calls | summarize, first call | later call | "
          "total, first calls | learnability | Newton iterations | converged |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = []
    for loops in (0, 1):
        times = []
        for _ in range(3):
            t = time.process_time()
            sol = ak.solve(arch, data, KAPPA2, "adaptive", loops=loops)
            jax.block_until_ready(sol.value)
            times.append(time.process_time() - t)
        for _ in range(2):
            t = time.process_time()
            summary = ak.summarize(sol, arch, data, KAPPA2)
            times.append(time.process_time() - t)
        totals.append(times[0] + times[3])
        print(f"| loops={loops} | {times[0]:.1f} | {times[1]:.3f}, {times[2]:.3f} | {times[3]:.1f} | {times[4]:.2f} | "
              f"{totals[-1]:.1f} | {summary['learnability']:.6f} | {int(sol.iterations)} | {bool(sol.converged)} |",
              flush=True)
    print(f"\nratio one loop / saddle (solve + summarize, first calls): {totals[1] / totals[0]:.2f}")


REFERENCES = {  # name: (data (P, d, P_test), widths, gamma), as in tests/test_one_loop.py
    "two_layer": ((10, 4, 50), 30, 1.5),
    "deep": ((6, 2, 20), (20, 20, 20), 2.0),
}


def references(path="tests/data/one_loop_gibbs.json", chains=4, samples=20000):
    out = {}
    for name, ((P, d, P_test), widths, gamma) in REFERENCES.items():
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, d, P_test=P_test)
        est = gibbs(ak.FCN(d, widths, "linear", gamma=gamma), data, chains, samples)
        summary = lambda stats: {k: [None if s is None else float(getattr(s, k)) for s in stats]  # noqa: E731
                                 for k in ("mean", "se")}
        out[name] = {"data": {"P": P, "d": d, "P_test": P_test, "key": 0}, "widths": widths, "gamma": gamma,
                     "kappa2": KAPPA2, "chains": chains, "samples": samples, "warmup": samples // 5,
                     "eigenvalue_ratio": summary(est.eigenvalue_ratio),
                     "kernel_eigenvalue_ratio": summary(est.kernel_eigenvalue_ratio),
                     "learnability": {"mean": float(est.learnability.mean), "se": float(est.learnability.se)}}
        print(name, out[name], flush=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    {"two_layer": two_layer, "scan": scan, "deep": deep, "speed": speed, "references": references}[sys.argv[1]]()
