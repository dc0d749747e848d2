"""The report of one job, as a plain dict (rendered by render.py).

Every count comes as three disjoint figures that add up to its total:
``human`` (a recognised browser or mail client), ``unknown`` (neither that nor
a proven machine) and ``machine``. The headline figure (``headline`` in each
count, ``opens``/``clicks`` in links, recipients, cells and the timeline) is
human + unknown, or human alone with ``headline="recognised"``
(PIXELTRACK_HEADLINE); ``report["headline"]`` says which. ``machine`` lists
machine hits by reason and family for every mode.

Unique counts are None where the mode cannot know them (blind);
per-recipient facts appear only for personal tracking, demographic cells
only for anonymous jobs, with cells of fewer than k distinct recipients
merged into "other".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import asyncpg

from aggregator.figures import MACHINE, headline_of, machine_section
from aggregator.mail.documents import documents_section

JOB = "SELECT job_id, name, kind, mode, sent_at FROM jobs WHERE job_id = $1"
RECIPIENT_COUNT = "SELECT count(*) FROM recipients WHERE job_id = $1"
TOTALS = """
SELECT kind, total, machine, unknown, unique_count, inferred, unique_recognised, inferred_recognised
FROM report_job_totals WHERE job_id = $1
"""
LINKS = """
SELECT coalesce(r.link_id, l.link_id) AS link_id, coalesce(l.url, r.url) AS url,
       coalesce(r.total, 0) AS total, coalesce(r.machine, 0) AS machine, coalesce(r.unknown, 0) AS unknown,
       coalesce(r.unique_count, 0) AS unique_count, coalesce(r.unique_recognised, 0) AS unique_recognised
FROM (SELECT * FROM report_links WHERE job_id = $1) r
FULL JOIN (SELECT * FROM links WHERE job_id = $1) l ON l.link_id = r.link_id
ORDER BY coalesce(r.total, 0) - coalesce(r.machine, 0) DESC, 2
"""
RECIPIENTS = """
SELECT a.recipient_id, r.recipient, a.opens, a.machine_opens, a.clicks, a.machine_clicks,
       a.unknown_opens, a.unknown_clicks, a.first_open, a.last_open, a.first_click, a.last_click
FROM report_recipients a
LEFT JOIN recipients r ON r.job_id = a.job_id AND r.recipient_id = a.recipient_id
WHERE a.job_id = $1 ORDER BY a.recipient_id
"""
DEMOGRAPHICS = """
SELECT age_band, gender, zip, recipients, opens, unique_opens, clicks, unique_clicks, machine,
       unknown_opens, unknown_clicks, unique_opens_recognised, unique_clicks_recognised
FROM report_demographics WHERE job_id = $1 ORDER BY age_band, gender, zip
"""
TIMELINE = """
SELECT hour, sum(total - machine - unknown) FILTER (WHERE kind = 'open')::bigint AS human_opens,
       sum(unknown) FILTER (WHERE kind = 'open')::bigint AS unknown_opens,
       sum(machine) FILTER (WHERE kind = 'open')::bigint AS machine_opens,
       sum(total - machine - unknown) FILTER (WHERE kind = 'click')::bigint AS human_clicks,
       sum(unknown) FILTER (WHERE kind = 'click')::bigint AS unknown_clicks,
       sum(machine) FILTER (WHERE kind = 'click')::bigint AS machine_clicks
