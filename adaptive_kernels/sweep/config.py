"""Sweep configuration files (TOML, read with the standard library's ``tomllib``).

Every error -- a TOML syntax error, an unknown table or key, a wrong type, an impossible
value (negative kappa2, gamma outside [0, 3], width 0) -- is reported before any solving,
as ``FILE:LINE: key: what is wrong``. Layout (see ``examples/sweep_example.toml``)::

    [data]                    # the data recipe
    kind = "teacher"          # "teacher" (d, P_test, teacher, eps, noise) or "digits" (classes)
    teacher = "linear"
    d = 10

    [grid]                    # Cartesian product; each value a scalar or a list
    theory = ["gp", "scaling"]
    P = [20, 40, 80]
    width = 100
    gamma = [1.0, 2.0]
    kappa2 = 0.01

    [[points]]                # optional explicit points, after the grid's
    theory = "gp"
    P = 20
    width = 50
    kappa2 = 0.1

    [run]                     # how to run it
    continuation = "P"        # warm-start along this axis
    detect_branches = false   # forward + backward pass, flag differing points
    # branches = "all"        # "posterior" or "all": every stationary point from several starts, classified
    # ratios = [30.0, 0.05]   #   and named by branch (Sweep(branches=...), not with detect_branches)
    batch = true              # vmap equal shapes, a chunk per device (false: one by one)
    chunk_size = 256          # most chains per vmapped batch (default 256; 16 with an executor)

    [solver]                  # keyword options of adaptive_kernels.solve (spec.SOLVER_OPTIONS)
    solver = "fixed-point"    # or "gradient"
    space = "auto"            # "weight", "function"
    implicit = true
    # adaptive theory: form = "auto" | "weight" | "kernel" | "conjugate",
    # measure = "gaussian" | "second_order" (form = "conjugate"), samples = 20000, seed = 0

Checks, in order: TOML syntax; table and key names; every value's type and range (point
parameters against spec.POINT_PARAMETERS, solver options against spec.SOLVER_OPTIONS);
the combined points (gamma or chi, required keys); then one point of each kind (theory,
depth, activation) is traced through ``adaptive_kernels.solve`` without solving
(``engine.preflight``), which reports the combinations the library rejects (e.g.
``space = "weight"`` with an erf activation) at the [solver] line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path

from adaptive_kernels.sweep.spec import (
    POINT_PARAMETERS,
    DigitsData,
    ParameterError,
    SolverOptionError,
    Sweep,
    TeacherData,
    check_kind,
    check_parameter,
    check_solver_option,
    grid,
    normalise_point,
)

TABLES = ("data", "grid", "points", "run", "solver")
RUN_KEYS = {"continuation": "str", "detect_branches": "bool", "batch": "bool", "chunk_size": "int", "branches": "str",
            "ratios": "list"}
DATA_KINDS = {"teacher": TeacherData, "digits": DigitsData}


class ConfigError(ValueError):
    """A problem in a sweep configuration file, located by key and line."""


_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\"' -]+?)\s*\]")


def _line_of(text: str, table: str | None, key: str | None = None, index: int = 0) -> int | None:
    """1-based line of ``key`` in ``[table]`` (the ``index``-th ``[[table]]``), or of the header."""
    current, seen, header_line = None, -1, None
    pattern = None if key is None else re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(line)
        if match:
            current = match.group(2).strip("\"' ")
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        in_table = current == table and (table is None or seen == index)
        if in_table and pattern is not None and pattern.match(line):
            return number
    return header_line


class _Locator:
    """Turns a (table, key, message) into a ConfigError that names the file and line."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def error(self, table: str | None, key: str | None, message: str, index: int = 0) -> ConfigError:
        line = _line_of(self.text, table, key, index)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        name = key if key is not None else f"[{table}]"
        if table == "points":
            name = f"points[{index}]" + ("" if key is None else f".{key}")
        return ConfigError(f"{where}: {name}: {message}")


def _check_table(loc: _Locator, doc: dict, table: str, expected) -> dict:
    value = doc.get(table, {} if expected is dict else [])
    if not isinstance(value, expected):
        kind = "a table [" + table + "]" if expected is dict else "an array of tables [[" + table + "]]"
        raise loc.error(None, table, f"must be {kind}")
    return value


