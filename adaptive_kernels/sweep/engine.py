"""Solving many regimes at once: vmap over points, shard over devices, continue along an axis.

Points whose regimes have the same PyTree structure and array shapes (same theory, P,
d, depth, widths, activation) form a batch that one jitted ``eqx.filter_vmap`` of the
solver handles. A batch is split into one equal chunk per device (padded by repeating its
last point; the padding is dropped afterwards); each chunk is put on its device and the
same jitted solve is dispatched there. JAX dispatch is asynchronous, so the devices solve
their chunks concurrently, and no device waits on another inside the solver loops: each
runs its own vmapped while loops to its own stopping point. (A batch laid out over a
``jax.sharding.Mesh`` instead turns every loop's stopping test into a cross-device
reduction; over forced host devices sharing a CPU's thread pool that deadlocked.) The
devices are this process's (``jax.local_devices()``): one CPU, several GPUs of a host; in
a multi-host JAX cluster each process takes one share of the sweep (``part``, by default
``(jax.process_index(), jax.process_count())``) into a shared results store, and one
unpartitioned run afterwards merges the shares without solving anything again.
``batch=False`` solves the same points one at a time (same jitted solver, unbatched), for
comparison and benchmarks.

Continuation: along an ordered axis (e.g. P) the solution of a point is the initial
guess of the next (``init=`` of the solver) whenever the order parameters keep their
shape (the d x d Sigma of the adaptive kernel does; a P x P kernel does not, and then the
point starts cold and ``warm_start`` says so). Running each chain forward and backward and
comparing reveals points with more than one solution branch (hysteresis).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pandas as pd

from adaptive_kernels.api import solve, summarize
from adaptive_kernels.architectures import FCN
from adaptive_kernels.data import Dataset
from adaptive_kernels.solvers import QuasiNewton
from adaptive_kernels.solvers.solution import Status
from adaptive_kernels.sweep.spec import POINT_PARAMETERS, Sweep, axis_value
from adaptive_kernels.sweep.store import KEY, ResultStore

BRANCH_RTOL = 1e-6  # order parameters of two passes differing by more than this: two branches


class Regime(eqx.Module):
    """One regime as arrays: architecture, data and kappa2 (a PyTree; stackable)."""

    arch: FCN
    data: Dataset
    kappa2: jnp.ndarray


def build_regime(point: dict, recipe) -> Regime:
    """The architecture, data set and kappa2 of a normalised point."""
    data = recipe.make(point["P"], point["seed"])
    scaling = {"chi": point["chi"]} if "chi" in point else {"gamma": point["gamma"]}
    arch = FCN(
        data.d, (point["width"],) * point["depth"], point["activation"], point["s_w2"], point["s_a2"], **scaling
    )
    return Regime(arch, data, jnp.asarray(point["kappa2"], dtype=data.X.dtype))


def _solve_point(regime: Regime, init, theory: str, options: dict):
    """``adaptive_kernels.solve`` then ``summarize`` for one point: (order parameters, scalars)."""
    arch, data, kappa2 = regime.arch, regime.data, regime.kappa2
    solution = solve(arch, data, kappa2, theory=theory, init=init, **options)
    scalars = summarize(solution, arch, data, kappa2)
    del scalars["theory"]  # a string; the table has it as a parameter column
    return solution.value, scalars


_solve_one = eqx.filter_jit(_solve_point)


# Under vmap, quasi-Newton's Newton steps on a materialised (dense) Hessian deadlocked XLA's
# CPU runtime (jaxlib 0.10.2, >= ~6 adaptive points, even on one device: every thread idle).
# Two-layer points use the default FixedPoint (no Hessian; 64 points: same table as the loop
# to 1e-12). Deep points (whose default is quasi-Newton) get matrix-free CG Newton steps.
VMAP_SAFE_SOLVER = QuasiNewton(linear_solver=lx.CG(rtol=1e-8, atol=0.0, max_steps=200))


@eqx.filter_jit
def _solve_stacked(regimes: Regime, inits, theory: str, options: dict):
    if theory != "gp" and "solver" not in options and regimes.arch.depth > 1:
        options = {**options, "solver": VMAP_SAFE_SOLVER}
    return eqx.filter_vmap(_solve_point, in_axes=(0, 0, None, None))(regimes, inits, theory, options)


def shape_signature(regime: Regime, theory: str) -> tuple:
    """Points with equal signatures can be stacked and vmapped together."""
    leaves, treedef = jax.tree_util.tree_flatten(regime)
    return (theory, treedef, tuple((np.shape(x), np.dtype(x.dtype).str) for x in leaves))


def _stack(trees: Sequence[Any], size: int):
    """Stack equal-structure PyTrees along a new axis 0, padded to ``size`` by repeating the last."""
    trees = list(trees) + [trees[-1]] * (size - len(trees))
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _unstack(tree, n: int) -> list:
    return [jax.tree.map(lambda x: x[i], tree) for i in range(n)]


def local_devices(devices: Sequence | None) -> list:
    """The devices a sweep spreads its batches over: ``jax.local_devices()`` by default.

    Only devices this process can address take part (a chunk is ``jax.device_put`` on one).
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: must name at least one JAX device, got an empty sequence")
    foreign = [device for device in devices if device.process_index != jax.process_index()]
    if foreign:
        raise ValueError(
            f"devices: {foreign} belong to other processes; a sweep runs on this process's devices "
            "(jax.local_devices())"
        )
    return devices


