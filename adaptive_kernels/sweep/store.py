"""Crash-safe, self-healing results store of a sweep, shared by concurrent runs.

Layout next to the output file ``OUT``::

    OUT                          the consolidated table (Parquet, or CSV for a .csv name)
    OUT.parts/part-*.parquet     one file per finished batch
    OUT.parts/runs/RUN.json      one file per live run: host, pid; its mtime is a heartbeat
    OUT.parts/claims/CHAIN.G     a run's claim on a continuation chain (generation G)
    OUT.parts/manifest.json      what the last run to start was sweeping
    OUT.lock                     held for milliseconds while a run registers or leaves
    OUT.damaged/                 part files and outputs that could not be read, set aside

Writes are atomic (temp file, fsync, ``os.replace``): a part is complete or absent, even
after kill -9. A re-run reads the finished keys from the parts and an existing ``OUT`` and
skips those points.

Healing: a part or ``OUT`` that cannot be read back as a table with a ``key`` and a ``run``
column on every row (truncated, emptied, random bytes, a half-written CSV) is moved into
``OUT.damaged/`` with a one-line :class:`SweepWarning`; its points count as not solved, so
the run solves exactly those again.

Concurrency (cooperation, not exclusion): any number of runs -- shares of a job array,
or two full runs of the same sweep -- may write into one store at once. Each run registers
itself in ``runs/`` and claims a chain (creating ``claims/CHAIN.0``, which fails if it exists) before
solving it; a chain claimed by a live run is left to that run and waited for. A claim whose
run is dead (same host: its pid is gone; another host: no heartbeat for
:data:`STALE_AFTER_S`) is taken over by creating the next generation ``CHAIN.1``, again
exclusively, so exactly one run takes it. Only the last run to leave (no other live run
registered) removes ``OUT.parts``; registering and leaving are serialised by ``OUT.lock``,
so no run ever writes into a parts folder that another is removing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path

import pandas as pd

KEY = "key"
RUN = "run"
HEARTBEAT_S = 10.0  # a live run touches its run file this often
STALE_AFTER_S = 120.0  # a run on another host without heartbeat for this long is dead
LOCK_STALE_AFTER_S = 60.0  # OUT.lock is held for milliseconds; older than this, its holder died
LOCK_TIMEOUT_S = 120.0
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"  # no dots: temp names split on them


def branch_key(key: str, j: int) -> str:
    """The key of a point's j-th row: the point's key for its first row, ``<key>/<j>`` for further branch rows
    (``Sweep(branches="all")``: one row per stationary point). Point keys are hex digests, without ``/``."""
    return key if j == 0 else f"{key}/{j}"


def with_branch_keys(keys: list[str], available) -> list[str]:
    """``keys`` in order, each followed by its branch rows' keys ``<key>/1``, ``<key>/2``, ... present in
    ``available`` (a set, mapping or index of row keys)."""
    extra: dict[str, list[tuple[int, str]]] = {}
    for k in available:
        base, sep, j = str(k).partition("/")
        if sep:
            extra.setdefault(base, []).append((int(j), k))
    return [row for k in keys for row in [k, *(key for _, key in sorted(extra.get(k, ())))]]


class SweepWarning(UserWarning):
    """Something a sweep repaired or retried on its own (printed as one line by the CLI)."""


class DamagedTable(ValueError):
    """A results file that cannot be read back as a table of finished points."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A temp file next to ``path`` that names its writer: ``.NAME.HOST.PID.RANDOM.tmp``."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_table(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` (.csv: CSV, else Parquet) so that readers see all or nothing."""
    path = Path(path)
    tmp = _temp_name(path)
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


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = _temp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def read_table(path: Path) -> pd.DataFrame:
    """Read a results table written by a sweep (Parquet, or CSV by extension)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


def read_finished(path: Path) -> pd.DataFrame:
    """A results file's rows, or :class:`DamagedTable` if it is not a complete table of finished
    points (unreadable, no ``key``/``run`` column, a row without them, or a CSV whose last line is cut: a CSV
    is written whole and ends with a newline, and pandas would read a cut last row with its missing trailing
    fields as NaN)."""
    try:
        table = read_table(path)
        if Path(path).suffix.lower() == ".csv" and not _ends_with_newline(path):
            raise DamagedTable("its last line is incomplete (truncated?)")
    except (FileNotFoundError, DamagedTable):
        raise
    except Exception as err:  # pyarrow / pandas errors of every kind: the file is not a table
        raise DamagedTable(_one_line(err)) from err
    for column in (KEY, RUN):
        if column not in table.columns:
            raise DamagedTable(f"no {column!r} column")
        if table[column].isna().any():
            raise DamagedTable(f"{int(table[column].isna().sum())} rows without {column!r} (truncated?)")
    return table


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_alive(info: dict, mtime: float) -> bool:
    """A run (or lock holder) is alive: same host -> its pid exists; else a recent heartbeat."""
    if info.get("host") == HOST and isinstance(info.get("pid"), int):
        return _pid_alive(info["pid"])
    return time.time() - mtime < STALE_AFTER_S


def _read_json(path: Path) -> tuple[dict, float] | None:
    """(content, mtime) of a small JSON file, or None if it is gone; unreadable content -> {}."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
    except ValueError:  # being written by a non-atomic writer, or damaged: judged by mtime alone
        content = {}
    return (content if isinstance(content, dict) else {}), mtime


class _Lock:
    """``OUT.lock``: an O_EXCL lock file naming its holder (host, pid), held for milliseconds.

    A lock whose holder is dead (same host: pid gone; any host: older than
    LOCK_STALE_AFTER_S) is removed and taken.
    """

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        payload = json.dumps({"host": HOST, "pid": os.getpid(), "time": time.time()}).encode()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = _read_json(self.path)
                if held is not None:
                    info, mtime = held
                    stale = time.time() - mtime > LOCK_STALE_AFTER_S or (
                        info.get("host") == HOST and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])
                    )
                    if stale:
                        self.path.unlink(missing_ok=True)
                        continue
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.path}: held by {held[0] if held else '?'} for over {LOCK_TIMEOUT_S:.0f} s; "
                                       "remove it if that process is gone") from None
                time.sleep(0.02)
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


class ResultStore:
    """The results of one sweep on disk, next to its output file ``out`` (module docstring).

    Usage by a run: :meth:`register`, then :meth:`claim` chains, :meth:`write_part` their rows,
    :meth:`finished` to see what every run has stored; at the end :meth:`consolidate` (whole
    sweep) and :meth:`unregister`.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        if self.out.is_dir():
            raise ValueError(f"out: {self.out} is a directory; give a file name (.parquet or .csv)")
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.runs = self.parts / "runs"
        self.claims = self.parts / "claims"
        self.damaged = self.out.with_name(self.out.name + ".damaged")
        self.lock = _Lock(self.out.with_name(self.out.name + ".lock"))
        self.run_id: str | None = None
        self._cache: dict[str, tuple] = {}  # file name -> (stat, rows, keys)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ---------------------------------------------------------------- runs
    def register(self, run_id: str, description: dict) -> None:
        """Announce a live run (with a heartbeat thread) and record the sweep it runs."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            for folder in (self.parts, self.runs, self.claims):
                folder.mkdir(exist_ok=True)
            self.run_id = run_id
            _atomic_write_text(json.dumps({"host": HOST, "pid": os.getpid(), "started": time.time()}),
                               self._run_file(run_id))
            _atomic_write_text(json.dumps(description, indent=1, default=repr), self.parts / "manifest.json")
            self._remove_dead_temp_files()
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"sweep-heartbeat-{run_id}", daemon=True)
        self._heartbeat.start()

    def _run_file(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self._run_file(self.run_id))
            except FileNotFoundError:
                return

    def run_alive(self, run_id: str) -> bool:
        """True if ``run_id`` is registered and alive (this run counts as alive)."""
        if run_id == self.run_id:
            return True
        held = _read_json(self._run_file(run_id))
        return held is not None and _owner_alive(*held)

    def _others_alive(self) -> bool:
        """Another live run is registered; dead runs' files are removed on the way."""
        alive = False
        for path in self.runs.glob("*.json") if self.runs.is_dir() else []:
            run_id = path.name[: -len(".json")]
            if run_id == self.run_id:
                continue
            if self.run_alive(run_id):
                alive = True
            else:
                path.unlink(missing_ok=True)
        return alive

    def unregister(self, cleanup: bool) -> None:
        """Leave the store. With ``cleanup`` and no other live run, remove ``OUT.parts``
        (call it after :meth:`consolidate` has written every point to ``OUT``)."""
        if self.run_id is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        with self.lock:
            self._run_file(self.run_id).unlink(missing_ok=True)
            if cleanup and not self._others_alive():
                self._remove_parts()
        self.run_id = None

    def _remove_parts(self) -> None:
        for folder in (self.claims, self.runs):
            if folder.is_dir():
                for path in folder.iterdir():
                    path.unlink(missing_ok=True)
                folder.rmdir()
        for path in self._part_files():
            path.unlink(missing_ok=True)
        (self.parts / "manifest.json").unlink(missing_ok=True)
        for path in self.parts.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:  # something else was put there: leave it
            pass
        self._cache.clear()

    def _remove_dead_temp_files(self) -> None:
        """Temp files of killed writers on this host (``.NAME.HOST.PID.RANDOM.tmp``)."""
        for path in self.parts.glob(".*.tmp"):
            fields = path.name.split(".")
            if len(fields) >= 5 and fields[-4] == HOST and fields[-3].isdigit() and not _pid_alive(int(fields[-3])):
                path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- claims
    def claim(self, chain_id: str) -> bool:
        """Claim a chain for this run: True if it is ours now, False if a live run holds it.

        A claim file is created with its owner's name in it at once (written to a temp file,
        then ``os.link``, which fails if the name exists: exclusive, on NFS too).
        """
        generation = 0
        while True:
            path = self.claims / f"{chain_id}.{generation}"
            if self._create_with(path, self.run_id):
                return True
            if (self.claims / f"{chain_id}.{generation + 1}").exists():
                generation += 1  # the newest generation decides; this one was taken over already
                continue
            try:
                owner = path.read_text().strip()
            except FileNotFoundError:  # removed by the last run's cleanup: the chain is finished
                return False
            if owner == self.run_id:
                return True
            if self.run_alive(owner):
                return False
            generation += 1  # a dead run's claim: take it over with the next generation

    def _create_with(self, path: Path, text: str) -> bool:
        """Create ``path`` holding ``text`` if it does not exist yet (atomically); False if it does."""
        tmp = _temp_name(path)
        tmp.write_text(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    # ---------------------------------------------------------------- rows
    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def _read(self, path: Path) -> pd.DataFrame | None:
        """Rows of one results file (cached while its stat is unchanged); a damaged file is set
        aside with a warning and counts as empty; a vanished one as empty too."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(str(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            rows = read_finished(path)
        except FileNotFoundError:
            return None
        except DamagedTable as err:
            self._set_aside(path, stamp, str(err))
            return None
        self._cache[str(path)] = (stamp, rows, frozenset(rows[KEY]))
        return rows

    def _set_aside(self, path: Path, stamp: tuple, why: str) -> None:
        self.damaged.mkdir(parents=True, exist_ok=True)
        target = self.damaged / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{uuid.uuid4().hex[:6]}"
        try:
            st = path.stat()
            if (st.st_ino, st.st_size, st.st_mtime_ns) != stamp:  # replaced meanwhile: not the file we read
                return
            os.replace(path, target)
        except FileNotFoundError:  # another run set it aside first
            return
        warnings.warn(f"{path}: damaged ({why}); moved to {target}; its points will be solved again",
                      SweepWarning, stacklevel=4)

    def finished(self) -> pd.DataFrame:
        """Rows already computed by any run: ``OUT`` and the part files, one row per key."""
        tables = [self._read(path) for path in [self.out, *self._part_files()]]
        tables = [t for t in tables if t is not None and len(t)]
        if not tables:
            return pd.DataFrame({KEY: pd.Series(dtype=str)})
        return pd.concat(tables, ignore_index=True).drop_duplicates(KEY, keep="first")

    def finished_keys(self) -> set[str]:
        """The keys of :meth:`finished` (from each file's cached key set: cheap to poll)."""
        keys: set[str] = set()
        for path in [self.out, *self._part_files()]:
            if self._read(path) is not None:
                keys |= self._cache[str(path)][2]
        return keys

    def write_part(self, rows: pd.DataFrame) -> Path:
        """Save a finished batch as a new part file (atomically)."""
        path = self.parts / f"part-{uuid.uuid4().hex}.parquet"
        atomic_write_table(rows, path)
        return path

    def rows_of(self, keys: list[str]) -> pd.DataFrame:
        """The finished rows of the points ``keys`` (in that order), each point's branch rows after its first
        (:func:`with_branch_keys`)."""
        done = self.finished().set_index(KEY, drop=False)
        missing = [k for k in keys if k not in done.index]
        if missing:
            raise RuntimeError(f"consolidate: {len(missing)} points have no result yet")
        return done.loc[with_branch_keys(keys, done.index)].reset_index(drop=True)

    def consolidate(self, keys: list[str]) -> pd.DataFrame:
        """The rows of ``keys`` (:meth:`rows_of`), written atomically to ``OUT``."""
        table = self.rows_of(keys)
        atomic_write_table(table, self.out)
        return table
