"""Solving many regimes at once: vmap over points, shard over devices or workers, continue along an axis.

Points whose regimes have the same PyTree structure and array shapes (same theory, P,
d, depth, widths, activation) form a batch that one jitted ``eqx.filter_vmap`` of the
solver handles. A batch is split into one equal chunk per device (padded by repeating its
last point; the padding is dropped afterwards); each chunk is put on its device and the
same jitted solve is dispatched there. JAX dispatch is asynchronous, so the devices solve
their chunks concurrently, and no device waits on another inside the solver loops: each
runs its own vmapped while loops to its own stopping point. (A batch laid out over a
``jax.sharding.Mesh`` instead turns every loop's stopping test into a cross-device
reduction; over forced host devices sharing a CPU's thread pool that deadlocked.)
``batch=False`` solves the same points one at a time (same jitted solver, unbatched), for
comparison and benchmarks.

Where batches run:

- in this process (default), on its ``jax.local_devices()``;
- on an *executor* (``executor=``): anything with ``submit(fn, *args)`` returning a future
  with ``add_done_callback`` and ``result`` -- a ``concurrent.futures.ProcessPoolExecutor``,
  a ``dask.distributed.Client`` (or ``client.get_executor()``); for Ray, an adapter whose
  ``submit`` returns ``ray.remote(fn).remote(*args).future()``. A batch
  travels as a plain :class:`Batch` (points, data recipe, options); the worker rebuilds the
  arrays and runs :func:`solve_batch` on its own local devices. This process stays the only
  writer of the results store: it writes each batch's rows when its future completes, so
  the store is resumable exactly as in-process. A batch whose future fails (a killed worker,
  a broken pool) is submitted again, at most ``retries`` times, then reported in one line;
- in several independent processes (``part=(i, n)``, plain job arrays): each solves every
  n-th chain into a shared store; an unpartitioned run afterwards merges the shares. In a
  multi-host JAX cluster ``part`` defaults to ``(jax.process_index(), jax.process_count())``.

Concurrent runs into one store cooperate (``store`` module): each claims a chain before
solving it and leaves chains claimed by other live runs to them, waiting for their rows.

Continuation: along an ordered axis (e.g. P) the solution of a point is the initial
guess of the next (``init=`` of the solver) whenever the order parameters keep their
shape (the d x d Sigma of the adaptive kernel does; a P x P kernel does not, and then the
point starts cold and ``warm_start`` says so). Running each chain forward and backward and
comparing reveals points with more than one solution branch (hysteresis).

Branches (``Sweep(branches="posterior" | "all")``, issue 17): each chain is solved on the host by
:func:`branch_rows` with the phase tools (``adaptive_kernels.phases``): every point from the prior, teacher-aligned
starts and every branch of the chain's previous point, the distinct stationary points classified by the inertia of
their Hessian; rows name the branch each point lies on and mark the posterior's (the lowest-action minimum).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import queue
import time
import warnings
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from adaptive_kernels.api import solve, summarize
from adaptive_kernels.theories import THEORIES
from adaptive_kernels.architectures import FCN
from adaptive_kernels.data import Dataset
from adaptive_kernels.solvers.solution import Status
from adaptive_kernels.sweep.spec import POINT_PARAMETERS, SOLVER_OPTIONS, Sweep, axis_value
from adaptive_kernels.sweep.store import HOST, KEY, ResultStore, SweepWarning, _one_line, branch_key, with_branch_keys

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


def _options_for(theory: str, options: dict) -> dict:
    """The sweep's options that apply to ``theory``: the solver's, and the theory's own (a sweep over several
    theories gives ``space``/``form``/``measure`` to the adaptive points only)."""
    own = {field.name for field in dataclasses.fields(THEORIES[theory])}
    return {k: v for k, v in options.items() if k in ("solver", "implicit", "linear_solver") or k in own}


def _solve_point(regime: Regime, init, theory: str, options: dict):
    """``adaptive_kernels.solve`` then ``summarize`` for one point: (order parameters, scalars)."""
    arch, data, kappa2 = regime.arch, regime.data, regime.kappa2
    solution = solve(arch, data, kappa2, theory=theory, init=init, **_options_for(theory, options))
    scalars = summarize(solution, arch, data, kappa2)
    del scalars["theory"]  # a string; the table has it as a parameter column
    return solution.value, scalars


_solve_one = eqx.filter_jit(_solve_point)


@eqx.filter_jit
def _solve_stacked(regimes: Regime, inits, theory: str, options: dict):
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
    """Table columns of one point's observables: per-layer lists (``eigenvalue_ratio``, ...) become the columns
    ``name_1`` .. ``name_L`` (first hidden layer first)."""
    out = {}
    for name, x in scalars.items():
        if isinstance(x, (list, tuple)):
            out.update({f"{name}_{layer}": np.asarray(v).item() for layer, v in enumerate(x, start=1)})
        else:
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


def _theory_options(theory: str, options: dict) -> dict:
    """The options of ``THEORIES[theory]``'s constructor among the sweep's."""
    return {k: v for k, v in _options_for(theory, options).items() if k not in ("solver", "implicit", "linear_solver")}


def _branch_label(label: str, chain: Sequence[dict], step: int, axis: str | None) -> str:
    """A fresh start's branch name: its label, with ``@axis=value`` where it is born after a chain's first point
    (``prior@P=40``), so that it is not confused with the branch continued from the first point's ``prior``."""
    if step == 0 or axis is None:
        return label
    return f"{label}@{axis}={axis_value(chain[step], axis):g}"


