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
"""

from __future__ import annotations

import os

import jax


def _apply_default_precision() -> None:
    if "JAX_ENABLE_X64" in os.environ:
        return
    if os.environ.get("ADAPTIVE_KERNELS_X64", "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    jax.config.update("jax_enable_x64", True)


def precision() -> str:
    """The floating-point precision JAX uses by default now: ``'float64'`` or ``'float32'``."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def default_float():
    """The default floating dtype in force (float64 when x64 is enabled)."""
    import jax.numpy as jnp

    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


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
