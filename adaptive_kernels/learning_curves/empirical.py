"""Empirical learning curves: GP regression averaged over draws of the training set.

For each P, ``n_draws`` training sets of P distinct points are drawn from a pool (a large sample
of the data measure, or a real data set's training split), GP regression (``gp.gp_predict``,
Cholesky) is run on each, and the test error mean((f - y_test)^2) and the learnability
f.y_test/y_test.y_test on a held-out test set are averaged: mean and standard error over draws.
The test set is either fixed (a real data set's test split) or drawn afresh for each draw from
the pool points outside its training set: a single fixed sample of a heavy-tailed target (a
degree-4 Gegenbauer polynomial) misstates E[y^2] by ~10% and biases every draw alike.
Optional label noise of variance ``noise_var`` is added to the training targets (not the test
targets), matching ``theory.eigenlearning(noise_var=...)``. ``kappa2`` may be a 1-D grid: every
ridge is then fitted on the same draws (common random numbers), which is what an argmin over
the grid needs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._validation import check_array, check_nonnegative, check_positive_int
from adaptive_kernels.gp import gp_predict
from adaptive_kernels.learning_curves.spectra import as_kernel


class LearningCurve(eqx.Module):
    """Measured learning curve: arrays of shape (len(P),), or (len(kappa2), len(P)) for a grid."""

    P: jnp.ndarray
    kappa2: jnp.ndarray
    test_error: jnp.ndarray
    test_error_se: jnp.ndarray
    learnability: jnp.ndarray
    learnability_se: jnp.ndarray


@eqx.filter_jit
def _draws(kernel, X_pool, y_pool, X_test, y_test, kappa2, noise_var, keys, P: int, n_test: int):
    """(errors, learnabilities) of shape (n_kappa2, n_draws) for training sets of size P.

    With ``n_test > 0`` each draw also takes its own test set of n_test further pool points
    (``X_test``/``y_test`` unused); otherwise the fixed ``X_test``/``y_test`` are used.
    """

    def one_draw(key):
        k_idx, k_noise = jax.random.split(key)
        idx = jax.random.choice(k_idx, X_pool.shape[0], (P + n_test,), replace=False)
        X, y = X_pool[idx[:P]], y_pool[idx[:P]]
        Xt, yt = (X_pool[idx[P:]], y_pool[idx[P:]]) if n_test else (X_test, y_test)
        y = y + jnp.sqrt(noise_var) * jax.random.normal(k_noise, y.shape, y.dtype)
        K = kernel(X, X)
        K = (K + K.T) / 2
        K_cross = kernel(Xt, X)

        def fit(k2):
            f = gp_predict(K, y, k2, K_cross=K_cross).mean
            return jnp.mean((f - yt) ** 2), jnp.sum(f * yt) / jnp.sum(yt**2)

        return jax.vmap(fit)(kappa2)

    err, learn = jax.vmap(one_draw)(keys)
    return err.T, learn.T


def empirical_learning_curve(
    kernel,
    X_pool,
    y_pool,
    P,
    kappa2,
    *,
    key,
    X_test=None,
    y_test=None,
    n_test: int = 500,
    n_draws: int = 20,
    noise_var=0.0,
) -> LearningCurve:
    """GP-regression learning curve, mean and standard error over ``n_draws`` training sets.

    Args:
        kernel: an FCN/CNN (its NNGP) or a callable k(X1, X2) (e.g. an adapted kernel).
        X_pool, y_pool: (M, d) inputs and (M,) targets the training sets are drawn from,
            without replacement.
        P: training-set sizes (positive ints).
        kappa2: ridge > 0, a scalar or a 1-D grid.
        key: PRNG key.
        X_test, y_test: a fixed held-out test set. Omitted: every draw tests on its own
            ``n_test`` pool points disjoint from its training set, so that the finite test
            sample's own fluctuation of E[y^2] enters the standard error instead of biasing
            every draw the same way.
        n_draws: training sets per P (>= 2).  noise_var: label-noise variance on training targets.
    """
    kernel = as_kernel(kernel)
    X_pool = check_array("X_pool", X_pool, ndim=2)
    y_pool = check_array("y_pool", y_pool, ndim=1, shape=(X_pool.shape[0],))
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test: give both or neither")
    if X_test is None:
        n_test = check_positive_int("n_test", n_test)
    else:
        X_test = check_array("X_test", X_test, ndim=2, shape=(None, X_pool.shape[1]))
        y_test = check_array("y_test", y_test, ndim=1, shape=(X_test.shape[0],))
        n_test = 0
    P_arr = np.atleast_1d(np.asarray(P))
    if P_arr.ndim != 1 or not np.issubdtype(P_arr.dtype, np.integer) or np.any(P_arr <= 0):
        raise ValueError(f"P must be positive integers, got {P}")
    sizes = [int(p) for p in P_arr]
    if max(sizes) + n_test > X_pool.shape[0]:
        raise ValueError(
            f"P must be at most the pool size {X_pool.shape[0]} minus n_test = {n_test}, got {max(sizes)}"
        )
    n_draws = check_positive_int("n_draws", n_draws)
    if n_draws < 2:
        raise ValueError(f"n_draws must be at least 2 for a standard error, got {n_draws}")
    check_nonnegative("noise_var", noise_var)
    grid = jnp.atleast_1d(jnp.asarray(kappa2, dtype=X_pool.dtype))
    if grid.ndim != 1 or not bool(jnp.all(grid > 0)) or not bool(jnp.all(jnp.isfinite(grid))):
        raise ValueError(f"kappa2 must be positive and finite (a scalar or a 1-D grid), got {kappa2}")
    noise_var = jnp.asarray(noise_var, dtype=X_pool.dtype)
    errs, learns = [], []
    for P_, k in zip(sizes, jax.random.split(key, len(sizes))):
        e, l = _draws(
            kernel, X_pool, y_pool, X_test, y_test, grid, noise_var, jax.random.split(k, n_draws), P_, n_test
        )
        errs.append(e)
        learns.append(l)
    err, learn = jnp.stack(errs, -1), jnp.stack(learns, -1)  # (n_kappa2, n_draws, n_P)
    se = lambda a: jnp.std(a, axis=1, ddof=1) / jnp.sqrt(n_draws)  # noqa: E731
    squeeze = (lambda a: a[0]) if jnp.ndim(kappa2) == 0 else (lambda a: a)
    return LearningCurve(
        P=jnp.asarray(sizes),
        kappa2=jnp.asarray(kappa2),
        test_error=squeeze(jnp.mean(err, axis=1)),
        test_error_se=squeeze(se(err)),
        learnability=squeeze(jnp.mean(learn, axis=1)),
        learnability_se=squeeze(se(learn)),
    )
