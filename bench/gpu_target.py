"""Issue 14's speed target on an accelerator: the default deep solve, erf, L = 4, P = 1000, gamma = 2, <= 10 s.

    python bench/gpu_target.py --out DIR [--budget SECONDS] [--small-only]

Runs on JAX's default backend (a GPU where one is present; on a CPU the target row takes ~25 min, docs/deep_solver.md).
The cells are those of ``bench/cases/deep_matrix.py`` (d = 20, N_l = 200, kappa2 = 1e-2, cubic teacher, data key 0),
each solved by ``solve_problem`` compiled ahead of time (``lower(...).compile()``, timed on its own), then run
``--repeats`` times; the median wall time is reported, with the evaluations, Jacobian products and status.

Also written, so that the accelerator's answer can be checked on a CPU: ``kernels_<cell>.npz`` with the per-layer
kernels of each small cell's solve (``ak.layer_kernels``). ``--compare DIR`` (on any machine) solves the small cells again on the
local backend and prints the largest relative difference of their kernels from those in DIR.

Cells, run in this order until ``--budget`` seconds have passed (a cell is skipped once the budget is spent):
the check cell erf L = 4, P = 100; the target erf L = 4, P = 1000; then erf L = 2 and L = 8 at P = 1000 (growth with
depth on the accelerator). Plus device timings of one P x P Cholesky factorisation, eigh and matrix product (float64).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable as `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adaptive_kernels as ak  # noqa: E402  (first: precision and thread policy)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from adaptive_kernels.api import solve_problem  # noqa: E402
from adaptive_kernels.solvers import Status  # noqa: E402

from bench.cases.common import KAPPA2  # noqa: E402
from bench.cases.deep_matrix import _problem  # noqa: E402

SMALL = (("erf", 4, 2.0, 100),)
LARGE = (("erf", 4, 2.0, 1000), ("erf", 2, 2.0, 1000), ("erf", 8, 2.0, 1000))


def _name(cell) -> str:
    activation, depth, gamma, P = cell
    return f"{activation}_L{depth}_g{gamma:g}_P{P}"


def _clock(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def device_linear_algebra(P: int = 1000, repeats: int = 5) -> dict:
    """Median seconds of one float64 P x P Cholesky factorisation, eigh and matrix product on the default device."""
    G = jax.random.normal(jax.random.PRNGKey(0), (P, P), dtype=jnp.float64)
    A = G @ G.T / P + jnp.eye(P)
    out = {}
    for label, fn in (("cholesky", jnp.linalg.cholesky), ("eigh", jnp.linalg.eigh), ("matmul", lambda a: a @ a)):
        compiled = jax.jit(fn).lower(A).compile()
        _clock(lambda: compiled(A))
        out[label] = statistics.median(_clock(lambda: compiled(A))[0] for _ in range(repeats))
    return out


def solve_cell(cell, repeats: int, kernels: bool = True):
    """(row dict, per-layer kernels or None) of the default solve of ``cell``, compiled ahead of time."""
    activation, depth, gamma, P = cell
    arch, data = _problem(activation, depth, gamma, P)
    problem, theory = ak.make_problem(arch, data, KAPPA2), ak.Adaptive()
    compile_s, compiled = _clock(lambda: solve_problem.lower(problem, theory, None).compile())
    runs, sol = [], None
    for _ in range(repeats):
        seconds, sol = _clock(lambda: compiled(problem, theory, None))
        runs.append(seconds)
    sol = sol.with_theory(theory)
    if kernels:
        kernels = [np.asarray(K) for K in ak.layer_kernels(sol, arch, data, KAPPA2)]
    row = {"cell": _name(cell), "status": Status(int(sol.status)).name, "compile_s": compile_s,
           "solve_s": statistics.median(runs), "runs_s": runs, "evaluations": int(sol.iterations),
           "jacobian_products": int(sol.stats["jacobian_products"]), "residual": float(sol.stats["residual"])}
    return row, kernels or None


def compare(directory: Path) -> None:
    """Solve the small cells here and print their kernels' largest relative difference from those in ``directory``."""
    for cell in SMALL:
        saved = np.load(directory / f"kernels_{_name(cell)}.npz")
        _, kernels = solve_cell(cell, repeats=1)
        diff = max(float(np.max(np.abs(K - saved[f"K{i}"])) / np.max(np.abs(saved[f"K{i}"])))
                   for i, K in enumerate(kernels))
        print(f"{_name(cell)}: max over layers of max|K - K_saved| / max|K_saved| = {diff:.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md and the kernels")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which no new cell starts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small-only", action="store_true", help="only the check cell (a local dry run)")
    parser.add_argument("--compare", type=Path, help="compare the small cells with the kernels saved in this folder")
    args = parser.parse_args(argv)
    if args.compare:
        compare(args.compare)
        return 0
    if args.out is None:
        parser.error("--out is required (unless --compare)")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    result = {"jax": jax.__version__, "device": f"{device.platform}: {device.device_kind}", "cells": []}
    result["linear_algebra_P1000_s"] = device_linear_algebra()
    print(json.dumps(result), flush=True)
    for cell in SMALL + (() if args.small_only else LARGE):
        if time.perf_counter() - start > args.budget:
            print(f"{_name(cell)}: skipped (budget of {args.budget:.0f} s spent)", flush=True)
            continue
        row, kernels = solve_cell(cell, args.repeats, kernels=cell in SMALL)
        if kernels is not None:
            np.savez(args.out / f"kernels_{row['cell']}.npz", **{f"K{i}": K for i, K in enumerate(kernels)})
        result["cells"].append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
