"""Deep networks: MAP per-layer kernels and deep kernel scaling (THEORY.md sec. 3, 5).

Entry point :func:`solve_deep` (``adaptive_kernels.solve`` delegates ``arch.depth > 1`` here;
depth 1 works too and is the two-layer adaptive kernel). Theories and forms:

- ``theory="adaptive"`` (per-layer P x P kernels). By default the primal form
  sum_l N_l KL(N(0, Q_l) || N(0, I)) + D in whitened coordinates K_l = B_l Q_l B_l^T
  (G_l = B_l B_l^T) is minimised by the shared ``QuasiNewton`` solver (L-BFGS over Cholesky
  factors of Q_l, then Newton steps): valid for any P, N_l
  and d, including the proportional regime P > N_l and rank-deficient C_1 (P > d, linear).
  With a :class:`~adaptive_kernels.solvers.forward_backward.ForwardBackward` solver the
  conjugate form is solved by the forward-backward fixed point with a domain check at every
  step. Measured: it converges for one hidden layer (also mean-field, P > d: the THEORY.md
  sec. 5 domain example) and deep nets at gamma = 1, but in deep mean-field nets the valid
  saddle is not an attractor of the damped iteration (it then stops with LINE_SEARCH_FAILED,
  never a spurious point marked converged). ``form="input_space"``: linear nets, one d x d
  Sigma_l per layer. ``cumulant="second_order"``: the second-order cumulant expansion
  of the layer CGF instead of the Gaussian-equivalent log det (Fischer et al. 2024).
- ``theory="scaling"``: one scalar per layer, kernel (prod u_l) K_GP (Li & Sompolinsky 2021).
- ``theory="gp"``: the NNGP (no finite-width adaptation).

Predictions (:func:`predict_deep`): the test inputs are appended to X with zero conjugate
kernel on their rows and columns and the same forward pass is run; f(x*) = c K_L(x*, X) t.
Per-layer observables: :func:`deep_observables`, :func:`layer_kernels`, :func:`layer_spectra`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import check_array, check_positive, check_positive_int
from adaptive_kernels.actions import deep as act
from adaptive_kernels.api import Prediction
from adaptive_kernels.architectures import FCN
from adaptive_kernels.data import Dataset
from adaptive_kernels.gp import gp_predict
from adaptive_kernels.kernels import nngp
from adaptive_kernels.observables import eigenvalue_ratio, kernel_target_alignment, learnability, mse, spectrum
from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.solvers import FixedPoint, QuasiNewton, minimise
from adaptive_kernels.solvers.forward_backward import ForwardBackward, StepInfo, fixed_point_solve
from adaptive_kernels.solvers.solution import Solution, Status

THEORIES = ("gp", "scaling", "adaptive")
FORMS = ("conjugate", "primal", "input_space")
CUMULANTS = ("gaussian", "second_order")


class DeepKernels(eqx.Module):
    """Per-layer post-activation kernels K_1..K_L and their conjugates Kt_1..Kt_L (P x P each)."""

    kernels: tuple
    conjugates: tuple


# --- forward and backward passes ------------------------------------------------------------------
def _gaussian_forward(arch: FCN, X, conjugates):
    """Forward pass of the Gaussian-equivalent (exact for linear) action: LayerTerms per layer."""
    B = act.input_factor(arch, X)
    terms = []
    for layer, (N, Kt) in enumerate(zip(arch.widths, conjugates)):
        t = act.layer_terms(B, Kt, N)
        terms.append(t)
        if layer + 1 < arch.depth:
            if arch.activation.is_linear:
                B = act.linear_next_factor(arch, t.factor)
            else:
                B = act.jittered_cholesky(act.prior_kernel(arch, act.next_covariance(arch, t.kernel)))
    return terms


def _gaussian_step(conjugates, problem):
    """T({Kt}): forward pass for the kernels, then Kt_L = -dD/dK_L and Kt_l = dW_{l+1}/dK_l."""
    arch, X, y, kappa2 = problem
    terms = _gaussian_forward(arch, X, conjugates)
    out = act.output_terms(terms[-1].kernel, y, arch.readout_scale, kappa2)
    new = [out.conjugate]
    for layer in range(arch.depth - 2, -1, -1):
        grad_G = act.cgf_prior_gradient(conjugates[layer + 1], terms[layer + 1].kernel, arch.widths[layer + 1])
        new.insert(0, act.pullback(arch, terms[layer].kernel, grad_G))
    action = sum(jnp.sum(Kt * t.kernel) - t.cgf for Kt, t in zip(conjugates, terms)) + out.value
    in_domain = jnp.all(jnp.stack([t.in_domain for t in terms]))
    return tuple(new), StepInfo(in_domain=in_domain, action=action)


def _draws(key, samples, P, layer, dtype):
    return jax.random.normal(jax.random.fold_in(key, layer), (samples, P), dtype)


def _extend_draws(draws, P_new):
    """Monte Carlo draws for appended test points: with the Cholesky factor of C in the
    (train, test) order, the training block keeps its draws and its values."""
    key = jax.random.PRNGKey(P_new)
    return tuple(
        jnp.concatenate([z, jax.random.normal(jax.random.fold_in(key, i), (z.shape[0], P_new), z.dtype)], axis=1)
        for i, z in enumerate(draws)
    )


def _second_order_forward(arch: FCN, X, conjugates, draws):
    """Kernels K_l = dW2_l/dKt_l of the second-order cumulant action, layer by layer."""
    C = act.input_covariance(arch, X)
    kernels = []
    for N, Kt, z in zip(arch.widths, conjugates, draws):
        kernels.append(act.symmetrize(jax.grad(act.second_order_cgf, argnums=1)(arch, Kt, C, N, z)))
        C = act.next_covariance(arch, kernels[-1])
    return kernels


def _second_order_step(conjugates, problem):
    arch, X, y, kappa2, draws = problem
    kernels = _second_order_forward(arch, X, conjugates, draws)
    out = act.output_terms(kernels[-1], y, arch.readout_scale, kappa2)
    new = [out.conjugate]
    for layer in range(arch.depth - 2, -1, -1):
        N, z = arch.widths[layer + 1], draws[layer + 1]
        _, vjp = jax.vjp(lambda K: act.second_order_cgf(arch, new[0], act.next_covariance(arch, K), N, z), kernels[layer])
        new.insert(0, act.symmetrize(vjp(jnp.ones((), kernels[layer].dtype))[0]))
    C = act.input_covariance(arch, X)
    action = out.value
    for N, K, Kt, z in zip(arch.widths, kernels, conjugates, draws):
        action = action + jnp.sum(Kt * K) - act.second_order_cgf(arch, Kt, C, N, z)
        C = act.next_covariance(arch, K)
    in_domain = jnp.all(jnp.stack([jnp.all(jnp.isfinite(K)) for K in kernels]))
    return tuple(new), StepInfo(in_domain=in_domain, action=action)


# --- solvers for each form -------------------------------------------------------------------------------
def _in_dtype(arch: FCN, dtype) -> FCN:
    """The architecture's float hyper-parameters in ``dtype``: float32 data solve and predict in float32."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, arch)


