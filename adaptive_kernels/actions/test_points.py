"""Test points of the deep kernel form: their kernel rows as functions of the whitened order parameters, and the
one-loop average over their own finite-width fluctuations (THEORY.md secs. 5, 10; docs/finite_width.md, "Deep
nonlinear nets: the kernel form").

The kernel form (``deep.WhitenedKernelAction``) is the Gaussian-equivalent chain of Wisharts: given the layer
below, N_l K_l ~ Wishart(N_l, G_l), G_l = K_phi(C_l), C_l = s_w2 K_{l-1} + s_b2, and in whitened coordinates
K_l = B_l Q_l B_l^T (B_l B_l^T = G_l) the Q_l are independent, N_l Q_l ~ Wishart(N_l, I). The same holds on the
training inputs joined by a test input x: with the joint factor

    B_l^joint = [[B_l, 0], [b_l^T, beta_l]],   b_l = B_l^{-1} g_l,   beta_l^2 = G_l(x, x) - |b_l|^2

(g_l = G_l(X, x), the Schur complement beta_l^2 >= 0), the joint whitened matrix is [[Q_l, q_l], [q_l^T, omega_l]]
with, given Q_l, q_l ~ N(0, Q_l / N_l) and omega_l = |z|^2 / N_l (z ~ N(0, I_{N_l}): E omega = 1, Var omega = 2/N_l,
Cov(q, omega) = 0), so the test rows of the layer kernel are

    K_l(X, x) = B_l (Q_l b_l + beta_l q_l),    K_l(x, x) = b_l^T Q_l b_l + 2 beta_l b_l^T q_l + beta_l^2 omega_l.

At q = 0, omega = 1 this is Gaussian conditioning on the training kernels, K_l(X, x) = K_l G_l^{-1} g_l: the test
rows the saddle's conjugate forward map gives at the stationary point (padded conjugates are zero on test rows),
but here a function of the order parameters alone, so its derivatives in them are those of the prediction (the
conjugate map's test rows equal these only at the saddle, which is why a one loop through it was wrong).

The posterior mean output at x is E_Q[E[f | Q]]: the outer average over the order parameters is the one loop of
``actions.one_loop`` (Q_Gamma and (1/2) tr(H^-1 Hess)); the inner one is over the test rows' own fluctuations
(q_l, omega_l), O(1/N_l), which matter for a nonlinear phi (the next layer's kernel is nonlinear in them; for a
linear net with an explicitly propagated factor beta_l = 0 and they drop out). At one loop, with u_j the columns
of a square root of the noise covariance (Q_l^{1/2} / sqrt(N_l) for q_l, sqrt(2/N_l) for omega_l),

    E[r] = r(0) + (1/2) sum_j d^2 r[u_j, u_j],   Cov(r) = sum_j (dr u_j)(dr u_j)^T,   r = (K_L(X, x), K_L(x, x)),

so the GP mean m = c K_L(x, X) A y (A = (c K_L + kappa2)^{-1}) gains alpha^T dE[k], alpha = c A y, and its variance
c K_L(x, x) - c^2 k^T A k gains c dE[kappa] - c^2 (2 k^T A dE[k] + tr(A Cov k)) plus the fluctuation of the mean
itself, alpha^T Cov(k) alpha (predictive variance = E[Var] + Var[E]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adaptive_kernels.actions import deep
from adaptive_kernels.problem import Problem


def _layers(problem: Problem, covariances, factor):
    """Per layer, what the test rows need from the training side: (B_l, B_l^{-1} or None where the factor is
    explicit, Q_l, chol(Q_l) where the next factor is explicit, diag C_{l+1} on the training inputs)."""
    out = []
    for layer, (B, Q) in enumerate(zip(deep.layer_factors(problem, problem.X, covariances, factor), covariances)):
        Q = deep.symmetrize(Q)
        square = B.shape[0] == B.shape[1] and not (layer == 0 and deep.explicit_factor(problem, problem.d, problem.P))
        last = layer + 1 == problem.depth
        explicit_next = not last and deep.explicit_factor(problem, B.shape[1], B.shape[0])
        diag_next = problem.s_w2 * jnp.einsum("pi,ij,pj->p", B, Q, B) + problem.s_b2
        out.append((B, jnp.linalg.inv(B) if square else None, Q, jnp.linalg.cholesky(Q) if explicit_next else None,
                    diag_next))
    return out


def _first_row(problem: Problem, x, B_inv):
    """(b_1, beta_1) of one test input x: explicit [sqrt(s_w2/d) x, sqrt(s_b2)] and 0 where the first factor is
    explicit, else B_1^{-1} g_1 and the Schur complement of G_1's joint matrix."""
    if B_inv is None:
        bias = jnp.sqrt(problem.s_b2) * jnp.ones(1, x.dtype)
        return jnp.concatenate([jnp.sqrt(problem.s_w2 / problem.d) * x, bias]), 0.0
    c_xx = problem.s_w2 * x @ x / problem.d + problem.s_b2
    c_xA = problem.s_w2 * problem.X @ x / problem.d + problem.s_b2
    c_AA = problem.s_w2 * jnp.sum(problem.X ** 2, axis=1) / problem.d + problem.s_b2
    return _square_row(problem, B_inv, c_xx, c_xA, c_AA)


