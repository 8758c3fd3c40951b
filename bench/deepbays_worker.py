"""Subprocess side of ``bench/cases/deepbays.py``: times kernel-scaling solves on one thread.

    python bench/deepbays_worker.py library JOBS.json OUT.json      # adaptive_kernels (main venv)
    bench/.venv-deepbays/bin/python bench/deepbays_worker.py deepbays JOBS.json OUT.json [--src DIR]

Imports nothing but numpy at module level, so it runs in either environment: ``library`` mode
imports JAX and ``adaptive_kernels``, ``deepbays`` mode imports torch and deepbays. Each job
(a dict, see ``bench/cases/deepbays.py``) names a data file (X, y, X_test) and the network in
our conventions; the deepbays mode maps them onto deepbays' (the case's docstring has the
mapping). A job's result: wall times of the solve (``first``: the first call, compile or
warm-up included; ``runs``: the later calls), the CPU time of each later call (this process,
all threads: equal to the wall time for one thread that never waits for a core), the order
parameters, the mean test output (not timed) and a converged flag.

deepbays is imported module by module (the kernels its ``deepbays/kernels/__init__.py``
re-exports, and the ``deepbays.rkgp`` theory files) under an empty parent package: its
``__init__`` files import its dataset tasks (torchvision; PyPI has only CUDA builds of it) and,
in 0.1.11, cupy. A job deepbays cannot run is reported (``unavailable``: no such kernel or
another theory; ``failed``: the exception), not raised.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn, repeats: int, warmup: bool):
    """(first call's wall time or None, later wall times, their CPU times, last result)."""
    first = None
    if warmup:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    runs, cpu, out = [], [], None
    for _ in range(repeats):
        cpu0, start = _cpu_seconds(), time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - cpu0)
    return first, runs, cpu, out


# ------------------------------------------------------------------------------------- library
def run_library(jobs: list) -> dict:
    import jax
    import jax.numpy as jnp

    import adaptive_kernels as ak
    from adaptive_kernels._config import threads

    results = {"threads": threads(), "version": ak.__version__, "jax": jax.__version__}
    for job in jobs:
        data_np = np.load(job["data"])
        data = ak.Dataset(X=jnp.asarray(data_np["X"]), y=jnp.asarray(data_np["y"]), X_test=jnp.asarray(data_np["X_test"]))
        arch = ak.FCN(data.d, (job["N"],) * job["depth"], job["activation"], job["s_w2"], job["s_a2"], gamma=job["gamma"])
        if job["kind"] == "eigh":  # numpy's (the reference of the issue-19 target), then JAX's compiled one
            K = jax.block_until_ready(ak.nngp(arch, data.X))
            K_np = np.asarray(K)
            _, runs, cpu, _ = _timed(lambda: np.linalg.eigh(K_np), job["repeats"], warmup=job["warmup"])
            eigh = jax.jit(jnp.linalg.eigh).lower(K).compile()
            _, jax_runs, jax_cpu, _ = _timed(lambda: jax.block_until_ready(eigh(K)), job["repeats"], job["warmup"])
            results[job["id"]] = {"runs": runs, "cpu": cpu, "jax_runs": jax_runs, "jax_cpu": jax_cpu}
            continue

        def solve():
            return jax.block_until_ready(ak.solve(arch, data, job["kappa2"], theory="scaling"))

        first, runs, cpu, sol = _timed(solve, job["repeats"], warmup=True)
        mean = np.asarray(ak.predict(sol, arch, data, job["kappa2"]).mean_test)
        results[job["id"]] = {"first": first, "runs": runs, "cpu": cpu, "mean_test": mean.tolist(),
                              "order_parameters": np.atleast_1d(np.asarray(sol.value)).tolist(),
                              "converged": bool(sol.converged), "iterations": int(sol.iterations)}
    return results


