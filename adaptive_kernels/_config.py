"""Numerical precision policy.

The saddle-point equations involve log-determinants and solves of nearly singular
kernels (kappa2 ~ 1e-3 against kernel eigenvalues ~ 1e2), so the library computes in
float64 by default. Like NetKet, it enables JAX's 64-bit mode when it is imported,
*unless the user has already made a choice*:

- ``JAX_ENABLE_X64`` set in the environment (to anything) is respected as it is;
- ``ADAPTIVE_KERNELS_X64=0`` before import keeps JAX's 32-bit default.

With x64 enabled, float32 still works where asked for: the library keeps the dtype of
the arrays it is given (``X.astype(jnp.float32)`` gives a float32 solve).
``adaptive_kernels.precision()`` reports the mode in force.

Threading policy (:func:`_apply_default_threads`, run when this module is imported, which
``adaptive_kernels/__init__.py`` does before anything else). A JAX solve on a CPU uses two
thread pools: XLA's CPU client (dots, fusions), sized once when JAX's backend starts from
``PJRT_NPROC`` (else ``NPROC``, else every core in the affinity mask), and scipy's OpenBLAS
(LAPACK: Cholesky, eigh, triangular solves), sized when it is loaded from
``OPENBLAS_NUM_THREADS``. Both spin while waiting for work, so on a loaded or shared machine
(another process busy on the cores they want) a multi-threaded solve can run many times
slower than a single-threaded one (issue 19: 14x on a loaded 2-core machine). The library
therefore asks for ``DEFAULT_THREADS`` threads in each pool, *unless the user has chosen*:

- ``ADAPTIVE_KERNELS_THREADS=n`` (a positive integer) asks for n threads in both pools;
  ``ADAPTIVE_KERNELS_THREADS=default`` keeps JAX's and OpenBLAS's own defaults (all cores);
  empty counts as unset;
- ``PJRT_NPROC`` / ``NPROC`` set, or (without ``ADAPTIVE_KERNELS_THREADS``) ``XLA_FLAGS`` set:
  XLA's pool is left alone; ``OPENBLAS_NUM_THREADS`` / ``GOTO_NUM_THREADS`` /
  ``OMP_NUM_THREADS`` set: OpenBLAS is left alone. The user's own variables are never changed.

The policy works by setting those environment variables for this process (children inherit
them), so it can only act before the pools exist: if JAX's backend is already initialised
(a JAX computation ran before ``import adaptive_kernels``), XLA's pool keeps the size it
started with, and if ``scipy.linalg`` was already imported, OpenBLAS keeps its size; the
policy then leaves that pool alone (with a warning if ``ADAPTIVE_KERNELS_THREADS`` asked
for it). :func:`threads` reports what is in force.

Persistent compilation cache (opt-in, :func:`_apply_compilation_cache`, run at import). Off unless asked:
``ADAPTIVE_KERNELS_COMPILATION_CACHE=<directory>`` sets JAX's ``jax_compilation_cache_dir`` to that directory (created
by JAX; JAX 0.10 supports it on CPU as well as GPU/TPU) and ``jax_persistent_cache_min_compile_time_secs`` to 0, so
that a later process loads the compiled programs instead of compiling them again. The threshold is lowered because
most of the library's programs compile in under JAX's default of 1 s each (a first exact-measure solve and
``summarize``: 24 programs, 3 above 1 s since :data:`BRIEF_PROGRAM_OPTIONS`; 93 before 2026-12-03) while together
they are most of its cost (erf, d = 50, P = 200: ``bench/results/exact.md``, the row of a second process;
docs/exact_measure.md, Speed). The answers are those of a fresh compilation (the same executables, compiled with the
same options: they are part of the cache key; tests/test_compilation_cache.py). Left alone where the user chose:
``JAX_COMPILATION_CACHE_DIR`` or ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` in the environment, or a cache
directory already set in ``jax.config``. As JAX warns, the cache directory is trusted: a directory others can write to
lets them run code in your process. :func:`compilation_cache` reports what is in force.
"""

