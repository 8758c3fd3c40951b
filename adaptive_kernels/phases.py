"""Phase structure of the saddle-point equations: several stationary points, their stability, branches under a
changing parameter, folds, hysteresis and first-order transitions (issue 17; Rubin, Seroussi & Ringel,
"Grokking as a first order phase transition in two layer networks", arXiv 2310.03789).

An adaptive theory's action S(q) (THEORY.md secs. 3-5: S = sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + D)
can have several minima. At large width the posterior concentrates on the *lowest* one (the free energy is
min S + O(log N)); the others are metastable states, and which one is lowest can change abruptly with P, N,
gamma, kappa2, ... -- a first-order transition: the order parameter (e.g. the weights' variance along the teacher
w*, the learnability of a teacher component) jumps where two branches' actions cross (the Maxwell point), and
each branch survives past it up to a fold (saddle-node) where it merges with the saddle between them (the
spinodal). Between the two folds both minima exist (the metastable window); a sweep up and a sweep down stay on
different branches there (hysteresis).

- :func:`stationary_points`: solve from the prior, from teacher-aligned states (:func:`aligned_state`) and from
  user states; keep the distinct converged points; classify each by the inertia of the Hessian of S in the
  solvers' unconstrained coordinates (``solvers.coordinates``: Sigma = L L^T / a, log-diagonal L) -- at a
  stationary point the inertia does not depend on the coordinates (Sylvester's law: H -> J^T H J); report each
  one's action and mark the lowest minimum as the posterior's branch.
- :func:`continuation`: follow branches along a parameter ("P" by nested subsets of the data, "N", "gamma",
  "kappa2", "s_w2", "s_a2", or any family of problems) in both directions with warm starts; step halving
  brackets each fold (a branch is lost when, even at the smallest step, the warm-started solve does not converge
  or jumps); the transition is where two distinct branches' actions cross. :func:`phase_diagram` repeats this
  over a second parameter; :func:`plot_branches` and :func:`plot_phase_diagram` draw them (matplotlib).
- :func:`arclength` (core :func:`trace_arclength`): pseudo-arclength continuation in a continuous parameter (N,
  gamma, kappa2, s_w2, s_a2, and P through the tempered likelihood of :func:`tempered_subset`): follows a branch
  through its folds onto the saddle branch and locates each fold from the extended system G = 0, H phi = 0 (where
  the Hessian is singular), instead of bracketing it; :func:`arc_crossings` locates where two traced minima's
  actions cross (the transition).

The core (:func:`find_stationary_points`, :func:`trace`) works on any theory object and any family of problems
(the tests use a scalar action whose stationary points are closed-form); the facades take an architecture, data
and kappa2 like :func:`adaptive_kernels.solve`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from adaptive_kernels.actions import deep, mixture
from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.api import resolve_solver, solve_problem
from adaptive_kernels.data import modular_fourier_projector
from adaptive_kernels.gp import data_term
from adaptive_kernels.prediction import observables, predict_problem
from adaptive_kernels.problem import Problem, make_problem, with_weights
from adaptive_kernels.solvers import QuasiNewton, Solution
from adaptive_kernels.solvers.coordinates import from_unconstrained, to_unconstrained
from adaptive_kernels.theories import Adaptive, Scaling, get_theory

KINDS = ("minimum", "saddle", "maximum", "degenerate", "unclassified")

HESSIAN_LIMIT = 3000
"""Largest number of unconstrained coordinates for which the dense Hessian is built (beyond: unclassified)."""

PROBLEM_PARAMETERS = ("N", "gamma", "kappa2", "s_w2", "s_a2")
"""Parameters :func:`continuation` varies by name on the :class:`Problem` (besides ``"P"``)."""


# --- Hessian and classification ---------------------------------------------------------------------------------
def _entropic(theory, problem):
    action, args = theory.problem(problem)
    if not isinstance(action, EntropicAction):
        raise ValueError(f"theory: {type(action).__name__} is a fixed-point map without an action to classify its "
                         "points by; use an action form (e.g. Adaptive(form='kernel') instead of 'conjugate')")
    return action, args


def unconstrained_coordinates(action: EntropicAction, value, args):
    """The flat unconstrained coordinates u of ``value`` (``solvers.coordinates.to_unconstrained``: L = chol(a
    Sigma) with log-diagonal, per leaf) and the map u -> S(Sigma(u))."""
    precisions = action.prior(args)[1]
    flat, unravel = ravel_pytree(to_unconstrained(value, precisions))

    def objective(v):
        return action(from_unconstrained(unravel(v), precisions, value), args)

    return flat, objective


@eqx.filter_jit
def hessian_eigenvalues(action: EntropicAction, value, args):
    """Ascending eigenvalues of the Hessian d^2 S / du du^T at ``value`` in the unconstrained coordinates u."""
    flat, objective = unconstrained_coordinates(action, value, args)
    H = jax.hessian(objective)(flat)
    return jnp.linalg.eigvalsh(0.5 * (H + H.T))


def classify(eigenvalues, rtol: float = 1e-7) -> tuple[str, int]:
    """(kind, index) from the Hessian's eigenvalues: index = number of negative eigenvalues; kind ``"minimum"``
    (index 0), ``"maximum"`` (all negative), ``"saddle"``, or ``"degenerate"`` when an eigenvalue is within
    ``rtol`` times the largest |eigenvalue| of zero (a fold or a symmetry: inertia undecided)."""
    e = np.asarray(eigenvalues, dtype=float)
    index = int(np.sum(e < 0))
    if np.any(np.abs(e) <= rtol * np.max(np.abs(e))):
        return "degenerate", index
    if index == 0:
        return "minimum", 0
    return ("maximum" if index == e.size else "saddle"), index


# --- starts --------------------------------------------------------------------------------------------------------
def data_direction(problem: Problem):
    """The input direction the targets point along: the leading left singular vector of sum_s X_s^T Y (patches
    s; for one output v ∝ X^T y, the direction linear regression learns first; with likelihood weights X^T T y).
    Used when no teacher is given."""
    Y = problem.y.reshape(problem.P, -1)
    if problem.weights is not None:
        Y = problem.weights[:, None] * Y
    M = jnp.einsum("spn,pm->nm", problem.split(problem.X), Y)
    return jnp.linalg.svd(M, full_matrices=False)[0][:, 0]


def _aligned(M, v, ratio):
    """M^1/2 (I + (ratio - 1) v v^T) M^1/2 for an isotropic M (c I): c (I + (ratio - 1) v v^T), v unit."""
    v = v / jnp.linalg.norm(v)
    return M + (ratio - 1) * (v @ M @ v) * jnp.outer(v, v)


def aligned_state(problem: Problem, theory, ratio: float, direction=None):
    """A teacher-aligned starting point: the prior's order parameters with variance ``ratio`` times larger along
    ``direction`` (default: :func:`data_direction`).

    - two-layer weight form (FCN or CNN filter): Sigma = Sigma_0 (I + (ratio - 1) v v^T), v = w*/|w*|;
    - the mixture ansatz: the prior plus pairs at +-m along v with the same second moment along v
      (``actions.mixture.aligned``);
    - deep weight form (linear nets): the same on every layer's d x d Sigma_l;
    - kernel form: Q_l = I + (ratio - 1) q q^T with q ∝ B_l^T y (K_l = B_l Q_l B_l^T then gains a component along
      G_l y: a kernel scaled up along y y^T);
    - kernel scaling: every scale u_l = ratio.
    """
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    action, args = theory.problem(problem)
    prior = theory.init(problem, args)
    if isinstance(theory, Scaling):
        return jax.tree.map(lambda u: ratio * u, prior)
    if not isinstance(theory, Adaptive) or theory.resolved_form(problem) == "conjugate":
        raise ValueError(f"theory: no aligned start for {type(theory).__name__} "
                         f"(form {getattr(theory, 'form', None)!r}); pass starts explicitly")
    if theory.resolved_form(problem) == "weight":
        v = data_direction(problem) if direction is None else jnp.asarray(direction, problem.X.dtype)
        if theory.measure == "mixture" and theory.along == "axis":  # pairs along the ansatz's own axis
            return mixture.axis_aligned(problem, theory.components, ratio)
        if theory.measure == "mixture":
            return mixture.aligned(problem, theory.components, ratio, v)
        if problem.depth == 1:
            return _aligned(prior, v, ratio)
        return tuple(_aligned(S, v, ratio) for S in prior)
    y = problem.y.reshape(problem.P, -1)[:, 0]
    B = deep.input_factor(problem, problem.X)
    states = []
    for layer, Q in enumerate(prior):
        states.append(_aligned(Q, B.T @ y, ratio))
        if layer + 1 < problem.depth:
            B = deep.next_factor(problem, B)
    return tuple(states)


def default_starts(problem: Problem, theory, direction=None, ratios=(30.0,)) -> dict:
    """{"prior": the theory's initial point, "aligned x<r>": :func:`aligned_state` for each ratio r}."""
    action, args = theory.problem(problem)
    starts = {"prior": theory.init(problem, args)}
    for r in ratios:
        starts[f"aligned x{r:g}"] = aligned_state(problem, theory, r, direction)
    return starts


def _fourier_projectors(p: int):
    """The projectors onto frequencies k = 1..(p-1)/2 of Z_p in both input halves (``data.modular_fourier_projector``)."""
    return [modular_fourier_projector(p, k) for k in range(1, (p - 1) // 2 + 1)]


def fourier_state(problem: Problem, p: int, gain: float = 2.0, rest: float = 0.5):
    """A Fourier-aligned start of the mixture ansatz for modular addition on Z_p (``data.modular_addition``; the
    generalising states of Gromov's quadratic nets, whose neurons each carry one frequency of Z_p): component k
    (k = 1..(p-1)/2) at m_k = 0 with Sigma_k = [gain P_k + rest (I - P_k)] / a, P_k the projector onto frequency k
    of both input halves (``data.modular_fourier_projector``), equal weights. Use with
    ``Adaptive(measure="mixture", components=(p-1)//2, along="equal")``."""
    if problem.d != 2 * p:
        raise ValueError(f"p: the inputs have d = {problem.d}, not 2p = {2 * p}")
    a, eye = problem.prior_precision, jnp.eye(problem.d, dtype=problem.X.dtype)
    zero = jnp.zeros(problem.d, problem.X.dtype)
    return tuple(mixture.encode(1 / a, zero, (gain * Pk + rest * (eye - Pk)) / a)
                 for Pk in _fourier_projectors(p))


def fourier_concentration(second_moments, p: int):
    """For each d x d second moment C (e.g. Sigma_k + m_k m_k^T of a mixture component, or w w^T of one neuron;
    leading axes broadcast) the largest fraction of its trace on one frequency of Z_p,
    max_k tr(P_k C) / sum_k tr(P_k C) (``data.modular_fourier_projector``; the constant modes, which the centred
    inputs do not see, are left out). 1: the weights carry one frequency; an isotropic C gives 1/((p-1)/2)."""
    parts = jnp.stack([jnp.einsum("ij,...ji->...", Pk, second_moments) for Pk in _fourier_projectors(p)], axis=-1)
    return jnp.max(parts, axis=-1) / jnp.sum(parts, axis=-1)


# --- stationary points ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StationaryPoint:
    """One stationary point: the solve, its action (free energy), inertia and the starts that reached it.

    ``kind``: ``"minimum"``, ``"saddle"``, ``"maximum"``, ``"degenerate"`` or ``"unclassified"`` (too many
    coordinates for a dense Hessian, :data:`HESSIAN_LIMIT`); ``index``: number of negative Hessian eigenvalues
    (None when unclassified); ``hessian_eigenvalues``: ascending, in the unconstrained coordinates.
    """

    solution: Solution
    action: float
    kind: str
    index: int | None
    hessian_eigenvalues: np.ndarray | None
    starts: tuple[str, ...]
    posterior: bool = False

    @property
    def value(self):
        return self.solution.value

    @property
    def min_eigenvalue(self) -> float:
        return float("nan") if self.hessian_eigenvalues is None else float(self.hessian_eigenvalues[0])

    def is_minimum(self, zero_modes: bool = False, rtol: float = 1e-7) -> bool:
        """A ``"minimum"``; with ``zero_modes`` also a ``"degenerate"`` point whose only non-positive Hessian
        eigenvalues are zeros (within ``rtol`` times the largest |eigenvalue|, :func:`classify`'s threshold): a
        minimum up to flat directions, e.g. where two mixture components coincide (their weights' split is free) or
        the symmetric non-aligned state at small noise (one zero eigenvalue, 1e-14 - 5e-8; docs/phases.md)."""
        e = self.hessian_eigenvalues
        return self.kind == "minimum" or (zero_modes and self.kind == "degenerate"
                                          and float(e[0]) >= -rtol * float(np.max(np.abs(e))))


@dataclasses.dataclass(frozen=True)
class PhaseStructure:
    """What :func:`stationary_points` found: distinct converged points sorted by action, and the starts whose
    solve did not converge (``failed``: {label: status message}; ``unconverged``: {label: the Solution})."""

    points: tuple[StationaryPoint, ...]
    failed: dict
    unconverged: dict = dataclasses.field(default_factory=dict)

    @property
    def posterior(self) -> StationaryPoint | None:
        """The lowest-action minimum: the posterior's branch at large width (None if no minimum was found). A
        ``"degenerate"`` point whose only non-positive Hessian eigenvalues are zeros counts
        (:meth:`StationaryPoint.is_minimum` with ``zero_modes``): mixture states often have such a flat direction
        (two coinciding components share their weight freely); ``minima`` lists the strict ones."""
        return next((p for p in self.points if p.posterior), None)

    @property
    def minima(self) -> tuple[StationaryPoint, ...]:
        return tuple(p for p in self.points if p.kind == "minimum")

    def table(self):
        """One row per point (pandas DataFrame): action, kind, index, smallest Hessian eigenvalue, starts."""
        import pandas as pd

        return pd.DataFrame([{"action": p.action, "kind": p.kind, "index": p.index, "min_eigenvalue": p.min_eigenvalue,
                              "posterior": p.posterior, "starts": ", ".join(p.starts)} for p in self.points])


def _is_mixture(theory) -> bool:
    return isinstance(theory, Adaptive) and theory.measure == "mixture"


def phase_solver(theory):
    """The default solver of the phase tools: dense BFGS for the mixture ansatz (``actions.mixture.DEFAULT_SOLVER``),
    else L-BFGS :class:`QuasiNewton` (it converged in mean-field cases where the precision iteration stalled)."""
    if _is_mixture(theory):
        return mixture.DEFAULT_SOLVER
    return QuasiNewton()


def _canonical(theory, value):
    """``value`` itself, or for the mixture ansatz its canonical form (``actions.mixture.canonical``: the same density
    written with its components permuted or its means' signs flipped is the same point)."""
    return mixture.canonical(value) if _is_mixture(theory) else value


def distance(a, b, theory=None) -> float:
    """Relative distance |a - b| / max(|a|, |b|) between two sets of order parameters (Frobenius, all leaves); for
    the mixture ansatz between their canonical forms (:func:`_canonical`)."""
    a, b = _canonical(theory, a), _canonical(theory, b)
    fa, fb = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(fa - fb) / jnp.maximum(jnp.maximum(jnp.linalg.norm(fa), jnp.linalg.norm(fb)), 1e-300))


def describe(theory, problem, solution: Solution, rtol: float = 1e-7) -> tuple[str, int | None, np.ndarray | None]:
    """(kind, index, Hessian eigenvalues) of a converged solution (:func:`classify`)."""
    action, args = _entropic(theory, problem)
    size = ravel_pytree(to_unconstrained(solution.value, action.prior(args)[1]))[0].size
    if size > HESSIAN_LIMIT:
        return "unclassified", None, None
    eigenvalues = np.asarray(hessian_eigenvalues(action, solution.value, args))
    return (*classify(eigenvalues, rtol), eigenvalues)


def _solve(problem, theory, solver, init) -> Solution:
    """``solve_problem`` from ``init`` with the theory attached (the compiled core leaves it out when the theory has
    array fields, e.g. the mixture's ``direction``; observables need it)."""
    solution = solve_problem(problem, theory, solver, init=init, implicit=False)
    return solution if solution.theory is not None else dataclasses.replace(solution, theory=theory)


def find_stationary_points(theory, problem, starts: dict, solver=None, *, same: float = 1e-4,
                           rtol: float = 1e-7, action_offset: float = 0.0) -> PhaseStructure:
    """The core of :func:`stationary_points` on a prepared problem (any theory with an action).

    Args:
        starts: {label: initial order parameters}.
        solver: as for :func:`adaptive_kernels.solve`; default :class:`QuasiNewton` (L-BFGS on the unconstrained
            coordinates + Newton polish; it converged in mean-field cases where the precision iteration stalled).
        same: two converged points closer than this (:func:`distance`) are one point.
        rtol: the classification's zero threshold (:func:`classify`).
        action_offset: subtracted from every reported action (e.g. the constant of padded data points).
    """
    _entropic(theory, problem)
    solver = phase_solver(theory) if solver is None else resolve_solver(solver)
    found, unconverged = [], {}
    for label, init in starts.items():
        theory.check_value(init, problem, f"starts[{label!r}]")
        solution = _solve(problem, theory, solver, init)
        if not bool(solution.converged):
            unconverged[label] = solution
            continue
        for i, (point, labels) in enumerate(found):
            if distance(point.value, solution.value, theory) < same:
                found[i] = (point if point.grad_norm <= solution.grad_norm else solution, labels + (label,))
                break
        else:
            found.append((solution, (label,)))
    points = []
    for solution, labels in found:
        kind, index, eigenvalues = describe(theory, problem, solution, rtol)
        points.append(StationaryPoint(solution, float(solution.action) - action_offset, kind, index, eigenvalues,
                                      labels))
    points.sort(key=lambda p: p.action)
    lowest = next((i for i, p in enumerate(points) if p.is_minimum(zero_modes=True, rtol=rtol)), None)
    if lowest is not None:
        points[lowest] = dataclasses.replace(points[lowest], posterior=True)
    return PhaseStructure(tuple(points), {label: s.message for label, s in unconverged.items()}, unconverged)


def stationary_points(arch, data, kappa2, theory="adaptive", starts=None, *, ratios=(30.0,), solver=None,
                      same: float = 1e-4, rtol: float = 1e-7, **theory_options) -> PhaseStructure:
    """Several stationary points of a theory's action for a network on data (module docstring).

    Args:
        arch, data, kappa2, theory, theory_options: as for :func:`adaptive_kernels.solve`.
        starts: None (the prior and, for each of ``ratios``, a state aligned with the teacher ``data.w_star`` --
            or with :func:`data_direction` without one; :func:`default_starts`), or {label: order parameters},
            which are used *in addition* to the defaults (pass ``ratios=()`` to drop the aligned ones).
        solver, same, rtol: see :func:`find_stationary_points`.

    Returns:
        a :class:`PhaseStructure`: its ``points`` sorted by action, ``posterior`` the lowest minimum.

    Example::

        phases = ak.stationary_points(ak.FCN(10, 50, "erf", gamma=2.0), data, 0.1)
        phases.table()    # action, kind (minimum / saddle), index, smallest Hessian eigenvalue, starts
    """
    theory = get_theory(theory, **theory_options)
    problem = make_problem(arch, data, kappa2)
    theory.check(problem)
    all_starts = default_starts(problem, theory, data.w_star, ratios)
    for label, value in (starts or {}).items():
        all_starts[label] = value
    return find_stationary_points(theory, problem, all_starts, solver, same=same, rtol=rtol)


@dataclasses.dataclass(frozen=True)
class RicherCheck:
    """Whether a K-component mixture minimum is still a minimum with K + 1 components (:func:`check_richer`).

    ``point``: the K-component minimum; ``descents``: the points that the (K+1)-component descents from it reached
    (a :class:`PhaseStructure`); ``drop``: how far the lowest of their actions (unconverged descents' last iterates
    included) lies below ``point.action`` (<= 0: none is lower); ``moved``: the relative Frobenius distance between
    the kernels K_rho on the training inputs at that lowest end and at ``point``; ``holds``: no extra component
    lowered the action (``drop`` within the tolerance) or the lowest end is the same state described better
    (``moved`` within ``same_state``); None: no descent reached a finite action."""

    point: StationaryPoint
    descents: PhaseStructure
    drop: float
    moved: float
    holds: bool | None


def check_richer(theory, problem: Problem, structure: PhaseStructure, *, components=None, weight: float = 1e-2,
                 tol: float = 1e-8, same_state: float = 1e-2, solver=None, same: float = 1e-4,
                 rtol: float = 1e-7) -> tuple[RicherCheck, ...]:
    """Is each minimum of a mixture theory's ``structure`` still a minimum of the ansatz with one more component?

    The mixture ansatz (``actions.mixture``) is a variational restriction of the single-neuron measure, so a minimum
    in K components can be an artefact of K: a state that the K-component density cannot leave without becoming
    another state altogether, but a richer one leaves downhill. Then "metastable" (two minima) is the ansatz's word,
    not the measure's. Example (tests/test_mixture.py): for an erf net in mean-field scaling (d = 4, N = 20, P = 40,
    gamma = 2) the K = 1 axis mixture's Gaussian state is a minimum, and a K = 2 descent from it plus 1 % of the
    neurons at a teacher-aligned pair ends 4.4 nats lower.

    For each minimum of ``structure`` (:meth:`StationaryPoint.is_minimum` with zero modes: a K-component state is
    often ``"degenerate"``, e.g. where two components coincide), descents of the (K+1)-component action (:func:`find_stationary_points`)
    start from it with one more component of fraction ``weight`` (:func:`actions.mixture.with_component`) at each
    of ``components``. It holds when no descent ends lower than its action by more than ``tol`` (1 + |S|), or when
    the lowest end has the same kernel K_rho on the training inputs to ``same_state`` (relative): K + 1 components
    usually describe a true state slightly better (d = 6, N = 125, P = 400: the aligned minimum's K = 3 descent ends
    0.16 nats lower, kernel moved 6e-4, the same state), while a minimum of K only is left for another state (there
    the K = 2 symmetric state, for a state with a pair at ``a m^2`` 40, 80.6 nats lower, kernel moved 0.27). A start with a finite ``weight`` costs action, so a descent back to the
    minimum is the expected outcome where it holds.

    Args:
        theory: the K-component ``Adaptive(measure="mixture")`` (``along`` "free" or "axis") of ``structure``.
        problem: its problem (:func:`adaptive_kernels.make_problem`).
        structure: from :func:`stationary_points` / :func:`find_stationary_points` with ``theory``.
        components: component matrices of the same form (``actions.mixture.encode``; their s is ignored); None:
            every component of the structure's other points, or, with only one point, of :func:`default_starts`.
        weight: the extra component's share of the neurons, in (0, 1).
        tol: relative tolerance of the drop.
        same_state: largest relative kernel distance at which the lowest end counts as the same state.
        solver, same, rtol: as for :func:`find_stationary_points`.

    Returns:
        one :class:`RicherCheck` per minimum of ``structure``, in its order.

    Example::

        theory = ak.Adaptive(measure="mixture", components=2, along="axis", direction=data.w_star)
        found = ak.stationary_points(arch, data, kappa2, theory)
        for check in phases.check_richer(theory, ak.make_problem(arch, data, kappa2), found):
            print(check.point.action, check.holds, check.drop, check.moved)
    """
    if not (_is_mixture(theory) and theory.along in ("free", "axis")):
        raise ValueError("theory must be Adaptive(measure='mixture') with along 'free' or 'axis' (the weights of "
                         f"along='equal' are fixed, so no component can be added), got {theory!r}")
    richer = dataclasses.replace(theory, components=theory.components + 1)
    checks = []
    for point in (p for p in structure.points if p.is_minimum(zero_modes=True, rtol=rtol)):
        if components is None:
            others = [p.value for p in structure.points if p is not point]
            if not others:
                others = list(default_starts(problem, theory, theory.direction).values())
            candidates = [M for value in others for M in (value[1:] if mixture.is_axis_form(value) else value)]
        else:
            candidates = list(components)
        starts = {f"component {i} x {weight:g}": mixture.with_component(point.value, jnp.asarray(M), weight)
                  for i, M in enumerate(candidates)}
        descents = find_stationary_points(richer, problem, starts, solver, same=same, rtol=rtol)
        ends = [(p.action, p.value) for p in descents.points] + [
            (float(s.action), s.value) for s in descents.unconverged.values()]
        ends = [(a, value) for a, value in ends if math.isfinite(a)]
        if not ends:
            checks.append(RicherCheck(point, descents, float("nan"), float("nan"), None))
            continue
        action, value = min(ends, key=lambda e: e[0])
        K0 = mixture.mixture_kernel(problem, point.value, problem.X, direction=theory.direction)[0]
        K1 = mixture.mixture_kernel(problem, value, problem.X, direction=theory.direction)[0]
        moved = float(jnp.linalg.norm(K1 - K0) / jnp.linalg.norm(K0))
        drop = point.action - action
        holds = bool(drop <= tol * (1 + abs(point.action)) or moved <= same_state)
        checks.append(RicherCheck(point, descents, drop, moved, holds))
    return tuple(checks)


# --- barriers -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Barrier:
    """The lowest pass between two minima a and b (:func:`barrier`).

    ``path_actions``: S along the relaxed string from a to b (images at equal arclength); ``path_maximum``: its
    largest value on the segments next to the highest image (64 points each): an upper bound on the pass, to that
    sampling; ``saddle``: the order parameters of the index-1 stationary point that joins a and b (None if Newton reached
    none that descents connect to both; then the barriers below are the path's maximum, upper bounds),
    ``saddle_action`` and ``saddle_eigenvalues`` (its Hessian's, ascending, in the unconstrained coordinates);
    ``from_a`` / ``from_b``: the pass's action minus a's / b's, the barrier out of each minimum; ``ends``: the
    actions where the descents from the saddle, displaced both ways along its negative mode, end, one at a and one
    at b (:func:`distance` below ``same``; empty without a saddle)."""

    path_actions: np.ndarray
    path_maximum: float
    saddle: object
    saddle_action: float
    saddle_eigenvalues: np.ndarray | None
    from_a: float
    from_b: float
    ends: tuple[float, ...]


def _relabelings(theory, value) -> list:
    """``value`` and, for a mixture, every relabelling of its canonical form's components (an exchangeable
    mixture's same density)."""
    if not _is_mixture(theory):
        return [value]
    value = mixture.canonical(value)
    head, parts = (value[:1], value[1:]) if mixture.is_axis_form(value) else ((), value)
    return [tuple(head) + tuple(order) for order in itertools.permutations(parts)]


def _newton_stationary(grad, hess, u, steps: int = 60, tol: float = 1e-9, trust: float = 0.2):
    """Newton on grad S = 0 with the dense Hessian (compiled ``grad`` and ``hess`` of S), each step capped at length
    ``trust``: converges to the nearest stationary point whatever its index. Returns (u, |grad S|)."""
    for _ in range(steps):
        g = grad(u)
        if not float(jnp.linalg.norm(g)) >= tol:  # converged, or not finite
            break
        du = jnp.linalg.solve(hess(u), g)
        u = u - du * min(1.0, trust / max(float(jnp.linalg.norm(du)), 1e-300))
    return u, float(jnp.linalg.norm(grad(u)))


def barrier(theory, problem: Problem, a, b, *, images: int = 21, iterations: int = 300, dt: float = 0.05,
            ridge: float = 1e-2, attempts: int = 5, same: float = 1e-4, solver=None, rtol: float = 1e-7) -> Barrier:
    """The barrier between two minima of a theory's action: how long a metastable state lives (a chain crosses a
    barrier Delta S in a time ~ exp(Delta S)).

    1. The minimum energy path by the string method (E, Ren & Vanden-Eijnden, J. Chem. Phys. 126, 164103 (2007)) in
       the solvers' unconstrained coordinates u (:func:`unconstrained_coordinates`): ``images`` points from a to b,
       ``iterations`` steps u_i -= dt M^-1 grad S(u_i) with the ends fixed, each followed by redistribution at equal
       arclength. M is the mean of the two minima's Hessians plus ``ridge`` times its largest |eigenvalue| (mixture
       minima have zero modes); a fixed preconditioner changes the path, not its saddle. For a mixture every
       relabelling of b's components is tried and the lowest string kept.
    2. Newton on grad S = 0 (dense Hessian) from the string's maximum, then from its images by decreasing action
       (``attempts`` starts in all), to a point other than a and b with one negative eigenvalue (below -``rtol``
       times the largest |eigenvalue|: zero modes do not count);
    3. the connection check: descents (:func:`find_stationary_points`) from that point displaced by
       +-min(0.05, 0.5 / sqrt|lambda_0|) along its negative eigenvector must end one at a, one at b. The first point
       that passes is the saddle, whose action gives the barriers (a nearby saddle between other states does not
       count: at N = 20, P = 60 of the cubic teacher Newton found one 2e-5 above the aligned minimum).

    Args:
        theory, problem: as for :func:`find_stationary_points` (an action form; a dense Hessian: at most
            :data:`HESSIAN_LIMIT` coordinates).
        a, b: two minima (:class:`StationaryPoint` or order parameters).
        images, iterations, dt: the string's resolution, its number of steps and step size.
        attempts: Newton starts tried for the saddle.
        same: how close (:func:`distance`) a descent's end must come to a or b to count as reaching it.
        solver, rtol: as for :func:`find_stationary_points` (the descents).

    Returns:
        a :class:`Barrier`. Where Newton reaches no index-1 point (``saddle`` None) the barriers are the path's
        maximum: upper bounds.

    Example (docs/phases.md, "Barriers along the mean-field line")::

        found = ak.stationary_points(arch, data, kappa2, theory)
        a, b = [p for p in found.points if p.is_minimum(zero_modes=True)][:2]
        pass_ = phases.barrier(theory, ak.make_problem(arch, data, kappa2), a, b)
        print(pass_.from_a, pass_.from_b, pass_.saddle is not None)
    """
    if images < 3 or iterations < 0 or not dt > 0 or not ridge >= 0 or attempts < 1:
        raise ValueError(f"images must be >= 3, iterations >= 0, dt > 0, ridge >= 0 and attempts >= 1, got {images}, "
                         f"{iterations}, {dt}, {ridge}, {attempts}")
    action, args = _entropic(theory, problem)
    va, vb = (p.value if isinstance(p, StationaryPoint) else p for p in (a, b))
    theory.check_value(va, problem, "a")
    theory.check_value(vb, problem, "b")
    va = _canonical(theory, va)
    ua, objective = unconstrained_coordinates(action, va, args)
    if ua.size > HESSIAN_LIMIT:
        raise ValueError(f"problem: {ua.size} coordinates, more than HESSIAN_LIMIT = {HESSIAN_LIMIT}")
    precisions = action.prior(args)[1]

    def flat(value):
        return ravel_pytree(to_unconstrained(value, precisions))[0]

    unravel = ravel_pytree(to_unconstrained(va, precisions))[1]
    gradient, hessian = jax.jit(jax.grad(objective)), jax.jit(jax.hessian(objective))
    S = jax.jit(objective)
    Sa, Sb = float(S(ua)), float(S(flat(vb)))
    for name, value in (("a", Sa), ("b", Sb)):
        if not math.isfinite(value):
            raise ValueError(f"{name}: the action there is {value} (NaN/inf entries or a state outside the domain)")
    mean = 0.5 * (hessian(ua) + hessian(flat(vb)))
    precondition = jnp.linalg.inv(mean + ridge * jnp.max(jnp.abs(jnp.linalg.eigvalsh(mean))) * jnp.eye(ua.size))
    s = jnp.linspace(0.0, 1.0, images)
    gradients = jax.vmap(jax.grad(objective))

    @jax.jit
    def step(path):
        moved = path - dt * gradients(path) @ precondition.T
        moved = moved.at[0].set(path[0]).at[-1].set(path[-1])
        lengths = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.linalg.norm(jnp.diff(moved, axis=0), axis=1))])
        return jax.vmap(lambda c: jnp.interp(s * lengths[-1], lengths, c), in_axes=1, out_axes=1)(moved)

    actions = jax.jit(jax.vmap(objective))
    best = None
    for end in _relabelings(theory, vb):
        path = ua[None] + s[:, None] * (flat(end) - ua)[None]
        for _ in range(iterations):
            path = step(path)
        values = np.asarray(actions(path))
        if np.all(np.isfinite(values)) and (best is None or values.max() < best[1].max()):
            best = (path, values)
    if best is None:
        raise ValueError("the string from a to b left the domain (non-finite action) for every relabelling of b")
    path, values = best
    top = int(np.argmax(values))
    lo, hi = max(top - 1, 0), min(top + 1, images - 1)
    t = jnp.linspace(0, 1, 64)[:, None]
    fine = jnp.concatenate([p + t * (q - p) for p, q in ((path[lo], path[top]), (path[top], path[hi]))])
    fine_values = np.asarray(actions(fine))
    path_maximum = float(np.nanmax(fine_values))
    saddle, saddle_action, saddle_eigenvalues, ends = None, path_maximum, None, ()
    starts = [fine[int(np.nanargmax(fine_values))]] + [path[i] for i in np.argsort(-values) if 0 < i < images - 1]
    for start in starts[:attempts]:
        u, residual = _newton_stationary(gradient, hessian, start)
        H = np.asarray(hessian(u))
        if not (residual < 1e-8 and np.all(np.isfinite(H))):
            continue
        eigenvalues, vectors = np.linalg.eigh(0.5 * (H + H.T))
        value = from_unconstrained(unravel(u), precisions, va)
        negative = int(np.sum(eigenvalues < -rtol * np.max(np.abs(eigenvalues))))  # zero modes are not descents
        if negative != 1 or min(distance(value, v, theory) for v in (va, vb)) < same:
            continue
        delta = min(0.05, 0.5 / math.sqrt(abs(eigenvalues[0])))
        descents = {f"{sign:+g}": from_unconstrained(unravel(u + sign * delta * vectors[:, 0]), precisions, va)
                    for sign in (1.0, -1.0)}
        found = find_stationary_points(theory, problem, descents, solver, rtol=rtol)
        near = [[distance(p.value, v, theory) < same for v in (va, vb)] for p in found.points]
        if len(near) == 2 and ((near[0][0] and near[1][1]) or (near[0][1] and near[1][0])):
            saddle, saddle_action, saddle_eigenvalues = value, float(S(u)), eigenvalues
            ends = tuple(p.action for p in found.points)
            break
    return Barrier(values, path_maximum, saddle, saddle_action, saddle_eigenvalues, saddle_action - Sa,
                   saddle_action - Sb, ends)


