"""Threading settings under load: how long the library's solves take with each CPU threading
setting, on an idle machine and with another process busy (issue 19).

    python bench/threads.py                    # every setting x every load, prints a markdown table
    python bench/threads.py --loads idle busy1 --settings one default

Each (setting, load) pair runs the solves in a fresh subprocess (threading is fixed when JAX's
CPU client and OpenBLAS start), after a warm-up call, and reports the median of ``--repeats``
calls of ``adaptive_kernels.solve``. Every subprocess also reports the solution's mean test
output; rows whose outputs differ from the one-thread run by more than 1e-8 relative are
flagged (a threading setting may change summation order, never the answer).

Where the threads come from (jax 0.10, measured with CPU time / wall time of a 1500 x 1500
matmul and Cholesky): XLA's dots and fusions run on the CPU client's intra-op pool, sized at
start-up from ``PJRT_NPROC`` (else ``NPROC``, else the CPU affinity mask); Cholesky, eigh and
triangular solves go through LAPACK in scipy's OpenBLAS, sized by ``OPENBLAS_NUM_THREADS``
when that library is loaded. ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` does not make
the dots single-threaded any more, and ``intra_op_parallelism_threads=1`` (no ``--``) is not
an XLA flag (``--intra_op_parallelism_threads`` is refused as unknown).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_UNSET = ("XLA_FLAGS", "PJRT_NPROC", "NPROC", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
          "ADAPTIVE_KERNELS_THREADS")

SETTINGS = {
    # name: (environment, CPU list for taskset or None)
    "xla-default": ({"ADAPTIVE_KERNELS_THREADS": "default"}, None),
    "library-default": ({}, None),
    "issue-flags": ({"ADAPTIVE_KERNELS_THREADS": "default",
                     "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}, None),
    "xla-pool-1": ({"ADAPTIVE_KERNELS_THREADS": "default", "PJRT_NPROC": "1"}, None),
    "blas-1": ({"ADAPTIVE_KERNELS_THREADS": "default", "OPENBLAS_NUM_THREADS": "1"}, None),
    "one-thread": ({"ADAPTIVE_KERNELS_THREADS": "1"}, None),
    "pinned-1-core": ({"ADAPTIVE_KERNELS_THREADS": "default"}, "0"),
}
"""Threading settings. ``ADAPTIVE_KERNELS_THREADS=default`` keeps JAX's and OpenBLAS's own defaults
(all cores); ``=1`` is one XLA thread and one OpenBLAS thread (``PJRT_NPROC=1``,
``OPENBLAS_NUM_THREADS=1``); unset: the library's default (adaptive_kernels/_config.py)."""

_MATMUL_LOOP = "import numpy as np\na = np.random.rand(1000, 1000)\nwhile True:\n    a @ a"
_JAX_LOOP = ("import jax, jax.numpy as jnp\njax.config.update('jax_enable_x64', True)\n"
             "a = jax.random.normal(jax.random.PRNGKey(0), (1500, 1500))\nf = jax.jit(lambda a: jnp.linalg.cholesky(a @ a.T + 1500 * jnp.eye(1500)))\n"
             "while True:\n    f(a).block_until_ready()")

LOADS = {
    "idle": [],
    "busy1": [({"OPENBLAS_NUM_THREADS": "1"}, _MATMUL_LOOP)],
    "busy2": [({}, _MATMUL_LOOP)],
    "jax": [({}, _JAX_LOOP)],
}
"""Background load: none; one single-threaded numpy matmul loop (one core busy); a numpy matmul
loop at OpenBLAS's default threading (both cores); a second JAX job (matmul + Cholesky) at JAX's
defaults."""

PROBLEMS = {
    # name: (widths, theory, P)
    "scaling, 1 hidden layer, P=1000": ((1000,), "scaling", 1000),
    "adaptive, 1 hidden layer, P=1000": ((1000,), "adaptive", 1000),
    "scaling, 2 hidden layers, P=1000": ((1000, 1000), "scaling", 1000),
    "scaling, 3 hidden layers, P=1000": ((1000, 1000, 1000), "scaling", 1000),
    "adaptive, 2 hidden layers, P=200": ((1000, 1000), "adaptive", 200),
}
"""erf nets, d=50, gamma=1, kappa2=1e-2, cubic teacher (adaptive_kernels.teacher_dataset, seed 0)."""


