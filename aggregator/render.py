"""Renders a report dict as a terminal table, JSON or CSV."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from pixeltrack.core import csvsafe

FORMATS = ("table", "json", "csv")


def as_json(report: dict[str, Any]) -> str:
    """The report as indented JSON (the keys scripts rely on)."""
    return json.dumps(report, indent=2, ensure_ascii=False)


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


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
    rows = [["opens", *(report["opens"][k] for k in ("total", "human", "machine", "unique"))]]
    rows.append(["clicks", *(report["clicks"][k] for k in ("total", "human", "machine", "unique"))])
    for kind, c in report.get("views", {}).items():
        rows.append([kind, c["total"], c["human"], c["machine"], c["unique"]])
    lines = _grid(["total", "human", "machine", "unique", ""], [r[1:] + [r[0]] for r in rows])
    inferred = report["opens"].get("inferred")
    if inferred:
        lines.append(f"  ({inferred} unique opens inferred from clicks: images blocked)")
    return lines


def _sections(report: dict[str, Any]) -> Iterator[str]:
    yield f"Job {report['job']} {report['name']!r}: mode {report['mode']}, sent {_num(report['sent_at'])}, " \
          f"{report['recipients_count']} recipients"  # fmt: skip
    yield "Headline numbers are human: total minus machine (proxies, scanners, prefetch)."
    yield from [] if report["send_time"]["rule_applied"] else ["Send time unknown: the send-time rule did not apply."]
    yield from _headline(report)
    yield "\nLinks"
    yield from _grid(["clicks", "unique", "machine", "url"],
                     [[e["clicks"], e["unique_clicks"], e["machine"], e["url"]] for e in report["links"]])  # fmt: skip
    if "recipients" in report:
        yield "\nRecipients"
        yield from _grid(
            ["opens", "clicks", "first open", "last open", "recipient"],
            [[r["opens"] if not r["open_inferred"] else "0*", r["clicks"], r["first_open"], r["last_open"],
              r["recipient"] or f"#{r['recipient_id']}"] for r in report["recipients"]],
        )  # fmt: skip
    if "demographics" in report:
        yield f"\nDemographics (cells under {report['k_anonymity']} recipients merged into other)"
        yield from _grid(
            ["recipients", "opens", "uniq opens", "clicks", "uniq clicks", "age / gender / zip"],
            [[c["recipients"], c["opens"], c["unique_opens"], c["clicks"], c["unique_clicks"],
              f"{c['age_band']} / {c['gender']} / {c['zip']}"] for c in report["demographics"]],
        )  # fmt: skip
    yield "\nTimeline (UTC hours)"
    yield from _grid(["opens", "clicks", "machine", "hour"],
                     [[t["opens"], t["clicks"], t["machine_opens"] + t["machine_clicks"], t["hour"]]
                      for t in report["timeline"]])  # fmt: skip
    for dim, values in report["breakdowns"].items():
        if values:
            shown = ", ".join(f"{v} {c['opens']}/{c['clicks']}/{c['machine']}" for v, c in sorted(values.items()))
            yield f"{dim} (opens/clicks/machine): {shown}"


def as_table(report: dict[str, Any]) -> str:
    """A readable report for a terminal."""
    return "\n".join(_sections(report)) + "\n"


def _flat(report: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    """(section, item, metric, value) rows: lossless and easy to pivot."""
    for key in ("job", "name", "mode", "sent_at", "recipients_count"):
        yield "job", "", key, report[key]
    for kind in ("opens", "clicks"):
        for metric, value in report[kind].items():
            yield "totals", kind, metric, value
    for kind, c in report.get("views", {}).items():
        for metric, value in c.items():
            yield "totals", kind, metric, value
    for e in report["links"]:
        for metric in ("clicks", "unique_clicks", "machine", "total"):
            yield "links", e["url"], metric, e[metric]
    for r in report.get("recipients", []):
        for metric in ("opens", "clicks", "first_open", "last_open", "open_inferred"):
            yield "recipients", r["recipient"] or r["recipient_id"], metric, r[metric]
    for c in report.get("demographics", []):
        cell = f"{c['age_band']}|{c['gender']}|{c['zip']}"
        for metric in ("recipients", "opens", "unique_opens", "clicks", "unique_clicks", "machine"):
            yield "demographics", cell, metric, c[metric]
    for t in report["timeline"]:
        for metric in ("opens", "clicks", "machine_opens", "machine_clicks"):
            yield "timeline", t["hour"], metric, t[metric]
    for dim, values in report["breakdowns"].items():
        for value, c in values.items():
            for metric, n in c.items():
                yield f"breakdown:{dim}", value, metric, n


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
