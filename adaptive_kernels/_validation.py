"""Input checks shared by every public entry point (the input contract: docs/reliability.md).

Every check raises ``ValueError`` (or ``TypeError``) whose message starts with the
argument's name and says what is wrong, e.g. ``"kappa2 must be positive, got -1.0"``.
Checks are skipped for JAX tracers, so validated objects can be built under ``jit``/``vmap``.

Arrays (:func:`check_array`): real numbers only (complex, boolean, string and object arrays are
rejected), never empty, no NaN or inf; integers become floats, and half precision (float16,
bfloat16: no LAPACK factorisations) becomes float32 with a :class:`PrecisionWarning`.
Scales (:func:`check_scales`): a problem whose numbers the float type cannot square (kappa2,
the layers' pre-activation variances, the output kernel, the targets) is rejected; one whose
output kernel is below the round-off of kappa2 gets a :class:`PrecisionWarning` (its solution
is the prior's whatever the data).
"""

from __future__ import annotations

import math
import numbers
import warnings

import jax
import numpy as np


class PrecisionWarning(UserWarning):
    """The computation is done in another precision than given, or the float type cannot resolve the result.
    Shown once per distinct message (a float16 data set passes several checks on its way to a solve, a problem is
    built again by ``predict`` and ``summarize``): raised with the location of this module, whose registry the
    "once" filter consults."""


warnings.filterwarnings("once", category=PrecisionWarning)


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


def check_array(name: str, value, ndim: int | None = None, shape: tuple | None = None, floating: bool = False):
    """Check a data array: real numbers, not empty, the right rank/shape, no NaN or inf. Returns it as a JAX array.

    ``shape`` may contain ``None`` for free dimensions. Integer arrays become floats (exact below 2**53), unless
    ``floating`` (a kernel: an integer one is a truncated one) rejects them; float16/bfloat16 become float32 with a
    :class:`PrecisionWarning` (JAX's linear algebra has no half-precision factorisations).
    """
    import jax.numpy as jnp

    if value is None:
        raise ValueError(f"{name} is required, got None")
    if is_traced(value):
        return value
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise TypeError(f"{name} must be a numeric array ({err})") from None
    kind = arr.dtype
    if jnp.issubdtype(kind, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got complex dtype {kind}")
    if jnp.issubdtype(kind, jnp.bool_) or not (jnp.issubdtype(kind, jnp.integer) or jnp.issubdtype(kind, jnp.floating)):
        raise TypeError(f"{name} must be a numeric array, got dtype {kind}")
    if floating and not jnp.issubdtype(kind, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {kind} (convert it with .astype(float) "
                        "if the integers are meant)")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if jnp.issubdtype(kind, jnp.floating) and jnp.finfo(kind).bits < 32:
        warnings.warn(f"{kind} data: JAX has no {kind} linear algebra (LAPACK); computing in float32",
                      PrecisionWarning, stacklevel=1)
        arr = arr.astype(np.float32)
    elif jnp.issubdtype(kind, jnp.integer):
        arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"{name} contains {bad} values")
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


def representable_range(dtype) -> tuple[float, float]:
    """(sqrt(tiny), sqrt(max)) of a float type: the magnitudes whose squares and inverses it can hold."""
    info = np.finfo(dtype)
    return math.sqrt(float(info.tiny)), math.sqrt(float(info.max))


def check_magnitude(name: str, value, dtype=None) -> None:
    """Raise if |value| exceeds sqrt(max) of ``dtype`` (default: value's own float type): the products the
    computation forms from it (squares, outer products) would overflow to inf."""
    if value is None or is_traced(value):
        return
    arr = np.asarray(value)
    _, hi = representable_range(arr.dtype if dtype is None else dtype)
    largest = float(np.max(np.abs(arr.astype(float)))) if arr.size else 0.0
    if largest > hi:
        raise ValueError(f"{name}: values up to {largest:.3g} are beyond the range "
                         f"{np.dtype(arr.dtype if dtype is None else dtype).name} can square ({hi:.1e}); rescale it")


def check_finite_result(name: str, value, why) -> None:
    """Raise ``ValueError(name: why)`` if a computed (untraced) result is not finite. ``why`` is a string or a
    function returning one, called only then (it may read concrete values the result was computed from)."""
    if is_traced(value):
        return
    if not all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree_util.tree_leaves(value)):
        raise ValueError(f"{name}: {why() if callable(why) else why}")


