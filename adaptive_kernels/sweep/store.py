"""Crash-safe results on disk for a sweep.

While a sweep runs, every finished batch of points is written as its own Parquet part file
in ``<out>.parts/`` (temp file, fsync, ``os.replace``: a part is either complete or absent,
even after kill -9). A re-run reads the finished keys from the parts and from an existing
``out`` file and skips those points. When every point is done the table is consolidated
into ``out`` (Parquet, or CSV for a ``.csv`` name), written atomically the same way, and
the parts directory is removed.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pandas as pd

KEY = "key"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_table(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` (.csv: CSV, else Parquet) so that readers see all or nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if path.suffix.lower() == ".csv":
                df.to_csv(fh, index=False)
            else:
                df.to_parquet(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def read_table(path: Path) -> pd.DataFrame:
    """Read a results table written by a sweep (Parquet, or CSV by extension)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


class ResultStore:
    """Part files of one sweep next to its output file ``out``."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        if self.out.is_dir():
            raise ValueError(f"out: {self.out} is a directory; give a file name (.parquet or .csv)")
        self.parts = self.out.with_name(self.out.name + ".parts")

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def start(self, description: dict, clean: bool = True) -> None:
        """Create the parts directory, record the sweep and, if ``clean``, drop temp files a
        killed run left (not while other processes may be writing shares of the sweep)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(exist_ok=True)
        if clean:
            for stale in self.parts.glob(".*.tmp"):
                stale.unlink()
        manifest = self.parts / "manifest.json"
        tmp = self.parts / f".manifest.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(description, indent=1, default=repr))
        os.replace(tmp, manifest)

    def finished(self) -> pd.DataFrame:
        """Rows already computed: an existing ``out`` and the part files, one row per key."""
        tables = [read_table(self.out)] if self.out.exists() else []
        tables += [pd.read_parquet(p) for p in self._part_files()]
        if not tables:
            return pd.DataFrame({KEY: pd.Series(dtype=str)})
        df = pd.concat(tables, ignore_index=True)
        return df.drop_duplicates(KEY, keep="first")

    def write_part(self, rows: pd.DataFrame) -> Path:
        """Save a finished batch as a new part file (atomically)."""
        path = self.parts / f"part-{uuid.uuid4().hex}.parquet"
        atomic_write_table(rows, path)
        return path

    def consolidate(self, keys: list[str]) -> pd.DataFrame:
        """The rows of ``keys`` (in that order) written to ``out``; the parts are removed."""
        done = self.finished().set_index(KEY, drop=False)
        missing = [k for k in keys if k not in done.index]
        if missing:
            raise RuntimeError(f"consolidate: {len(missing)} points have no result yet")
        table = done.loc[keys].reset_index(drop=True)
        atomic_write_table(table, self.out)
        for p in self._part_files():
            p.unlink()
        (self.parts / "manifest.json").unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:  # something else was put there: leave it
            pass
        return table
