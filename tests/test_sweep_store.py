"""The results store: damaged files healed, concurrent runs sharing one store (issue #20)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptive_kernels.cli import main as cli_main
from adaptive_kernels.sweep import Sweep, SweepWarning, TeacherData, grid, load_config, run_sweep
from adaptive_kernels.sweep.store import HOST, ResultStore
from test_sweep import gp_closed_form  # tests/ is on sys.path under pytest

ROOT = Path(__file__).resolve().parents[1]
# The shapes of tests/test_sweep.py (d=6, P=8, N=30, batches of 2): compiled once per process.
RECIPE = TeacherData("linear", d=6, P_test=30)
POINTS = grid(theory=["gp", "scaling"], P=8, width=30, gamma=[1.0, 2.0], kappa2=[0.1, 0.2])
COLUMNS = ["learnability", "test_mse", "action", "converged", "iterations"]


@pytest.fixture(scope="module")
def sweep():
    return Sweep(POINTS, RECIPE)


@pytest.fixture(scope="module")
def reference(sweep):
    """The table of a clean run with nothing on disk."""
    return run_sweep(sweep, chunk_size=2)


def _stored_in_parts(sweep, out: Path) -> list[Path]:
    """Solve the sweep as two shares (which never consolidate): 4 part files of 2 points each."""
    for share in range(2):
        run_sweep(sweep, out, chunk_size=2, part=(share, 2))
    parts = sorted(out.with_name(out.name + ".parts").glob("part-*.parquet"))
    assert len(parts) == 4 and not out.exists()
    return parts


def _assert_same_table(table, reference):
    # Same process, same batches of two, same solver: the rows must agree to round-off.
    assert list(table["key"]) == list(reference["key"])
    np.testing.assert_allclose(table[COLUMNS].astype(float), reference[COLUMNS].astype(float), rtol=0, atol=1e-10)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:  # random bytes, same length
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))


@pytest.mark.parametrize("how", ["truncated", "emptied", "random bytes"])
def test_damaged_part_is_set_aside_and_only_its_points_solved_again(sweep, reference, tmp_path, how):
    out = tmp_path / "res.parquet"
    parts = _stored_in_parts(sweep, out)
    victim = parts[1]
    lost = set(pd.read_parquet(victim)["key"])
    kept = pd.concat([pd.read_parquet(p) for p in parts if p != victim])
    _damage(victim, how)
    with pytest.warns(SweepWarning, match=r"res\.parquet\.parts/part-\w+\.parquet: damaged .*moved to .*res\.parquet\.damaged"):
        table = run_sweep(sweep, out, chunk_size=2)
    assert table.attrs["solved"] == len(lost) == 2
    solved_now = table[table["run"] == table.attrs["run"]]
    assert set(solved_now["key"]) == lost
    runs = dict(zip(table["key"], table["run"]))
    assert all(runs[key] == run for key, run in zip(kept["key"], kept["run"]))  # kept, not solved again
    _assert_same_table(table, reference)
    assert len(list((tmp_path / "res.parquet.damaged").iterdir())) == 1
    assert not (tmp_path / "res.parquet.parts").exists()
    _assert_same_table(pd.read_parquet(out), reference)


def test_damaged_part_through_the_cli_is_one_warning_line(tmp_path, capsys):
    # Before the store healed itself: "Could not open Parquet input source", exit 2, until the
    # part was deleted by hand. Now: one warning line, exit 0, the table complete.
    config = tmp_path / "c.toml"
    config.write_text('[data]\nd = 6\nP_test = 30\n\n[grid]\ntheory = "gp"\nP = 8\nwidth = 30\n'
                      "gamma = [1.0, 2.0]\nkappa2 = [0.1, 0.2]\n\n[run]\nchunk_size = 2\n")
    out = tmp_path / "c.parquet"
    for share in ("0/2", "1/2"):
        assert cli_main(["sweep", str(config), "--out", str(out), "--no-progress", "--part", share]) == 0
    part = sorted((tmp_path / "c.parquet.parts").glob("part-*.parquet"))[0]
    _damage(part, "truncated")
    capsys.readouterr()
    assert cli_main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "damaged" in captured.err, captured.err
    assert re.search(r"4 points -> .* \(2 solved now, 2 reused", captured.out), captured.out
    assert len(pd.read_parquet(out)) == 4


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_damaged_final_output_is_set_aside_and_solved_again(sweep, reference, tmp_path, suffix):
    out = tmp_path / f"res{suffix}"
    run_sweep(sweep, out, chunk_size=2)
    data = out.read_bytes()
    # Parquet: the footer is gone. CSV: the last row is cut in the middle (its run column is empty).
    out.write_bytes(data[: len(data) // 2] if suffix == ".parquet" else data[: data.rstrip().rfind(b",") - 3])
    with pytest.warns(SweepWarning, match=rf"res\{suffix}: damaged"):
        table = run_sweep(sweep, out, chunk_size=2)
    assert table.attrs["solved"] == len(reference)
    _assert_same_table(table, reference)
    reread = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    _assert_same_table(reread, reference)


def test_claims_are_exclusive_and_taken_over_from_dead_runs(tmp_path):
    out = tmp_path / "claims.parquet"
    a, b = ResultStore(out), ResultStore(out)
    a.register("run-a", {})
    b.register("run-b", {})
    try:
        assert a.claim("chain0") and a.claim("chain0")  # ours, and stays ours
        assert not b.claim("chain0")  # held by a live run
        assert b.claim("chain1") and not a.claim("chain1")
        # a run of this host whose process is gone: its claims go to the first run that asks
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(done.stdout)
        (a.runs / "run-dead.json").write_text(json.dumps({"host": HOST, "pid": dead_pid}))
        (a.claims / "chain2.0").write_text("run-dead")
        assert b.claim("chain2") and not a.claim("chain2")
        assert (a.claims / "chain2.1").read_text() == "run-b"
        # a run on another host is alive while its heartbeat is recent, dead after STALE_AFTER_S
        other = a.runs / "run-far.json"
        other.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
        (a.claims / "chain3.0").write_text("run-far")
        assert not b.claim("chain3")
        os.utime(other, (time.time() - 1000, time.time() - 1000))
        assert b.claim("chain3")
        # leaving: the claims of a run that has left are free
        a.unregister(cleanup=True)
        assert b.claim("chain0") and (b.claims / "chain0.1").read_text() == "run-b"
        assert b.parts.exists()  # b is still registered: a did not remove the parts
    finally:
        a.unregister(cleanup=True)
        b.unregister(cleanup=True)
    assert not b.parts.exists()


def test_run_waits_for_chains_another_live_run_holds(sweep, reference, tmp_path):
    # A second "run" (another ResultStore in this process, alive) claims the first point's
    # chain. run_sweep must solve the other points, wait, and take the first point's row from
    # the store once the other run has written it: solved = all points but that one.
    out = tmp_path / "wait.parquet"
    other = ResultStore(out)
    other.register("other-run", {})
    first_key = sweep.keys()[0]
    from adaptive_kernels.sweep.engine import _chain_id

    assert other.claim(_chain_id([first_key]))
    result = {}
    thread = threading.Thread(target=lambda: result.update(table=run_sweep(sweep, out, chunk_size=2)))
    thread.start()
    deadline = time.monotonic() + 120
    while len(other.finished()) < len(POINTS) - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(other.finished()) == len(POINTS) - 1 and thread.is_alive()  # everything but the claimed point
    row = reference[reference["key"] == first_key].assign(run="other-run")
    other.write_part(row)
    thread.join(timeout=60)
    other.unregister(cleanup=False)
    table = result["table"]
    assert table.attrs["solved"] == len(POINTS) - 1
    assert table.loc[table["key"] == first_key, "run"].item() == "other-run"
    _assert_same_table(table, reference)


CONCURRENT_CONFIG = """
[data]
d = 6
P_test = 30

