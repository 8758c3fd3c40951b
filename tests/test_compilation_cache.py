"""The opt-in persistent compilation cache (``ADAPTIVE_KERNELS_COMPILATION_CACHE``, adaptive_kernels/_config.py).

The compiling cases run in fresh interpreters (the cache is set up once per process). A second process must load
its compiled programs from the directory the first one filled (JAX's cache-hit events, not the library's own report)
and give the first process's answer bit for bit (the first one compiled afresh, the second did not compile them at
all); without the variable (checked in this process), or where the user set JAX's own, nothing is changed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from adaptive_kernels._config import _apply_compilation_cache, compilation_cache

ROOT = Path(__file__).resolve().parent.parent
_CACHE_VARIABLES = ("ADAPTIVE_KERNELS_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
                    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")

SOLVE = """
import json, jax
events = {"hits": 0, "misses": 0}
def count(name, **kwargs):
    if name == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    elif name == "/jax/compilation_cache/cache_misses":
        events["misses"] += 1
jax.monitoring.register_event_listener(count)
import adaptive_kernels as ak
from adaptive_kernels._config import compilation_cache
data = ak.teacher_dataset(jax.random.PRNGKey(0), 12, 3, "cubic", P_test=20)
arch = ak.FCN(3, (20,), "erf", 1.0, 1.0, gamma=2.0)
value = ak.solve(arch, data, 0.01, ak.Adaptive(form="conjugate")).value[0]
print(json.dumps(dict(events, cache=compilation_cache(), value=[float(v).hex() for v in value.ravel()])))
"""


def _run(**env_vars) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARIABLES}
    env.update(env_vars, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", SOLVE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_programs_and_gives_the_same_answer(tmp_path):
    cache = tmp_path / "cache"
    first = _run(ADAPTIVE_KERNELS_COMPILATION_CACHE=str(cache))
    assert first["cache"]["directory"] == str(cache) and first["cache"]["directory_set_by"] == "adaptive_kernels"
    assert first["cache"]["min_compile_time_secs"] == 0.0
    assert first["misses"] > 0 and any(cache.iterdir())  # (a hit: a program compiled twice in one process)
    second = _run(ADAPTIVE_KERNELS_COMPILATION_CACHE=str(cache))
    assert second["misses"] == 0 and second["hits"] == first["hits"] + first["misses"]
    assert second["value"] == first["value"]


def test_off_by_default_and_the_users_jax_settings_win(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv("ADAPTIVE_KERNELS_COMPILATION_CACHE", raising=False)
    _apply_compilation_cache()  # unset: nothing changes
    assert jax.config.jax_compilation_cache_dir == before
    assert compilation_cache()["directory_set_by"] != "adaptive_kernels"
    own = tmp_path / "own"
    user = _run(ADAPTIVE_KERNELS_COMPILATION_CACHE=str(tmp_path / "ours"), JAX_COMPILATION_CACHE_DIR=str(own),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="5")
    assert user["cache"]["directory"] == str(own) and user["cache"]["directory_set_by"] == "user"
    assert user["cache"]["min_compile_time_secs"] == 5.0 and not (tmp_path / "ours").exists()
