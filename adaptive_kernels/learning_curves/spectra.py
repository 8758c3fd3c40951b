"""A kernel's spectrum with respect to a data measure, and a target's power in its eigenbasis.

Mercer decomposition with respect to the input distribution mu (THEORY.md sec. 7):

    E_{x'~mu}[k(x, x') phi_i(x')] = lambda_i phi_i(x),   E_mu[phi_i phi_j] = delta_ij,
    f*(x) = sum_i v_i phi_i(x),   v_i = E_mu[f* phi_i].

The lambda_i are eigenvalues of the integral operator of the *probability* measure, so GP
regression on P samples with ridge kappa2, (K + kappa2 I)^{-1}, learns mode i roughly when
P lambda_i > kappa2. Two ways to get them:

- :func:`empirical_spectrum` (Nystrom): M samples of mu, eigenvalues of K/M, coefficients
  v_i = u_i.y/sqrt(M) (u_i the unit eigenvectors of K), for any kernel function.
- :func:`sphere_spectrum`: dot-product kernels k(x.x'/d) on the sphere of radius sqrt(d)
  (``data.sphere_inputs``). Funk-Hecke: the degree-k spherical harmonics (multiplicity
  N(d, k)) share the eigenvalue lambda_k = E_t[k(t) Q_k(t)] / sqrt(N(d, k)), with Q_k the
  Gegenbauer polynomial normalised to E_t[Q_k^2] = 1 (``data.gegenbauer_normalised``) and t
  of density ∝ (1 - t^2)^{(d-3)/2} (Gauss-Jacobi quadrature). A target
  sum_k c_k Q_k(w.x/|x|) (``data.polynomial_sphere_teacher``) has power c_k^2 in degree k.
  (Q_k(w.x/|x|) is a unit-norm degree-k harmonic; the addition theorem gives
  sum_j Y_kj(x)Y_kj(x') = sqrt(N(d,k)) Q_k(t).)
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from adaptive_kernels._validation import check_array, check_nonnegative, check_positive_int, is_traced
from adaptive_kernels.architectures import CNN, FCN
from adaptive_kernels.data import gegenbauer_normalised
from adaptive_kernels.kernels import nngp


class Spectrum(eqx.Module):
    """Eigenvalues of a kernel's integral operator and a target's power per eigenspace.

    Attributes:
        eigenvalues: (M,) lambda_i >= 0 (any order).
        multiplicity: (M,) how many orthonormal modes share lambda_i (1 for a Nystrom
            spectrum, N(d, k) for degree k on the sphere).
        target_power: (M,) total target power in the eigenspace, sum over its modes (and
            over output columns) of v^2.
        trace_rest: kernel trace E[k(x,x)] not carried by the listed modes (a truncated
            spectrum's tail); treated as infinitely many infinitesimal modes, never learned.
        target_rest: target power outside the listed modes (never learned).
    """

    eigenvalues: jnp.ndarray
    multiplicity: jnp.ndarray
    target_power: jnp.ndarray
    trace_rest: jnp.ndarray
    target_rest: jnp.ndarray

    def __init__(self, eigenvalues, target_power, multiplicity=None, trace_rest=0.0, target_rest=0.0):
        lam = check_array("eigenvalues", eigenvalues, ndim=1)
        power = check_array("target_power", target_power, ndim=1)
        if not is_traced(lam) and not is_traced(power) and power.shape != lam.shape:
            raise ValueError(
                f"target_power must have one entry per eigenvalue ({lam.shape[0]}), got {power.shape[0]}"
            )
        mult = jnp.ones_like(lam) if multiplicity is None else check_array("multiplicity", multiplicity, ndim=1)
        if not is_traced(mult) and mult.shape != lam.shape:
            raise ValueError(f"multiplicity must have one entry per eigenvalue ({lam.shape[0]}), got {mult.shape[0]}")
        for name, arr in (("eigenvalues", lam), ("target_power", power)):
            if not is_traced(arr) and arr.size and float(jnp.min(arr)) < 0:
                raise ValueError(f"{name} must be non-negative, got minimum {float(jnp.min(arr)):.3e}")
        if not is_traced(mult) and mult.size and float(jnp.min(mult)) <= 0:
            raise ValueError(f"multiplicity must be positive, got minimum {float(jnp.min(mult))}")
        check_nonnegative("trace_rest", trace_rest)
        check_nonnegative("target_rest", target_rest)
        self.eigenvalues = lam
        self.multiplicity = mult.astype(lam.dtype)
        self.target_power = power.astype(lam.dtype)
        self.trace_rest = jnp.asarray(trace_rest, dtype=lam.dtype)
        self.target_rest = jnp.asarray(target_rest, dtype=lam.dtype)

    @property
    def trace(self):
        """E_mu[k(x, x)] = sum_i m_i lambda_i + trace_rest."""
        return jnp.sum(self.multiplicity * self.eigenvalues) + self.trace_rest

    @property
    def target_norm2(self):
        """E_mu[f*^2] = sum_i target_power_i + target_rest."""
        return jnp.sum(self.target_power) + self.target_rest


class NNGPKernel(eqx.Module):
    """The NNGP kernel of an architecture as a callable k(X1, X2) (a PyTree, jit/vmap friendly)."""

    arch: FCN | CNN

    def __call__(self, X1, X2):
        return nngp(self.arch, X1, X2)


KernelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def as_kernel(kernel) -> KernelFn:
    """An architecture (its NNGP kernel) or a callable k(X1, X2) -> (n1, n2) matrix."""
    if isinstance(kernel, (FCN, CNN)):
        return NNGPKernel(kernel)
    if callable(kernel):
        return kernel
    raise TypeError(f"kernel must be an FCN, a CNN or a callable k(X1, X2), got {type(kernel).__name__}")


def empirical_spectrum(kernel, X, y, psd_rtol: float = 1e-8) -> tuple[Spectrum, jnp.ndarray]:
    """Nystrom spectrum of ``kernel`` on the empirical measure of the M samples ``X``.

    lambda_i = eigenvalues of K/M (descending), v_i = u_i.y/sqrt(M), target_power_i = |v_i|^2
    (summed over columns of a (M, K) target). Returns the :class:`Spectrum` and the
    eigenfunctions at the samples, phi_i(x_mu) = sqrt(M) U_{mu i}, shape (M, M).

    Raises if K has an eigenvalue below -psd_rtol * M * max eigenvalue (not a kernel);
    smaller negative round-off is set to zero.
    """
    kernel = as_kernel(kernel)
    X = check_array("X", X, ndim=2)
    y = check_array("y", y)
    M = X.shape[0]
    if y.ndim not in (1, 2) or y.shape[0] != M:
        raise ValueError(f"y must have {M} rows to match X, got shape {y.shape}")
    K = kernel(X, X)
    lam, U = jnp.linalg.eigh((K + K.T) / (2 * M))
    lam, U = lam[::-1], U[:, ::-1]
    if not is_traced(lam) and float(lam[-1]) < -psd_rtol * M * max(float(lam[0]), 0.0):
        raise ValueError(f"kernel is not positive semi-definite on X: eigenvalue {float(lam[-1]):.3e} of K/M")
    coeffs = (U.T @ y) / jnp.sqrt(M)
    power = coeffs**2 if coeffs.ndim == 1 else jnp.sum(coeffs**2, axis=1)
    return Spectrum(jnp.clip(lam, 0.0), power), jnp.sqrt(M) * U


def harmonic_multiplicity(d: int, k: int) -> int:
    """N(d, k): the number of degree-k spherical harmonics on S^{d-1}."""
    if k == 0:
        return 1
    return int(round((2 * k + d - 2) / k * special.comb(k + d - 3, k - 1, exact=True)))


def dot_product_profile(kernel, d: int) -> Callable:
    """t -> k(x, x') for |x|^2 = |x'|^2 = d and x.x'/d = t, from a kernel on R^d (vectorised over t)."""
    kernel = as_kernel(kernel)
    if isinstance(kernel, NNGPKernel) and not isinstance(kernel.arch, FCN):
        raise TypeError("kernel: a dot-product profile needs an FCN (a CNN kernel is not a function of x.x')")
    e1 = jnp.zeros(d).at[0].set(jnp.sqrt(d))

    def profile(t):
        t = jnp.asarray(t)
        x2 = jnp.zeros(t.shape + (d,)).at[..., 0].set(jnp.sqrt(d) * t).at[..., 1].set(jnp.sqrt(d * (1 - t**2)))
        flat = x2.reshape(-1, d)
        vals = jax.vmap(lambda x: kernel(e1[None], x[None])[0, 0])(flat)
        return vals.reshape(t.shape)

    return profile


def sphere_spectrum(
    kernel,
    d: int,
    max_degree: int,
    target_coefficients=None,
    quadrature_points: int | None = None,
) -> Spectrum:
    """Funk-Hecke spectrum of a dot-product kernel on the sphere of radius sqrt(d).

    lambda_k = E_t[k(t) Q_k(t)] / sqrt(N(d, k)), k = 0..max_degree, multiplicity N(d, k), by
    Gauss-Jacobi quadrature (alpha = beta = (d-3)/2) of the density of t = x.x'/d.

    Args:
        kernel: an FCN (its NNGP) or a callable k(X1, X2) on R^d; for a kernel given as its
            profile t -> k(t), use :func:`sphere_spectrum_from_profile`.
        d: input dimension (>= 3).
        max_degree: highest degree listed; the rest of the trace, k(1) - sum_k N_k lambda_k,
            becomes ``trace_rest``.
        target_coefficients: c_k of the target sum_k c_k Q_k(w.x/|x|) (length <= max_degree+1);
            target power c_k^2 in degree k. None: no target (zeros).
        quadrature_points: Gauss-Jacobi nodes (default max(256, 4 max_degree)).
    """
    return sphere_spectrum_from_profile(
        dot_product_profile(kernel, d), d, max_degree, target_coefficients, quadrature_points
    )


def sphere_spectrum_from_profile(
    profile: Callable, d: int, max_degree: int, target_coefficients=None, quadrature_points: int | None = None
) -> Spectrum:
    """:func:`sphere_spectrum` for a kernel given as its profile t -> k(t), t = x.x'/d in [-1, 1]."""
    d = check_positive_int("d", d)
    if d < 3:
        raise ValueError(f"d must be at least 3 for the Funk-Hecke spectrum, got {d}")
    if isinstance(max_degree, bool) or not isinstance(max_degree, (int, np.integer)) or max_degree < 0:
        raise ValueError(f"max_degree must be a non-negative integer, got {max_degree!r}")
    n = check_positive_int("quadrature_points", quadrature_points or max(256, 4 * max_degree))
    a = (d - 3) / 2
    t, w = special.roots_jacobi(n, a, a)
    w = w / w.sum()
    degrees = np.arange(max_degree + 1)
    mult = np.array([harmonic_multiplicity(d, int(k)) for k in degrees], dtype=float)
    Q = np.stack([gegenbauer_normalised(int(k), d, t) for k in degrees])  # (K, n)
    k_t = profile(jnp.asarray(t))
    lam = jnp.asarray(Q * w / np.sqrt(mult)[:, None]) @ k_t
    lam = jnp.clip(lam, 0.0)  # odd/even degrees a kernel lacks come out as +-round-off
    k_one = profile(jnp.asarray(1.0))
    trace_rest = jnp.clip(k_one - jnp.sum(jnp.asarray(mult) * lam), 0.0)
    power = np.zeros(max_degree + 1)
    if target_coefficients is not None:
        c = np.asarray(target_coefficients, dtype=float)
        if c.ndim != 1 or c.shape[0] > max_degree + 1:
            raise ValueError(
                f"target_coefficients must be 1-D with at most max_degree + 1 = {max_degree + 1} entries, got shape {c.shape}"
            )
        power[: c.shape[0]] = c**2
    return Spectrum(lam, jnp.asarray(power), multiplicity=jnp.asarray(mult), trace_rest=trace_rest)
