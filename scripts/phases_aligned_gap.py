"""Is the K = 2 mixture the cause of the aligned branch's overstated alignment? (issue 17; docs/phases.md)

Cubic teacher, mean-field erf net (d = 6, N = 20, gamma = 2, kappa2 = 0.1, eps = 1, the first P = 120 points of the
seed-0 data set): the aligned minimum of the axis mixture with K = 2 components, then K = 3 (from the prior, the
aligned start and the K = 2 state with an extra empty pair), then the exact large-width measure
(``Adaptive(form="conjugate", measure="exact")``, THEORY.md sec. 9) started from the conjugates of the K = 2
state's second moment (``actions.exact.weight_form_conjugates``). Prints the second moment along w* (eigenvalue
ratio), the learnability and the action of each.

    python scripts/phases_aligned_gap.py --samples 20000
"""

from __future__ import annotations

import argparse
import time

import jax

import adaptive_kernels as ak
from adaptive_kernels.actions import exact, mixture


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--P", type=int, default=120)
    parser.add_argument("--N", type=int, default=20)
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    pool = ak.teacher_dataset(jax.random.PRNGKey(0), 120, 6, teacher="cubic", eps=1.0, P_test=2000)
    data = ak.Dataset(X=pool.X[:args.P], y=pool.y[:args.P], X_test=pool.X_test, y_test=pool.y_test,
                      w_star=pool.w_star)
    arch = ak.FCN(6, args.N, "erf", gamma=2.0)
    problem = ak.make_problem(arch, data, args.kappa2)

    def report(name, solution, start):
        s = ak.summarize(solution, arch, data, args.kappa2)
        print(f"{name}: ratio along w* {s['eigenvalue_ratio'][0]:.3f}, learnability {s['learnability']:.4f}, "
              f"action {float(solution.action):.2f}, status {solution.message} ({time.process_time() - start:.0f} s)",
              flush=True)

    results = {}
    for K in (2, 3):
        start = time.process_time()
        theory = ak.Adaptive(measure="mixture", components=K, along="axis", direction=pool.w_star)
        starts = {}
        if K == 3:  # the K = 2 aligned state plus a third pair at the prior carrying 10 % of the weight
            prior_pair = mixture.axis_initial(problem, 1)[1]
            starts["K=2 state + prior pair"] = mixture.with_component(results[2].value, prior_pair, 0.1)
        found = ak.stationary_points(arch, data, args.kappa2, theory, starts=starts)
        print(found.table().to_string())
        aligned = min(found.minima, key=lambda p: p.action)
        pi, m, s = mixture.components(aligned.value[1:])
        print(f"K={K}: weights {pi}, a m^2 {problem.prior_precision * m[:, 0] ** 2}")
        results[K] = aligned.solution
        report(f"mixture K={K}", aligned.solution, start)
    start = time.process_time()
    second = mixture.second_moment(problem, results[2].value, pool.w_star)
    theory = ak.Adaptive(form="conjugate", measure="exact", samples=args.samples, seed=0)
    for name, init in (("exact measure from the prior", None),
                       ("exact measure from the K=2 state", exact.weight_form_conjugates(problem, second))):
        solution = ak.solve(arch, data, args.kappa2, theory, init=init)
        report(name, solution, start)


if __name__ == "__main__":
    main()