class _Runner:
    """Solves lists of same-signature regimes, vmapped in one chunk per device, or one by one."""

    def __init__(self, theory: str, options: dict, batch: bool, devices: list):
        self.theory, self.options, self.batch, self.devices = theory, options, batch, devices
        self._value_shapes: dict[tuple, Any] = {}

    def __call__(self, regimes: list[Regime], inits: list | None):
        n = len(regimes)
        if not self.batch:
            outs = [
                _solve_one(p, None if inits is None else inits[i], self.theory, self.options)
                for i, p in enumerate(regimes)
            ]
            outs = jax.device_get(outs)
            return [o[0] for o in outs], [o[1] for o in outs]
        devices = self.devices[:n]  # no device gets a chunk of padding only
        per_device = math.ceil(n / len(devices))
        stacked = (_stack(regimes, per_device * len(devices)),
                   None if inits is None else _stack(inits, per_device * len(devices)))
        pending = []
        for k, device in enumerate(devices):
            chunk = jax.tree.map(lambda x: x[k * per_device : (k + 1) * per_device], stacked)
            # asynchronous dispatch: returns at once, so the devices run their chunks concurrently
            pending.append(_solve_stacked(*jax.device_put(chunk, device), self.theory, self.options))
        values, scalars = jax.tree.map(lambda *chunks: np.concatenate(chunks), *jax.device_get(pending))
        return _unstack(values, n), _unstack(scalars, n)

    def fits_as_init(self, value, regime: Regime) -> bool:
        """True if ``value`` has the structure and shapes of this regime's order parameters."""
        if value is None:
            return False
        signature = shape_signature(regime, self.theory)
        if signature not in self._value_shapes:
            self._value_shapes[signature] = eqx.filter_eval_shape(
                _solve_point, regime, None, self.theory, self.options
            )[0]
        cold = self._value_shapes[signature]
        same = jax.tree.structure(value) == jax.tree.structure(cold)
        return same and all(np.shape(a) == b.shape for a, b in zip(jax.tree.leaves(value), jax.tree.leaves(cold)))


def _python_scalars(scalars: dict) -> dict:
    out = {}
    for name, x in scalars.items():
        x = np.asarray(x)
        out[name] = x.item() if x.size == 1 else x.tolist()
    return out


