"""The body of an event, exactly as posted (and as an e-mail alert's text).

``{"id", "type", "created", "trigger", "job" | "site", "data"}``; ``data``
carries only what the job's mode may keep: who, what, when and on which
device for personal tracking, counts for the others.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from aggregator.triggers.detect import Found, iso

WHAT = {
    "open.first": "opened the mail for the first time",
    "click": "clicked {link}",
    "doc.page": "viewed page {page}",
    "doc.read": "has read for {seconds:.0f} seconds in all",
    "site.contact": "viewed {url}",
    "job.threshold": "reached {threshold} {counted} {of}",
}


def subject_of(job: dict[str, Any]) -> dict[str, Any]:
    """The job or site part: {"job": {...}} or {"site": {...}}."""
    if job["kind"] == "site":
        return {"site": {"id": job["job_id"], "domain": job["domain"], "name": job["name"]}}
    return {"job": {"id": job["job_id"], "name": job["name"], "mode": job["mode"]}}


def body(event_id: uuid.UUID, event: str, created: dt.datetime, trigger_id: int, job: dict[str, Any],
         found: Found) -> str:
    """The JSON text of one event (compact, stable key order)."""
    doc = {"id": str(event_id), "type": event, "created": iso(created), "trigger": trigger_id,
           **subject_of(job), "data": found.data}  # fmt: skip
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def alert_text(raw: str) -> tuple[str, str]:
    """(subject, plain-text body) of an e-mail alert: who (where allowed), what, when, device."""
    doc = json.loads(raw)
    data, event = doc["data"], doc["type"]
    where = doc.get("job") or doc.get("site") or {}
    label = f"job {where.get('id')} {where.get('name')!r}" if "job" in doc else f"site {where.get('domain')}"
    what = WHAT.get(event, event).format(**{"link": "", "page": "", "seconds": 0, "url": "", "threshold": "",
                                            "counted": "", "of": "", **data})  # fmt: skip
    who = data.get("recipient")
    lines = [f"What: {who + ' ' if who else label + ' '}{what}"]
    if who:
        lines.append(f"Who: {who}")
    lines.append(f"When: {data.get('time') or doc['created']}")
    if "device" in data:
        lines.append(f"Device: {data['device'] or 'unknown'}")
    lines += [f"{name}: {data[key]}" for key, name in (("mail_client", "Mail client"), ("country", "Country"))
              if data.get(key)]  # fmt: skip
    if "count" in data:
        lines.append(f"Count: {data['count']}")
    lines += [f"Where: {label}", f"Event: {event}, id {doc['id']}", "", "-- pixeltrack trigger " + str(doc["trigger"])]
    return f"[pixeltrack] {event}: {who or label}", "\n".join(lines) + "\n"
