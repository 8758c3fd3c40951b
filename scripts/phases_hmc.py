"""Check the phase structure of the adaptive kernel against HMC of finite networks (issue 17, docs/phases.md).

A two-layer erf net in mean-field scaling (gamma = 2) on the cubic teacher y = He1(z) + eps He3(z), at every
(P, N) of the grid ``--P`` x ``--N``: the stationary points of the Gaussian-ansatz action (``--theory mixture``: of
the Gaussian-mixture ansatz, ``actions.mixture``) from the prior and a teacher-aligned start (with ``--warm`` also
from the minima of the previous width, swept up the ``--N`` grid and the ``--warm`` widths: a branch followed from
where fixed starts find it), the lowest minimum marked; HMC chains of the finite network (readout integrated
out) start either from the prior, from weights whose variance along w* is ``--ratio`` times larger, and (mixture
ansatz) from weights drawn from the predicted state with the most aligned component (``predicted-aligned``) and
from the lowest predicted non-aligned minimum (``predicted-nonaligned``; zero modes allowed): chains that start in the two states whose
persistence is the metastability question (``--trace``: their batch means in sampling order).
Compared per start: the alignment (second moment of the first-layer weights along w* over the prior's,
a w*^T E[w w^T] w*, a = d / s_w2), the eigenvalue ratio of the first-layer weight covariance along w*, the
learnability and the He1 / He3 learnabilities of the mean test output, L_k = <f, He_k(z)> / <y, He_k(z)>.
``--along axis`` uses the axis form of the mixture along w* (``actions.mixture.AxisMixtureAction``: the paper's
cubic-teacher states; cheap).

Single-neuron overlaps (what separates the mixture's displaced pair from its bulk, which second moments do not):
per draw, q_i = a (w_i . w*)^2 of each hidden neuron i (the prior's q is chi-square with one degree of freedom),
the fraction of neurons with q above each of ``--tail`` (columns ``tail_q<t>``, batch-means errors) and the
fractions in bins of sqrt(q) (``--hist-out``: rows P, N, source, lo, hi, fraction, se). The theory's values are
those of its single-neuron density along w*, sum_k pi_k N(u; +-m_k.w*, w*^T Sigma_k w*), u = w.w*: its
fraction with a u^2 > t, its bins, and for the mixture its most displaced pair (``am2``, ``pair_weight``).
``--plot FILE`` draws learnability, L3 and a tail fraction against P and the histograms per P from ``--out`` and
``--hist-out`` (written before, e.g. by one run per P; ``--combine`` lists several such CSVs).

Other orderings of one pool (``--pool n --order k``: the pool's n points permuted with seed k, the first P train;
the same points, targets and test set) separate a change of the state from a large target entering. ``--tempered``
solves the theory of every P on the pool's points with likelihood weights 1 / 0 (``phases.tempered_subset`` at
integer P) and pads the NNGP with zero inputs, so that one compilation serves a whole sweep; ``--theory none`` runs
the NNGP and HMC only; ``--follow --aligned-only`` follows the aligned minima and the lowest point down in P.
``--steps t`` prints, from ``--combine``'d CSVs, the steps P - 1 -> P of the sampled learnability, the NNGP's, their
difference E and of the fraction with q > t (docs/phases.md, "Other orderings").

The inputs are written in an orthonormal basis whose first axis is w* (a Householder reflection of the data set):
the first layer's prior is isotropic, so theory and posterior are the same up to that rotation, and the alignment
is the (0, 0) entry of E[W^T W]/N, whose batch-means standard error the sampler reports.

    python scripts/phases_hmc.py --d 6 --N 20 --kappa2 0.1 --eps 1 --P 30 120 --theory mixture --along axis

    python scripts/phases_hmc.py --d 6 --N 30 45 57 70 --kappa2 0.1 --eps 1 --P 120 --theory mixture --along axis \
        --warm 20 40 --out phases_hmc_N.csv

    python scripts/phases_hmc.py --P 60 100 140 --out phases_hmc.csv

    python scripts/phases_hmc.py --d 6 --N 20 --kappa2 0.1 --eps 1 --P 55 --theory mixture --along axis \
        --starts prior aligned --chains 2 --samples 1500 --out p55.csv --hist-out p55_hist.csv
    python scripts/phases_hmc.py --plot docs/phases_hmc_P.png --combine p*.csv --tail 10

    python scripts/phases_hmc.py --d 6 --N 20 --kappa2 0.1 --eps 1 --pool 120 --order 2 --P 60 57 54 51 50 49 48 \
        --tempered --follow --aligned-only --theory mixture --along axis --chains 0 --out th_o2.csv
    python scripts/phases_hmc.py --d 6 --N 20 --kappa2 0.1 --eps 1 --pool 120 --order 2 --P 51 --theory none --nngp \
        --starts prior aligned --chains 1 --samples 1000 --warmup 500 --tail 20 10 30 5 --out o2_p51.csv
    python scripts/phases_hmc.py --steps 10 --combine docs/phases_hmc_P_order2.csv
"""