def check_widths(widths, dtype) -> list[float]:
    """The widths as floats of ``dtype`` (the Problem's leaves), each within its range (10**400 is no width)."""
    hi = float(np.finfo(dtype).max)
    out = []
    for i, w in enumerate(widths):
        if not w <= hi:
            raise ValueError(f"widths[{i}] = {w:.3g} is beyond the range of {np.dtype(dtype).name} ({hi:.1e})")
        out.append(float(w))
    return out


def check_scales(problem) -> None:
    """Raise if a problem's numbers leave the range its float type can square; warn if its kernel cannot be resolved.

    The scales are those of the NNGP prior at the mean input, from its diagonal recursion (THEORY.md sec. 2):
    v_1 = s_w2 mean|x|^2/d + s_b2, k_l = E[phi(u)^2] (u ~ N(0, v_l)), v_{l+1} = s_w2 k_l + s_b2, and the output
    kernel's scale c k_L, c = s_a2 N_L**(1 - gamma). The action squares all of them (y^T A y, t t^T, Sigma^2), so
    kappa2, every v_l, c k_L and max|y| must lie in :func:`representable_range`; a ValueError names the arguments
    that set the offending number. When c k_L < eps kappa2 the kernel is lost in the round-off of K + kappa2 I: the
    data term cannot see it, every theory returns the prior and the predictions vanish -- a
    :class:`PrecisionWarning` says so. Skipped for traced problems.
    """
    if is_traced((problem.X, problem.y, problem.kappa2, problem.s_w2, problem.s_a2, problem.s_b2, problem.gamma)):
        return
    dtype = problem.X.dtype
    lo, hi = representable_range(dtype)
    name = np.dtype(dtype).name
    kappa2 = float(problem.kappa2)
    if not lo <= kappa2 <= hi:
        raise ValueError(f"kappa2 = {kappa2:.3g} is outside the range {name} can square ([{lo:.1e}, {hi:.1e}])")
    check_magnitude("data.y", problem.y, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        X = np.asarray(problem.X, dtype=float)
        s_w2, s_b2 = float(problem.s_w2), float(problem.s_b2)
        v = s_w2 * float(np.mean(np.sum(X**2, axis=1))) / X.shape[1] + s_b2
        for layer in range(problem.depth):
            if not v <= hi:  # also NaN/inf
                where = "s_w2 |x|^2/d + s_b2 (s_w2, data.X)" if layer == 0 else "s_w2 E[phi^2] + s_b2 (s_w2, s_b2)"
                raise ValueError(f"the pre-activation variance of hidden layer {layer + 1}, {where} = {v:.3g}, is beyond "
                                 f"the range {name} can square ({hi:.1e}); rescale the inputs or s_w2")
            k = float(problem.activation.diagonal(np.asarray(v, dtype=dtype)))
            v = s_w2 * k + s_b2
        scale = float(problem.readout_scale) * k
    if not scale <= hi:
        raise ValueError(f"the output kernel's scale s_a2 N**(1-gamma) E[phi^2] = {scale:.3g} (s_a2, gamma, widths, "
                         f"s_w2, data.X) is beyond the range {name} can square ({hi:.1e})")
    eps = float(np.finfo(dtype).eps)
    if scale < eps * kappa2:
        warnings.warn(f"kappa2 = {kappa2:.3g} is more than 1/eps ({1 / eps:.1e}, {name}) times the output kernel's "
                      f"scale s_a2 N**(1-gamma) E[phi^2] = {scale:.3g}: the kernel is lost in the round-off of "
                      "K + kappa2 I, so the solution is the prior's and the predictions vanish", PrecisionWarning,
                      stacklevel=1)
