"""Exact blocked Gibbs sampler for linear FCNs of any depth (THEORY.md sec. 8).

For a linear net f(x) = a^T W_L ... W_1 x, layer l enters the output as

    f_mu = u^T W_l g_mu,   u = (W_L ... W_{l+1})^T a  (N_l,),   g_mu = W_{l-1} ... W_1 x_mu,

so with u_hat = u/|u| only v = W_l^T u_hat meets the data: y = |u| G v + noise, G = (g_mu)^T.
Write W_l = u_hat v^T + (I - u_hat u_hat^T) W_l; under the iid prior N(0, s_l) the two parts are
independent, v has the conjugate Gaussian posterior (precision I/s_l + |u|^2 G^T G / kappa2) and
the orthogonal part keeps its prior. So W_l | rest is sampled exactly: v from its posterior,
W_l = u_hat v^T + (I - u_hat u_hat^T) Z with a fresh prior draw Z. The readout a | W is the
conjugate posterior of y = Phi a + noise, Phi = X W_1^T ... W_L^T. One sweep updates every
layer then the readout. Every design is kept factored as X M^T with M = W_l ... W_1 (N_l x d),
so a sweep costs O(N^2 d + N d^2 + P^2 d + P^3) per layer and never forms a P x N_l matrix
(:class:`LinearGaussian` with a right factor).

Rao-Blackwellisation: the recorded readout is E[a | W, y], so the recorded output is the exact
conditional mean E[f(x) | W, y]; its average over sweeps has much lower variance than f itself.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.architectures import FCN
from adaptive_kernels.sampling.conjugate import LinearGaussian
from adaptive_kernels.sampling.networks import Network, init_network


class GibbsState(eqx.Module):
    network: Network
    readout_mean: jnp.ndarray


class Gibbs(eqx.Module):
    """Exact blocked Gibbs for linear FCNs without biases (no tuning parameters)."""

    name = "gibbs"
    multi_output = False

    def check(self, arch):
        if not isinstance(arch, FCN) or not arch.activation.is_linear:
            what = type(arch).__name__ if not isinstance(arch, FCN) else f"activation {arch.activation.name!r}"
            raise ValueError(f"method: 'gibbs' is exact only for linear FCNs, got {what}; use 'hmc' or 'langevin'")
        if float(arch.s_b2) > 0:
            raise ValueError("method: 'gibbs' needs an FCN without biases (s_b2 = 0); use 'hmc' or 'langevin'")

    def init(self, posterior, key):
        net = init_network(posterior.arch, key, posterior.X.dtype, posterior.biases)
        return GibbsState(net, net.readout)

    def step(self, posterior, state, key, adapt):
        arch, X, y, kappa2 = posterior.arch, posterior.X, posterior.y, posterior.kappa2
        weights = list(state.network.features.weights)
        keys = jax.random.split(key, 2 * len(weights) + 1)
        below = None  # M = W_{l-1} ... W_1 (N_{l-1}, d): the inputs to layer l are G = X M^T
        for layer, W in enumerate(weights):
            u = state.network.readout
            for W_above in reversed(weights[layer + 1 :]):
                u = W_above.T @ u
            norm = jnp.linalg.norm(u)
            u_hat = u / norm
            prior_var = jnp.asarray(arch.s_w2 / W.shape[1], W.dtype)
            v = LinearGaussian(norm * X, y, prior_var, kappa2, None if below is None else below.T).sample(keys[2 * layer])
            Z = jnp.sqrt(prior_var) * jax.random.normal(keys[2 * layer + 1], W.shape, W.dtype)
            weights[layer] = jnp.outer(u_hat, v) + Z - jnp.outer(u_hat, u_hat @ Z)
            below = weights[layer] if below is None else weights[layer] @ below
        readout = LinearGaussian(X, y, posterior.readout_variance, kappa2, below.T)
        features = eqx.tree_at(lambda f: f.weights, state.network.features, tuple(weights))
        new = GibbsState(Network(features, readout.sample(keys[-1])), readout.mean)
        return new, jnp.ones((), X.dtype)

    def end_warmup(self, state):
        return state

    def step_size(self, state):
        return None

    def current(self, posterior, state):
        """(features, readout) to record: the readout is E[a | W, y] (Rao-Blackwellised)."""
        return state.network.features, state.readout_mean
