"""A saddle-point problem: data, noise and an architecture's numbers, for every depth (THEORY.md secs. 1-5).

:class:`Problem` holds the data, the noise kappa2 and the numeric hyper-parameters -- the widths N_l as *floats*
-- as array leaves, so that a solve can be jitted, vmapped over any of them and differentiated with respect to
any of them (implicit differentiation). The activation and the number of patches are static. One constructor,
:func:`make_problem`, builds it from an architecture (``FCN`` of any depth, or the two-layer ``CNN``) and a
``Dataset``; a two-layer net is the L = 1 case.

Its kernel maps are the architecture's (``kernels.network_layers``). With patches x_s (n = d/S entries; S = 1
for a fully connected net) and first-layer weights w ~ N(0, Sigma) (n x n), the two-layer output kernel is

    K_Sigma(x, x') = c (1/S) sum_s k_phi(x_s^T Sigma x_s, x_s^T Sigma x'_s, x'_s^T Sigma x'_s),
    c = s_a2 N**(1 - gamma),

whose value at the prior Sigma_0 = (s_w2/n) I is the NNGP kernel.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from adaptive_kernels._validation import check_array, check_positive, check_scales, check_widths, is_traced
from adaptive_kernels.activations import AbstractActivation
from adaptive_kernels.architectures import CNN, FCN, readout_scale
from adaptive_kernels.data import Dataset
from adaptive_kernels.gp import outputs
from adaptive_kernels.kernels import Kernel, input_kernel, network_layers, serial, split_patches


class Problem(eqx.Module):
    """Data, noise and hyper-parameters of a saddle-point problem.

    Attributes:
        X: training inputs (P, d).  y: targets (P,) or (P, m).
        kappa2, s_w2, s_a2, s_b2, gamma: float arrays.
        widths: (L,) float array, the hidden widths N_1..N_L (C for a CNN).
        activation: the nonlinearity phi.  patches: S (1 for a fully connected net).
        weights: None, or (P,) likelihood weights t_mu in [0, 1] (the tempered data term of ``gp.data_term``: a
            continuous number of data points, issue 17; :func:`with_weights`). Only some actions take them
            (:func:`check_unweighted`).
    """

    X: jnp.ndarray
    y: jnp.ndarray
    kappa2: jnp.ndarray
    s_w2: jnp.ndarray
    s_a2: jnp.ndarray
    s_b2: jnp.ndarray
    gamma: jnp.ndarray
    widths: jnp.ndarray
    activation: AbstractActivation
    patches: int = eqx.field(static=True, default=1)
    weights: jnp.ndarray | None = None

    @property
    def P(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def depth(self) -> int:
        return self.widths.shape[0]

    @property
    def patch_size(self) -> int:
        return self.d // self.patches

    @property
    def width(self):
        """N_L, the width the readout sees."""
        return self.widths[-1]

    @property
    def outputs(self) -> int:
        return outputs(self.y)

    @property
    def readout_scale(self):
        """c = s_a2 N_L**(1 - gamma)."""
        return readout_scale(self.s_a2, self.width, self.gamma)

    @property
    def prior_precision(self):
        """a = n/s_w2: the prior of one first-layer weight vector is N(0, I/a)."""
        return self.patch_size / self.s_w2

    def prior_covariance(self):
        """Sigma_0 = (s_w2/n) I_n, the covariance whose two-layer kernel is the NNGP."""
        return jnp.eye(self.patch_size, dtype=self.X.dtype) / self.prior_precision

    def split(self, X):
        """(P, d) -> (S, P, n) patches."""
        return split_patches(X, self.patches)

    def layers(self) -> tuple[tuple, tuple]:
        """(covariance layers, head) of the kernel map (``kernels.network_layers``)."""
        return network_layers(self.activation, self.s_w2, self.s_b2, self.depth, self.readout_scale)

    def two_layer_kernel(self, Sigma, X1=None, X2=None) -> Kernel:
        """K_Sigma between X1 (default: the training inputs) and X2 (default: X1, with the exact diagonal) as a
        :class:`~adaptive_kernels.kernels.Kernel` (``nngp`` the block, ``var1`` its row variances)."""
        X1 = self.X if X1 is None else X1
        return serial(*self.layers()[1])(input_kernel(self.split(X1), None if X2 is None else self.split(X2), Sigma))

    def nngp_kernel(self, X1=None, X2=None) -> Kernel:
        """The NNGP output kernel of any depth between X1 (default: the training inputs) and X2 (default X1)."""
        X1 = self.X if X1 is None else X1
        covariances, head = self.layers()
        return serial(*covariances, *head)(input_kernel(self.split(X1), None if X2 is None else self.split(X2)))

    def weight_space_factor(self, Sigma):
        """For linear phi, K_Sigma = Z Z^T with Z = sqrt(c/S) X (I_S (x) L), Sigma = L L^T (P x d)."""
        L = jnp.linalg.cholesky(Sigma)
        Z = jnp.einsum("spn,nm->psm", self.split(self.X), L).reshape(self.P, self.d)
        return jnp.sqrt(self.readout_scale / self.patches) * Z


def make_problem(arch: FCN | CNN, data, kappa2) -> Problem:
    """The :class:`Problem` of ``arch`` (an FCN of any depth or a CNN) on ``data`` (a Dataset) with noise kappa2.

    Every float leaf takes the data's float type (float32 data give a float32 problem). The input contract
    (``_validation``: real, non-empty, finite arrays; numbers within the float type's range) is checked here.
    """
    if not isinstance(arch, (FCN, CNN)):
        raise TypeError(f"arch must be an FCN or CNN, got {type(arch).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset, got {type(data).__name__}")
    check_positive("kappa2", kappa2)
    X = check_array("data.X", data.X, ndim=2, shape=(None, arch.d))
    y = check_array("data.y", data.y)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"data.y must have shape ({X.shape[0]},) or ({X.shape[0]}, m), got {y.shape}")
    dtype = X.dtype

    def leaf(v):
        return v if is_traced(v) else jnp.asarray(v, dtype=dtype)

    problem = Problem(
        X=X,
        y=y.astype(dtype),
        kappa2=leaf(kappa2),
        s_w2=leaf(arch.s_w2),
        s_a2=leaf(arch.s_a2),
        s_b2=leaf(arch.s_b2),
        gamma=leaf(arch.gamma),
        widths=jnp.asarray(check_widths(arch.widths, dtype), dtype=dtype),
        activation=arch.activation,
        patches=arch.patches,
    )
    check_scales(problem)
    return problem


def with_weights(problem: Problem, weights) -> Problem:
    """``problem`` with likelihood weights t_mu in [0, 1], one per training point (None: the plain likelihood).

    The tempered data term (``gp.data_term``) is smooth in t, equals the plain one at t = 1 and drops point mu
    (up to the constant (m/2) log kappa2) at t_mu = 0. Checked unless traced (a traced t, e.g. a continuous P in
    ``phases.arclength``, is taken as given)."""
    if weights is not None:
        if not is_traced(weights):
            weights = check_array("weights", weights, ndim=1, shape=(problem.P,))
            if not bool(jnp.all((weights >= 0) & (weights <= 1))):
                raise ValueError(f"weights must lie in [0, 1], got values in [{float(jnp.min(weights)):g}, "
                                 f"{float(jnp.max(weights)):g}]")
        weights = jnp.asarray(weights, problem.X.dtype)
    return eqx.tree_at(lambda p: p.weights, problem, weights, is_leaf=lambda x: x is None)


def check_unweighted(problem: Problem, what: str) -> None:
    """Raise a ValueError naming ``weights`` if ``problem`` has likelihood weights that ``what`` cannot take."""
    if problem.weights is not None:
        raise ValueError(f"weights: {what} does not take likelihood weights (the tempered data term is implemented "
                         "for the two-layer weight form (Gaussian ansatz) and the mixture ansatz, loops=0)")
