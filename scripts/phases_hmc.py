"""Check the phase structure of the adaptive kernel against HMC of finite networks (issue 17, docs/phases.md).

A two-layer erf net in mean-field scaling (gamma = 2) on the cubic teacher y = He1(z) + eps He3(z), at every
(P, N) of the grid ``--P`` x ``--N``: the stationary points of the Gaussian-ansatz action (``--theory mixture``: of
the Gaussian-mixture ansatz, ``actions.mixture``) from the prior and a teacher-aligned start (with ``--warm`` also
from the minima of the previous width, swept up the ``--N`` grid and the ``--warm`` widths: a branch followed from
where fixed starts find it), the lowest minimum marked; HMC chains of the finite network (readout integrated
out) start either from the prior, from weights whose variance along w* is ``--ratio`` times larger, and (mixture
ansatz) from weights drawn from the predicted state with the most aligned component (``predicted-aligned``).
Compared per start: the alignment (second moment of the first-layer weights along w* over the prior's,
a w*^T E[w w^T] w*, a = d / s_w2), the eigenvalue ratio of the first-layer weight covariance along w*, the
learnability and the He1 / He3 learnabilities of the mean test output, L_k = <f, He_k(z)> / <y, He_k(z)>.
``--along axis`` uses the axis form of the mixture along w* (``actions.mixture.AxisMixtureAction``: the paper's
cubic-teacher states; cheap).

The inputs are written in an orthonormal basis whose first axis is w* (a Householder reflection of the data set):
the first layer's prior is isotropic, so theory and posterior are the same up to that rotation, and the alignment
is the (0, 0) entry of E[W^T W]/N, whose batch-means standard error the sampler reports.

    python scripts/phases_hmc.py --d 6 --N 20 --kappa2 0.1 --eps 1 --P 30 120 --theory mixture --along axis

    python scripts/phases_hmc.py --d 6 --N 30 45 57 70 --kappa2 0.1 --eps 1 --P 120 --theory mixture --along axis \
        --warm 20 40 --out phases_hmc_N.csv

    python scripts/phases_hmc.py --P 60 100 140 --out phases_hmc.csv
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import pandas as pd

import adaptive_kernels as ak
from adaptive_kernels.actions import mixture
from adaptive_kernels.data import he3
from adaptive_kernels import phases
from adaptive_kernels.prediction import observables, predict_problem
from adaptive_kernels.sampling import HMC, sample_posterior
from adaptive_kernels.sampling.mcmc import start_chain


class MixtureStartHMC(HMC):
    """HMC whose chains start with the N first-layer weights drawn from a symmetrised Gaussian mixture (in the
    sampler's standardised coordinates w sqrt(a)): each neuron picks component k with probability pi_k and a sign,
    w = +-m_k + L_k z. A teacher-aligned Gaussian start is K = 1, m = 0, L L^T = I + (ratio - 1) v v^T; a predicted
    mixture state (``actions.mixture.full_components`` times sqrt(a)) starts the chains in that state."""

    pi: jnp.ndarray
    means: jnp.ndarray
    chol: jnp.ndarray

    def __init__(self, pi, means, covariances, **options):
        super().__init__(**options)
        self.pi, self.means = jnp.asarray(pi), jnp.asarray(means)
        self.chol = jnp.linalg.cholesky(jnp.asarray(covariances))

    @classmethod
    def aligned(cls, direction, ratio, **options):
        v = jnp.asarray(direction) / jnp.linalg.norm(direction)
        cov = jnp.eye(v.size) + (ratio - 1) * jnp.outer(v, v)
        return cls(jnp.ones(1), jnp.zeros((1, v.size)), cov[None], **options)

    def init(self, posterior, key):
        value_and_grad, _, dim = self.potential_and_unravel(posterior)
        d = self.means.shape[1]
        kc, ks, kz = jax.random.split(key, 3)
        comp = jax.random.categorical(kc, jnp.log(self.pi), shape=(dim // d,))
        sign = jax.random.rademacher(ks, (dim // d,), posterior.X.dtype)
        z = jax.random.normal(kz, (dim // d, d), posterior.X.dtype)
        Z = sign[:, None] * self.means[comp] + jnp.einsum("nij,nj->ni", self.chol[comp], z)
        return start_chain(value_and_grad, Z.ravel(), self.initial_step_size)


def along_first_axis(pool):
    """The data set in an orthonormal basis whose first axis is w* (the Householder reflection H = I - 2 u u^T,
    u = (w* - e_1)/|w* - e_1|, |w*| = 1, maps w* to e_1): inputs x -> H x, w* -> e_1."""
    w = pool.w_star / jnp.linalg.norm(pool.w_star)
    u = w - jnp.eye(w.size, dtype=w.dtype)[0]
    H = jnp.eye(w.size, dtype=w.dtype) - 2 * jnp.outer(u, u) / (u @ u)
    return ak.Dataset(X=pool.X @ H, y=pool.y, X_test=pool.X_test @ H, y_test=pool.y_test, w_star=H @ w)


def theory_minima(args, theory, problem_at, w_star):
    """{N: PhaseStructure} at every width of ``--N``: solved from the prior and aligned x``--ratio``; with ``--warm``
    also from the minima found at the previous width of a sweep up ``--N`` and the ``--warm`` widths (one problem,
    its width set by ``phases.set_parameter``: one compilation)."""
    solver = ak.QuasiNewton(method="bfgs", max_steps=3000)
    found, previous = {}, {}
    for N in sorted(set(args.N) | set(args.warm or ())):
        problem = problem_at(N)
        starts = phases.default_starts(problem, theory, w_star, (args.ratio,)) | previous
        found[N] = phases.find_stationary_points(theory, problem, starts, solver)
        previous = {f"N={N} #{j}": p.value for j, p in enumerate(found[N].minima)} if args.warm is not None else {}
        print(f"theory N = {N}:\n{found[N].table().to_string()}", flush=True)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--N", type=int, nargs="+", default=[50], help="hidden widths (at every P)")
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--eps", type=float, default=3.0)
    parser.add_argument("--P", type=int, nargs="+", default=[60, 100, 140])
    parser.add_argument("--ratio", type=float, default=30.0)
    parser.add_argument("--warm", type=int, nargs="*",
                        help="theory: also start from the minima of the previous width, up the --N grid and these "
                        "widths (solved, not sampled)")
    parser.add_argument("--chains", type=int, default=4, help="per start; 0: the theory only")
    parser.add_argument("--starts", nargs="+", choices=("prior", "aligned", "predicted-aligned"),
                        help="sample from these starts only (default: all)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--theory", choices=("gaussian", "mixture"), default="gaussian",
                        help="the single-neuron ansatz: Gaussian, or the Gaussian mixture (actions.mixture)")
    parser.add_argument("--components", type=int, default=2, help="mixture components K")
    parser.add_argument("--mixture-samples", type=int, default=1024, help="draws of the mixture's entropy correction")
    parser.add_argument("--along", choices=("free", "axis"), default="free", help="the mixture's form")
    parser.add_argument("--s-a2", type=float, default=1.0, help="readout variance s_a2")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    pool = along_first_axis(ak.teacher_dataset(jax.random.PRNGKey(0), max(args.P), args.d, teacher="cubic",
                                               eps=args.eps, P_test=1000))
    z = pool.X_test @ pool.w_star

    def hermite(f):
        """L1, L3 of the mean test output f."""
        return {"L1": float(jnp.mean(f * z) / jnp.mean(z**2)),
                "L3": float(jnp.mean(f * he3(z)) / (args.eps * jnp.mean(he3(z) ** 2)))}

    def arch(N):
        return ak.FCN(args.d, N, "erf", gamma=2.0, s_a2=args.s_a2)

    rows = []
    for P in args.P:
        data = ak.Dataset(X=pool.X[:P], y=pool.y[:P], X_test=pool.X_test, y_test=pool.y_test, w_star=pool.w_star)
        extra = dict(components=args.components, samples=args.mixture_samples, along=args.along,
                     direction=pool.w_star if args.along == "axis" else None)
        theory = ak.Adaptive(measure=args.theory, **(extra if args.theory == "mixture" else {}))
        base = ak.make_problem(arch(args.N[0]), data, args.kappa2)
        theory.check(base)

        def problem_at(N):
            return phases.set_parameter(base, "N", N)

        found = theory_minima(args, theory, problem_at, pool.w_star)
        for N in args.N:
            problem = problem_at(N)
            a = problem.prior_precision

            def displaced(point):
                """The mixture's most displaced pair along w*: its a (m_k . w*)^2 and weight pi_k."""
                pi, m, _ = mixture.full_components(problem, point.value, pool.w_star)
                am2 = a * (m @ pool.w_star) ** 2
                return {"am2": float(jnp.max(am2)), "pair_weight": float(pi[jnp.argmax(am2)])}

            for point in found[N].points:
                prediction = predict_problem(point.solution, problem, pool.X_test)
                s = observables(point.solution, problem, prediction, pool.y_test, pool.w_star)
                rows.append({"P": P, "N": N, "source": f"{args.theory}:" + "+".join(point.starts), "kind": point.kind,
                             "posterior": point.posterior, "action": point.action,
                             "alignment": float(a * theory.input_covariances(point.value, problem)[0][0, 0]),
                             "eigenvalue_ratio": s["eigenvalue_ratio"][0], "learnability": s["learnability"],
                             **hermite(prediction.mean_test),
                             **(displaced(point) if args.theory == "mixture" else {})})
            starts = {"prior": HMC(), "aligned": MixtureStartHMC.aligned(pool.w_star, args.ratio)}
            if args.theory == "mixture":  # also from the predicted state with the most aligned pair, if any
                best = max(found[N].points, key=lambda point: displaced(point)["am2"])
                pi, m, Sigma = mixture.full_components(problem, best.value, pool.w_star)
                if displaced(best)["am2"] > 5:
                    starts["predicted-aligned"] = MixtureStartHMC(pi, m * a**0.5, Sigma * a)
            for label, sampler in starts.items():
                if not args.chains or label not in (args.starts or starts):
                    continue
                est = sample_posterior(arch(N), data, args.kappa2, method=sampler, num_chains=args.chains,
                                       num_samples=args.samples, num_warmup=args.warmup, key=P + 1000 * N)
                C = est.weight_covariance[0]
                rows.append({"P": P, "N": N, "source": f"hmc:{label}",
                             "alignment": float(a * C.mean[0, 0]), "alignment_se": float(a * C.se[0, 0]),
                             "eigenvalue_ratio": float(est.eigenvalue_ratio[0].mean),
                             "eigenvalue_ratio_se": float(est.eigenvalue_ratio[0].se),
                             "learnability": float(est.learnability.mean),
                             "learnability_se": float(est.learnability.se),
                             "rhat": est.max_rhat, **hermite(est.mean_output_test.mean)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string())
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
