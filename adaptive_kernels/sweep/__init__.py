"""Sweeps over scaling regimes: a grid of points -> a tidy table (THEORY.md secs. 3, 4, 6).

    from adaptive_kernels.sweep import Sweep, TeacherData, grid, run_sweep
    sweep = Sweep(grid(P=[20, 40], gamma=[1.0, 2.0], width=100, kappa2=1e-2, theory="scaling"),
                  data=TeacherData("linear", d=10, P_test=200), continuation="P")
    table = run_sweep(sweep, out="results.parquet", progress=True)

See :func:`run_sweep` for the columns and :mod:`adaptive_kernels.sweep.config` for TOML files.
"""

from adaptive_kernels.sweep.config import ConfigError, load_config
from adaptive_kernels.sweep.engine import Regime, build_regime, run_sweep
from adaptive_kernels.sweep.spec import (
    POINT_PARAMETERS,
    THEORIES,
    DigitsData,
    ParameterError,
    Sweep,
    TeacherData,
    grid,
)
from adaptive_kernels.sweep.store import read_table

__all__ = [
    "ConfigError",
    "DigitsData",
    "POINT_PARAMETERS",
    "ParameterError",
    "Regime",
    "Sweep",
    "TeacherData",
    "THEORIES",
    "build_regime",
    "grid",
    "load_config",
    "read_table",
    "run_sweep",
]
