"""What a drive measured, and the report both drivers print the same way."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from loadtest.traffic import CATEGORIES


@dataclass
class DriveResult:
    """Counts and timings of one drive; latencies in milliseconds."""

    driver: str
    seconds: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)      # hit requests sent, per category
    answered: Counter[str] = field(default_factory=Counter)  # answered with the expected status
    statuses: Counter[int] = field(default_factory=Counter)  # every hit answer, by status
    errors: Counter[str] = field(default_factory=Counter)    # wrong status, or no answer at all
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    exact: bool = True  # False when answers could not be told apart per category

    @property
    def requests(self) -> int:
        """Hit requests answered with the expected status."""
        return sum(self.answered.values())

    @property
    def rate(self) -> float:
        """Answered hit requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def percentiles(latencies: list[float]) -> tuple[float, float, float, float]:
    """p50, p90, p99 and max of ``latencies`` (same unit)."""
    if not latencies:
        return 0.0, 0.0, 0.0, 0.0
    ordered = sorted(latencies)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))]

    return at(0.50), at(0.90), at(0.99), ordered[-1]


def format_report(result: DriveResult, how: str) -> str:
    """The report, several lines, same for both drivers."""
    statuses = "  ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items())) or "none"
    errors = "  ".join(f"{name}: {n}" for name, n in sorted(result.errors.items())) or "none"
    per_kind = "  ".join(f"{c} {result.answered[c]}" for c in CATEGORIES if result.answered[c])
    return "\n".join((
        f"driver     {result.driver}, {how}",
        f"requests   {result.requests} answered in {result.seconds:.2f} s = {result.rate:.0f} req/s",
        f"latency    p50 {result.p50:.2f} ms  p90 {result.p90:.2f} ms  p99 {result.p99:.2f} ms  "
        f"max {result.max:.2f} ms",
        f"statuses   {statuses}",
        f"errors     {errors}",
        f"answered   {per_kind}",
    ))


class Progress:
    """One progress line a second on stderr (rewritten in place on a terminal)."""

    def __init__(self, total_seconds: float | None, total_requests: int | None) -> None:
        self.started = time.monotonic()
        self.last_at = self.started
        self.last_count = 0
        self.total_seconds = total_seconds
        self.total_requests = total_requests
        self.tty = sys.stderr.isatty()

    def show(self, count: int, errors: int) -> None:
        """Print the line for ``count`` answered so far."""
        now = time.monotonic()
        rate = (count - self.last_count) / max(now - self.last_at, 1e-6)
        self.last_at, self.last_count = now, count
        goal = (f"/{self.total_requests}" if self.total_requests else
                f" ({now - self.started:.0f}/{self.total_seconds:.0f} s)")
        line = f"progress   {count}{goal} answered  {rate:,.0f} req/s  errors {errors}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the in-place line."""
        if self.tty:
            print(file=sys.stderr, flush=True)
