"""The append-only disk spool: batches PostgreSQL could not take, kept in order.

Each batch is one file, written to a temporary name, fsynced and renamed, so
a crash never leaves half a batch. Names sort by time of writing, so replay
is in order. Several processes may share one folder: a replayer claims a file
by renaming it, and claims of processes that died are released at start.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SUFFIX = ".batch"
CLAIMED = ".claimed-"


class SpoolFull(OSError):
    """The spool reached its size limit."""


def _encode(record: tuple[Any, ...]) -> list[Any]:
    return [str(v) if isinstance(v, uuid.UUID) else v for v in record]


def _decode(row: list[Any], uuid_at: int, time_at: int) -> tuple[Any, ...]:
    row[uuid_at] = uuid.UUID(row[uuid_at])
    row[time_at] = dt.datetime.fromisoformat(row[time_at])
    return tuple(row)


class Spool:
    """Batches on disk under ``directory``, at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self.bytes = sum(p.stat().st_size for p in self._files())
        self.release_dead_claims()

    def _files(self) -> Iterator[Path]:
        return (p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) or CLAIMED in p.name)

    def pending(self) -> list[Path]:
        """Unclaimed batch files, oldest first."""
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))

    def writable(self) -> bool:
        """True while another batch may be spooled."""
        return self.bytes < self.max_bytes and os.access(self.directory, os.W_OK)

    def write(self, records: list[tuple[Any, ...]]) -> Path:
        """Store one batch durably; raise SpoolFull or OSError when it cannot."""
        if self.bytes >= self.max_bytes:
            raise SpoolFull(f"spool {self.directory} holds {self.bytes} bytes")
        data = orjson.dumps([_encode(r) for r in records])
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.directory / name)
        self.bytes += len(data)
        return self.directory / name

    def claim(self, path: Path) -> Path | None:
        """Take a batch for replay; None when another process took it first."""
        claimed = path.with_name(f"{path.name}{CLAIMED}{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        return claimed

    def read(self, claimed: Path, uuid_at: int, time_at: int) -> list[tuple[Any, ...]]:
        """The records of a claimed batch."""
        return [_decode(row, uuid_at, time_at) for row in orjson.loads(claimed.read_bytes())]

    def done(self, claimed: Path) -> None:
        """Forget a batch that is safely in PostgreSQL."""
        size = claimed.stat().st_size
        claimed.unlink()
        self.bytes = max(0, self.bytes - size)

    def release(self, claimed: Path) -> None:
        """Give a claimed batch back (replay failed); it keeps its place in order."""
        claimed.rename(claimed.with_name(claimed.name.split(CLAIMED, 1)[0]))

    def release_dead_claims(self) -> None:
        """Hand back batches claimed by processes that no longer run."""
        for p in self.directory.iterdir():
            if CLAIMED not in p.name:
                continue
            pid = int(p.name.rsplit("-", 1)[1]) if p.name.rsplit("-", 1)[1].isdigit() else 0
            if pid != os.getpid() and not _alive(pid):
                self.release(p)


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