from __future__ import annotations

import os
import sys
import warnings

import jax


def _apply_default_precision() -> None:
    if "JAX_ENABLE_X64" in os.environ:
        return
    if os.environ.get("ADAPTIVE_KERNELS_X64", "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    jax.config.update("jax_enable_x64", True)


DEFAULT_THREADS = 1
"""Threads per pool (XLA's CPU client, OpenBLAS) when the user has not chosen: see the module
docstring and ``bench/threads.py`` for the measurements behind it."""

_XLA_VARIABLES = ("PJRT_NPROC", "NPROC")
_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
_THREADS_VARIABLE = "ADAPTIVE_KERNELS_THREADS"
_threads_applied: dict[str, str] = {}


def _requested_threads() -> int | None:
    """The thread count ``ADAPTIVE_KERNELS_THREADS`` asks for: None for ``default``; raises on nonsense."""
    value = os.environ[_THREADS_VARIABLE].strip().lower()
    if value == "default":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{_THREADS_VARIABLE} must be a positive integer or 'default', got {os.environ[_THREADS_VARIABLE]!r}")
    return count


def _jax_backend_started() -> bool:
    """Whether JAX's backends (and so XLA's CPU thread pool) exist already. Private JAX API: if it
    moves, assume not (setting the variables too late is harmless, they are then ignored)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def _apply_default_threads() -> None:
    """Size XLA's CPU pool and OpenBLAS's pool before they start, unless the user chose (module docstring)."""
    _threads_applied.clear()
    explicit = os.environ.get(_THREADS_VARIABLE, "").strip() != ""
    count = _requested_threads() if explicit else DEFAULT_THREADS
    if count is None:
        return
    pools = (
        ("xla", "PJRT_NPROC", _XLA_VARIABLES + (() if explicit else ("XLA_FLAGS",)), _jax_backend_started(),
         "JAX's backend is already initialised"),
        ("openblas", "OPENBLAS_NUM_THREADS", _BLAS_VARIABLES, any(m.startswith("scipy.linalg") for m in sys.modules),
         "scipy.linalg (and its OpenBLAS) is already loaded"),
    )
    for pool, variable, user_variables, started, why in pools:
        if any(name in os.environ for name in user_variables):
            continue
        if started:
            if explicit:
                warnings.warn(f"{_THREADS_VARIABLE}={count} cannot size the {pool} thread pool: {why}; set it before "
                              "anything imports JAX computations or scipy.linalg", RuntimeWarning, stacklevel=3)
            continue
        os.environ[variable] = str(count)
        _threads_applied[pool] = variable


def threads() -> dict:
    """The CPU threading in force: for ``"xla"`` and ``"openblas"``, the variable that sizes the pool
    and its value (``"all cores"`` when none does), and who set it (``"adaptive_kernels"`` or ``"user"``).
    Valid for XLA once JAX's backend has started and for OpenBLAS once scipy.linalg is loaded."""
    out = {}
    for pool, names in (("xla", _XLA_VARIABLES), ("openblas", _BLAS_VARIABLES)):
        name = next((n for n in names if n in os.environ), None)
        if name is None:
            out[pool] = {"threads": "all cores", "set_by": "default"}
        else:
            out[pool] = {"threads": os.environ[name], "variable": name,
                         "set_by": "adaptive_kernels" if _threads_applied.get(pool) == name else "user"}
    return out


BRIEF_PROGRAM_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
"""XLA compiler options (``jax.jit(compiler_options=...)``, CPU only: :func:`brief_jit`) of the programs whose
compilation costs more than their runs in a solve: LLVM's optimisation level 0 (default 3) and XLA's older elemental
kernel emitters instead of its MLIR fusion emitters. On CPU most of a program's compilation is LLVM compiling one
module per distinct kernel (~100 small kernels each for the exact measure's tempering step, solve and
``summarize``: stacking, selections, layout copies, reductions), which these options make about 3x cheaper, while
the kernels run 10-20% slower. Answers agree with the defaults' to round-off (~1e-15 relative), not bit for bit.
Measured per program (erf, d = 50, P = 200, S = 4000; docs/exact_measure.md, Speed)."""


def brief_jit(fn=None, *, options=BRIEF_PROGRAM_OPTIONS):
    """``eqx.filter_jit(fn)``, compiled with ``options`` (default :data:`BRIEF_PROGRAM_OPTIONS`) where it is a
    top-level program on JAX's CPU backend; with XLA's defaults elsewhere (the options were measured on CPU only) and
    inside another trace (jit, vmap, grad: JAX accepts compiler options on top-level programs only, and there the
    enclosing program's own apply)."""
    import functools

    import equinox as eqx

    if fn is None:
        return functools.partial(brief_jit, options=options)
    jitted = {True: eqx.filter_jit(fn, compiler_options=options), False: eqx.filter_jit(fn)}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return jitted[not _tracing((args, kwargs)) and jax.default_backend() == "cpu"](*args, **kwargs)

    return call


def _tracing(arguments) -> bool:
    """Whether a JAX trace is active (private JAX API; if it moves, whether ``arguments`` hold a tracer)."""
    try:
        from jax._src import core

        return not core.trace_state_clean()
    except (ImportError, AttributeError):
        return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(arguments))


