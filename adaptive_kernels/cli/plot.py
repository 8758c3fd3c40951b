"""``adaptive-kernels plot RESULTS.parquet --x P --y learnability [--hue theory,gamma] [--out FIG.png]``.

One line per value of ``--hue`` (one column, or several separated by commas); rows sharing
(hue, x) because other parameters vary are averaged, drawn with their standard deviation as
error bars, and the varying columns are named on stderr. PNG or PDF by suffix.
"""

from __future__ import annotations

import sys
from pathlib import Path

from adaptive_kernels.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot", help="plot one column of a sweep's results against another", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("results", help="results table from `adaptive-kernels sweep` (.parquet or .csv)")
    parser.add_argument("--x", required=True, help="column on the horizontal axis (e.g. P)")
    parser.add_argument("--y", required=True, help="column on the vertical axis (e.g. learnability)")
    parser.add_argument("--hue", help="column(s) whose values get separate lines (e.g. theory or theory,gamma)")
    parser.add_argument("--out", help="figure file, .png or .pdf (default: RESULTS with suffix .png)")
    parser.add_argument("--logx", action="store_true", help="logarithmic x axis")
    parser.add_argument("--logy", action="store_true", help="logarithmic y axis")
    parser.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import ScalarFormatter

    from adaptive_kernels.sweep import read_table

    table = read_table(args.results)
    hue = args.hue.split(",") if args.hue else []
    for option, column in [("x", args.x), ("y", args.y)] + [("hue", h) for h in hue]:
        if column not in table.columns:
            raise UsageError(f"--{option}: no column {column!r}; columns: {', '.join(table.columns)}")
    for option in ("x", "y"):
        if not pd.api.types.is_numeric_dtype(table[getattr(args, option)]):
            raise UsageError(f"--{option}: column {getattr(args, option)!r} is not numeric")
    out = Path(args.out) if args.out else Path(args.results).with_suffix(".png")
    if out.suffix.lower() not in (".png", ".pdf"):
        raise UsageError(f"--out: figure must end in .png or .pdf, got {out.name!r}")
    averaged = _averaged_columns(table, [args.x] + hue)
    if averaged:
        print(f"plot: averaging over {', '.join(averaged)} (error bars: standard deviation)", file=sys.stderr)

    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    groups = table.groupby(hue, sort=True) if hue else [((), table)]
    for label, rows in groups:
        stats = rows.groupby(args.x)[args.y].agg(["mean", "std", "count"]).sort_index()
        spread = stats["std"].where(stats["count"] > 1)
        name = ", ".join(f"{h} = {v}" for h, v in zip(hue, label)) or None
        ax.errorbar(stats.index, stats["mean"], yerr=spread, marker="o", ms=4, capsize=2, label=name)
    ax.set_xlabel(args.x)
    ax.set_ylabel(args.y)
    for log, set_scale, axis in ((args.logx, ax.set_xscale, ax.xaxis), (args.logy, ax.set_yscale, ax.yaxis)):
        if log:
            set_scale("log")
            axis.set_major_formatter(ScalarFormatter())  # 10, 20, 40 rather than 10^1, 2x10^1
            axis.set_minor_formatter(ScalarFormatter())
    if hue:
        ax.legend(frameon=False, fontsize="small")
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def _averaged_columns(table, kept: list[str]) -> list[str]:
    """Parameter columns that vary among rows sharing the ``kept`` columns' values."""
    from adaptive_kernels.sweep import POINT_PARAMETERS

    parameters = [c for c in POINT_PARAMETERS if c in table.columns and c not in kept]
    return [c for c in parameters if (table.groupby(kept)[c].nunique(dropna=False) > 1).any()]
