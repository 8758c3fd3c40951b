"""`adaptive-kernels solve` end to end: JSON output equals the Python API; bad input -> exit 2."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.cli import main


@pytest.fixture(scope="module")
def dataset():
    return ak.teacher_dataset(jax.random.PRNGKey(0), 12, 6, P_test=10)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, dataset):
    path = tmp_path_factory.mktemp("cli") / "data.npz"
    np.savez(path, **{k: np.asarray(getattr(dataset, k)) for k in ("X", "y", "X_test", "y_test", "w_star")})
    return path


def test_solve_json_matches_the_api(data_file, dataset, capsys):
    argv = ["solve", "--data", str(data_file), "--theory", "adaptive", "--activation", "linear", "--width", "30",
            "--gamma", "2", "--kappa2", "0.01", "--sigma-w2", "1", "--sigma-a2", "1", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    arch = ak.FCN(6, 30, "linear", gamma=2.0)
    sol = ak.solve(arch, dataset, 0.01, "adaptive")
    expected = ak.summarize(sol, arch, dataset, 0.01)
    for key in ("theory", "converged", "iterations", "action", "mean_output_test", "learnability", "test_mse",
                "eigenvalue_ratio", "wall_time_s", "status"):
        assert key in out
    # same solve, same code path: equal up to round-off
    np.testing.assert_allclose(out["learnability"], expected["learnability"], rtol=1e-10)
    np.testing.assert_allclose(out["eigenvalue_ratio"], expected["eigenvalue_ratio"], rtol=1e-8)
    assert len(out["mean_output_test"]) == 10 and out["converged"] is True


def test_console_script_cnn_and_scaling(data_file):
    cmd = [sys.executable, "-m", "adaptive_kernels.cli", "solve", "--data", str(data_file), "--theory", "scaling",
           "--activation", "erf", "--patches", "2", "--channels", "20", "--kappa2", "0.05", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["theory"] == "scaling" and out["converged"] is True and "eigenvalue_ratio" not in out


def test_bad_inputs_exit_nonzero_with_one_line(tmp_path, capsys):
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, X=np.zeros((4, 3)))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, X=np.zeros((4, 3)), y=np.zeros(5))
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    cases = [
        (["--data", str(tmp_path / "missing.npz")], "no such file"),
        (["--data", str(no_y)], "lacks the array(s) y"),
        (["--data", str(wrong)], "y must have 4 rows"),
        (["--data", str(junk)], "cannot read"),
    ]
    for extra, message in cases:
        code = main(["solve", *extra, "--width", "10", "--kappa2", "0.1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1


def test_deep_net_reports_per_layer_ratios(data_file, dataset, capsys):
    # --depth 2 (linear): one eigenvalue ratio along w_star per layer, from the P x P kernel form (Sigma_l =
    # X^+ K_l X^+T), equal to the ratios of the d x d input-space form (another formulation) to 1e-6; and one
    # kernel ratio along y per layer.
    argv = ["solve", "--data", str(data_file), "--theory", "adaptive", "--width", "30", "--depth", "2",
            "--gamma", "2", "--kappa2", "0.01", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    arch = ak.FCN(6, (30, 30), "linear", gamma=2.0)
    weight = ak.solve(arch, dataset, 0.01, "adaptive", form="weight")
    expected = [float(ak.eigenvalue_ratio(S, dataset.w_star)) for S in weight.value]
    assert out["converged"] is True and len(out["eigenvalue_ratio"]) == 2 and len(out["kernel_eigenvalue_ratio"]) == 2
    np.testing.assert_allclose(out["eigenvalue_ratio"], expected, rtol=1e-6)
    assert expected[1] > expected[0] > 1.0  # adaptation along the teacher grows with depth in mean field
