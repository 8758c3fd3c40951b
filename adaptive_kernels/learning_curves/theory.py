"""Learning-curve theories: test error and learnability of GP regression vs P (THEORY.md sec. 7).

Normalisation: lambda_i are eigenvalues of the kernel's integral operator under the input
*probability* measure (:mod:`.spectra`), P training points, GP regression with ridge kappa2,
f = k*^T (K + kappa2 I)^{-1} y; target power p_i = v_i^2 per eigenspace, m_i modes each.

Effective ridge / eigenlearning (Canatar, Bordelon & Pehlevan 2021, Nat. Commun. 12, 2914;
Simon, Dickens, Karkada & DeWeese 2021, "The eigenlearning framework"): delta > 0 solves

    sum_i m_i lambda_i / (lambda_i + delta) + kappa2 / delta = P            (THEORY.md sec. 7)

(equivalently kappa_eff = P delta = kappa2 + kappa_eff sum_i m_i lambda_i/(P lambda_i + kappa_eff),
Canatar et al.'s form). Mode learnability L_i = lambda_i/(lambda_i + delta); overfitting factor
1/(1 - gamma), gamma = sum_i m_i L_i^2 / P; test error against the clean target, with label
noise of variance noise_var on the training targets,

    E = (sum_i (1 - L_i)^2 p_i + p_rest + noise_var) / (1 - gamma) - noise_var,

(Simon et al.'s test MSE with noisy test labels minus the test-label noise, = Canatar et al.'s
E_g), and the target's learnability E[f.f*]/|f*|^2 = sum_i L_i p_i / sum p.

Equivalent kernel (Sollich & Williams 2005; Cohen, Malka & Ringel 2021, PRR 3, 023034): the
data-averaged predictor in the continuum limit, L_i = lambda_i/(lambda_i + kappa2/P), test error
sum_i (1 - L_i)^2 p_i + p_rest (bias only: no fluctuations over data draws, no ridge
renormalisation). It becomes exact once P lambda_i >> kappa2 for every mode that carries
kernel trace, i.e. once the unlearned trace is small next to kappa2.

Wilsonian RG with a learnability cut-off (Howard, Jefferson, Maiti & Ringel 2024,
arXiv:2405.06008, "Wilsonian renormalization of neural network Gaussian processes"): split
f = f_< + f_>; integrating out the Gaussian modes f_> exactly turns the ridge into
kappa2 I + K_>(X, X), and for many weak modes K_>(X, X) ≈ (sum_> m_i lambda_i) I (its diagonal
mean; the off-diagonal fluctuations are the paper's perturbative corrections, dropped here),
so in our normalisation

    kappa2_eff = kappa2 + trace_rest + sum_{i integrated out} m_i lambda_i.

Which modes are integrated out is set self-consistently by a learnability cut-off l_c: mode i is
integrated out iff its equivalent-kernel learnability at the renormalised ridge,
lambda_i/(lambda_i + kappa2_eff/P), is below l_c, i.e. P lambda_i < r kappa2_eff with
r = l_c/(1 - l_c). The remaining modes are learned with the equivalent kernel at kappa2_eff;
integrated-out modes have L_i = 0. The cut can have several self-consistent solutions; the
Wilsonian one flows from the UV: with eigenvalues in decreasing order, modes are integrated out
from the smallest up while P lambda_j < r (kappa2 + trace_rest + tail_{j+1}) (tail_{j+1}: the
trace of the modes below j, already integrated out), and the flow stops at the first mode that
is learnable. This is the smallest fixed point, the one the monotone iteration
kappa2_eff <- kappa2 + trace_rest + sum_{P lambda_i < r kappa2_eff} m_i lambda_i reaches from
kappa2; it is found in one vectorised pass.

All three take ``P`` as a scalar or an array (vectorised with vmap) and are differentiable in
the spectrum and kappa2 (the effective-ridge root gets its gradient by the implicit function
theorem, via one Newton step from the stopped bisection root).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._validation import check_in_range, check_nonnegative, check_positive, is_traced
from adaptive_kernels.learning_curves.spectra import Spectrum

BISECTION_STEPS = 80  # in log(delta) over a bracket of width log(1 + trace/kappa2): exact to round-off


class LearningCurvePrediction(eqx.Module):
    """A theory's prediction at each P (arrays with a leading P axis when P is an array).

    Attributes:
        theory: ``"eigenlearning"``, ``"equivalent_kernel"`` or ``"rg"``.
        P: the training-set sizes.
        ridge: the (renormalised) ridge in kappa2 units: P delta (eigenlearning), kappa2
            (equivalent kernel), kappa2_eff (RG).
        mode_learnability: L_i, shape (..., M).
        test_error: E[(f - f*)^2] under the data measure, averaged over data draws.
        learnability: E[f.f*]/E[f*^2] of the target.
    """

    theory: str = eqx.field(static=True)
    P: jnp.ndarray
    ridge: jnp.ndarray
    mode_learnability: jnp.ndarray
    test_error: jnp.ndarray
    learnability: jnp.ndarray


def _check(spectrum, P, kappa2, noise_var=0.0):
    if not isinstance(spectrum, Spectrum):
        raise TypeError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
    check_positive("kappa2", kappa2)
    check_nonnegative("noise_var", noise_var)
    P_arr = jnp.asarray(P, dtype=spectrum.eigenvalues.dtype)
    if not is_traced(P):
        P_np = np.asarray(P)
        if P_np.ndim > 1:
            raise ValueError(f"P must be a scalar or a 1-D array, got shape {P_np.shape}")
        if not np.issubdtype(P_np.dtype, np.number) or not np.all(np.isfinite(P_np)) or np.any(P_np <= 0):
            raise ValueError(f"P must be positive and finite, got {P}")
    return P_arr, jnp.asarray(kappa2, dtype=spectrum.eigenvalues.dtype)


def _over_P(fn, P):
    return jax.vmap(fn)(P) if P.ndim == 1 else fn(P)


def _learned_error(spectrum: Spectrum, L):
    """Bias term sum_i (1 - L_i)^2 p_i + p_rest and the target learnability sum_i L_i p_i / sum p."""
    bias = jnp.sum((1 - L) ** 2 * spectrum.target_power) + spectrum.target_rest
    learn = jnp.sum(L * spectrum.target_power) / spectrum.target_norm2
    return bias, learn


def _eigenlearning_residual(log_delta, spectrum: Spectrum, P, kappa2):
    """sum_i m_i lambda_i/(lambda_i + delta) + (kappa2 + trace_rest)/delta - P, decreasing in delta."""
    delta = jnp.exp(log_delta)
    lam = spectrum.eigenvalues
    return jnp.sum(spectrum.multiplicity * lam / (lam + delta)) + (kappa2 + spectrum.trace_rest) / delta - P


def effective_ridge(spectrum: Spectrum, P, kappa2):
    """delta(P) of the eigenlearning equation (module docstring); P scalar or 1-D array.

    The root lies in [kappa2/P, (kappa2 + trace)/P] (the residual is >= 0 at the lower end and
    <= 0 at the upper end), so bisection in log(delta) always converges; the result carries
    implicit-function-theorem gradients in ``spectrum`` and ``kappa2``.
    """
    P, kappa2 = _check(spectrum, P, kappa2)

    def solve(P_):
        stopped = jax.lax.stop_gradient((spectrum, P_, kappa2))
        lo = jnp.log(stopped[2] / P_)
        hi = jnp.log((stopped[2] + stopped[0].trace) / P_)

        def halve(_, bracket):
            lo_, hi_ = bracket
            mid = 0.5 * (lo_ + hi_)
            positive = _eigenlearning_residual(mid, *stopped) > 0
            return jnp.where(positive, mid, lo_), jnp.where(positive, hi_, mid)

        lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (lo, hi))
        root = jax.lax.stop_gradient(0.5 * (lo + hi))
        # One Newton step with live parameters: value unchanged at the root, derivative = implicit one.
        residual = _eigenlearning_residual(root, spectrum, P_, kappa2)
        slope = jax.grad(_eigenlearning_residual)(root, *stopped)
        return jnp.exp(root - residual / slope)

    return _over_P(solve, P)


def eigenlearning(spectrum: Spectrum, P, kappa2, noise_var=0.0) -> LearningCurvePrediction:
    """Effective-ridge (eigenlearning) prediction of the learning curve; see the module docstring."""
    P, kappa2 = _check(spectrum, P, kappa2, noise_var)
    delta = effective_ridge(spectrum, P, kappa2)

    def at(P_, delta_):
        lam = spectrum.eigenvalues
        L = lam / (lam + delta_)
        gamma = jnp.sum(spectrum.multiplicity * L**2) / P_
        bias, learn = _learned_error(spectrum, L)
        error = (bias + noise_var) / (1 - gamma) - noise_var
        return P_ * delta_, L, error, learn

    ridge, L, error, learn = jax.vmap(at)(P, delta) if P.ndim == 1 else at(P, delta)
    return LearningCurvePrediction("eigenlearning", P, ridge, L, error, learn)


def _equivalent_kernel_at(spectrum: Spectrum, P, ridge, keep):
    lam = spectrum.eigenvalues
    L = jnp.where(keep, lam / (lam + ridge / P), 0.0)
    bias, learn = _learned_error(spectrum, L)
    return ridge, L, bias, learn


def equivalent_kernel(spectrum: Spectrum, P, kappa2) -> LearningCurvePrediction:
    """Equivalent-kernel prediction: L_i = lambda_i/(lambda_i + kappa2/P), bias-only error."""
    P, kappa2 = _check(spectrum, P, kappa2)
    keep = jnp.ones_like(spectrum.eigenvalues, dtype=bool)
    ridge, L, error, learn = _over_P(
        lambda P_: _equivalent_kernel_at(spectrum, P_, kappa2, keep), P
    )
    return LearningCurvePrediction("equivalent_kernel", P, jnp.broadcast_to(ridge, P.shape), L, error, learn)


def renormalised_ridge(spectrum: Spectrum, P, kappa2, cutoff=0.5):
    """kappa2_eff(P) and the kept-mode mask of the Wilsonian RG (module docstring).

    ``cutoff`` is the learnability l_c in (0, 1) below which a mode is integrated out.
    Returns (kappa2_eff, keep) with keep of shape (..., M).
    """
    P, kappa2 = _check(spectrum, P, kappa2)
    check_in_range("cutoff", cutoff, 0.0, 1.0)
    if not is_traced(cutoff) and not 0 < float(cutoff) < 1:
        raise ValueError(f"cutoff must lie strictly between 0 and 1, got {cutoff}")
    ratio = cutoff / (1 - cutoff)
    lam = spectrum.eigenvalues
    order = jnp.argsort(-lam)
    lam_sorted = lam[order]
    weight = (spectrum.multiplicity * lam)[order]
    below = jnp.cumsum(weight[::-1])[::-1] - weight  # below[j] = sum_{i > j} m_i lambda_i (sorted)
    index = jnp.arange(lam.shape[0])

    def at(P_):
        base = kappa2 + spectrum.trace_rest
        learnable = P_ * lam_sorted >= ratio * (base + below)
        n_keep = jnp.max(jnp.where(learnable, index + 1, 0))  # the flow stops at the last learnable mode
        kept_sorted = index < n_keep
        dropped_trace = jnp.sum(jnp.where(kept_sorted, 0.0, weight))
        keep = jnp.zeros_like(kept_sorted).at[order].set(kept_sorted)
        return base + dropped_trace, keep

    return _over_P(at, P)


def wilsonian_rg(spectrum: Spectrum, P, kappa2, cutoff=0.5) -> LearningCurvePrediction:
    """RG prediction: kept modes by the equivalent kernel at kappa2_eff, the rest unlearned."""
    P, kappa2 = _check(spectrum, P, kappa2)
    kappa2_eff, keep = renormalised_ridge(spectrum, P, kappa2, cutoff)
    fn = lambda P_, r_, k_: _equivalent_kernel_at(spectrum, P_, r_, k_)  # noqa: E731
    ridge, L, error, learn = jax.vmap(fn)(P, kappa2_eff, keep) if P.ndim == 1 else fn(P, kappa2_eff, keep)
    return LearningCurvePrediction("rg", P, ridge, L, error, learn)


THEORIES = {"eigenlearning": eigenlearning, "equivalent_kernel": equivalent_kernel, "rg": wilsonian_rg}


def predict_learning_curve(spectrum: Spectrum, P, kappa2, theory: str = "eigenlearning", **options):
    """Dispatch to one of :data:`THEORIES` (options: ``noise_var`` for eigenlearning, ``cutoff`` for rg)."""
    if theory not in THEORIES:
        raise ValueError(f"theory: unknown {theory!r}; choose one of {', '.join(THEORIES)}")
    return THEORIES[theory](spectrum, P, kappa2, **options)


def optimal_ridge(spectrum: Spectrum, P, kappa2_grid, noise_var=0.0):
    """The kappa2 on ``kappa2_grid`` minimising the eigenlearning test error at each P.

    Returns (best kappa2, predicted errors of shape (len(grid),) + P.shape). Equivalent-kernel and
    RG errors are bias-only (they decrease monotonically as kappa2 -> 0), so only eigenlearning,
    which carries the variance over data draws, can pick a ridge.
    """
    grid = jnp.asarray(kappa2_grid, dtype=spectrum.eigenvalues.dtype)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"kappa2_grid must be a 1-D array of at least 2 values, got shape {grid.shape}")
    if not is_traced(grid) and float(jnp.min(grid)) <= 0:
        raise ValueError(f"kappa2_grid must be positive, got minimum {float(jnp.min(grid))}")
    P, _ = _check(spectrum, P, grid[0], noise_var)
    errors = jax.vmap(lambda k: eigenlearning(spectrum, P, k, noise_var).test_error)(grid)
    return grid[jnp.argmin(errors, axis=0)], errors