# --- continuation ----------------------------------------------------------------------------------------------
class Instance(eqx.Module):
    """A problem of a family at one parameter value: ``problem`` (what is solved), ``report`` (the problem the
    observables are computed on; differs from ``problem`` only for padded data) and ``offset`` (the constant
    action(problem) - action(report))."""

    problem: object
    report: object
    offset: float = eqx.field(static=True, default=0.0)


@dataclasses.dataclass(frozen=True)
class BranchPoint:
    """One point of a traced branch: parameter value, the point, and whether it lies on the requested grid."""

    parameter: float
    point: StationaryPoint
    grid: bool


@dataclasses.dataclass(frozen=True)
class Fold:
    """Where a traced branch was lost: between ``last`` (its last point) and ``next`` (the smallest step tried);
    ``reason``: ``"jump"`` (the warm-started solve converged far away: the branch has ended) or ``"unconverged"``."""

    branch: str
    last: float
    next: float
    reason: str

    @property
    def estimate(self) -> float:
        return 0.5 * (self.last + self.next)


def _step_change(theory, problem, a, b) -> float:
    """max |u(a) - u(b)| in the unconstrained coordinates (log scale on the diagonal of the Cholesky factors)."""
    action, args = _entropic(theory, problem)
    precisions = action.prior(args)[1]
    ua, ub = (ravel_pytree(to_unconstrained(x, precisions))[0] for x in (a, b))
    return float(jnp.max(jnp.abs(ua - ub)))


