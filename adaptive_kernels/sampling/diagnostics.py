"""MCMC diagnostics on (chains, draws) series, in numpy (run once after sampling).

- split R-hat (Gelman et al., BDA3 sec. 11.4): each chain cut in halves, then
  R = sqrt(((n-1)/n W + B/n) / W); values above ~1.01-1.05 mean the chains disagree.
- effective sample size with Geyer's initial monotone sequence on the multi-chain
  autocorrelation (Stan reference manual, "Effective sample size").
- batch-means standard error of a mean: the spread of the means of long batches
  (they are nearly independent when a batch is much longer than the autocorrelation time).
"""

from __future__ import annotations

import numpy as np


def _split(x):
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (chains, draws), got {x.shape}")
    half = x.shape[1] // 2
    if half < 2:
        raise ValueError(f"x needs at least 4 draws per chain, got {x.shape[1]}")
    return np.concatenate([x[:, :half], x[:, -half:]], axis=0)


def _variances(x):
    n = x.shape[1]
    within = x.var(axis=1, ddof=1).mean()
    between = n * x.mean(axis=1).var(ddof=1)
    return within, (n - 1) / n * within + between / n


def split_rhat(x) -> float:
    """Split R-hat of a (chains, draws) series; nan for a constant series."""
    within, var_plus = _variances(_split(x))
    return float(np.sqrt(var_plus / within)) if within > 0 else float("nan")


def _autocovariance(x):
    """Autocovariance of each row (biased, FFT), lags 0..n-1."""
    n = x.shape[1]
    x = x - x.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, size, axis=1)
    return np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n] / n


def effective_sample_size(x) -> float:
    """Multi-chain ESS of a (chains, draws) series (Geyer's initial monotone sequence)."""
    x = _split(x)
    m, n = x.shape
    within, var_plus = _variances(x)
    if within <= 0:
        return float("nan")
    rho = 1 - (within - _autocovariance(x).mean(axis=0) * n / (n - 1)) / var_plus
    rho[0] = 1.0
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.flatnonzero(pairs <= 0)
    pairs = pairs[: positive[0]] if positive.size else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = max(-1 + 2 * pairs.sum(), 1 / np.log10(m * n))
    return float(m * n / tau)


def batch_means_se(batch_means, axis=0):
    """Standard error of the grand mean from (approximately independent) batch means along ``axis``."""
    b = np.asarray(batch_means, dtype=float)
    return b.std(axis=axis, ddof=1) / np.sqrt(b.shape[axis])
