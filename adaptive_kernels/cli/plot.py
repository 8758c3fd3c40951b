"""``adaptive-kernels plot RESULTS.parquet --x P --y learnability [--hue theory] [--out FIG.png]``.

One line per value of ``--hue`` (y against x); rows sharing (hue, x) -- other parameters
varying -- are averaged and drawn with their spread as error bars. PNG or PDF by suffix.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_kernels.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot", help="plot one column of a sweep's results against another", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("results", help="results table from `adaptive-kernels sweep` (.parquet or .csv)")
    parser.add_argument("--x", required=True, help="column on the horizontal axis (e.g. P)")
    parser.add_argument("--y", required=True, help="column on the vertical axis (e.g. learnability)")
    parser.add_argument("--hue", help="column whose values get separate lines (e.g. theory)")
    parser.add_argument("--out", help="figure file, .png or .pdf (default: RESULTS with suffix .png)")
    parser.add_argument("--logx", action="store_true", help="logarithmic x axis")
    parser.add_argument("--logy", action="store_true", help="logarithmic y axis")
    parser.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from adaptive_kernels.sweep import read_table

    table = read_table(args.results)
    for option in ("x", "y", "hue"):
        column = getattr(args, option)
        if column is not None and column not in table.columns:
            raise UsageError(f"--{option}: no column {column!r}; columns: {', '.join(table.columns)}")
    for option in ("x", "y"):
        if not pd.api.types.is_numeric_dtype(table[getattr(args, option)]):
            raise UsageError(f"--{option}: column {getattr(args, option)!r} is not numeric")
    out = Path(args.out) if args.out else Path(args.results).with_suffix(".png")
    if out.suffix.lower() not in (".png", ".pdf"):
        raise UsageError(f"--out: figure must end in .png or .pdf, got {out.name!r}")

    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    groups = table.groupby(args.hue, sort=True) if args.hue else [(None, table)]
    for label, rows in groups:
        stats = rows.groupby(args.x)[args.y].agg(["mean", "std", "count"]).sort_index()
        spread = stats["std"].where(stats["count"] > 1)
        ax.errorbar(stats.index, stats["mean"], yerr=spread, marker="o", ms=4, capsize=2,
                    label=None if label is None else f"{args.hue} = {label}")
    ax.set_xlabel(args.x)
    ax.set_ylabel(args.y)
    if args.logx:
        ax.set_xscale("log")
    if args.logy:
        ax.set_yscale("log")
    if args.hue:
        ax.legend(frameon=False, fontsize="small")
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
