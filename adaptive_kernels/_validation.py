"""Input checks shared by every public entry point.

Every check raises ``ValueError`` (or ``TypeError``) whose message starts with the
argument's name and says what is wrong, e.g. ``"kappa2 must be positive, got -1.0"``.
Checks are skipped for JAX tracers, so validated objects can be built under ``jit``/``vmap``.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


def is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer) or any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value)
    )


def _scalar(name: str, value) -> float | None:
    if is_traced(value):
        return None
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(arr)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def check_positive(name: str, value) -> None:
    v = _scalar(name, value)
    if v is not None and v <= 0:
        raise ValueError(f"{name} must be positive, got {v}")


def check_nonnegative(name: str, value) -> None:
    v = _scalar(name, value)
    if v is not None and v < 0:
        raise ValueError(f"{name} must be non-negative, got {v}")


def check_in_range(name: str, value, lo: float, hi: float) -> None:
    v = _scalar(name, value)
    if v is not None and not (lo <= v <= hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {v}")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_array(name: str, value, ndim: int | None = None, shape: tuple | None = None):
    """Check a data array: numeric, the right rank/shape, no NaN or inf. Returns it as a JAX array.

    ``shape`` may contain ``None`` for free dimensions.
    """
    import jax.numpy as jnp

    if value is None:
        raise ValueError(f"{name} is required, got None")
    if is_traced(value):
        return value
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"{name} contains {bad} values")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(float)
    return jnp.asarray(arr)


def check_psd(name: str, K, rtol: float = 1e-10) -> None:
    """Raise if a symmetric matrix is not positive semi-definite (up to round-off: ``rtol``, and no finer
    than 64 eps of K's own float type, so that a float32 kernel is judged by float32 round-off)."""
    if is_traced(K):
        return
    K = np.asarray(K)
    eps = float(np.finfo(K.dtype).eps) if np.issubdtype(K.dtype, np.floating) else 0.0
    rtol = max(rtol, 64 * eps)
    K = K.astype(float)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {K.shape}")
    if not np.allclose(K, K.T, rtol=max(1e-8, rtol), atol=rtol * max(1.0, np.abs(K).max())):
        raise ValueError(f"{name} must be symmetric")
    ev = np.linalg.eigvalsh(K)
    scale = max(1.0, float(np.abs(ev).max()))
    if ev[0] < -max(rtol * scale * K.shape[0], 1e-12):
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {ev[0]:.3e}"
        )
