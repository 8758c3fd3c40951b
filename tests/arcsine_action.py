"""An independent numpy implementation of the Gaussian ansatz's action for a two-layer erf FCN with d = 2, for the
tests of phase structure (tests/test_sweep_branches.py, tests/test_phases_p_homotopy.py)."""

import numpy as np


def tempered_data_term(K, y, kappa2, t=None):
    """(1/2) yt^T (Kt + kappa2)^-1 yt + (1/2) log det(Kt + kappa2), Kt = T^1/2 K T^1/2, yt = T^1/2 y (t = 1: the plain
    GP data term; t_mu = 0 drops point mu up to (1/2) log kappa2)."""
    w = np.ones(len(y)) if t is None else np.sqrt(t)
    M = w[:, None] * K * w[None, :] + kappa2 * np.eye(len(y))
    return 0.5 * (w * y) @ np.linalg.solve(M, w * y) + 0.5 * np.linalg.slogdet(M)[1]


def arcsine_action(X, y, N, gamma, kappa2, t=None):
    """S(u) = (N/2)[a tr Sigma - log det Sigma] + D_t(K) with the erf arcsine kernel K = c (2/pi) arcsin(2 x.Sigma x'
    / sqrt((1 + 2 x.Sigma x)(1 + 2 x'.Sigma x'))), c = N^(1 - gamma) (s_a2 = 1), a = d (s_w2 = 1) (THEORY.md secs.
    3-4), as a function of the Cholesky coordinates (log l11, l21, log l22) of the 2 x 2 Sigma."""
    c, a = N ** (1 - gamma), X.shape[1]

    def S(u):
        L = np.array([[np.exp(u[0]), 0.0], [u[1], np.exp(u[2])]])
        Sigma = L @ L.T
        G = X @ Sigma @ X.T
        q = 1 + 2 * np.diag(G)
        K = c * 2 / np.pi * np.arcsin(2 * G / np.sqrt(np.outer(q, q)))
        return 0.5 * N * (a * np.trace(Sigma) - 2 * (u[0] + u[2])) + tempered_data_term(K, y, kappa2, t)

    return S


def local_minima(S, starts: int):
    """The distinct local minima (actions, sorted) of S(u), u = (log l11, l21, log l22), reached by L-BFGS-B from
    ``starts`` random starts (log l11, log l22 uniform in [-3, 2], l21 standard normal; wide bounds keep the line
    search away from overflow; a finite-difference gradient at |S| ~ 1e3 has noise ~1e-3, hence the 1e-2 cut)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    found = []
    for _ in range(starts):
        u0 = np.array([rng.uniform(-3, 2), rng.normal(), rng.uniform(-3, 2)])
        res = minimize(S, u0, method="L-BFGS-B", bounds=[(-8, 6), (-30, 30), (-8, 6)],
                       options={"ftol": 1e-15, "gtol": 1e-8})
        if np.linalg.norm(res.jac) < 1e-2 and all(abs(res.fun - f) > 1e-6 * abs(f) for f in found):
            found.append(res.fun)
    return sorted(found)
