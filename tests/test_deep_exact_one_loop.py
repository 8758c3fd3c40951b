"""The one loop around the deep exact measure (``actions.deep_exact_one_loop``; issue 15's deep target).

Checked against independent formulations of the same 1/N correction: for a deep linear net, whose exact measure is
Gaussian, the input-space one loop of the weight form (``Adaptive(form="weight", loops=1)``, its numbers stored by
scripts/make_deep_linear_one_loop_reference.py: Wishart exponents in
d x d weight covariances, another set of order parameters); at depth 1 the two-layer exact one loop
(``actions.exact_one_loop``: one Newton step of Gamma = S + (1/2) log det(I + D2 H), closed-form blocks).
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.actions import deep, deep_exact_one_loop, exact, exact_one_loop
from adaptive_kernels.data import teacher_dataset
from adaptive_kernels.prediction import _gp_prediction
from adaptive_kernels.problem import make_problem

KAPPA2 = 1e-2


def _measure(problem, conjugates, samples, tilted: bool):
    """An exact measure sampled at the given conjugates, layer by layer (covariances from the Gaussian-equivalent
    forward pass, exact for a linear net; a two-layer net needs only the input's): proposals the tilted Gaussians
    N(0, (I - (2/N) B^T Kt B)^-1) of a linear net (its exact tilted measure; ``tilted``) or the prior."""
    C, props, draws = deep.input_covariance(problem, problem.X), [], []
    terms = deep.gaussian_forward(problem, problem.X, conjugates)
    for layer, Kt in enumerate(conjugates):
        B = exact.layer_factor(problem, C, layer, problem.X)
        if tilted:
            cov = jnp.linalg.inv(jnp.eye(B.shape[1]) - (2.0 / problem.widths[layer]) * B.T @ Kt @ B)
            props.append(exact.Proposal.gaussian(jnp.linalg.cholesky(deep.symmetrize(cov))))
        else:
            props.append(exact.Proposal.prior(B.shape[1], B.dtype))
        draws.append(jax.random.normal(jax.random.PRNGKey(10 + layer), (samples, B.shape[1])))
        C = deep.next_covariance(problem, terms[layer].kernel)
    return exact.ExactCGF(tuple(draws), tuple(props))


def _one_loop(key: int, P: int, d: int, widths, activation: str, samples: int, tilted: bool, P_test: int = 10):
    """(data, problem, cgf, conjugates, moments): the one loop around a net's Gaussian conjugates (cubic teacher,
    gamma = 1), its measure sampled by :func:`_measure`."""
    data = teacher_dataset(jax.random.PRNGKey(key), P, d, "cubic", P_test=P_test)
    arch = ak.FCN(d, widths, activation, gamma=1.0)
    problem = make_problem(arch, data, KAPPA2)
    conjugates = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="conjugate")).value
    cgf = _measure(problem, conjugates, samples, tilted)
    return data, problem, cgf, conjugates, deep_exact_one_loop.moments(cgf, problem, conjugates)


def test_deep_linear_net_reproduces_the_input_space_one_loop():
    """Deep linear net (2 hidden layers, d = 6, P = 4, N = 80): the exact measure is Gaussian, so the one loop in
    the kernels and conjugates (n = 40 variables) must move the first-layer ratio along w* and both layer kernels'
    ratios along y as the weight form's input-space one loop does (its own order parameters, exact Wishart
    exponents), up to O(1/N^2) (measured: 95-102% of the weight form's moves here; d = 8, P = 6: 89-90% at N = 80,
    67-70% at N = 20) and the
    Monte Carlo error (4000 draws from the exact tilted Gaussians). The last layer's pre-activation second moment
    (a per-neuron average, through its source) moves its ratio along y as its kernel (phi(h) = h) does through the
    coordinates' (Monte Carlo error of the source route's tilted fourth moments: 0.0069 vs 0.0057 at 4000 draws,
    0.0059 vs 0.0056 at 16000). The mean output at the test inputs (outside the training inputs' span, d > P, so
    the test rows' conditional variances stay positive) moves as the weight form's, whose weights carry the test
    inputs: least-squares slope of the exact one loop's shifts on the weight form's 0.78 / 0.88 / 0.85 at 4000 /
    8000 / 16000 draws (O(1/N^2) as above), with a Monte Carlo scatter about it of 0.5-0.7 of the shifts' norm at
    4000-8000 draws, 0.3 at 16000 (second derivatives of importance-weighted test rows: tilted third cumulants)."""
    data, problem, cgf, _, out = _one_loop(0, 4, 6, (80, 80), "linear", 4000, True)
    assert float(out.gradient) < 1e-8  # the Gaussian conjugates are the exact saddle of a linear net
    # its structured second and third derivatives (``second_order``) against dense automatic differentiation of the
    # action: the Hessian (out.inverse is the structured one's inverse) and t = grad tr(G Hess S) (G t = out.shift)
    # along a direction v, by central differences of tr(G Hess S)
    sources = (jnp.zeros((problem.d, problem.d)), jnp.zeros((problem.P, problem.P)))
    dense = jax.jit(jax.hessian(lambda y: deep_exact_one_loop.action(cgf, problem, y, sources)))
    H = dense(out.point)
    np.testing.assert_allclose(H @ out.inverse, np.eye(H.shape[0]), rtol=0, atol=1e-9)
    v = 1e-5 * jax.random.normal(jax.random.PRNGKey(3), out.point.shape)
    along = 0.5 * jnp.sum(out.inverse * (dense(out.point + v) - dense(out.point - v)))
    np.testing.assert_allclose(v @ H @ out.shift, along, rtol=1e-6)

    def ratios(kernels, sigma):
        return np.array([float(ak.eigenvalue_ratio(sigma, data.w_star))]
                        + [float(ak.eigenvalue_ratio(K, data.y)) for K in kernels])

    saddle, loop = ratios(*out.saddle[0:1], out.saddle[1][0]), ratios(out.kernels, out.second[0])
    # the weight form's saddle and one loop on this net, stored (its compilation costs ~70 s of CPU):
    # scripts/make_deep_linear_one_loop_reference.py
    stored = json.loads((Path(__file__).parent / "data" / "deep_linear_one_loop.json").read_text())
    weight = [np.array(stored["saddle"]), np.array(stored["one_loop"])]
    np.testing.assert_allclose(saddle, weight[0], rtol=1e-6)
    effect = weight[1] - weight[0]  # 0.00106, 0.00403, 0.00605 (deep exact: 0.00108, 0.00398, 0.00572)
    assert np.all(effect > 0.001)
    np.testing.assert_array_less(np.abs(loop - weight[1]), 0.15 * effect)
    moved = [float(ak.eigenvalue_ratio(a, data.y) - ak.eigenvalue_ratio(b, data.y))
             for a, b in ((out.second[1], out.saddle[1][1]), (out.kernels[1], out.saddle[0][1]))]
    assert abs(moved[0] - moved[1]) < 0.25 * abs(moved[1]), moved
    # the mean output at the 10 test inputs (outside the training inputs' span: d > P): the one loop's shift of the
    # exact measure (order parameters and the test rows' own fluctuations) against the weight form's
    outputs = deep_exact_one_loop.output_moments(cgf, problem, out, jnp.asarray(data.X_test))
    shift = np.asarray(outputs.mean_test)
    _same_outputs(outputs, deep_exact_one_loop.output_passes(cgf, problem, out, jnp.asarray(data.X_test)))
    effect = np.array(stored["one_loop_mean_test"]) - np.array(stored["saddle_mean_test"])  # 2e-4 to 2.4e-3
    slope = shift @ effect / (effect @ effect)
    assert 0.6 < slope < 1.2, slope
    assert np.linalg.norm(shift - slope * effect) < np.linalg.norm(effect), (shift, effect)


def _same_outputs(structured, passes):
    """Two hidden layers' structured one-loop output shifts (covariances of a few intermediates) equal the generic
    ones (n second-order directional derivatives of the test chain): the same terms, summed in another order."""
    for a, b in zip((structured.mean_train, structured.mean_test, structured.var_test),
                    (passes.mean_train, passes.mean_test, passes.var_test)):
        assert float(jnp.max(jnp.abs(b))) > 1e-6
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * float(jnp.max(jnp.abs(b))))


@pytest.mark.slow
def test_structured_output_shifts_of_an_erf_net():
    """Deep erf net (2 hidden layers, d = 6, P = 5, N = 80, 8 test inputs, 2000 prior draws at the Gaussian
    conjugates): the structured mean output and predictive variance shifts (``output_moments``) against the
    directional-derivative ones (``output_passes``), where the activation's second derivatives (absent in the linear
    test) enter every term."""
    data, problem, cgf, _, out = _one_loop(2, 5, 6, (80, 80), "erf", 2000, False, P_test=8)
    X_test = jnp.asarray(data.X_test)
    _same_outputs(deep_exact_one_loop.output_moments(cgf, problem, out, X_test),
                  deep_exact_one_loop.output_passes(cgf, problem, out, X_test))


@pytest.mark.slow
def test_depth_one_reduces_to_the_two_layer_exact_one_loop():
    """Two-layer erf net (d = 5, P = 8, N = 30): the generic one loop (G = Hess S^-1 by autodiff, third derivatives
    by one reverse pass) gives the two-layer module's shifts of E[K] and E[w w^T] (its closed-form Newton step of
    Gamma with the tilted third cumulant): the same O(1/N) terms, at the same conjugates and draws."""
    _, problem, cgf, conjugates, out = _one_loop(1, 8, 5, 30, "erf", 3000, False)
    rw = exact_one_loop.reweighting(cgf, problem, conjugates[0])
    for ours, theirs, saddle in ((out.kernels[0], rw.kernel, rw.saddle_kernel), (out.second[0], rw.sigma, rw.saddle_sigma)):
        shift = theirs - saddle
        assert float(jnp.max(jnp.abs(shift))) > 1e-3 * float(jnp.max(jnp.abs(saddle)))
        np.testing.assert_allclose(ours - saddle, shift, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(shift))))


def test_check_refuses_what_is_not_built():
    """Clear errors naming ``loops`` and P: too many points, for the moments and (fewer) for the mean output of nets
    other than two hidden layers."""
    for P, widths in ((deep_exact_one_loop.MAX_P + 1, (10, 10)), (deep_exact_one_loop.OUTPUT_MAX_P + 1, (10,) * 3)):
        data = teacher_dataset(jax.random.PRNGKey(0), P, 4, "cubic", P_test=2)
        problem = make_problem(ak.FCN(4, widths, "erf"), data, KAPPA2)
        with pytest.raises(ValueError, match=f"loops.*P = {P}"):
            if P > deep_exact_one_loop.MAX_P:
                deep_exact_one_loop.check(problem)
            else:
                deep_exact_one_loop.mean(None, functools.partial(_gp_prediction), None, problem)
