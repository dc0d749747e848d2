"""The write-ahead journal: every hit is in the page cache before it is answered.

The write buffer keeps hits in memory for up to ``flush_interval``; a process
killed meanwhile (SIGKILL, the OOM killer, a crash) would lose them. So the
buffer's ``append`` first writes the hit here: one JSON line ``[ordinal, hit]``
copied into a memory-mapped file. That copy is the whole cost per hit, no
system call and no fsync: the mapped pages are the kernel's page cache, which
keeps them when the process dies and writes them to disk in the background.

A hit's ordinal is its place among the process's appends; with the journal's
random prefix it makes the hit's id (``collector.rows``), fixed when it is
journaled, so a replay never counts a hit twice: spool replays insert only
the ids neither in raw_hits (ON CONFLICT DO NOTHING on the primary key) nor
in a tombstone of ``copied_hits``, the runs of ids every COPY records in its
own transaction (``collector.postgres``). The tombstones matter because a
journal recovered after its collector died still holds the hits that
collector had already copied, and the aggregator may have deleted their raw
rows by then (jobs that keep nothing per hit): raw_hits alone would take them
again.

Segments are files ``<pid>-<start ns>-<seq>.journal`` of a fixed size, reserved
with posix_fallocate (writing into the mapping never meets a full disk), each
held with an exclusive flock by its owner until it is deleted, which happens
once every hit in it is in PostgreSQL or the fsynced spool (``release``). A
segment whose flock can be taken has no live owner: any collector turns it
into spool batches (``recover``) and deletes it.

Not covered: power loss or a kernel crash can lose what the page cache had not
yet written, i.e. the hits not yet in PostgreSQL or the spool (the last flush
interval, or a COPY in progress).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.rows import HIT_FIELDS, Hit

log = logging.getLogger(__name__)

SUFFIX = ".journal"
VERSION = 1
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE


class BadSegment(ValueError):
    """A journal file whose header cannot be read (so its hits' ids are unknown)."""


@dataclass(eq=False)
class Segment:
    """One journal file: hits ``first`` .. ``end - 1`` by ordinal (``end`` -1 while it is written)."""

    path: Path
    fd: int
    first: int
    end: int = -1


@dataclass(frozen=True)
class Contents:
    """What a segment holds: the id prefix, its hits by ordinal, and lines that could not be read."""

    prefix: bytes
    hits: list[tuple[int, list[Any]]]
    unreadable: int


class _NoSegment:
    """Stands for the mapped segment while there is none: every write is refused, like a full segment's."""

    def write(self, data: bytes) -> int:
        raise ValueError("no journal segment")

    def close(self) -> None:
        """Nothing to unmap."""


NO_SEGMENT = _NoSegment()


def encode(ordinal: int, hit: Hit) -> bytes:
    """One journal line by the slow path, for what orjson refuses (lone surrogates from undecodable headers)."""
    return json.dumps([ordinal, hit], ensure_ascii=True, separators=(",", ":"), default=str).encode() + b"\n"


class Journal:
    """This process's journal in ``directory``; ``write`` is on the request path."""

    def __init__(self, directory: Path, prefix: bytes, segment_bytes: int) -> None:
        self.directory = directory
        self.prefix = prefix
        self.segment_bytes = segment_bytes
        self.owner = f"{os.getpid()}-{time.time_ns()}"
        self.count = 0          # hits written so far: the ordinal of the next
        self.unjournaled = 0    # hits that found no segment to go to
        self.error: str | None = None
        self.segments: list[Segment] = []
        self._retired: list[mmap.mmap] = []  # mappings of full segments, to be closed by a Disposal
        self._map: mmap.mmap | _NoSegment = NO_SEGMENT  # written at its own position (mmap.write)
        self._seq = 0
        self._start_segment()

    def write(self, hit: Hit) -> None:
        """Copy one hit into the mapped segment (about a microsecond); never raises for a hit's content."""
        n = self.count
        try:
            data = _dumps((n, hit), None, _NEWLINE)
        except TypeError:
            data = encode(n, hit)
        try:
            self._map.write(data)
        except ValueError:  # the segment is full (or there is none)
            self._spill(data)
        self.count = n + 1

    def _spill(self, data: bytes) -> None:
        """The segment is full: start the next (a line is < 100 kB, a segment >= 1 MiB), or count the hit."""
        if self.error is None:
            self._start_segment()
        try:
            self._map.write(data)
        except ValueError:
            self.unjournaled += 1

    def retry(self) -> None:
        """Try again to start a segment after a failure (called by the flusher, not per hit)."""
        if self.error is not None and self.error != "closed":
            self._start_segment()

    def _start_segment(self) -> None:
        self._end_current()
        self._seq += 1
        path = self.directory / f"{self.owner}-{self._seq:06d}{SUFFIX}"
        tmp = path.with_name(path.name + ".tmp")
        fd, mapped = -1, None
        header = _dumps({"journal": VERSION, "prefix": self.prefix.hex(), "first": self.count, "owner": self.owner},
                        None, _NEWLINE)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # before its name says "journal": never taken
            os.posix_fallocate(fd, 0, self.segment_bytes)
            mapped = mmap.mmap(fd, self.segment_bytes)
            mapped.write(header)
            tmp.rename(path)
        except OSError as exc:
            if mapped is not None:
                mapped.close()
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if self.error is None:
                log.error("cannot start a journal segment in %s (%s): hits are not crash-safe until it can",
                          self.directory, exc)
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if self.error is not None:
            log.info("journal segments start again in %s", self.directory)
        self.error = None
        self.segments.append(Segment(path, fd, self.count))
        self._map = mapped

    def _end_current(self) -> None:
        if self.segments and self.segments[-1].end < 0:
            self.segments[-1].end = self.count
        if isinstance(self._map, mmap.mmap):
            self._retired.append(self._map)  # unmapped by Disposal.run, off the request path (ms for 8 MiB)
        self._map = NO_SEGMENT

    # -- bookkeeping --------------------------------------------------------
    def release(self, upto: int) -> Disposal:
        """Let go of the full segments whose hits (ordinals below ``upto``) are all in PostgreSQL or the spool.

        Returns the file work to do, which blocks for milliseconds (a deleted
        segment's dirty pages are dropped by the kernel then, never written):
        the flusher runs it in a thread.
        """
        gone = [s for s in self.segments if 0 <= s.end <= upto]
        self.segments = [s for s in self.segments if not 0 <= s.end <= upto]
        maps, self._retired = self._retired, []
        return Disposal(maps, gone)

    def covered(self, start: int, end: int) -> int:
        """How many of the hits ``start`` .. ``end - 1`` are in this journal."""
        total = 0
        for seg in self.segments:
            last = self.count if seg.end < 0 else seg.end
            total += max(0, min(end, last) - max(start, seg.first))
        return total

    def read(self, ranges: Sequence[tuple[int, int]]) -> dict[int, list[Any]]:
        """The journaled hits whose ordinals fall in ``ranges``, by ordinal (each segment read once)."""
        found: dict[int, list[Any]] = {}
        for seg in self.segments:
            last = self.count if seg.end < 0 else seg.end
            wanted = [(a, b) for a, b in ranges if a < last and seg.first < b]
            if wanted:
                for n, hit in read_segment(seg.path).hits:
                    if any(a <= n < b for a, b in wanted):
                        found[n] = hit
        return found

    def close(self, upto: int) -> list[Path]:
        """At exit: delete the segments wholly below ``upto``, fsync and keep the rest for a later replay."""
        self._end_current()
        self.error = "closed"
        self.release(upto).run()
        kept = [seg.path for seg in self.segments]
        for seg in self.segments:
            with contextlib.suppress(OSError):
                os.fsync(seg.fd)
            os.close(seg.fd)  # the lock goes with it: the segment is an orphan now
        self.segments = []
        return kept


@dataclass(frozen=True)
class Disposal:
    """Mappings to close and segments to delete, done together by ``run`` (in any thread)."""

    maps: list[mmap.mmap]
    segments: list[Segment]

    def __bool__(self) -> bool:
        return bool(self.maps or self.segments)

    def run(self) -> None:
        """Unmap, then delete each segment before its lock goes (so no one takes a file about to vanish)."""
        for mapped in self.maps:
            mapped.close()  # the written pages stay in the page cache; the process's RSS drops
        for seg in self.segments:
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
            os.close(seg.fd)


# -- orphans: segments whose writer is gone ----------------------------------
def orphans(directory: Path, own: Journal | None = None) -> list[Path]:
    """Segments in ``directory`` not written by ``own``, oldest first (their lock says whether they are orphans)."""
    try:
        names = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return []
    return [p for p in names if own is None or not p.name.startswith(own.owner + "-")]


def take(path: Path) -> int | None:
    """A locked descriptor of an orphaned segment, or None while its owner lives (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return fd


def tidy(directory: Path) -> None:
    """Remove segments a writer died while starting (no hit in them yet: the rename comes first)."""
    with contextlib.suppress(OSError):
        for path in directory.glob(f"*{SUFFIX}.tmp"):
            fd = take(path)
            if fd is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
                os.close(fd)


def read_segment(path: Path) -> Contents:
    """A segment's hits; a torn last line (the process died while copying it: never answered) is left out."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    lines = data[:end].split(b"\n") if end > 0 else []
    try:
        header = orjson.loads(lines[0])
        prefix, first = bytes.fromhex(header["prefix"]), header["first"]
        if header["journal"] != VERSION or len(prefix) != 8 or type(first) is not int:
            raise ValueError(f"unknown header {header!r}")
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise BadSegment(f"{path.name}: no readable header ({exc})") from exc
    hits = [record for record in map(_record, lines[1:]) if record is not None]
    return Contents(prefix, hits, len(lines) - 1 - len(hits))


def _record(line: bytes) -> tuple[int, list[Any]] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            record = json.loads(line)  # a line the slow path wrote (lone surrogates)
        except (ValueError, RecursionError):
            return None
    if (isinstance(record, list) and len(record) == 2 and type(record[0]) is int and record[0] >= 0
            and valid_hit(record[1])):
        return record[0], record[1]
    return None


_OPT_INT, _OPT_STR = (int, type(None)), (str, type(None))
_HIT_TYPES: tuple[type | tuple[type, ...], ...] = (
    (int, float), str, int, _OPT_INT, _OPT_STR, _OPT_INT, _OPT_STR, _OPT_STR, _OPT_STR, _OPT_STR, _OPT_STR, str,
    bool, _OPT_STR, (dict, type(None)))
if len(_HIT_TYPES) != len(HIT_FIELDS):
    raise ImportError("collector.journal: _HIT_TYPES does not follow collector.rows.HIT_FIELDS")


def valid_hit(hit: Any) -> bool:
    """True for a list shaped like a handler's hit (see collector.rows.HIT_FIELDS) that makes a row."""
    if not isinstance(hit, list) or len(hit) != len(_HIT_TYPES):
        return False
    if not all(isinstance(v, t) for v, t in zip(hit, _HIT_TYPES, strict=True)):
        return False
    ts, _, job, rcpt, _, page, *_, extra = hit
    return (0 < ts < 1e11 and all(abs(v) < 1 << 63 for v in (job, rcpt or 0)) and abs(page or 0) < 1 << 31
            and (extra is None or all(v is None or isinstance(v, str) for v in extra.values())))
