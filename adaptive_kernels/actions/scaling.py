"""Kernel-scaling action: one scalar per layer rescales the NNGP kernel (THEORY.md sec. 3).

For a linear two-layer net, f given the readout is a GP with kernel s K_NNGP where s = |a|^2 N**gamma/(s_a2 N)
has prior chi2_N/N, so the posterior of s is exact:

    S(s) = (N/2)(s - log s) + (1/2) y^T (s K + kappa2)^{-1} y + (1/2) log det(s K + kappa2)

Its saddle gives the mean output exactly as N -> infinity in every readout scaling (Li & Sompolinsky 2021;
Pacelli et al. 2023; Rubin et al. 2025). Deep nets: one scalar u_l per layer, kernel (prod_l u_l) K_NNGP,
entropy sum_l (N_l/2)(u_l - log u_l) (exact for deep linear nets; for nonlinear phi the same form with the NNGP
kernel is the heuristic of Pacelli et al.). Stationarity: 1/u_l = 1 + (2/N_l) dD/du_l.
The order parameters are a scalar for one hidden layer and a tuple of L scalars otherwise.

Only the scalar s = prod_l u_l multiplies a fixed kernel, so the kernel is diagonalised once,
K = U diag(lam) U^T (an eigendecomposition, or for a linear net, whose kernel alpha X X^T + beta is
Z Z^T with Z = [sqrt(alpha) X, sqrt(beta) 1], the SVD of that P x (d + 1) factor when d + 1 < P, with the
zero eigenvalues lumped), and with w_i = |(U^T y)_i|^2 (summed over the m outputs) every evaluation costs O(P)
(as in deepbays' ``FC_1HL``, Pacelli et al. 2023):

    D(s K) = (1/2) sum_i w_i / (s lam_i + kappa2) + (m/2) sum_i log(s lam_i + kappa2),
    d^n/ds^n d^j/dkappa2^j D = (1/2) (-1)^q q! sum_i w_i lam_i^n g_i^-(q+1)
                               + (m/2) (-1)^(q-1) (q-1)! sum_i lam_i^n g_i^-q,   g_i = s lam_i + kappa2, q = n + j >= 1

(the log term of q = 0 aside). Derivatives with respect to the kernel and the targets are never taken through the
eigenvectors (undefined where eigenvalues coincide, as the P - d zero eigenvalues of a linear kernel do): they come
from the same derivative written with one Cholesky factor of s K + kappa2 (``gp.quadratic_and_logdet_factored``),
which runs only when something differentiates with respect to K or y (implicit derivatives of a solution, the
gradient of its action); a solve without derivatives never forms it.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from adaptive_kernels.actions.base import EntropicAction
from adaptive_kernels.gp import outputs, quadratic_and_logdet_factored
from adaptive_kernels.problem import Problem


class Spectrum(eqx.Module):
    """K = sum_i lam_i u_i u_i^T seen by the targets: ``eigenvalues`` lam_i >= 0, ``weights`` w_i = |u_i^T y|^2
    summed over the outputs, ``multiplicities`` (one per eigenvalue; the lumped null space of a factor has P - r)."""

    eigenvalues: jnp.ndarray
    weights: jnp.ndarray
    multiplicities: jnp.ndarray


def kernel_spectrum(kernel, y, factor: bool) -> Spectrum:
    """The :class:`Spectrum` of K (P x P), or of K = Z Z^T from its factor Z (P x r, ``factor``), by one
    eigendecomposition (SVD of Z). Constants: no derivatives flow through it (module docstring)."""
    kernel, y = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(y)
    Y = y.reshape(y.shape[0], -1)
    if factor:
        U, sigma, _ = jnp.linalg.svd(kernel, full_matrices=False)
        Z = U.T @ Y
        rest = jnp.sum((Y - U @ Z) ** 2)  # the targets' part in the null space of K
        eigenvalues = jnp.concatenate([sigma**2, jnp.zeros((1,), sigma.dtype)])
        weights = jnp.concatenate([jnp.sum(Z**2, axis=1), rest[None]])
        multiplicities = jnp.concatenate([jnp.ones_like(sigma), jnp.full((1,), Y.shape[0] - sigma.shape[0], sigma.dtype)])
        return Spectrum(eigenvalues, weights, multiplicities)
    lam, U = jnp.linalg.eigh(kernel)
    return Spectrum(jnp.maximum(lam, 0), jnp.sum((U.T @ Y) ** 2, axis=1), jnp.ones_like(lam))


def _spectral_derivative(spectrum: Spectrum, s, kappa2, m: int, n: int, j: int):
    """d^n/ds^n d^j/dkappa2^j D(s K) from the spectrum, O(P) (module docstring)."""
    lam, w, mult = spectrum.eigenvalues, spectrum.weights, spectrum.multiplicities
    g = s * lam + kappa2
    q = n + j
    lam_n = lam**n if n else jnp.ones_like(lam)
    quadratic = 0.5 * (-1) ** q * math.factorial(q) * jnp.sum(w * lam_n / g ** (q + 1))
    if q == 0:
        return quadratic + 0.5 * m * jnp.sum(mult * jnp.log(g))
    return quadratic + 0.5 * m * (-1) ** (q - 1) * math.factorial(q - 1) * jnp.sum(mult * lam_n / g**q)


def _direct_data_term(s, kappa2, kernel, y):
    """D(s K) through one Cholesky factor of s K + kappa2, differentiable by JAX in every argument: the reference
    the spectral form's kernel and target derivatives are taken from."""
    A = s * kernel + kappa2 * jnp.eye(kernel.shape[0], dtype=kernel.dtype)
    quadratic, logdet = quadratic_and_logdet_factored(A, y)[0]
    return 0.5 * quadratic + 0.5 * outputs(y) * logdet


