import os

# Tests run on the CPU; keep XLA from grabbing every core per worker (pytest -n 2 on 2 cores).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import adaptive_kernels  # noqa: E402,F401  (enables float64 before any test builds arrays)