def _zeros(arch, P, dtype):
    return tuple(jnp.zeros((P, P), dtype) for _ in arch.widths)


@eqx.filter_jit
def _solve_conjugate(arch, X, y, kappa2, solver, init):
    sol = fixed_point_solve(_gaussian_step, solver, init, (arch, X, y, kappa2), theory="deep_adaptive")
    terms = _gaussian_forward(arch, X, sol.value)
    margin = jnp.min(jnp.stack([act.domain_margin(t) for t in terms]))
    value = DeepKernels(kernels=tuple(t.kernel for t in terms), conjugates=sol.value)
    return eqx.tree_at(lambda s: (s.value, s.domain_margin), sol, (value, margin))


@eqx.filter_jit
def _solve_second_order(arch, X, y, kappa2, solver, init, key, samples):
    draws = tuple(_draws(key, samples, X.shape[0], layer, X.dtype) for layer in range(arch.depth))
    sol = fixed_point_solve(_second_order_step, solver, init, (arch, X, y, kappa2, draws), theory="deep_adaptive_second_order")
    kernels = _second_order_forward(arch, X, sol.value, draws)
    value = DeepKernels(kernels=tuple(kernels), conjugates=sol.value)
    return eqx.tree_at(lambda s: (s.value, s.stats), sol, (value, dict(sol.stats, draws=draws)))


def _entropic_solve(data_term, prior, solver, init, problem, theory, implicit):
    """Minimise entropy + ``data_term`` with the shared solvers (``solvers.minimise``)."""
    return minimise(EntropicAction(data_term=data_term, prior=prior), solver, init, problem, theory, implicit=implicit)


