"""Two-layer adaptive-kernel action with the Gaussian ansatz (THEORY.md sec. 4).

Integrate the readout out and treat the N first-layer weight vectors as drawn from
N(0, Sigma) (d x d for a fully connected net, n x n for the shared CNN filters); the
large-N saddle is the minimum of

    S(Sigma) = (N/2)[(n/s_w2) tr Sigma - log det Sigma]
             + (1/2) y^T (K_Sigma + kappa2)^{-1} y + (1/2) log det(K_Sigma + kappa2)
    K_Sigma(x, x') = c (1/S) sum_s k_phi(x_s^T Sigma x_s, x_s^T Sigma x'_s, x'_s^T Sigma x'_s)

with c = s_a2 N**(1 - gamma) (Seroussi, Naveh & Ringel 2023; Rubin et al. 2025). For a
linear phi the stationarity condition is
    Sigma^{-1} = (d/s_w2) I - (c/N) X^T (t t^T - A) X,   A = (K_Sigma + kappa2)^{-1}, t = A y,
and for any phi it is the gradient of S (``EntropicAction.target_precision``). Two evaluations of D: function
space (the P x P kernel, one Cholesky, cost P^3 + P^2 d) and, for linear phi, weight space (K_Sigma = Z Z^T,
Woodbury, cost d^3 + P d^2).

Newton model of the precision iteration Lambda <- T(Lambda) = (n/s_w2) I + (2/N) dD/dSigma
(:class:`LinearisedPrecisionMap`): keep the Gaussian-equivalent linear part of the kernel,
K ~ Xt Sigma Xt^T with Xt = diag(sqrt(c) E[phi'(u_mu)]) X, u_mu ~ N(0, x_mu^T Sigma x_mu)
(the first Hermite term of k_phi; exact for a linear phi). Then, with B = Xt^T A Xt,
V = Xt^T A Y (d x m for m outputs) and dSigma = -Sigma dLambda Sigma (differentiating
T = aI + (1/N) Xt^T (m A - A Y Y^T A) Xt, dA = -A Xt dSigma Xt^T A),

    J[dLambda] = (1/N) [m B Sigma dLambda Sigma B - B Sigma dLambda Sigma V V^T - V V^T Sigma dLambda Sigma B].

Measured at the issue-4 size (erf, d = 50, P = N = 1000, gamma = 2, cubic teacher): the 30 largest
eigenvalues of the true Jacobian (Arnoldi) lie in [-5.8, -4.5], plus one at -15.7, so the plain map
expands the residual along them (at d = 20, P = 400 the full spectrum shows ~d such modes and 190
eigenvalues below 0.1 in size: the V V^T terms);
after the Newton model, the iteration's Jacobian I - (I - J_model)^{-1}(I - J) has eigenvalues
<= 0.34 (15 leading ones by Arnoldi: one at 0.33, the rest 0.13-0.18), and 19 evaluations reach a
residual of 1e-10 instead of 37.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.gp import data_term, data_term_low_rank, data_term_with_gradient
from adaptive_kernels.problem import Problem

SPACES = ("auto", "weight", "function")


def resolve_space(space: str, problem: Problem) -> str:
    """``"auto"``: weight space (cost d^3 + P d^2) for linear phi when d < P, else function space (cost
    P^3 + P^2 d). Weight space needs a linear phi (K_Sigma is then Z Z^T)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    linear = problem.activation.is_linear
    if space == "weight" and not linear:
        raise ValueError(f"space='weight' needs a linear activation, got {problem.activation.name!r}")
    if space == "auto":
        return "weight" if linear and problem.d < problem.P else "function"
    return space