FROM report_hourly WHERE job_id = $1 GROUP BY hour ORDER BY hour
"""
BREAKDOWNS = """
SELECT kind, traffic, machine_reason, device_class, os, browser, mail_client, country, hits
FROM report_breakdowns WHERE job_id = $1
"""
DIMENSIONS = ("traffic", "machine_reason", "device_class", "os", "browser", "mail_client", "country")
BLIND_DIMENSIONS = ("traffic", "machine_reason")
CELL_FIELDS = (
    "recipients", "opens", "unique_opens", "clicks", "unique_clicks",
    "human_opens", "unknown_opens", "human_clicks", "unknown_clicks", "machine",
)  # fmt: skip


class UnknownJob(LookupError):
    """No job has this id."""


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def counts(row: asyncpg.Record | None, blind: bool, recognised: bool, with_inferred: bool = False) -> dict[str, Any]:
    """The three figures, their total and the headline figure of one kind; unique (None when blind)."""
    total, machine, unknown = (row["total"], row["machine"], row["unknown"]) if row else (0, 0, 0)
    human = total - machine - unknown
    out: dict[str, Any] = {
        "total": total, "human": human, "unknown": unknown, "machine": machine,
        "headline": human if recognised else human + unknown,
    }  # fmt: skip
    unique, inferred = ("unique_recognised", "inferred_recognised") if recognised else ("unique_count", "inferred")
    out["unique"] = None if blind else (row[unique] if row else 0)
    if with_inferred:
        out["inferred"] = None if blind else (row[inferred] if row else 0)
    return out


def link_entries(rows: Iterable[asyncpg.Record], blind: bool, recognised: bool) -> list[dict[str, Any]]:
    """One entry per tracked or clicked link: headline clicks, unique clickers, the three figures."""
    out = []
    for r in rows:
        human = r["total"] - r["machine"] - r["unknown"]
        unique = r["unique_recognised"] if recognised else r["unique_count"]
        out.append({"link_id": r["link_id"], "url": r["url"],
                    "clicks": human if recognised else human + r["unknown"],
                    "unique_clicks": None if blind else unique, "human": human, "unknown": r["unknown"],
                    "machine": r["machine"], "total": r["total"]})  # fmt: skip
    return out


def recipient_entries(rows: Iterable[asyncpg.Record], recognised: bool) -> list[dict[str, Any]]:
    """Per-recipient facts; an open is inferred when they clicked with images blocked.

    ``opens``/``clicks`` are headline figures; first/last times are of hits not a machine's.
    """
    out = []
    for r in rows:
        human_opens, human_clicks = r["opens"] - r["unknown_opens"], r["clicks"] - r["unknown_clicks"]
        opens = human_opens if recognised else r["opens"]
        clicks = human_clicks if recognised else r["clicks"]
        out.append({
            "recipient_id": r["recipient_id"], "recipient": r["recipient"], "opens": opens, "clicks": clicks,
            "first_open": iso(r["first_open"]), "last_open": iso(r["last_open"]),
            "first_click": iso(r["first_click"]), "last_click": iso(r["last_click"]),
            "open_inferred": opens == 0 and clicks > 0,
            "human_opens": human_opens, "unknown_opens": r["unknown_opens"], "machine_opens": r["machine_opens"],
            "human_clicks": human_clicks, "unknown_clicks": r["unknown_clicks"],
            "machine_clicks": r["machine_clicks"],
        })  # fmt: skip
    return out


def demographic_cells(rows: Iterable[asyncpg.Record], k: int, recognised: bool) -> list[dict[str, Any]]:
    """Cells with at least k distinct recipients, then the rest merged as "other"."""
    shown: list[dict[str, Any]] = []
    other = dict.fromkeys(CELL_FIELDS, 0)
    merged = 0
    for r in rows:
        cell = cell_figures(r, recognised)
        if r["recipients"] >= k:
            shown.append({"age_band": r["age_band"], "gender": r["gender"], "zip": r["zip"]} | cell)
        else:
            merged += 1
            other = {f: other[f] + cell[f] for f in CELL_FIELDS}
    if merged:
        shown.append({"age_band": "other", "gender": "other", "zip": "other"} | other)
    return shown


def cell_figures(r: asyncpg.Record, recognised: bool) -> dict[str, int]:
    """One demographic cell: headline opens/clicks and uniques, the three figures per kind."""
    human_opens, human_clicks = r["opens"] - r["unknown_opens"], r["clicks"] - r["unknown_clicks"]
    return {
        "recipients": r["recipients"],
        "opens": human_opens if recognised else r["opens"],
        "unique_opens": r["unique_opens_recognised"] if recognised else r["unique_opens"],
        "clicks": human_clicks if recognised else r["clicks"],
        "unique_clicks": r["unique_clicks_recognised"] if recognised else r["unique_clicks"],
        "human_opens": human_opens, "unknown_opens": r["unknown_opens"],
        "human_clicks": human_clicks, "unknown_clicks": r["unknown_clicks"], "machine": r["machine"],
    }  # fmt: skip


def timeline(rows: Iterable[asyncpg.Record], recognised: bool) -> list[dict[str, Any]]:
    """Per UTC hour: headline opens and clicks, and the three figures of each."""
    out = []
    for r in rows:
        entry: dict[str, Any] = {"hour": iso(r["hour"])}
        for kind in ("opens", "clicks"):
            human, unknown = r[f"human_{kind}"] or 0, r[f"unknown_{kind}"] or 0
            entry[kind] = human if recognised else human + unknown
        for kind in ("opens", "clicks"):
            for figure in ("human", "unknown", "machine"):
                entry[f"{figure}_{kind}"] = r[f"{figure}_{kind}"] or 0
        out.append(entry)
    return out


def breakdowns(rows: Iterable[asyncpg.Record], blind: bool, recognised: bool) -> dict[str, dict[str, dict[str, int]]]:
    """Per dimension and value: headline opens, clicks, views, and the three figures over all kinds.

    ``machine_reason`` lists machine hits only: a person's hit has no machine reason.
    """
    dims = BLIND_DIMENSIONS if blind else DIMENSIONS
    out: dict[str, dict[str, dict[str, int]]] = {d: {} for d in dims}
    for r in rows:
        traffic = r["traffic"] if r["traffic"] in ("human", "machine") else "unknown"
        headline = traffic == "human" or (traffic == "unknown" and not recognised)
        kind = {"open": "opens", "click": "clicks"}.get(r["kind"], "views")
        for dim in dims:
            if dim == "machine_reason" and traffic != "machine":
                continue
            cell = out[dim].setdefault(
                r[dim] or "unknown", {"opens": 0, "clicks": 0, "views": 0, "human": 0, "unknown": 0, "machine": 0}
            )
            cell[traffic] += r["hits"]
            if headline:
                cell[kind] += r["hits"]
    return out


async def build_report(conn: asyncpg.Connection, job_id: int, k: int = 5, headline: str = "all") -> dict[str, Any]:
    """The report of ``job_id`` from the report tables; ``headline``: all | recognised."""
    said = headline_of(headline)
    job = await conn.fetchrow(JOB, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id}")
    mode, blind, recognised = job["mode"], job["mode"] == "blind", headline == "recognised"
    totals = {r["kind"]: r for r in await conn.fetch(TOTALS, job_id)}
    report: dict[str, Any] = {
        "job": job_id, "name": job["name"], "kind": job["kind"], "mode": mode,
        "sent_at": iso(job["sent_at"]), "recipients_count": await conn.fetchval(RECIPIENT_COUNT, job_id),
        "headline": said,
        "opens": counts(totals.get("open"), blind, recognised, with_inferred=True),
        "clicks": counts(totals.get("click"), blind, recognised),
        # Clicks seconds after the send are link scanners; without the send time that rule cannot apply.
        "send_time": {"sent_at": iso(job["sent_at"]), "rule_applied": job["sent_at"] is not None},
    }  # fmt: skip
    views = {kind: counts(row, blind, recognised) for kind, row in totals.items() if kind not in ("open", "click")}
    if views:
        report["views"] = views
    report["links"] = link_entries(await conn.fetch(LINKS, job_id), blind, recognised)
    if mode in ("personal", "permission_personal"):
        report["recipients"] = recipient_entries(await conn.fetch(RECIPIENTS, job_id), recognised)
    if mode == "anonymous":
        report["k_anonymity"] = k
        report["demographics"] = demographic_cells(await conn.fetch(DEMOGRAPHICS, job_id), k, recognised)
    report["timeline"] = timeline(await conn.fetch(TIMELINE, job_id), recognised)
    report["breakdowns"] = breakdowns(await conn.fetch(BREAKDOWNS, job_id), blind, recognised)
    report["machine"] = machine_section(await conn.fetch(MACHINE, job_id))
    documents = await documents_section(conn, job_id, mode)  # document pages read, where there are any
    if documents is not None:
        report["documents"] = documents
    return report