@eqx.filter_jit
def _solve_primal(arch, X, y, kappa2, solver, implicit):
    init = tuple(jnp.eye(r, dtype=X.dtype) for r in act.factor_ranks(arch, X.shape[0]))
    sol = _entropic_solve(act.whitened_data_term, act.layer_prior, solver, init, (arch, X, y, kappa2), "deep_adaptive", implicit)
    kernels = act.whitened_chain(arch, X, sol.value)
    value = DeepKernels(kernels=kernels, conjugates=act.backward_conjugates(arch, kernels, y, kappa2))
    return eqx.tree_at(lambda s: s.value, sol, value)


@eqx.filter_jit
def _solve_input_space(arch, X, y, kappa2, solver, implicit):
    init = tuple(arch.s_w2**layer / arch.d * jnp.eye(arch.d, dtype=X.dtype) for layer in range(1, arch.depth + 1))
    return _entropic_solve(
        act.input_space_data_term, act.input_space_prior, solver, init, (arch, X, y, kappa2), "deep_input_space", implicit
    )


@eqx.filter_jit
def _solve_scaling(arch, X, y, kappa2, solver, implicit):
    init = tuple(jnp.ones((), X.dtype) for _ in arch.widths)
    sol = _entropic_solve(act.scaling_data_term, act.layer_prior, solver, init, (arch, nngp(arch, X), y, kappa2), "deep_scaling", implicit)
    return eqx.tree_at(lambda s: s.value, sol, jnp.stack(sol.value))


@eqx.filter_jit
def _solve_gp(arch, X, y, kappa2):
    K = nngp(arch, X)
    return Solution(
        theory="gp", value=K, action=act.data_term(K, y, kappa2), grad_norm=jnp.zeros((), X.dtype),
        iterations=jnp.asarray(0), status=jnp.asarray(Status.SUCCESS, jnp.int32),
        domain_margin=jnp.asarray(jnp.nan, X.dtype), stats={},
    )


def _nngp_covariances(arch: FCN, X):
    C = act.input_covariance(arch, X)
    out = [C]
    for _ in range(arch.depth - 1):
        C = act.next_covariance(arch, act.prior_kernel(arch, C))
        out.append(C)
    return out


def _check_inputs(arch, data, kappa2):
    if not isinstance(arch, FCN):
        raise TypeError(f"arch must be an FCN for deep networks, got {type(arch).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset, got {type(data).__name__}")
    if data.d != arch.d:
        raise ValueError(f"data: inputs have d = {data.d}, but arch.d = {arch.d}")
    check_positive("kappa2", kappa2)
    return jnp.asarray(kappa2, data.X.dtype)


def _resolve_solver(solver, theory):
    """None / "gradient" -> QuasiNewton (L-BFGS); "fixed-point" -> ForwardBackward for the
    adaptive theory (the shared FixedPoint for scaling); solver objects pass through."""
    if solver is None or solver == "gradient":
        return QuasiNewton()
    if solver == "fixed-point":
        return ForwardBackward() if theory == "adaptive" else FixedPoint()
    if isinstance(solver, str):
        raise ValueError(f"solver: unknown {solver!r}; choose gradient, fixed-point or a solver object")
    if not isinstance(solver, (ForwardBackward, QuasiNewton, FixedPoint)):
        raise TypeError(f"solver: expected ForwardBackward, QuasiNewton or FixedPoint, got {type(solver).__name__}")
    return solver


