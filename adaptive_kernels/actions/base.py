"""Actions of the form  entropy + data term  over positive-definite order parameters.

Every two-layer action of THEORY.md secs. 3-4 (and the input-space deep versions) reads

    S(Sigma) = sum_l (N_l/2) [a_l tr Sigma_l - log det Sigma_l] + D(Sigma)

with one positive-definite matrix Sigma_l per leaf of a PyTree (a scalar leaf is a 1 x 1
matrix: the kernel-scaling factor s), N_l its multiplicity (the width) and a_l its prior
precision. The entropy is N_l times KL(N(0, Sigma_l) || N(0, I/a_l)) up to a constant
(the large-N Wishart rate function). Its stationarity condition

    Sigma_l^{-1} = a_l I + (2/N_l) dD/dSigma_l

is what the fixed-point solver iterates; the gradient solver only needs ``__call__``. An action
may also supply a model of that iteration's Jacobian (``linearised_data_term``), with which the
fixed-point solver takes Newton steps instead of plain ones.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


def as_matrix(leaf):
    """A scalar order parameter as a 1 x 1 matrix; matrices unchanged."""
    return jnp.reshape(leaf, (1, 1)) if jnp.ndim(leaf) == 0 else leaf


def gaussian_entropy(Sigma, weight, precision):
    """(N/2) [a tr Sigma - log det Sigma] for one leaf (NaN if Sigma is not positive definite)."""
    M = as_matrix(Sigma)
    L = jnp.linalg.cholesky(M)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
    return 0.5 * weight * (precision * jnp.trace(M) - logdet)


class EntropicAction(eqx.Module):
    """S(Sigma, args) = sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + data_term(Sigma, args).

    Attributes:
        data_term: ``(Sigma, args) -> scalar``, the data part D (pure, differentiable).
        prior: ``args -> (weights, precisions)``, two PyTrees with Sigma's structure whose
            leaves are the scalars N_l and a_l.
        linearised_data_term: optional ``(Sigma, args) -> (D, dD/dSigma, model)`` from one pass
            (sharing its factorisations), where ``model`` is None or has ``newton_step(R)``: the
            solution delta of (I - J) delta = R for a model J of the Jacobian dT/dLambda of the
            precision map T (a PyTree like Sigma), and a static ``exact``: whether J is exact.
            None: D and its gradient by autodiff, no model.
    """

    data_term: Callable = eqx.field(static=True)
    prior: Callable = eqx.field(static=True)
    linearised_data_term: Callable | None = eqx.field(static=True, default=None)

    def entropy(self, Sigma, args):
        weights, precisions = self.prior(args)
        terms = jax.tree.map(gaussian_entropy, Sigma, weights, precisions)
        return sum(jax.tree.leaves(terms))

    def __call__(self, Sigma, args):
        return self.entropy(Sigma, args) + self.data_term(Sigma, args)

    def prior_covariance(self, args, like):
        """Sigma_l = I/a_l, shaped like the PyTree ``like`` (the usual initial point)."""
        _, precisions = self.prior(args)

        def leaf(x, a):
            n = as_matrix(x).shape[0]
            return (jnp.eye(n, dtype=jnp.result_type(x)) / a).reshape(jnp.shape(x))

        return jax.tree.map(leaf, like, precisions)

    def target_precision(self, Sigma, args):
        """a_l I + (2/N_l) sym(dD/dSigma_l): the right-hand side of the stationarity condition."""
        return self.value_and_target_precision(Sigma, args)[1]

    def value_and_target_precision(self, Sigma, args):
        """(S(Sigma), target precisions) from one evaluation of D and its gradient."""
        return self.fixed_point_terms(Sigma, args)[:2]

    def fixed_point_terms(self, Sigma, args):
        """(S(Sigma), target precisions, Jacobian model or None) from one evaluation of D and its gradient."""
        weights, precisions = self.prior(args)
        if self.linearised_data_term is None:
            data, grads = jax.value_and_grad(self.data_term)(Sigma, args)
            model = None
        else:
            data, grads, model = self.linearised_data_term(Sigma, args)

        def leaf(g, w, a):
            G = as_matrix(g)
            return a * jnp.eye(G.shape[0], dtype=G.dtype) + (G + G.T) / w

        return self.entropy(Sigma, args) + data, jax.tree.map(leaf, grads, weights, precisions), model
