"""Sweeps: batched rows vs independent computations, sharding, resumability, config errors, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import numpy as np
import pandas as pd
import pytest

from adaptive_kernels.api import solve, summarize
from adaptive_kernels.cli import main as cli_main
from adaptive_kernels.sweep import Sweep, TeacherData, build_regime, grid, load_config, run_sweep
from adaptive_kernels.sweep.engine import _merge_branches

ROOT = Path(__file__).resolve().parents[1]
RECIPE = TeacherData("linear", d=6, P_test=30)
# Float observables every theory reports; iterations are left out on purpose: the solvers'
# Cauchy termination (rtol 1e-13) stops at round-off level, where batched and unbatched
# arithmetic differ in the last bits, so the *count* of final tiny steps can differ.
OBSERVABLES = ["learnability", "test_mse", "train_mse", "action", "kernel_eigenvalue_ratio_1"]


def _regimes(**extra):
    return grid(theory=["gp", "scaling", "adaptive"], P=8, gamma=[1.0, 2.0], width=30, kappa2=[1e-2, 1e-1],
                **extra)


@pytest.fixture(scope="module")
def sweep():
    return Sweep(_regimes(), RECIPE)


@pytest.fixture(scope="module")
def table(sweep):
    # chunk_size=2: batches of 2 points, the size of the continuation test's steps (jit cache hits)
    return run_sweep(sweep, chunk_size=2)


@eqx.filter_jit
def _individual(arch, data, kappa2, theory):
    """The public API on one point (jitted once per theory, no batching)."""
    return summarize(solve(arch, data, kappa2, theory=theory), arch, data, kappa2)


def test_rows_equal_individual_solves(sweep, table):
    # 4 points per theory solved in vmapped pairs vs adaptive_kernels.solve + summarize one
    # point at a time. Tolerance 1e-10: both stop at stationarity residual <= 1e-8 on a
    # well-conditioned minimum, and the batched arithmetic differs only at round-off.
    assert len(table) == 12 and (table["batch_size"] == 2).all()
    for point, (_, row) in zip(sweep.points, table.iterrows()):
        assert all(row[k] == v for k, v in point.items())
        regime = build_regime(point, RECIPE)
        single = _individual(regime.arch, regime.data, regime.kappa2, point["theory"])
        assert bool(row["converged"]) and bool(single["converged"]), row["status_message"]
        for name in OBSERVABLES + (["eigenvalue_ratio_1"] if point["theory"] == "adaptive" else []):
            value = single[name[:-2]][0] if name.endswith("_1") else single[name]  # summarize: per-layer lists
            assert row[name] == pytest.approx(float(value), rel=0, abs=1e-10), name


def gp_closed_form(point: dict, recipe) -> dict:
    """Learnability and test MSE of a linear net's NNGP, from numpy (float64).

    Independent of the library's solvers: for a linear net the NNGP kernel is
    c s_w2 x.x'/d with c = s_a2 N**(1-gamma) (THEORY.md sec. 3), and GP regression is a
    linear solve.
    """
    data = build_regime(point, recipe).data
    X, y, Xt, yt = (np.asarray(a) for a in (data.X, data.y, data.X_test, data.y_test))
    c = point["s_a2"] * point["width"] ** (1 - point["gamma"]) * point["s_w2"]
    K, Kx = c * X @ X.T / X.shape[1], c * Xt @ X.T / X.shape[1]
    f = Kx @ np.linalg.solve(K + point["kappa2"] * np.eye(len(y)), y)
    return {"learnability": f @ yt / (yt @ yt), "test_mse": np.mean((f - yt) ** 2)}


def test_gp_rows_match_numpy_closed_form(sweep, table):
    # Tolerance 1e-10: the same float64 linear algebra up to round-off (condition ~ 1e4).
    for point, (_, row) in zip(sweep.points, table.iterrows()):
        if point["theory"] != "gp":
            continue
        expected = gp_closed_form(point, RECIPE)
        assert row["learnability"] == pytest.approx(expected["learnability"], abs=1e-10)
        assert row["test_mse"] == pytest.approx(expected["test_mse"], abs=1e-10)


def test_continuation_warm_starts_reach_the_cold_solutions(table):
    # Continuation along kappa2 (shapes fixed): the kappa2 = 0.1 point of each chain starts from
    # the kappa2 = 0.01 solution (s or Sigma); gp has no order parameters to pass on. With
    # detect_branches a backward pass runs each chain the other way. Every row must land on the
    # cold-start solution of the fixture (one branch here); tolerance 1e-7 in the observables,
    # from the solver's stationarity tolerance 1e-8 times the curvature.
    forward = run_sweep(Sweep(_regimes(), RECIPE, continuation="kappa2"))
    expected_warm = (forward["theory"] != "gp") & (forward["kappa2"] == 0.1)
    assert (forward["warm_start"] == expected_warm).all()
    both = run_sweep(Sweep(_regimes(), RECIPE, continuation="kappa2", detect_branches=True))
    assert not both["multiple_branches"].any() and (both["branch_gap"] < 1e-6).all()
    for result in (forward, both):
        assert result["converged"].all()
        np.testing.assert_allclose(result[OBSERVABLES], table[OBSERVABLES], rtol=0, atol=1e-7)


def _env() -> dict:
    return dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


# 15 adaptive points of the size that hung when the batch was laid out over a 2-device mesh
# (d=10, P=60, N=200: every iteration's stopping test was a cross-device reduction).
MULTI_DEVICE_SWEEP = dict(
    points=grid(theory="adaptive", P=60, width=200, gamma=[1.0, 1.25, 1.5, 2.0], kappa2=[1e-3, 1e-2, 3e-2, 1e-1])[:15],
    data=dict(teacher="linear", d=10, P_test=30),
)
TWO_DEVICE_SCRIPT = """
import json, sys, jax
import adaptive_kernels
from adaptive_kernels.sweep import Sweep, TeacherData, run_sweep
assert jax.device_count() == 2, jax.devices()
spec = json.loads(sys.argv[2])
run_sweep(Sweep(spec["points"], TeacherData(**spec["data"])), sys.argv[1], chunk_size=16)
"""


def test_two_device_sweep_matches_single_device(tmp_path):
    # XLA_FLAGS must be set before JAX starts: a subprocess with two host devices splits the
    # 15-point batch into chunks of 8 (the second padded by one repeated point, dropped
    # afterwards), one per device. Reference: this process's single-device 15-point batch, a
    # different vmap width and lane grouping. The timeout turns a hang into a failure.
    # Tolerance 1e-10 relative (and absolute for values near 0): each lane stops at
    # stationarity residual <= 1e-10 on a well-conditioned minimum, and the two batchings
    # differ only at round-off (eigenvalue ratios ~10 differ by ~2e-10 absolute).
    out = tmp_path / "two_devices.parquet"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.Popen([sys.executable, "-c", TWO_DEVICE_SCRIPT, str(out), json.dumps(MULTI_DEVICE_SWEEP)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sweep = Sweep(MULTI_DEVICE_SWEEP["points"], TeacherData(**MULTI_DEVICE_SWEEP["data"]))
        single = run_sweep(sweep, chunk_size=16)
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert (single["batch_size"] == 15).all() and single["converged"].all()
    two = pd.read_parquet(out)
    assert list(two["key"]) == list(single["key"]) and two["converged"].all()
    columns = OBSERVABLES + ["eigenvalue_ratio_1"]
    np.testing.assert_allclose(two[columns], single[columns], rtol=1e-10, atol=1e-10)


SHARE_SCRIPT = """
import json, sys
from adaptive_kernels.sweep import Sweep, TeacherData, run_sweep
spec = json.loads(sys.argv[2])
share = run_sweep(Sweep(spec["points"], TeacherData(**spec["data"])), sys.argv[1], part=(int(sys.argv[3]), 2))
print(json.dumps(list(share["key"])))
"""


def test_shares_in_two_processes_merge_into_the_full_table(sweep, table, tmp_path):
    # Two processes (standing in for two hosts on a shared file system) each solve one share
    # into the same store at the same time; a final unpartitioned run must solve nothing and
    # write the table of the whole sweep, equal to the single-process table (independent
    # computation of the same points) to 1e-10: both use the same solver, and points are
    # batched differently only at round-off.
    out = tmp_path / "shares.parquet"
    spec = json.dumps(dict(points=_regimes(), data=dict(teacher="linear", d=6, P_test=30)))
    procs = [subprocess.Popen([sys.executable, "-c", SHARE_SCRIPT, str(out), spec, str(i)], env=_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    shares = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == sorted(table["key"])
    assert not out.exists()  # shares never consolidate
    merged = run_sweep(sweep, out)
    assert (merged["run"] != merged.attrs["run"]).all(), "the merge run solved points again"
    assert list(merged["key"]) == list(table["key"]) and out.exists()
    np.testing.assert_allclose(merged[OBSERVABLES], table[OBSERVABLES], rtol=1e-10, atol=1e-10)
    for bad in [(2, 2), (0, 0), (-1, 2), (0.0, 2), 3]:
        with pytest.raises(ValueError, match="part must be"):
            run_sweep(sweep, out, part=bad)
    with pytest.raises(ValueError, match="part: a share"):
        run_sweep(sweep, None, part=(0, 2))


def test_devices_must_be_local_and_nonempty():
    with pytest.raises(ValueError, match="^devices: must name at least one"):
        run_sweep(Sweep(_regimes(), RECIPE), devices=[])


KILL_CONFIG = """
[data]
d = 5
P_test = 20