def _run_chains(runner: _Runner, chains: list[list[Regime]], axis: str | None):
    """Solve a batch of equally shaped chains step by step, each step warm-started from the last.

    Returns per chain a list of (row dict, order-parameter value) per step.
    """
    results = [[] for _ in chains]
    values = None
    for step in range(len(chains[0])):
        regimes = [chain[step] for chain in chains]
        warm = values is not None and runner.fits_as_init(values[0], regimes[0])
        if values is not None and not warm and values[0] is not None:
            warnings.warn(
                f"continuation over {axis}: the {runner.theory!r} order parameters change shape "
                "along it, so these points start cold (warm_start = False)",
                stacklevel=3,
            )
        start = time.perf_counter()
        values, scalars = runner(regimes, values if warm else None)
        wall = (time.perf_counter() - start) / len(regimes)
        for j in range(len(chains)):
            row = _python_scalars(scalars[j])
            row.update(
                status_message=Status(row["status"]).message,
                warm_start=bool(warm),
                wall_time=wall,
                batch_size=len(regimes) if runner.batch else 1,
            )
            results[j].append((row, values[j]))
    return results


def _branch_gap(forward, backward) -> float:
    """Largest relative difference of two solutions' order parameters (0 when there are none)."""
    leaves_f, leaves_b = jax.tree.leaves(forward), jax.tree.leaves(backward)
    if not leaves_f:
        return 0.0
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, float(np.max(np.abs(a)))))
        for a, b in zip(leaves_f, leaves_b)
    )


def _merge_branches(forward: tuple, backward: tuple) -> dict:
    """Keep the converged solution of lower action; flag the point if the passes differ."""
    (row_f, value_f), (row_b, value_b) = forward, backward
    gap = _branch_gap(value_f, value_b)

    def rank(row):
        action = row["action"] if np.isfinite(row["action"]) else np.inf
        return (not row["converged"], action)

    keep_backward = rank(row_b) < rank(row_f)
    row = dict(row_b if keep_backward else row_f)
    row.update(
        branch="backward" if keep_backward else "forward",
        multiple_branches=bool(gap > BRANCH_RTOL),
        branch_gap=gap,
        branch_action_gap=float(row_f["action"] - row_b["action"]),
    )
    return row


def _batches(sweep: Sweep, chains: list[list[int]], regimes: dict, chunk_size: int):
    """Chains grouped by their sequence of shape signatures, in chunks of at most chunk_size."""
    groups: dict[tuple, list[list[int]]] = {}
    for chain in chains:
        sig = tuple(shape_signature(regimes[i], sweep.points[i]["theory"]) for i in chain)
        groups.setdefault(sig, []).append(chain)
    for group in groups.values():
        for start in range(0, len(group), chunk_size):
            yield group[start : start + chunk_size]


def _parameter_columns(point: dict) -> dict:
    """Every point parameter in POINT_PARAMETERS order, gamma and chi both resolved."""
    resolved = {**point, "gamma": axis_value(point, "gamma"), "chi": axis_value(point, "chi")}
    return {name: resolved[name] for name in POINT_PARAMETERS}


