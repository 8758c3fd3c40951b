"""Entry functions: ``solve``, ``predict``, ``summarize`` (THEORY.md secs. 2-4, 6).

    sol = solve(arch, data, kappa2, theory="adaptive")      # Solution: Sigma, action, status...
    pred = predict(sol, arch, data, kappa2)                 # mean/variance on train and test inputs
    summarize(sol, arch, data, kappa2)                      # flat dict of scalar observables

Theories of a one-hidden-layer net (FCN or CNN):

- ``"gp"``: the NNGP, no adaptation (sec. 2);
- ``"scaling"``: kernel scaling, the NNGP kernel times one scalar s (sec. 3);
- ``"adaptive"``: the adaptive kernel with Gaussian first-layer weights N(0, Sigma) (sec. 4).

Deeper nets (``arch.depth > 1``) go to ``adaptive_kernels.deep``. Predictions are GP
predictions with the solution's kernel: for the linear adaptive net the mean is
f(x*) = c x*^T Sigma X^T t, t = (K_Sigma + kappa2)^{-1} y.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from adaptive_kernels._validation import check_array, is_traced
from adaptive_kernels.actions import ADAPTIVE_ACTION, SCALING_ACTION, TwoLayerProblem, gp_action, two_layer_problem
from adaptive_kernels.architectures import FCN
from adaptive_kernels.gp import gp_predict
from adaptive_kernels.observables import eigenvalue_ratio, kernel_target_alignment, learnability, mse
from adaptive_kernels.solvers import FixedPoint, QuasiNewton, Solution, Status, minimise

THEORIES = ("gp", "scaling", "adaptive")
SOLVERS = {"gradient": QuasiNewton, "fixed-point": FixedPoint}


class Prediction(eqx.Module):
    """GP predictions with the kernel of a solution.

    Attributes:
        mean_train: (P,) mean output on the training inputs.
        mean_test: (P*,) mean output on the test inputs (None without test inputs).
        var_test: (P*,) predictive variance there (None without test inputs).
        kernel: (P, P) the solution's output kernel on the training inputs.
    """

    mean_train: jnp.ndarray
    mean_test: jnp.ndarray | None
    var_test: jnp.ndarray | None
    kernel: jnp.ndarray


def _check_theory(theory: str) -> None:
    if theory not in THEORIES:
        raise ValueError(f"theory must be one of {', '.join(THEORIES)}, got {theory!r}")


def _resolve_solver(solver):
    """None -> :class:`FixedPoint` (Anderson-accelerated precision iteration: 37 map evaluations, each one
    gradient of D, at d = 50, P = 1000, against 112 L-BFGS steps and a Newton-CG polish for QuasiNewton)."""
    if solver is None:
        return FixedPoint()
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)} or a solver object, got {solver!r}")
        return SOLVERS[solver]()
    if not hasattr(solver, "run"):
        raise TypeError(f"solver must be a name or a solver object with run(), got {type(solver).__name__}")
    return solver


def _action_and_init(problem: TwoLayerProblem, theory: str):
    if theory == "scaling":
        return SCALING_ACTION, jnp.ones((), dtype=problem.X.dtype)
    return ADAPTIVE_ACTION, problem.prior_covariance()


@eqx.filter_jit
def solve_problem(problem: TwoLayerProblem, theory: str = "adaptive", solver=None, *, init=None,
                  implicit: bool = True, linear_solver=None) -> Solution:
    """The jittable, vmappable core of :func:`solve` on a prepared :class:`TwoLayerProblem`.

    Every float leaf of ``problem`` (data, kappa2, s_w2, s_a2, gamma and the width N as a
    float) can be vmapped over or differentiated; derivatives of the solution come from the
    stationarity condition (implicit differentiation), not from the iterations.
    """
    _check_theory(theory)
    if theory == "gp":
        zero = jnp.zeros((), dtype=problem.X.dtype)
        return Solution(theory="gp", value=None, action=gp_action(problem), grad_norm=zero,
                        iterations=jnp.asarray(0), status=jnp.asarray(Status.SUCCESS, dtype=jnp.int32),
                        domain_margin=jnp.full((), jnp.nan, dtype=problem.X.dtype), stats={})
    action, default_init = _action_and_init(problem, theory)
    return minimise(action, _resolve_solver(solver), default_init if init is None else init, problem, theory,
                    implicit=implicit, linear_solver=linear_solver)


def solve(arch, data, kappa2, theory: str = "adaptive", solver=None, *, space: str = "auto", init=None,
          implicit: bool = True, linear_solver=None, **options) -> Solution:
    """Solve a theory's saddle point for a network on data.

    Args:
        arch: an ``FCN`` (one hidden layer here; deeper ones go to ``adaptive_kernels.deep``) or ``CNN``.
        data: a ``Dataset`` (X (P, d), y (P,) or (P, K)).
        kappa2: noise variance (the Langevin temperature), > 0.
        theory: ``"gp"``, ``"scaling"`` or ``"adaptive"``.
        solver: ``"fixed-point"`` (default, :class:`FixedPoint`: Anderson-accelerated iteration of the
            stationarity condition on Sigma^{-1}), ``"gradient"`` (:class:`QuasiNewton`: L-BFGS over a
            Cholesky factor + Newton polish) or a configured solver object.
        space: ``"auto"``, ``"weight"`` (d x d Woodbury form, linear phi) or ``"function"`` (P x P).
        init: initial order parameters (default: the prior, Sigma = (s_w2/n) I or s = 1).
        implicit: attach implicit derivatives w.r.t. arch's numeric fields, kappa2 and the data.
        linear_solver: lineax solver for the implicit derivatives' Hessian system.
        options: passed on to ``adaptive_kernels.deep.solve_deep`` for deep nets.

    Returns:
        a :class:`Solution`; ``value`` is Sigma (adaptive), s (scaling) or None (gp).
    """
    _check_theory(theory)
    if getattr(arch, "depth", 1) > 1:
        return _deep().solve_deep(arch, data, kappa2, theory, solver, space=space, init=init, implicit=implicit,
                                  **options)
    if options:
        raise TypeError(f"solve got unexpected options for a two-layer net: {', '.join(options)}")
    problem = two_layer_problem(arch, data, kappa2, space)
    return solve_problem(problem, theory, solver, init=init, implicit=implicit, linear_solver=linear_solver)


def _deep():
    try:
        from adaptive_kernels import deep
    except ImportError as err:  # the deep module is written by another part of the project
        raise ValueError(f"arch: depth > 1 needs adaptive_kernels.deep, which failed to import ({err})") from err
    return deep


def _kernel_functions(solution: Solution, problem: TwoLayerProblem):
    """(K(X1, X2), diag K(X1)) of a solution: the NNGP, s times the NNGP, or K_Sigma."""
    if solution.theory == "adaptive":
        Sigma, scale = solution.value, 1.0
    elif solution.theory in ("gp", "scaling"):
        Sigma, scale = problem.prior_covariance(), (solution.value if solution.theory == "scaling" else 1.0)
    else:
        raise ValueError(f"solution.theory {solution.theory!r} is not a two-layer theory")

    def kernel(X1=None, X2=None):
        return scale * problem.output_kernel(Sigma, X1, X2)

    def variance(X1):
        return scale * problem.output_variance(Sigma, X1)

    return kernel, variance


def predict(solution: Solution, arch, data, kappa2, X_test=None) -> Prediction:
    """Mean output and predictive variance of the GP with the solution's kernel.

    ``X_test`` defaults to ``data.X_test``; without test inputs only ``mean_train`` is given.
    """
    if getattr(arch, "depth", 1) > 1:
        return _deep().predict_deep(solution, arch, data, kappa2, X_test)
    problem = two_layer_problem(arch, data, kappa2, space="function")
    X_test = data.X_test if X_test is None else check_array("X_test", X_test, ndim=2, shape=(None, arch.d))
    kernel, variance = _kernel_functions(solution, problem)
    K = kernel()
    P = problem.P
    if X_test is None:
        mean = gp_predict(K, problem.y, problem.kappa2).mean
        return Prediction(mean_train=mean, mean_test=None, var_test=None, kernel=K)
    cross = jnp.concatenate([K, kernel(X_test, problem.X)], axis=0)
    diag = jnp.concatenate([jnp.diagonal(K), variance(X_test)])
    out = gp_predict(K, problem.y, problem.kappa2, K_cross=cross, K_test_diag=diag)
    return Prediction(mean_train=out.mean[:P], mean_test=out.mean[P:], var_test=out.variance[P:], kernel=K)


def _python(value):
    if is_traced(value):
        return value
    value = jnp.asarray(value)
    if value.dtype == jnp.bool_:
        return bool(value)
    if jnp.issubdtype(value.dtype, jnp.integer):
        return int(value)
    return float(value)


def summarize(solution: Solution, arch, data, kappa2, prediction: Prediction | None = None) -> dict:
    """A flat dict of scalar observables of a solution (THEORY.md sec. 6).

    Always: theory, converged, status, iterations, action, grad_norm, domain_margin,
    train_mse. With ``data.y_test``: learnability, test_mse. With 1-d targets:
    kernel_eigenvalue_ratio (of the P x P kernel along y) and kernel_target_alignment.
    Adaptive FCN with ``data.w_star``: eigenvalue_ratio of Sigma along the teacher.
    Scaling: scale (s). Values are Python scalars (arrays under jit/vmap).
    """
    prediction = predict(solution, arch, data, kappa2) if prediction is None else prediction
    y = jnp.asarray(data.y)
    out = {
        "theory": solution.theory,
        "converged": solution.converged,
        "status": solution.status,
        "iterations": solution.iterations,
        "action": solution.action,
        "grad_norm": solution.grad_norm,
        "domain_margin": solution.domain_margin,
        "train_mse": mse(prediction.mean_train, y),
    }
    if solution.theory == "scaling":
        out["scale"] = solution.value
    if data.y_test is not None and prediction.mean_test is not None:
        out["learnability"] = learnability(prediction.mean_test, data.y_test)
        out["test_mse"] = mse(prediction.mean_test, data.y_test)
    if y.ndim == 1:
        out["kernel_eigenvalue_ratio"] = eigenvalue_ratio(prediction.kernel, y)
        out["kernel_target_alignment"] = kernel_target_alignment(prediction.kernel, y)
    if solution.theory == "adaptive" and isinstance(arch, FCN) and data.w_star is not None:
        out["eigenvalue_ratio"] = eigenvalue_ratio(solution.value, data.w_star)
    return {k: (v if isinstance(v, str) else _python(v)) for k, v in out.items()}
