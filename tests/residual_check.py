"""An independent stationarity check for the tests: jax.grad of the action at a solution, in float64.

The solvers stop on their own residual (the precision map's max|Sigma T(Sigma) - I|, Newton models, L-BFGS);
this helper differentiates the action S(Sigma) = sum_l (N_l/2)[a_l tr Sigma_l - log det Sigma_l] + D(Sigma) with
jax.grad and returns max_l max|Sigma_l (2/N_l) sym(dS/dSigma_l)|, which vanishes exactly at a stationary point
(THEORY.md sec. 4: (2/N) dS/dSigma = a I - Sigma^{-1} + (2/N) dD/dSigma). None for forms without an action
(the NNGP, the deep conjugate map).
"""

import jax
import jax.numpy as jnp
import numpy as np

import adaptive_kernels as ak
from adaptive_kernels.actions.base import EntropicAction, as_matrix


def float64_data(data: ak.Dataset) -> ak.Dataset:
    cast = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
    return ak.Dataset(X=cast(data.X), y=cast(data.y), X_test=cast(data.X_test), y_test=cast(data.y_test),
                      w_star=cast(data.w_star))


def action_gradient_residual(solution, arch, data, kappa2):
    problem = ak.make_problem(arch, float64_data(data), kappa2)
    posed = solution.theory.problem(problem)  # None for the NNGP
    if posed is None or not isinstance(posed[0], EntropicAction):
        return None
    action, args = posed
    value = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), solution.value)
    grads = jax.grad(action)(value, args)
    weights, _ = action.prior(args)
    residuals = [
        jnp.max(jnp.abs(as_matrix(S) @ (as_matrix(g) + as_matrix(g).T) / w))
        for S, g, w in zip(jax.tree.leaves(value), jax.tree.leaves(grads), jax.tree.leaves(weights))
    ]
    return float(max(residuals))
