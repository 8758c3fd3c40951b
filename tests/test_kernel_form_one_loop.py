"""The deep kernel form's one loop (``Adaptive(form="kernel", loops=1)``; ``actions.test_points``) against an
independent Monte Carlo of the model it expands: the Gaussian-equivalent chain of Wisharts on the training inputs
joined by the test inputs, N_l K_l ~ Wishart(N_l, K_phi(s_w2 K_{l-1} + s_b2)), sampled here in numpy (closed-form
erf kernel, no library code), the posterior by self-normalised importance weights exp(-D(c K_L)) on prior draws.
The saddle's error is O(1/N), the one loop's O(1/N^2): at N = 48 the one loop must sit within the Monte Carlo
error where the saddle is many standard errors off, and the test rows' own fluctuations (q_l, omega_l of the module
docstring) must matter where they should (the test points' diagonal)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

import adaptive_kernels as ak
from adaptive_kernels.actions import deep, test_points
from adaptive_kernels.problem import make_problem

P, D, T, N, S_W2, S_B2 = 4, 3, 2, 48, 2.0, 0.1


def erf_kernel(C):
    """E[erf(u) erf(v)] for (u, v) ~ N(0, C), entrywise over a batch of matrices."""
    dg = np.diagonal(C, axis1=-2, axis2=-1)
    return 2 / np.pi * np.arcsin(2 * C / np.sqrt((1 + 2 * dg[..., :, None]) * (1 + 2 * dg[..., None, :])))


def sampled_chain(X_all, depth, samples, seed=1, chunk=20000):
    """Draws of the last layer's kernel K_L on X_all from the Gaussian-equivalent chain (module docstring)."""
    rng = np.random.default_rng(seed)
    n = X_all.shape[0]
    C = S_W2 * X_all @ X_all.T / D + S_B2
    for _ in range(samples // chunk):
        Cs = np.broadcast_to(C, (chunk, n, n))
        for _ in range(depth):
            B = np.linalg.cholesky(erf_kernel(Cs) + 1e-12 * np.eye(n))
            W = rng.standard_normal((chunk, N, n)) @ np.swapaxes(B, -1, -2)
            K = np.swapaxes(W, -1, -2) @ W / N
            Cs = S_W2 * K + S_B2
        yield K


def test_test_rows_against_the_sampled_prior_chain():
    # No data (kappa2 = 1e8): the one-loop minimiser is Q_l = I exactly (Gamma = S there), and E[K_2(x*, X)],
    # E[K_2(x*, x*)] of the chain are averages over the training kernels (the Q one loop, ``theory.mean``) and over
    # the test rows given them (``test_points.row_moments``).
    data = ak.teacher_dataset(jax.random.PRNGKey(0), P, D, "cubic", P_test=T)
    arch = ak.FCN(D, (N, N), "erf", s_w2=S_W2, s_b2=S_B2)
    problem = make_problem(arch, data, 1e8)
    theory = ak.Adaptive(form="kernel", loops=1)
    value = deep.WhitenedKernelAction().initial(problem)
    factor = deep.prior_factor  # the one loop's coordinates (``Adaptive._factor``)
    fn = Partial(lambda v, problem, X: test_points.kernel_rows(problem, v, X, factor)[1:], problem=problem,
                 X=data.X_test)
    (rows, diag), _ = theory.mean(fn, value, problem)
    (saddle_rows, saddle_diag), (shift_rows, shift_diag), _ = test_points.row_moments(problem, value, data.X_test,
                                                                                       factor)

    def flat(r, d):
        return np.concatenate([np.ravel(r), np.ravel(d)])

    X_all = np.concatenate([data.X, data.X_test])
    draws = np.concatenate([np.concatenate([K[:, P:, :P].reshape(len(K), -1), np.diagonal(K, axis1=1, axis2=2)[:, P:]],
                                           axis=1) for K in sampled_chain(X_all, 2, 100000)])
    mc, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    loop = flat(rows + shift_rows, diag + shift_diag)
    rows_only = flat(rows, diag)  # without the test rows' own fluctuations
    saddle = flat(saddle_rows, saddle_diag)
    assert np.all(np.abs(loop - mc) < 4 * se + 1e-4), np.c_[mc, se, loop, saddle]
    assert np.sqrt(np.mean((loop - mc) ** 2)) < 0.3 * np.sqrt(np.mean((saddle - mc) ** 2))
    assert np.max(np.abs(saddle - mc) / se) > 8
    # without the test rows' own fluctuations a test point's K_2(x*, x*) is 7.5 SEs off (the other's 0.7)
    diagonal = slice(P * T, None)
    assert np.max(np.abs(rows_only - mc)[diagonal] / se[diagonal]) > 5, np.c_[mc, se, rows_only][diagonal]