from __future__ import annotations

import argparse

import glob

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.stats import norm

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


ALIGNED = 5.0  # a m^2 of the mixture's displaced pair above which a state counts as aligned
SQRT_Q_EDGES = np.append(np.arange(0.0, 10.01, 0.25), np.inf)  # bins of sqrt(q) = sqrt(a) |w . w*|
COLOURS = {  # the figures' colour per HMC start
    "hmc:prior": "C0", "hmc:aligned": "C3", "hmc:predicted-aligned": "C2", "hmc:predicted-nonaligned": "C1"}


def overlap_observables(w_star, a, thresholds):
    """``sample_posterior``'s ``observe``: per draw, of q_i = a (w_i . w*)^2 over the N first-layer neurons, the
    fraction above each threshold, the fraction in each bin of sqrt(q) (``SQRT_Q_EDGES``) and the mean of q (the
    alignment of that draw)."""
    lo, hi = SQRT_Q_EDGES[:-1], SQRT_Q_EDGES[1:]

    def observe(features):
        q = a * (features.weight_matrices()[0] @ w_star) ** 2
        root = jnp.sqrt(q)[:, None]
        return {**{f"tail_q{t:g}": jnp.mean(q > t) for t in thresholds},
                "hist": jnp.mean((root >= lo) & (root < hi), axis=0), "mean_q": jnp.mean(q)}

    return observe


def density_along(is_mixture, theory, problem, value, w_star):
    """The theory's single-neuron density of u = w . w* (|w*| = 1): weights, means and variances of its Gaussian
    components (mixture: ``full_components``; Gaussian ansatz: one centred Gaussian of the first-layer covariance)."""
    if is_mixture:
        pi, m, Sigma = mixture.full_components(problem, value, w_star)
    else:
        Sigma = theory.input_covariances(value, problem)[0][None]
        pi, m = jnp.ones(1), jnp.zeros((1, w_star.size))
    return pi, m @ w_star, jnp.einsum("i,kij,j->k", w_star, Sigma, w_star)


def predicted_overlaps(pi, mu, var, a, thresholds):
    """Of q = a u^2 under sum_k pi_k N(u; mu_k, var_k): the fraction above each threshold and in each sqrt(q) bin."""
    sd = jnp.sqrt(var)

    def inside(r):  # P(|u| < r / sqrt(a))
        c = r / jnp.sqrt(a)
        return jnp.sum(pi * (norm.cdf((c - mu) / sd) - norm.cdf((-c - mu) / sd)))

    tails = {f"tail_q{t:g}": float(1 - inside(jnp.sqrt(t))) for t in thresholds}
    cdf = np.array([float(inside(r)) if np.isfinite(r) else 1.0 for r in SQRT_Q_EDGES])
    return tails, np.diff(cdf)


def displaced_pair(problem, value, w_star):
    """The mixture's most displaced pair along w*: its a (m_k . w*)^2 and weight pi_k."""
    pi, m, _ = mixture.full_components(problem, value, w_star)
    am2 = problem.prior_precision * (m @ w_star) ** 2
    return {"am2": float(jnp.max(am2)), "pair_weight": float(pi[jnp.argmax(am2)])}


