"""Sweeps: a vmapped batch against loops of single solves, and over forced host devices."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import jax
import numpy as np

from adaptive_kernels.sweep import Sweep, TeacherData, grid, run_sweep

from bench.timing import REPO, time_calls
from bench.cases.common import Config, Section, log, seconds


def _sweep(points: int) -> Sweep:
    side = int(round(math.sqrt(points)))
    gammas = list(np.linspace(1.0, 2.0, side))
    kappas = list(np.geomspace(1e-3, 1e-1, points // side))
    return Sweep(grid(theory="adaptive", activation="linear", width=200, P=60, gamma=gammas, kappa2=kappas),
                 data=TeacherData("linear", d=10, P_test=200))


def _same_tables(a, b, columns=("learnability", "action")) -> tuple[bool, str]:
    worst = max(float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy()) / np.maximum(np.abs(b[c].to_numpy()), 1)))
                for c in columns)
    same_status = bool(np.all(a["converged"].to_numpy() == b["converged"].to_numpy()))
    return worst <= 1e-8 and same_status, f"max diff in {', '.join(columns)} {worst:.1e} <= 1e-8; converged flags equal: {same_status}"


SWEEP_TIMEOUT_S = {"full": 300, "quick": 120, "tiny": 60}


def sweeps(cfg: Config) -> Section:
    """vmapped batch vs Python loops over the same points; one chunk per forced host device.

    Both run in subprocesses with a time limit: a sweep that stops making progress (the
    mesh-sharded batch once did, every thread waiting on a futex) must not stop the benchmark.
    """
    points = cfg.sweep_points
    sweep = _sweep(points)
    n = len(sweep.points)
    sec = Section(
        f"Sweeps: {n} points (adaptive, linear net d=10, N=200, P=60; gamma x kappa2 grid)",
        "`run_sweep(batch=True)` (one vmapped, jitted solve with the default solver, the fixed point with "
        "exact Newton steps for these linear nets) vs `run_sweep(batch=False)` (a loop of jitted single solves with the same solver), in a "
        "subprocess. Compile = first call - median of later calls. "
        "Iterations: mean / max over the points; a vmapped batch runs until its slowest point has converged "
        "(converged points wait), so max / mean bounds what the batch loses to lock-step. Multi-device: a "
        "subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=2` runs the vmapped sweep on 1 and on 2 "
        "host devices (one chunk per device, each device its own loops; on a CPU the forced devices share the "
        "same cores, so this measures the dispatch, not extra hardware). Check: every table agrees with the "
        "reference (learnability and action to 1e-8 relative, converged flags equal) before its time is reported. "
        f"Each subprocess is stopped after {SWEEP_TIMEOUT_S[cfg.name]} s.",
        ["mode", "compile", "run (median)", "per point", "iterations", "speed-up", "check"],
    )
    for devices, kind in ((1, "loop-vs-batch"), (2, "multi-device")):
        log(f"sweeps: {kind} subprocess ({n} points, {devices} host device(s))")
        result = _sweep_subprocess(kind, cfg, devices)
        if result is None:
            sec.rows.append([kind, "-", "-", "-", "-", "-",
                             sec.check(kind, False, f"no result within {SWEEP_TIMEOUT_S[cfg.name]} s")])
            continue
        ref = result["modes"][0]
        for mode in result["modes"]:
            is_ref = mode is ref
            sec.rows.append([
                mode["name"], seconds(mode["compile"]), f"{seconds(mode['median'])} (n={mode['repeats']})",
                seconds(mode["median"] / n), f"{mode['iterations_mean']:.0f} / {mode['iterations_max']}",
                "1" if is_ref else f"{ref['median'] / mode['median']:.2f}x",
                "(reference)" if is_ref else sec.check(f"{kind}: {mode['name']}", mode["same"], mode["detail"]),
            ])
    return sec


def _sweep_subprocess(kind: str, cfg: Config, devices: int) -> dict | None:
    """Run :func:`sweep_worker` in a subprocess (with ``devices`` forced host devices); None on timeout."""
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    try:
        out = subprocess.run([sys.executable, "-m", "bench.run", "--sweep-worker", kind, cfg.name], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True, timeout=SWEEP_TIMEOUT_S[cfg.name])
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep_worker(kind: str, cfg: Config) -> dict:
    """Time several ways of running the same sweep; compare each table with the first's.

    ``kind``: "loop-vs-batch" (loops of single solves vs the vmapped batch) or "multi-device"
    (the vmapped batch on 1 vs 2 devices).
    """
    sweep = _sweep(cfg.sweep_points)
    if kind == "loop-vs-batch":
        modes = {"loop (batch=False)": (sweep, dict(batch=False)),
                 "vmap batch (batch=True)": (sweep, dict(batch=True))}
    else:
        devices = jax.devices()
        if len(devices) < 2:
            raise RuntimeError(f"multi-device worker needs 2 devices, has {len(devices)}")
        modes = {"vmap batch, 1 forced host device": (sweep, dict(devices=devices[:1])),
                 "vmap batch, 2 forced host devices": (sweep, dict(devices=devices[:2]))}
    return {"modes": _time_modes(modes, cfg)}


def _time_modes(modes: dict, cfg: Config) -> list[dict]:
    """Time each ``name -> (sweep, run_sweep options)``; check each table against the first's."""
    results, reference = [], None
    for name, (which, options) in modes.items():
        timing, table = time_calls(lambda: run_sweep(which, **options), repeats=cfg.repeats)
        reference = table if reference is None else reference
        same, detail = _same_tables(table, reference)
        results.append({"name": name, "compile": timing.compile_s, "median": timing.median,
                        "repeats": timing.repeats, "iterations_mean": float(table["iterations"].mean()),
                        "iterations_max": int(table["iterations"].max()), "same": same, "detail": detail})
    return results


def _warm_worker(sweep: Sweep) -> None:
    """Compile, on a worker, the vmapped solves its batches of 16 chains use."""
    run_sweep(sweep, chunk_size=16)


def local_cluster_worker(cfg: Config, workers: int = 2) -> dict:
    """The vmapped sweep in this process vs on a dask ``LocalCluster`` of ``workers`` worker
    processes (``run_sweep(executor=client)``: batches of 16 chains spread over the workers,
    rows written by this process), in the form of :func:`sweep_worker`'s result.

    Which worker gets which batch is the scheduler's choice, so every worker is warmed up
    first (``client.run``: each compiles the sweep's batches); the cluster's compile column
    is that warm-up's wall time. Not wired into ``bench/run.py`` yet: as a third kind of
    ``--sweep-worker`` ("local-cluster") it gives the 64-point LocalCluster row.
    """
    from dask.distributed import Client, LocalCluster

    sweep = _sweep(cfg.sweep_points)
    env = {"PYTHONPATH": str(REPO), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=env) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        client.run(_warm_worker, sweep)
        warm_up = time.perf_counter() - start
        modes = {"vmap batch, this process": (sweep, {}),
                 f"dask LocalCluster, {workers} worker processes": (sweep, {"executor": client})}
        results = _time_modes(modes, cfg)
    results[1]["compile"] = warm_up
    return {"modes": results}
