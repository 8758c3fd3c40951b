"""Sweeps: a vmapped batch against a loop, and over forced host devices."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

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
    """vmapped batch vs a Python loop over the same points; forced host devices.

    Both run in subprocesses with a time limit: during development the vmapped ``run_sweep``
    once stopped making progress (every thread waiting on a futex), and a benchmark must finish.
    """
    points = cfg.sweep_points
    sweep = _sweep(points)
    n = len(sweep.points)
    sec = Section(
        f"Sweeps: {n} points (adaptive, linear net d=10, N=200, P=60; gamma x kappa2 grid)",
        "`run_sweep(batch=True)` (one vmapped, jitted solve) vs `run_sweep(batch=False)` (the same jitted "
        "solver point by point), in a subprocess. Compile = first call - median of later calls. Multi-device: a "
        "subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=2` runs the vmapped sweep sharded "
        "over 1 and over 2 host devices (on a CPU they share the same cores, so this measures the sharding "
        "machinery, not extra hardware). Check: the tables agree (learnability and action to 1e-8 relative, "
        f"converged flags equal) before the times are reported. Each subprocess is stopped after "
        f"{SWEEP_TIMEOUT_S[cfg.name]} s.",
        ["mode", "compile", "run (median)", "per point", "speed-up", "check"],
    )
    for devices, kind in ((1, "loop-vs-batch"), (2, "multi-device")):
        log(f"sweeps: {kind} subprocess ({n} points, {devices} host device(s))")
        result = _sweep_subprocess(kind, cfg, devices)
        if result is None:
            sec.rows.append([kind, "-", "-", "-", "-", sec.check(kind, False, f"no result within {SWEEP_TIMEOUT_S[cfg.name]} s")])
            continue
        detail = sec.check(kind, result["same"], result["detail"])
        (ref_name, ref), (name, other) = result["timings"]
        sec.rows.append([ref_name, seconds(ref["compile"]), f"{seconds(ref['median'])} (n={ref['repeats']})",
                         seconds(ref["median"] / n), "1", "(reference)"])
        sec.rows.append([name, seconds(other["compile"]), f"{seconds(other['median'])} (n={other['repeats']})",
                         seconds(other["median"] / n), f"{ref['median'] / other['median']:.2f}x", detail])
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
    """Time two ways of running the same sweep and compare their tables.

    ``kind``: "loop-vs-batch" (batch=False vs batch=True) or "multi-device" (vmapped on 1 vs 2 devices).
    """
    sweep = _sweep(cfg.sweep_points)
    if kind == "loop-vs-batch":
        modes = {"loop (batch=False)": dict(batch=False), "vmap batch (batch=True)": dict(batch=True)}
    else:
        devices = jax.devices()
        if len(devices) < 2:
            raise RuntimeError(f"multi-device worker needs 2 devices, has {len(devices)}")
        modes = {"vmap batch, 1 forced host device": dict(devices=devices[:1]),
                 "vmap batch, 2 forced host devices": dict(devices=devices[:2])}
    timings, tables = [], []
    for name, options in modes.items():
        timing, table = time_calls(lambda: run_sweep(sweep, **options), repeats=cfg.repeats)
        timings.append((name, {"compile": timing.compile_s, "median": timing.median, "repeats": timing.repeats}))
        tables.append(table)
    same, detail = _same_tables(tables[1], tables[0])
    return {"timings": timings, "same": same, "detail": detail}
