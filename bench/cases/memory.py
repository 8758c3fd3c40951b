"""Peak memory of a solve against P and depth, per solver, each in a fresh process (issues 18 and 20).

The trial's cases asked for 18 GB (deep tanh, d = 12, P = 10, N_l = 20, L = 4), 40 GB (L = 6) and 79 GB (two-layer
tanh, d = 10, N = 200, P = 60, ``solver="gradient"``). Each row runs ``bench/memory_worker.py`` under an
address-space limit (``RLIMIT_AS``) and reports the peak resident set of that process (``ru_maxrss``: the JAX/XLA
runtime itself is ~450 MB), the status and the CPU time (compilation included). The memory formulas per solver are
in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.cases.common import Config, Section, log
from bench.timing import REPO

LIMIT_GB = 3.0
"""The address-space limit of every run (JAX reserves virtual memory: a trivial solve needs ~1.5 GB of it)."""


def _sizes(cfg: Config) -> list[tuple[str, int, int, tuple[str, ...]]]:
    """(case, P, depth, solvers) per worker process."""
    if cfg.name == "full":
        return ([("deep", 10, L, ("default", "gradient")) for L in (2, 4, 6)]
                + [("deep", P, 4, ("default", "gradient")) for P in (20, 40)]
                + [("deep", 10, 4, ("qn-cg",)), ("two-layer", 60, 1, ("default", "gradient", "qn-cg"))])
    return [("deep", 10, 2, ("default", "gradient")), ("two-layer", 20, 1, ("default", "gradient"))]


def run_worker(limit_gb: float, case: str, P: int, depth: int, solvers, timeout: float = 1800) -> tuple[list, str]:
    """Rows (dicts) printed by ``bench/memory_worker.py``, and its stderr's last line if it failed."""
    cmd = [sys.executable, str(REPO / "bench" / "memory_worker.py"), str(limit_gb), case, str(P), str(depth), *solvers]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failure = "" if result.returncode == 0 else (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    return rows, failure


def memory(cfg: Config) -> Section:
    sec = Section(
        "Peak memory of a solve against P and depth (tanh, Gauss-Hermite quadrature, gamma = 2)",
        f"Each group of rows is one fresh process under RLIMIT_AS = {LIMIT_GB:g} GB (`bench/memory_worker.py`); peak RSS "
        "is the process's maximum so far (so a row includes the rows above it in its group; the JAX runtime alone is "
        "~450 MB). deep: d = 12, N_l = 20, kappa2 = 1e-2; two-layer: d = 10, N = 200. Solvers: default = Newton (the "
        "theory's, also `\"fixed-point\"`), gradient = QuasiNewton (L-BFGS + dense Newton polish), qn-cg = QuasiNewton "
        "with lineax CG (rtol 1e-6). CPU time includes compilation. Check: every solve finished under the limit with a "
        "converged status or an honest non-convergence status.",
        ["case", "P", "depth L", "solver", "status", "iterations", "residual", "peak RSS", "CPU", "check"],
    )
    for case, P, depth, solvers in _sizes(cfg):
        log(f"memory: {case} P={P} L={depth} {' '.join(solvers)}")
        rows, failure = run_worker(LIMIT_GB, case, P, depth, solvers)
        for spec in solvers:
            row = next((r for r in rows if r["solver"] == spec), None)
            if row is None:
                sec.rows.append([case, P, depth, spec, "-", "-", "-", "-", "-",
                                 sec.check(f"{case} P={P} L={depth} {spec}", False, f"died: {failure}")])
                continue
            honest = row["status"] != 0 or row["residual"] <= 1e-8
            detail = sec.check(f"{case} P={P} L={depth} {spec}", honest,
                               f"{row['message']}, residual {row['residual']:.1e}, under {LIMIT_GB:g} GB")
            sec.rows.append([case, P, depth, spec, row["message"], row["iterations"], f"{row['residual']:.1e}",
                             f"{row['peak_rss_mb']:.0f} MB", f"{row['cpu_s']:.1f} s", detail])
    return sec
