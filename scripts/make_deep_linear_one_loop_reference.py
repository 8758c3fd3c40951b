"""The weight form's one loop of a deep linear net, stored as the independent reference of
``tests/test_deep_exact_one_loop.py::test_deep_linear_net_reproduces_the_input_space_one_loop`` (the input-space one
loop, ``Adaptive(form="weight", loops=1)``: Wishart exponents in d x d weight covariances, not the code under test;
stored because its compilation costs ~70 s of CPU, which the test suite cannot afford):

    .venv/bin/python scripts/make_deep_linear_one_loop_reference.py --out tests/data/deep_linear_one_loop.json

Writes the first-layer ratio along w* and both layer kernels' ratios along y of the saddle and of the one loop, and
the mean output at the 10 test points of both (``ak.predict``; the weight form carries the test points in its
weights, so its one-loop mean output has no separate test-point fluctuations), for two hidden layers of N = 80,
d = 6, P = 4 (d > P: test inputs outside the training inputs' span), kappa2 = 1e-2, data
``teacher_dataset(PRNGKey(0), 4, 6, "cubic", P_test=10)``.
"""

from __future__ import annotations

import argparse
import json

import jax

jax.config.update("jax_enable_x64", True)

from jax.tree_util import Partial  # noqa: E402

import adaptive_kernels as ak  # noqa: E402
from adaptive_kernels.data import teacher_dataset  # noqa: E402
from adaptive_kernels.problem import make_problem  # noqa: E402

KAPPA2 = 1e-2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    data = teacher_dataset(jax.random.PRNGKey(0), 4, 6, "cubic", P_test=10)
    arch = ak.FCN(6, (80, 80), "linear", gamma=1.0)
    problem = make_problem(arch, data, KAPPA2)
    theory = ak.Adaptive(form="weight", loops=1)
    sol = ak.solve(arch, data, KAPPA2, theory)
    if not bool(sol.converged):
        raise RuntimeError(sol.message)
    fn = Partial(type(theory).input_covariances, sol.theory, problem=problem)
    loop = theory.mean(fn, sol.value, problem, linear=theory.kernels_linear(problem))[0]
    saddle_sol = ak.solve(arch, data, KAPPA2, ak.Adaptive(form="weight"))
    saddle = saddle_sol.value
    outputs = [[float(v) for v in ak.predict(s, arch, data, KAPPA2).mean_test] for s in (saddle_sol, sol)]

    def ratios(sigmas):
        return ([float(ak.eigenvalue_ratio(sigmas[0], data.w_star))]
                + [float(ak.eigenvalue_ratio(problem.X @ S @ problem.X.T, data.y)) for S in sigmas])

    json.dump({"script": "scripts/make_deep_linear_one_loop_reference.py", "d": 6, "P": 4, "widths": [80, 80],
               "gamma": 1.0, "kappa2": KAPPA2, "data_seed": 0, "teacher": "cubic",
               "quantities": ["first-layer ratio along w*", "kernel 1 ratio along y", "kernel 2 ratio along y"],
               "saddle": ratios(saddle), "one_loop": ratios(loop),
               "saddle_mean_test": outputs[0], "one_loop_mean_test": outputs[1]}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
