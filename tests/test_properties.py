"""Property-based tests of the input contract (docs/reliability.md) with hypothesis: over drawn shapes, dtypes and
values (NaN, inf, huge, tiny, negative), every public entry point either raises a ValueError/TypeError whose message
names the parameter, or returns a finite, correctly shaped result whose status is honest -- converged only if the
action's own gradient (jax.grad, independent of the solvers' stopping rules) vanishes there.

CI budget: the ``ci`` profile (few examples, derandomized, no deadline) keeps the file under ~40 s of CPU; shapes are
drawn from a few values so that the jitted solves compile a few times only. ``HYPOTHESIS_PROFILE=thorough`` draws
more.
"""

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import adaptive_kernels as ak
from adaptive_kernels.cli import main
from residual_check import action_gradient_residual

settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, -1.0, 1e30]
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.complex128, np.bool_]
PARAMETERS = {"X", "X1", "X2", "y", "X_test", "y_test", "w_star", "K", "K_cross", "K_test_diag", "kappa2", "data", "data.X",
              "data.y", "s_w2", "s_a2", "s_b2", "gamma", "widths", "d", "solution", "init", "arch", "activation"}
MESSAGES_WITHOUT_A_LEADING_NAME = ("the pre-activation variance", "the output kernel's scale")


def names_a_parameter(err: Exception) -> bool:
    message = str(err)
    first = message.split(" ", 1)[0].split("[", 1)[0].rstrip(":,")
    return first in PARAMETERS or message.startswith(MESSAGES_WITHOUT_A_LEADING_NAME)


@st.composite
def arrays(draw, shape, dtypes=DTYPES, special=st.booleans()):
    """An array of the given shape: normal values, with a special one where ``special`` draws True, in one of
    ``dtypes`` (repeat an entry to draw it more often)."""
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).normal(size=shape)
    if values.size and draw(special):
        flat = values.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIAL))
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@st.composite
def datasets(draw, P=st.sampled_from([0, 1, 4]), d=st.sampled_from([0, 2]), dtypes=DTYPES, special=st.booleans(),
             y_shapes=lambda P: [(P,), (P, 0), (P, 2), (P + 1,)]):
    P, d = draw(P), draw(d)
    y_shape = draw(st.sampled_from(y_shapes(P)))
    return draw(arrays((P, d), dtypes, special)), draw(arrays(y_shape, dtypes, special))


MOSTLY_VALID = dict(P=st.sampled_from([1, 4]), d=st.just(2), special=st.sampled_from([False] * 5 + [True]),
                    y_shapes=lambda P: [(P,), (P,), (P, 2), (P, 0)])
"""Solves and CLI runs: inputs mostly valid (a bad one now and then), so that most draws reach the solvers."""


def finite(*values) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(v, dtype=float)))) for v in values if v is not None)


# --- Dataset --------------------------------------------------------------------------------------------------------
@given(datasets())
@settings(max_examples=40)
def test_dataset_accepts_only_real_finite_nonempty_arrays(xy):
    X, y = xy
    try:
        data = ak.Dataset(X=X, y=y)
    except (ValueError, TypeError) as err:
        assert names_a_parameter(err), err
        return
    assert X.size and y.size and X.shape[0] == y.shape[0] and finite(X, y)
    assert not np.iscomplexobj(X) and not np.iscomplexobj(y) and X.dtype != bool and y.dtype != bool
    assert data.P == X.shape[0] >= 1 and data.d == X.shape[1] >= 1


# --- gp_predict -----------------------------------------------------------------------------------------------------
@given(st.sampled_from([1, 3]), st.integers(0, 2**16), st.sampled_from(SPECIAL + [1e-3, 1.0]),
       st.sampled_from([1.0, 1e-200, 1e200]), st.sampled_from([np.float64, np.float32, np.int64, np.complex128]),
       st.booleans())
def test_gp_predict_gives_finite_shaped_results_or_names_the_argument(P, seed, kappa2, scale, dtype, with_test):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(P, P))
    with np.errstate(all="ignore"):
        K = (scale * A @ A.T).astype(dtype)
    y, cross = rng.normal(size=P), rng.normal(size=(2, P)) if with_test else None
    diag = np.ones(2) if with_test else None
    try:
        out = ak.gp_predict(K, y, kappa2, cross, diag)
    except (ValueError, TypeError) as err:
        assert names_a_parameter(err), err
        return
    assert out.mean.shape == ((2,) if with_test else (P,)) and finite(out.mean, out.variance)
    assert dtype in (np.float64, np.float32) and np.isfinite(kappa2) and kappa2 > 0