def trace(theory, family: Callable, values, init, solver=None, *, label: str = "branch", max_change: float = 0.5,
          halvings: int = 4, integer: bool = False, same: float = 1e-4,
          rtol: float = 1e-7) -> tuple[list[BranchPoint], Fold | None]:
    """Follow one branch along ``values`` (monotone) from ``init`` (order parameters near the branch at
    ``values[0]``), warm-starting each solve from the previous point.

    A step is accepted when the solve converges and either the order parameters move by at most ``max_change`` in
    the unconstrained coordinates (:func:`_step_change`) or the move is reversible: the solve back at the previous
    value, warm-started from the new point, returns to the branch's last point (within ``same``,
    :func:`distance`) -- a branch moving fast, or a discrete step of P. Past a fold the back-solve stays on the
    other branch; the step is then halved (at most ``halvings`` times; for an ``integer`` parameter down to 1) and
    a step that still fails at the smallest size brackets the fold.
    Returns (points, Fold or None).
    """
    solver = phase_solver(theory) if solver is None else resolve_solver(solver)
    values = [float(v) for v in values]
    points = []

    def solve_at(p, start):
        inst = family(int(round(p)) if integer else p)
        solution = _solve(inst.problem, theory, solver, start)
        return inst, solution

    inst, solution = solve_at(values[0], init)
    if not bool(solution.converged):
        return points, Fold(label, values[0], values[0], "unconverged")

    def accept(p, inst, solution, grid):
        kind, index, eigenvalues = describe(theory, inst.problem, solution, rtol)
        points.append(BranchPoint(p, StationaryPoint(solution, float(solution.action) - inst.offset, kind, index,
                                                     eigenvalues, (label,)), grid))

    def _returns(p, value):
        """Whether the solve at p warm-started from ``value`` comes back to the branch's last point: a large but
        reversible change is the branch moving fast (or a discrete step of P); past a fold it does not come back."""
        back = solve_at(p, value)[1]
        return bool(back.converged) and distance(back.value, points[-1].point.value, theory) < same

    accept(values[0], inst, solution, True)
    for target in values[1:]:
        p = points[-1].parameter
        step = target - p
        smallest = math.copysign(1.0, step) if integer else step / 2**halvings
        while p != target:
            trial = p + step
            inst, solution = solve_at(trial, points[-1].point.value)
            ok = bool(solution.converged)
            if ok and (_step_change(theory, inst.problem, solution.value, points[-1].point.value) <= max_change
                       or _returns(p, solution.value)):
                accept(trial, inst, solution, trial == target)
                p = trial
                step = target - p
                continue
            if abs(step) <= abs(smallest) * (1 + 1e-9):
                return points, Fold(label, p, trial, "jump" if ok else "unconverged")
            step = step / 2
            if integer:
                step = math.copysign(max(1.0, abs(round(step))), step)
    return points, None