def branch_rows(chain: Sequence[dict], recipe, theory_name: str, options: dict, mode: str, ratios: Sequence[float],
                axis: str | None) -> list[list[dict]]:
    """Every stationary point of each point of a continuation chain (``adaptive_kernels.phases``), named by branch.

    At each point the action is solved (``phases.find_stationary_points``; solver: the sweep's ``solver`` option or
    the phase tools' default) from the branches of the previous point (warm starts: a branch keeps its name while
    it lasts) and from fresh starts, the prior and the teacher-aligned states of ``ratios``
    (``phases.default_starts``, direction ``data.w_star`` or that of X^T y). Distinct converged points (relative
    distance 1e-4) are classified by the inertia of the Hessian of S (minimum, saddle, maximum, degenerate); the
    lowest-action minimum is the posterior's. Returns per point a list of rows (``mode="all"``: one per stationary
    point, the posterior's first, then by action; ``"posterior"``: the posterior's only, else the lowest point);
    with no converged start, one row of the lowest-action unconverged solve (``kind = "unconverged"``).

    Columns besides the observables: ``branch`` (the name of the branch: the start it was first reached from,
    continued along the chain), ``starts`` (every start that reached it), ``kind``, ``index`` (negative Hessian
    eigenvalues), ``min_eigenvalue``, ``posterior``, ``minima`` and ``metastable`` (of the point: minima found,
    more than one), ``warm_start`` (reached from the previous point's branch of that name).
    """
    from adaptive_kernels import phases
    from adaptive_kernels.api import resolve_solver
    from adaptive_kernels.problem import make_problem
    from adaptive_kernels.theories import get_theory

    theory = get_theory(theory_name, **_theory_options(theory_name, options))
    solver = resolve_solver(options.get("solver"))
    previous: dict = {}
    out = []
    for step, point in enumerate(chain):
        start_time = time.perf_counter()
        regime = build_regime(point, recipe)
        arch, data, kappa2 = regime.arch, regime.data, regime.kappa2
        problem = make_problem(arch, data, kappa2)
        theory.check(problem)
        shape = jax.tree.map(jnp.shape, theory.init(problem, theory.problem(problem)[1]))
        starts = {name: value for name, value in previous.items() if jax.tree.map(jnp.shape, value) == shape}
        for label, value in phases.default_starts(problem, theory, data.w_star, ratios).items():
            starts[_branch_label(label, chain, step, axis if starts else None)] = value
        found = phases.find_stationary_points(theory, problem, starts, solver)
        points = list(found.points)
        if not points:  # no start converged: report the best attempt, so that every point has its row
            best = min(found.unconverged.items(), key=lambda kv: float(kv[1].action))
            points = [phases.StationaryPoint(best[1], float(best[1].action), "unconverged", None, None, (best[0],))]
        ordered = sorted(points, key=lambda p: (not p.posterior, p.action))
        minima = len(found.minima)
        wall = (time.perf_counter() - start_time) / len(ordered)
        rows = []
        for p in ordered if mode == "all" else ordered[:1]:
            scalars = summarize(p.solution, arch, data, kappa2)
            del scalars["theory"]
            row = _python_scalars(scalars)
            row.update(status_message=Status(row["status"]).message, warm_start=p.starts[0] in previous,
                       wall_time=wall, batch_size=1, branch=p.starts[0], starts=", ".join(p.starts), kind=p.kind,
                       index=-1 if p.index is None else p.index, min_eigenvalue=p.min_eigenvalue,
                       posterior=p.posterior, minima=minima, metastable=minima > 1)
            rows.append(row)
        previous = {p.starts[0]: p.value for p in ordered if p.kind != "unconverged"}
        out.append(rows)
    return out


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