[grid]
theory = "gp"
P = 8
seed = [0, 1]
width = 30
gamma = [1.0, 2.0]
kappa2 = [0.1, 0.2]

[run]
chunk_size = 2
"""


def test_two_concurrent_runs_into_one_output_share_the_work(tmp_path):
    # Before: the first run to finish removed the parts folder and the other died ("No such
    # file or directory: ...parquet.parts/.part-....tmp"). Now both finish, every point is
    # solved by exactly one of them, and the table holds every point once, each equal to
    # the NNGP's closed form (numpy; tolerance 1e-10: float64 round-off at condition ~1e4).
    config = tmp_path / "conc.toml"
    config.write_text(CONCURRENT_CONFIG)
    out = tmp_path / "conc.parquet"
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    command = [sys.executable, "-m", "adaptive_kernels.cli", "sweep", str(config), "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    solved = [int(re.search(r"\((\d+) solved now", stdout).group(1)) for stdout, _ in results]
    sweep, _ = load_config(config)
    assert sum(solved) == len(sweep.points) == 8, (solved, results)
    table = pd.read_parquet(out)
    assert list(table["key"]) == sweep.keys() and table["converged"].all()
    for point, (_, row) in zip(sweep.points, table.iterrows()):
        expected = gp_closed_form(point, sweep.data)
        assert row["learnability"] == pytest.approx(expected["learnability"], abs=1e-10)
        assert row["test_mse"] == pytest.approx(expected["test_mse"], abs=1e-10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conc.parquet", "conc.toml"]  # no parts, lock, damage