def solve_deep(
    arch: FCN,
    data: Dataset,
    kappa2,
    theory: str = "adaptive",
    solver=None,
    *,
    form: str | None = None,
    space: str = "auto",
    cumulant: str = "gaussian",
    cumulant_samples: int = 20000,
    key=None,
    init=None,
    implicit: bool = False,
) -> Solution:
    """MAP kernels of a deep FCN (any depth L >= 1, any gamma).

    Args:
        arch: the :class:`FCN`.  data: training set (y (P,) or (P, K)).  kappa2: noise variance.
        theory: ``"adaptive"`` (per-layer kernels), ``"scaling"`` (one scalar per layer) or
            ``"gp"`` (NNGP).
        solver: ``None`` / ``"gradient"`` (:class:`~adaptive_kernels.solvers.QuasiNewton`,
            L-BFGS over Cholesky factors), ``"fixed-point"`` or a :class:`ForwardBackward`
            (conjugate form), or a configured QuasiNewton / FixedPoint (entropic forms).
        space: ``"auto"``, ``"function"`` (P x P kernels) or ``"weight"`` (= ``form="input_space"``),
            the two-layer API's switch; ``form`` wins when both are given.
        form: ``"primal"`` (default: whitened primal K_l = B_l Q_l B_l^T, any P, N_l, d),
            ``"conjugate"`` (default with a ForwardBackward solver) or ``"input_space"``
            (linear nets without bias, any P).
        cumulant: ``"gaussian"`` (exact for linear phi, Gaussian-equivalent otherwise) or
            ``"second_order"`` (conjugate form only; Monte Carlo four-point moments with
            ``cumulant_samples`` fixed draws from ``key``).
        init: initial conjugate kernels (tuple of L P x P matrices) for the conjugate form;
            zeros (the NNGP) by default.
        implicit: attach implicit derivatives w.r.t. arch, kappa2 and the data (entropic forms).

    Returns:
        :class:`Solution`; ``value`` is a :class:`DeepKernels` (adaptive), the d x d Sigma_l
        tuple (input space), the scales u_l (scaling) or the NNGP kernel (gp).
        ``domain_margin``: smallest eigenvalue of I - (2/N_l) G_l^1/2 Kt_l G_l^1/2 over layers
        (conjugate form); of the order parameters (Q_l, Sigma_l or u_l) for the entropic forms.
    """
    kappa2 = _check_inputs(arch, data, kappa2)
    X, y = data.X, data.y
    arch = _in_dtype(arch, X.dtype)
    if theory not in THEORIES:
        raise ValueError(f"theory: unknown {theory!r}; choose one of {', '.join(THEORIES)}")
    if cumulant not in CUMULANTS:
        raise ValueError(f"cumulant: unknown {cumulant!r}; choose one of {', '.join(CUMULANTS)}")
    if space not in ("auto", "function", "weight"):
        raise ValueError(f"space: unknown {space!r}; choose one of auto, function, weight")
    if theory == "gp":
        return _solve_gp(arch, X, y, kappa2)
    solver = _resolve_solver(solver, theory)
    if theory == "scaling":
        if isinstance(solver, ForwardBackward):
            raise TypeError("solver: theory 'scaling' takes QuasiNewton or FixedPoint, got ForwardBackward")
        return _solve_scaling(arch, X, y, kappa2, solver, implicit)
    if form is None:
        form = "input_space" if space == "weight" else "conjugate" if isinstance(solver, ForwardBackward) else "primal"
    if form not in FORMS:
        raise ValueError(f"form: unknown {form!r}; choose one of {', '.join(FORMS)}")
    if (form == "conjugate") != isinstance(solver, ForwardBackward):
        raise TypeError(f"solver: form {form!r} takes {'a ForwardBackward' if form == 'conjugate' else 'QuasiNewton or FixedPoint'} solver, got {type(solver).__name__}")
    if cumulant == "second_order" and form != "conjugate":
        raise ValueError("cumulant: 'second_order' is available for the conjugate form only")
    if form == "conjugate":
        if init is None:
            init = _zeros(arch, data.P, X.dtype)
        else:
            if len(init) != arch.depth:
                raise ValueError(f"init must hold {arch.depth} conjugate kernels, got {len(init)}")
            init = tuple(check_array(f"init[{i}]", K, ndim=2, shape=(data.P, data.P)) for i, K in enumerate(init))
        if cumulant == "second_order":
            check_positive_int("cumulant_samples", cumulant_samples)
            key = jax.random.PRNGKey(0) if key is None else key
            return _solve_second_order(arch, X, y, kappa2, solver, init, key, cumulant_samples)
        return _solve_conjugate(arch, X, y, kappa2, solver, init)
    if form == "input_space":
        if not arch.activation.is_linear:
            raise ValueError("form: 'input_space' needs a linear activation")
        return _solve_input_space(arch, X, y, kappa2, solver, implicit)
    return _solve_primal(arch, X, y, kappa2, solver, implicit)


# --- predictions and observables -----------------------------------------------------------------
def _padded(conjugates, P_all):
    P = conjugates[0].shape[0]
    return tuple(jnp.zeros((P_all, P_all), K.dtype).at[:P, :P].set(K) for K in conjugates)


