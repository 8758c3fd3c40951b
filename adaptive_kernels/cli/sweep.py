"""``adaptive-kernels sweep CONFIG.toml --out RESULTS.parquet [--csv] [--no-progress]``.

Solves every point of a sweep file (``examples/sweep_example.toml``), saving finished
batches as they complete; re-running the same command resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path


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
    parser.set_defaults(func=run)


def run(args) -> int:
    from adaptive_kernels.sweep import load_config, run_sweep

    sweep, options = load_config(args.config)  # every config error surfaces here, before solving
    out = Path(args.out)
    if args.csv:
        out = out.with_suffix(".csv")
    table = run_sweep(sweep, out, progress=not args.no_progress, **options)
    computed = int((table["run"] == table.attrs["run"]).sum())
    unconverged = int((~table["converged"].astype(bool)).sum())
    print(
        f"{len(table)} points -> {out} ({computed} solved now, {len(table) - computed} reused; "
        f"{unconverged} not converged)"
    )
    return 0
