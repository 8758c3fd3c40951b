"""The benchmark cases. Each returns a :class:`Section` (a markdown table plus the answer
checks made before its times were reported). Sizes come from a :class:`Config`
(``FULL`` for ``make bench``, ``QUICK`` for ``--quick`` and the test).

One module per topic: ``sampling`` (theory vs HMC), ``solvers`` (vs scipy, size scaling,
deep iterations, issue-4 target), ``sweeps`` (batch vs loop, devices), ``deepbays`` (kernel
scaling vs deepbays, in its own environment: ``make bench-deepbays``); ``common`` the rest.
"""

from __future__ import annotations

from typing import Callable

from bench.cases.common import FULL, QUICK, TINY, Check, Config, Section, log
from bench.cases.deep_matrix import deep_matrix
from bench.cases.deepbays import deepbays_baseline
from bench.cases.exact import exact_vs_hmc
from bench.cases.memory import memory
from bench.cases.sampling import theory_vs_sampling
from bench.cases.solvers import deep_forward_backward, scaling_with_size, solvers_vs_scipy, target
from bench.cases.sweeps import sweep_worker, sweeps

CASES: dict[str, Callable[[Config], Section]] = {
    "sampling": theory_vs_sampling,
    "scipy": solvers_vs_scipy,
    "size": scaling_with_size,
    "deep": deep_forward_backward,
    "sweep": sweeps,
    "target": target,
    "deepbays": deepbays_baseline,
    "deep-matrix": deep_matrix,
    "memory": memory,
    "exact": exact_vs_hmc,
}
"""name -> case; ``bench/run.py --only NAME`` runs a subset."""

__all__ = ["CASES", "Check", "Config", "FULL", "QUICK", "Section", "TINY", "log", "sweep_worker"]
