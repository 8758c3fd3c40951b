import os

import pytest

# Tests run on the CPU; one XLA thread and one OpenBLAS thread per worker (pytest -n 2 on 2 cores). This is
# the library's default too; XLA_FLAGS would not do it (adaptive_kernels/_config.py, README.md, "Threads").
os.environ.setdefault("ADAPTIVE_KERNELS_THREADS", "1")
# The test programs are small and compiled once each, so compilation dominates the suite's CPU time: XLA's LLVM
# backend at optimisation level 0 compiles them faster (user CPU -31% on a compile-bound one-loop test, -14% on an
# HMC test, 2026-12-03); fast-math stays off, as at every level. Children (README examples, notebooks, CLI runs)
# inherit it; a user's own XLA_FLAGS is kept.
_SUITE_XLA_FLAG = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", _SUITE_XLA_FLAG)

import adaptive_kernels  # noqa: E402,F401  (enables float64 before any test builds arrays)


@pytest.fixture
def default_xla_optimisation(monkeypatch):
    """XLA's default optimisation level for this test's child processes (the suite's level 0 above is for
    compile-bound tests; run-bound subprocess solves were 1.5-2.4x slower under it, 2026-12-03)."""
    flags = os.environ.get("XLA_FLAGS", "").replace(_SUITE_XLA_FLAG, "").strip()
    monkeypatch.setenv("XLA_FLAGS", flags)