[grid]
theory = "gp"
P = [3, 4, 5, 6, 7]
width = 30
gamma = [1.0, 2.0]
kappa2 = 0.05

[run]
chunk_size = 1
"""


def test_kill_minus_nine_then_resume(tmp_path):
    # 5 shapes x 2 points, one point per part file, each shape compiled anew: the run takes
    # seconds, so SIGKILL lands after the first part and (almost always) before the end.
    config = tmp_path / "kill.toml"
    config.write_text(KILL_CONFIG)
    out = tmp_path / "kill.parquet"
    parts = tmp_path / "kill.parquet.parts"
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptive_kernels.cli", "sweep", str(config), "--out", str(out), "--no-progress"],
        env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    survivors = pd.concat([pd.read_parquet(p) for p in parts.glob("part-*.parquet")])
    assert 1 <= len(survivors) < 10 and survivors["key"].is_unique
    assert not out.exists()

    sweep, options = load_config(config)
    table = run_sweep(sweep, out, **options)
    assert len(table) == 10 and table["key"].is_unique
    assert set(table["key"]) == set(sweep.keys())
    first_run = table[table["run"] != table.attrs["run"]]
    assert set(first_run["key"]) == set(survivors["key"])  # kept, not recomputed
    assert (table["run"] == table.attrs["run"]).sum() == 10 - len(survivors)  # the rest, once each
    assert not parts.exists()
    reread = pd.read_parquet(out)
    pd.testing.assert_frame_equal(reread, table, check_like=False)


def test_example_config_loads():
    sweep, options = load_config(ROOT / "examples" / "sweep_example.toml")
    assert len(sweep.points) == 3 * 4 * 2 and sweep.continuation == "P"
    assert options == {"batch": True} and sweep.solver_options == {"solver": "fixed-point", "space": "auto"}


def test_cli_sweep_and_plot_write_files(tmp_path, capsys):
    config = tmp_path / "cli.toml"
    config.write_text("[data]\nd = 6\nP_test = 30\n\n[grid]\ntheory = \"gp\"\nP = 8\nwidth = 30\n"
                      "gamma = [1.0, 2.0]\nkappa2 = [0.1, 0.2]\n\n[run]\nchunk_size = 2\n")
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


def test_chains_order_along_the_continuation_axis():
    # Hand-checked: chi = N**(gamma - 1) with N = 100 gives gamma = 1.5 for chi = 10, so along
    # gamma the chain is [gamma 1.0, chi 10 (gamma 1.5), gamma 2.0]; kappa2 splits the chains;
    # a duplicated point is solved once.
    points = [dict(P=5, width=100, kappa2=k, **g) for k in (0.1, 0.2)
              for g in ({"gamma": 2.0}, {"chi": 10.0}, {"gamma": 1.0})]
    sweep = Sweep(points + [points[0]], continuation="gamma")
    chains = sweep.chains()
    assert [[2, 1, 0], [5, 4, 3]] == chains
    assert len(set(sweep.keys())) == 6 and sweep.keys()[6] == sweep.keys()[0]
    assert Sweep(points).chains() == [[i] for i in range(6)]
    assert grid(P=[1, 2], kappa2=0.1, theory=["gp", "scaling"]) == [
        {"P": p, "kappa2": 0.1, "theory": t} for p in (1, 2) for t in ("gp", "scaling")
    ]