def _square_row(problem: Problem, B_inv, c_xx, c_xA, c_AA):
    """(b, beta) = (B^{-1} g, sqrt(G(x, x) - |b|^2)) from the pre-activation covariances of (x, X)."""
    g = problem.activation.expectation(c_xx, c_xA, c_AA)
    b = B_inv @ g
    gap = problem.activation.diagonal(c_xx) - b @ b
    return b, jnp.sqrt(jnp.where(gap > 0, gap, 0.0))


def _rows(problem: Problem, layers, x, noise):
    """(K_L(X, x), K_L(x, x)) of one test input; ``noise`` per layer (q_l, omega_l) or None (q = 0, omega = 1)."""
    b, beta = _first_row(problem, x, layers[0][1])
    for layer, (B, _, Q, chol_Q, _) in enumerate(layers):
        q, omega = (jnp.zeros(Q.shape[0], Q.dtype), 1.0) if noise is None else noise[layer]
        row = B @ (Q @ b + beta * q)
        diag = b @ Q @ b + 2.0 * beta * (b @ q) + beta ** 2 * omega
        if layer + 1 == problem.depth:
            return row, diag
        if chol_Q is not None:  # explicit next factor (a linear net; beta = 0 there)
            b, beta = jnp.concatenate([jnp.sqrt(problem.s_w2) * chol_Q.T @ b,
                                       jnp.sqrt(problem.s_b2) * jnp.ones(1, b.dtype)]), 0.0
        else:
            b, beta = _square_row(problem, layers[layer + 1][1], problem.s_w2 * diag + problem.s_b2,
                                  problem.s_w2 * row + problem.s_b2, layers[layer][4])


def _last_kernel(layers):
    """K_L = B_L Q_L B_L^T on the training inputs (``deep.whitened_chain``'s last kernel) from :func:`_layers`."""
    B, _, Q, _, _ = layers[-1]
    return deep.symmetrize(B @ Q @ B.T)


def kernel_rows(problem: Problem, covariances, X_test, factor=deep.whitening_factor):
    """(K_L, K_L(X_test, X), diag K_L(X_test)) at q = 0, omega = 1 (module docstring): the training kernel and,
    by Gaussian conditioning of every layer's test rows on its training kernel, the test rows, functions of the
    order parameters Q_l alone (one pass of the layer factors for both)."""
    layers = _layers(problem, covariances, factor)
    return (_last_kernel(layers),) + jax.vmap(lambda x: _rows(problem, layers, x, None))(X_test)