class LinearisedPrecisionMap(eqx.Module):
    """The module docstring's J for one fully connected layer; :meth:`newton_step` solves (I - J) delta = R.

    Held in the coordinates of a factor Sigma = F F^T, where B and V enter only as C = F^T B F and
    F^T V (what both evaluation spaces give directly).

    Attributes: F (d, d) lower triangular; C = F^T B F (d, d); FV = F^T V (d, m), B = Xt^T A Xt,
    V = Xt^T A Y; width N; outputs m; exact: whether J is the exact Jacobian (linear phi), so that
    its Newton steps need no acceleration.
    """

    F: jnp.ndarray
    C: jnp.ndarray
    FV: jnp.ndarray
    width: jnp.ndarray
    outputs: int = eqx.field(static=True)
    exact: bool = eqx.field(static=True)

    def newton_step(self, R):
        """delta with delta - J[delta] = R, in O(d^3 + (dm)^3); R itself where the model gives no descent step.

        With C = U diag(lam) U^T, Om = U^T F^T V and primes for U^T F^T (.) F U, the equation reads
        delta'_ij D_ij + s sum_k (lam_i Z_ik Om_jk + Om_ik lam_j Z_jk) = R'_ij with
        D_ij = 1 - s m lam_i lam_j, s = 1/N and Z = delta' Om: a (dm x dm) linear system for Z, then delta'.
        Accepted when every D_ij > 0 (the model is positive definite along the Kronecker modes), the
        result is finite and tr(Sigma R Sigma delta) > 0 (a descent direction of S, whose gradient in
        Lambda is -(N/2) Sigma R Sigma).
        """
        s = 1.0 / self.width
        F = self.F
        lam, U = jnp.linalg.eigh(self.C)
        G = F @ U  # delta' = G^T delta G
        Om = U.T @ self.FV
        Rp = G.T @ R @ G
        D = 1 - s * self.outputs * lam[:, None] * lam[None, :]
        d, k = Om.shape
        H = jnp.einsum("jk,jl,ij->ikl", Om, Om, 1 / D)
        system = (jnp.eye(d * k, dtype=R.dtype) + s * (
            jnp.einsum("ij,i,ikl->ikjl", jnp.eye(d, dtype=R.dtype), lam, H)
            + jnp.einsum("il,j,jk,ij->ikjl", Om, lam, Om, 1 / D)
        ).reshape(d * k, d * k))
        Z = jnp.linalg.solve(system, ((Rp / D) @ Om).reshape(d * k)).reshape(d, k)
        LZ = lam[:, None] * Z
        dp = (Rp - s * (LZ @ Om.T + Om @ LZ.T)) / D
        half = jsl.solve_triangular(F.T, U @ dp @ U.T, lower=False)  # F^-T U delta' U^T
        delta = jsl.solve_triangular(F.T, half.T, lower=False)  # ... F^-1
        delta = 0.5 * (delta + delta.T)
        Sigma = F @ F.T
        ok = (jnp.min(D) > 0) & jnp.all(jnp.isfinite(delta)) & (jnp.sum(Sigma @ R @ Sigma * delta) > 0)
        return jnp.where(ok, delta, R)


class TwoLayerAdaptiveAction(EntropicAction):
    """S(Sigma, problem) of the module docstring, Sigma positive definite (n x n), D evaluated in ``space``
    (``"weight"`` or ``"function"``; see :func:`resolve_space`)."""

    space: str = eqx.field(static=True)

    def data_term(self, Sigma, problem: Problem):
        """D, or with ``problem.weights`` the tempered D_t (``gp.data_term``)."""
        if self.space == "weight":
            return data_term_low_rank(problem.weight_space_factor(Sigma), problem.y, problem.kappa2,
                                      problem.weights)[0]
        return data_term(problem.two_layer_kernel(Sigma).nngp, problem.y, problem.kappa2, problem.weights)

    def prior(self, problem: Problem):
        """N weight vectors with prior N(0, (s_w2/n) I): weight N, precision n/s_w2."""
        return problem.width, problem.prior_precision

    def linearised_data_term(self, Sigma, problem: Problem):
        """(D, dD/dSigma, :class:`LinearisedPrecisionMap` or None), reusing the evaluation's factorisations.

        Function space: one Cholesky factor L of K_Sigma + kappa2 gives D, its closed-form gradient and
        C = F^T B F = W^T W with W = L^-1 Xt F (one triangular solve with d right-hand sides). Weight space
        (linear phi, K = Z Z^T, Z = sqrt(c) X F): C = Z^T A Z = I - kappa2 (kappa2 I + Z^T Z)^{-1} and
        F^T V = Z^T t = alpha from the Woodbury factors. A CNN (several patches) or a tempered data term
        (``problem.weights``) gets no model.
        """
        if problem.patches != 1 or problem.weights is not None:
            return super().linearised_data_term(Sigma, problem)
        F = jnp.linalg.cholesky(Sigma)
        if self.space == "weight":
            def term(S):
                return data_term_low_rank(problem.weight_space_factor(S), problem.y, problem.kappa2)

            (value, (factor, alpha)), grad = jax.value_and_grad(term, has_aux=True)(Sigma)
            eye = jnp.eye(F.shape[0], dtype=F.dtype)
            C = eye - problem.kappa2 * jsl.cho_solve((factor, True), eye)
            FV = alpha.reshape(alpha.shape[0], -1)
        else:
            K, kernel_pullback = jax.vjp(lambda S: problem.two_layer_kernel(S).nngp, Sigma)
            value, dK, (factor, t) = data_term_with_gradient(K, problem.y, problem.kappa2)
            (grad,) = kernel_pullback(dK)
            X = problem.X
            q = jnp.einsum("pi,ij,pj->p", X, Sigma, X)
            slope2 = problem.activation.derivative_expectation(q, jnp.zeros_like(q), q)  # E[phi'(u)]^2
            XtF = jnp.sqrt(problem.readout_scale * slope2)[:, None] * (X @ F)
            W = jsl.solve_triangular(factor, XtF, lower=True)
            C, FV = W.T @ W, XtF.T @ t.reshape(t.shape[0], -1)
        model = LinearisedPrecisionMap(F=F, C=0.5 * (C + C.T), FV=FV, width=problem.width, outputs=FV.shape[1],
                                       exact=problem.activation.is_linear)
        return value, grad, model
