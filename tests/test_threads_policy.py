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
_THREAD_VARIABLES = ("XLA_FLAGS", "PJRT_NPROC", "NPROC", "ADAPTIVE_KERNELS_THREADS", "ADAPTIVE_KERNELS_YNN", "OPENBLAS_NUM_THREADS",
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


YNN_REPORT = """
import json, os
{before}
import adaptive_kernels, jax, jax.numpy as jnp
a = jnp.ones((20, 20))
hlo = jax.jit(lambda a, b: jnp.tanh(a @ b).sum(0)).lower(a, a).compile().as_text()
print(json.dumps({{"XLA_FLAGS": os.environ.get("XLA_FLAGS"), "applied": adaptive_kernels.xla_workarounds(),
                  "ynn_in_hlo": "__ynn_fusion" in hlo, "xla_threads": adaptive_kernels.threads()["xla"]}}))
"""


def _ynn_report(before: str = "pass", **env_vars) -> dict:
    done = _run(YNN_REPORT.format(before=before), **env_vars)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ynn_fusions_are_off_on_affected_jaxlib_unless_the_user_chose():
    """The XLA workaround (adaptive_kernels/_config.py): on the jaxlib versions whose YNNPACK fusions crash, the
    compiled program of a small dot has no ``__ynn_fusion`` with the library's default, and has one where the user
    keeps XLA's default (``ADAPTIVE_KERNELS_YNN=on``): the flag, not something else, removes them. The user's own
    XLA_FLAGS are kept (the flag is appended) and the threading policy still treats them as the user's."""
    from adaptive_kernels._config import YNN_AFFECTED, YNN_OFF_FLAG, _jaxlib_version

    if not YNN_AFFECTED[0] <= _jaxlib_version() < YNN_AFFECTED[1]:
        default = _ynn_report()
        assert default["applied"] == [] and default["XLA_FLAGS"] is None  # other jaxlib versions: untouched
        return
    default = _ynn_report()
    assert default["applied"] == [YNN_OFF_FLAG] and default["XLA_FLAGS"] == YNN_OFF_FLAG
    assert not default["ynn_in_hlo"]
    assert default["xla_threads"] == {"threads": "1", "variable": "PJRT_NPROC", "set_by": "adaptive_kernels"}
    kept = _ynn_report(ADAPTIVE_KERNELS_YNN="on")
    assert kept["applied"] == [] and kept["XLA_FLAGS"] is None and kept["ynn_in_hlo"]
    user = _ynn_report(XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
    assert user["XLA_FLAGS"] == f"--xla_cpu_multi_thread_eigen=false {YNN_OFF_FLAG}" and not user["ynn_in_hlo"]
    assert user["xla_threads"]["set_by"] == "default"  # the user's XLA_FLAGS: XLA's pool left alone, as before
    chosen = _ynn_report(XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=reduce")
    assert chosen["applied"] == [] and chosen["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=reduce"
    late = _ynn_report("import jax; jax.numpy.ones(2).block_until_ready()")
    assert late["applied"] == [] and late["XLA_FLAGS"] is None and late["ynn_in_hlo"]


def test_bad_ynn_choice_raises_naming_the_variable():
    done = _run("import adaptive_kernels", ADAPTIVE_KERNELS_YNN="maybe")
    assert done.returncode != 0 and "ADAPTIVE_KERNELS_YNN must be 'on'" in done.stderr
