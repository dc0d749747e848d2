"""The wrk driver: wrk (C, epoll) with a generated Lua script.

The requests go to a tab-separated data file; the Lua template
(driver_wrk.lua) gets the run's constants filled in. Threads report progress
and their end on stderr; when all are done this module ends wrk with SIGINT
so that its done() prints the counts. wrk's latency is measured from the
moment a request is written (wrk, unlike wrk2, does not correct for
coordinated omission).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from loadtest.report import DriveResult, Progress
from loadtest.traffic import EXPECT, Request, raw_request

TEMPLATE = Path(__file__).with_name("driver_wrk.lua")
# How answers are told apart in Lua, and which categories each class covers.
CLASSES = {"pixel": 200, "click_ok": 302, "click_bad": 404}


def available() -> bool:
    """True when the wrk binary is on PATH."""
    return shutil.which("wrk") is not None


def write_script(folder: Path, requests: Sequence[Request], host: str, *, duration: float, quota: int,
                 rate: float, threads: int) -> Path:
    """Write the data file and the generated Lua script; return the script."""
    data = folder / "requests.tsv"
    with open(data, "wb") as f:
        for r in requests:
            raw = raw_request(r, host)
            if b"\t" in raw or b"\n" in raw.replace(b"\r\n", b""):
                raise ValueError(f"a request holds a tab or a bare newline: {raw!r}")
            f.write(r.category.encode() + b"\t" + raw.replace(b"\r\n", b"\t") + b"\n")
    lua = TEMPLATE.read_text(encoding="utf-8")
    constants = {"DATA": str(data), "READY": str(folder / "ready"), "DURATION": f"{duration:.3f}",
                 "QUOTA": str(quota), "RATE": f"{rate:.3f}", "THREADS": str(threads)}
    for name, value in constants.items():
        lua = lua.replace(f"@{name}@", value)
    script = folder / "driver.lua"
    script.write_text(lua, encoding="utf-8")
    return script


def _parse(lines: list[str], result: DriveResult) -> Counter[str]:
    """Fill ``result`` from done()'s lines; return answers per class."""
    classes: Counter[str] = Counter()
    first, last = [], []
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[0] != "PT":
            continue
        what, args = parts[1], parts[2:]
        if what == "sent":
            result.sent[args[0]] += int(args[1])
        elif what == "answered":
            classes[args[0]] += int(args[1])
        elif what == "status":
            result.statuses[int(args[0])] += int(args[1])
        elif what == "span" and float(args[0]) > 0:
            first.append(float(args[0]))
            last.append(float(args[1]))
        elif what == "errors":
            for name, n in zip(args[::2], args[1::2], strict=True):
                if int(n):
                    result.errors[name] += int(n)
        elif what == "latency":
            result.p50, result.p90, result.p99, result.max = (int(v) / 1000.0 for v in args)
    result.seconds = max(last, default=0.0) - min(first, default=0.0)
    return classes


def _attribute(result: DriveResult, classes: Counter[str]) -> None:
    """Per category answers: exact when every hit request of a class was answered."""
    for status, n in result.statuses.items():
        if status not in CLASSES.values():
            result.errors[str(status)] += n
    for name, status in CLASSES.items():
        cats = [c for c, want in EXPECT.items() if want == status]
        sent = sum(result.sent[c] for c in cats)
        if classes[name] == sent:
            for c in cats:
                result.answered[c] = result.sent[c]
        else:  # some unanswered: share out what came back, flag it
            result.exact = False
            result.errors[f"unanswered {name}"] += max(0, sent - classes[name])
            for c in cats:
                result.answered[c] = (result.sent[c] * classes[name]) // max(sent, 1)


async def _watch(proc: asyncio.subprocess.Process, threads: int, progress: Progress | None,
                 hard_stop: float, other: list[str]) -> None:
    """Follow the threads' stderr until all finished or the time bound passed.

    Lines that are not the script's own (wrk's and Lua's errors) go to ``other``.
    """
    assert proc.stderr is not None
    counts: dict[str, int] = {}
    finished = 0
    while finished < threads:
        left = hard_stop - time.monotonic()
        if left <= 0:
            return
        try:
            raw = await asyncio.wait_for(proc.stderr.readline(), min(left, 1.0))
        except TimeoutError:
            raw = b"-"
        if not raw:
            return  # wrk exited
        parts = raw.decode("utf-8", "replace").split()
        if len(parts) >= 4 and parts[:2] == ["PT", "progress"]:
            counts[parts[2]] = int(parts[3])
        elif len(parts) >= 4 and parts[:2] == ["PT", "finished"]:
            finished += 1
        elif raw != b"-":
            other.append(raw.decode("utf-8", "replace").rstrip())
        if progress and time.monotonic() - progress.last_at >= 1.0:
            progress.show(sum(counts.values()), 0)


async def drive(requests: Sequence[Request], host: str, port: int, *, connections: int = 32,
                duration: float | None = 10.0, count: int | None = None, rate: float | None = None,
                threads: int = 1, max_seconds: float = 600.0, show_progress: bool = True,
                cpus: set[int] | None = None) -> DriveResult:
    """Run wrk against http://host:port/ as the asyncio driver would."""
    threads = max(1, min(threads, connections))
    seconds = min(duration or max_seconds, max_seconds) if not count else 0.0
    bound = (seconds or max_seconds) + 30.0
    with tempfile.TemporaryDirectory(prefix="pixeltrack-wrk-") as tmp:
        script = write_script(Path(tmp), requests, f"{host}:{port}", duration=seconds, quota=count or 0,
                              rate=rate or 0.0, threads=threads)
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(bound)}s", "--timeout", "10s",
               "-s", str(script), f"http://{host}:{port}/"]
        if cpus:
            cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        progress = Progress(seconds or None, count) if show_progress else None
        other: list[str] = []
        try:
            await _watch(proc, threads, progress, time.monotonic() + bound, other)
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 30.0)
        finally:
            if progress:
                progress.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    lines = out.decode("utf-8", "replace").splitlines()
    if not any(line.startswith("PT ") for line in lines):
        problem = "\n".join(other + err.decode("utf-8", "replace").splitlines() + lines)
        raise RuntimeError(f"wrk exited with {proc.returncode} and no counts:\n{problem}")
    result = DriveResult(f"wrk ({threads} thread{'s' if threads > 1 else ''})")
    _attribute(result, _parse(lines, result))
    return result
