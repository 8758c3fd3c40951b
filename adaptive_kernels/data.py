"""Data sets and teachers.

- Gaussian inputs x ~ N(0, I_d); inputs uniform on the sphere of radius sqrt(d).
- Teachers on z = w*.x with |w*| = 1 (so z ~ N(0, 1) for Gaussian inputs):
  linear single index y = z; cubic single index y = z + eps He3(z), He3(z) = z^3 - 3z
  (review Fig 4); polynomial targets on the hypersphere, sums of normalised Gegenbauer
  polynomials Q_k(w*.x/|x|) with E[Q_k^2] = 1 under the uniform measure.
- sklearn's bundled handwritten digits (no network at run time) as binary +-1 or
  one-hot multi-class regression targets.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from adaptive_kernels._validation import check_array, check_nonnegative, check_positive_int


class Dataset(eqx.Module):
    """Training inputs X (P, d) and targets y (P,) or (P, K); optional test set and teacher."""

    X: jnp.ndarray
    y: jnp.ndarray
    X_test: jnp.ndarray | None = None
    y_test: jnp.ndarray | None = None
    w_star: jnp.ndarray | None = None

    def __check_init__(self):
        X = check_array("X", self.X, ndim=2)
        y = check_array("y", self.y)
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have {X.shape[0]} rows to match X (P = {X.shape[0]}), got shape {y.shape}")
        if self.X_test is not None:
            check_array("X_test", self.X_test, ndim=2, shape=(None, X.shape[1]))
        if self.y_test is not None:
            if self.X_test is None:
                raise ValueError("y_test given without X_test")
            check_array("y_test", self.y_test, shape=(self.X_test.shape[0],) + tuple(y.shape[1:]))
        if self.w_star is not None:
            check_array("w_star", self.w_star, ndim=1, shape=(X.shape[1],))

    @property
    def P(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def gaussian_inputs(key, P: int, d: int, dtype=None):
    """P inputs x ~ N(0, I_d)."""
    check_positive_int("P", P)
    check_positive_int("d", d)
    return jax.random.normal(key, (P, d), dtype=dtype or jnp.result_type(float))


def sphere_inputs(key, P: int, d: int, dtype=None):
    """P inputs uniform on the sphere of radius sqrt(d) (so |x|^2/d = 1)."""
    X = gaussian_inputs(key, P, d, dtype)
    return jnp.sqrt(d) * X / jnp.linalg.norm(X, axis=1, keepdims=True)


def unit_vector(key, d: int, dtype=None):
    w = jax.random.normal(key, (d,), dtype=dtype or jnp.result_type(float))
    return w / jnp.linalg.norm(w)


def he3(z):
    """Probabilists' Hermite polynomial He3(z) = z^3 - 3z."""
    return z**3 - 3 * z


def linear_teacher(X, w_star):
    """y = w*.x / |w*|."""
    w = w_star / jnp.linalg.norm(w_star)
    return X @ w


def cubic_teacher(X, w_star, eps: float = 0.1):
    """y = z + eps He3(z), z = w*.x/|w*| (review Fig 4)."""
    z = linear_teacher(X, w_star)
    return z + eps * he3(z)


def gegenbauer_normalised(k: int, d: int, t):
    """Q_k(t), the degree-k Gegenbauer polynomial for S^{d-1} with E[Q_k(t)^2] = 1.

    t = w.x/(|w||x|) for x uniform on the sphere has density ∝ (1 - t^2)^{(d-3)/2}.
    Normalisation from int (C_k^a)^2 (1-t^2)^{a-1/2} = pi 2^{1-2a} Gamma(k+2a)/(k! (k+a) Gamma(a)^2),
    a = (d-2)/2 (Abramowitz & Stegun 22.2.3).
    """
    if d < 3:
        raise ValueError(f"d must be at least 3 for Gegenbauer targets, got {d}")
    a = (d - 2) / 2
    log_norm = (
        np.log(np.pi) + (1 - 2 * a) * np.log(2) + special.gammaln(k + 2 * a)
        - special.gammaln(k + 1) - np.log(k + a) - 2 * special.gammaln(a)
    )
    log_mass = 0.5 * np.log(np.pi) + special.gammaln(a + 0.5) - special.gammaln(a + 1)
    scale = np.exp(-0.5 * (log_norm - log_mass))
    return scale * special.eval_gegenbauer(k, a, np.asarray(t))


def polynomial_sphere_teacher(X, w_star, coefficients):
    """y = sum_k coefficients[k] Q_k(w*.x/(|w*||x|)) for inputs on a sphere."""
    X = np.asarray(X)
    w = np.asarray(w_star) / np.linalg.norm(w_star)
    t = (X @ w) / np.linalg.norm(X, axis=1)
    y = sum(c * gegenbauer_normalised(k, X.shape[1], t) for k, c in enumerate(coefficients) if c)
    return jnp.asarray(np.asarray(y, dtype=float) * np.ones(X.shape[0]))


_TEACHERS = {"linear": linear_teacher, "cubic": cubic_teacher}