def theory_minima(args, theory, problem_at, w_star, carried):
    """{N: PhaseStructure} at every width of ``--N``: solved from the prior and aligned x``--ratio``, and from the
    states in ``carried[N]`` ({label: value}: ``--follow``'s minima of the previous P); with ``--warm`` also from the
    minima found at the previous width of a sweep up ``--N`` and the ``--warm`` widths (one problem, its width set by
    ``phases.set_parameter``: one compilation)."""
    solver = ak.QuasiNewton(method="bfgs", max_steps=3000)
    found, previous = {}, {}
    for N in sorted(set(args.N) | set(args.warm or ())):
        problem = problem_at(N)
        fixed = {} if args.aligned_only and carried.get(N) else phases.default_starts(problem, theory, w_star,
                                                                                     tuple(args.ratio))
        starts = fixed | previous | carried.get(N, {})
        found[N] = phases.find_stationary_points(theory, problem, starts, solver)
        previous = {f"N={N} #{j}": p.value for j, p in enumerate(found[N].minima)} if args.warm is not None else {}
        print(f"theory N = {N}:\n{found[N].table().to_string()}", flush=True)
    return found


def combined(patterns):
    """The rows of the CSVs matching ``patterns`` (histogram files ``*_hist.csv`` left out), sorted by P."""
    files = sorted({f for pattern in patterns for f in glob.glob(pattern) if not f.endswith("_hist.csv")})
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True).sort_values("P")


def steps(table, threshold):
    """The steps P - 1 -> P between consecutive P of the pooled HMC rows (sources ``hmc:*``, no ``chain``): the
    sampled learnability (mean over the starts), the NNGP's (``nngp`` rows), E = their difference, and the sampled
    fraction with q > ``threshold``. Error of a value: the larger of half the starts' errors in quadrature,
    sqrt(sum se^2) / n_starts, and half the spread of the starts (max - min) / 2 (a start whose chain holds one state
    counts as the spread); of a step: the two values' errors in quadrature."""
    hmc = table[table.source.str.startswith("hmc:") & table.get("chain", pd.Series(np.nan, table.index)).isna()]
    nngp = table[table.source == "nngp"].drop_duplicates("P").set_index("P").learnability
    tail = f"tail_q{threshold:g}"

    def value(rows, column):
        x, se = rows[column].to_numpy(), rows[column + "_se"].to_numpy()
        return x.mean(), max(np.sqrt(np.sum(se**2)) / len(x), (x.max() - x.min()) / 2)

    at = {P: {c: value(rows, c) for c in ("learnability", tail)} for P, rows in hmc.groupby("P")}
    out = []
    for P in sorted(at):
        if P - 1 not in at:
            continue
        (l1, e1), (l0, e0) = at[P]["learnability"], at[P - 1]["learnability"]
        (f1, g1), (f0, g0) = at[P][tail], at[P - 1][tail]
        dn = nngp.get(P, np.nan) - nngp.get(P - 1, np.nan)
        se = np.hypot(e1, e0)
        out.append({"P": int(P), "learnability": l1, "step": l1 - l0, "step_se": se, "nngp_step": dn,
                    "E": l1 - l0 - dn, "E/se": (l1 - l0 - dn) / se, f"q>{threshold:g}": f1,
                    "fraction_step": f1 - f0, "fraction_step_se": np.hypot(g1, g0)})
    return pd.DataFrame(out)


