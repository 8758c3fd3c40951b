"""Timing and machine description for the benchmarks.

Conventions (BENCHMARKS.md states them too):

- a jitted function is compiled ahead of time (``lower(...).compile()``, timed on its own:
  the *compile time*), then the compiled executable is run ``repeats`` times and the
  *median* wall time is reported;
- a function that is not one jitted call (numpy/scipy baselines, the sampler's Python loop)
  is called ``repeats + 1`` times; the median of the later calls is its run time and
  (first - median) its compile/warm-up time;
- every result is blocked on (``jax.block_until_ready``) before the clock stops.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall times of one timed call: ``runs`` (seconds each) and the compile/warm-up time."""

    runs: tuple
    compile_s: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def repeats(self) -> int:
        return len(self.runs)


def _clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def time_jitted(fn: Callable, *args, repeats: int = 3) -> tuple[Timing, Any]:
    """Compile ``eqx.filter_jit(fn)`` for ``args`` ahead of time, then run it ``repeats`` times."""
    compile_s, compiled = _clock(lambda: eqx.filter_jit(fn).lower(*args).compile())
    runs, out = [], None
    for _ in range(repeats):
        seconds, out = _clock(lambda: compiled(*args))
        runs.append(seconds)
    return Timing(tuple(runs), compile_s), out


def time_calls(fn: Callable[[], Any], repeats: int = 3, warmup: bool = True) -> tuple[Timing, Any]:
    """Call ``fn`` ``repeats`` times for the median, after one warm-up call if ``warmup``
    (then compile/warm-up time = first - median; without it, no compile time is reported)."""
    first = _clock(fn)[0] if warmup else None
    runs, out = [], None
    for _ in range(repeats):
        seconds, out = _clock(fn)
        runs.append(seconds)
    timing = Timing(tuple(runs))
    if warmup:
        timing = dataclasses.replace(timing, compile_s=max(first - timing.median, 0.0))
    return timing, out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> str:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return f"{pages * size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info() -> dict[str, str]:
    """CPU, cores, RAM, OS, JAX devices and the versions of the numerical stack."""
    import jaxlib
    import numpy
    import scipy

    import adaptive_kernels

    return {
        "CPU": _cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "RAM": _ram_gib(),
        "OS": platform.platform(),
        "JAX devices": ", ".join(str(d) for d in jax.devices()),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "adaptive_kernels": f"{adaptive_kernels.__version__}, git {_git_commit()}",
        "float64": str(jax.config.jax_enable_x64),
    }
