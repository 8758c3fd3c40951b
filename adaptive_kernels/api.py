"""The facade: ``solve``, ``predict``, ``summarize`` for every architecture and depth (THEORY.md secs. 2-6).

    sol = solve(arch, data, kappa2, theory="adaptive")      # Solution: order parameters, action, status...
    pred = predict(sol, arch, data, kappa2)                 # mean/variance on train and test inputs
    summarize(sol, arch, data, kappa2)                      # flat dict of observables (per-layer lists)

Data flow one way: architecture + data -> :class:`~adaptive_kernels.problem.Problem` -> the theory's action ->
solver -> :class:`~adaptive_kernels.solvers.Solution` -> predictions and observables. Theories: ``"gp"`` (NNGP),
``"scaling"``, ``"adaptive"`` or a theory object (``adaptive_kernels.theories``), e.g.
``Adaptive(form="conjugate")``; with a name, keyword options go to its constructor (``space="function"``).
"""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._config import brief_jit
from adaptive_kernels._validation import check_array, is_traced
from adaptive_kernels.prediction import Prediction, observables, predict_problem, python_scalars
from adaptive_kernels.problem import Problem, make_problem
from adaptive_kernels.solvers import AbstractRule, Newton, QuasiNewton, Solution, Status, stationary_point
from adaptive_kernels.solvers.stationary import as_fixed_point_problem
from adaptive_kernels.theories import NNGP, AbstractTheory, get_theory

SOLVERS = {"fixed-point": Newton, "gradient": QuasiNewton}
"""Solver names: ``"fixed-point"`` (the default for two-layer nets: the guarded precision iteration with Newton
steps where the action has a Jacobian model) and ``"gradient"`` (L-BFGS over Cholesky factors + Newton polish)."""


def resolve_solver(solver):
    """None, a name in :data:`SOLVERS`, or a solver object (a step rule or :class:`QuasiNewton`)."""
    if solver is None or isinstance(solver, (AbstractRule, QuasiNewton)):
        return solver
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)} or a solver object, got {solver!r}")
        return SOLVERS[solver]()
    raise TypeError(f"solver must be a name or a solver object (FixedPoint, Newton, QuasiNewton), got {type(solver).__name__}")


@eqx.filter_jit
def solve_problem(problem: Problem, theory: AbstractTheory, solver=None, *, init=None, implicit: bool = True,
                  linear_solver=None) -> Solution:
    """The jittable, vmappable core of :func:`solve` on a prepared :class:`Problem`.

    Every float leaf of ``problem`` (data, kappa2, s_w2, s_a2, s_b2, gamma and the widths as floats) can be vmapped
    over or differentiated; derivatives of the solution come from its defining equation (implicit
    differentiation), not from the iterations.
    """
    if isinstance(theory, NNGP):
        zero = jnp.zeros((), dtype=problem.X.dtype)
        return Solution(value=None, action=theory.action(problem), grad_norm=zero, iterations=jnp.asarray(0),
                        status=jnp.asarray(Status.SUCCESS, dtype=jnp.int32),
                        domain_margin=jnp.full((), jnp.nan, dtype=problem.X.dtype), stats={}, theory=theory)
    action, args = theory.problem(problem)
    init = theory.init(problem, args) if init is None else init
    solver = theory.default_solver(problem) if solver is None else solver
    # a theory with array fields (an array ``seed``) is traced here and cannot be a static field: None (``solve``
    # attaches the theory object)
    static = None if jax.tree.leaves(eqx.filter(theory, eqx.is_array)) else theory
    return stationary_point(action, solver, init, args, implicit=implicit, linear_solver=linear_solver,
                            theory=static)


