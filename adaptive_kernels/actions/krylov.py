"""Newton-Krylov steps for the precision map of any entropic action (THEORY.md secs. 4-5; ``actions.base``).

The precision map of S(Sigma) = sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + D(Sigma) is
T(Lambda)_l = a_l I + (2/N_l) sym dD/dSigma_l at Sigma = Lambda^{-1}. Its exact Jacobian,

    J[dLambda]_l = (2/N_l) sym H_D[dSigma]_l,   dSigma_k = -Sigma_k dLambda_k Sigma_k,

(H_D the Hessian of D, all layers coupled) comes from one linearisation of dD/dSigma (``jax.linearize``: the
factorisations of the evaluation are reused; a product with J is one forward-over-reverse pass of triangular
solves and products, no new Cholesky factor). (I - J) is self-adjoint and, where S is convex, positive definite
in the metric <A, B> = sum_l (N_l/2) tr(Sigma_l A_l Sigma_l B_l): <A, (I - J) A> is the Hessian of S along
dSigma = -Sigma A Sigma. Solving (I - J) delta = R = T(Lambda) - Lambda by conjugate gradients in that metric is
therefore Newton-CG on S with the entropy's Hessian as preconditioner (in the Lambda coordinates the preconditioned
operator is I - J, whose spectrum is 1 plus the data term's few large modes -- the mean-field ones along the
target; measured: eigenvalues of J in [-2.1, 0.4] for an erf net with L = 2, gamma = 2, P = 20). The solve is
truncated (Steihaug): it stops at a relative residual eta = min(``rtol``, max(sqrt(r), tol / (2 r))), r the
stationarity residual and tol the solver's stopping tolerance (1e-10 in float64) -- an inexact Newton step with a
superlinear forcing term that does not over-solve the last step (a step needs only to reduce r to tol: the
Eisenstat-Walker safeguard; it saved 24% / 9% of the products at L = 4 / 8, erf, P = 100) -- and at negative
curvature, returning the last iterate, which is a descent direction of S (the first iterate is a positive multiple
of R, the fixed-point step).

Inside a trust region (``trust_step``; the deep kernel form's default rule ``solvers.fixed_point.TrustRegion``) the
same CG iterates are cut at the ball |delta| <= radius in this metric (Steihaug-Toint), which bounds the step where
S is not convex (far from the solution in mean field) instead of backtracking a long negative-curvature step.

Measured (erf, d = 20, N_l = 200, gamma = 2, kappa2 = 1e-2, L = 4; CPU seconds after compilation on the shared
2-core machine, docs/deep_solver.md): one evaluation of the map / one product with J cost 0.023 / 0.031 s at P = 200,
0.17 / 0.24 s at P = 400, 2.5 / 4.8 s at P = 1000 (the product is ~21 matrix products per layer forward and
backward, no factorisation and no triangular solve of the chain: the derivatives of the layer factors are matrix
products, ``actions.deep.symmetric_sqrt``; with JAX's Cholesky rule it held 12 triangular solves per layer and took
0.060 / 0.38 s at P = 200 / 400; the symmetric factors cost 15% more per evaluation and product than Cholesky factors
by ``actions.deep.cholesky_with_inverse`` at P = 400). With the trust-region rule the P = 100 solves take 10 / 11 / 12
evaluations and 47 / 72 / 122 products at L = 2 / 4 / 8 (10 / 16 / 16 and 73 / 166 / 313 in Cholesky coordinates;
the damped Newton rule there: 17 / 30 / 45 and 114 / 278 / 678), most products in the last Newton steps where the
forcing term is tight. Forcing terms min(0.3, residual) or min(0.3, sqrt(residual)) save a third of the
products for erf at L = 8 under the damped Newton rule but cost ReLU more rejected steps (docs/deep_solver.md).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels.solvers.coordinates import TRUST_PATHS as PATHS
from adaptive_kernels.solvers.coordinates import TRUST_SUBPROBLEMS as SUBPROBLEMS
from adaptive_kernels.solvers.coordinates import stationarity_tolerance


def _inner(A, B, Sigma, weights):
    """<A, B> = sum_l (N_l/2) tr(Sigma_l A_l Sigma_l B_l) over PyTrees of matrices."""
    terms = jax.tree.map(lambda a, b, S, w: 0.5 * w * jnp.sum((S @ a @ S) * b), A, B, Sigma, weights)
    return sum(jax.tree.leaves(terms))


def _left(Sigma, A):
    """Sigma_l A_l per leaf."""
    return jax.tree.map(lambda S, a: S @ a, Sigma, A)


def _inner_left(SA, SB, weights):
    """<A, B> from SA = Sigma A and SB = Sigma B: tr(Sigma A Sigma B) = sum_ij (Sigma A)_ij (Sigma B)_ji, no product."""
    return sum(jax.tree.leaves(jax.tree.map(lambda a, b, w: 0.5 * w * jnp.sum(a * b.T), SA, SB, weights)))


def _axpy(alpha, x, y):
    return jax.tree.map(lambda a, b: alpha * a + b, x, y)


class TrustStep(eqx.Module):
    """A step of :meth:`KrylovPrecisionModel.trust_step`: ``delta`` (in the precisions) and ``sigma_delta`` = Sigma
    delta; ``additive``: whether the trial point is Lambda + delta (else Sigma - Sigma delta Sigma, :meth:`point`);
    ``path``: the rule that chose it (:meth:`KrylovPrecisionModel.trust_step`); ``predicted``: the decrease of the
    action predicted along that path (-m(delta); the hybrid rule adds the additive path's second-order term where it
    takes that path); ``slope`` = <R, delta> (so that the prediction for t delta is t slope - t^2 (slope -
    predicted)); ``length`` = |delta| in the metric; ``products`` with J taken."""

    delta: object
    sigma_delta: object
    additive: jnp.ndarray
    predicted: jnp.ndarray
    slope: jnp.ndarray
    length: jnp.ndarray
    products: jnp.ndarray
    path: str = eqx.field(static=True, default="additive")

    def scaled(self, t) -> TrustStep:
        """The step t delta (0 <= t <= 1) with its prediction along the line; no product with J."""
        return TrustStep(delta=jax.tree.map(lambda d: t * d, self.delta),
                         sigma_delta=jax.tree.map(lambda d: t * d, self.sigma_delta), additive=self.additive,
                         predicted=t * self.slope - t**2 * (self.slope - self.predicted), slope=t * self.slope,
                         length=t * self.length, products=jnp.zeros_like(self.products), path=self.path)

    def point(self, Lambda):
        """The trial precisions: Lambda + delta where ``additive``, else the step taken linearly in the covariances,
        Sigma' = Sigma - Sigma delta Sigma (:func:`sigma_retraction`), the path along which m is the exact second-order
        Taylor expansion of S; for the paths ``"exponential"`` and ``"rotation"`` their retractions
        (:func:`exponential_retraction`, :func:`rotation_retraction`)."""
        if self.path == "additive":
            return jax.tree.map(jnp.add, Lambda, self.delta)
        if self.path == "exponential":
            return jax.tree.map(exponential_retraction, Lambda, self.delta)
        if self.path == "rotation":
            return jax.tree.map(rotation_retraction, Lambda, self.delta)
        covariance = jax.tree.map(sigma_retraction, Lambda, self.delta, self.sigma_delta)
        if self.path == "covariance":
            return covariance
        return jax.tree.map(lambda L, d, c: jnp.where(self.additive, L + d, c), Lambda, self.delta, covariance)


def exponential_retraction(Lambda, delta):
    """The affine-invariant geodesic from Lambda along delta, Lambda^{1/2} expm(Lambda^{-1/2} delta Lambda^{-1/2})
    Lambda^{1/2}: the exponential map of the metric <A, B> = tr(Sigma A Sigma B), a step linear in the log-eigenvalues
    of the whitened Q = Lambda^{-1} where delta commutes with Lambda. Written with any factor C C^T = Lambda (here the
    Cholesky factor: C expm(C^{-1} delta C^{-T}) C^T is the same matrix, since C = Lambda^{1/2} O with O orthogonal) as
    W diag(exp e) W^T, W = C U, for the eigendecomposition U diag(e) U^T of C^{-1} delta C^{-T} (one Cholesky, two
    triangular solves, one eigh). Positive definite for every finite delta; Lambda + delta + delta Sigma delta / 2 to
    second order."""
    C = jnp.linalg.cholesky(Lambda)
    half = jax.scipy.linalg.solve_triangular(C, delta, lower=True)
    X = jax.scipy.linalg.solve_triangular(C, half.T, lower=True)
    e, U = jnp.linalg.eigh(0.5 * (X + X.T))
    W = C @ U
    return (W * jnp.exp(e)) @ W.T


ROTATION_GAP = 0.5
"""Eigenvalue pairs of Lambda whose difference exceeds this fraction of their mean are mixed by a rotation in
:func:`rotation_retraction` (measured: 0.1, 0.25, 0.5, 1; docs/deep_solver.md, thirteenth pass)."""


def rotation_retraction(Lambda, delta, gap: float = ROTATION_GAP):
    """The trial point U expm(Omega) (diag(lam) + D_near) expm(Omega)^T U^T for Lambda = U diag(lam) U^T and
    D = U^T delta U: the part of D that mixes well-separated eigenvalues (|lam_j - lam_i| > gap (lam_i + lam_j) / 2)
    is taken as the rotation with generator Omega_ij = D_ij / (lam_j - lam_i) (antisymmetric; [Omega, diag(lam)] =
    that part of D), the rest (eigenvalue changes and the mixing of near-degenerate ones) additively, D_near.
    Equal to Lambda + delta to first order (so Newton's local convergence is kept) and exactly the rotated Lambda,
    spectrum unchanged, where delta is a pure rotation of separated eigen-directions. Why: at the deep saddle the
    action's soft Hessian mode turns the raised eigen-directions of Q_l against the bulk (docs/deep_solver.md,
    thirteenth pass), and along a straight line in Lambda such a turn shrinks the raised eigenvalue at second order
    (a chord, not the arc) -- the curved valley the additive steps overshot. One eigh and one expm per layer and
    trial point."""
    lam, U = jnp.linalg.eigh(Lambda)
    D = U.T @ (0.5 * (delta + delta.T)) @ U
    diff = lam[None, :] - lam[:, None]  # [i, j] = lam_j - lam_i
    rotate = jnp.abs(diff) > 0.5 * gap * (jnp.abs(lam[None, :]) + jnp.abs(lam[:, None]))
    Omega = jnp.where(rotate, D / jnp.where(rotate, diff, 1.0), 0.0)
    W = U @ jax.scipy.linalg.expm(0.5 * (Omega - Omega.T))
    point = (W * lam) @ W.T + W @ jnp.where(rotate, 0.0, D) @ W.T
    return 0.5 * (point + point.T)


def sigma_retraction(Lambda, delta, sigma_delta):
    """(Sigma - Sigma delta Sigma)^{-1} = (I - delta Sigma)^{-1} Lambda = Lambda + (I - delta Sigma)^{-1} delta for
    Sigma = Lambda^{-1} (one LU solve, no inverse of Lambda; symmetric in exact arithmetic by the push-through
    identity, symmetrised here). Equal to Lambda for delta = 0 and to Lambda + delta to first order; it is not
    positive definite exactly where Sigma - Sigma delta Sigma is not (eigenvalues of Sigma^{1/2} delta Sigma^{1/2}
    at or above 1), which the domain guard then rejects."""
    eye = jnp.eye(Lambda.shape[0], dtype=Lambda.dtype)
    step = jnp.linalg.solve(eye - sigma_delta.T, delta)  # delta Sigma = (Sigma delta)^T
    return Lambda + 0.5 * (step + step.T)


def _tridiagonal_trust(diag, off, k, gnorm, radius, newton_steps: int = 60):
    """(h, lambda): the minimiser of -gnorm h_0 + h^T T h / 2 over |h| <= radius for the k x k leading block T of the
    symmetric tridiagonal (``diag``, ``off``) (the Lanczos form of the Newton model; Gould, Lucidi, Roma & Toint,
    SIAM J. Optim. 9 (1999) 504, sec. 5): h = (T + lambda I)^{-1} gnorm e_0 with lambda = 0 where T is positive
    definite and that h lies inside, else lambda >= max(0, -theta_min) with |h| = radius, found by Newton's
    iteration on 1/|h(lambda)| - 1/radius from the left (More & Sorensen), in T's eigenbasis. The rows from k on are
    decoupled and set above the Gershgorin bound of the block (so its spectrum is untouched and h vanishes there); the
    hard case (e_0 orthogonal to the lowest eigenvector) returns the interior point at the lowest admissible lambda."""
    m = diag.shape[0]
    active = jnp.arange(m) < k
    bound = jnp.max(jnp.where(active, diag, -jnp.inf)) + 2 * jnp.max(jnp.abs(jnp.where(active[1:], off[:m - 1], 0)))
    d = jnp.where(active, diag, bound + 1 + jnp.arange(m))
    e = jnp.where(jnp.arange(m - 1) < k - 1, off[:m - 1], 0.0)
    theta, V = jnp.linalg.eigh(jnp.diag(d) + jnp.diag(e, 1) + jnp.diag(e, -1))
    c = gnorm * V[0]

    def norm2(lam):
        return jnp.sum((c / (theta + lam)) ** 2)

    floor = jnp.maximum(0.0, -theta[0])
    interior = (theta[0] > 0) & (norm2(0.0) <= radius**2)
    start = floor + 1e-12 * (1 + jnp.abs(theta[0]) + jnp.abs(floor))

    def newton(_, lam):
        n2 = norm2(lam)
        slope = -jnp.sum(c**2 / (theta + lam) ** 3)  # d|h|^2/dlambda / 2
        # phi = 1/|h| - 1/radius; phi' = -slope / |h|^3
        step = (1 / jnp.sqrt(n2) - 1 / radius) * n2**1.5 / slope
        return jnp.maximum(lam + step, floor)

    lam = jnp.where(interior | jnp.isinf(radius), floor, jax.lax.fori_loop(0, newton_steps, newton, start))
    lam = jnp.where(interior, 0.0, lam)
    h = V @ (c / (theta + lam))
    return jnp.where(active, h, 0.0), lam


class KrylovPrecisionModel(eqx.Module):
    """The exact Jacobian of the precision map (module docstring); ``newton_step`` by truncated CG.

    Attributes:
        Sigma: the covariances (a PyTree of matrices) the map was linearised at.
        weights: N_l per leaf (the action's prior weights).
        grad_jvp: the linearisation dSigma -> d(dD/dSigma) (a ``jax.tree_util.Partial``).
        rtol: the largest relative residual a step is solved to.
        max_steps: products with J per step at most.
        exact: True (J is the Jacobian of the map itself), so the Newton rules take plain Newton steps.
    """

    Sigma: object
    weights: object
    grad_jvp: object
    rtol: float = eqx.field(static=True, default=0.1)
    max_steps: int = eqx.field(static=True, default=100)
    exact: bool = eqx.field(static=True, default=True)

    def norm(self, A):
        """|A| in the metric (module docstring)."""
        return jnp.sqrt(_inner(A, A, self.Sigma, self.weights))

    def operator(self, delta):
        """(I - J) delta."""
        return self._operator(delta, _left(self.Sigma, delta))

    def _operator(self, delta, S_delta):
        """(I - J) delta from delta and Sigma delta (dSigma = -Sigma delta Sigma = -(Sigma delta) Sigma)."""
        dG = self.grad_jvp(jax.tree.map(lambda Sx, S: -Sx @ S, S_delta, self.Sigma))
        return jax.tree.map(lambda x, g, w: x - (g + g.T) / w, delta, dG, self.weights)

    def newton_step(self, R):
        """delta with (I - J) delta = R to the forcing tolerance (module docstring); R where the first direction
        already has non-positive curvature."""
        return self.trust_step(R, jnp.inf).delta

    def _gltr(self, R, SR, rr0, radius, tol2):
        """(delta, products, |delta|^2, -m(delta)) by the generalised Lanczos trust-region method (GLTR; Gould, Lucidi,
        Roma & Toint 1999): the CG recurrences, run on through non-positive curvature, give the Lanczos tridiagonal T
        of I - J in the metric (Lanczos vectors (-1)^j r_j / |r_j|; diagonal 1/alpha_j + beta_{j-1}/alpha_{j-1},
        off-diagonal sqrt(beta_j)/alpha_j: Saad, Iterative Methods for Sparse Linear Systems, sec. 6.7.3); after each
        product the model is minimised over the ball in the Krylov space (:func:`_tridiagonal_trust`) and the loop
        stops when the residual of that minimiser, |(I - J + lambda) delta - R| = |T_{k+1,k} h_k|, is below the
        forcing tolerance. Interior solution (lambda = 0): the CG iterate itself; on the boundary the Lanczos vectors
        are regenerated by a second pass of the same recurrences (k more products; they are not stored)."""
        inner = lambda A, B: _inner_left(A, B, self.weights)  # noqa: E731
        m = self.max_steps
        dtype = rr0.dtype
        zero = jax.tree.map(jnp.zeros_like, R)

        def advance(r, p, Sr, Sp, rr):
            Ap = self._operator(p, Sp)
            SAp = _left(self.Sigma, Ap)
            curvature = inner(Sp, SAp)
            alpha = rr / jnp.where(curvature == 0, jnp.finfo(dtype).tiny, curvature)
            r_new, Sr_new = _axpy(-alpha, Ap, r), _axpy(-alpha, SAp, Sr)
            rr_new = inner(Sr_new, Sr_new)
            beta = rr_new / rr
            return alpha, beta, r_new, _axpy(beta, p, r_new), Sr_new, _axpy(beta, Sp, Sr_new), rr_new

        def cond(carry):
            return ~carry[-1]

        def body(carry):
            x, r, p, Sr, Sp, rr, k, alpha_prev, beta_prev, diag, off, _, _ = carry
            alpha, beta, r, p_new, Sr, Sp, rr_new = advance(r, p, Sr, Sp, rr)
            diag = diag.at[k].set(1 / alpha + jnp.where(k > 0, beta_prev / alpha_prev, 0.0))
            off = off.at[k].set(jnp.sqrt(beta) / alpha)
            h, lam = _tridiagonal_trust(diag, off, k + 1, jnp.sqrt(rr0), radius)
            residual2 = (off[k] * h[k]) ** 2
            done = (residual2 <= tol2) | (rr_new == 0) | (k + 1 >= m) | ~jnp.isfinite(residual2)
            return (_axpy(alpha, p, x), r, p_new, Sr, Sp, rr_new, k + 1, alpha, beta, diag, off, lam, done)

        start = (zero, R, R, SR, SR, rr0, jnp.asarray(0), jnp.asarray(1.0, dtype), jnp.asarray(0.0, dtype),
                 jnp.zeros(m, dtype), jnp.zeros(m, dtype), jnp.asarray(0.0, dtype), jnp.asarray(False))
        x, *_, k, _, _, diag, off, lam, _ = jax.lax.while_loop(cond, body, start)
        h, _ = _tridiagonal_trust(diag, off, k, jnp.sqrt(rr0), radius)
        e = jnp.where(jnp.arange(m - 1) < k - 1, off[:m - 1], 0.0)
        reduction = jnp.sqrt(rr0) * h[0] - 0.5 * (jnp.sum(diag * h**2) + 2 * jnp.sum(e * h[:-1] * h[1:]))

        def second_pass():
            def body2(carry):
                delta, r, p, Sr, Sp, rr, i = carry
                sign = jnp.where(i % 2 == 0, 1.0, -1.0)
                delta = _axpy(sign * h[i] / jnp.sqrt(rr), r, delta)
                _, _, r, p, Sr, Sp, rr = advance(r, p, Sr, Sp, rr)
                return delta, r, p, Sr, Sp, rr, i + 1

            return jax.lax.while_loop(lambda c: c[-1] < k, body2, (zero, R, R, SR, SR, rr0, jnp.asarray(0)))[0]

        delta = jax.lax.cond(lam > 0, second_pass, lambda: x)
        return delta, jnp.where(lam > 0, 2 * k, k), jnp.sum(h**2), reduction

    def trust_step(self, R, radius, path: str = "additive", subproblem: str = "steihaug") -> TrustStep:
        """Steihaug-Toint CG for the Newton model m(delta) = -<R, delta> + <delta, (I - J) delta> / 2 in the ball
        |delta| <= ``radius`` (the metric norm; Nocedal & Wright, Numerical Optimization, alg. 7.2): the CG iterates
        of (I - J) delta = R until the forcing tolerance (module docstring), or the step to the boundary where an
        iterate would leave the ball or the curvature is not positive (radius inf: the last iterate there). The
        first iterate is along R, so the step is a descent direction of S (whose gradient in this metric is -R)
        and m decreases along the path; ``predicted`` = -m(delta) from the recurrences, no further product.

        ``path``: where the trial point lies (:meth:`TrustStep.point`). ``"additive"``: Lambda + delta (the default).
        ``"covariance"``: Sigma - Sigma delta Sigma, along which m is the exact second-order Taylor expansion of S (m
        is the expansion in Sigma: the entropy and D have Hessian I - J there and gradient -R at any point); along
        Lambda + delta, Sigma = Sigma - Sigma delta Sigma + Sigma delta Sigma delta Sigma + ..., S differs from m by
        ``bend`` = (N_l/2) tr(R Sigma delta Sigma delta Sigma) (summed over layers) at second order. ``"hybrid"``: the
        additive path where bend < 0 (it lowers S further at second order), else the covariance path; the prediction
        includes the chosen path's second-order term. ``"exponential"``: the geodesic Lambda^{1/2} expm(Lambda^{-1/2}
        delta Lambda^{-1/2}) Lambda^{1/2} (:func:`exponential_retraction`; linear in the log-eigenvalues of Q along the
        all-layer mode), second-order term bend / 2, predicted by m alone. ``"rotation"``: the part of delta that mixes
        well-separated eigenvalues of Lambda taken as a rotation (:func:`rotation_retraction`), predicted by m alone.
        Near the saddle (R -> 0) all five coincide to second order: Newton's quadratic convergence is kept.

        ``subproblem``: ``"steihaug"`` (the CG cut at the ball, above) or ``"lanczos"`` (:meth:`_gltr`: m's minimiser
        over the ball in the Krylov space, the same step where that lies inside). Measured: docs/deep_solver.md."""
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if subproblem not in SUBPROBLEMS:
            raise ValueError(f"subproblem must be one of {SUBPROBLEMS}, got {subproblem!r}")
        inner = lambda A, B: _inner_left(A, B, self.weights)  # noqa: E731  (of Sigma A, Sigma B)
        # the CG carries Sigma r and Sigma p by the same recurrences as r and p: an iteration costs the product with J
        # and two matrix products per layer (Sigma p Sigma, Sigma (I - J) p), its inner products none
        SR = _left(self.Sigma, R)
        stationarity = jnp.max(jnp.stack([jnp.max(jnp.abs(a)) for a in jax.tree.leaves(SR)]))  # max |Sigma T - I|
        rr0 = inner(SR, SR)
        radius = jnp.asarray(radius, rr0.dtype)
        target = 0.5 * stationarity_tolerance(None, R) / stationarity
        tol2 = jnp.minimum(self.rtol, jnp.maximum(jnp.sqrt(stationarity), target)) ** 2 * rr0
        zero = jax.tree.map(jnp.zeros_like, R)
        scalar = lambda v: jnp.asarray(v, rr0.dtype)  # noqa: E731
        # carry: iterate x, residual r, direction p, Sigma r, Sigma p, <r, r>, k, stop, |x|^2, <x, p>, |p|^2, -m(x)
        start = (zero, R, R, SR, SR, rr0, jnp.asarray(0), jnp.asarray(False), scalar(0), scalar(0), rr0, scalar(0))

        def cond(carry):
            *_, rr, k, stop, _, _, _, _ = carry
            return ~stop & (k < self.max_steps) & (rr > tol2)

        def body(carry):
            x, r, p, Sr, Sp, rr, k, _, xx, xp, pp, reduction = carry
            Ap = self._operator(p, Sp)
            SAp = _left(self.Sigma, Ap)
            curvature = inner(Sp, SAp)
            negative = ~(curvature > 0)
            alpha = jnp.where(negative, 0.0, rr / jnp.where(negative, 1.0, curvature))
            # the boundary: |x + tau p| = radius (tau = 0 without a finite radius)
            tau = (jnp.sqrt(jnp.maximum(xp**2 + pp * (radius**2 - xx), 0.0)) - xp) / pp
            tau = jnp.where(jnp.isinf(radius), 0.0, tau)
            outside = negative | (xx + 2 * alpha * xp + alpha**2 * pp >= radius**2)
            t = jnp.where(outside, tau, alpha)
            x_new = _axpy(t, p, x)
            r_new, Sr_new = _axpy(-t, Ap, r), _axpy(-t, SAp, Sr)
            rr_new = inner(Sr_new, Sr_new)
            beta = rr_new / rr
            p_new, Sp_new = _axpy(beta, p, r_new), _axpy(beta, Sp, Sr_new)
            reduction = reduction + t * rr - 0.5 * t**2 * curvature  # m(x + t p) = m(x) - t <r, p> + t^2 <p, Ap> / 2
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(outside, b, a), new, old)  # noqa: E731
            return (x_new, keep(r_new, r), keep(p_new, p), keep(Sr_new, Sr), keep(Sp_new, Sp),
                    jnp.where(outside, rr, rr_new), k + 1, outside,
                    xx + 2 * t * xp + t**2 * pp, beta * (xp + alpha * pp), rr_new + beta**2 * pp, reduction)

        if subproblem == "lanczos":
            x, k, xx, reduction = self._gltr(R, SR, rr0, radius, tol2)
        else:
            x, *_, k, _, xx, _, _, reduction = jax.lax.while_loop(cond, body, start)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(x)])) & jnp.isfinite(reduction)
        use_R = (xx == 0) | ~finite  # the fixed-point step R, shortened to the ball
        scale = jnp.minimum(1.0, radius / jnp.sqrt(rr0))
        delta = jax.tree.map(lambda a, b: jnp.where(use_R, scale * b, 0.5 * (a + a.T)), x, R)
        S_delta = _left(self.Sigma, delta)
        slope = inner(SR, S_delta)  # the fallback's prediction: the first-order decrease
        bend = sum(jax.tree.leaves(jax.tree.map(lambda r, d, w: 0.5 * w * jnp.sum(r.T * (d @ d)), SR, S_delta,
                                                self.weights)))
        additive = {"additive": jnp.asarray(True), "covariance": jnp.asarray(False), "hybrid": bend < 0,
                    "exponential": jnp.asarray(False), "rotation": jnp.asarray(False)}[path]
        # the hybrid path's prediction includes its second-order term (the additive rule keeps its previous one, m)
        predicted = jnp.where(use_R, slope, reduction) - jnp.where(additive & (path == "hybrid"), bend, 0.0)
        return TrustStep(delta=delta, sigma_delta=S_delta, additive=additive, predicted=predicted, slope=slope,
                         length=jnp.sqrt(inner(S_delta, S_delta)), products=k, path=path)


def krylov_linearisation(action, Sigma, args, rtol: float = 0.1, max_steps: int = 100):
    """(D, dD/dSigma, :class:`KrylovPrecisionModel`) of ``action`` at Sigma from one linearised evaluation."""
    (value, grads), jvp = jax.linearize(lambda S: jax.value_and_grad(action.data_term)(S, args), Sigma)
    weights, _ = action.prior(args)
    grad_jvp = jax.tree_util.Partial(lambda f, t: f(t)[1], jvp)
    return value, grads, KrylovPrecisionModel(Sigma, weights, grad_jvp, rtol, max_steps)