# ------------------------------------------------------------------------------------ deepbays
def load_deepbays(src: str | None):
    """deepbays' kernel and theory modules without its package ``__init__`` files.

    Returns (version label, FC_1HL class, deep class, whether the deep class multiplies the product of
    the Q_l onto the last kernel (``vanilla``) rather than into each layer's map (0.1.11's ``FC_deep``))."""
    import importlib
    import importlib.util
    import types

    for name in list(sys.modules):  # a previous load's stand-in packages
        if name == "deepbays" or name.startswith("deepbays."):
            del sys.modules[name]
    if src:
        root = Path(src) / "deepbays"
        commit = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        label = "source" + (f" {commit.stdout.strip()}" if commit.returncode == 0 else f" {Path(src).name}")
    else:
        spec = importlib.util.find_spec("deepbays")
        if spec is None:
            raise ImportError("deepbays is not installed here (make bench-deepbays)")
        root = Path(spec.origin).parent
        from importlib.metadata import distribution

        dist = distribution("deepbays")
        origin = json.loads(dist.read_text("direct_url.json") or "{}").get("url")  # set for a local-path install
        label = dist.version + (f" from {origin}" if origin else "")

    def package(name, path):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
        return module

    top = package("deepbays", root)
    top.kernels = package("deepbays.kernels", root / "kernels")
    top.rkgp = package("deepbays.rkgp", root / "rkgp")
    # what deepbays/kernels/__init__.py re-exports, except from modules that need cupy
    exports = re.findall(r"^from \.(\w+) import (\w+)", (root / "kernels" / "__init__.py").read_text(), re.MULTILINE)
    for module_name, name in exports:
        if module_name != "kernels_cuda":
            setattr(top.kernels, name, getattr(importlib.import_module(f"deepbays.kernels.{module_name}"), name))
    one_layer = importlib.import_module("deepbays.rkgp.theory_1HL_FC_single_output").FC_1HL
    if (root / "rkgp" / "theory_deep_FC_vanilla.py").exists():
        return label, one_layer, importlib.import_module("deepbays.rkgp.theory_deep_FC_vanilla").FC_deep_vanilla, True
    return label, one_layer, importlib.import_module("deepbays.rkgp.theory_deep_FC").FC_deep, False


def deepbays_priors(job: dict) -> tuple:
    """Our (s_w2, s_a2, gamma, N) -> deepbays' Gaussian priors (lambda_0, lambda_1, ..., lambda_L):
    lambda_0 = ... = lambda_{L-1} = 1/s_w2, lambda_L = N**(gamma - 1)/s_a2 (the case's docstring)."""
    readout = job["N"] ** (job["gamma"] - 1.0) / job["s_a2"]
    return (1.0 / job["s_w2"],) * job["depth"] + (readout,)


def _deepbays_activation(name: str) -> str:
    return {"linear": "id"}.get(name, name)


def run_deepbays(jobs: list, src: str | None) -> dict:
    import torch

    torch.set_num_threads(1)
    label, one_layer, deep, vanilla = load_deepbays(src)
    results = {"version": label, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
               "deep_class": deep.__name__, "deep_vanilla": vanilla}
    for job in jobs:
        data = np.load(job["data"])
        X, y, X_test = data["X"], data["y"], data["X_test"]
        priors = deepbays_priors(job)
        act = _deepbays_activation(job["activation"])
        T = job["kappa2"]
        if job["depth"] == 1:
            def solve():
                model = one_layer(job["N"], T, l0=priors[0], l1=priors[1], act=act)
                model.preprocess(X, y)
                model.optimize()
                return model
        else:
            y_torch = torch.tensor(y, dtype=torch.float64)

            def solve():
                model = deep(job["depth"], job["N"], T, priors=list(priors), act=act)
                model.preprocess(X, y_torch)
                model.optimize()
                return model

        if job["depth"] > 1 and not vanilla:
            results[job["id"]] = {"unavailable": f"{deep.__name__} puts Q_l inside the layer maps (module docstring)"}
            continue
        try:
            first, runs, cpu, model = _timed(solve, job["repeats"], warmup=job["warmup"])
        except AttributeError as err:  # 0.1.11 exports no kernel_id (linear activation)
            results[job["id"]] = {"unavailable": f"{type(err).__name__}: {err}"}
            continue
        except Exception as err:  # noqa: BLE001 -- a baseline that fails is a result to report, not a crash
            results[job["id"]] = {"failed": f"{type(err).__name__}: {err}"}
            continue
        mean = np.asarray(model.predict(X_test), dtype=np.float64).reshape(-1)
        results[job["id"]] = {"first": first, "runs": runs, "cpu": cpu, "mean_test": mean.tolist(),
                              "order_parameters": np.atleast_1d(np.asarray(model.optQ, dtype=np.float64)).tolist(),
                              "converged": None if getattr(model, "converged", None) is None else bool(model.converged)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("library", "deepbays"))
    parser.add_argument("jobs", help="JSON list of jobs")
    parser.add_argument("out", help="JSON file for the results")
    parser.add_argument("--src", default=None, help="deepbays source tree (the directory holding deepbays/)")
    args = parser.parse_args(argv)
    jobs = json.loads(Path(args.jobs).read_text())
    results = run_library(jobs) if args.mode == "library" else run_deepbays(jobs, args.src)
    Path(args.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
