"""``adaptive-kernels sweep CONFIG.toml --out RESULTS.parquet [--scheduler ADDRESS | --part I/N]``.

Solves every point of a sweep file (``examples/sweep_example.toml``), saving finished
batches as they complete; re-running the same command resumes where it stopped.

Where the batches run: in this process (default); on a dask.distributed cluster
(``--scheduler tcp://HOST:8786``: this process sends batches to the workers and writes their
rows; needs ``pip install 'adaptive_kernels[dask]'``); or split over independent processes
of a plain job array (``--part I/N`` in each, then once without ``--part`` to merge).
Runs into the same ``--out`` at the same time share the work. Exit status: 0 done, 1 some
batches failed (the rest is stored; run again), 2 a bad config or argument (one line).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from adaptive_kernels.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="solve a grid of scaling regimes from a TOML file into a results table",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="sweep configuration (TOML)")
    parser.add_argument("--out", required=True, help="results file (.parquet; .csv with --csv)")
    parser.add_argument("--csv", action="store_true", help="write CSV instead of Parquet (suffix .csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the batches on the dask.distributed cluster of this scheduler (e.g. tcp://host:8786)")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="with --scheduler: submit a failed batch (e.g. its worker died) again up to N times")
    parser.add_argument("--part", metavar="I/N", help="plain job arrays: solve only share I of N (0 <= I < N) into the "
                        "store of --out; run every share (e.g. one per array task), then once without --part to "
                        "write the table")
    parser.set_defaults(func=run)


def _part(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--part must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise UsageError(f"--part {text}: needs 0 <= I < N")
    return i, n


def connect(address: str):
    """A ``dask.distributed.Client`` of the scheduler at ``address`` (imported only here)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise UsageError("--scheduler needs dask.distributed: pip install 'adaptive_kernels[dask]'") from None
    try:
        return Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"--scheduler {address}: cannot connect ({first})") from None


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"adaptive-kernels sweep: warning: {message}", file=sys.stderr if file is None else file)


def run(args) -> int:
    from adaptive_kernels.sweep import SweepError, SweepWarning, load_config, run_sweep

    sweep, options = load_config(args.config)  # every config error surfaces here, before solving
    out = Path(args.out)
    if args.csv:
        out = out.with_suffix(".csv")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    with contextlib.ExitStack() as stack:
        executor = stack.enter_context(connect(args.scheduler)) if args.scheduler else None
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("always", SweepWarning)
        warnings.showwarning = _one_line_warning
        try:
            table = run_sweep(sweep, out, progress=not args.no_progress, part=_part(args.part), executor=executor,
                              retries=args.retries, **options)
        except SweepError as err:
            print(f"adaptive-kernels sweep: {err}", file=sys.stderr)
            return 1
    solved = table.attrs["solved"]
    unconverged = int((~table["converged"].astype(bool)).sum())
    where = f"{out}.parts (share {args.part}; run again without --part to write {out})" if args.part else out
    points = table["key"].str.partition("/")[0].nunique()  # branches = "all": several rows per point
    rows = f" in {len(table)} rows (one per branch)" if points != len(table) else ""
    print(f"{points} points{rows} -> {where} ({solved} solved now, {len(table) - solved} reused; "
          f"{unconverged} not converged)")
    return 0
