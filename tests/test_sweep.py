"""Sweeps: batched rows vs independent computations, sharding, resumability, config errors, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptive_kernels.cli import main as cli_main
from adaptive_kernels.sweep import ConfigError, Sweep, TeacherData, build_problem, grid, load_config, run_sweep
from adaptive_kernels.sweep.engine import _merge_branches

ROOT = Path(__file__).resolve().parents[1]
OBSERVABLES = ["learnability", "test_mse", "action"]
RECIPE = TeacherData("linear", d=6, P_test=30)


@pytest.fixture(scope="module")
def gp_sweep():
    return Sweep(grid(theory="gp", P=[6, 12], gamma=[1.0, 1.5, 2.0], width=40, kappa2=[1e-2, 1e-1]), RECIPE)


@pytest.fixture(scope="module")
def gp_table(gp_sweep):
    return run_sweep(gp_sweep)


def test_gp_rows_match_numpy_closed_form(gp_sweep, gp_table):
    # Independent: for a linear net the NNGP kernel is c s_w2 x.x'/d with c = s_a2 N**(1-gamma)
    # (THEORY.md sec. 3), and GP regression is a linear solve; numpy in float64.
    # Tolerance 1e-10: both are the same float64 linear algebra up to round-off (cond ~ 1e4).
    assert len(gp_table) == len(gp_sweep.points)
    for point, (_, row) in zip(gp_sweep.points, gp_table.iterrows()):
        assert row["P"] == point["P"] and row["gamma"] == point["gamma"] and row["kappa2"] == point["kappa2"]
        data = build_problem(point, RECIPE).data
        X, y, Xt, yt = (np.asarray(a) for a in (data.X, data.y, data.X_test, data.y_test))
        c = point["s_a2"] * point["width"] ** (1 - point["gamma"])
        K, Kx = c * X @ X.T / X.shape[1], c * Xt @ X.T / X.shape[1]
        f = Kx @ np.linalg.solve(K + point["kappa2"] * np.eye(len(y)), y)
        assert row["learnability"] == pytest.approx(f @ yt / (yt @ yt), abs=1e-10)
        assert row["test_mse"] == pytest.approx(np.mean((f - yt) ** 2), abs=1e-10)
        assert bool(row["converged"]) and row["status_message"] == "converged"


def test_batched_rows_equal_one_by_one(gp_sweep, gp_table):
    # vmap over 6 points per shape (batch_size column) vs a loop of unbatched jitted solves:
    # identical math, only reduction order may differ; 1e-10 absolute.
    looped = run_sweep(gp_sweep, batch=False)
    assert (gp_table["batch_size"] == 6).all() and (looped["batch_size"] == 1).all()
    assert list(looped["key"]) == list(gp_table["key"])
    np.testing.assert_allclose(looped[OBSERVABLES], gp_table[OBSERVABLES], rtol=0, atol=1e-10)


def _env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false "
        "intra_op_parallelism_threads=1"
    )
    return env


SHARDED_SCRIPT = """
import sys, jax
import adaptive_kernels
from adaptive_kernels.sweep import Sweep, TeacherData, grid, run_sweep
assert jax.device_count() == 2, jax.devices()
sweep = Sweep(grid(theory="gp", P=[6, 12], gamma=[1.0, 1.5, 2.0], width=40, kappa2=[1e-2, 1e-1]),
              TeacherData("linear", d=6, P_test=30))
run_sweep(sweep, sys.argv[1])
"""


def test_two_device_sharded_sweep_matches_single_device(gp_table, tmp_path):
    # XLA_FLAGS must be set before JAX starts: a subprocess with two host devices; 6 points per
    # shape are padded to 6 (a multiple of 2) and split 3 + 3. Same math, 1e-10 absolute.
    out = tmp_path / "sharded.parquet"
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(out)], env=_env(2), cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    sharded = pd.read_parquet(out)
    assert list(sharded["key"]) == list(gp_table["key"])
    np.testing.assert_allclose(sharded[OBSERVABLES], gp_table[OBSERVABLES], rtol=0, atol=1e-10)


KILL_CONFIG = """
[data]
d = 5
P_test = 20

[grid]
theory = "gp"
P = [3, 4, 5, 6, 7, 8, 9, 10]
width = 30
gamma = [1.0, 2.0]
kappa2 = 0.05