# --- nngp -----------------------------------------------------------------------------------------------------------
@given(arrays((3, 2), [np.float64, np.float32, np.int64, np.float16, np.complex128]),
       st.sampled_from(["linear", "relu", "erf"]), st.sampled_from([1e-3, 1.0, 1e3]))
def test_nngp_keeps_the_float_type_and_is_symmetric(X, activation, s_w2):
    arch = ak.FCN(2, 10, activation, s_w2=s_w2)
    try:
        K = ak.nngp(arch, X)
    except (ValueError, TypeError) as err:
        assert names_a_parameter(err), err
        return
    want = np.float32 if X.dtype in (np.float32, np.float16) else np.float64
    assert K.shape == (3, 3) and K.dtype == want and finite(K) and bool(np.all(K == K.T))


# --- solve / predict / summarize ------------------------------------------------------------------------------------
KAPPA2 = st.sampled_from([1e-2, 1e-2, 1.0, 1.0, 1e-12, 1e300, 1e-300, 0.0, -1.0, np.nan])


@given(datasets(dtypes=[np.float64] * 4 + [np.int64, np.complex128], **MOSTLY_VALID),
       KAPPA2, st.sampled_from(["gp", "scaling", "adaptive"]), st.sampled_from(["linear", "erf"]),
       st.sampled_from([1.0, 2.0]), st.sampled_from([1.0, 1.0, 1e-200, 1e200]), st.sampled_from([5, 10**6]))
@settings(max_examples=12)
def test_solve_predict_summarize_are_finite_and_honest_or_name_the_argument(xy, kappa2, theory, activation, gamma,
                                                                            s_w2, width):
    X, y = xy
    try:
        data = ak.Dataset(X=X, y=y, w_star=np.ones(2))
        arch = ak.FCN(2, width, activation, s_w2=s_w2, gamma=gamma)
        solution = ak.solve(arch, data, kappa2, theory)
        summary = ak.summarize(solution, arch, data, kappa2)
    except (ValueError, TypeError) as err:
        assert names_a_parameter(err), err
        event("rejected")
        return
    event(f"solved: {solution.message}")
    assert summary["converged"] == bool(solution.converged) and summary["status"] == int(solution.status)
    if solution.converged:
        assert finite(summary["action"], summary["train_mse"], *[v for v in summary.values() if isinstance(v, list)])
        residual = action_gradient_residual(solution, arch, data, kappa2)
        assert residual is None or residual < 1e-6, residual
    else:
        assert solution.message != "converged"


# --- the command line, in process -----------------------------------------------------------------------------------
BAD_OPTIONS = [[]] * 8 + [["--kappa2", "nan"], ["--kappa2", "-1"], ["--kappa2", "1e300"], ["--kappa2", "1e-300"],
               ["--width", "0"], ["--width", "-3"], ["--depth", "0"], ["--activation", "swish"],
               ["--patches", "0", "--channels", "3"], ["--gamma", "5"]]
"""At most one bad option per CLI run (often none), after valid ones it overrides."""


@given(datasets(dtypes=[np.float64] * 8 + [np.float16, np.complex128], **MOSTLY_VALID),
       st.sampled_from(["0.01", "1", "1e-6"]), st.sampled_from(["1", "2"]), st.sampled_from(["linear", "erf"]),
       st.sampled_from([[], ["--patches", "2", "--channels", "3"]]), st.sampled_from(BAD_OPTIONS))
@settings(max_examples=12)
def test_cli_exits_0_or_1_with_honest_json_or_2_with_one_line(tmp_path_factory, xy, kappa2, depth, activation, cnn,
                                                               bad):
    path = tmp_path_factory.mktemp("cli") / "data.npz"
    np.savez(path, X=xy[0], y=xy[1])
    argv = ["solve", "--data", str(path), "--kappa2", kappa2, "--width", "5", "--depth", depth, "--activation",
            activation, *cnn, *bad, "--json"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    errors = [line for line in err.getvalue().splitlines() if ": error: " in line]
    event(f"exit {code}")
    if code == 2:
        assert len(errors) == 1 and err.getvalue().strip().splitlines()[-1] == errors[0], err.getvalue()
        return
    assert code in (0, 1) and not errors
    result = json.loads(out.getvalue())
    assert result["converged"] == (code == 0) and (result["status"] == "converged") == (code == 0)
    assert finite(result["action"], result["train_mse"])


@pytest.mark.parametrize("argv, flag", [
    (["--patches", "0", "--channels", "3"], "--patches"),
    (["--width", "0"], "--width"),
    (["--kappa2", "1e300"], "--kappa2"),
    (["--sigma-w2", "-1"], "--sigma-w2"),
])
def test_cli_errors_name_the_option(tmp_path, argv, flag, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((3, 2)), y=np.ones(3))
    assert main(["solve", "--data", str(path), "--kappa2", "0.1", "--width", "5", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
