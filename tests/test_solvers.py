"""Solvers of the two-layer saddle points: agreement, closed forms, implicit derivatives, failures.

One small linear problem in mean-field scaling (gamma = 2, strong adaptation) is solved once
per module; tolerances are stated at each assertion.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions import TwoLayerAdaptiveAction, resolve_space
from adaptive_kernels.api import solve_problem
from adaptive_kernels.solvers import FixedPoint, Newton, QuasiNewton, Status

D, N, P, KAPPA2 = 8, 50, 12, 1e-2


@pytest.fixture(scope="module")
def data():
    return ak.teacher_dataset(jax.random.PRNGKey(0), P, D, P_test=40)


@pytest.fixture(scope="module")
def arch():
    return ak.FCN(D, N, "linear", gamma=2.0)


@pytest.fixture(scope="module")
def solutions(arch, data):
    return {name: ak.solve(arch, data, KAPPA2, "adaptive", solver)
            for name, solver in (("fixed-point", Newton()), ("gradient", QuasiNewton()))}


def test_fixed_point_and_gradient_solvers_agree(solutions):
    # Both converge to the stationarity residual 1e-10, so the minimisers agree to 1e-8.
    fp, qn = solutions["fixed-point"], solutions["gradient"]
    assert bool(fp.converged) and bool(qn.converged)
    scale = float(jnp.max(jnp.abs(qn.value)))
    assert float(jnp.max(jnp.abs(fp.value - qn.value))) < 1e-8 * scale
    np.testing.assert_allclose(fp.action, qn.action, rtol=1e-12)
    assert float(qn.domain_margin) > 0


@pytest.mark.parametrize("name", ["fixed-point", "gradient"])
def test_linear_stationarity_closed_form(solutions, arch, data, name):
    # THEORY.md sec. 4: Sigma^{-1} = (d/s_w2) I - (c/N) X^T (t t^T - A) X, evaluated in numpy
    # (independent of the autodiff gradient the solvers use); relative 1e-8.
    Sigma = np.asarray(solutions[name].value)
    X, y = np.asarray(data.X), np.asarray(data.y)
    c = float(arch.readout_scale)
    A = np.linalg.inv(c * X @ Sigma @ X.T + KAPPA2 * np.eye(P))
    t = A @ y
    rhs = D * np.eye(D) - (c / N) * X.T @ (np.outer(t, t) - A) @ X
    np.testing.assert_allclose(np.linalg.inv(Sigma), rhs, rtol=1e-8, atol=1e-8 * np.abs(rhs).max())


def test_weight_and_function_space_give_the_same_solution(solutions, arch, data):
    # Same action evaluated two ways (Woodbury d x d vs Cholesky P x P): minimisers agree to 1e-8.
    fn = ak.solve(arch, data, KAPPA2, "adaptive", space="function")
    ref = solutions["gradient"].value
    assert float(jnp.max(jnp.abs(fn.value - ref))) < 1e-8 * float(jnp.max(jnp.abs(ref)))


def test_erf_fixed_point_paths_agree_with_the_gradient_solver(data):
    # Nonlinear phi (no closed form): the Anderson-accelerated precision iteration with Newton steps
    # (the default solver), without Anderson (anderson_memory=0), without the Newton model, and L-BFGS + Newton over the Cholesky coordinates (an
    # independent formulation: minimisation of S, not its stationarity map) all reach the stationarity
    # residual 1e-10, so their minimisers agree to 1e-8 relative.
    arch = ak.FCN(D, N, "erf", gamma=2.0)
    problem = ak.make_problem(arch, data, KAPPA2)
    reference = solve_problem(problem, ak.Adaptive(), QuasiNewton())
    for solver in (None, Newton(anderson_memory=0), FixedPoint()):
        sol = solve_problem(problem, ak.Adaptive(), solver)
        assert int(sol.status) == Status.SUCCESS and float(sol.stats["residual"]) <= 1e-10
        scale = float(jnp.max(jnp.abs(reference.value)))
        assert float(jnp.max(jnp.abs(sol.value - reference.value))) < 1e-8 * scale


def _precision_map_and_model(problem, Sigma, space="auto"):
    action = TwoLayerAdaptiveAction(resolve_space(space, problem))

    def T(Lam):
        return action.target_precision(jnp.linalg.inv(Lam), problem)

    model = action.fixed_point_terms(Sigma, problem)[2]
    return T, model


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("space", ["function", "weight"])
def test_newton_model_is_the_exact_jacobian_for_a_linear_net(arch, data, outputs, space):
    # For linear phi the model J[dL] = (1/N)[K B S dL S B - B S dL S V V^T - V V^T S dL S B] is the exact
    # Jacobian of the precision map: newton_step((I - J) E) = E, with J E from autodiff of the map
    # (jax.jvp, independent of the closed form), for random symmetric E, at a non-stationary Sigma,
    # with B and V from the P x P Cholesky factor (function space) or the Woodbury factors (weight
    # space); relative 1e-9.
    y = data.y if outputs == 1 else jnp.stack([data.y, jnp.sin(data.y)], axis=1)
    problem = ak.make_problem(arch, eqx.tree_at(lambda d: d.y, data, y), KAPPA2)
    Sigma = problem.prior_covariance() * 1.7 + 0.02 * jnp.outer(data.X[0], data.X[0])
    T, model = _precision_map_and_model(problem, Sigma, space)
    Lam = jnp.linalg.inv(Sigma)
    for seed in range(3):
        E = jax.random.normal(jax.random.PRNGKey(seed), (D, D))
        E = E + E.T
        JE = jax.jvp(T, (Lam,), (E,))[1]
        back = model.newton_step(E - JE)
        assert float(jnp.max(jnp.abs(back - E))) < 1e-9 * float(jnp.max(jnp.abs(E)))


def test_newton_model_approximates_the_erf_jacobian(data):
    # erf (Gaussian-equivalent linear part only): at the solution, the Newton-preconditioned map
    # I - (I - J_model)^{-1}(I - J) contracts every probe by at least half, where the plain map
    # I - (I - J) = J expands them (|J E| > |E|: mean-field scaling).
    arch = ak.FCN(D, N, "erf", gamma=2.0)
    problem = ak.make_problem(arch, data, KAPPA2)
    Sigma = solve_problem(problem, ak.Adaptive()).value
    T, model = _precision_map_and_model(problem, Sigma)
    Lam = jnp.linalg.inv(Sigma)
    expands = []
    for seed in range(5):
        E = jax.random.normal(jax.random.PRNGKey(seed), (D, D))
        E = E + E.T
        JE = jax.jvp(T, (Lam,), (E,))[1]
        assert float(jnp.linalg.norm(E - model.newton_step(E - JE))) < 0.5 * float(jnp.linalg.norm(E))
        expands.append(float(jnp.linalg.norm(JE)) > float(jnp.linalg.norm(E)))
    assert any(expands)


@pytest.mark.parametrize("space", ["function", "weight"])
def test_newton_steps_converge_quadratically_on_a_linear_net(arch, data, space):
    # Exact Jacobian -> Newton's method: a handful of map evaluations where the plain Anderson
    # iteration needs 20+, the residual ends far below the tolerance (quadratic convergence: the
    # last step squares an error that was already ~1e-6), and the minimiser is the same (1e-8).
    problem = ak.make_problem(arch, data, KAPPA2)
    newton = solve_problem(problem, ak.Adaptive(space=space))
    plain = solve_problem(problem, ak.Adaptive(space=space), FixedPoint())
    assert int(newton.status) == int(plain.status) == Status.SUCCESS
    assert int(newton.iterations) <= 6 and int(plain.iterations) >= 3 * int(newton.iterations)
    assert float(newton.stats["residual"]) < 1e-13
    scale = float(jnp.max(jnp.abs(plain.value)))
    assert float(jnp.max(jnp.abs(newton.value - plain.value))) < 1e-8 * scale


def test_quadrature_activation_converges_below_the_actions_round_off():
    # tanh (2-d Gauss-Hermite kernel) at d = 5, P = 40: near the minimiser every step changed the action by
    # ~4e-12 relative, above 64 eps, while the stationarity residual was still 1e-6; both iterations
    # used to stop with LINE_SEARCH_FAILED. Both now reach the residual 1e-10 and the same minimiser (1e-8).
    data = ak.teacher_dataset(jax.random.PRNGKey(1), 40, 5, "cubic", P_test=10)
    problem = ak.make_problem(ak.FCN(5, 25, "tanh", gamma=1.0), data, KAPPA2)
    newton = solve_problem(problem, ak.Adaptive())
    plain = solve_problem(problem, ak.Adaptive(), FixedPoint())
    for sol in (newton, plain):
        assert int(sol.status) == Status.SUCCESS and float(sol.stats["residual"]) <= 1e-10
    scale = float(jnp.max(jnp.abs(plain.value)))
    assert float(jnp.max(jnp.abs(newton.value - plain.value))) < 1e-8 * scale


@pytest.mark.parametrize("solver", [pytest.param(Newton(), marks=pytest.mark.slow), QuasiNewton()], ids=["fixed-point", "gradient"])
def test_float32_solves_converge_to_the_float64_answer(data, solver):
    # float32 data: both solvers stop at the float32 tolerance (1000 eps = 1.2e-4, not float64's 1e-10,
    # which float32 round-off never reaches), return float32 and agree with the float64 solve to float32
    # accuracy (Sigma 1e-3 relative, learnability 1e-4); summarize/predict accept the float32 kernel.
    arch = ak.FCN(D, N, "erf", gamma=2.0)
    data32 = jax.tree.map(lambda a: a.astype(jnp.float32), data)
    reference = ak.solve(arch, data, KAPPA2, "adaptive", solver)
    sol = ak.solve(arch, data32, KAPPA2, "adaptive", solver)
    assert sol.value.dtype == jnp.float32 and bool(sol.converged) and int(sol.iterations) < 200
    scale = float(jnp.max(jnp.abs(reference.value)))
    assert float(jnp.max(jnp.abs(sol.value - reference.value))) < 1e-3 * scale
    learn32 = ak.summarize(sol, arch, data32, KAPPA2)["learnability"]
    assert abs(learn32 - ak.summarize(reference, arch, data, KAPPA2)["learnability"]) < 1e-4


def test_scaling_solvers_agree_and_match_the_scalar_equation(arch, data):
    # 1/s = 1 + (2/N) dD/ds with D(s) = (1/2) y^T (sK + k)^{-1} y + (1/2) log det(sK + k) written out
    # in numpy with dD/ds = (1/2)[tr(A K) - t^T K t]; relative 1e-8.
    fp = ak.solve(arch, data, KAPPA2, "scaling", Newton())
    qn = ak.solve(arch, data, KAPPA2, "scaling", QuasiNewton())
    assert bool(fp.converged) and bool(qn.converged)
    s = float(qn.value)
    assert abs(float(fp.value) - s) < 1e-8 * s
    K = np.asarray(ak.nngp(arch, data.X))
    A = np.linalg.inv(s * K + KAPPA2 * np.eye(P))
    t = A @ np.asarray(data.y)
    dD = 0.5 * (np.trace(A @ K) - t @ K @ t)
    np.testing.assert_allclose(1 / s, 1 + 2 * dD / N, rtol=1e-8)


def test_implicit_gradients_match_finite_differences(data):
    # d(observable)/d(s_w2, s_a2, kappa2, gamma, N, X_00) through the stationarity condition vs
    # central differences (step 1e-5 relative; truncation ~1e-10): relative 1e-5.
    arch = ak.FCN(D, N, "erf", gamma=1.5)
    base = ak.make_problem(arch, data, KAPPA2)
    w = jnp.arange(D * D, dtype=float).reshape(D, D) / (D * D)

    @jax.jit
    def observable(v):
        p = eqx.tree_at(lambda p: (p.s_w2, p.s_a2, p.kappa2, p.gamma, p.widths), base, tuple(v[:4]) + (v[4:5],))
        p = eqx.tree_at(lambda p: p.X, p, p.X.at[0, 0].add(v[5]))
        sol = solve_problem(p, ak.Adaptive())
        return jnp.sum(w * sol.value) + 1e-3 * sol.action

    v0 = jnp.array([1.0, 1.0, KAPPA2, 1.5, float(N), 0.0])
    grad = np.asarray(jax.grad(observable)(v0))
    fd = []
    for i in range(6):
        h = 1e-5 * max(1.0, abs(float(v0[i])))
        e = jnp.zeros(6).at[i].set(h)
        fd.append((observable(v0 + e) - observable(v0 - e)) / (2 * h))
    np.testing.assert_allclose(grad, np.asarray(fd), rtol=1e-5)


def test_vmapped_solves_equal_single_solves(arch, data):
    # solve_problem is vmappable over numeric fields (here gamma, kernel scaling to keep compilation
    # small); each batch entry equals its own solve to 1e-8.
    base = ak.make_problem(arch, data, KAPPA2)
    gammas = jnp.array([1.0, 2.0])
    batched = jax.vmap(lambda g: solve_problem(eqx.tree_at(lambda p: p.gamma, base, g), ak.Scaling()).value)(gammas)
    for g, Sigma in zip(gammas, batched):
        single = solve_problem(eqx.tree_at(lambda p: p.gamma, base, g), ak.Scaling()).value
        assert float(jnp.max(jnp.abs(Sigma - single))) < 1e-8 * float(jnp.max(jnp.abs(single)))


def test_iteration_limit_reports_max_steps(arch, data):
    for solver in (Newton(max_steps=2), QuasiNewton(max_steps=2, newton_steps=0)):
        sol = ak.solve(arch, data, KAPPA2, "adaptive", solver)
        assert not bool(sol.converged)
        assert int(sol.status) == Status.MAX_STEPS
        assert np.all(np.isfinite(sol.value))


def test_non_finite_start_is_never_marked_converged(arch, data):
    bad = jnp.full((D, D), jnp.nan)
    for solver in (Newton(), QuasiNewton()):
        sol = ak.solve(arch, data, KAPPA2, "adaptive", solver, init=bad, implicit=False)
        assert not bool(sol.converged)
        assert int(sol.status) in (Status.NONFINITE, Status.LEFT_DOMAIN)


def test_invalid_arguments_raise_clear_errors(arch, data):
    with pytest.raises(ValueError, match="^theory"):
        ak.solve(arch, data, KAPPA2, "ntk")
    with pytest.raises(ValueError, match="^solver"):
        ak.solve(arch, data, KAPPA2, "adaptive", "newton")
    with pytest.raises(ValueError, match="^damping"):
        FixedPoint(damping=1.5)
    with pytest.raises(ValueError, match="^anderson_memory"):
        FixedPoint(anderson_memory=-1)
    with pytest.raises(ValueError, match="^method"):
        QuasiNewton(method="sgd")
    with pytest.raises(ValueError, match="^kappa2"):
        ak.solve(arch, data, 0.0)
