"""Actions of the form  entropy + data term  over positive-definite order parameters.

Every minimisation form of the theories (THEORY.md secs. 3-5) reads

    S(Sigma) = sum_l (N_l/2) [a_l tr Sigma_l - log det Sigma_l] + D(Sigma)

with one positive-definite matrix Sigma_l per leaf of a PyTree (a scalar leaf is a 1 x 1 matrix: a
kernel-scaling factor), N_l its multiplicity (the width) and a_l its prior precision. The entropy is N_l times
KL(N(0, Sigma_l) || N(0, I/a_l)) up to a constant (the large-N Wishart rate function). Its stationarity condition

    Sigma_l^{-1} = a_l I + (2/N_l) dD/dSigma_l

is what the fixed-point solvers iterate: :class:`PrecisionMap` is that condition as a map on the precisions
Lambda = Sigma^{-1}; the quasi-Newton solver only needs ``__call__``. An action may also supply a model of that
iteration's Jacobian (:meth:`EntropicAction.linearised_data_term`), with which the ``Newton`` rule takes Newton
steps.

Every problem the solvers solve is an :class:`AbstractFixedPointProblem`: a map T whose fixed points are the
stationary points of an action, in coordinates of its own, reporting with T(x) a :class:`StepInfo` (whether x is
in the domain, the merit a step must not increase, the stationarity residual, the action). A minimisation becomes
its :class:`PrecisionMap` (merit: the action, which the step T(x) - x descends even where the map expands the
residual, as in mean-field scaling: to first order dS = -(N/2) eta tr(R Sigma R Sigma), R = T - Lambda); a saddle
such as the deep forward-backward equations (``actions.deep.ConjugateMap``) is a map of its own (merit: the
residual |T(x) - x|).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.gp import logdet_from_cholesky


def as_matrix(leaf):
    """A scalar order parameter as a 1 x 1 matrix; matrices unchanged."""
    return jnp.reshape(leaf, (1, 1)) if jnp.ndim(leaf) == 0 else leaf


def gaussian_entropy(Sigma, weight, precision):
    """(N/2) [a tr Sigma - log det Sigma] for one leaf (NaN if Sigma is not positive definite)."""
    M = as_matrix(Sigma)
    return 0.5 * weight * (precision * jnp.trace(M) - logdet_from_cholesky(jnp.linalg.cholesky(M)))


class EntropicAction(eqx.Module):
    """S(Sigma, args) = sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + data_term(Sigma, args)."""

    @abc.abstractmethod
    def data_term(self, Sigma, args):
        """D (pure, differentiable)."""

    @abc.abstractmethod
    def prior(self, args):
        """(weights, precisions): two PyTrees with Sigma's structure whose leaves are the scalars N_l and a_l."""

    def linearised_data_term(self, Sigma, args):
        """(D, dD/dSigma, model) from one pass (sharing its factorisations). ``model`` is None or has
        ``newton_step(R)``, the solution delta of (I - J) delta = R for a model J of the Jacobian dT/dLambda of
        the precision map T, and a static ``exact`` (whether J is exact). Default: autodiff, no model."""
        value, grads = jax.value_and_grad(self.data_term)(Sigma, args)
        return value, grads, None

    def entropy(self, Sigma, args):
        weights, precisions = self.prior(args)
        return sum(jax.tree.leaves(jax.tree.map(gaussian_entropy, Sigma, weights, precisions)))

    def __call__(self, Sigma, args):
        return self.entropy(Sigma, args) + self.data_term(Sigma, args)

    def prior_covariance(self, args, like):
        """Sigma_l = I/a_l, shaped like the PyTree ``like``."""
        _, precisions = self.prior(args)

        def leaf(x, a):
            n = as_matrix(x).shape[0]
            return (jnp.eye(n, dtype=jnp.result_type(x)) / a).reshape(jnp.shape(x))

        return jax.tree.map(leaf, like, precisions)

    def target_precision(self, Sigma, args):
        """a_l I + (2/N_l) sym(dD/dSigma_l): the right-hand side of the stationarity condition."""
        return self.fixed_point_terms(Sigma, args)[1]

    def fixed_point_terms(self, Sigma, args):
        """(S(Sigma), target precisions, Jacobian model or None) from one evaluation of D and its gradient."""
        weights, precisions = self.prior(args)
        data, grads, model = self.linearised_data_term(Sigma, args)

        def leaf(g, w, a):
            G = as_matrix(g)
            return a * jnp.eye(G.shape[0], dtype=G.dtype) + (G + G.T) / w

        return self.entropy(Sigma, args) + data, jax.tree.map(leaf, grads, weights, precisions), model