_CACHE_VARIABLE = "ADAPTIVE_KERNELS_COMPILATION_CACHE"
_cache_applied: dict[str, object] = {}


def _apply_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache where ``ADAPTIVE_KERNELS_COMPILATION_CACHE`` asks for it
    (module docstring); the user's own JAX settings are never changed."""
    _cache_applied.clear()
    path = os.environ.get(_CACHE_VARIABLE, "").strip()
    if not path or "JAX_COMPILATION_CACHE_DIR" in os.environ or jax.config.jax_compilation_cache_dir is not None:
        return
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    jax_cache.set_cache_dir(os.path.abspath(os.path.expanduser(path)))
    jax_cache.reset_cache()  # where JAX compiled before this import, its cache was initialised without a directory
    _cache_applied["directory"] = jax.config.jax_compilation_cache_dir
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        _cache_applied["min_compile_time_secs"] = 0.0


def compilation_cache() -> dict:
    """JAX's persistent compilation cache in force: ``directory`` (None: off), ``min_compile_time_secs`` (programs
    that compile faster are not written) and who set each (``"adaptive_kernels"`` through
    ``ADAPTIVE_KERNELS_COMPILATION_CACHE``, else ``"user"`` or ``"default"``)."""
    out = {}
    for name, option, default in (("directory", "jax_compilation_cache_dir", None),
                                  ("min_compile_time_secs", "jax_persistent_cache_min_compile_time_secs", 1.0)):
        value = getattr(jax.config, option)
        set_by = ("adaptive_kernels" if name in _cache_applied and _cache_applied[name] == value
                  else "default" if value == default else "user")
        out[name], out[f"{name}_set_by"] = value, set_by
    return out


def precision() -> str:
    """The floating-point precision JAX uses by default now: ``'float64'`` or ``'float32'``."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def cast_floating(tree, dtype):
    """Cast every floating array leaf of a PyTree (e.g. an architecture) to ``dtype``.

    Used to keep a computation in the precision of the user's data: float32 inputs give a
    float32 computation even with float64 architecture parameters.
    """
    import equinox as eqx
    import jax.numpy as jnp

    def cast(x):
        return x.astype(dtype) if eqx.is_inexact_array(x) and jnp.issubdtype(dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


_apply_compilation_cache()
"""The opt-in persistent compilation cache (``ADAPTIVE_KERNELS_COMPILATION_CACHE``, module docstring)."""

# Before any JAX computation can start XLA's CPU client: adaptive_kernels/__init__.py imports this
# module first. (The float64 policy is applied from __init__; this one must also cover code that
# imports a submodule directly.)
_apply_default_threads()