@dataclasses.dataclass(frozen=True)
class Branches:
    """What :func:`continuation` traced: every branch's points, its fold (if lost), and the transitions.

    Branches are named ``"<direction>:<start>"`` (direction ``"up"`` from the first value, ``"down"`` from the
    last). ``table()`` gives one row per point; ``transitions()`` the parameter values where two distinct branches'
    actions cross (the first-order transition); ``window()`` the metastable window between the folds.
    """

    parameter: str
    branches: dict
    folds: dict
    observations: dict
    same: float = 1e-4

    def table(self):
        """pandas DataFrame: parameter, branch, direction, start, grid, action, kind, index, min_eigenvalue and
        the observables of each point."""
        import pandas as pd

        rows = []
        for name, points in self.branches.items():
            direction, start = name.split(":", 1)
            for bp, obs in zip(points, self.observations[name]):
                rows.append({self.parameter: bp.parameter, "branch": name, "direction": direction, "start": start,
                             "grid": bp.grid, "action": bp.point.action, "kind": bp.point.kind,
                             "index": bp.point.index, "min_eigenvalue": bp.point.min_eigenvalue, **obs})
        return pd.DataFrame(rows)

    def _shared(self, a: str, b: str):
        """(parameter, S_a - S_b), ascending, at the values where both branches have distinct points."""
        pa = {bp.parameter: bp.point for bp in self.branches[a]}
        out = []
        for bp in self.branches[b]:
            other = pa.get(bp.parameter)
            if other is not None and distance(other.value, bp.point.value) >= self.same:
                out.append((bp.parameter, other.action - bp.point.action))
        return sorted(out)

    def transitions(self) -> list[dict]:
        """Crossings of two distinct branches' actions: {branches, parameter (linear interpolation of the action
        difference between the bracketing values where both were solved), bracket}. The posterior switches branch
        there."""
        found = []
        for a, b in itertools.combinations(self.branches, 2):
            shared = self._shared(a, b)
            for (p0, d0), (p1, d1) in zip(shared, shared[1:]):
                if d0 == 0 or np.sign(d0) != np.sign(d1):
                    found.append({"branches": (a, b), "parameter": p0 + (p1 - p0) * d0 / (d0 - d1),
                                  "bracket": (p0, p1)})
        return found

    def summary(self):
        """pandas DataFrame, one row per grid value: ``minima`` (distinct strict minima found there),
        ``metastable`` (more than one), ``posterior`` (the branch holding the lowest-action minimum, degenerate
        minima with only zero modes included as in :attr:`PhaseStructure.posterior`; else the lowest point), its
        ``action`` and its observables."""
        import pandas as pd

        rows = []
        for p in sorted({bp.parameter for points in self.branches.values() for bp in points if bp.grid}):
            here = [(name, bp.point, obs) for name, points in self.branches.items()
                    for bp, obs in zip(points, self.observations[name]) if bp.grid and bp.parameter == p]
            distinct = []
            for entry in sorted(here, key=lambda e: e[1].action):
                if all(distance(entry[1].value, other[1].value) >= self.same for other in distinct):
                    distinct.append(entry)
            minima = [e for e in distinct if e[1].kind == "minimum"]
            name, point, obs = next((e for e in distinct if e[1].is_minimum(zero_modes=True)), distinct[0])
            rows.append({self.parameter: p, "minima": len(minima), "metastable": len(minima) > 1, "posterior": name,
                         "action": point.action, **obs})
        return pd.DataFrame(rows)

    def window(self) -> tuple[float | None, float | None] | None:
        """(lower, upper) fold estimates bounding the metastable window: the smallest fold of the down sweeps and
        the largest of the up sweeps (None for a side whose sweeps lost no branch inside the grid; None if neither
        did)."""
        def estimates(prefix):
            return [f.estimate for n, f in self.folds.items()
                    if f is not None and n.startswith(prefix) and f.last != f.next]

        up, down = estimates("up:"), estimates("down:")
        if not up and not down:
            return None
        return (min(down) if down else None), (max(up) if up else None)