def _parameter_columns(point: dict) -> dict:
    """Every point parameter in POINT_PARAMETERS order, gamma and chi both resolved."""
    resolved = {**point, "gamma": axis_value(point, "gamma"), "chi": axis_value(point, "chi")}
    return {name: resolved[name] for name in POINT_PARAMETERS}


# ------------------------------------------------------------------------------ preflight


class PreflightError(ValueError):
    """The library rejects a point with the sweep's options (found before anything is solved).

    ``index``: the point; ``key``: the solver option the library's message names, if any.
    """

    def __init__(self, index: int, point: dict, err: Exception):
        self.index = index
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = text.replace("=", " ").replace(":", " ").split()[0]
        self.key = first if first in SOLVER_OPTIONS else None
        where = ", ".join(f"{k}={point[k]!r}" for k in ("theory", "depth", "activation"))
        self.message = f"point {index} ({where}): {text}"
        super().__init__(f"{self.message}; nothing was solved")


_PREFLIGHT_PASSED: set = set()


def preflight(sweep: Sweep, batch: bool = True) -> None:
    """Trace one point of each kind (theory, depth, activation, gamma or chi) through
    ``solve`` + ``summarize`` with the sweep's options, without solving
    (``eqx.filter_eval_shape``): every error the library raises while setting a problem up
    (``space="weight"`` with erf, ``form="weight"`` for a deep erf net, ...)
    surfaces here as a :class:`PreflightError` before any batch runs. Passed kinds are
    remembered for the process."""
    first: dict[tuple, int] = {}
    for i, point in enumerate(sweep.points):
        first.setdefault((point["theory"], point["depth"], point["activation"], "chi" in point), i)
    for kind, i in first.items():
        token = (kind, json.dumps(sweep.data.describe(), default=repr), repr(sweep.options), batch)
        if token in _PREFLIGHT_PASSED:
            continue
        point = sweep.points[i]
        regime = build_regime(point, sweep.data)
        try:
            eqx.filter_eval_shape(_solve_point, regime, None, point["theory"], sweep.solver_options)
        except (ValueError, TypeError) as err:
            raise PreflightError(i, point, err) from err
        _PREFLIGHT_PASSED.add(token)


# ------------------------------------------------------------------------------ batches


