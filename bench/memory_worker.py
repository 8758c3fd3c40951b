"""Subprocess side of ``bench/cases/memory.py`` and ``tests/test_memory.py``: one solve under an address-space limit.

    python bench/memory_worker.py LIMIT_GB CASE P DEPTH SOLVER [SOLVER ...]

Sets ``RLIMIT_AS`` to LIMIT_GB (0: no limit) *before* importing JAX, builds the problem (``deep``: d = 12, N_l = 20,
tanh, gamma = 2, the trial's deep case of issue 18; ``two-layer``: d = 10, N = 200, tanh, gamma = 2, issue 20's case;
teacher data of P points, kappa2 = 1e-2), solves it with each SOLVER in turn -- ``default`` (the theory's: Newton),
``fixed-point``, ``gradient`` (QuasiNewton with the dense Newton polish), ``qn-cg`` (QuasiNewton with lineax CG), an
optional ``:STEPS`` suffix limiting the quasi-Newton phase -- and prints one JSON line per solve: status,
iterations, stationarity residual, peak resident memory of this process so far (MB) and its CPU seconds.
A solve that exceeds the limit dies with a MemoryError / RESOURCE_EXHAUSTED and prints nothing more.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM of /proc/self/status, MB). Not ``getrusage``'s ru_maxrss: Linux keeps
    that across execve, so a worker started by a large process (a pytest worker after heavy tests) reports its
    parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no procfs: kB on Linux, bytes on macOS
    return maxrss / (2**20 if sys.platform == "darwin" else 1024)


def main(argv: list[str]) -> None:
    limit_gb, case, P, depth, solvers = float(argv[0]), argv[1], int(argv[2]), int(argv[3]), argv[4:]
    if limit_gb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_gb * 2**30),) * 2)
    import jax
    import lineax as lx

    import adaptive_kernels as ak

    if case == "deep":
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, 12, P_test=4)
        arch = ak.FCN(12, (20,) * depth, "tanh", gamma=2.0)
    elif case == "two-layer":
        data = ak.teacher_dataset(jax.random.PRNGKey(0), P, 10, P_test=4)
        arch = ak.FCN(10, 200, "tanh", gamma=2.0)
    else:
        raise SystemExit(f"case must be deep or two-layer, got {case!r}")
    for spec in solvers:
        name, _, steps = spec.partition(":")
        options = {} if not steps else {"max_steps": int(steps), "newton_steps": 1}
        solver = {"default": None, "fixed-point": "fixed-point", "gradient": ak.QuasiNewton(**options),
                  "qn-cg": ak.QuasiNewton(linear_solver=lx.CG(rtol=1e-6, atol=1e-12, max_steps=300), **options)}[name]
        start = time.process_time()
        solution = jax.block_until_ready(ak.solve(arch, data, 1e-2, solver=solver))
        print(json.dumps({
            "case": case, "P": P, "depth": depth, "solver": spec, "status": int(solution.status),
            "message": solution.message, "iterations": int(solution.iterations),
            "residual": float(solution.stats["residual"]),
            "peak_rss_mb": peak_rss_mb(),
            "cpu_s": time.process_time() - start,
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