def _data_recipe(loc: _Locator, table: dict):
    kind = table.get("kind", "teacher")
    if kind not in DATA_KINDS:
        raise loc.error("data", "kind", f"must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
    cls = DATA_KINDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key != "kind" and key not in fields:
            raise loc.error("data", key, f"unknown key for kind = {kind!r}; known: kind, {', '.join(sorted(fields))}")
    try:
        return cls(**{k: v for k, v in table.items() if k != "kind"})
    except ParameterError as err:
        raise loc.error("data", err.key, str(err).split(": ", 1)[1]) from None


def _points(loc: _Locator, grid_table: dict, point_tables: list) -> list[dict]:
    for key, values in grid_table.items():
        for value in values if isinstance(values, list) else [values]:
            try:
                check_parameter(key, value)
            except ParameterError as err:
                raise loc.error("grid", key, str(err).split(": ", 1)[1]) from None
    points = grid(**grid_table) if grid_table else []
    for i, table in enumerate(point_tables):
        if not isinstance(table, dict):
            raise loc.error(None, "points", "must be an array of tables [[points]]")
        for key, value in table.items():
            try:
                check_parameter(key, value)
            except ParameterError as err:
                raise loc.error("points", key, str(err).split(": ", 1)[1], index=i) from None
        points.append(dict(table))
    if not points:
        raise loc.error(None, None, "no points: give a [grid] table or [[points]] entries")
    return points


def _sweep(loc: _Locator, points: list, n_grid: int, recipe, run: dict, solver: dict) -> Sweep:
    """Build the Sweep; an error about a combined point is located at its table."""
    try:
        return Sweep(points, recipe, run.get("continuation"), run.get("detect_branches", False), solver,
                     branches=run.get("branches"), ratios=run.get("ratios", (30.0,)))
    except ParameterError as err:
        message = str(err).split(": ", 1)[1]
        if isinstance(err, SolverOptionError):
            raise loc.error("solver", err.key, message) from None
        if err.key in ("continuation", "detect_branches", "branches", "ratios"):
            raise loc.error("run", err.key, message) from None
        bad = _first_bad_point(points)
        if bad is not None and bad >= n_grid:
            raise loc.error("points", err.key, message, index=bad - n_grid) from None
        raise loc.error("grid", err.key, message) from None


def _first_bad_point(points: list) -> int | None:
    for i, p in enumerate(points):
        try:
            normalise_point(p)
        except ParameterError:
            return i
    return None


def _check_solver_options(loc: _Locator, solver: dict) -> None:
    """Names, types and values of the [solver] table against spec.SOLVER_OPTIONS."""
    for key, value in solver.items():
        try:
            check_solver_option(key, value)
        except ParameterError as err:
            raise loc.error("solver", key, str(err).split(": ", 1)[1]) from None


def _check_solvable(loc: _Locator, sweep: Sweep, n_grid: int, solver: dict) -> None:
    """Combinations the library rejects (e.g. space = "weight" with erf), found by tracing one
    point of each kind (engine.preflight), located at the [solver] key the message names, else
    at the [solver] table, else at the point's table."""
    from adaptive_kernels.sweep.engine import PreflightError, preflight

    try:
        preflight(sweep)
    except PreflightError as err:
        key = err.key if err.key in solver else None
        if key is not None or solver:
            raise loc.error("solver", key, err.message) from None
        if err.index >= n_grid:
            raise loc.error("points", None, err.message, index=err.index - n_grid) from None
        raise loc.error("grid", None, err.message) from None


def load_config(path: str | os.PathLike) -> tuple[Sweep, dict]:
    """Read and check a sweep file: (Sweep, run options ``{"batch", "chunk_size"}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    text = path.read_text()
    loc = _Locator(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for table in doc:
        if table not in TABLES:
            raise loc.error(table, None, f"unknown table; known: {', '.join(TABLES)}")
    data = _check_table(loc, doc, "data", dict)
    grid_table = _check_table(loc, doc, "grid", dict)
    point_tables = _check_table(loc, doc, "points", list)
    run = _check_table(loc, doc, "run", dict)
    solver = _check_table(loc, doc, "solver", dict)
    for key, value in run.items():
        if key not in RUN_KEYS:
            raise loc.error("run", key, f"unknown key; known: {', '.join(RUN_KEYS)}")
        kind = RUN_KEYS[key]
        if kind == "bool" and not isinstance(value, bool):
            raise loc.error("run", key, f"must be true or false, got {value!r}")
        if kind == "list" and not isinstance(value, list):
            raise loc.error("run", key, f"must be a list, got {value!r}")
        if kind not in ("bool", "list"):
            try:
                check_kind(key, value, kind)
            except ParameterError as err:
                raise loc.error("run", key, str(err).split(": ", 1)[1]) from None
    if "chunk_size" in run and run["chunk_size"] <= 0:
        raise loc.error("run", "chunk_size", f"must be a positive integer, got {run['chunk_size']}")
    _check_solver_options(loc, solver)
    continuation = run.get("continuation")
    if continuation is not None and continuation not in POINT_PARAMETERS:
        raise loc.error("run", "continuation", f"must name a point parameter, got {continuation!r}")
    recipe = _data_recipe(loc, data)
    points = _points(loc, grid_table, point_tables)
    n_grid = len(points) - len(point_tables)
    sweep = _sweep(loc, points, n_grid, recipe, run, solver)
    _check_solvable(loc, sweep, n_grid, solver)
    return sweep, {key: run[key] for key in ("batch", "chunk_size") if key in run}