@dataclasses.dataclass(frozen=True)
class Batch:
    """One unit of work: equally shaped continuation chains of one theory, as plain data.

    ``chains``: tuples of normalised point dicts, each in continuation order. A Batch pickles
    to any executor's workers, which rebuild the arrays (:func:`build_regime`) and run
    :func:`solve_batch`. ``attempt`` numbers resubmissions, so that a retry is a new task for
    executors that cache results by their arguments (dask's ``pure`` tasks).
    """

    theory: str
    chains: tuple
    data: Any
    continuation: str | None
    detect_branches: bool
    options: tuple
    batch: bool
    attempt: int = 0
    branches: str | None = None
    ratios: tuple = (30.0,)


_RUNNERS: dict[tuple, _Runner] = {}


def solve_batch(task: Batch, devices: Sequence | None = None) -> list[list[dict]]:
    """Solve a :class:`Batch` on this process's devices: per chain, per step, a row dict of
    Python scalars (observables, status, warm_start, wall_time, batch_size, d, P_test, worker).

    With ``detect_branches`` each chain also runs backwards and the rows are merged
    (:func:`_merge_branches`). With ``branches`` each step holds a list of rows, one per branch reported
    (:func:`branch_rows`, on the host, one chain at a time). This is the function executors run on their workers.
    """
    devices = local_devices(devices)
    worker = f"{HOST}:{os.getpid()}"
    if task.branches is not None:
        merged = [branch_rows(chain, task.data, task.theory, dict(task.options), task.branches, task.ratios,
                              task.continuation) for chain in task.chains]
        for chain, steps in zip(task.chains, merged):
            for point, rows in zip(chain, steps):
                data = build_regime(point, task.data).data
                for row in rows:
                    row.update(d=data.d, P_test=data.X_test.shape[0], worker=worker)
        return merged
    cache_key = (task.theory, repr(task.options), task.batch, tuple(map(str, devices)))
    runner = _RUNNERS.get(cache_key)
    if runner is None:
        runner = _RUNNERS[cache_key] = _Runner(task.theory, dict(task.options), task.batch, devices)
    regimes = [[build_regime(point, task.data) for point in chain] for chain in task.chains]
    forward = _run_chains(runner, regimes, task.continuation)
    if task.detect_branches:
        backward = _run_chains(runner, [chain[::-1] for chain in regimes], task.continuation)
        merged = [[_merge_branches(f, b) for f, b in zip(fw, bw[::-1])] for fw, bw in zip(forward, backward)]
    else:
        merged = [[row for row, _ in fw] for fw in forward]
    for chain, rows in zip(regimes, merged):
        for regime, row in zip(chain, rows):
            row.update(d=regime.data.d, P_test=regime.data.X_test.shape[0], worker=worker)
    return merged


class SweepError(RuntimeError):
    """Batches that failed on every attempt; the points stored before are kept."""


class _Dispatcher:
    """Runs batches in this process or on an executor and retries failed ones.

    ``submit`` starts a batch; ``next`` returns the next finished one as (chains, rows), or
    None if the wait timed out or a batch failed (resubmitted, or recorded in ``failures``
    after ``retries`` resubmissions). In this process a batch runs inside ``submit`` and an
    exception propagates with its traceback (nothing to retry: it would fail again).
    """

    def __init__(self, executor, devices, retries: int):
        self.executor, self.devices, self.retries = executor, devices, retries
        self.results: queue.Queue = queue.Queue()
        self.in_flight: dict[int, tuple[Batch, list]] = {}
        self.futures: dict[int, Any] = {}
        self.failures: list[tuple[list, str]] = []
        self._ids = itertools.count()

    def busy(self) -> int:
        return len(self.in_flight)

    def submit(self, task: Batch, chains: list) -> None:
        bid = next(self._ids)
        self.in_flight[bid] = (task, chains)
        if self.executor is None:
            self.results.put((bid, solve_batch(task, self.devices), None))
            return
        try:
            future = self.executor.submit(solve_batch, task)
        except Exception as err:  # e.g. a broken process pool refuses new work
            self.results.put((bid, None, err))
            return
        self.futures[bid] = future
        future.add_done_callback(lambda f, bid=bid: self.results.put((bid, f, None)))

    def next(self, timeout: float):
        try:
            bid, outcome, error = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        task, chains = self.in_flight.pop(bid)
        self.futures.pop(bid, None)
        if error is None and self.executor is not None:
            try:
                outcome = outcome.result()
            except Exception as err:  # a killed worker, a lost connection, an error in the batch
                error = err
        if error is None:
            return chains, outcome
        what = f"batch of {sum(map(len, chains))} points ({_describe(task)})"
        if task.attempt < self.retries:
            warnings.warn(f"{what} failed on attempt {task.attempt + 1} of {self.retries + 1} "
                          f"({_one_line(error)}); submitting it again", SweepWarning, stacklevel=3)
            self.submit(dataclasses.replace(task, attempt=task.attempt + 1), chains)
        else:
            message = f"{what} failed {task.attempt + 1} times, last: {_one_line(error)}"
            warnings.warn(message, SweepWarning, stacklevel=3)
            self.failures.append((chains, message))
        return None

    def cancel(self) -> None:
        for future in self.futures.values():
            future.cancel()


