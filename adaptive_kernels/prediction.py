"""Predictions and observables of a solution (THEORY.md secs. 2, 6): the GP with the solution's output kernel.

    f(x*) = K(x*, X) (K + kappa2)^{-1} y,   var f(x*) = K(x*, x*) - K(x*, X) (K + kappa2)^{-1} K(X, x*)

(for the linear two-layer adaptive net the mean is c x*^T Sigma X^T t, t = (K_Sigma + kappa2)^{-1} y).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax.tree_util import Partial

from adaptive_kernels._validation import is_traced
from adaptive_kernels.actions import one_loop
from adaptive_kernels.gp import posterior
from adaptive_kernels.observables import eigenvalue_ratio, kernel_target_alignment, learnability, mse
from adaptive_kernels.problem import Problem
from adaptive_kernels.solvers.solution import Solution


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


def _gp_prediction(theory, value, problem: Problem, X_test) -> Prediction:
    K, K_cross, diag = theory.output_kernels(value, problem, X_test)
    P = problem.P
    if X_test is None:
        return Prediction(posterior(K, problem.y, problem.kappa2, K, weights=problem.weights).mean, None, None, K)
    out = posterior(K, problem.y, problem.kappa2, jnp.concatenate([K, K_cross]),
                    jnp.concatenate([jnp.diagonal(K), diag]), problem.weights)
    return Prediction(out.mean[:P], out.mean[P:], out.variance[P:], K)


def _weight_space_prediction(Sigma, problem: Problem, X_test) -> Prediction:
    """The GP prediction of a linear two-layer FCN in weight space, O(d^3 + P d + P* d^2) per evaluation besides the
    d x d Gram matrix B = X^T X, which does not depend on Sigma (push-through identity; Sigma positive definite):

        G = (kappa2 I + c Sigma B)^{-1} Sigma = c^{-1} (B + (kappa2/c) Sigma^{-1})^{-1},   g = c G X^T y,
        f(X) = X g,   f(x*) = x*^T g,   var f(x*) = kappa2 c x*^T G x*,

    equal to :func:`_gp_prediction` with K = c X Sigma X^T. Without the P x P kernel (linear in Sigma; the caller
    adds it), so that the one-loop moments take their m second derivatives at this cost, not through P x P
    Cholesky factors."""
    X, c, kappa2 = problem.X, problem.readout_scale, problem.kappa2
    eye = jnp.eye(problem.d, dtype=X.dtype)
    G = jnp.linalg.solve(kappa2 * eye + c * Sigma @ (X.T @ X), Sigma)
    g = c * G @ (X.T @ problem.y)
    if X_test is None:
        return Prediction(X @ g, None, None, None)
    return Prediction(X @ g, X_test @ g, kappa2 * c * jnp.sum((X_test @ G) * X_test, axis=1), None)


def _output_kernel(theory, value, problem: Problem):
    return theory.output_kernels(value, problem)[0]


def predict_problem(solution: Solution, problem: Problem, X_test=None) -> Prediction:
    """:class:`Prediction` of ``solution`` (solved by its ``theory``) on ``problem`` and test inputs ``X_test``.

    A one-loop theory (``loops=1``) averages the GP prediction over the order parameters' posterior: the means
    (and the kernel) get (1/2) tr(H^-1 Hess), the test variance also the variance of the mean over the order
    parameters (``actions.one_loop.moments``), plus what the test points' own fluctuations add
    (``theory.test_fluctuations``: the deep kernel form, ``actions.test_points``). For a linear two-layer FCN in
    weight space (``one_loop.has_structure``) the prediction is then taken in weight space
    (:func:`_weight_space_prediction`) and the kernel, linear in Sigma, is the kernel of the mean Sigma."""
    theory = solution.theory
    if getattr(theory, "loops", 0) and one_loop.has_structure(*theory.saddle_problem(problem)):
        fn = Partial(_weight_space_prediction, problem=problem, X_test=X_test)
        prediction, spread = theory.mean(fn, solution.value, problem)
        kernel = theory.mean(Partial(_output_kernel, theory, problem=problem), solution.value, problem, linear=True)[0]
        prediction = eqx.tree_at(lambda p: p.kernel, prediction, kernel, is_leaf=lambda x: x is None)
    else:
        fn = Partial(_gp_prediction, theory, problem=problem, X_test=X_test)
        prediction, spread = theory.mean(fn, solution.value, problem)
    if spread is not None and prediction.var_test is not None:
        prediction = eqx.tree_at(lambda p: p.var_test, prediction, prediction.var_test + spread.mean_test)
    fluctuations = None if X_test is None else theory.test_fluctuations(solution.value, problem, X_test)
    if fluctuations is not None:
        d_mean, d_var = fluctuations
        prediction = eqx.tree_at(lambda p: (p.mean_test, p.var_test), prediction,
                                 (prediction.mean_test + d_mean, prediction.var_test + d_var))
    return prediction


def _python(value):
    if value is None or isinstance(value, str) or is_traced(value):
        return value
    if isinstance(value, (list, tuple)):
        return [_python(v) for v in value]
    value = jnp.asarray(value)
    if value.dtype == jnp.bool_:
        return bool(value)
    if jnp.issubdtype(value.dtype, jnp.integer):
        return int(value)
    return float(value)


def python_scalars(out: dict) -> dict:
    """A dict of observables as Python scalars and per-layer lists; traced values (inside a compiled program) and
    strings pass through unchanged."""
    return {k: _python(v) for k, v in out.items()}


def observables(solution: Solution, problem: Problem, prediction: Prediction, y_test=None, w_star=None) -> dict:
    """A flat dict of observables of a solution (THEORY.md sec. 6), Python scalars and per-layer lists.

    Always: theory, converged, status, iterations, action, grad_norm, domain_margin, train_mse. With ``y_test``:
    learnability, test_mse. Per layer (lists, first to last hidden layer): ``kernel_eigenvalue_ratio`` and
    ``kernel_target_alignment`` of the layer's kernel K_l along y (1-d targets); ``eigenvalue_ratio`` of the layer's
    input-space covariance along ``w_star`` (two-layer FCNs; deep linear nets), where the theory has one.
    Scaling: ``scale`` (s, or the list of u_l).
    """
    theory = solution.theory
    out = {
        "theory": theory.name,
        "converged": solution.converged,
        "status": solution.status,
        "iterations": solution.iterations,
        "action": solution.action,
        "grad_norm": solution.grad_norm,
        "domain_margin": solution.domain_margin,
        "train_mse": mse(prediction.mean_train, problem.y),
    }
    if theory.name == "scaling":
        out["scale"] = solution.value
    if y_test is not None and prediction.mean_test is not None:
        out["learnability"] = learnability(prediction.mean_test, y_test)
        out["test_mse"] = mse(prediction.mean_test, y_test)
    y = problem.y
    if y.ndim == 1 and problem.P >= 2:
        kernels = theory.mean(Partial(type(theory).layer_kernels, theory, problem=problem), solution.value, problem,
                              theory.kernels_linear(problem))[0]
        out["kernel_eigenvalue_ratio"] = [eigenvalue_ratio(K, y) for K in kernels]
        out["kernel_target_alignment"] = [kernel_target_alignment(K, y) for K in kernels]
    covariances = theory.input_covariances(solution.value, problem)
    if covariances is not None:  # their posterior means
        covariances = theory.mean(Partial(type(theory).input_covariances, theory, problem=problem), solution.value,
                                  problem, theory.kernels_linear(problem))[0]
    if w_star is not None and covariances is not None and problem.d >= 2:
        out["eigenvalue_ratio"] = [eigenvalue_ratio(S, w_star) for S in covariances]
    return python_scalars(out)