def plot(args):
    """Two figures from the --combine'd CSVs: ``--plot`` the learnability, L3 and the fraction with q > ``--tail[0]``
    against P (HMC per start with 2 standard errors, single chains of ``--per-chain`` runs as crosses; the theory's
    lowest minimum as a line, its other minima as dots, the mixture's pair weight where its a m^2 > 5 as triangles,
    the NNGP dash-dotted); ``<plot>_hist.<ext>`` the sqrt(q) histograms per P (HMC per start,
    the theory's lowest minimum; the prior's chi-square(1) dotted)."""
    import matplotlib.pyplot as plt
    from scipy.stats import chi2

    files = sorted({f for pattern in args.combine for f in glob.glob(pattern) if not f.endswith("_hist.csv")})
    table = combined(args.combine)
    hist_files = [f[:-4] + "_hist.csv" for f in files if glob.glob(f[:-4] + "_hist.csv")]
    hist = pd.concat([pd.read_csv(f) for f in hist_files], ignore_index=True) if hist_files else None
    if "chain" not in table:
        table["chain"] = np.nan
    if hist is not None:  # the histograms of the pooled runs
        hist = hist[hist["chain"].isna()] if "chain" in hist else hist
    tail = f"tail_q{args.tail[0]:g}"
    theory = table[table.source.str.startswith(("mixture:", "gaussian:")) & (table.kind != "saddle")]
    lowest = theory[theory.posterior.astype(bool)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, column, label in zip(axes, ("learnability", "L3", tail),
                                 ("learnability", "L3 (He3 learnability)",
                                  f"fraction of neurons, a (w.w*)^2 > {args.tail[0]:g}")):
        for source, colour in COLOURS.items():
            rows = table[(table.source == source) & table.chain.isna()]
            if len(rows):
                se = rows.get(column + "_se")
                ax.errorbar(rows.P, rows[column], yerr=None if se is None else 2 * se, color=colour, marker="o",
                            ms=3, capsize=2, label=source.replace("hmc:", "HMC from "))
            single = table[(table.source == source) & table.chain.notna()]
            if len(single):
                ax.plot(single.P + (0.6 if "aligned" in source else -0.6), single[column], "x", color=colour, ms=4,
                        label=source.replace("hmc:", "one chain from "))
        nngp = table[table.source == "nngp"]
        if len(nngp):
            ax.plot(nngp.P, nngp[column], color="grey", ls="-.", lw=1, label="NNGP (no feature learning)")
        ax.plot(lowest.P, lowest[column], "k-", lw=1, label="theory, lowest minimum")
        ax.plot(theory.P, theory[column], "k.", ms=4, label="theory, minima found (incl. degenerate)")
        if column == tail and "pair_weight" in lowest:
            paired = lowest[lowest.am2 > 5]
            ax.plot(paired.P, paired.pair_weight, "k^", mfc="none", ms=5, label="theory, pair weight (a m^2 > 5)")
        ax.set_xlabel("P")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    if hist is None:
        return
    Ps = sorted(hist.P.unique())
    cols = 4
    nrows = (len(Ps) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), sharex=True, sharey=True, squeeze=False)
    edges = SQRT_Q_EDGES[:-1]
    prior = np.diff(chi2.cdf(np.append(edges, np.inf) ** 2, 1))
    for ax, P in zip(axes.flat, Ps):
        at = hist[hist.P == P]
        for source, colour in COLOURS.items():
            rows = at[at.source == source]
            if len(rows):
                ax.step(edges, rows.fraction.clip(lower=1e-5), where="post", color=colour, lw=1,
                        label=source.replace("hmc:", "HMC from "))
        post = lowest[lowest.P == P].source
        rows = at[at.source == post.iloc[0]].drop_duplicates("lo") if len(post) else at.iloc[:0]
        if len(rows):  # the theory's histogram, where its run wrote one
            ax.step(edges, rows.fraction.clip(lower=1e-5), where="post", color="k", lw=1, label="theory, lowest")
        ax.step(edges, prior.clip(1e-5), where="post", color="grey", ls=":", lw=1, label="prior")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 0.3)
        ax.set_title(f"P = {P}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("sqrt(a) |w . w*| (bins of 0.25; last: > 10)")
    for ax in axes.flat[len(Ps):]:
        ax.axis("off")
    max(axes.flat, key=lambda ax: len(ax.get_lines())).legend(fontsize=6)
    fig.tight_layout()
    stem, ext = args.plot.rsplit(".", 1)
    fig.savefig(f"{stem}_hist.{ext}", dpi=120)


def plot_trace(args):
    """``--plot-trace``: from the --combine'd ``--trace`` CSVs (``X_trace.csv``, with ``X_hist.csv`` where it exists),
    per width N one column: on top every chain's number of neurons with q > ``--tail[0]`` against the draws after
    warmup (batch means; coloured by start), below the sqrt(q) histograms of those chains and of the theory's minima
    found by that run (black: the lowest, grey dashed: the others), in neurons per bin."""
    import matplotlib.pyplot as plt

    files = sorted({f for pattern in args.combine for f in glob.glob(pattern)})
    trace = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    hist_files = [f.replace("_trace.csv", "_hist.csv") for f in files]
    hist = pd.concat([pd.read_csv(f) for f in hist_files if glob.glob(f)], ignore_index=True)
    rows = combined([f.replace("_trace.csv", ".csv") for f in files])
    minima = rows[rows.get("kind", pd.Series(dtype=str)) == "minimum"]
    kind = {(P, N, source): "lowest" if posterior else "higher"
            for P, N, source, posterior in minima[["P", "N", "source", "posterior"]].itertuples(index=False)}
    tail = f"tail_q{args.tail[0]:g}"
    Ns = sorted(trace.N.unique())
    fig, axes = plt.subplots(2, len(Ns), figsize=(4.4 * len(Ns), 6.4), squeeze=False)
    for (top, bottom), N in zip(axes.T, Ns):
        labelled = set()
        for (source, chain), rows in trace[trace.N == N].groupby(["source", "chain"], sort=False):
            top.step(rows.draws, rows[tail] * N, where="pre", color=COLOURS[source], lw=1,
                     label=None if source in labelled else source.replace("hmc:", "HMC from "))
            labelled.add(source)
        top.set_title(f"N = {N}, P = {int(trace[trace.N == N].P.iloc[0])}", fontsize=9)
        top.set_xlabel("draws after warmup")
        top.set_ylabel(f"neurons with a (w.w*)^2 > {args.tail[0]:g}")
        at = hist[hist.N == N]
        edges = SQRT_Q_EDGES[:-1]
        for (source, chain), rows in at[at.source.str.startswith("hmc:")].groupby(["source", "chain"], sort=False):
            bottom.step(edges, (rows.fraction * N).clip(lower=1e-3), where="post", color=COLOURS[source], lw=1)
        for (P, source), rows in at[~at.source.str.startswith("hmc:")].groupby(["P", "source"], sort=False):
            found = kind.get((P, N, source))
            if found:  # the theory's minima (not its saddles or degenerate points)
                bottom.step(edges, (rows.fraction * N).clip(lower=1e-3), where="post", lw=1,
                            label=f"theory, {found} minimum (start {source.split(':', 1)[1]})",
                            **({"color": "k"} if found == "lowest" else {"color": "grey", "ls": "--"}))
        bottom.set_yscale("log")
        bottom.set_ylim(1e-2, N)
        bottom.set_xlabel("sqrt(a) |w . w*| (bins of 0.25; last: > 10)")
        bottom.set_ylabel("neurons per bin")
        top.legend(fontsize=7)
        if bottom.get_legend_handles_labels()[0]:  # the theory's minima, where that run solved any
            bottom.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.plot_trace, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--N", type=int, nargs="+", default=[50], help="hidden widths (at every P)")
    parser.add_argument("--kappa2", type=float, default=0.1)
    parser.add_argument("--eps", type=float, default=3.0)
    parser.add_argument("--P", type=int, nargs="+", default=[60, 100, 140])
    parser.add_argument("--pool", type=int, default=None,
                        help="points in the pool whose first P train (default: the largest --P); the same --pool "
                        "for every run of one data set when --order is given")
    parser.add_argument("--order", type=int, default=None,
                        help="permute the pool with this seed: the same points and test set, entering in another order")
    parser.add_argument("--tempered", action="store_true",
                        help="theory: solve on the pool's points with likelihood weights 1 for the first P "
                        "and 0 for the rest (phases.tempered_subset at integer P: the same action up to the constant "
                        "removed from the column 'action'), so that one compilation serves every P of a sweep")
    parser.add_argument("--ratio", type=float, nargs="+", default=[30.0],
                        help="theory: aligned starts with these ratios; HMC: the 'aligned' start with the first")
    parser.add_argument("--seed", type=int, default=0, help="the data set's seed")
    parser.add_argument("--warm", type=int, nargs="*",
                        help="theory: also start from the minima of the previous width, up the --N grid and these "
                        "widths (solved, not sampled)")
    parser.add_argument("--follow", action="store_true",
                        help="theory: also start from the minima (and degenerate minima) found at the previous P of "
                        "the --P list, in the order given (a sweep in P: fixed starts miss branches there)")
    parser.add_argument("--aligned-only", action="store_true",
                        help="with --follow (mixture): carry only the aligned minima (displaced pair a m^2 > 5) and "
                        "the lowest minimum to the next P and solve from them alone (the fixed starts only where "
                        "nothing is carried): a cheap sweep in P along the aligned branches to their lower ends "
                        "(folds) and along the lowest state (where the two cross)")
    parser.add_argument("--chains", type=int, default=4, help="per start; 0: the theory only")
    parser.add_argument("--starts", nargs="+",
                        choices=("prior", "aligned", "predicted-aligned", "predicted-nonaligned"),
                        help="sample from these starts only (default: all)")
    parser.add_argument("--nngp", action="store_true",
                        help="also a row per (P, N) of the NNGP (the lazy kernel, no feature learning): what the "
                        "data points alone do to the learnability")
    parser.add_argument("--per-chain", action="store_true",
                        help="sample each chain of a start on its own (rows per chain, column 'chain'): which chains "
                        "sit in which state")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20, help="batches per chain (standard errors; --trace's "
                        "resolution)")
    parser.add_argument("--trace", default=None, help="CSV of every chain's batch means in sampling order (alignment "
                        "and tail fractions per batch; rewritten after every P): whether a chain stays in one state")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--theory", choices=("gaussian", "mixture", "none"), default="gaussian",
                        help="the single-neuron ansatz: Gaussian, or the Gaussian mixture (actions.mixture); none: "
                        "no theory (e.g. the NNGP and HMC only)")
    parser.add_argument("--components", type=int, default=2, help="mixture components K")
    parser.add_argument("--mixture-samples", type=int, default=1024, help="draws of the mixture's entropy correction")
    parser.add_argument("--along", choices=("free", "axis"), default="free", help="the mixture's form")
    parser.add_argument("--s-a2", type=float, default=1.0, help="readout variance s_a2")
    parser.add_argument("--tail", type=float, nargs="+", default=[5.0, 10.0, 20.0],
                        help="thresholds t of the fraction of neurons with a (w.w*)^2 > t")
    parser.add_argument("--out", default=None, help="CSV of the rows (rewritten after every P)")
    parser.add_argument("--hist-out", default=None, help="CSV of the sqrt(q) histograms (rewritten after every P)")
    parser.add_argument("--plot", default=None, help="draw the figure from --combine'd CSVs into this file; no run")
    parser.add_argument("--plot-trace", default=None, help="draw the chains' traces and histograms per N from "
                        "--combine'd --trace CSVs into this file; no run")
    parser.add_argument("--steps", type=float, default=None,
                        help="no run: print the table of the steps P - 1 -> P (of --combine'd CSVs) of the sampled "
                        "learnability, the NNGP's, their difference and the fraction of neurons with q above this "
                        "threshold (e.g. 10)")
    parser.add_argument("--combine", nargs="+", default=(), help="with --plot or --steps: row CSVs (glob patterns); each "
                        "'X.csv' is read with its histograms 'X_hist.csv' where that exists")
    args = parser.parse_args(argv)
    if args.steps:
        return print(steps(combined(args.combine), args.steps).round(4).to_string(index=False))
    if args.plot:
        return plot(args)
    if args.plot_trace:
        return plot_trace(args)

    pool = along_first_axis(ak.teacher_dataset(jax.random.PRNGKey(args.seed), args.pool or max(args.P), args.d,
                                               teacher="cubic", eps=args.eps, P_test=1000))
    if args.order is not None:  # the same points entering in another order (nested subsets of the permuted pool)
        order = jax.random.permutation(jax.random.PRNGKey(args.order), pool.P)
        pool = ak.Dataset(X=pool.X[order], y=pool.y[order], X_test=pool.X_test, y_test=pool.y_test,
                          w_star=pool.w_star)
    if max(args.P) > pool.P:
        parser.error(f"--P up to {max(args.P)} needs --pool >= {max(args.P)}")
    z = pool.X_test @ pool.w_star

    def hermite(f):
        """L1, L3 of the mean test output f."""
        return {"L1": float(jnp.mean(f * z) / jnp.mean(z**2)),
                "L3": float(jnp.mean(f * he3(z)) / (args.eps * jnp.mean(he3(z) ** 2)))}

    def arch(N):
        return ak.FCN(args.d, N, "erf", gamma=2.0, s_a2=args.s_a2)

    rows, hists, traces = [], [], []

    def trace_rows(P, N, source, chain, est):
        """One row per chain and batch: the batch's mean alignment and tail fractions, in sampling order."""
        per_batch = -(-args.samples // est.observed_trace["mean_q"].shape[1])
        for c, series in enumerate(est.observed_trace["mean_q"]):
            for b, alignment in enumerate(series):
                traces.append({"P": P, "N": N, "source": source, "chain": c if chain is None else chain, "batch": b,
                               "draws": (b + 1) * per_batch, "alignment": float(alignment),
                               **{f"tail_q{t:g}": float(est.observed_trace[f"tail_q{t:g}"][c, b]) for t in args.tail}})

    def histogram_rows(P, N, source, fractions, se=None, chain=None):
        for j, (lo, hi) in enumerate(zip(SQRT_Q_EDGES[:-1], SQRT_Q_EDGES[1:])):
            hists.append({"P": P, "N": N, "source": source, "chain": chain, "lo": lo, "hi": hi,
                          "fraction": float(fractions[j]), "se": None if se is None else float(se[j])})

    carried = {}
    for P in args.P:
        data = ak.Dataset(X=pool.X[:P], y=pool.y[:P], X_test=pool.X_test, y_test=pool.y_test, w_star=pool.w_star)
        extra = dict(components=args.components, samples=args.mixture_samples, along=args.along,
                     direction=pool.w_star if args.along == "axis" else None)
        theory = None if args.theory == "none" else ak.Adaptive(measure=args.theory,
                                                                **(extra if args.theory == "mixture" else {}))
        if args.tempered and P < pool.P:  # the first P of the pool's points at weight 1: one shape for every P
            n = pool.P
            full = ak.Dataset(X=pool.X[:n], y=pool.y[:n], X_test=pool.X_test, y_test=pool.y_test, w_star=pool.w_star)
            base = phases.tempered_subset(ak.make_problem(arch(args.N[0]), full, args.kappa2), float(P))
            offset = 0.5 * float(jnp.log(base.kappa2)) * (n - P)  # the (n - P) points at weight 0
        else:
            base, offset = ak.make_problem(arch(args.N[0]), data, args.kappa2), 0.0
        if theory is not None:
            theory.check(base)

        def problem_at(N):
            return phases.set_parameter(base, "N", N)

        found = (theory_minima(args, theory, problem_at, pool.w_star, carried) if theory is not None
                 else {N: phases.PhaseStructure((), {}) for N in args.N})
        if args.follow:
            carried = {N: {f"P={P} #{j}": p.value for j, p in enumerate(found[N].points)
                           if p.kind in ("minimum", "degenerate")
                           and (not args.aligned_only or p is found[N].posterior
                                or displaced_pair(problem_at(N), p.value, pool.w_star)["am2"] > ALIGNED)}
                       for N in args.N}
        for N in args.N:
            problem = problem_at(N)
            a = problem.prior_precision

            def displaced(point):
                return displaced_pair(problem, point.value, pool.w_star)

            for point in found[N].points:
                prediction = predict_problem(point.solution, problem, pool.X_test)
                s = observables(point.solution, problem, prediction, pool.y_test, pool.w_star)
                tails, fractions = predicted_overlaps(
                    *density_along(args.theory == "mixture", theory, problem, point.value, pool.w_star), a, args.tail)
                source = f"{args.theory}:" + "+".join(point.starts)
                rows.append({"P": P, "N": N, "source": source, "kind": point.kind,
                             "posterior": point.posterior, "action": point.action - offset,
                             "alignment": float(a * theory.input_covariances(point.value, problem)[0][0, 0]),
                             "eigenvalue_ratio": s["eigenvalue_ratio"][0], "learnability": s["learnability"],
                             **hermite(prediction.mean_test), **tails,
                             **(displaced(point) if args.theory == "mixture" else {})})
                histogram_rows(P, N, source, fractions)
            starts = {"prior": HMC(), "aligned": MixtureStartHMC.aligned(pool.w_star, args.ratio[0])}
            if args.theory == "mixture" and found[N].points:
                # also from the predicted state with the most aligned pair, and from the lowest non-aligned minimum
                def predicted(point):
                    pi, m, Sigma = mixture.full_components(problem, point.value, pool.w_star)
                    return MixtureStartHMC(pi, m * a**0.5, Sigma * a)

                best = max(found[N].points, key=lambda point: displaced(point)["am2"])
                if displaced(best)["am2"] > ALIGNED:
                    starts["predicted-aligned"] = predicted(best)
                nonaligned = [p for p in found[N].points  # minima up to zero modes, as the posterior's rule
                              if p.is_minimum(zero_modes=True) and displaced(p)["am2"] <= ALIGNED]
                if nonaligned:
                    starts["predicted-nonaligned"] = predicted(min(nonaligned, key=lambda point: point.action))
            if args.nngp:  # its first-layer weights are the prior's: q is chi-square(1)
                # with --tempered padded to the pool's size by zero inputs with zero targets, which a bias-free erf
                # kernel leaves out exactly (K(0, x) = 0: rows kappa2 I, weight 0): one shape for every P
                lazy = data if not args.tempered else ak.Dataset(
                    X=jnp.zeros((pool.P, args.d), pool.X.dtype).at[:P].set(data.X),
                    y=jnp.zeros(pool.P, pool.y.dtype).at[:P].set(data.y),
                    X_test=pool.X_test, y_test=pool.y_test, w_star=pool.w_star)
                nngp = ak.solve(arch(N), lazy, args.kappa2, ak.NNGP())
                prediction = ak.predict(nngp, arch(N), lazy, args.kappa2, pool.X_test)
                rows.append({"P": P, "N": N, "source": "nngp", "alignment": 1.0,
                             "learnability": ak.summarize(nngp, arch(N), lazy, args.kappa2, prediction)["learnability"],
                             **hermite(prediction.mean_test),
                             **{f"tail_q{t:g}": float(jax.scipy.special.erfc(jnp.sqrt(t / 2))) for t in args.tail}})
            observe = overlap_observables(pool.w_star, a, args.tail)  # one function: the per-chain runs share a compile
            for label, sampler in starts.items():
                if not args.chains or label not in (args.starts or starts):
                    continue
                # all chains of a start in one run, or (--per-chain) one run per chain: its own estimates
                runs = ([(c, 1, 100 * (P + 1000 * N) + c) for c in range(args.chains)] if args.per_chain
                        else [(None, args.chains, P + 1000 * N)])
                for chain, count, key in runs:
                    est = sample_posterior(arch(N), data, args.kappa2, method=sampler, num_chains=count,
                                           num_samples=args.samples, num_warmup=args.warmup, key=key, observe=observe,
                                           num_batches=args.batches)
                    trace_rows(P, N, f"hmc:{label}", chain, est)
                    tails = {}
                    for t in args.tail:
                        e = est.observed[f"tail_q{t:g}"]
                        tails |= {f"tail_q{t:g}": float(e.mean), f"tail_q{t:g}_se": float(e.se)}
                    C = est.weight_covariance[0]
                    rows.append({"P": P, "N": N, "source": f"hmc:{label}", "chain": chain,
                                 "alignment": float(a * C.mean[0, 0]), "alignment_se": float(a * C.se[0, 0]),
                                 "eigenvalue_ratio": float(est.eigenvalue_ratio[0].mean),
                                 "eigenvalue_ratio_se": float(est.eigenvalue_ratio[0].se),
                                 "learnability": float(est.learnability.mean),
                                 "learnability_se": float(est.learnability.se),
                                 "rhat": est.max_rhat, **hermite(est.mean_output_test.mean), **tails})
                    histogram_rows(P, N, f"hmc:{label}", est.observed["hist"].mean, est.observed["hist"].se, chain)
                    print(rows[-1], flush=True)
        if args.out:
            pd.DataFrame(rows).to_csv(args.out, index=False)
        if args.hist_out:
            pd.DataFrame(hists).to_csv(args.hist_out, index=False)
        if args.trace:
            pd.DataFrame(traces).to_csv(args.trace, index=False)
    print(pd.DataFrame(rows).to_string())


if __name__ == "__main__":
    main()
