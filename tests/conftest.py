import os

# Tests run on the CPU; one XLA thread and one OpenBLAS thread per worker (pytest -n 2 on 2 cores). This is
# the library's default too; XLA_FLAGS would not do it (adaptive_kernels/_config.py, README.md, "Threads").
os.environ.setdefault("ADAPTIVE_KERNELS_THREADS", "1")

import adaptive_kernels  # noqa: E402,F401  (enables float64 before any test builds arrays)