def _direct_derivative(s, kappa2, kernel, y, n: int, j: int):
    """d^n/ds^n d^j/dkappa2^j of :func:`_direct_data_term` (nested forward derivatives)."""
    def f(s_, k_):
        return _direct_data_term(s_, k_, kernel, y)

    for _ in range(n):
        f = (lambda g: lambda s_, k_: jax.jvp(lambda t: g(t, k_), (s_,), (jnp.ones_like(s_),))[1])(f)
    for _ in range(j):
        f = (lambda g: lambda s_, k_: jax.jvp(lambda t: g(s_, t), (k_,), (jnp.ones_like(k_),))[1])(f)
    return f(s, kappa2)


@eqx.filter_custom_jvp
def scaled_data_term(s, kappa2, kernel, y, spectrum, *, orders):
    """d^n/ds^n d^j/dkappa2^j D(s K), (n, j) = ``orders``, in O(P) from ``spectrum`` (the :class:`Spectrum` of
    ``kernel`` and ``y``; a constant). Derivatives: in s and kappa2 the next orders (O(P) each); in the kernel
    and y those of :func:`_direct_derivative` (one Cholesky factor), so derivatives of every order are exact."""
    return _spectral_derivative(spectrum, s, kappa2, outputs(y), *orders)


@scaled_data_term.def_jvp
def _scaled_data_term_jvp(primals, tangents, *, orders):
    s, kappa2, kernel, y, spectrum = primals
    t_s, t_kappa2, t_kernel, t_y, _ = tangents  # the spectrum is a constant
    n, j = orders
    value = scaled_data_term(s, kappa2, kernel, y, spectrum, orders=orders)
    tangent = jnp.zeros_like(value)
    if t_s is not None:
        tangent = tangent + scaled_data_term(s, kappa2, kernel, y, spectrum, orders=(n + 1, j)) * t_s
    if t_kappa2 is not None:
        tangent = tangent + scaled_data_term(s, kappa2, kernel, y, spectrum, orders=(n, j + 1)) * t_kappa2
    if t_kernel is not None or t_y is not None:
        t_kernel = jnp.zeros_like(kernel) if t_kernel is None else t_kernel
        t_y = jnp.zeros_like(y) if t_y is None else t_y
        tangent = tangent + jax.jvp(lambda K, Y: _direct_derivative(s, kappa2, K, Y, n, j),
                                    (kernel, y), (t_kernel, t_y))[1]
    return value, tangent


class ScaledKernel(eqx.Module):
    """The fixed kernel K (P x P) of kernel scaling, its :class:`Spectrum` and the rest of the action's inputs.

    Built from K, or (``low_rank``) from a factor Z (P x r) of K = Z Z^T, whose SVD gives the spectrum;
    ``spectrum``, when given, is used as it is (:func:`scaled_kernel` passes the one of a factor beside K).
    """

    kernel: jnp.ndarray
    y: jnp.ndarray
    kappa2: jnp.ndarray
    widths: jnp.ndarray
    spectrum: Spectrum

    def __init__(self, kernel, y, kappa2, widths, low_rank: bool = False, spectrum: Spectrum | None = None):
        self.spectrum = kernel_spectrum(kernel, y, low_rank) if spectrum is None else spectrum
        self.kernel = kernel @ kernel.T if low_rank else kernel
        self.y, self.kappa2, self.widths = y, kappa2, widths