def _clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def worker(repeats: int, names) -> dict:
    """Time each problem in this process; returns {name: {"median": s, "runs": [...], "mean_test": [...]}}."""
    import jax
    import numpy as np

    import adaptive_kernels as ak
    from adaptive_kernels._config import threads

    out = {"_threads": threads()}
    for name in names:
        widths, theory, P = PROBLEMS[name]
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, 50, "cubic", P_test=200)
        arch = ak.FCN(50, widths, "erf")
        sol = jax.block_until_ready(ak.solve(arch, data, 1e-2, theory=theory))  # compile + warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            sol = jax.block_until_ready(ak.solve(arch, data, 1e-2, theory=theory))
            runs.append(time.perf_counter() - start)
        mean = np.asarray(ak.predict(sol, arch, data, 1e-2).mean_test)
        out[name] = {"median": statistics.median(runs), "runs": runs, "converged": bool(sol.converged),
                     "mean_test": mean.tolist()}
    return out


def _run_worker(setting: str, repeats: int, names, timeout: float) -> dict | None:
    env_extra, cpus = SETTINGS[setting]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--repeats", str(repeats), "--problems", *names]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    try:
        done = subprocess.run(cmd, env=_clean_env(env_extra), capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"worker for {setting} failed:\n{err.stderr[-3000:]}") from err
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(settings, loads, repeats: int, names, timeout: float) -> dict:
    """{(load, setting): worker result or None on timeout}, each load started before its settings run."""
    results = {}
    for load in loads:
        procs = [subprocess.Popen([sys.executable, "-c", code], env=_clean_env(env), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for env, code in LOADS[load]]
        try:
            time.sleep(2.0 if procs else 0.0)
            for setting in settings:
                start = time.perf_counter()
                result = results[(load, setting)] = _run_worker(setting, repeats, names, timeout)
                times = "timed out" if result is None else ", ".join(f"{result[n]['median']:.2f}" for n in names)
                print(f"[threads] load {load}, setting {setting}: {time.perf_counter() - start:.0f} s "
                      f"(medians {times}), load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    return results


def table(results: dict, settings, loads, names, reference: str = "one-thread") -> str:
    """Markdown: one row per (problem, setting), one column per load; each cell the median time and its
    ratio to the reference setting under the same load."""
    lines = ["| problem | setting | " + " | ".join(loads) + " |", "|---|---|" + "---|" * len(loads)]
    import numpy as np

    for name in names:
        for setting in settings:
            cells = []
            for load in loads:
                res, ref = results.get((load, setting)), results.get((load, reference))
                if res is None:
                    cells.append("timed out")
                    continue
                t = res[name]["median"]
                cell = f"{t:.2f} s"
                if ref is not None:
                    cell += f" ({t / ref[name]['median']:.1f}x)"
                    a, b = np.asarray(res[name]["mean_test"]), np.asarray(ref[name]["mean_test"])
                    diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                    if diff > 1e-8:
                        cell += f" ANSWER DIFFERS {diff:.1e}"
                if not res[name]["converged"]:
                    cell += " NOT CONVERGED"
                cells.append(cell)
            lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (setting, load) subprocess")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.repeats, args.problems)))
        return 0
    settings = args.settings if "one-thread" in args.settings else ["one-thread", *args.settings]
    results = measure(settings, args.loads, args.repeats, args.problems, args.timeout)
    if args.json:
        Path(args.json).write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in results.items()}))
    cpus = os.cpu_count()
    print(f"{cpus} cores; times: median of {args.repeats} calls of adaptive_kernels.solve after a warm-up; "
          f"(ratio) to one-thread under the same load\n")
    print(table(results, settings, args.loads, args.problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
