"""User entry point: sample the posterior of a finite network and return estimates with errors.

Chains run in parallel (``jax.vmap``), steps inside ``jax.lax.scan`` in jit-compiled chunks:
warmup (step-size adaptation) and then the draws run in chunks of one batch length, so one
compiled function serves both; the ``num_batches`` batch means of each chain give the standard
errors (:mod:`estimates`). Only running sums of the recorded quantities
are kept on the device, plus a few scalar monitors per draw for R-hat and ESS.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_kernels._validation import check_positive, check_positive_int
from adaptive_kernels.architectures import CNN, FCN
from adaptive_kernels.data import Dataset
from adaptive_kernels.sampling.estimates import PosteriorEstimates, build_estimates
from adaptive_kernels.sampling.gibbs import Gibbs
from adaptive_kernels.sampling.hmc import HMC
from adaptive_kernels.sampling.langevin import Langevin
from adaptive_kernels.sampling.networks import has_biases
from adaptive_kernels.sampling.target import Posterior

METHODS = {"gibbs": Gibbs, "hmc": HMC, "langevin": Langevin}


def default_method(arch, multi_output: bool = False) -> str:
    """'auto': exact Gibbs for linear bias-free FCNs, HMC (readout marginalised) for other
    one-hidden-layer FCNs, Langevin (MALA) for deep nonlinear FCNs and CNNs; HMC for every
    architecture when y has output columns, (P, k) (``multi_output``: the only sampler that takes them)."""
    if multi_output:
        return "hmc"
    if isinstance(arch, FCN):
        if arch.activation.is_linear and float(arch.s_b2) == 0:
            return "gibbs"
        if arch.depth == 1:
            return "hmc"
    return "langevin"


def _resolve_sampler(method, arch, multi_output):
    if isinstance(method, (Gibbs, HMC, Langevin)):
        sampler = method
    elif isinstance(method, str) and (method == "auto" or method in METHODS):
        sampler = METHODS[default_method(arch, multi_output) if method == "auto" else method]()
    else:
        raise ValueError(f"method: unknown {method!r}; choose 'auto', {', '.join(map(repr, METHODS))} or a sampler object")
    sampler.check(arch)
    if multi_output and not sampler.multi_output:
        raise ValueError(f"method: {sampler.name!r} samples one output, y of shape (P,); data.y has columns, use 'hmc' "
                         "(its readout integrates out per column)")
    return sampler


def _observe(posterior, X_test, features, readout, observe):
    """Quantities averaged over draws: outputs, per-layer weight covariances and kernels, and the user's
    ``observe(features)``."""
    obs = {
        "output_train": features.output(posterior.X, readout),
        "weight_covariance": [W.T @ W / W.shape[0] for W in features.weight_matrices()],
        "kernels": features.kernels(posterior.X),
    }
    if X_test is not None:
        obs["output_test"] = features.output(X_test, readout)
    if observe is not None:
        obs["observed"] = observe(features)
    return obs


def _monitors(posterior, y_test, obs):
    """Per-draw scalars for R-hat/ESS."""
    out = {"train_mse": jnp.mean((obs["output_train"] - posterior.y) ** 2)}
    if y_test is not None:
        out["learnability"] = jnp.vdot(obs["output_test"], y_test) / jnp.vdot(y_test, y_test)
    for l, C in enumerate(obs["weight_covariance"]):
        out[f"weight_norm_{l + 1}"] = jnp.trace(C) / C.shape[0]
    return out


@eqx.filter_jit
def _init(sampler, posterior, keys):
    return jax.vmap(lambda k: sampler.init(posterior, k))(keys)


@eqx.filter_jit
def _advance(sampler, posterior, X_test, y_test, states, keys, adapt, num_records: int, thin: int,
             chain_batch_size: int | None, observe):
    """Run ``num_records * thin`` steps per chain (adapting the step size where ``adapt``).
    Returns (states, mean observation per chain, monitors (chains, num_records), mean acceptance
    probability per chain). Warmup and sampling share this one compiled function. Chains are
    vmapped, all at once or ``chain_batch_size`` at a time (``jax.lax.map``)."""

    def record_of(state):
        return _observe(posterior, X_test, *sampler.current(posterior, state), observe)

    def chain(state, key):
        def one_step(carry, k):
            state, acc = carry
            state, a = sampler.step(posterior, state, k, adapt)
            return (state, acc + a), None

        def one_record(carry, k):
            state, sums = carry
            (state, acc), _ = jax.lax.scan(one_step, (state, jnp.zeros((), posterior.X.dtype)), jax.random.split(k, thin))
            obs = record_of(state)
            sums = jax.tree.map(jnp.add, sums, obs)
            return (state, sums), (_monitors(posterior, y_test, obs), acc / thin)

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(record_of, state))
        (state, sums), (monitors, acc) = jax.lax.scan(one_record, (state, zeros), jax.random.split(key, num_records))
        return state, jax.tree.map(lambda s: s / num_records, sums), monitors, acc.mean()

    if chain_batch_size is None:
        return jax.vmap(chain)(states, keys)
    return jax.lax.map(lambda args: chain(*args), (states, keys), batch_size=chain_batch_size)


def _check_counts(num_chains, num_samples, num_warmup, thin):
    check_positive_int("num_chains", num_chains)
    check_positive_int("num_samples", num_samples)
    check_positive_int("thin", thin)
    if num_samples < 4:
        raise ValueError(f"num_samples must be at least 4 (split R-hat needs two halves of two draws), got {num_samples}")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")


def _check_data(arch, data):
    if not isinstance(arch, (FCN, CNN)):
        raise TypeError(f"arch must be an FCN or a CNN, got {type(arch).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be an adaptive_kernels.Dataset, got {type(data).__name__}")
    if data.d != arch.d:
        raise ValueError(f"data: inputs have dimension d = {data.d} but arch expects d = {arch.d}")


def sample_posterior(
    arch,
    data: Dataset,
    kappa2: float,
    *,
    method="auto",
    num_chains: int = 4,
    num_samples: int = 1000,
    num_warmup: int = 500,
    thin: int = 1,
    num_batches: int = 20,
    key=0,
    progress: bool = False,
    chain_batch_size: int | None = None,
    observe=None,
) -> PosteriorEstimates:
    """Sample p(theta | D) ∝ prior(theta) exp(-|f(X) - y|^2/(2 kappa2)) (THEORY.md secs. 1, 8);
    with k outputs |f(X) - y|^2 is the squared Frobenius norm over the (P, k) outputs.

    Args:
        arch: :class:`FCN` (any depth) or :class:`CNN`.
        data: :class:`Dataset`, y of shape (P,) or (P, k) (k outputs: k readout vectors with
            the same prior, one hidden network; only ``method="hmc"``, which integrates each
            readout column out with the same features); its test set (``X_test``, ``y_test``) and
            teacher ``w_star`` are used for the test observables when present.
        kappa2: noise variance (the temperature of Langevin training), > 0.
        method: "auto" (:func:`default_method`; "hmc" with several outputs), "gibbs" (exact, linear FCNs), "hmc" (readout
            integrated out; any architecture), "langevin" (MALA on all weights), or a configured
            sampler object (``Gibbs()``, ``HMC(num_leapfrog=...)``, ``Langevin(metropolis=False)``).
        num_chains: independent chains (vmapped; an ensemble of networks).
        num_samples: recorded draws per chain (rounded up to a multiple of the batch count).
        num_warmup: discarded steps per chain, with step-size adaptation (rounded up to a
            multiple of the batch length ``thin * num_samples / num_batches``).
        thin: steps per recorded draw.  num_batches: batches per chain for the standard errors.
        key: int seed or JAX PRNG key.  progress: show a tqdm bar over chunks.
        chain_batch_size: None vmaps all chains at once; an integer runs them that many at a
            time (``jax.lax.map``). On a CPU, 1 is faster for large nets: batched Cholesky and
            triangular solves are slow there (d=50, N=1000, P=200 erf HMC, 30 chains: 2.3x in
            float64, 1.2x in float32, measured on 2 loaded cores).
        observe: None, or a function of the hidden network's draw (the sampler's features, e.g.
            ``features.weight_matrices()[0]``, W_1 (N, d)) returning a dict {name: array} of per-draw
            quantities -- e.g. the fraction of neurons whose overlap a (w_i . v)^2 exceeds a threshold --
            averaged over the recorded draws like the built-in observations and returned as
            ``observed[name]``, with batch-means standard errors.

    Returns:
        :class:`PosteriorEstimates` (estimates with standard errors, and diagnostics).
    """
    _check_data(arch, data)
    check_positive("kappa2", kappa2)
    _check_counts(num_chains, num_samples, num_warmup, thin)
    check_positive_int("num_batches", num_batches)
    if chain_batch_size is not None:
        check_positive_int("chain_batch_size", chain_batch_size)
    sampler = _resolve_sampler(method, arch, data.y.ndim == 2)
    key = jax.random.key(key) if isinstance(key, int) else key

    dtype = jnp.result_type(data.X.dtype, float) if jnp.issubdtype(data.X.dtype, jnp.floating) else jnp.result_type(float)
    X = jnp.asarray(data.X, dtype)
    posterior = Posterior(arch, X, jnp.asarray(data.y, dtype), jnp.asarray(kappa2, dtype), has_biases(arch))
    X_test = None if data.X_test is None else jnp.asarray(data.X_test, dtype)
    y_test = None if data.y_test is None else jnp.asarray(data.y_test, dtype)

    num_batches = min(num_batches, num_samples)
    batch_size = math.ceil(num_samples / num_batches)
    warmup_chunks = math.ceil(num_warmup / (batch_size * thin))

    key, init_key = jax.random.split(key)
    states = _init(sampler, posterior, jax.random.split(init_key, num_chains))
    bar = _progress(progress, warmup_chunks + num_batches, sampler.name)

    def run(states, key, adapt):
        keys = jax.random.split(key, num_chains)
        out = _advance(sampler, posterior, X_test, y_test, states, keys, jnp.asarray(adapt), batch_size, thin,
                       chain_batch_size, observe)
        if bar is not None:
            bar.update(1)
        return out

    for _ in range(warmup_chunks):
        key, sub = jax.random.split(key)
        states = run(states, sub, True)[0]
    states = jax.vmap(sampler.end_warmup)(states)

    batches, monitors, acceptance = [], [], []
    for _ in range(num_batches):
        key, sub = jax.random.split(key)
        states, means, mon, acc = run(states, sub, False)
        batches.append(jax.device_get(means))
        monitors.append(jax.device_get(mon))
        acceptance.append(np.asarray(acc))
    if bar is not None:
        bar.close()

    stack = lambda *xs: np.stack(xs, axis=1)  # noqa: E731  (chains, batches, ...)
    batch_means = jax.tree.map(stack, *batches)
    monitor_series = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *monitors)
    step_size = sampler.step_size(states)
    return build_estimates(
        sampler.name, batch_means, monitor_series, np.stack(acceptance), None if step_size is None else np.asarray(step_size),
        np.asarray(posterior.y), None if y_test is None else np.asarray(y_test),
        None if data.w_star is None else np.asarray(data.w_star, dtype),
    )


def _progress(enabled, total, name):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"sampling ({name})", unit="chunk")