def solve(arch, data, kappa2, theory="adaptive", solver=None, *, init=None, implicit: bool = True,
          linear_solver=None, **theory_options) -> Solution:
    """Solve a theory's saddle point for a network on data.

    Args:
        arch: an ``FCN`` (any depth) or a two-layer ``CNN``.
        data: a ``Dataset`` (X (P, d), y (P,) or (P, m)).
        kappa2: noise variance (the Langevin temperature), > 0.
        theory: ``"gp"``, ``"scaling"``, ``"adaptive"`` or a theory object (``adaptive_kernels.theories``).
        solver: None (the theory's default), ``"fixed-point"`` (:class:`~adaptive_kernels.solvers.Newton`),
            ``"gradient"`` (:class:`~adaptive_kernels.solvers.QuasiNewton`) or a configured solver object.
        init: initial order parameters (default: the prior, e.g. Sigma = (s_w2/n) I, s = 1, zero conjugates).
        implicit: attach implicit derivatives w.r.t. the numeric fields of arch, kappa2 and the data.
        linear_solver: lineax solver for the implicit derivatives' linear system.
        theory_options: options of a named theory (e.g. ``space="function"``, ``form="conjugate"``).

    Returns:
        a :class:`~adaptive_kernels.solvers.Solution`; ``value`` holds the order parameters in the theory's
        coordinates (Sigma, s, ...; None for the NNGP) and ``theory`` the theory object.
    """
    theory = get_theory(theory, **theory_options)
    problem = make_problem(arch, data, kappa2)
    theory.check(problem)
    theory = theory.prepared(problem)
    if init is not None:
        theory.check_value(init, problem, "init")
    with warnings.catch_warnings():
        # an array field of the theory (``Adaptive(seed=jnp.asarray(k))``: keys share one compilation) is traced
        # under jit; the Solution keeps the theory object itself (a static field)
        warnings.filterwarnings("ignore", "A JAX array is being set as static")
        solution = solve_problem(problem, theory, resolve_solver(solver), init=init, implicit=implicit,
                                 linear_solver=linear_solver)
        return dataclasses.replace(solution, theory=theory)


def _checked(solution: Solution, arch, data, kappa2, check_solves: bool = True) -> Problem:
    if not isinstance(solution, Solution) or solution.theory is None:
        raise TypeError("solution must be a Solution returned by adaptive_kernels.solve")
    problem = make_problem(arch, data, kappa2)
    solution.theory.check(problem)
    solution.theory.check_value(solution.value, problem, "solution")
    if check_solves:
        _check_solves(solution, problem)
    return problem


def _check_solves(solution: Solution, problem: Problem, recomputed=None) -> None:
    """Raise if ``solution`` is not a stationary point of ``problem`` as far as it was one of its own: its stationarity
    residual recomputed here (or given: ``recomputed``) must not exceed max(100 x the residual the solver reported,
    sqrt(eps)). Order parameters whose shapes do not depend on P (Sigma is d x d, scales are scalars) would otherwise
    give numbers for data, kappa2 or an architecture they were not solved with. Skipped under jit/vmap, for the NNGP
    and for a solution whose own residual is not finite."""
    residual = solution.stats.get("residual")
    if solution.value is None or residual is None or is_traced((solution.value, residual, problem)) or jnp.ndim(residual):
        return
    if not np.isfinite(residual):  # a non-finite solution has no residual to compare with; its status says so
        return
    if recomputed is None:
        recomputed = _stationarity_residual(solution.theory, solution.value, problem)
    recomputed = float(recomputed)
    eps = float(jnp.finfo(problem.X.dtype).eps)
    if not recomputed <= max(100 * float(residual), eps**0.5):
        raise ValueError(f"solution: not a stationary point of this problem (residual {recomputed:.2e}; its solver "
                         f"reported {float(residual):.2e}): it was solved with other data, kappa2 or architecture")


@eqx.filter_jit
def _stationarity_residual(theory: AbstractTheory, value, problem: Problem):
    """The stationarity residual of ``value`` on ``problem`` (compiled: eagerly, the derivatives of a one-loop or
    mixture action would run primitive by primitive)."""
    action, args = theory.problem(problem)
    fixed_point = as_fixed_point_problem(action, value)
    return fixed_point.report(fixed_point.start(value, args), args)[1]