def _noise_directions(layers, widths) -> tuple:
    """The columns u_j of a square root of the test rows' noise covariance (module docstring), as per-layer
    (q, omega) tangents stacked over the n = sum_l (r_l + 1) directions: block l holds Q_l^{1/2}/sqrt(N_l) along q_l
    and sqrt(2/N_l) along omega_l."""
    sizes = [Q.shape[0] + 1 for _, _, Q, _, _ in layers]
    n = sum(sizes)
    tangents = []
    for layer, ((_, _, Q, _, _), N) in enumerate(zip(layers, widths)):
        start, r = sum(sizes[:layer]), Q.shape[0]
        w, U = jnp.linalg.eigh(Q)
        root = (U * jnp.sqrt(jnp.maximum(w, 0.0))) @ U.T / jnp.sqrt(N)
        tangents.append((jnp.zeros((n, r), Q.dtype).at[start:start + r].set(root.T),
                         jnp.zeros(n, Q.dtype).at[start + r].set(jnp.sqrt(2.0 / N))))
    return tuple(tangents)


def row_moments(problem: Problem, covariances, X_test, factor=deep.whitening_factor):
    """Per test input, the one-loop average over the test rows' own fluctuations at fixed order parameters
    ``covariances`` (module docstring): (rows, diag) at q = 0, omega = 1 (:func:`kernel_rows`), their mean shifts
    (1/2) sum_j d^2 r[u_j, u_j] (P*, P) and (P*,), and the first derivatives along the u_j, (P*, n, P) and (P*, n)
    (Cov(r) = sum_j (dr u_j)(dr u_j)^T)."""
    return _row_moments(problem, _layers(problem, covariances, factor), X_test)


def _row_moments(problem: Problem, layers, X_test):
    """:func:`row_moments` from the training side's :func:`_layers`."""
    center = tuple((jnp.zeros(Q.shape[0], Q.dtype), jnp.ones((), Q.dtype)) for _, _, Q, _, _ in layers)
    tangents = _noise_directions(layers, problem.widths)

    def one(x):
        def rows(noise):
            return _rows(problem, layers, x, noise)

        (d_row, d_diag), (dd_row, dd_diag) = directional_derivatives(rows, center, tangents)
        return rows(center), (0.5 * jnp.sum(dd_row, axis=0), 0.5 * jnp.sum(dd_diag, axis=0)), (d_row, d_diag)

    return jax.vmap(one)(X_test)


def directional_derivatives(fn, center, tangents, batch_size=None):
    """(d fn[u_j], d^2 fn[u_j, u_j]) at ``center`` for the tangents u_j stacked on the leading axis of ``tangents``
    (pytrees like ``center``), each stacked the same way: forward over forward, all at once (vmap) or
    ``batch_size`` at a time (memory); also the one-loop directions of ``actions.deep_exact_one_loop``."""
    def along(u):
        (_, first), (_, second) = jax.jvp(lambda z: jax.jvp(fn, (z,), (u,)), (center,), (u,))
        return first, second

    if batch_size is None:
        return jax.vmap(along)(tangents)
    return jax.lax.map(along, tangents, batch_size=batch_size)


def fluctuation_correction(problem: Problem, covariances, X_test, factor=deep.whitening_factor):
    """(d mean, d var) of the GP prediction at the test inputs from the test rows' own fluctuations at one loop
    (module docstring), at the order parameters ``covariances`` (Q_1..Q_L)."""
    c = problem.readout_scale
    layers = _layers(problem, covariances, factor)
    kernel = c * _last_kernel(layers)
    A = jnp.linalg.inv(kernel + problem.kappa2 * jnp.eye(problem.P, dtype=kernel.dtype))
    alpha = c * A @ problem.y
    (row, _), (shift_row, shift_diag), (d_row, _) = _row_moments(problem, layers, X_test)
    d_mean = shift_row @ alpha
    spread = jnp.sum(jnp.einsum("tnp,p...->tn...", d_row, alpha) ** 2, axis=1)
    d_var = (c * shift_diag - c ** 2 * (2.0 * jnp.einsum("tp,pq,tq->t", row, A, shift_row)
                                         + jnp.einsum("tnp,pq,tnq->t", d_row, A, d_row)))
    return d_mean, (d_var[:, None] if spread.ndim == 2 else d_var) + spread
