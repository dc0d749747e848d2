"""Renders a report dict as a terminal table, JSON or CSV.

Tables print times as ``2026-12-03 09:19 UTC``; JSON and CSV keep the
report's ISO 8601.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

from pixeltrack.core import csvsafe
from pixeltrack.core.times import human_time

FIGURES = ("total", "human", "unknown", "machine", "headline", "unique")
LEGEND = (
    "human = a recognised browser or mail client; unknown = neither recognised nor proven a machine; "
    "machine = mail proxies, crawlers, scanners, prefetch."
)

FORMATS = ("table", "json", "csv")
# A document page's figures (aggregator.mail.documents.documents_section), and their table headers.
DOC_FIELDS = ("views", "preloaded", "unique_readers", "reached", "median_seconds", "total_seconds", "timed_views")
DOC_HEADERS = ("views", "pre-loaded", "readers", "reached", "median s", "total s", "timed")


def as_json(report: dict[str, Any]) -> str:
    """The report as indented JSON (the keys scripts rely on)."""
    return json.dumps(report, indent=2, ensure_ascii=False)


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _time(value: str | None) -> str:
    """An ISO 8601 time of the report as a table shows it (minutes, UTC)."""
    return human_time(None if value is None else dt.datetime.fromisoformat(value))


def _grid(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns aligned right, except a last text column aligned left."""
    cells = [headers] + [[_num(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        parts = [v.rjust(w) for v, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        out.append("  " + "  ".join(parts))
    return out


def _headline(report: dict[str, Any]) -> list[str]:
    counted = [("opens", report["opens"]), ("clicks", report["clicks"]), *report.get("views", {}).items()]
    lines = _grid([*FIGURES, ""], [[c[k] for k in FIGURES] + [kind] for kind, c in counted])
    inferred = report["opens"].get("inferred")
    if inferred:
        lines.append(f"  ({inferred} unique opens inferred from clicks: images blocked)")
    return lines


def said(report: dict[str, Any]) -> str:
    """What the headline figures count, and the setting that chose it (mail and site tables)."""
    headline = report["headline"]
    return f"Headline figures count {headline['counts']} (PIXELTRACK_HEADLINE={headline['setting']})."


def machine_lines(section: dict[str, Any]) -> Iterator[str]:
    """The machine section in a table (mail and site): hits, by reason, by family."""
    yield f"\nMachine traffic: {section['hits']} hits"
    if section["hits"]:
        yield "  by reason: " + ", ".join(f"{name} {n}" for name, n in section["by_reason"].items())
        yield "  by family: " + ", ".join(f"{name} {n}" for name, n in section["by_family"].items())


def _breakdowns(report: dict[str, Any]) -> Iterator[str]:
    yield "\nBreakdowns: opens/clicks (headline), then human/unknown/machine hits"
    for dim, values in report["breakdowns"].items():
        if not values:
            continue
        if dim == "machine_reason":  # machine hits only
            shown = ", ".join(f"{v} {c['machine']}" for v, c in sorted(values.items()))
        else:
            shown = ", ".join(f"{v} {c['opens']}/{c['clicks']} ({c['human']}/{c['unknown']}/{c['machine']})"
                              for v, c in sorted(values.items()))  # fmt: skip
        yield f"{dim}: {shown}"


def _documents(section: dict[str, Any] | None) -> Iterator[str]:
    """Document pages read (where the job has any): per page, then per reader (personal tracking)."""
    if section is None:
        return
    yield "\nDocuments: views and reading time per page (pre-loads apart)"
    yield from _grid([*DOC_HEADERS, "page"], [[p[k] for k in DOC_FIELDS] + [p["page"]] for p in section["pages"]])
    if "readers" in section:
        yield "\nReaders"
        yield from _grid(
            ["seconds", "furthest page", "pages (page:views/seconds)", "recipient"],
            [[r["total_seconds"], r["furthest_page"], " ".join(f"{p['page']}:{p['views']}/{p['seconds']}"
                                                              for p in r["pages"]),
              r["recipient"] or f"#{r['recipient_id']}"] for r in section["readers"]],
        )  # fmt: skip


def _sections(report: dict[str, Any]) -> Iterator[str]:
    yield f"Job {report['job']} {report['name']!r}: mode {report['mode']}, sent {_time(report['sent_at'])}, " \
          f"{report['recipients_count']} recipients"  # fmt: skip
    yield said(report)
    yield from [] if report["send_time"]["rule_applied"] else ["Send time unknown: the send-time rule did not apply."]
    yield LEGEND
    yield from _headline(report)
    yield "\nLinks"
    yield from _grid(["clicks", "unique", "human", "unknown", "machine", "url"],
                     [[e["clicks"], e["unique_clicks"], e["human"], e["unknown"], e["machine"], e["url"]]
                      for e in report["links"]])  # fmt: skip
    if "recipients" in report:
        yield "\nRecipients"
        yield from _grid(
            ["opens", "clicks", "unknown", "machine", "first open", "last open", "recipient"],
            [[r["opens"] if not r["open_inferred"] else "0*", r["clicks"], r["unknown_opens"] + r["unknown_clicks"],
              r["machine_opens"] + r["machine_clicks"], _time(r["first_open"]), _time(r["last_open"]),
              r["recipient"] or f"#{r['recipient_id']}"] for r in report["recipients"]],
        )  # fmt: skip
    if "demographics" in report:
        yield f"\nDemographics (cells under {report['k_anonymity']} recipients merged into other)"
        yield from _grid(
            ["recipients", "opens", "uniq opens", "clicks", "uniq clicks", "unknown", "machine", "age / gender / zip"],
            [[c["recipients"], c["opens"], c["unique_opens"], c["clicks"], c["unique_clicks"],
              c["unknown_opens"] + c["unknown_clicks"], c["machine"],
              f"{c['age_band']} / {c['gender']} / {c['zip']}"] for c in report["demographics"]],
        )  # fmt: skip
    yield "\nTimeline"
    yield from _grid(["opens", "clicks", "human", "unknown", "machine", "hour"],
                     [[t["opens"], t["clicks"], t["human_opens"] + t["human_clicks"],
                       t["unknown_opens"] + t["unknown_clicks"], t["machine_opens"] + t["machine_clicks"],
                       _time(t["hour"])] for t in report["timeline"]])  # fmt: skip
    yield from machine_lines(report["machine"])
    yield from _documents(report.get("documents"))
    yield from _breakdowns(report)


def as_table(report: dict[str, Any]) -> str:
    """A readable report for a terminal."""
    return "\n".join(_sections(report)) + "\n"


def _flat(report: dict[str, Any]) -> Iterator[tuple[str, Any, str, Any]]:
    """(section, item, metric, value) rows: lossless and easy to pivot."""
    for key in ("job", "name", "mode", "sent_at", "recipients_count"):
        yield "job", "", key, report[key]
    if "headline" in report:
        yield "job", "", "headline", report["headline"]["setting"]
        yield "job", "", "headline_counts", report["headline"]["counts"]
    for kind in ("opens", "clicks"):
        for metric, value in report[kind].items():
            yield "totals", kind, metric, value
    for kind, c in report.get("views", {}).items():
        for metric, value in c.items():
            yield "totals", kind, metric, value
    for e in report["links"]:
        for metric in ("clicks", "unique_clicks", "human", "unknown", "machine", "total"):
            if metric in e:
                yield "links", e["url"], metric, e[metric]
    for r in report.get("recipients", []):
        for metric in ("opens", "clicks", "first_open", "last_open", "open_inferred", "human_opens", "unknown_opens",
                       "machine_opens", "human_clicks", "unknown_clicks", "machine_clicks"):  # fmt: skip
            if metric in r:
                yield "recipients", r["recipient"] or r["recipient_id"], metric, r[metric]
    for c in report.get("demographics", []):
        cell = f"{c['age_band']}|{c['gender']}|{c['zip']}"
        for metric, value in c.items():
            if metric not in ("age_band", "gender", "zip"):
                yield "demographics", cell, metric, value
    for t in report["timeline"]:
        for metric, value in t.items():
            if metric != "hour":
                yield "timeline", t["hour"], metric, value
    if "machine" in report:
        yield from machine_rows(report["machine"])
    for dim, values in report["breakdowns"].items():
        for value, c in values.items():
            for metric, n in c.items():
                yield f"breakdown:{dim}", value, metric, n
    if "documents" in report:
        yield from _flat_documents(report["documents"])


def _flat_documents(section: dict[str, Any]) -> Iterator[tuple[str, Any, str, Any]]:
    for p in section["pages"]:
        for metric in DOC_FIELDS:
            yield "documents", p["page"], metric, p[metric]
    for r in section.get("readers", []):
        who = r["recipient"] or r["recipient_id"]
        yield "documents:reader", who, "total_seconds", r["total_seconds"]
        yield "documents:reader", who, "furthest_page", r["furthest_page"]
        for p in r["pages"]:
            for metric in ("views", "seconds"):
                yield "documents:reader_page", f"{who}|{p['page']}", metric, p[metric]


def machine_rows(machine: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    """The machine section as (section, item, metric, value) CSV rows (mail and site)."""
    yield "machine", "", "hits", machine["hits"]
    for name, n in machine["by_reason"].items():
        yield "machine:reason", name, "hits", n
    for name, n in machine["by_family"].items():
        yield "machine:family", name, "hits", n
    for entry in machine["detail"]:
        yield "machine:detail", f"{entry['kind']}|{entry['reason']}|{entry['family']}", "hits", entry["hits"]


def as_csv(report: dict[str, Any]) -> str:
    """The report as long-format CSV: section,item,metric,value (formulas neutralised)."""
    buf = io.StringIO()
    writer = csvsafe.writer(buf, lineterminator="\n")
    writer.writerow(["section", "item", "metric", "value"])
    writer.writerows(("" if v is None else v for v in row) for row in _flat(report))
    return buf.getvalue()


def render(report: dict[str, Any], fmt: str) -> str:
    """The report in ``fmt`` (table, json or csv)."""
    return {"table": as_table, "json": as_json, "csv": as_csv}[fmt](report)