def predict(solution: Solution, arch, data, kappa2, X_test=None) -> Prediction:
    """Mean output and predictive variance of the GP with the solution's output kernel.

    ``X_test`` defaults to ``data.X_test``; without test inputs only ``mean_train`` is given.
    """
    problem = _checked(solution, arch, data, kappa2)
    X_test = data.X_test if X_test is None else check_array("X_test", X_test, ndim=2, shape=(None, arch.d))
    return _finite(predict_problem(solution, problem, None if X_test is None else jnp.asarray(X_test, problem.X.dtype)))


def _finite(prediction: Prediction) -> Prediction:
    """``prediction``, or a ValueError if its mean output is not finite (concrete values only): the GP posterior's
    Cholesky factor of K + kappa2 I failed, which a valid saddle does not cause; a NaN is never handed back."""
    means = [m for m in (prediction.mean_train, prediction.mean_test) if m is not None]
    if not is_traced(means) and not all(bool(np.all(np.isfinite(m))) for m in means):  # on the host: nothing to compile
        raise ValueError("prediction: the mean output is not finite: K + kappa2 I of this solution's output kernel "
                         "could not be factorised (kappa2 too small for a (nearly) singular kernel, e.g. repeated "
                         "training inputs; or a Monte Carlo kernel of the exact measure, measure='exact', that is not "
                         "positive definite at this sample count: raise samples)")
    return prediction


def layer_kernels(solution: Solution, arch, data, kappa2) -> tuple:
    """The per-layer post-activation kernels K_1..K_L (P x P) of a solution on the training inputs (the output
    kernel is c K_L): the NNGP's, the scaled NNGP's, K_Sigma / c, X Sigma_l X^T, or the MAP kernels of the deep
    forms (THEORY.md sec. 5)."""
    problem = _checked(solution, arch, data, kappa2)
    return solution.theory.layer_kernels(solution.value, problem)


def summarize(solution: Solution, arch, data, kappa2, prediction: Prediction | None = None) -> dict:
    """Observables of a solution on ``data`` (``adaptive_kernels.prediction.observables``): learnability, MSEs,
    per-layer eigenvalue ratios and alignments (lists, one entry per hidden layer), the solver's statistics."""
    theory = solution.theory
    # the exact measure at its saddle: the residual check, the prediction and the observables as one compiled
    # program, which every key reuses (eagerly, their ~80 operations compile one by one: docs/exact_measure.md, Speed)
    compiled = getattr(theory, "sampled", None) is not None and not theory.loops and prediction is None
    problem = _checked(solution, arch, data, kappa2, check_solves=not compiled)
    X_test = None if data.X_test is None else jnp.asarray(data.X_test, problem.X.dtype)
    if not compiled:
        if prediction is None:
            prediction = predict_problem(solution, problem, X_test)
        return observables(solution, problem, _finite(prediction), data.y_test, data.w_star)
    residual, prediction, out = _sampled_summary(theory, solution.with_theory(None), problem, X_test, data.y_test,
                                                 data.w_star)
    _check_solves(solution, problem, residual)
    _finite(prediction)
    return python_scalars(out)


@brief_jit
def _sampled_summary(theory: AbstractTheory, solution: Solution, problem: Problem, X_test, y_test, w_star):
    """(recomputed stationarity residual, prediction, observables) of ``summarize`` for a theory with a sampled
    measure attached (``theory`` passed apart: a solution's is a static field, and the theory's arrays are traced)."""
    solution = solution.with_theory(theory)
    residual = _stationarity_residual(theory, solution.value, problem)
    prediction = predict_problem(solution, problem, X_test)
    return residual, prediction, observables(solution, problem, prediction, y_test, w_star)