def _describe(task: Batch) -> str:
    points = [point for chain in task.chains for point in chain]
    values = lambda key: sorted({point[key] for point in points})  # noqa: E731
    return f"theory {task.theory}, P {values('P')}, width {values('width')}"


def _executor_slots(executor) -> int:
    """How many batches an executor runs at once, as far as it tells (else 8)."""
    workers = getattr(executor, "_max_workers", None)  # concurrent.futures pools
    if isinstance(workers, int):
        return workers
    client = getattr(executor, "_client", executor)  # dask's ClientExecutor wraps a Client
    nthreads = getattr(client, "nthreads", None)
    if callable(nthreads):
        try:
            return max(1, sum(nthreads().values()))
        except Exception:  # not a dask client after all
            pass
    return 8


POLL_S = 0.5  # how often a run waiting on chains claimed by other runs looks at the store


def _chain_id(chain_keys: list[str]) -> str:
    return hashlib.sha256("|".join(chain_keys).encode()).hexdigest()[:24]


def run_sweep(
    sweep: Sweep,
    out: str | os.PathLike | None = None,
    *,
    batch: bool = True,
    chunk_size: int | None = None,
    devices: Sequence | None = None,
    part: tuple[int, int] | None = None,
    executor=None,
    retries: int = 2,
    progress: bool | Callable = False,
) -> pd.DataFrame:
    """Solve every point of ``sweep``: a tidy table, one row per point, in the sweep's order.

    Args:
        sweep: the points, data recipe, continuation axis and solver options.
        out: results file (``.parquet``, or ``.csv``). Finished batches are saved as they
            complete in ``<out>.parts/``; a re-run skips points already there or in ``out``
            and re-solves the points of part files (or an ``out``) that cannot be read,
            after moving them to ``<out>.damaged/`` with a one-line warning. At the end the
            table of exactly this sweep's points is written to ``out`` (rows of other sweeps
            found there are not carried over). Several runs may write into one ``out`` at
            once: they share the work chain by chain (``store`` module). ``None``: nothing
            is written.
        batch: vmap points of equal shapes, one chunk per device (True), or solve them one
            by one (False).
        chunk_size: most chains solved in one vmapped call (bounds memory; default 256,
            16 with an executor so that batches spread over its workers).
        devices: JAX devices of this process to spread batches over (default:
            ``jax.local_devices()``); not with ``executor`` (workers use their own).
        part: ``(i, n)``: solve only share i of n (every n-th continuation chain, starting
            at the i-th; shares are disjoint and cover the sweep) into the store of ``out``,
            and return that share's rows without consolidating: for plain job arrays. Run the
            n shares (e.g. one per host or array task) with the same ``out`` on a shared
            file system, then ``run_sweep(sweep, out)`` once: it finds every point finished
            and writes the table. Default: ``(jax.process_index(), jax.process_count())``,
            i.e. the whole sweep in a single process and one share per process in a
            multi-host cluster.
        executor: run batches on this executor instead of in this process: any object with
            ``submit(fn, *args)`` returning a future with ``add_done_callback`` and
            ``result`` (``concurrent.futures.ProcessPoolExecutor``, ``dask.distributed.Client``
            or ``client.get_executor()``; Ray's ``ObjectRef.future()`` is such a future). Workers must be able to import
            adaptive_kernels. This process writes every row to ``out`` as its batch finishes.
        retries: with an executor, how often a failed batch (a killed worker, a broken
            connection) is submitted again before it is reported as failed.
        progress: show a tqdm progress bar (or pass a tqdm-like class).

    Raises:
        SweepError: some batches failed on every attempt (after the others were solved and
            stored; a re-run solves the missing points).

    Columns: ``key``, every parameter (gamma and chi both, resolved), the data recipe
    (with the input dimension ``d`` and test-set size ``P_test`` of the data actually drawn),
    the observables of ``adaptive_kernels.summarize``, ``status``, ``status_message``,
    ``converged``, ``iterations``, ``grad_norm``, ``action``, ``warm_start``,
    ``wall_time`` (seconds per point, the batch's time shared out), ``batch_size``, ``worker``
    (``host:pid`` of the process that solved the point), ``run``
    (which invocation computed the row; this one's is ``table.attrs["run"]``); with
    ``detect_branches`` also ``branch``, ``multiple_branches``, ``branch_gap``,
    ``branch_action_gap``; with ``branches`` (``Sweep(branches=...)``) the columns of :func:`branch_rows`
    and, for ``"all"``, one row per stationary point (keys ``<point key>/<j>`` after a point's first row).
    ``table.attrs["solved"]``: how many rows this invocation solved.
    """
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit(fn, *args) method (concurrent.futures.Executor, "
                        f"dask.distributed.Client, ...), got {type(executor).__name__}")
    if executor is not None and devices is not None:
        raise ValueError("devices: not with an executor (each worker uses its own jax.local_devices())")
    if chunk_size is None:
        chunk_size = 256 if executor is None else 16
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    devices = local_devices(devices) if executor is None else None
    share, shares = _check_part((jax.process_index(), jax.process_count()) if part is None else part)
    if shares > 1 and out is None:
        raise ValueError("part: a share of a sweep needs out= (the store the shares are merged from)")
    preflight(sweep, batch)
    keys = sweep.keys()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{HOST}-{os.getpid()}-{os.urandom(3).hex()}"
    store = ResultStore(out) if out is not None else None
    if store is not None:
        store.register(run_id, {"data": sweep.data.describe(), "continuation": sweep.continuation,
                                "options": sweep.solver_options, "keys": keys})
    dispatcher = _Dispatcher(executor, devices, retries)
    finished = False
    try:
        mine = [c for k, c in enumerate(sweep.chains()) if k % shares == share]
        rows = _solve_chains(sweep, keys, mine, store, dispatcher, chunk_size, batch, run_id,
                             1 if executor is None else 2 * _executor_slots(executor), progress)
        if dispatcher.failures:
            failed = sum(len(c) for chains, _ in dispatcher.failures for c in chains)
            raise SweepError(f"{failed} points in {len(dispatcher.failures)} batches were not solved "
                             f"({dispatcher.failures[-1][1]}); the points stored are kept: run again to solve them")
        if shares > 1:
            ordered = list(dict.fromkeys(keys[i] for c in mine for i in c))
            table = store.rows_of(ordered)
        else:
            ordered = list(dict.fromkeys(keys))
            table = (store.consolidate(ordered) if store is not None
                     else pd.DataFrame([rows[k] for k in with_branch_keys(ordered, rows)]))
            finished = True
    finally:
        dispatcher.cancel()
        if store is not None:
            store.unregister(cleanup=finished)
    table.attrs["run"] = run_id
    table.attrs["solved"] = int(len(rows))
    return table