[run]
chunk_size = 1
"""


def test_kill_minus_nine_then_resume(tmp_path):
    # 8 shapes x 2 points, one point per part file, each shape compiled anew: the run takes
    # seconds, so SIGKILL lands after the first part and (almost always) before the end.
    config = tmp_path / "kill.toml"
    config.write_text(KILL_CONFIG)
    out = tmp_path / "kill.parquet"
    parts = tmp_path / "kill.parquet.parts"
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptive_kernels.cli", "sweep", str(config), "--out", str(out), "--no-progress"],
        env=_env(1), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    survivors = pd.concat([pd.read_parquet(p) for p in parts.glob("part-*.parquet")])
    assert 1 <= len(survivors) < 16 and survivors["key"].is_unique
    assert not out.exists()

    sweep, options = load_config(config)
    table = run_sweep(sweep, out, **options)
    assert len(table) == 16 and table["key"].is_unique
    assert set(table["key"]) == set(sweep.keys())
    first_run = table[table["run"] != table.attrs["run"]]
    assert set(first_run["key"]) == set(survivors["key"])  # kept, not recomputed
    assert (table["run"] == table.attrs["run"]).sum() == 16 - len(survivors)  # the rest, once each
    assert not parts.exists()
    reread = pd.read_parquet(out)
    pd.testing.assert_frame_equal(reread, table, check_like=False)


def _error_for(tmp_path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


GOOD = """[data]
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
    text = GOOD.replace(bad_line, replacement)
    line = text.splitlines().index(replacement) + 1
    error = _error_for(tmp_path, text)
    assert f"bad.toml:{line}: {key}: " in error and message in error, error


def test_config_errors_on_combined_points_and_tables(tmp_path):
    both = GOOD.replace("gamma = [1.0, 2.0]", "gamma = [1.0, 2.0]\nchi = 2.0")
    assert f"bad.toml:{both.splitlines().index('chi = 2.0') + 1}: chi: give gamma or chi" in _error_for(tmp_path, both)
    missing = GOOD.replace("kappa2 = 0.01\n", "")
    assert f"bad.toml:{missing.splitlines().index('[grid]') + 1}: kappa2: is required" in _error_for(tmp_path, missing)
    extra = GOOD + "\n[solvers]\nmax_steps = 10\n"
    assert f"bad.toml:{extra.splitlines().index('[solvers]') + 1}: [solvers]: unknown table" in _error_for(
        tmp_path, extra
    )
    point = GOOD + '\n[[points]]\ntheory = "gp"\nP = 5\nwidth = 10\nkappa2 = 0.0\n'
    line = point.splitlines().index("kappa2 = 0.0") + 1
    assert f"bad.toml:{line}: points[0].kappa2: must be positive" in _error_for(tmp_path, point)
    assert "not valid TOML" in _error_for(tmp_path, GOOD + "\nP = = 3\n")


def test_example_config_loads():
    sweep, options = load_config(ROOT / "examples" / "sweep_example.toml")
    assert len(sweep.points) == 3 * 4 * 2 and sweep.continuation == "P"
    assert options == {"batch": True, "chunk_size": 256}


def test_cli_sweep_and_plot_write_files(tmp_path, capsys):
    config = tmp_path / "cli.toml"
    config.write_text("[data]\nd = 4\nP_test = 10\n\n[grid]\ntheory = \"gp\"\nP = [4, 6]\nwidth = 10\n"
                      "gamma = [1.0, 2.0]\nkappa2 = 0.1\n")
    out = tmp_path / "cli.parquet"
    assert cli_main(["sweep", str(config), "--out", str(out), "--csv", "--no-progress"]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    expected = {"key", "theory", "P", "width", "gamma", "chi", "kappa2", "learnability", "test_mse",
                "action", "status", "converged", "iterations", "wall_time", "teacher", "d"}
    assert expected <= set(table.columns) and len(table) == 4
    figure = tmp_path / "fig.png"
    assert cli_main(["plot", str(out.with_suffix(".csv")), "--x", "P", "--y", "learnability", "--hue",
                     "gamma", "--out", str(figure), "--logx"]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 1000
    assert cli_main(["plot", str(out.with_suffix(".csv")), "--x", "P", "--y", "nope"]) == 2
    assert "--y: no column 'nope'" in capsys.readouterr().err


def test_branch_merge_keeps_lower_action_and_flags_difference():
    # Synthetic forward/backward results (hand-built, no solver): two different Sigma -> flagged,
    # lower action kept; equal Sigma -> not flagged.
    base = {"converged": True, "status": 0}
    fwd = ({**base, "action": 3.0}, {"Sigma": np.eye(2)})
    bwd = ({**base, "action": 2.5}, {"Sigma": 2 * np.eye(2)})
    row = _merge_branches(fwd, bwd)
    assert row["branch"] == "backward" and row["multiple_branches"] and row["branch_action_gap"] == 0.5
    same = _merge_branches(fwd, ({**base, "action": 3.0}, {"Sigma": np.eye(2)}))
    assert same["branch"] == "forward" and not same["multiple_branches"]
    unconverged = _merge_branches(({**base, "converged": False, "action": 1.0}, {"Sigma": np.eye(2)}), bwd)
    assert unconverged["branch"] == "backward"
