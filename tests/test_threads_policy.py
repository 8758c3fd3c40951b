"""The CPU threading policy applied at import (adaptive_kernels/_config.py): one XLA thread and one
OpenBLAS thread unless the user chose, never overriding the user's own variables, and only while
the pools do not exist yet. Each case is a fresh interpreter (the pools are sized once per process).

The effect itself is measured, not just the variables: with the library's default a 1200 x 1200
float64 matmul and Cholesky must use at most about one core (CPU time / wall time), whatever the
machine's core count, which fails if XLA or OpenBLAS stop honouring the variables.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_THREAD_VARIABLES = ("XLA_FLAGS", "PJRT_NPROC", "NPROC", "ADAPTIVE_KERNELS_THREADS", "OPENBLAS_NUM_THREADS",
                     "GOTO_NUM_THREADS", "OMP_NUM_THREADS")

REPORT = """
import json, os, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    {before}
    import adaptive_kernels
    from adaptive_kernels._config import threads
print(json.dumps({{"threads": threads(), "PJRT_NPROC": os.environ.get("PJRT_NPROC"),
                  "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}}))
"""

CPU_PER_WALL = """
import resource, time
import adaptive_kernels, jax, jax.numpy as jnp
a = jax.random.normal(jax.random.PRNGKey(0), (1200, 1200))
f = jax.jit(lambda a: jnp.linalg.cholesky(a @ a.T + 1200 * jnp.eye(1200)))
f(a).block_until_ready()
usage = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
cpu, wall = usage(), time.perf_counter()
for _ in range(8):
    f(a).block_until_ready()
print((usage() - cpu) / (time.perf_counter() - wall))
"""


def _run(code: str, **env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    env.update(env_vars, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _report(before: str = "pass", **env_vars) -> dict:
    done = _run(REPORT.format(before=before), **env_vars)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_is_one_thread_per_pool_and_takes_effect():
    out = _report()
    assert out["PJRT_NPROC"] == "1" and out["OPENBLAS_NUM_THREADS"] == "1"
    assert out["threads"]["xla"]["set_by"] == out["threads"]["openblas"]["set_by"] == "adaptive_kernels"
    assert not out["warnings"]
    done = _run(CPU_PER_WALL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1.3  # two busy threads would give ~2 on a 2-core machine


@pytest.mark.parametrize(
    "env, xla, blas",
    [
        ({"PJRT_NPROC": "3"}, ("3", "user"), ("1", "adaptive_kernels")),
        ({"NPROC": "2"}, ("2", "user"), ("1", "adaptive_kernels")),
        ({"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}, ("all cores", "default"), ("1", "adaptive_kernels")),
        ({"OMP_NUM_THREADS": "2"}, ("1", "adaptive_kernels"), ("2", "user")),
        ({"OPENBLAS_NUM_THREADS": "4", "PJRT_NPROC": "4"}, ("4", "user"), ("4", "user")),
        ({"ADAPTIVE_KERNELS_THREADS": "default"}, ("all cores", "default"), ("all cores", "default")),
        ({"ADAPTIVE_KERNELS_THREADS": ""}, ("1", "adaptive_kernels"), ("1", "adaptive_kernels")),  # empty = unset
        ({"ADAPTIVE_KERNELS_THREADS": "2"}, ("2", "adaptive_kernels"), ("2", "adaptive_kernels")),
        # an explicit request sizes XLA's pool despite XLA_FLAGS, but never overrides the user's own variables
        ({"ADAPTIVE_KERNELS_THREADS": "2", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "OMP_NUM_THREADS": "3"},
         ("2", "adaptive_kernels"), ("3", "user")),
    ],
)
def test_user_choices_are_respected(env, xla, blas):
    out = _report(**env)
    assert (out["threads"]["xla"]["threads"], out["threads"]["xla"]["set_by"]) == xla
    assert (out["threads"]["openblas"]["threads"], out["threads"]["openblas"]["set_by"]) == blas
    for variable, value in env.items():  # the user's own variables are untouched
        if variable in ("PJRT_NPROC", "OPENBLAS_NUM_THREADS"):
            assert out[variable] == value


def test_too_late_leaves_the_pools_alone():
    """JAX's backend and scipy.linalg started before the import: nothing is set; silent by default,
    a RuntimeWarning per pool when ADAPTIVE_KERNELS_THREADS asked for it."""
    before = "import jax, scipy.linalg; jax.numpy.ones(2).block_until_ready()"
    quiet = _report(before)
    assert quiet["PJRT_NPROC"] is None and quiet["OPENBLAS_NUM_THREADS"] is None and not quiet["warnings"]
    loud = _report(before, ADAPTIVE_KERNELS_THREADS="1")
    assert loud["PJRT_NPROC"] is None and loud["OPENBLAS_NUM_THREADS"] is None
    assert len(loud["warnings"]) == 2 and all("ADAPTIVE_KERNELS_THREADS=1 cannot size" in w for w in loud["warnings"])


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_thread_count_raises_naming_the_variable(value):
    done = _run("import adaptive_kernels", ADAPTIVE_KERNELS_THREADS=value)
    assert done.returncode != 0
    assert "ADAPTIVE_KERNELS_THREADS must be a positive integer or 'default'" in done.stderr
