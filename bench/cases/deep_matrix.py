"""The deep solver's convergence matrix and its speed target (issue 14).

Cells: erf, ReLU and linear nets, d = 20, N_l = 200, kappa2 = 1e-2, L in {2, 3, 4, 6, 8}, gamma in {1, 1.5, 2},
P in {100, 400} (cubic teacher; linear teacher for the linear net). In each cell the default deep solver
(``ak.solve(arch, data, kappa2, "adaptive")``: Newton-Krylov steps on the whitened kernel form) and the
forward-backward iteration on the conjugate form (``Adaptive(form="conjugate")``, ``FixedPoint``) run from the
NNGP; where both converge their output kernels must agree to 1e-8 relative. The target row: L = 4, P = 1000,
erf, gamma = 2, at most 10 s after compilation, its time per iteration in P x P Cholesky factorisations per layer.

The full matrix takes hours on a shared 2-core machine; ``DEEP_MATRIX_P``, ``DEEP_MATRIX_DEPTHS``,
``DEEP_MATRIX_GAMMAS`` and ``DEEP_MATRIX_ACTIVATIONS`` (comma-separated) restrict it, ``DEEP_MATRIX_TARGET=0`` skips
the target row. ``DEEP_MATRIX_RULE=PATH[:SUBPROBLEM]`` (e.g. ``exponential:lanczos``) runs the default solver with
those trust-region settings (``Continuation(rule=TrustRegion(path=PATH, subproblem=SUBPROBLEM))``) instead of the
default ones (docs/deep_solver.md, eighth pass).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp

import adaptive_kernels as ak
from adaptive_kernels.api import solve_problem
from adaptive_kernels.solvers import Status

from bench.cases.common import KAPPA2, Config, Section, _cholesky_time, log, seconds
from bench.timing import time_jitted

ACTIVATIONS = ("erf", "relu", "linear")
FB_TOL = 1e-12
"""Relative residual the forward-backward solution is refined to before the agreement is measured (``_refined``)."""
GAMMAS = (1.0, 1.5, 2.0)
SIZES = {"full": ((100, 400), (2, 3, 4, 6, 8), (4, 1000)), "quick": ((100,), (2, 4), (2, 200)),
         "tiny": ((30,), (2,), None)}
"""cfg.name -> (P values, depths, target (L, P) or None)."""


def _env(name, default, kind=int):
    value = os.environ.get(name)
    return tuple(kind(v) for v in value.split(",")) if value else default


def _problem(activation, depth, gamma, P):
    data = ak.teacher_dataset(jax.random.PRNGKey(0), P, 20, "linear" if activation == "linear" else "cubic", P_test=10)
    return ak.FCN(20, (200,) * depth, activation, gamma=gamma), data


def _solver():
    """None (the default solver), or the trust-region settings of ``DEEP_MATRIX_RULE`` (module docstring)."""
    rule = os.environ.get("DEEP_MATRIX_RULE")
    if not rule:
        return None
    path, _, subproblem = rule.partition(":")
    return ak.solvers.Continuation(rule=ak.solvers.TrustRegion(path=path, subproblem=subproblem or "steihaug"))


def _timed_solve(arch, data, compiled: dict):
    """(solution, wall seconds, CPU seconds) of the default solve (``ak.solve(arch, data, KAPPA2, "adaptive")``; with
    ``DEEP_MATRIX_RULE``, that rule's), run by an executable compiled ahead of time (``solve_problem.lower(...)
    .compile()``, once per entry of ``compiled``: the gammas of one (phi, P, L) differ only in a float leaf of the
    problem and share it), so that only the solve itself is timed and it runs once (a warm-up call would run the whole
    solve a second time)."""
    theory = ak.Adaptive()
    problem = ak.make_problem(arch, data, KAPPA2)
    key = jax.tree.structure(problem), tuple(jnp.shape(leaf) for leaf in jax.tree.leaves(problem))
    if key not in compiled:
        compiled[key] = solve_problem.lower(problem, theory, _solver()).compile()
    wall, cpu = time.perf_counter(), time.process_time()
    sol = jax.block_until_ready(compiled[key](problem, theory, _solver()))
    return dataclasses.replace(sol, theory=theory), time.perf_counter() - wall, time.process_time() - cpu


def _refined(arch, data, fb):
    """The forward-backward solution continued to the relative residual ``FB_TOL`` (where it gets there; else ``fb``).
    Its stopping rule, |T(x) - x| / |T(x)| <= 1e-10, leaves the output kernel of a deep linear net at P = 400 1.2e-8
    from the saddle (L = 3, gamma = 1: the residual there is 100-300x the precision map's); at 1e-12 the two forms
    agree to 7e-11 (docs/deep_solver.md)."""
    tight = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate"), ak.FixedPoint(tol=FB_TOL), init=fb.value)
    return tight if tight.converged else fb


def _status(sol) -> str:
    return Status(int(sol.status)).name


def _write_partial(path: str, sec: Section, pending: list) -> None:
    """The table so far, the cells still to run marked *not run*, to ``path`` (``DEEP_MATRIX_PARTIAL``): rewritten after
    every cell, so that a long run stopped early leaves its results."""
    rows = sec.rows + [[*cell, "not run"] + [""] * (len(sec.columns) - len(cell) - 1) for cell in pending]
    lines = [f"# {sec.title} (partial: rewritten after every cell)", "", sec.note, "",
             "| " + " | ".join(sec.columns) + " |", "|" + "---|" * len(sec.columns)]
    lines += ["| " + " | ".join(str(x).replace("|", "/") for x in row) + " |" for row in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def deep_matrix(cfg: Config) -> Section:
    Ps, depths, target = SIZES[cfg.name]
    Ps, depths = _env("DEEP_MATRIX_P", Ps), _env("DEEP_MATRIX_DEPTHS", depths)
    gammas, activations = _env("DEEP_MATRIX_GAMMAS", GAMMAS, float), _env("DEEP_MATRIX_ACTIVATIONS", ACTIVATIONS, str)
    sec = Section(
        "Deep solver convergence matrix (d=20, N_l=200, kappa2=1e-2)",
        "Default: `ak.solve(arch, data, 1e-2, 'adaptive')` (trust-region Newton-CG steps on the whitened kernels Q_l, "
        "`solvers/fixed_point.py` `TrustRegion`, `actions/krylov.py`, with continuation in the data term where the cold start fails); iterations = "
        "evaluations of the precision map (accepted and rejected trial points); J products: the products with the "
        "Jacobian in the CG solves of the Newton steps (`Solution.stats['jacobian_products']`; one forward-over-reverse "
        "pass each, ~2 evaluations in time); stages: "
        "continuation stages run (0: the cold start converged). Forward-backward: "
        "`Adaptive(form='conjugate')` with `FixedPoint` (its status and iterations at its default tolerance). Agreement: "
        "max |K_L - K_L^fb| / max |K_L^fb| where both converged (target 1e-8), the forward-backward solution continued "
        "to the relative residual 1e-12 where it gets there. Times: wall and CPU seconds of the solve, compiled ahead of time "
        "(compilation not included), on the shared machine.",
        ["phi", "P", "L", "gamma", "default", "iterations", "J products", "stages", "wall", "CPU",
         "forward-backward", "fb iterations", "agreement", "check"],
    )
    iterations, compiled = {}, {}
    # cheapest first (linear nets, then by depth), so that a run stopped early has covered the most cells; the gammas
    # of one (phi, P, L) stay together (they share one compilation)
    cells = sorted(((a, P, L, g) for a in activations for P in Ps for L in depths for g in gammas),
                   key=lambda c: (c[1], c[0] != "linear", c[2], activations.index(c[0]), c[3]))
    partial = os.environ.get("DEEP_MATRIX_PARTIAL")
    for index, (activation, P, depth, gamma) in enumerate(cells):
        if partial:
            _write_partial(partial, sec, [(a, str(p), str(L), f"{g:g}") for a, p, L, g in cells[index:]])
        arch, data = _problem(activation, depth, gamma, P)
        log(f"deep matrix: {activation} P={P} L={depth} gamma={gamma}")
        sol, wall, cpu = _timed_solve(arch, data, compiled)
        products = int(sol.stats["jacobian_products"])
        fb = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate"))
        agreement, ok = "-", bool(sol.converged)
        if sol.converged and fb.converged:
            K = ak.layer_kernels(sol, arch, data, KAPPA2)[-1]
            K_fb = ak.layer_kernels(_refined(arch, data, fb), arch, data, KAPPA2)[-1]
            diff = float(jnp.max(jnp.abs(K - K_fb)) / jnp.max(jnp.abs(K_fb)))
            agreement, ok = f"{diff:.1e}", ok and diff <= 1e-8
        detail = sec.check(f"{activation} P={P} L={depth} gamma={gamma}", ok,
                           f"default {_status(sol)}, forward-backward {_status(fb)}, agreement {agreement}")
        log(f"  -> {detail}; {int(sol.iterations)} iterations, {products} products, {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU")
        iterations[activation, P, gamma, depth] = int(sol.iterations), products
        sec.rows.append([activation, str(P), str(depth), f"{gamma:g}", _status(sol), str(int(sol.iterations)),
                         str(products), str(int(sol.stats["continuation_stages"])), seconds(wall),
                         seconds(cpu), _status(fb), str(int(fb.iterations)), agreement, detail])
    if partial:
        _write_partial(partial, sec, [])
    if min(depths) == 2 and max(depths) == 8:
        for (activation, P, gamma, depth), (its, products) in sorted(iterations.items()):
            if depth == 8 and (activation, P, gamma, 2) in iterations:
                its2, products2 = iterations[activation, P, gamma, 2]
                growth = its / its2
                sec.check(f"iterations L=2 -> L=8, {activation} P={P} gamma={gamma}", growth <= 2,
                          f"evaluations {its2} -> {its} ({growth:.1f}x, target <= 2x); J products {products2} -> "
                          f"{products} ({products / max(products2, 1):.1f}x)")
    if target is not None and os.environ.get("DEEP_MATRIX_TARGET", "1") != "0":
        _target_row(sec, *target)
    return sec


def _target_row(sec: Section, depth: int, P: int):
    """L, P, erf, gamma = 2: solve_problem compiled ahead of time; the time per iteration in Cholesky factorisations
    of a P x P matrix (scipy's, this machine) per layer."""
    arch, data = _problem("erf", depth, 2.0, P)
    log(f"deep matrix target: erf L={depth} P={P} gamma=2")
    problem = ak.make_problem(arch, data, KAPPA2)
    cpu = time.process_time()
    timing, sol = time_jitted(solve_problem, problem, ak.Adaptive(), repeats=1)
    cpu = time.process_time() - cpu
    chol = _cholesky_time(P)
    its = max(int(sol.iterations), 1)
    per_layer = timing.median / its / chol / depth
    sec.check(f"target erf L={depth} P={P} gamma=2 within 10 s", bool(sol.converged) and timing.median <= 10,
              f"{_status(sol)}, {timing.median:.1f} s after {timing.compile_s:.0f} s of compilation, {its} iterations, "
              f"{per_layer:.1f} Cholesky times per iteration and layer (target <= 5)")
    sec.rows.append(["erf (target)", str(P), str(depth), "2", _status(sol), str(its), "-", "-", seconds(timing.median),
                     f"{seconds(cpu)} incl. compile", "-", "-", "-",
                     f"{per_layer:.1f} Cholesky times / iteration / layer; target 10 s: "
                     f"{'met' if timing.median <= 10 else 'missed'}"])
