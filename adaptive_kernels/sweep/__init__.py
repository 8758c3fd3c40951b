"""Sweeps over scaling regimes: a grid of points -> a tidy table (THEORY.md secs. 3, 4, 6).

    from adaptive_kernels.sweep import Sweep, TeacherData, grid, run_sweep
    sweep = Sweep(grid(P=[20, 40], gamma=[1.0, 2.0], width=100, kappa2=1e-2, theory="scaling"),
                  data=TeacherData("linear", d=10, P_test=200), continuation="P")
    table = run_sweep(sweep, out="results.parquet", progress=True)   # executor=client: on a cluster

See :func:`run_sweep` for the columns and :mod:`adaptive_kernels.sweep.config` for TOML files.
``Sweep(..., branches="all")`` reports every stationary point of each point (its branch, Hessian class, action;
the posterior's marked; :func:`adaptive_kernels.sweep.engine.branch_rows`).
"""

from adaptive_kernels.sweep.config import ConfigError, load_config
from adaptive_kernels.sweep.engine import (
    Batch,
    PreflightError,
    Regime,
    SweepError,
    branch_rows,
    build_regime,
    run_sweep,
    solve_batch,
)
from adaptive_kernels.sweep.spec import (
    BRANCH_MODES,
    POINT_PARAMETERS,
    SOLVER_OPTIONS,
    THEORIES,
    DigitsData,
    ParameterError,
    Sweep,
    TeacherData,
    grid,
)
from adaptive_kernels.sweep.store import SweepWarning, read_table

__all__ = [
    "BRANCH_MODES",
    "Batch",
    "ConfigError",
    "DigitsData",
    "POINT_PARAMETERS",
    "ParameterError",
    "PreflightError",
    "Regime",
    "SOLVER_OPTIONS",
    "Sweep",
    "SweepError",
    "SweepWarning",
    "TeacherData",
    "THEORIES",
    "branch_rows",
    "build_regime",
    "grid",
    "load_config",
    "read_table",
    "run_sweep",
    "solve_batch",
]
