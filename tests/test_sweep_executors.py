"""run_sweep on executors: a local process pool and a dask.distributed LocalCluster, with
workers killed in the middle of a batch (issues #19, #20)."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from dask.distributed import Client, LocalCluster

from adaptive_kernels.cli import main as cli_main
from adaptive_kernels.sweep import Sweep, SweepError, SweepWarning, TeacherData, grid, run_sweep
from adaptive_kernels.sweep.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
# Worker processes import adaptive_kernels from this checkout and this module (for KillOnMarker).
WORKER_ENV = {
    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}
# One shape (kernel scaling of a linear net, the shapes of test_sweep.py, batches of two):
# every worker compiles one vmapped solve.
RECIPE = TeacherData("linear", d=6, P_test=30)
POINTS = grid(theory="scaling", P=8, width=30, gamma=[1.0, 2.0], kappa2=[0.1, 0.2])
COLUMNS = ["learnability", "test_mse", "action", "converged", "iterations"]


@dataclasses.dataclass(frozen=True)
class KillOnMarker(TeacherData):
    """TeacherData that kills (SIGKILL) the first worker process that builds a data set while
    ``marker`` exists, from inside its batch; the driver process (pid ``driver``) is spared.
    The marker is renamed away first (atomic: exactly one process dies). Its points have the
    keys of the plain recipe (``describe`` is TeacherData's), so stored rows are recognised."""

    marker: str = ""
    driver: int = 0

    def make(self, P: int, seed: int):
        if os.getpid() != self.driver:
            try:
                os.rename(self.marker, self.marker + ".taken")
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().make(P, seed)

    def describe(self) -> dict:
        return TeacherData(self.teacher, self.d, self.P_test, self.eps, self.noise).describe()


@pytest.fixture(scope="module")
def sweep():
    return Sweep(POINTS, RECIPE)


@pytest.fixture(scope="module")
def reference(sweep):
    """The table of this process, without an executor."""
    return run_sweep(sweep, chunk_size=2)


def _assert_same_table(table, reference):
    # Tolerance 1e-10: another process runs the same jitted solve on the same batches of two;
    # they may differ only at round-off (measured: 3e-14).
    assert list(table["key"]) == list(reference["key"]) and table["converged"].all()
    np.testing.assert_allclose(table[COLUMNS].astype(float), reference[COLUMNS].astype(float), rtol=0, atol=1e-10)


def _half_stored(out: Path, reference):
    """A store that already holds the first two points (an earlier, interrupted run)."""
    out.with_name(out.name + ".parts").mkdir()
    earlier = reference.iloc[:2].assign(run="earlier")
    ResultStore(out).write_part(earlier)
    return set(earlier["key"])


def _killing_sweep(tmp_path) -> tuple[Sweep, Path]:
    marker = tmp_path / "kill-marker"
    marker.touch()
    killing = Sweep(POINTS, KillOnMarker("linear", 6, 30, marker=str(marker), driver=os.getpid()))
    return killing, marker


def test_process_pool_runs_the_batches_and_a_broken_pool_is_one_line(sweep, reference, tmp_path):
    # One spawned worker (spawn: no fork of a process running JAX threads); several workers
    # are the dask test's business.
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        table = run_sweep(sweep, tmp_path / "pool.parquet", executor=pool, chunk_size=2)
        _assert_same_table(table, reference)
        assert table.attrs["solved"] == 4 and not table["worker"].str.endswith(f":{os.getpid()}").any()
        # A worker killed inside a batch breaks a concurrent.futures pool for good: the batch
        # and its resubmissions fail, the failure is reported in one line, nothing stored is lost.
        out = tmp_path / "broken.parquet"
        earlier = _half_stored(out, reference)
        killing, marker = _killing_sweep(tmp_path)
        with pytest.raises(SweepError) as err, pytest.warns(SweepWarning, match="BrokenProcessPool"):
            run_sweep(killing, out, executor=pool, chunk_size=2, retries=1)
        assert not marker.exists()
        message = str(err.value)
        assert "\n" not in message and "2 points in 1 batches were not solved" in message, message
        assert "failed 2 times, last: BrokenProcessPool" in message, message
    finally:
        pool.shutdown(cancel_futures=True)
    resumed = run_sweep(sweep, out, chunk_size=2)  # in this process: only the two missing points
    assert resumed.attrs["solved"] == 2
    assert set(resumed.loc[resumed["run"] == "earlier", "key"]) == earlier
    _assert_same_table(resumed, reference)


@pytest.fixture(scope="module")
def client():
    # allowed-failures = 0: dask itself does not reschedule a task whose worker died; the
    # future fails with KilledWorker and the sweep engine's own retry has to resubmit it.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=WORKER_ENV, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_local_cluster_matches_one_process(client, sweep, reference, tmp_path):
    workers = {f":{pid}" for pid in client.run(os.getpid).values()}
    for name, executor in (("client", client), ("executor", client.get_executor())):
        table = run_sweep(sweep, tmp_path / f"{name}.parquet", executor=executor, chunk_size=2)
        _assert_same_table(table, reference)
        assert table.attrs["solved"] == 4
        assert {w[w.rindex(":"):] for w in table["worker"]} <= workers  # solved on the cluster


CLI_CONFIG = """
[data]
d = 6
P_test = 30

[grid]
theory = "scaling"
P = 8
width = 30
gamma = [1.0, 2.0]
kappa2 = [0.1, 0.2]

[run]
chunk_size = 2
"""


def test_cli_scheduler_option(client, reference, tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text(CLI_CONFIG)
    out = tmp_path / "cli.parquet"
    address = client.scheduler.address
    assert cli_main(["sweep", str(config), "--out", str(out), "--no-progress", "--scheduler", address]) == 0
    assert "4 points" in capsys.readouterr().out
    table = pd.read_parquet(out)
    _assert_same_table(table, reference)
    assert not table["worker"].str.endswith(f":{os.getpid()}").any()
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if dask were not installed
    assert cli_main(["sweep", str(config), "--out", str(out), "--scheduler", address]) == 2
    assert "--scheduler needs dask.distributed: pip install 'adaptive_kernels[dask]'" in capsys.readouterr().err


def test_dask_worker_killed_mid_batch_is_retried(client, reference, tmp_path):
    out = tmp_path / "killed.parquet"
    earlier = _half_stored(out, reference)
    killing, marker = _killing_sweep(tmp_path)
    with pytest.warns(SweepWarning, match=r"failed on attempt 1 of 3 \(KilledWorker"):
        table = run_sweep(killing, out, executor=client, chunk_size=2)
    assert not marker.exists() and Path(f"{marker}.taken").exists()  # a worker did die
    assert table.attrs["solved"] == 2  # no point lost, none stored before solved again
    assert set(table.loc[table["run"] == "earlier", "key"]) == earlier
    assert (table.loc[~table["key"].isin(earlier), "run"] == table.attrs["run"]).all()
    _assert_same_table(table, reference)