def _solve_chains(sweep, keys, chains, store, dispatcher, chunk_size, batch, run_id, window, progress) -> dict:
    """Claim, dispatch and store the chains not finished yet; wait for those other runs hold.

    Returns the rows this run solved, by key.
    """
    done = store.finished_keys() if store is not None else set()
    chains = [c for c in chains if any(keys[i] not in done for i in c)]
    todo = {keys[i] for c in chains for i in c} - done
    groups: dict[tuple, list[list[int]]] = {}  # shape signatures along the chain -> chains
    signature_of = {}
    for chain in chains:
        sig = tuple(shape_signature(build_regime(sweep.points[i], sweep.data), sweep.points[i]["theory"]) for i in chain)
        signature_of[id(chain)] = sig
        groups.setdefault(sig, []).append(chain)
    others: list[list[int]] = []  # claimed by another live run
    recipe = sweep.data.describe()
    rows: dict[str, dict] = {}
    bar = _progress_bar(progress, len(todo))
    counted: set[str] = set()

    def count(new_keys):
        fresh = (set(new_keys) & todo) - counted
        counted.update(fresh)
        bar.update(len(fresh))

    def take() -> list[list[int]] | None:
        for sig in list(groups):
            taken = []
            while groups[sig] and len(taken) < chunk_size:
                chain = groups[sig].pop(0)
                chain_keys = [keys[i] for i in chain]
                if all(k in done for k in chain_keys):
                    continue
                if store is None or store.claim(_chain_id(chain_keys)):
                    taken.append(chain)
                else:
                    others.append(chain)
            if not groups[sig]:
                del groups[sig]
            if taken:
                return taken
        return None

    try:
        while True:
            while dispatcher.busy() < window and (taken := take()) is not None:
                task = Batch(sweep.points[taken[0][0]]["theory"],
                             tuple(tuple(sweep.points[i] for i in c) for c in taken), sweep.data,
                             sweep.continuation, sweep.detect_branches, sweep.options, batch,
                             branches=sweep.branches, ratios=sweep.ratios)
                dispatcher.submit(task, taken)
            if dispatcher.busy():
                result = dispatcher.next(timeout=POLL_S)
                if result is not None:
                    new = _new_rows(sweep, keys, *result, done, recipe, run_id)
                    if store is not None and new:
                        store.write_part(pd.DataFrame(list(new.values())))
                    rows.update(new)
                    done.update(new)
                    count(new)
                continue
            if not others:
                break
            time.sleep(POLL_S)  # chains held by other runs: look again for their rows or their death
            done |= store.finished_keys()
            count(done)
            waiting, others[:] = list(others), []
            for chain in waiting:
                chain_keys = [keys[i] for i in chain]
                if all(k in done for k in chain_keys):
                    continue
                if store.claim(_chain_id(chain_keys)):
                    groups.setdefault(signature_of[id(chain)], []).append(chain)
                else:
                    others.append(chain)
    finally:
        bar.close()
    return rows


def _new_rows(sweep, keys, chains, results, done, recipe, run_id) -> dict:
    """Table rows of a finished batch's points not stored yet, by key (a point's extra branch rows, with
    ``branches="all"``, under ``<key>/<j>``, j = 1, 2, ...)."""
    new = {}
    for chain, chain_rows in zip(chains, results):
        for i, rows in zip(chain, chain_rows):
            if keys[i] in done:
                continue
            for j, row in enumerate(rows if isinstance(rows, list) else [rows]):
                row = dict(row)
                measured = {"d": row.pop("d"), "P_test": row.pop("P_test")}
                key = branch_key(keys[i], j)
                new[key] = {KEY: key, **_parameter_columns(sweep.points[i]), **recipe, **measured, **row,
                            "run": run_id}
    return new


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