def teacher_dataset(
    key,
    P: int,
    d: int,
    teacher: str = "linear",
    P_test: int = 1000,
    eps: float = 0.1,
    noise: float = 0.0,
) -> Dataset:
    """Gaussian inputs with a single-index teacher ("linear" or "cubic"), and a test set.

    ``noise`` is the standard deviation of Gaussian label noise on the training targets.
    """
    if teacher not in _TEACHERS:
        raise ValueError(f"teacher: unknown {teacher!r}; choose one of {', '.join(_TEACHERS)}")
    check_nonnegative("noise", noise)
    kw, kx, kt, kn = jax.random.split(key, 4)
    w = unit_vector(kw, d)
    X = gaussian_inputs(kx, P, d)
    Xt = gaussian_inputs(kt, check_positive_int("P_test", P_test), d)
    f = (lambda Z: cubic_teacher(Z, w, eps)) if teacher == "cubic" else (lambda Z: linear_teacher(Z, w))
    y = f(X) + noise * jax.random.normal(kn, (P,))
    return Dataset(X=X, y=y, X_test=Xt, y_test=f(Xt), w_star=w)


def load_digits_regression(
    classes: tuple[int, ...] | None = (0, 1),
    n_train: int | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> Dataset:
    """sklearn's 8x8 handwritten digits (1797 images, shipped with scikit-learn) as regression.

    Two ``classes`` -> targets +1/-1 (first class +1); more than two or ``None`` (all ten)
    -> one-hot targets (P, K) centred to mean zero. Inputs are standardised pixel-wise
    (constant pixels dropped) and scaled so that |x|^2/d = 1 on average. The rows are
    shuffled with ``seed``; the first ``n_train`` train, the rest test (default: half).
    """
    from sklearn.datasets import load_digits

    X, labels = load_digits(return_X_y=True)
    if classes is not None:
        classes = tuple(int(c) for c in classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(range(10)):
            raise ValueError(f"classes must be two or more distinct digits in 0..9, got {classes}")
        keep = np.isin(labels, classes)
        X, labels = X[keep], labels[keep]
    else:
        classes = tuple(range(10))
    X = X.astype(float)
    if standardize:
        sd = X.std(axis=0)
        X = X[:, sd > 0]
        X = (X - X.mean(axis=0)) / sd[sd > 0]
    X = X / np.sqrt(np.mean(np.sum(X**2, axis=1)) / X.shape[1])
    if len(classes) == 2:
        y = np.where(labels == classes[0], 1.0, -1.0)
    else:
        y = (labels[:, None] == np.asarray(classes)[None, :]).astype(float)
        y = y - y.mean(axis=0)
    perm = np.random.default_rng(seed).permutation(len(y))
    X, y = X[perm], y[perm]
    n = len(y) // 2 if n_train is None else n_train
    if not 0 < n < len(y):
        raise ValueError(f"n_train must be between 1 and {len(y) - 1}, got {n}")
    return Dataset(X=jnp.asarray(X[:n]), y=jnp.asarray(y[:n]), X_test=jnp.asarray(X[n:]), y_test=jnp.asarray(y[n:]))


def modular_addition(key, p: int, P: int) -> Dataset:
    """Modular addition on Z_p (Gromov, arXiv 2301.02679; the modular teacher of Rubin, Seroussi & Ringel,
    arXiv 2310.03789): all p^2 pairs (a, b) in a random order (from ``key``), the first ``P`` train, the other
    p^2 - P are the held-out test set.

    Input x = (p / sqrt(p - 1)) ([e_a; e_b] - 1/p) (d = 2p): the two one-hot vectors, centred and scaled so that
    |x|^2 = d as for the library's other inputs; target y = e_{(a + b) mod p} - 1/p (p outputs, mean zero). The
    predicted class of a pair is the argmax of its p outputs (:func:`modular_accuracy`).
    """
    p = check_positive_int("p", p)
    if p < 2:
        raise ValueError(f"p must be at least 2, got {p}")
    P = check_positive_int("P", P)
    if P >= p * p:
        raise ValueError(f"P must be below p^2 = {p * p} (the rest is the test set), got {P}")
    dtype = jnp.result_type(float)
    a, b = jnp.divmod(jax.random.permutation(key, p * p), p)
    eye = jnp.eye(p, dtype=dtype)
    X = (p / np.sqrt(p - 1)) * (jnp.concatenate([eye[a], eye[b]], axis=1) - 1 / p)
    y = eye[(a + b) % p] - 1 / p
    return Dataset(X=X[:P], y=y[:P], X_test=X[P:], y_test=y[P:])


def modular_accuracy(mean, y):
    """Fraction of rows whose largest predicted output (``mean``, (n, p)) is the target's class (argmax of ``y``)."""
    return jnp.mean(jnp.argmax(mean, axis=1) == jnp.argmax(y, axis=1))


def modular_fourier_projector(p: int, k: int):
    """The orthogonal projector (2p x 2p) onto frequency k of Z_p in both halves of the modular inputs
    (:func:`modular_addition`): the span of cos(2 pi k a / p), sin(2 pi k a / p) on the a-half and the same on the
    b-half (rank 4 for 0 < k < p/2). Frequencies k and p - k are one real mode; the projectors of k = 1..(p-1)/2
    (odd p) sum to the projector onto the centred inputs' span."""
    p = check_positive_int("p", p)
    if not 0 < k < p / 2:
        raise ValueError(f"k must be a frequency in 1..{(p - 1) // 2}, got {k}")
    n = np.arange(p)
    wave = np.stack([np.cos(2 * np.pi * k * n / p), np.sin(2 * np.pi * k * n / p)])
    zero = np.zeros_like(wave)
    B = np.concatenate([np.concatenate([wave, zero], axis=1), np.concatenate([zero, wave], axis=1)])
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    return jnp.asarray(B.T @ B, jnp.result_type(float))