def _fill(theory, at, branches: dict, solver, same: float, rtol: float):
    """Solve every branch at the parameter values other branches visited inside its own range (the points that
    step halving added near a fold), warm-started from its nearest point, so that branches' actions can be compared
    there (:meth:`Branches.transitions`); a solve that does not converge or lands on another branch's point there
    is skipped. Added points are off the grid."""
    solver = phase_solver(theory) if solver is None else resolve_solver(solver)
    visited = sorted({bp.parameter for points in branches.values() for bp in points})
    for name, points in branches.items():
        have = {bp.parameter for bp in points}
        if not have:
            continue
        for p in visited:
            if not min(have) < p < max(have) or p in have:
                continue
            nearest = min(points, key=lambda bp: abs(bp.parameter - p)).point
            inst = at(p)
            solution = _solve(inst.problem, theory, solver, nearest.value)
            others = [bp.point.value for other, pts in branches.items() if other != name for bp in pts
                      if bp.parameter == p]
            if bool(solution.converged) and all(distance(solution.value, v, theory) >= same for v in others):
                kind, index, eigenvalues = describe(theory, inst.problem, solution, rtol)
                points.append(BranchPoint(p, StationaryPoint(solution, float(solution.action) - inst.offset, kind,
                                                             index, eigenvalues, (name,)), False))
        points.sort(key=lambda bp: bp.parameter, reverse=name.startswith("down"))


def continue_branches(theory, family: Callable, values, starts: Callable, *, parameter: str = "parameter",
                      directions=("up", "down"), observe: Callable | None = None, solver=None, same: float = 1e-4,
                      **trace_options) -> Branches:
    """The core of :func:`continuation` on a family of problems (``family(value) -> Instance``).

    ``starts(instance) -> {label: order parameters}`` gives the starting points at the first value of each sweep;
    starts that reach the same point there are traced once. ``observe(solution, instance) -> dict`` adds columns.
    """
    values = sorted(float(v) for v in values)
    integer = trace_options.get("integer", False)
    at = (lambda v: family(int(round(v)))) if integer else family
    branches, folds = {}, {}
    for direction in directions:
        sweep = values if direction == "up" else values[::-1]
        traced = []
        for label, init in starts(at(sweep[0])).items():
            name = f"{direction}:{label}"
            points, fold = trace(theory, family, sweep, init, solver, label=name, same=same, **trace_options)
            if points and any(distance(points[0].point.value, other, theory) < same for other in traced):
                continue
            if points:
                traced.append(points[0].point.value)
            branches[name], folds[name] = points, fold
    _fill(theory, at, branches, solver, same, trace_options.get("rtol", 1e-7))
    observations = {name: [{} if observe is None else observe(bp.point.solution, at(bp.parameter)) for bp in points]
                    for name, points in branches.items()}
    return Branches(parameter, branches, folds, observations, same)


# --- families of problems ---------------------------------------------------------------------------------------
def _paddable(problem: Problem, theory) -> bool:
    """Whether appending zero inputs with zero targets leaves the action unchanged up to a constant: the two-layer
    weight form (its order parameters do not depend on P) of a bias-free net with phi(0) = 0, for which a zero
    input has K(0, x) = c E[phi(0) phi(w.x)] = 0, so it adds (1/2) m log kappa2 to D and nothing else."""
    return (isinstance(theory, Adaptive) and theory.resolved_form(problem) == "weight" and problem.depth == 1
            and float(problem.s_b2) == 0 and float(problem.activation(jnp.zeros((), problem.X.dtype))) == 0)


def with_parameter(problem: Problem, name: str, value, pad_to: int | None = None) -> Instance:
    """``problem`` with one parameter set: ``"P"`` (the first P data points; with ``pad_to``, zero inputs and
    targets appended up to that size -- see :func:`_paddable` -- so that every P has the same shapes and one
    compilation serves the whole sweep), ``"N"`` (every hidden width), ``"gamma"``, ``"kappa2"``, ``"s_w2"`` or
    ``"s_a2"``."""
    if name == "P":
        P = int(value)
        if not 1 <= P <= problem.P:
            raise ValueError(f"P must be between 1 and the data's {problem.P} points, got {value}")
        report = eqx.tree_at(lambda p: (p.X, p.y), problem, (problem.X[:P], problem.y[:P]))
        if pad_to is None or pad_to == P:
            return Instance(report, report)
        pad = pad_to - P
        X = jnp.concatenate([report.X, jnp.zeros((pad, problem.d), problem.X.dtype)])
        y = jnp.concatenate([report.y, jnp.zeros((pad,) + problem.y.shape[1:], problem.y.dtype)])
        offset = float(data_term(jnp.zeros((pad, pad), X.dtype), y[P:], problem.kappa2))
        return Instance(eqx.tree_at(lambda p: (p.X, p.y), problem, (X, y)), report, offset)
    if name not in PROBLEM_PARAMETERS:
        raise ValueError(f"parameter must be 'P', one of {', '.join(PROBLEM_PARAMETERS)} or a callable, got {name!r}")
    if not float(value) > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    out = set_parameter(problem, name, value)
    return Instance(out, out)


def set_parameter(problem: Problem, name: str, value) -> Problem:
    """``problem`` with one of :data:`PROBLEM_PARAMETERS` set to ``value`` (every hidden width for ``"N"``),
    without checks, so that ``value`` may be traced (:func:`arclength` differentiates the action in it)."""
    v = jnp.asarray(value, problem.X.dtype)
    if name == "N":
        return eqx.tree_at(lambda p: p.widths, problem, jnp.full_like(problem.widths, v))
    return eqx.tree_at(lambda p: getattr(p, name), problem, v)


def _observer(data, extra=None):
    """observe(solution, instance): the observables of ``adaptive_kernels.prediction.observables`` on the reported
    problem and the data's test set, flattened (per-layer lists -> name_1..name_L), numbers only, and the columns
    of ``extra(solution, instance)``."""
    X_test = None if data.X_test is None else jnp.asarray(data.X_test)

    def observe(solution, inst):
        problem = inst.report
        Xt = None if X_test is None else X_test.astype(problem.X.dtype)
        out = observables(solution, problem, predict_problem(solution, problem, Xt), data.y_test, data.w_star)
        flat = {}
        for key, value in out.items():
            if key in ("action", "theory", "converged", "status", "iterations", "grad_norm", "domain_margin"):
                continue
            for i, v in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(v, (int, float)):
                    flat[f"{key}_{i + 1}" if isinstance(value, list) else key] = v
        return flat if extra is None else {**flat, **extra(solution, inst)}

    return observe


def _family(problem: Problem, data, theory, parameter, values):
    """(family(value) -> Instance, integer) for a parameter name or a callable value -> (arch, data, kappa2)."""
    if callable(parameter):
        def family(value):
            arch, d, kappa2 = parameter(value)
            inst = make_problem(arch, d, kappa2)
            theory.check(inst)
            return Instance(inst, inst)

        return family, False
    if parameter == "P":
        pad_to = int(max(values)) if _paddable(problem, theory) else None
        return (lambda value: with_parameter(problem, "P", value, pad_to)), True
    return (lambda value: with_parameter(problem, parameter, value)), False


