"""The append-only disk spool: batches PostgreSQL could not take, kept in order.

Each batch is one file, written to a temporary name, fsynced, renamed and the
folder fsynced, so a crash never leaves half a batch; temporary files a failed
or killed writer left are removed (``tidy``). Names sort by time of writing, so
replay is in order. Several processes may share one folder, and any of them
replays any batch: a replayer takes a file by locking it (flock) and renaming
it, so two never replay the same one, and a claim whose lock can be taken (its
process died) is handed back. A batch that cannot be read back as rows of the
right types (cut short, not JSON, a value of the wrong type) is moved to
``quarantine/`` with its reason and never blocks the batches behind it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SUFFIX = ".batch"
TMP = ".tmp"
CLAIMED = ".claimed-"
QUARANTINE = "quarantine"
STALE_TMP = 60.0  # seconds: a batch is written in milliseconds, so an older temporary file is a leftover


class SpoolFull(OSError):
    """The spool reached its size limit."""


class BadBatch(ValueError):
    """A batch file that cannot be replayed as it is."""


@dataclass(frozen=True)
class Claim:
    """A batch taken for replay: renamed to ``path`` and locked through ``fd`` until done or released."""

    path: Path
    original: Path
    fd: int


def _encode(record: tuple[Any, ...]) -> list[Any]:
    return [str(v) if isinstance(v, uuid.UUID) else v for v in record]


class Spool:
    """Batches on disk under ``directory``, at most ``max_bytes`` in all (every writer's files counted)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.quarantine_dir = directory / QUARANTINE
        self.max_bytes = max_bytes
        self.error: str | None = None  # why the last write failed; None once one succeeds
        self.bytes = 0
        self._seq = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        self.tidy()

    def pending(self) -> list[Path]:
        """Unclaimed batch files, oldest first."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except OSError:
            return []

    def writable(self) -> bool:
        """True while another batch may be spooled: under the limit, the last write worked, the folder writable."""
        return self.error is None and self.bytes < self.max_bytes and os.access(self.directory, os.W_OK)

    def write(self, records: Sequence[tuple[Any, ...]]) -> Path:
        """Store one batch durably; raise SpoolFull or OSError (and remember why) when it cannot."""
        if self.bytes >= self.max_bytes:
            raise SpoolFull(f"spool {self.directory} holds {self.bytes} bytes (limit {self.max_bytes})")
        data = orjson.dumps([_encode(r) for r in records])
        self._seq += 1
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        try:
            _write_durably(path, data)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        self.error = None
        self.bytes += len(data)
        return path

    def probe(self) -> bool:
        """Try a small durable write (while ``error`` is set and nothing else tries); True when it worked."""
        if self.bytes >= self.max_bytes:
            return False
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-probe"
        try:
            _write_durably(path, b"[]")
            path.unlink()
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self.error = None
        return True

    # -- replay -----------------------------------------------------------
    def claim(self, path: Path) -> Claim | None:
        """Take a batch for replay; None when another replayer holds it or took it first."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        claimed = path.with_name(f"{path.name}{CLAIMED}{os.getpid()}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)  # replayed and removed meanwhile; a new file has its name
            path.rename(claimed)
        except OSError:
            os.close(fd)
            return None
        return Claim(claimed, path, fd)

    def read(self, claim: Claim, types: Sequence[str]) -> list[tuple[Any, ...]]:
        """The rows of a claimed batch, checked against ``types`` (see collector.rows.COLUMN_TYPES)."""
        try:
            rows = orjson.loads(os.pread(claim.fd, os.fstat(claim.fd).st_size, 0))
        except orjson.JSONDecodeError as exc:
            raise BadBatch(f"not JSON ({exc})") from exc
        if not isinstance(rows, list) or not set(map(type, rows)) <= {list}:
            raise BadBatch("not a list of rows")
        if rows and set(map(len, rows)) != {len(types)}:
            raise BadBatch(f"rows without exactly {len(types)} values")
        if not rows:
            return []
        columns = zip(*rows, strict=True)
        return list(zip(*(_column(kind, values) for kind, values in zip(types, columns, strict=True)), strict=True))

    def done(self, claim: Claim) -> None:
        """Forget a batch that is safely in PostgreSQL."""
        with contextlib.suppress(OSError):
            size = os.fstat(claim.fd).st_size
            claim.path.unlink()
            self.bytes = max(0, self.bytes - size)
        os.close(claim.fd)

    def release(self, claim: Claim) -> None:
        """Give a claimed batch back (replay failed); it keeps its place in order."""
        with contextlib.suppress(OSError):
            claim.path.rename(claim.original)
        os.close(claim.fd)

    def quarantine(self, claim: Claim, reason: str) -> Path:
        """Move a batch that cannot be replayed aside, with a ``.reason`` file next to it."""
        size = os.fstat(claim.fd).st_size
        target = self.set_aside(claim.path, claim.original.name, reason)
        if not claim.path.exists():
            self.bytes = max(0, self.bytes - size)
        os.close(claim.fd)
        return target

    def set_aside(self, path: Path, name: str, reason: str) -> Path:
        """Move ``path`` into the quarantine folder as ``name``, and say why next to it."""
        target = self.quarantine_dir / name
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            path.rename(target)
            target.with_name(name + ".reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            log.error("could not move %s to %s: %s", path, target, exc)
        return target

    # -- housekeeping -----------------------------------------------------
    def tidy(self) -> None:
        """Remove writers' leftover temporary files, hand back claims of dead replayers, recount the bytes."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        now = time.time()
        total = 0
        for entry in entries:
            name = entry.name
            with contextlib.suppress(OSError):
                if name.endswith(TMP) or name.endswith("-probe"):
                    if _stale(name, entry.stat().st_mtime, now):
                        os.unlink(entry.path)
                        log.warning("removed %s, left by a writer that failed or died", name)
                    continue
                if CLAIMED in name:
                    _release_if_dead(Path(entry.path))
                if name.endswith(SUFFIX) or CLAIMED in name:
                    total += entry.stat().st_size
        self.bytes = total


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name, fsync, rename to ``path``, fsync the folder; no leftover on failure."""
    tmp = path.with_name(path.name + TMP)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stale(name: str, mtime: float, now: float) -> bool:
    """A temporary file no write is still making: this process's (writes are synchronous), a dead one's, or old."""
    parts = name.split("-")
    pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
    return pid == os.getpid() or not _alive(pid) or now - mtime > STALE_TMP


def _release_if_dead(claimed: Path) -> None:
    """Hand back a claim whose replayer no longer holds its lock."""
    fd = os.open(claimed, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        claimed.rename(claimed.with_name(claimed.name.split(CLAIMED, 1)[0]))
        log.info("handed back %s (its replayer is gone)", claimed.name)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- checking a batch's values, a column at a time ----------------------------
_PYTHON = {"uuid": str, "timestamptz": str, "text": str, "bigint": int, "integer": int, "inet": str, "boolean": bool}
_RANGE = {"bigint": 1 << 63, "integer": 1 << 31}


def _column(kind: str, values: tuple[Any, ...]) -> Sequence[Any]:
    """``values`` as COPY takes them (ids and times parsed); BadBatch when one does not fit ``kind``."""
    base = kind.rstrip("?")
    present = [v for v in values if v is not None] if kind.endswith("?") else values
    if set(map(type, present)) - {_PYTHON[base]}:
        found = sorted({type(v).__name__ for v in present} - {_PYTHON[base].__name__})
        raise BadBatch(f"a {'/'.join(found)} value where {kind} belongs")
    try:
        if base in _RANGE and present and not -_RANGE[base] <= min(present) <= max(present) < _RANGE[base]:
            raise ValueError(f"a value out of {base} range")
        if base == "inet":
            for text in set(present):
                ipaddress.ip_address(text)
        if base == "uuid":
            return [uuid.UUID(v) for v in values]
        if base == "timestamptz":
            stamps = [dt.datetime.fromisoformat(v) for v in values]
            if any(s.tzinfo is None for s in stamps):
                raise ValueError("a time without its offset")
            return stamps
    except ValueError as exc:
        raise BadBatch(f"{kind}: {exc}") from exc
    return values
