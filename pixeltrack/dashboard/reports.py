"""The report dicts of the aggregator, made ready for pages: rates, time buckets, date ranges.

The pages call the aggregator's report layer (build_report, site_report) and
so show whatever those dicts carry; this module only derives from them.
The report layer has no date range: ?from=&to= filters the time series of
the dict here (the headline figures stay those of the whole job or site).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from aggregator.mail import report as mail_report
from aggregator.web.report import site_report
from pixeltrack.dashboard.queries import RecipientCounts

HOURLY_UP_TO = dt.timedelta(hours=72)  # longer spans are shown per day


class _ReportConnection:
    """build_report's connection, answering two of its queries more cheaply.

    - Every recipient (RECIPIENTS): a job page shows recipients a page at a
      time straight from the roll-up table (queries.RECIPIENT_PAGES); loading
      a million of them per view is what the report layer would do otherwise.
      The key stays (as []), so the page still knows the mode allows identity.
    - The recipient count (RECIPIENT_COUNT) comes from the counts cache, which
      counts again only when the job's highest recipient id moved.
    """

    def __init__(self, conn: asyncpg.Connection, counts: RecipientCounts, recipients: bool) -> None:
        self._conn, self._counts, self._recipients = conn, counts, recipients

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        if not self._recipients and query == getattr(mail_report, "RECIPIENTS", None):
            return []
        return list(await self._conn.fetch(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        if query == getattr(mail_report, "RECIPIENT_COUNT", None) and len(args) == 1:
            return (await self._counts.get(self._conn, [args[0]])).get(args[0], 0)
        return await self._conn.fetchval(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def job_report(conn: asyncpg.Connection, job_id: int, k: int, counts: RecipientCounts,
                     recipients: bool = False, headline: str = "all") -> dict[str, Any]:
    """build_report's dict; per-recipient rows only when asked (the API asks, pages do not)."""
    return await mail_report.build_report(_ReportConnection(conn, counts, recipients), job_id, k, headline)


async def web_report(conn: asyncpg.Connection, site_id: int, headline: str = "all") -> dict[str, Any]:
    """site_report's dict (LookupError for an unknown site)."""
    return await site_report(conn, site_id, headline=headline)


def _ratio(part: Any, whole: Any) -> float | None:
    return None if part is None or not whole else part / whole


def rates(report: Mapping[str, Any]) -> dict[str, float | None]:
    """Open, click and click-to-open rates as the job_rates view defines them (unique, human; blind: per hit)."""
    opens, clicks, count = report["opens"], report["clicks"], report.get("recipients_count") or 0
    if report["mode"] == "blind":
        return {"open_rate": None, "click_rate": None, "click_to_open": _ratio(clicks["headline"], opens["headline"])}
    return {"open_rate": _ratio(opens["unique"], count), "click_rate": _ratio(clicks["unique"], count),
            "click_to_open": _ratio(clicks["unique"], opens["unique"])}


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of UTC days; either end may be open."""

    first: dt.date | None = None
    last: dt.date | None = None
    error: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> DateRange:
        """From ?from=YYYY-MM-DD&to=YYYY-MM-DD; a bad value is reported, not fatal."""
        try:
            first = dt.date.fromisoformat(query["from"]) if query.get("from") else None
            last = dt.date.fromisoformat(query["to"]) if query.get("to") else None
        except ValueError:
            return cls(error="Dates must be given as YYYY-MM-DD; showing every day.")
        if first and last and first > last:
            return cls(error="The range ends before it starts; showing every day.")
        return cls(first, last)

    def holds(self, day: dt.date) -> bool:
        """``day`` is inside the range."""
        return (self.first is None or day >= self.first) and (self.last is None or day <= self.last)

    @property
    def active(self) -> bool:
        """A range was given."""
        return self.first is not None or self.last is not None


def _moment(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.combine(value, dt.time(), dt.UTC)


@dataclass(frozen=True)
class Buckets:
    """A time series in regular buckets: labels, and per field its values."""

    unit: str  # "hour" | "day"
    labels: list[str]
    fields: dict[str, list[float]]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per bucket, for the table and the CSV."""
        return [{self.unit: label, **{f: v[i] for f, v in self.fields.items()}} for i, label in enumerate(self.labels)]


def bucket(points: Iterable[Mapping[str, Any]], time_key: str, days: DateRange,
           unit: str | None = None) -> Buckets:
    """Sum the numeric fields of ``points`` per hour (spans up to 72 h) or per day, gaps as 0."""
    kept = []
    for point in points:
        moment = _moment(point[time_key])
        if days.holds(moment.date()):
            kept.append((int(moment.timestamp()), point))
    keys: set[str] = set().union(*(p.keys() for _, p in kept))
    fields = sorted(k for k in keys - {time_key}
                    if any(isinstance(p.get(k), int | float) and not isinstance(p.get(k), bool) for _, p in kept[:50]))
    if not kept:
        return Buckets(unit or "day", [], {f: [] for f in fields})
    first, last = min(t for t, _ in kept), max(t for t, _ in kept)
    if unit is None:
        unit = "hour" if last - first <= HOURLY_UP_TO.total_seconds() else "day"
    step = 3600 if unit == "hour" else 86400
    start = first // step * step  # UTC hours and days: the epoch starts on both
    sums = {f: [0] * ((last // step * step - start) // step + 1) for f in fields}
    for second, point in kept:
        i = (second - start) // step
        for f in fields:
            value = point.get(f)
            if value:
                sums[f][i] += value
    fmt = "%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d"
    count = len(next(iter(sums.values()))) if sums else (last // step * step - start) // step + 1
    labels = [dt.datetime.fromtimestamp(start + i * step, dt.UTC).strftime(fmt) for i in range(count)]
    return Buckets(unit, labels, sums)  # type: ignore[arg-type]


def dimension_rows(values: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A breakdown dimension as rows ranked by human events (opens + clicks + views), then machine."""
    rows = []
    for value, cell in values.items():
        numbers = {k: v for k, v in cell.items() if isinstance(v, int | float)}
        human = sum(v for k, v in numbers.items() if k != "machine")
        rows.append({"value": value, **numbers, "human": human})
    return sorted(rows, key=lambda r: (-r["human"], -r.get("machine", 0), r["value"]))


def grouped(rows: Iterable[Mapping[str, Any]], key: str, count: str) -> list[dict[str, Any]]:
    """Sum ``count`` per ``key`` ('' shown as unknown), ranked."""
    sums: dict[str, int] = {}
    for row in rows:
        name = row.get(key) or "unknown"
        sums[name] = sums.get(name, 0) + int(row.get(count) or 0)
    return [{"value": k, count: v} for k, v in sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))]