def continuation(arch, data, kappa2, parameter, values, theory="adaptive", *, starts=None, ratios=(30.0,),
                 directions=("up", "down"), solver=None, observe: Callable | None = None, same: float = 1e-4,
                 max_change: float = 0.5, halvings: int = 4, **theory_options) -> Branches:
    """Follow the branches of stationary points along a parameter, in both directions (module docstring).

    Args:
        arch, data, kappa2, theory, theory_options: as for :func:`adaptive_kernels.solve` (for ``"P"``: the full
            data set, whose first P points are used at each P).
        parameter: ``"P"``, ``"N"``, ``"gamma"``, ``"kappa2"``, ``"s_w2"``, ``"s_a2"``, or a callable value ->
            (arch, data, kappa2) for anything else (e.g. the teacher's eps).
        values: the grid (sorted here); the sweep "up" starts at the smallest value, "down" at the largest.
        starts: None (:func:`default_starts` with ``ratios``: the prior and teacher-aligned states) or a callable
            problem -> {label: order parameters}.
        directions: which sweeps to run.
        observe: (solution, instance) -> dict of extra columns (``instance.report``: the problem at that value),
            added to the defaults: learnability, MSEs, eigenvalue ratio along ``data.w_star``, kernel alignments
            (``adaptive_kernels.prediction.observables``) on ``data``'s test set.
        solver, same: see :func:`find_stationary_points`; max_change, halvings: see :func:`trace`.

    Returns:
        :class:`Branches` (``table()``, ``folds``, ``transitions()``, ``window()``).

    Example::

        br = ak.continuation(ak.FCN(10, 50, "erf", gamma=2.0), data, 0.1, "P", range(60, 161, 10))
        br.transitions()   # [{'branches': ('up:prior', 'down:aligned x30'), 'parameter': 104.2, ...}]
    """
    theory = get_theory(theory, **theory_options)
    problem = make_problem(arch, data, kappa2)
    theory.check(problem)
    return _continue(theory, problem, data, parameter, values, starts=starts, ratios=ratios, directions=directions,
                     solver=solver, observe=observe, same=same, max_change=max_change, halvings=halvings)


def _continue(theory, problem, data, parameter, values, *, starts, ratios, directions, solver, observe, same,
              max_change, halvings) -> Branches:
    family, integer = _family(problem, data, theory, parameter, values)
    if starts is None:
        def starts(inst):
            return default_starts(inst.problem, theory, data.w_star, ratios)
    else:
        user_starts = starts
        starts = lambda inst: user_starts(inst.problem)  # noqa: E731
    name = parameter if isinstance(parameter, str) else getattr(parameter, "__name__", "parameter")
    return continue_branches(theory, family, values, starts, parameter=name, directions=directions,
                             observe=_observer(data, observe), solver=solver, same=same,
                             max_change=max_change, halvings=halvings, integer=integer)


# --- pseudo-arclength continuation ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArcPoint:
    """A point of a pseudo-arclength branch: the parameter, the order parameters, the action, the inertia of the
    Hessian (``kind``, ``index``, ``min_eigenvalue`` as for :class:`StationaryPoint`) and ``slope`` = d parameter /
    d s (the tangent's parameter component in scaled units; it changes sign at a fold)."""

    parameter: float
    value: object
    action: float
    kind: str
    index: int
    min_eigenvalue: float
    slope: float
    daction: float = float("nan")
    """d action / d lambda along the branch, lambda the traced coordinate: the partial derivative at fixed order
    parameters (the branch is stationary, dS/du = 0), used by :func:`arc_crossings` for Hermite interpolation."""
    coordinate: float | None = None
    """The traced coordinate lambda where it differs from ``parameter`` (``"P"``: :func:`tempered_subset`'s)."""


@dataclasses.dataclass(frozen=True)
class ArcFold:
    """A fold (saddle-node) of a pseudo-arclength branch: where it turns back in the parameter and the Hessian of
    S is singular. ``eigenvalue``: the Hessian eigenvalue nearest zero there (~0 when ``refined``: solved from the
    extended system G = 0, H phi = 0, c.phi = 1); ``after``: index of the branch point after it."""

    parameter: float
    value: object
    action: float
    eigenvalue: float
    refined: bool
    after: int
    coordinate: float | None = None


@dataclasses.dataclass(frozen=True)
class Arc:
    """What :func:`arclength` traced: the points in arclength order, the folds, and why it stopped
    (``"steps"``, ``"bounds"`` or ``"unconverged"``: the corrector failed at the smallest step)."""

    parameter: str
    points: tuple[ArcPoint, ...]
    folds: tuple[ArcFold, ...]
    reason: str
    to_parameter: Callable | None = None
    """The map from the traced coordinate to the parameter (None: they are the same)."""

    def table(self):
        """pandas DataFrame, one row per point: parameter, action, kind, index, min_eigenvalue, slope."""
        import pandas as pd

        return pd.DataFrame([{self.parameter: p.parameter, "action": p.action, "kind": p.kind, "index": p.index,
                              "min_eigenvalue": p.min_eigenvalue, "slope": p.slope} for p in self.points])

    def window(self) -> tuple[float, float] | None:
        """(smallest, largest) fold parameter: the metastable window's ends when the branch passes both folds of
        an S-shaped curve (None without folds)."""
        if not self.folds:
            return None
        values = [f.parameter for f in self.folds]
        return min(values), max(values)


def _arc_functions(theory, problem_at: Callable, value0: float, scale: float, like):
    """Jitted (S, G, H, G_mu) of u (the unconstrained coordinates of ``solvers.coordinates``) and mu, the scaled
    parameter value = value0 + scale mu; the coordinates use the prior precision at that value."""
    action0, args0 = _entropic(theory, problem_at(value0))
    unravel = ravel_pytree(to_unconstrained(like, action0.prior(args0)[1]))[1]

    def state(u, mu):
        action, args = theory.problem(problem_at(value0 + scale * mu))
        return action, args, from_unconstrained(unravel(u), action.prior(args)[1], like)

    def objective(u, mu):
        action, args, value = state(u, mu)
        return action(value, args)

    gradient = jax.grad(objective)

    @jax.jit
    def system(u, mu):
        return objective(u, mu), gradient(u, mu), jax.hessian(objective)(u, mu), jax.jacfwd(gradient, 1)(u, mu)

    @jax.jit
    def fold_residual(z, c):
        n = c.size
        u, mu, phi = z[:n], z[n], z[n + 1:]
        g, H_phi = jax.jvp(lambda v: gradient(v, mu), (u,), (phi,))  # H phi without the dense Hessian
        return jnp.concatenate([g, H_phi, jnp.atleast_1d(c @ phi - 1)])

    def fold_jacobian(z, c, h=1e-6):
        """Central differences of the (exact) extended residual: Newton converges to the residual's tolerance all
        the same, without compiling third derivatives of S (minutes and gigabytes for the mixture ansatz at
        P = 120)."""
        steps = h * jnp.maximum(1.0, jnp.abs(z))
        columns = [(fold_residual(z.at[i].add(steps[i]), c) - fold_residual(z.at[i].add(-steps[i]), c))
                   / (2 * steps[i]) for i in range(z.size)]
        return jnp.stack(columns, axis=1)

    partial = jax.jit(jax.grad(objective, 1))
    return system, fold_residual, fold_jacobian, (lambda u, mu: state(u, mu)[2]), partial