def stationarity(action: EntropicAction, Sigma, args):
    """(residual r, gradient norm |dS/dSigma|_F, domain margin min eig(a Sigma)) at Sigma."""
    weights, precisions = action.prior(args)
    targets = action.target_precision(Sigma, args)

    def leaf(S, T, w, a):
        M = as_matrix(S)
        eye = jnp.eye(M.shape[0], dtype=M.dtype)
        r = jnp.max(jnp.abs(M @ T - eye))
        grad = 0.5 * w * (T - jnp.linalg.solve(M, eye))
        margin = jnp.linalg.eigvalsh(a * 0.5 * (M + M.T))[0]
        return r, jnp.sum(grad**2), margin

    leaves = zip(*(jax.tree.leaves(t) for t in (Sigma, targets, weights, precisions)))
    r, g2, margins = (jnp.stack(q) for q in zip(*(leaf(*x) for x in leaves)))
    return jnp.max(r), jnp.sqrt(jnp.sum(g2)), jnp.min(margins)


class StepInfo(eqx.Module):
    """What a map reports about the point x it was evaluated at (see the module docstring)."""

    in_domain: jnp.ndarray
    merit: jnp.ndarray
    residual: jnp.ndarray
    action: jnp.ndarray


class AbstractFixedPointProblem(eqx.Module):
    """A map T with fixed points at the stationary points of an action, in coordinates x of its own."""

    @abc.abstractmethod
    def start(self, value, args):
        """x for order parameters ``value`` (in the action's coordinates)."""

    @abc.abstractmethod
    def value(self, x, args):
        """The order parameters at x."""

    @abc.abstractmethod
    def __call__(self, x, args):
        """(T(x), StepInfo at x)."""

    @abc.abstractmethod
    def report(self, x, args):
        """(action, stationarity residual, gradient norm, domain margin) at x, for the :class:`Solution`."""

    def stats(self, x, args) -> dict:
        """Statistics of the problem at x for ``Solution.stats`` (a dict of arrays; default none)."""
        return {}

    def model(self, x, args):
        """A Jacobian model of T at x with ``newton_step(R)`` solving (I - J) delta = R, or None."""
        return None

    def newton(self, x, args):
        """(x + (I - J)^{-1}(T(x) - x), StepInfo): the Newton-preconditioned map (T itself without a model)."""
        Tx, info = self(x, args)
        model = self.model(x, args)
        if model is None:
            return Tx, info
        return jax.tree.map(jnp.add, x, model.newton_step(jax.tree.map(jnp.subtract, Tx, x))), info

    def model_kind(self, x, args) -> str | None:
        """``"exact"``, ``"approximate"`` or None: what :meth:`model` gives (static, from shapes only)."""
        model = jax.eval_shape(lambda: self.model(x, args))
        return None if model is None else ("exact" if model.exact else "approximate")


def _inverse_spd(M):
    """M^{-1} through a Cholesky factor: NaN when M is not positive definite."""
    L = jnp.linalg.cholesky(M)
    return jax.scipy.linalg.cho_solve((L, True), jnp.eye(M.shape[0], dtype=M.dtype))


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class PrecisionMap(AbstractFixedPointProblem):
    """The stationarity condition of an :class:`EntropicAction` as a map on the precisions (module docstring)."""

    action: EntropicAction
    like: object = eqx.field(static=True)  # the order parameters' structure (ShapeDtypeStructs)

    def start(self, value, args):
        return jax.tree.map(lambda S: _inverse_spd(as_matrix(S)), value)

    def value(self, x, args):
        return jax.tree.map(lambda L, s: _inverse_spd(L).reshape(s.shape), x, self.like)

    def _terms(self, x, args):
        Sigma = jax.tree.map(_inverse_spd, x)
        shaped = jax.tree.map(lambda S, s: S.reshape(s.shape), Sigma, self.like)
        action, targets, model = self.action.fixed_point_terms(shaped, args)
        residual = jnp.max(jnp.stack([
            jnp.max(jnp.abs(S @ T - jnp.eye(S.shape[0], dtype=S.dtype)))
            for S, T in zip(jax.tree.leaves(Sigma), jax.tree.leaves(targets))
        ]))
        info = StepInfo(in_domain=_all_finite(Sigma), merit=action, residual=residual, action=action)
        return targets, info, model

    def __call__(self, x, args):
        return self._terms(x, args)[:2]

    def report(self, x, args):
        value = self.value(x, args)
        return (self.action(value, args),) + stationarity(self.action, value, args)

    def model(self, x, args):
        return self._terms(x, args)[2]

    def newton(self, x, args):
        targets, info, model = self._terms(x, args)  # one evaluation gives T, the info and the model
        if model is None:
            return targets, info
        return jax.tree.map(jnp.add, x, model.newton_step(jax.tree.map(jnp.subtract, targets, x))), info