def scaled_kernel(problem: Problem) -> ScaledKernel:
    """The NNGP kernel of ``problem`` and its spectrum. A linear net (FCN of any depth or CNN) has
    K(x, x') = alpha x.x' + beta (every layer map is affine in the input Gram matrix), with beta = K(0, 0) and
    alpha = K(e_1, e_1) - beta: for d + 1 < P the SVD of its factor [sqrt(alpha) X, sqrt(beta) 1] (P (d + 1)^2)
    replaces the P x P eigendecomposition."""
    K = problem.nngp_kernel().nngp
    spectrum = None
    if problem.activation.is_linear and problem.d + 1 < problem.P:
        probes = problem.nngp_kernel(jnp.eye(2, problem.d, k=-1, dtype=problem.X.dtype)).nngp  # x = 0 and e_1
        beta = probes[0, 0]
        alpha = probes[1, 1] - beta
        ones = jnp.ones((problem.P, 1), problem.X.dtype)
        factor = jnp.concatenate([jnp.sqrt(alpha) * problem.X, jnp.sqrt(beta) * ones], axis=1)
        spectrum = kernel_spectrum(factor, problem.y, factor=True)
    return ScaledKernel(K, problem.y, problem.kappa2, problem.widths, spectrum=spectrum)


def scales_like(widths, dtype):
    """Initial scales u_l = 1: a scalar for one layer, a tuple of L scalars otherwise."""
    ones = tuple(jnp.ones((), dtype) for _ in range(widths.shape[0]))
    return ones[0] if len(ones) == 1 else ones


class ScalarNewtonModel(eqx.Module):
    """The exact Jacobian J = dT/dLambda of the precision map T_l = 1 + (2/N_l) dD/du_l of the L scales, in the
    precisions Lambda_l = 1/u_l: J_lk = -(2/N_l) d^2D/du_l du_k u_k^2 (L x L, from O(P) derivatives)."""

    jacobian: jnp.ndarray
    descent_weights: jnp.ndarray  # N_l u_l^2: the gradient of S in Lambda is -(1/2) N_l u_l^2 R_l
    exact: bool = eqx.field(static=True, default=True)

    def newton_step(self, R):
        """delta with (I - J) delta = R; R itself where delta is not finite or not a descent direction of S."""
        r, unravel = ravel_pytree(R)
        eye = jnp.eye(r.size, dtype=r.dtype)
        delta = jnp.linalg.solve(eye - self.jacobian, r)
        ok = jnp.all(jnp.isfinite(delta)) & (jnp.sum(self.descent_weights * r * delta) > 0)
        return unravel(jnp.where(ok, delta, r))


class ScalingAction(EntropicAction):
    """S(u, scaled_kernel) = sum_l (N_l/2)(u_l - log u_l) + D((prod_l u_l) K), O(P) per evaluation."""

    def data_term(self, scales, args: ScaledKernel):
        s = jnp.prod(jnp.stack(jax.tree.leaves(scales)))
        return scaled_data_term(s, args.kappa2, args.kernel, args.y, args.spectrum, orders=(0, 0))

    def linearised_data_term(self, scales, args: ScaledKernel):
        """(D, dD/du, the exact Newton model :class:`ScalarNewtonModel`), all O(P)."""
        u, unravel = ravel_pytree(scales)

        def flat(v):
            return self.data_term(unravel(v), args)

        value, grad = jax.value_and_grad(flat)(u)
        hessian = jax.hessian(flat)(u)
        widths = args.widths.astype(u.dtype)
        model = ScalarNewtonModel(-(2 / widths)[:, None] * hessian * (u**2)[None, :], widths * u**2)
        return value, unravel(grad), model

    def prior(self, args: ScaledKernel):
        """s_l ~ chi2_{N_l}/N_l: weight N_l, precision 1."""
        weights = tuple(args.widths[i] for i in range(args.widths.shape[0]))
        ones = tuple(jnp.ones((), args.widths.dtype) for _ in weights)
        return (weights[0], ones[0]) if len(weights) == 1 else (weights, ones)
