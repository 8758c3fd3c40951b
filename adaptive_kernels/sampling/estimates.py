"""Posterior estimates with standard errors, from per-chain batch means (THEORY.md sec. 6).

Every recorded quantity is averaged over batches of consecutive draws; the grand mean over
chains and batches is the estimate and the spread of the batch means gives its standard error
(:func:`batch_means_se`). Nonlinear functions of means (test MSE and eigenvalue ratios of the
mean) use the delta method: the function is linearised at the grand mean and applied to each
batch mean, whose spread gives the standard error.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from adaptive_kernels.sampling.diagnostics import batch_means_se, effective_sample_size, split_rhat


class Estimate(eqx.Module):
    """A posterior mean and its Monte Carlo standard error (same shape)."""

    mean: jnp.ndarray
    se: jnp.ndarray

    def __repr__(self):
        if np.ndim(self.mean) == 0:
            return f"Estimate({float(self.mean):.6g} ± {float(self.se):.2g})"
        return f"Estimate(shape={np.shape(self.mean)}, max se={float(np.max(self.se)):.2g})"


def _flatten(batches):
    """(chains, num_batches, ...) -> float64 (chains * num_batches, ...) and the input dtype."""
    b = np.asarray(batches)
    return b.astype(np.float64).reshape((-1,) + b.shape[2:]), b.dtype


def _estimate(mean, se, dtype) -> Estimate:
    """An Estimate in the dtype of the draws (float32 draws give float32 estimates)."""
    return Estimate(jnp.asarray(np.asarray(mean, dtype)), jnp.asarray(np.asarray(se, dtype)))


def mean_estimate(batches) -> Estimate:
    """batches (chains, num_batches, ...) -> Estimate of the grand mean."""
    flat, dtype = _flatten(batches)
    return _estimate(flat.mean(axis=0), batch_means_se(flat), dtype)


def delta_estimate(fn, batches, step=1e-4) -> Estimate:
    """Estimate of fn(grand mean) for a smooth numpy function ``fn``; standard error by the delta
    method: fn linearised at the grand mean (central differences along each batch mean's
    deviation, exact for quadratics; in float64 whatever the draws' dtype) and applied to every
    batch mean."""
    flat, dtype = _flatten(batches)
    centre = flat.mean(axis=0)
    series = [(fn(centre + step * (x - centre)) - fn(centre - step * (x - centre))) / (2 * step) for x in flat]
    return _estimate(fn(centre), batch_means_se(np.asarray(series)), dtype)


def _learnability(f, y):
    """<f, y>/<y, y>, summed over outputs when there are several columns."""
    return np.vdot(f, y) / np.vdot(y, y)


def _mse(f, y):
    return np.mean((f - y) ** 2)


def _ratio_along(direction):
    """R(M) = w^T M w / ((tr M - w^T M w)/(D - 1)), w = direction/|direction| (as
    :func:`adaptive_kernels.observables.eigenvalue_ratio`, in numpy for the delta method)."""
    w = np.asarray(direction) / np.linalg.norm(direction)

    def ratio(M):
        along = w @ M @ w
        return along / ((np.trace(M) - along) / (len(w) - 1))

    return ratio


class PosteriorEstimates(eqx.Module):
    """What :func:`sample_posterior` returns.

    Outputs are posterior means of the network output (Rao-Blackwellised for Gibbs and HMC:
    averages of E[f | hidden weights, y]). ``learnability`` and ``test_mse`` are those of the
    mean output on the test set. ``weight_covariance[l]`` = E[W_l^T W_l]/N_l (d x d for the first
    layer; n x n filters for the CNN), ``eigenvalue_ratio[l]`` its ratio along ``data.w_star``
    for the first layer (None for deeper layers, or where w_star is absent or of another size), ``kernels[l]`` = E[H_l H_l^T]/N_l the
    pre-activation kernel on the training inputs (CNN: also averaged over patches),
    ``kernel_eigenvalue_ratio[l]`` its ratio along y (None with several outputs). With k outputs the
    mean outputs are (P, k), learnability sums <f, y> over the columns and the MSEs average over all entries. Diagnostics: split R-hat and ESS of scalar
    monitors (per-draw train MSE, learnability, per-layer weight norms), mean acceptance
    probability after warmup (1 for Gibbs) and the per-chain step size (None for Gibbs). ``observed[name]``: the
    draws' average of the quantities of ``sample_posterior(..., observe=...)`` (empty without it), and
    ``observed_trace[name]`` their batch means per chain in sampling order, shape (chains, num_batches, ...): a
    trace that shows a chain moving between states (metastability), which the pooled mean hides.
    """

    method: str = eqx.field(static=True)
    num_chains: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    mean_output_train: Estimate
    train_mse: Estimate
    mean_output_test: Estimate | None
    learnability: Estimate | None
    test_mse: Estimate | None
    weight_covariance: list
    eigenvalue_ratio: list
    kernels: list
    kernel_eigenvalue_ratio: list
    observed: dict
    observed_trace: dict
    rhat: dict
    ess: dict
    acceptance: float
    step_size: jnp.ndarray | None

    @property
    def max_rhat(self) -> float:
        return max(self.rhat.values())

    @property
    def min_ess(self) -> float:
        return min(self.ess.values())

    def summary(self) -> dict:
        """Scalar observables and diagnostics as a flat dict (value and ``*_se``)."""
        out = {"method": self.method, "num_chains": self.num_chains, "num_samples": self.num_samples}
        scalars = {"learnability": self.learnability, "test_mse": self.test_mse, "train_mse": self.train_mse}
        scalars |= {f"eigenvalue_ratio_{l + 1}": e for l, e in enumerate(self.eigenvalue_ratio)}
        scalars |= {f"kernel_eigenvalue_ratio_{l + 1}": e for l, e in enumerate(self.kernel_eigenvalue_ratio)}
        for name, e in scalars.items():
            if e is not None:
                out[name], out[name + "_se"] = float(e.mean), float(e.se)
        out |= {"max_rhat": self.max_rhat, "min_ess": self.min_ess, "acceptance": self.acceptance}
        return out


def build_estimates(method, batch_means, monitors, acceptance, step_size, y, y_test, w_star) -> PosteriorEstimates:
    """Reduce batch means {name: (chains, num_batches, ...)} and monitor series to estimates."""
    chains, draws = next(iter(monitors.values())).shape
    test = batch_means.get("output_test")
    have_test = test is not None and y_test is not None

    covs = batch_means["weight_covariance"]
    return PosteriorEstimates(
        method=method,
        num_chains=chains,
        num_samples=draws,
        mean_output_train=mean_estimate(batch_means["output_train"]),
        train_mse=delta_estimate(lambda f: _mse(f, y), batch_means["output_train"]),
        mean_output_test=None if test is None else mean_estimate(test),
        learnability=delta_estimate(lambda f: _learnability(f, y_test), test) if have_test else None,
        test_mse=delta_estimate(lambda f: _mse(f, y_test), test) if have_test else None,
        weight_covariance=[mean_estimate(c) for c in covs],
        eigenvalue_ratio=[
            delta_estimate(_ratio_along(w_star), c) if first and w_star is not None and c.shape[-1] == w_star.shape[0]
            else None
            for first, c in zip([True] + [False] * (len(covs) - 1), covs)
        ],
        kernels=[mean_estimate(k) for k in batch_means["kernels"]],
        kernel_eigenvalue_ratio=[delta_estimate(_ratio_along(y), k) if y.ndim == 1 else None
                                 for k in batch_means["kernels"]],
        observed={name: mean_estimate(b) for name, b in batch_means.get("observed", {}).items()},
        observed_trace=dict(batch_means.get("observed", {})),
        rhat={name: split_rhat(series) for name, series in monitors.items()},
        ess={name: effective_sample_size(series) for name, series in monitors.items()},
        acceptance=float(np.mean(acceptance)),
        step_size=step_size,
    )
