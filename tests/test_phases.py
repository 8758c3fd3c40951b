"""Phase structure (issue 17): several stationary points, inertia, continuation, folds and transitions.

The reference is a two-parameter action whose stationary points, Hessians, folds and action crossing are closed
form: in the unconstrained coordinates u_i = (1/2) log s_i (``solvers.coordinates``; prior precision 1)

    S(u) = b (u1^2 - 1)^2 + t u1 + (u2 - 0.3)^2,

a tilted double well in u1 (stationary where 4 b u1 (u1^2 - 1) + t = 0; two minima and a saddle for
|t| < t_fold = 8 b / (3 sqrt 3), folds at u1 = +-1/sqrt 3; S(u; t) = S(-u; -t), so the two minima's actions cross at
t = 0) times a parabola in u2. The theory object below poses it to the library's solvers like any action.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.phases import (
    Instance, aligned_state, arc_crossings, barrier, classify, continue_branches, find_stationary_points, hessian_eigenvalues, trace_arclength,
    with_parameter,
)
from adaptive_kernels.theories import AbstractTheory

B = 1.0
T_FOLD = 8 * B / (3 * np.sqrt(3))


class WellArgs(eqx.Module):
    t: jnp.ndarray
    width: jnp.ndarray


def well(u1, u2, t):
    return B * (u1**2 - 1) ** 2 + t * u1 + (u2 - 0.3) ** 2


class DoubleWell(EntropicAction):
    """S(s1, s2) = sum (N/2)(s_i - log s_i) + D with D chosen so that S equals :func:`well` of u_i = log(s_i)/2."""

    def data_term(self, value, args):
        s1, s2 = value
        entropy = sum(0.5 * args.width * (s - jnp.log(s)) for s in value)
        return well(0.5 * jnp.log(s1), 0.5 * jnp.log(s2), args.t) - entropy

    def prior(self, args):
        one = jnp.ones((), args.width.dtype)
        return (args.width, args.width), (one, one)


class WellTheory(AbstractTheory):
    name = "double-well"

    def problem(self, problem):
        return DoubleWell(), problem

    def init(self, problem, args):
        return (jnp.ones(()), jnp.ones(()))

    def output_kernels(self, value, problem, X_test=None):
        raise NotImplementedError

    def layer_kernels(self, value, problem):
        raise NotImplementedError


def args_at(t):
    return WellArgs(jnp.asarray(t, float), jnp.asarray(10.0))


def state(u1, u2=0.3):
    return (jnp.exp(2 * jnp.asarray(u1, float)), jnp.exp(2 * jnp.asarray(u2, float)))


def roots(t):
    """The closed-form stationary u1 (ascending) of the well at tilt t."""
    r = np.roots([4 * B, 0.0, -4 * B, t])
    return np.sort(r[np.abs(r.imag) < 1e-12].real)


def test_stationary_points_match_the_closed_form_and_the_lowest_minimum_is_the_posterior():
    t = 0.4
    starts = {"left": state(-1.1, 0.4), "right": state(1.1, 0.2), "right again": state(0.9, 0.35)}
    found = find_stationary_points(WellTheory(), args_at(t), starts)
    left, saddle, right = roots(t)
    assert len(found.points) == 2 and not found.failed
    u1 = sorted(0.5 * float(jnp.log(p.value[0])) for p in found.points)
    np.testing.assert_allclose(u1, [left, right], atol=1e-7)
    assert all(p.kind == "minimum" and p.index == 0 for p in found.points)
    # the action of each equals the closed form; the posterior is the lowest (t > 0 favours u1 < 0)
    for p in found.points:
        u = 0.5 * float(jnp.log(p.value[0]))
        assert p.action == pytest.approx(well(u, 0.3, t), abs=1e-9)
    assert found.posterior is found.points[0] and found.points[0].action < found.points[1].action
    assert 0.5 * float(jnp.log(found.posterior.value[0])) == pytest.approx(left, abs=1e-7)
    assert set(found.points[1].starts) == {"right", "right again"}


def test_hessian_inertia_is_the_closed_form_one_at_minima_and_saddle():
    t = 0.4
    action, args = DoubleWell(), args_at(t)
    for u1, kind, index in zip(roots(t), ("minimum", "saddle", "minimum"), (0, 1, 0)):
        eigenvalues = np.asarray(hessian_eigenvalues(action, state(u1), args))
        # d^2 S/du1^2 = 4 b (3 u1^2 - 1), d^2 S/du2^2 = 2 (u are exactly the solver's coordinates here)
        np.testing.assert_allclose(eigenvalues, np.sort([4 * B * (3 * u1**2 - 1), 2.0]), rtol=1e-8, atol=1e-8)
        assert classify(eigenvalues) == (kind, index)
    assert classify([-1.0, -2.0]) == ("maximum", 2)
    assert classify([1e-12, 2.0])[0] == "degenerate"


def test_barrier_is_the_closed_form_pass_between_the_two_wells():
    """The string method + Newton find the well's saddle (the middle root, u2 = 0.3) between its two minima; the
    barriers out of each are the closed-form action differences, the saddle's Hessian has one negative eigenvalue
    4 b (3 u1^2 - 1), and descents from it end at both minima."""
    t = 0.4
    left, middle, right = roots(t)
    result = barrier(WellTheory(), args_at(t), state(left), state(right), images=15, iterations=200)
    assert result.saddle is not None  # and the descents from it reach both minima
    assert 0.5 * float(jnp.log(result.saddle[0])) == pytest.approx(middle, abs=1e-7)
    assert 0.5 * float(jnp.log(result.saddle[1])) == pytest.approx(0.3, abs=1e-7)
    top = well(middle, 0.3, t)
    assert result.saddle_action == pytest.approx(top, abs=1e-9)
    assert result.from_a == pytest.approx(top - well(left, 0.3, t), abs=1e-9)
    assert result.from_b == pytest.approx(top - well(right, 0.3, t), abs=1e-9)
    np.testing.assert_allclose(sorted(result.ends), sorted([well(left, 0.3, t), well(right, 0.3, t)]), atol=1e-8)
    np.testing.assert_allclose(result.saddle_eigenvalues, sorted([4 * B * (3 * middle**2 - 1), 2.0]), atol=1e-7)
    assert result.path_maximum >= top - 1e-6  # an upper bound, to the sampling of the segments around its top
    with pytest.raises(ValueError, match="images"):
        barrier(WellTheory(), args_at(t), state(left), state(right), images=2)
    with pytest.raises(ValueError, match="^b: the action"):
        barrier(WellTheory(), args_at(t), state(left), (jnp.asarray(jnp.nan), jnp.asarray(1.0)))


def test_continuation_brackets_the_folds_and_finds_the_crossing_where_the_closed_form_says():
    values = np.linspace(-2.5, 2.5, 10)  # no grid point at the crossing t = 0

    def starts(inst):
        return {"left": state(-1.2), "right": state(1.2)}

    branches = continue_branches(WellTheory(), lambda t: Instance(args_at(t), args_at(t)), values, starts,
                                 parameter="t", halvings=6)
    # up: only the right well exists at t = -2.5 (both starts reach it, traced once); it folds at +t_fold.
    # down: the left well from t = 2.5 folds at -t_fold.
    assert set(branches.branches) == {"up:left", "down:left"} or set(branches.branches) == {"up:right", "down:left"}
    up = next(f for n, f in branches.folds.items() if n.startswith("up"))
    down = branches.folds["down:left"]
    step = (values[1] - values[0]) / 2**6
    assert up.reason == down.reason == "jump"
    assert up.last < T_FOLD < up.next and up.next - up.last <= step * 1.001
    assert down.next < -T_FOLD < down.last
    assert branches.window() == pytest.approx((down.estimate, up.estimate))
    (crossing,) = branches.transitions()
    assert crossing["parameter"] == pytest.approx(0.0, abs=1e-9)
    # the branches are minima up to their folds, and the smallest Hessian eigenvalue -> 0 there like sqrt(distance)
    table = branches.table()
    assert (table.kind == "minimum").all()
    last_up = table[table.direction == "up"].iloc[-1]
    u_last = roots(last_up.t)[-1]
    assert last_up.min_eigenvalue == pytest.approx(4 * B * (3 * u_last**2 - 1), rel=1e-6)
    # two minima exactly where |t| < t_fold; the posterior's branch is the well the tilt favours
    summary = branches.summary()
    np.testing.assert_array_equal(summary.minima, np.where(np.abs(summary.t) < T_FOLD, 2, 1))
    favoured = np.where(summary.t > 0, "down:left", up.branch)
    inside = np.abs(summary.t) < T_FOLD
    np.testing.assert_array_equal(summary.posterior[inside], favoured[inside])


def test_arclength_passes_both_folds_follows_the_saddle_and_locates_the_folds_exactly():
    # from the right well at t = -2.5 the branch runs up to +t_fold, turns back along the saddle (index 1) to
    # -t_fold, and continues on the left well to t = 2.5: the whole S-curve 4 b u1 (u1^2 - 1) + t = 0
    arc = trace_arclength(WellTheory(), args_at, -2.5, state(1.2), step=0.1, bounds=(-2.5, 2.5), label="t")
    assert arc.reason == "bounds"
    u1 = np.array([0.5 * float(jnp.log(p.value[0])) for p in arc.points])
    t = np.array([p.parameter for p in arc.points])
    np.testing.assert_allclose(4 * B * u1 * (u1**2 - 1) + t, 0.0, atol=1e-7)
    index = np.array([p.index for p in arc.points])
    np.testing.assert_array_equal(index, (np.abs(u1) < 1 / np.sqrt(3)).astype(int))
    assert index.sum() >= 3 and {p.kind for p in arc.points if p.index == 1} == {"saddle"}
    # the folds solved from the extended system: t = +-8b/(3 sqrt 3), u1 = +-1/sqrt 3, a zero Hessian eigenvalue
    folds = sorted(arc.folds, key=lambda f: f.parameter)
    assert len(folds) == 2 and all(f.refined for f in folds)
    np.testing.assert_allclose([f.parameter for f in folds], [-T_FOLD, T_FOLD], atol=1e-8)
    np.testing.assert_allclose([0.5 * float(jnp.log(f.value[0])) for f in folds], [-1 / np.sqrt(3), 1 / np.sqrt(3)],
                               atol=1e-7)
    assert max(abs(f.eigenvalue) for f in folds) < 1e-6
    assert arc.window() == pytest.approx((-T_FOLD, T_FOLD), abs=1e-8)
    # the two wells' actions cross at t = 0 (the well is symmetric under u1 -> -u1, t -> -t), with the jump of the
    # slope dS/dt = u1 between the wells: located from the Hermite interpolants of the two runs of minima
    (crossing,) = arc_crossings(arc)
    assert crossing["parameter"] == pytest.approx(0.0, abs=1e-4)  # cubic Hermite over steps up to 0.4
    assert sorted(crossing["slopes"]) == pytest.approx([-1.0, 1.0], abs=1e-2)


def test_plots_draw_every_branch():
    import matplotlib

    matplotlib.use("Agg")
    from adaptive_kernels.phases import plot_branches

    branches = continue_branches(WellTheory(), lambda t: Instance(args_at(t), args_at(t)), np.linspace(-2, 2, 5),
                                 lambda inst: {"left": state(-1.2), "right": state(1.2)}, parameter="t", halvings=1)
    ax = plot_branches(branches, "action")
    assert len(ax.get_legend().get_texts()) == len(branches.branches)


def test_padded_subsets_change_the_action_by_a_constant_only():
    data = ak.teacher_dataset(jax.random.PRNGKey(1), 12, 4, teacher="cubic", eps=1.0, P_test=5)
    problem = ak.make_problem(ak.FCN(4, 30, "erf", gamma=2.0), data, 0.05)
    Sigma = aligned_state(problem, ak.Adaptive(), 7.0, data.w_star)
    action, _ = ak.Adaptive().problem(problem)
    padded, exact = with_parameter(problem, "P", 7, pad_to=12), with_parameter(problem, "P", 7)
    assert padded.problem.P == 12 and padded.report.P == exact.problem.P == 7
    grad = jax.grad(action)
    np.testing.assert_allclose(action(Sigma, padded.problem) - padded.offset, action(Sigma, exact.problem), rtol=1e-12)
    np.testing.assert_allclose(grad(Sigma, padded.problem), grad(Sigma, exact.problem), rtol=1e-10, atol=1e-12)


def test_aligned_state_has_the_requested_ratio_along_the_teacher():
    data = ak.teacher_dataset(jax.random.PRNGKey(2), 15, 6, teacher="linear", P_test=5)
    problem = ak.make_problem(ak.FCN(6, 20, "erf"), data, 0.1)
    Sigma = aligned_state(problem, ak.Adaptive(), 25.0, data.w_star)
    assert float(ak.eigenvalue_ratio(Sigma, data.w_star)) == pytest.approx(25.0, rel=1e-10)
    # kernel form: K_1 = B Q B^T gains the factor 25 along G y (q ∝ B^T y): y^T K y grows by 1 + 24 |B^T y|^2/...
    from adaptive_kernels.actions import deep

    Q = aligned_state(problem, ak.Adaptive(form="kernel"), 25.0)[0]
    B = deep.input_factor(problem, problem.X)
    q = B.T @ problem.y
    assert float(ak.eigenvalue_ratio(Q, q)) == pytest.approx(25.0, rel=1e-10)
    assert float(problem.y @ B @ Q @ B.T @ problem.y) > 10 * float(problem.y @ B @ B.T @ problem.y)


def test_bad_inputs_name_the_parameter():
    data = ak.teacher_dataset(jax.random.PRNGKey(2), 8, 3, P_test=5)
    problem = ak.make_problem(ak.FCN(3, 5, "erf"), data, 0.1)
    with pytest.raises(ValueError, match="parameter"):
        with_parameter(problem, "width", 3)
    with pytest.raises(ValueError, match="P must be"):
        with_parameter(problem, "P", 20)
    with pytest.raises(ValueError, match="ratio"):
        aligned_state(problem, ak.Adaptive(), -1.0)
    with pytest.raises(ValueError, match="theory"):
        ak.stationary_points(ak.FCN(3, 5, "erf"), data, 0.1, ak.Adaptive(form="conjugate"))


def test_phase_diagram_of_a_convex_case_has_one_phase_with_the_direct_solve_s_action():
    """phase_diagram over (P, kappa2) for a linear two-layer net, whose Gaussian-ansatz action has one minimum: every
    grid point reports exactly one minimum, no transition or window, and the posterior's action equals that of an
    independent ``ak.solve`` (default precision-iteration solver, unpadded first P points) at the same (P, kappa2)."""
    from adaptive_kernels.phases import phase_diagram, plot_phase_diagram

    data = ak.teacher_dataset(jax.random.PRNGKey(0), 10, 3, P_test=20)
    arch = ak.FCN(3, 20, "linear", gamma=1.5)
    diagram = phase_diagram(arch, data, 0.2, ("P", [6, 10]), ("kappa2", [0.1, 0.3]), directions=("up",))
    assert len(diagram.grid) == 4 and (diagram.grid.minima == 1).all() and not diagram.grid.metastable.any()
    assert diagram.lines.transition.isna().all() and diagram.lines.upper_fold.isna().all()
    for row in diagram.grid.itertuples():
        P = int(row.P)
        sub = ak.Dataset(X=data.X[:P], y=data.y[:P], X_test=data.X_test, y_test=data.y_test,
                         w_star=data.w_star)
        direct = ak.solve(arch, sub, row.kappa2)
        assert row.action == pytest.approx(float(direct.action), rel=1e-9)
    plot_phase_diagram(diagram, "learnability")
