"""``adaptive-kernels solve``: one saddle-point solve on data from an .npz file.

    adaptive-kernels solve --data DATA.npz --theory adaptive --activation erf --width 200 \\
        --gamma 2 --kappa2 0.01 --sigma-w2 1 --sigma-a2 1 [--patches S --channels C] \\
        [--depth L] [--form auto|weight|kernel|conjugate] [--measure gaussian|second_order|exact] \\
        [--solver fixed-point|gradient] [--loops 1] --json

DATA.npz holds X (P, d) and y (P,), optionally X_test, y_test and w_star. With --json the
result is one JSON object (theory, converged, status, iterations, action, mean_output_test,
learnability, test_mse, wall_time_s, and per hidden layer -- lists, first layer first --
eigenvalue_ratio of the layer's input-space covariance along w_star where the theory has one,
kernel_eigenvalue_ratio and kernel_target_alignment of its kernel along y). The solver defaults to
the library's (``adaptive_kernels.solve``).
"""

from __future__ import annotations

import json
import time
import zipfile

import jax
import numpy as np

from adaptive_kernels.api import SOLVERS
from adaptive_kernels.cli import UsageError
from adaptive_kernels.theories import FORMS, MEASURES

ARRAYS = ("X", "y", "X_test", "y_test", "w_star")
FLAGS = {"kappa2": "--kappa2", "s_w2": "--sigma-w2", "s_a2": "--sigma-a2", "gamma": "--gamma", "widths": "--width",
         "activation": "--activation", "data.X": "--data", "data.y": "--data", "X_test": "--data"}
"""The option behind a library parameter, for error messages that start with the parameter's name."""


def _with_flag(err: Exception) -> str:
    message = str(err)
    name = message.split(" ", 1)[0].split("[", 1)[0].rstrip(":")
    return f"{FLAGS[name]}: {message}" if name in FLAGS else message


def register(subparsers) -> None:
    p = subparsers.add_parser("solve", help="solve the gp / scaling / adaptive saddle point on a data file")
    p.add_argument("--data", required=True, help=".npz with X (P, d), y (P,); optional X_test, y_test, w_star")
    p.add_argument("--theory", choices=("gp", "scaling", "adaptive"), default="adaptive")
    p.add_argument("--activation", default="linear", help="linear, relu, erf, tanh, gelu, softplus, sigmoid")
    p.add_argument("--width", type=int, default=None, help="hidden width N (FCN)")
    p.add_argument("--depth", type=int, default=1, help="hidden layers of the FCN")
    p.add_argument("--patches", type=int, default=None, help="CNN: number of non-overlapping patches S")
    p.add_argument("--channels", type=int, default=None, help="CNN: number of channels C")
    p.add_argument("--gamma", type=float, default=1.0, help="readout exponent (1 standard, 2 mean-field)")
    p.add_argument("--kappa2", type=float, required=True, help="noise variance / temperature")
    p.add_argument("--sigma-w2", type=float, default=1.0)
    p.add_argument("--sigma-a2", type=float, default=1.0)
    p.add_argument("--form", choices=FORMS, default="auto",
                   help="adaptive theory: weight (Sigma per layer), kernel (P x P per layer), conjugate (forward-backward)")
    p.add_argument("--measure", choices=MEASURES, default="gaussian",
                   help="adaptive theory: the layer measure (exact: Monte Carlo, implies --form conjugate)")
    p.add_argument("--solver", choices=tuple(SOLVERS), default=None, help="default: the library's for the theory")
    p.add_argument("--loops", type=int, choices=(0, 1), default=0,
                   help="scaling / adaptive: 1 adds the one-loop finite-width corrections (posterior means)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def load_data(path: str):
    """A Dataset from an .npz file; a one-line UsageError for anything wrong with it."""
    from adaptive_kernels.data import Dataset

    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--data: no such file {path!r}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"--data: cannot read {path!r} as .npz ({err})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UsageError(f"--data: {path!r} holds one array (.npy), not an .npz with X and y "
                         "(write it with numpy.savez(path, X=X, y=y))")
    with loaded as f:
        arrays = {k: np.asarray(f[k]) for k in ARRAYS if k in f.files}
        missing = [k for k in ("X", "y") if k not in f.files]
    if missing:
        raise UsageError(f"--data: {path!r} lacks the array(s) {', '.join(missing)}")
    try:
        return Dataset(**arrays)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--data: {err}") from None


def build_arch(args, d: int):
    from adaptive_kernels.architectures import CNN, FCN

    for flag in ("width", "depth", "patches", "channels"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be a positive integer, got {value}")
    common = dict(activation=args.activation, s_w2=args.sigma_w2, s_a2=args.sigma_a2, gamma=args.gamma)
    if args.patches is not None or args.channels is not None:
        if args.patches is None or args.channels is None:
            raise UsageError("--patches and --channels go together (CNN)")
        if d % args.patches:
            raise UsageError(f"--patches: d = {d} is not divisible by {args.patches}")
        return CNN(d // args.patches, args.patches, args.channels, **common)
    if args.width is None:
        raise UsageError("--width is required for a fully connected net (or give --patches and --channels)")
    return FCN(d, (args.width,) * args.depth, **common)


def run(args) -> int:
    data = load_data(args.data)
    try:
        return _solve(args, data)
    except (ValueError, TypeError) as err:
        raise UsageError(_with_flag(err)) from None


def _solve(args, data) -> int:
    from adaptive_kernels.api import predict, solve, summarize

    arch = build_arch(args, data.d)
    start = time.perf_counter()
    options = {}
    if args.theory == "adaptive":
        form = "conjugate" if args.measure != "gaussian" and args.form == "auto" else args.form
        options = {"form": form, "measure": args.measure}
    if args.loops:
        if args.theory == "gp":
            raise UsageError("--loops: the NNGP has no order parameters to correct; use --theory scaling or adaptive")
        options["loops"] = args.loops
    solution = jax.block_until_ready(solve(arch, data, args.kappa2, args.theory, args.solver, **options))
    wall = time.perf_counter() - start
    prediction = predict(solution, arch, data, args.kappa2)
    out = summarize(solution, arch, data, args.kappa2, prediction=prediction)
    out["status_code"], out["status"] = out["status"], solution.message
    if prediction.mean_test is not None:
        out["mean_output_test"] = np.asarray(prediction.mean_test).tolist()
    if "ess" in solution.stats:  # the exact measure's effective sample size per layer
        out["ess"] = np.asarray(solution.stats["ess"]).tolist()
    out["wall_time_s"] = wall
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            if key != "mean_output_test":
                print(f"{key}: {value}")
    return 0 if out["converged"] else 1
