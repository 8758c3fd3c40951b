"""``adaptive-kernels sweep CONFIG.toml --out RESULTS.parquet [--csv] [--no-progress]``.

Solves every point of a sweep file (``examples/sweep_example.toml``), saving finished
batches as they complete; re-running the same command resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_kernels.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="solve a grid of scaling regimes from a TOML file into a results table",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("config", help="sweep configuration (TOML)")
    parser.add_argument("--out", required=True, help="results file (.parquet; .csv with --csv)")
    parser.add_argument("--csv", action="store_true", help="write CSV instead of Parquet (suffix .csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--part", metavar="I/N", help="solve only share I of N (0 <= I < N) into the store of --out; "
                        "run every share (e.g. one per host), then once without --part to write the table")
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


def run(args) -> int:
    from adaptive_kernels.sweep import load_config, run_sweep

    sweep, options = load_config(args.config)  # every config error surfaces here, before solving
    out = Path(args.out)
    if args.csv:
        out = out.with_suffix(".csv")
    table = run_sweep(sweep, out, progress=not args.no_progress, part=_part(args.part), **options)
    computed = int((table["run"] == table.attrs["run"]).sum())
    unconverged = int((~table["converged"].astype(bool)).sum())
    where = f"{out}.parts (share {args.part}; run again without --part to write {out})" if args.part else out
    print(
        f"{len(table)} points -> {where} ({computed} solved now, {len(table) - computed} reused; "
        f"{unconverged} not converged)"
    )
    return 0