def trace_arclength(theory, problem_at: Callable, value0: float, init, *, step: float = 0.05, steps: int = 200,
                    bounds: tuple[float | None, float | None] = (None, None), direction: int = 1,
                    scale: float | None = None, tol: float = 1e-9, solver=None, label: str = "parameter",
                    turn: float = 0.9, callback: Callable[[ArcPoint], None] | None = None) -> Arc:
    """Pseudo-arclength continuation (Keller) of a branch of stationary points of S(u; lambda) through folds.

    ``problem_at(lambda)`` gives the problem (the theory's args) at a parameter value and must be traceable in
    lambda (e.g. :func:`set_parameter`). The branch starts at the stationary point solved at ``value0`` from
    ``init`` and is followed in z = (u, mu), mu = (lambda - value0)/``scale`` (default |value0|, else 1), along
    the unit tangent t (G_u t_u + G_mu t_mu = 0, oriented by the previous tangent; initially d lambda =
    ``direction``): predictor z + ds t, corrector Newton on [G(u, mu) = 0, t.(z - z_pred) = 0] (the bordered
    Jacobian [[H, G_mu], [t_u, t_mu]] stays regular at a fold, where H is singular), so the branch passes the fold
    and continues on the saddle branch beyond it. ``ds`` grows by 1.5 after easy corrections (<= 4 Newton steps,
    up to 4 ``step``) and halves after failures (a corrector that does not reach |G| <= tol max(1, |H|) in 12
    steps, lands farther than ds from the predictor, or whose new tangent turns by more than arccos ``turn``
    from the last -- the signature of a jump onto a nearby branch), down to ``step``/256, where the trace stops.

    Folds: where t_mu changes sign between two points; each is refined by Newton on the extended system
    (Moore & Spence) G(u, mu) = 0, H(u, mu) phi = 0, c.phi = 1 (c: the tangent's u part at the point nearer the
    fold, phi starting there), whose solution is the saddle-node itself: the fold is *located* (to the Newton
    tolerance), not bracketed. A refinement that does not converge reports the nearer point (refined False).

    ``callback``: called with every point as it is accepted (to log or checkpoint a long trace).

    Returns an :class:`Arc` (points with the Hessian's inertia: minima, then a saddle branch between two folds...).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if not step > 0 or steps < 1:
        raise ValueError(f"step must be positive and steps >= 1, got step={step}, steps={steps}")
    value0 = float(value0)
    scale = float(scale) if scale is not None else (abs(value0) or 1.0)
    solver = phase_solver(theory) if solver is None else resolve_solver(solver)
    problem0 = problem_at(value0)
    first = _solve(problem0, theory, solver, init)
    if not bool(first.converged):
        raise ValueError(f"init: the solve at {label} = {value0:g} did not converge ({first.message})")
    like = first.value
    system, fold_residual, fold_jacobian, value_of, partial = _arc_functions(theory, problem_at, value0, scale, like)
    action0, args0 = _entropic(theory, problem0)
    u = ravel_pytree(to_unconstrained(like, action0.prior(args0)[1]))[0]
    lo, hi = bounds

    def tangent(H, g_mu, previous):
        n = H.shape[0]
        J = jnp.block([[H, g_mu[:, None]], [previous[None, :n], previous[None, n:]]])
        t = jnp.linalg.solve(J, jnp.zeros(n + 1).at[n].set(1.0))
        return t / jnp.linalg.norm(t)

    def point(z, t):
        S, g, H, g_mu = system(z[:-1], z[-1])
        eigenvalues = np.asarray(jnp.linalg.eigvalsh(0.5 * (H + H.T)))
        kind, index = classify(eigenvalues)
        lam = value0 + scale * float(z[-1])
        return ArcPoint(lam, value_of(z[:-1], z[-1]), float(S), kind, index, float(eigenvalues[0]), float(t[-1]),
                        float(partial(z[:-1], z[-1])) / scale)

    def correct(z_pred, t):
        z = z_pred
        for iteration in range(12):
            _, g, H, g_mu = system(z[:-1], z[-1])
            residual = jnp.concatenate([g, jnp.atleast_1d(t @ (z - z_pred))])
            if float(jnp.max(jnp.abs(g))) <= tol * max(1.0, float(jnp.max(jnp.abs(H)))) and iteration > 0:
                return z, iteration
            J = jnp.block([[H, g_mu[:, None]], [t[None, :-1], t[None, -1:]]])
            z = z - jnp.linalg.solve(J, residual)
            if not bool(jnp.all(jnp.isfinite(z))):
                return None, iteration
        return None, 12

    z = jnp.concatenate([u, jnp.zeros(1, u.dtype)])
    _, _, H, g_mu = system(z[:-1], z[-1])
    t = tangent(H, g_mu, jnp.zeros_like(z).at[-1].set(direction))
    points, ts, zs = [point(z, t)], [t], [z]
    callback = callback or (lambda p: None)
    callback(points[0])
    ds, reason = step, "steps"
    while len(points) <= steps:
        z_pred = z + ds * t
        z_new, iterations = correct(z_pred, t)
        if z_new is None or float(jnp.linalg.norm(z_new - z_pred)) > ds:
            ds /= 2
            if ds < step / 256:
                reason = "unconverged"
                break
            continue
        _, _, H, g_mu = system(z_new[:-1], z_new[-1])
        t_new = tangent(H, g_mu, t)
        if float(t_new @ t) < turn and ds > step / 256:  # the tangent turned sharply: likely another branch
            ds /= 2
            continue
        t, z = t_new, z_new
        points.append(point(z, t))
        callback(points[-1])
        ts.append(t)
        zs.append(z)
        lam = points[-1].parameter
        if (lo is not None and lam < lo) or (hi is not None and lam > hi):
            reason = "bounds"
            break
        if iterations <= 4:
            ds = min(1.5 * ds, 4 * step)
    folds = []
    for i in range(1, len(points)):
        if np.sign(points[i - 1].slope) == np.sign(points[i].slope):
            continue
        near = i - 1 if abs(points[i - 1].slope) < abs(points[i].slope) else i
        c = ts[near][:-1] / jnp.linalg.norm(ts[near][:-1])
        guess = jnp.concatenate([zs[near], c])
        folds.append(_refine_fold(fold_residual, fold_jacobian, guess, c, tol, points[near], value0, scale,
                                  value_of, system, i))
    return Arc(label, tuple(points), tuple(folds), reason)


def _refine_fold(fold_residual, fold_jacobian, guess, c, tol, nearest: ArcPoint, value0, scale, value_of, system,
                 after: int) -> ArcFold:
    """Newton on the extended system (see :func:`trace_arclength`) from ``guess`` = (u, mu, phi)."""
    n = c.size
    z = guess
    for _ in range(30):
        r = fold_residual(z, c)
        if float(jnp.max(jnp.abs(r))) <= tol * 10:
            S, _, H, _ = system(z[:n], z[n])
            eigenvalues = np.asarray(jnp.linalg.eigvalsh(0.5 * (H + H.T)))
            return ArcFold(value0 + scale * float(z[n]), value_of(z[:n], z[n]), float(S),
                           float(eigenvalues[np.argmin(np.abs(eigenvalues))]), True, after)
        z = z - jnp.linalg.solve(fold_jacobian(z, c), r)
        if not bool(jnp.all(jnp.isfinite(z))):
            break
    eigenvalue = nearest.min_eigenvalue
    return ArcFold(nearest.parameter, nearest.value, nearest.action, eigenvalue, False, after)


def _smoothstep(x):
    return x * x * (3 - 2 * x)


def tempered_weights(n: int, lam, dtype=jnp.float64):
    """The likelihood weights (n,) of the P homotopy at coordinate lambda: t_mu = s(clip(lambda - mu, 0, 1)),
    mu = 0..n-1, s(x) = 3x^2 - 2x^3. At lambda = (p - 1) + x the first p - 1 points have weight 1, point p the weight
    s(x), the rest 0; the effective number of points P = sum_mu t_mu = (p - 1) + s(x) is a strictly increasing
    function of lambda, equal to it at the integers. The smoothstep (s'(0) = s'(1) = 0) makes the action C^1 in
    lambda across the integers, where one point's weight stops and the next one's starts (with t = clip(lambda - mu)
    the branch's tangent jumps there, which pseudo-arclength takes for a corrector jump)."""
    return _smoothstep(jnp.clip(lam - jnp.arange(n, dtype=dtype), 0.0, 1.0))


def tempered_count(lam) -> float:
    """P = sum_mu t_mu at homotopy coordinate lambda (:func:`tempered_weights`): floor(lambda) + s(frac(lambda))."""
    whole = math.floor(lam)
    return whole + float(_smoothstep(lam - whole))


def _tempered_count_slope(lam) -> float:
    """dP/d lambda of :func:`tempered_count`: s'(frac(lambda)) = 6 x (1 - x)."""
    x = lam % 1
    return 6 * x * (1 - x)


def tempered_coordinate(P) -> float:
    """The inverse of :func:`tempered_count`: lambda = floor(P) + s^{-1}(frac(P)), s^{-1}(y) = 1/2 - sin(arcsin(1 - 2y)
    /3) (the root in [0, 1] of 3x^2 - 2x^3 = y)."""
    whole = math.floor(P)
    return whole + 0.5 - math.sin(math.asin(1 - 2 * (P - whole)) / 3)


def tempered_subset(problem: Problem, lam) -> Problem:
    """``problem`` with a continuous number of its data points (in their order): the likelihood weights of
    :func:`tempered_weights` at homotopy coordinate ``lam`` (``problem.with_weights``; the tempered data term of
    ``gp.data_term``), P = :func:`tempered_count` effective points.

    At an integer lambda = P the action is that of the first P points plus (m/2)(n - P) log kappa2 (n = problem.P;
    a point of weight 0 adds (m/2) log kappa2 and nothing else: ``gp.data_term``), and at any lambda the action of
    the first p - 1 points and point p at weight t (P = p - 1 + t). Traceable in ``lam``: :func:`arclength` runs
    pseudo-arclength continuation in it."""
    return with_weights(problem, tempered_weights(problem.P, lam, problem.X.dtype))


def _reparametrised_point(p: ArcPoint, parameter: Callable, offset: Callable, doffset: Callable) -> ArcPoint:
    """A point traced in a coordinate lambda reported as :func:`_reparametrised` does."""
    return dataclasses.replace(p, parameter=parameter(p.parameter), coordinate=p.parameter,
                               action=p.action - offset(p.parameter), daction=p.daction - doffset(p.parameter))


def _reparametrised(arc: Arc, parameter: Callable, offset: Callable, doffset: Callable) -> Arc:
    """``arc`` traced in a coordinate lambda, reported in ``parameter(lambda)`` (each point's ``coordinate`` keeps
    lambda; folds and ``daction`` = dS/d lambda stay in lambda), with ``offset(lambda)`` -- a constant of the action
    free of the order parameters -- subtracted from every action (``doffset`` its derivative)."""
    points = tuple(_reparametrised_point(p, parameter, offset, doffset) for p in arc.points)
    folds = tuple(dataclasses.replace(f, parameter=parameter(f.parameter), coordinate=f.parameter,
                                      action=f.action - offset(f.parameter)) for f in arc.folds)
    return dataclasses.replace(arc, points=points, folds=folds, to_parameter=parameter)


def arclength(arch, data, kappa2, parameter: str, theory="adaptive", *, init=None, start: str = "prior",
              ratios=(30.0,), step: float = 0.05, steps: int = 200, bounds=(None, None), direction: int = 1,
              scale: float | None = None, tol: float = 1e-9, solver=None, at: float | None = None,
              callback: Callable[[ArcPoint], None] | None = None, **theory_options) -> Arc:
    """Follow a branch of stationary points through its folds by pseudo-arclength continuation
    (:func:`trace_arclength`) in a continuous parameter of the problem.

    Args:
        arch, data, kappa2, theory, theory_options: as for :func:`adaptive_kernels.solve`; the branch starts at
            these values.
        parameter: ``"N"``, ``"gamma"``, ``"kappa2"``, ``"s_w2"``, ``"s_a2"`` or ``"P"``: a continuous number of
            data points through the tempered likelihood (:func:`tempered_subset` of ``data``'s first n points, n the
            upper bound rounded up, default all; the trace starts at P = ``at``, default n); the reported actions
            are the P-point action's at integer P (the constant (m/2)(n - P) log kappa2 removed).
        init: order parameters to start from; default the start ``start`` of :func:`default_starts` (``"prior"``
            or ``"aligned x<r>"`` for r in ``ratios``).
        step, steps, bounds, direction, scale, tol, solver, callback: see :func:`trace_arclength` (``bounds``: stop
            once the parameter leaves (lower, upper); ``callback`` gets each point as reported, in P for ``"P"``).

    Returns:
        an :class:`Arc`: ``folds`` (each located where the Hessian is singular), ``window()``, ``table()``.

    Example::

        arc = ak.phases.arclength(arch, data, 0.1, "N", theory, start="aligned x30", bounds=(5, 80))
        arc.folds       # [ArcFold(parameter=..., eigenvalue~0, refined=True, ...), ...]
    """
    if parameter not in PROBLEM_PARAMETERS + ("P",):
        raise ValueError(f"parameter must be one of {', '.join(PROBLEM_PARAMETERS + ('P',))}, got {parameter!r}")
    if at is not None and parameter != "P":
        raise ValueError(f"at: only for parameter 'P' (the start is the problem's {parameter}), got {at!r}")
    theory = get_theory(theory, **theory_options)
    problem = make_problem(arch, data, kappa2)
    if parameter == "P":
        n = problem.P if bounds[1] is None else min(problem.P, math.ceil(bounds[1]))
        problem = with_parameter(problem, "P", n).report
        if not 1 <= (n if at is None else at) <= n:
            raise ValueError(f"at must lie between 1 and {n} (the points used), got {at!r}")
        value0 = tempered_coordinate(float(n if at is None else at))
        bounds = (tempered_coordinate(max(1.0, 1.0 if bounds[0] is None else bounds[0])), float(n))
        problem_at = functools.partial(tempered_subset, problem)
    else:
        value0 = float(problem.width if parameter == "N" else getattr(problem, parameter))
        problem_at = functools.partial(set_parameter, problem, parameter)
    theory.check(problem_at(value0))
    if init is None:
        starts = default_starts(problem_at(value0), theory, data.w_star, ratios)
        if start not in starts:
            raise ValueError(f"start must be one of {', '.join(starts)}, got {start!r}")
        init = starts[start]
    report = ()
    if parameter == "P":
        half_log = 0.5 * problem.outputs * math.log(float(problem.kappa2))
        report = (tempered_count, lambda lam: half_log * (n - tempered_count(lam)),
                  lambda lam: -half_log * _tempered_count_slope(lam))
    each = callback and (lambda p: callback(_reparametrised_point(p, *report) if report else p))
    arc = trace_arclength(theory, problem_at, value0, init, step=step, steps=steps, bounds=bounds,
                          direction=direction, scale=scale, tol=tol, solver=solver, label=parameter, callback=each)
    return _reparametrised(arc, *report) if report else arc


def _coordinate(point: ArcPoint) -> float:
    return point.parameter if point.coordinate is None else point.coordinate


def _pieces(arc: Arc) -> list[list[ArcPoint]]:
    """The runs of consecutive minima of ``arc`` along which its coordinate is monotone (a fold ends a run)."""
    runs, run = [], []
    for p in arc.points:
        if p.kind != "minimum" or (run and np.sign(p.slope) != np.sign(run[-1].slope)):
            if len(run) > 1:
                runs.append(run)
            run = [p] if p.kind == "minimum" else []
            continue
        run.append(p)
    if len(run) > 1:
        runs.append(run)
    return [sorted(r, key=_coordinate) for r in runs]


def _hermite(run: list[ArcPoint]):
    """The action along a run of minima as a function of the traced coordinate: cubic Hermite between the points
    (values and the envelope derivatives ``daction``)."""
    from scipy.interpolate import CubicHermiteSpline

    x = np.array([_coordinate(p) for p in run])
    keep = np.concatenate([[True], np.diff(x) > 0])
    return CubicHermiteSpline(x[keep], np.array([p.action for p in run])[keep],
                              np.array([p.daction for p in run])[keep])


def arc_crossings(*arcs: Arc, atol: float = 1e-3, slopes: float = 1e-2) -> list[dict]:
    """Where two distinct branches of minima traced by :func:`arclength` (in one parameter, with one coordinate)
    have equal actions: the first-order transition, where the posterior switches branch.

    Every arc is cut into runs of minima monotone in the parameter (between folds; a run of one arc can meet
    another run of the same S-shaped arc). For every pair of runs the action difference, each action interpolated
    in the traced coordinate by cubic Hermite splines through the points' actions and their exact slopes
    (:attr:`ArcPoint.daction`, the envelope derivative), is solved for zero on the common range (brentq). Two runs
    whose actions agree within ``atol`` over all of it, or that meet with slopes dS/d coordinate equal within the
    relative tolerance ``slopes``, are one branch traced twice (e.g. back along its mirror image under a symmetry,
    within the interpolation's error): no crossing. A first-order transition has a jump of that slope.
    Returns [{parameter, action, runs: ((arc index, first parameter), (arc index, first parameter)), slopes: (dS/d
    coordinate of each), bracket: the parameters of the bracketing points}], sorted by parameter."""
    from scipy.optimize import brentq

    runs = [(i, r) for i, arc in enumerate(arcs) for r in _pieces(arc)]
    found = []
    for (ia, ra), (ib, rb) in itertools.combinations(runs, 2):
        lo = max(_coordinate(ra[0]), _coordinate(rb[0]))
        hi = min(_coordinate(ra[-1]), _coordinate(rb[-1]))
        if not lo < hi:
            continue
        fa, fb = _hermite(ra), _hermite(rb)
        grid = np.unique(np.concatenate([[lo, hi], [_coordinate(p) for p in ra + rb if lo < _coordinate(p) < hi]]))
        diff = fa(grid) - fb(grid)
        if np.max(np.abs(diff)) <= atol:
            continue
        to_parameter = arcs[ia].to_parameter or (lambda v: v)
        for x0, x1, d0, d1 in zip(grid, grid[1:], diff, diff[1:]):
            if np.sign(d0) == np.sign(d1) and d0 != 0:
                continue
            x = x0 if d0 == 0 else brentq(lambda v: fa(v) - fb(v), x0, x1, xtol=1e-12)
            if abs(fa(x, 1) - fb(x, 1)) <= slopes * max(abs(fa(x, 1)), abs(fb(x, 1))):
                continue
            found.append({"parameter": float(to_parameter(x)), "action": float(fa(x)),
                          "runs": ((ia, ra[0].parameter), (ib, rb[0].parameter)),
                          "slopes": (float(fa(x, 1)), float(fb(x, 1))),
                          "bracket": (float(to_parameter(x0)), float(to_parameter(x1)))})
    return sorted(found, key=lambda c: c["parameter"])


# --- phase diagrams and plots -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PhaseDiagram:
    """:func:`phase_diagram`'s result: ``grid`` (one row per (first, second) value: minima, metastable, posterior
    branch, its action and observables: :meth:`Branches.summary`) and ``lines`` (per second value: the transition
    and the folds bounding the metastable window along the first parameter; NaN where none was found)."""

    first: str
    second: str
    grid: object
    lines: object
    branches: dict


def phase_diagram(arch, data, kappa2, first, second, theory="adaptive", **options) -> PhaseDiagram:
    """Branches along ``first = (parameter, values)`` (as for :func:`continuation`) for every value of ``second =
    (name, values)`` (``"P"``, ``"N"``, ``"gamma"``, ``"kappa2"``, ``"s_w2"`` or ``"s_a2"``, set on the problem by
    :func:`with_parameter`). ``options``: those of :func:`continuation` (``starts``, ``ratios``, ``solver``...).

    Example::

        diagram = ak.phases.phase_diagram(arch, data, 0.1, ("P", range(40, 161, 10)), ("gamma", [1.5, 1.75, 2.0]))
        ak.phases.plot_phase_diagram(diagram, "eigenvalue_ratio_1")
    """
    import pandas as pd

    (name1, values1), (name2, values2) = first, second
    theory = get_theory(theory)
    problem = make_problem(arch, data, kappa2)
    theory.check(problem)
    defaults = dict(starts=None, ratios=(30.0,), directions=("up", "down"), solver=None, observe=None, same=1e-4,
                    max_change=0.5, halvings=4)
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"phase_diagram: unknown options {', '.join(sorted(unknown))}")
    defaults.update(options)
    grids, lines, traced = [], [], {}
    for v2 in values2:
        base = with_parameter(problem, name2, v2).report
        branches = _continue(theory, base, data, name1, values1, **defaults)
        traced[v2] = branches
        table = branches.summary()
        table.insert(1, name2, v2)
        grids.append(table)
        crossings = branches.transitions()
        window = branches.window()
        lines.append({name2: v2, "transition": crossings[0]["parameter"] if crossings else np.nan,
                      **{key: np.nan if window is None or window[i] is None else window[i]
                         for i, key in enumerate(("lower_fold", "upper_fold"))}})
    return PhaseDiagram(name1 if isinstance(name1, str) else "parameter", name2, pd.concat(grids, ignore_index=True),
                        pd.DataFrame(lines), traced)


