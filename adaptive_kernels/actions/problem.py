"""The numbers a two-layer action depends on, as one PyTree (THEORY.md secs. 1, 3, 4).

:class:`TwoLayerProblem` holds the data, the noise kappa2 and the architecture's numeric
hyper-parameters -- including the width N as a *float* -- as array leaves, so that a solve
can be jitted, vmapped over any of them and differentiated with respect to any of them
(implicit differentiation, ``adaptive_kernels.solvers.implicit``). The sizes, the
activation and the evaluation space are static.

A fully connected two-layer net is the one-patch case of the CNN (S = 1, n = d), so one
description covers both: with patches x_s (n = d/S entries each) and first-layer weights
w ~ N(0, Sigma) (n x n; the prior is Sigma_0 = (s_w2/n) I), the output kernel is

    K_Sigma(x, x') = c (1/S) sum_s k_phi(x_s^T Sigma x_s, x_s^T Sigma x'_s, x'_s^T Sigma x'_s),
    c = s_a2 N**(1 - gamma)

and the NNGP kernel is K_{Sigma_0}.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import check_array, check_positive, is_traced
from adaptive_kernels.activations import Activation
from adaptive_kernels.architectures import CNN, FCN

SPACES = ("auto", "weight", "function")


class TwoLayerProblem(eqx.Module):
    """Data, noise and hyper-parameters of a two-layer saddle-point problem.

    Attributes:
        X: training inputs (P, d).  y: targets (P,) or (P, K).
        kappa2, s_w2, s_a2, gamma, width: float arrays (width = N, or C for a CNN).
        activation: the nonlinearity phi.
        patches: S (1 for a fully connected net).
        space: ``"weight"`` (d x d Woodbury form, linear phi only) or ``"function"`` (P x P).
    """

    X: jnp.ndarray
    y: jnp.ndarray
    kappa2: jnp.ndarray
    s_w2: jnp.ndarray
    s_a2: jnp.ndarray
    gamma: jnp.ndarray
    width: jnp.ndarray
    activation: Activation
    patches: int = eqx.field(static=True)
    space: str = eqx.field(static=True)

    @property
    def P(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def patch_size(self) -> int:
        return self.d // self.patches

    @property
    def readout_scale(self):
        """c = s_a2 N**(1 - gamma)."""
        return self.s_a2 * self.width ** (1.0 - self.gamma)

    @property
    def prior_precision(self):
        """a = n/s_w2: the prior of one first-layer weight vector is N(0, I/a)."""
        return self.patch_size / self.s_w2

    def prior_covariance(self):
        """Sigma_0 = (s_w2/n) I_n, the covariance whose kernel is the NNGP."""
        return jnp.eye(self.patch_size, dtype=self.X.dtype) / self.prior_precision

    def split(self, X):
        """(P, d) -> (S, P, n) patches."""
        return jnp.swapaxes(X.reshape(X.shape[0], self.patches, self.patch_size), 0, 1)

    def output_kernel(self, Sigma, X1=None, X2=None):
        """K_Sigma(X1, X2) (P1, P2); X1 defaults to the training inputs, X2 to X1.

        The symmetric case (X2 omitted) uses the exact diagonal (``Activation.kernel_matrix``).
        """
        X1 = self.X if X1 is None else X1
        P1 = self.split(X1)
        act = self.activation
        if X2 is None:
            C = jnp.einsum("spn,nm,sqm->spq", P1, Sigma, P1)
            E = jax.vmap(act.kernel_matrix)(C)
        else:
            P2 = self.split(X2)
            C12 = jnp.einsum("spn,nm,sqm->spq", P1, Sigma, P2)
            d1 = jnp.einsum("spn,nm,spm->sp", P1, Sigma, P1)
            d2 = jnp.einsum("spn,nm,spm->sp", P2, Sigma, P2)
            E = act.expectation(d1[:, :, None], C12, d2[:, None, :])
        return self.readout_scale * jnp.mean(E, axis=0)

    def output_variance(self, Sigma, X1):
        """diag K_Sigma(X1, X1) (P1,): c (1/S) sum_s E[phi(u)^2], u ~ N(0, x_s^T Sigma x_s)."""
        P1 = self.split(X1)
        d1 = jnp.einsum("spn,nm,spm->sp", P1, Sigma, P1)
        return self.readout_scale * jnp.mean(self.activation.diagonal(d1), axis=0)

    def weight_space_factor(self, Sigma):
        """For linear phi, K_Sigma = Z Z^T with Z = sqrt(c/S) X (I_S (x) L), Sigma = L L^T (P x d)."""
        L = jnp.linalg.cholesky(Sigma)
        Z = jnp.einsum("spn,nm->psm", self.split(self.X), L).reshape(self.P, self.d)
        return jnp.sqrt(self.readout_scale / self.patches) * Z


def resolve_space(space: str, activation: Activation, P: int, d: int) -> str:
    """``"auto"``: weight space (cost d^3 + P d^2) for linear phi when d < P, else function
    space (cost P^3 + P^2 d). Weight space needs a linear phi (K_Sigma is then Z Z^T)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if space == "weight" and not activation.is_linear:
        raise ValueError(f"space='weight' needs a linear activation, got {activation.name!r}")
    if space == "auto":
        return "weight" if activation.is_linear and d < P else "function"
    return space


def two_layer_problem(arch: FCN | CNN, data, kappa2, space: str = "auto") -> TwoLayerProblem:
    """The :class:`TwoLayerProblem` of a one-hidden-layer ``arch`` on ``data`` (a Dataset)."""
    if not isinstance(arch, (FCN, CNN)):
        raise TypeError(f"arch must be an FCN or CNN, got {type(arch).__name__}")
    if arch.depth != 1:
        raise ValueError(f"arch must have one hidden layer here, got depth {arch.depth}")
    if isinstance(arch, FCN) and not is_traced(arch.s_b2) and float(arch.s_b2) != 0.0:
        raise ValueError("arch: biases (s_b2 > 0) are not supported by the two-layer theories")
    check_positive("kappa2", kappa2)
    X = check_array("data.X", data.X, ndim=2, shape=(None, arch.d))
    y = check_array("data.y", data.y)
    dtype = X.dtype

    def leaf(v):
        return v if is_traced(v) else jnp.asarray(v, dtype=dtype)

    return TwoLayerProblem(
        X=X,
        y=y.astype(dtype),
        kappa2=leaf(kappa2),
        s_w2=leaf(arch.s_w2),
        s_a2=leaf(arch.s_a2),
        gamma=leaf(arch.gamma),
        width=jnp.asarray(float(arch.width), dtype=dtype),
        activation=arch.activation,
        patches=arch.patches if isinstance(arch, CNN) else 1,
        space=resolve_space(space, arch.activation, X.shape[0], arch.d),
    )
