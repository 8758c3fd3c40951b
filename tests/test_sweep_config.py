"""Solver options of a sweep checked before anything is solved, with file:line (issue #20)."""

from __future__ import annotations

import inspect

import pytest

from adaptive_kernels import api, theories
from adaptive_kernels.actions.adaptive import SPACES
from adaptive_kernels.cli import main as cli_main
from adaptive_kernels.solvers import QuasiNewton
from adaptive_kernels.sweep import (
    SOLVER_OPTIONS,
    ConfigError,
    ParameterError,
    PreflightError,
    Sweep,
    TeacherData,
    grid,
    load_config,
    run_sweep,
)

GOOD = """[data]
d = 4
P_test = 10

[grid]
theory = ["scaling", "adaptive"]
activation = "erf"
P = 6
width = 20
kappa2 = 0.1

[solver]
solver = "fixed-point"
space = "auto"
implicit = true
"""


def _error_for(tmp_path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


@pytest.mark.parametrize(
    "line, replacement, message",
    [
        ("implicit = true", 'implicit = "maybe"', "implicit: must be true or false, got 'maybe'"),
        ("implicit = true", "implicit = 1", "implicit: must be true or false, got 1"),
        ('solver = "fixed-point"', 'solver = "newton"',
         "solver: must be one of 'fixed-point', 'gradient' or a solver object, got 'newton'"),
        ('solver = "fixed-point"', "solver = 3", "solver: must be one of 'fixed-point', 'gradient' or a solver object, got 3"),
        ('space = "auto"', 'space = "foo"', "space: must be one of 'auto', 'weight', 'function', got 'foo'"),
        ("implicit = true", 'linear_solver = "cg"', "linear_solver: must be a Python object (Python API only"),
        ("implicit = true", "maxiter = 10", "maxiter: unknown option of adaptive_kernels.solve; known: solver, implicit,"),
        ("implicit = true", "samples = 0", "samples: must be a positive integer, got 0"),
        ("implicit = true", 'form = "primal"', "form: must be one of 'auto', 'weight', 'kernel', 'conjugate', got 'primal'"),
        # combinations the library rejects, found by tracing one point of each kind (no solve)
        ('space = "auto"', 'space = "weight"',
         "space: point 1 (theory='adaptive', depth=1, activation='erf'): space='weight' needs a linear activation"),
    ],
)
def test_solver_option_errors_name_file_line_and_key(tmp_path, line, replacement, message):
    text = GOOD.replace(line, replacement)
    number = text.splitlines().index(replacement) + 1
    error = _error_for(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'bad.toml'}:{number}: ") and message in error, error


def test_good_config_loads_with_its_options(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    sweep, options = load_config(path)
    assert sweep.solver_options == {"solver": "fixed-point", "space": "auto", "implicit": True} and options == {}


def test_cli_reports_a_bad_option_in_one_line_and_solves_nothing(tmp_path, capsys):
    # Before: solver = "newton" failed at solve time, after other batches had been solved and
    # written, without file:line. Now: exit 2, one line, nothing written.
    config = tmp_path / "bad.toml"
    config.write_text(GOOD.replace('solver = "fixed-point"', 'solver = "newton"'))
    out = tmp_path / "res.parquet"
    assert cli_main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    line = GOOD.splitlines().index('solver = "fixed-point"') + 1
    assert err.count("\n") == 1 and f"bad.toml:{line}: solver:" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_python_api_checks_options_too(tmp_path):
    points = grid(theory="adaptive", activation="erf", P=6, width=20, kappa2=0.1)
    recipe = TeacherData("linear", d=4, P_test=10)
    with pytest.raises(ParameterError, match="^solver: must be one of 'fixed-point', 'gradient'"):
        Sweep(points, recipe, options={"solver": "newton"})
    with pytest.raises(ParameterError, match="^implicit: must be true or false"):
        Sweep(points, recipe, options={"implicit": "yes"})
    assert Sweep(points, recipe, options={"solver": QuasiNewton()}).solver_options["solver"] == QuasiNewton()
    bad = Sweep(points, recipe, options={"space": "weight"})
    out = tmp_path / "res.parquet"
    with pytest.raises(PreflightError, match="needs a linear activation.*; nothing was solved"):
        run_sweep(bad, out)
    assert not list(tmp_path.iterdir())


def test_solver_options_match_the_library():
    # The sweep's table of options against the library's own signatures and registries: it
    # fails when they drift apart (a renamed keyword, a new solver name).
    keywords = set(inspect.signature(api.solve).parameters) | set(inspect.signature(theories.Adaptive).parameters)
    for name in SOLVER_OPTIONS:
        assert name in keywords, name
    assert set(SOLVER_OPTIONS["solver"].choices) == set(api.SOLVERS)
    assert set(SOLVER_OPTIONS["space"].choices) == set(SPACES)
    assert set(SOLVER_OPTIONS["form"].choices) == set(theories.FORMS)
    assert set(SOLVER_OPTIONS["measure"].choices) == set(theories.MEASURES)


# --- point and table mistakes -----------------------------------------------------------------------------------
POINT_TABLES_GOOD = """[data]
teacher = "cubic"
d = 8

[grid]
theory = ["gp", "scaling"]
P = [10, 20]
width = 50
gamma = [1.0, 2.0]
kappa2 = 0.01

[run]
continuation = "P"
"""


@pytest.mark.parametrize(
    "bad_line, key, message",
    [
        ('gamma = [1.0, 2.0]', "gamma", "must lie in [0.0, 3.0], got 3.5"),
        ("kappa2 = 0.01", "kappa2", "must be positive, got -0.01"),
        ("width = 50", "width", "must be a positive integer, got 0"),
        ("P = [10, 20]", "P", "must be an integer"),
        ("width = 50", "wdth", "unknown parameter"),
        ('teacher = "cubic"', "teacher", "unknown teacher 'quartic'"),
        ("d = 8", "P_tset", "unknown key"),
        ('continuation = "P"', "continuation", "must name a point parameter"),
        ('continuation = "P"', "batch", "must be true or false"),
    ],
)
def test_config_errors_name_key_and_line(tmp_path, bad_line, key, message):
    replacement = {
        "gamma": "gamma = [1.0, 3.5]",
        "kappa2": "kappa2 = -0.01",
        "width": "width = 0",
        "P": 'P = [10, 20.5]',
        "wdth": "wdth = 50",
        "teacher": 'teacher = "quartic"',
        "P_tset": "P_tset = 100",
        "continuation": 'continuation = "depthh"',
        "batch": 'batch = "yes"',
    }[key]
    text = POINT_TABLES_GOOD.replace(bad_line, replacement)
    line = text.splitlines().index(replacement) + 1
    error = _error_for(tmp_path, text)
    assert f"bad.toml:{line}: {key}: " in error and message in error, error


def test_config_errors_on_combined_points_and_tables(tmp_path):
    both = POINT_TABLES_GOOD.replace("gamma = [1.0, 2.0]", "gamma = [1.0, 2.0]\nchi = 2.0")
    assert f"bad.toml:{both.splitlines().index('chi = 2.0') + 1}: chi: give gamma or chi" in _error_for(tmp_path, both)
    missing = POINT_TABLES_GOOD.replace("kappa2 = 0.01\n", "")
    assert f"bad.toml:{missing.splitlines().index('[grid]') + 1}: kappa2: is required" in _error_for(tmp_path, missing)
    extra = POINT_TABLES_GOOD + "\n[solvers]\nmax_steps = 10\n"
    assert f"bad.toml:{extra.splitlines().index('[solvers]') + 1}: [solvers]: unknown table" in _error_for(
        tmp_path, extra
    )
    point = POINT_TABLES_GOOD + '\n[[points]]\ntheory = "gp"\nP = 5\nwidth = 10\nkappa2 = 0.0\n'
    line = point.splitlines().index("kappa2 = 0.0") + 1
    assert f"bad.toml:{line}: points[0].kappa2: must be positive" in _error_for(tmp_path, point)
    assert "not valid TOML" in _error_for(tmp_path, POINT_TABLES_GOOD + "\nP = = 3\n")