def run_sweep(
    sweep: Sweep,
    out: str | os.PathLike | None = None,
    *,
    batch: bool = True,
    chunk_size: int = 256,
    devices: Sequence | None = None,
    part: tuple[int, int] | None = None,
    progress: bool | Callable = False,
) -> pd.DataFrame:
    """Solve every point of ``sweep``: a tidy table, one row per point, in the sweep's order.

    Args:
        sweep: the points, data recipe, continuation axis and solver options.
        out: results file (``.parquet``, or ``.csv``). Finished batches are saved as they
            complete in ``<out>.parts/``; a re-run skips points already there or in ``out``;
            at the end the table of exactly this sweep's points is written to ``out`` (rows
            of other sweeps found there are not carried over). ``None``: nothing is written.
        batch: vmap points of equal shapes, one chunk per device of ``devices`` (True), or
            solve them one by one (False).
        chunk_size: most chains solved in one vmapped call (bounds memory).
        devices: JAX devices of this process to spread batches over (default:
            ``jax.local_devices()``).
        part: ``(i, n)``: solve only share i of n (every n-th continuation chain, starting
            at the i-th; shares are disjoint and cover the sweep) into the store of ``out``,
            and return that share's rows without consolidating. Run the n shares on n hosts
            (or processes) with the same ``out`` on a shared file system, then
            ``run_sweep(sweep, out)`` once: it finds every point finished and writes the
            table. Default: ``(jax.process_index(), jax.process_count())``, i.e. the whole
            sweep in a single process and one share per process in a multi-host cluster.
        progress: show a tqdm progress bar (or pass a tqdm-like class).

    Columns: ``key``, every parameter (gamma and chi both, resolved), the data recipe
    (with the input dimension ``d`` and test-set size ``P_test`` of the data actually drawn),
    the observables of ``adaptive_kernels.summarize``, ``status``, ``status_message``,
    ``converged``, ``iterations``, ``grad_norm``, ``action``, ``warm_start``,
    ``wall_time`` (seconds per point, the batch's time shared out), ``batch_size``, ``run``
    (which invocation computed the row; this one's is ``table.attrs["run"]``); with ``detect_branches`` also ``branch``,
    ``multiple_branches``, ``branch_gap``, ``branch_action_gap``.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    devices = local_devices(devices)
    share, shares = _check_part((jax.process_index(), jax.process_count()) if part is None else part)
    if shares > 1 and out is None:
        raise ValueError("part: a share of a sweep needs out= (the store the shares are merged from)")
    keys = sweep.keys()
    store = ResultStore(out) if out is not None else None
    done = set(store.finished()[KEY]) if store is not None else set()
    if store is not None:
        store.start({"data": sweep.data.describe(), "continuation": sweep.continuation,
                     "options": sweep.solver_options, "keys": keys}, clean=shares == 1)
    mine = [c for k, c in enumerate(sweep.chains()) if k % shares == share]
    chains = [c for c in mine if any(keys[i] not in done for i in c)]
    todo = sorted(i for c in chains for i in c if keys[i] not in done)
    regimes = {i: build_regime(sweep.points[i], sweep.data) for c in chains for i in c}
    recipe = sweep.data.describe()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    runners: dict[str, _Runner] = {}
    rows: dict[str, dict] = {}

    bar = _progress_bar(progress, len(todo))
    try:
        for group in _batches(sweep, chains, regimes, chunk_size):
            theory = sweep.points[group[0][0]]["theory"]
            runner = runners.setdefault(theory, _Runner(theory, sweep.solver_options, batch, devices))
            forward = _run_chains(runner, [[regimes[i] for i in c] for c in group], sweep.continuation)
            if sweep.detect_branches:
                backward = _run_chains(runner, [[regimes[i] for i in c[::-1]] for c in group], sweep.continuation)
                merged = [[_merge_branches(f, b) for f, b in zip(fw, bw[::-1])] for fw, bw in zip(forward, backward)]
            else:
                merged = [[row for row, _ in fw] for fw in forward]
            new = {}
            for chain, chain_rows in zip(group, merged):
                for i, row in zip(chain, chain_rows):
                    if keys[i] not in done:
                        data = regimes[i].data
                        new[keys[i]] = {KEY: keys[i], **_parameter_columns(sweep.points[i]), **recipe,
                                        "d": data.d, "P_test": data.X_test.shape[0], **row, "run": run_id}
            if store is not None and new:
                store.write_part(pd.DataFrame(list(new.values())))
            rows.update(new)
            bar.update(len(new))
    finally:
        bar.close()
    if shares > 1:
        ordered = list(dict.fromkeys(keys[i] for c in mine for i in c))
        table = store.finished().set_index(KEY, drop=False).loc[ordered].reset_index(drop=True)
        table.attrs["run"] = run_id
        return table
    ordered = list(dict.fromkeys(keys))
    table = store.consolidate(ordered) if store is not None else pd.DataFrame([rows[k] for k in ordered])
    table.attrs["run"] = run_id
    return table


def _check_part(part) -> tuple[int, int]:
    """``part`` = (i, n): integers with 0 <= i < n."""
    ok = (isinstance(part, (tuple, list)) and len(part) == 2
          and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in part))
    if not ok or not 0 <= part[0] < part[1]:
        raise ValueError(f"part must be (i, n) with integers 0 <= i < n, got {part!r}")
    return int(part[0]), int(part[1])


def _progress_bar(progress, total: int):
    if callable(progress):
        return progress(total=total, unit="point")
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="point", disable=not progress)