def layer_kernels(solution: Solution, arch: FCN, X, X_test=None) -> tuple:
    """Per-layer post-activation kernels K_1..K_L of a solution on [X; X_test].

    Test inputs are appended with zero conjugate kernel on their rows and columns and the same
    forward pass is run (THEORY.md sec. 5). Kernel scaling: K_l = (u_1 ... u_l) K_phi(C_l^GP)
    (the per-layer renormalisation of a linear net); gp: the NNGP kernels K_phi(C_l^GP);
    input space: K_l = X Sigma_l X^T.
    """
    X_all = X if X_test is None else jnp.concatenate([X, X_test])
    theory = solution.theory
    if theory == "deep_adaptive":
        conjugates = _padded(solution.value.conjugates, X_all.shape[0])
        return tuple(t.kernel for t in _gaussian_forward(arch, X_all, conjugates))
    if theory == "deep_adaptive_second_order":
        draws = solution.stats["draws"]
        if X_test is not None:
            draws = _extend_draws(draws, X_test.shape[0])
        return tuple(_second_order_forward(arch, X_all, _padded(solution.value.conjugates, X_all.shape[0]), draws))
    if theory == "deep_input_space":
        return tuple(X_all @ S @ X_all.T for S in solution.value)
    nngp_kernels = [act.prior_kernel(arch, C) for C in _nngp_covariances(arch, X_all)]
    if theory == "deep_scaling":
        return tuple(jnp.prod(solution.value[: i + 1]) * K for i, K in enumerate(nngp_kernels))
    if theory == "gp":
        return tuple(nngp_kernels)
    raise ValueError(f"solution: theory {theory!r} is not a deep-network solution")


def predict_deep(solution: Solution, arch: FCN, data: Dataset, kappa2, X_test=None) -> Prediction:
    """Mean output f = c K_L(x, X) (c K_L + kappa2)^{-1} y on the training inputs and on
    ``X_test`` (default ``data.X_test``), and the predictive variance on the test inputs."""
    kappa2 = _check_inputs(arch, data, kappa2)
    X_test = data.X_test if X_test is None else check_array("X_test", X_test, ndim=2, shape=(None, arch.d))
    arch = _in_dtype(arch, data.X.dtype)
    P = data.P
    K_out = arch.readout_scale * layer_kernels(solution, arch, data.X, X_test)[-1]
    train = gp_predict(K_out[:P, :P], data.y, kappa2, K_cross=K_out[:P, :P], K_test_diag=None)
    if X_test is None:
        return Prediction(mean_train=train.mean, mean_test=None, var_test=None, kernel=K_out)
    test = gp_predict(K_out[:P, :P], data.y, kappa2, K_cross=K_out[P:, :P], K_test_diag=jnp.diagonal(K_out)[P:])
    return Prediction(mean_train=train.mean, mean_test=test.mean, var_test=test.variance, kernel=K_out[:P, :P])


def layer_spectra(solution: Solution, arch: FCN, X) -> tuple:
    """Eigenvalues (descending) of each layer's kernel on the training inputs."""
    return tuple(spectrum(K) for K in layer_kernels(solution, arch, X))


def deep_observables(solution: Solution, arch: FCN, data: Dataset, kappa2) -> dict:
    """Scalar observables (THEORY.md sec. 6): learnability and MSE of the mean output on the
    test set (when ``data`` has one), train MSE, per-layer eigenvalue ratio of K_l along the
    target vector y and kernel-target alignment (``eigenvalue_ratio_1..L``, ``alignment_1..L``;
    first output column for multi-output y), and the solver's action, status and margin."""
    pred = predict_deep(solution, arch, data, kappa2)
    y = data.y if data.y.ndim == 1 else data.y[:, 0]
    out = {
        "action": float(solution.action),
        "converged": bool(solution.converged),
        "iterations": int(solution.iterations),
        "grad_norm": float(solution.grad_norm),
        "domain_margin": float(solution.domain_margin),
        "train_mse": float(mse(pred.mean_train, data.y)),
    }
    if data.y_test is not None:
        out["learnability"] = float(learnability(pred.mean_test, data.y_test))
        out["test_mse"] = float(mse(pred.mean_test, data.y_test))
    for layer, K in enumerate(layer_kernels(solution, arch, data.X), start=1):
        out[f"eigenvalue_ratio_{layer}"] = float(eigenvalue_ratio(K, y))
        out[f"alignment_{layer}"] = float(kernel_target_alignment(K, y))
    return out