def plot_branches(branches: Branches, column: str = "action", ax=None):
    """Each branch's ``column`` against the parameter (for ``"action"``: minus the lowest action found at that
    value, i.e. the free-energy gap), folds as crosses, transitions as dotted lines. Returns the axes."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    table = branches.table()
    if column == "action":
        table["action"] -= table.groupby(branches.parameter)["action"].transform("min")
    for name, rows in table.groupby("branch", sort=False):
        rows = rows.sort_values(branches.parameter)
        ax.plot(rows[branches.parameter], rows[column], "o-" if name.startswith("up") else "s--", ms=3, label=name)
        fold = branches.folds.get(name)
        if fold is not None and fold.last != fold.next:
            ax.plot(rows[branches.parameter].iloc[-1] if name.startswith("up") else rows[branches.parameter].iloc[0],
                    rows[column].iloc[-1] if name.startswith("up") else rows[column].iloc[0], "kx", ms=9)
    for crossing in branches.transitions():
        ax.axvline(crossing["parameter"], color="gray", ls=":", lw=1)
    ax.set(xlabel=branches.parameter, ylabel=column if column != "action" else "action - lowest action")
    ax.legend(fontsize=8)
    return ax


def plot_phase_diagram(diagram: PhaseDiagram, column: str, ax=None):
    """The posterior branch's ``column`` over the two parameters (colour), metastable points circled, and the
    transition and fold lines. Returns the axes."""
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    grid, lines = diagram.grid, diagram.lines
    points = ax.scatter(grid[diagram.first], grid[diagram.second], c=grid[column], s=60, cmap="viridis")
    meta = grid[grid.metastable]
    ax.scatter(meta[diagram.first], meta[diagram.second], s=140, facecolors="none", edgecolors="r",
               label="two minima (metastable)")
    ax.plot(lines.transition, lines[diagram.second], "k-", label="transition (actions cross)")
    ax.plot(lines.lower_fold, lines[diagram.second], "r:", label="folds")
    ax.plot(lines.upper_fold, lines[diagram.second], "r:")
    plt.colorbar(points, ax=ax, label=column)
    ax.set(xlabel=diagram.first, ylabel=diagram.second)
    ax.legend(fontsize=8)
    return ax
