"""The website page and its live panel's JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pixeltrack.dashboard import csvout, queries
from pixeltrack.dashboard.charts import Series
from pixeltrack.dashboard.keys import CONFIG, POOL
from pixeltrack.dashboard.pages import path_id
from pixeltrack.dashboard.render import page
from pixeltrack.dashboard.reports import DateRange, bucket, grouped, web_report

DEVICE_DIMENSIONS = ("device_class", "os", "browser", "country")
SHOWN_CONTACTS = 100


def _series(report: dict[str, Any], days: DateRange) -> Any:
    """Hourly when the days shown span up to three, else daily (the hourly rows are not even read then)."""
    daily = bucket(report["timeline"]["daily"], "day", days, unit="day")
    if 0 < len(daily.labels) <= 3:
        return bucket(report["timeline"]["hourly"], "hour", days, unit="hour")
    return daily


def _exports(report: dict[str, Any], buckets: Any) -> dict[str, list[dict[str, Any]]]:
    contacts = [
        {"mail_job_id": c["mail_job_id"], "recipient_id": c["recipient_id"], "recipient": c["recipient"],
         "identified_at": c["identified_at"], "landing_url": c["landing_url"], "at": p["at"], "url": p["url"],
         "title": p["title"]}
        for c in report.get("contacts", []) for p in c["pages"]
    ]  # fmt: skip
    return {"top_pages": report["top_pages"], "entry_pages": report["entry_pages"], "sources": report["sources"],
            "devices": report["devices"], "timeline": buckets.rows(), "contacts": contacts}


async def site_page(request: web.Request) -> web.Response:
    """GET /sites/{site_id}: traffic over time, pages, sources, devices, sessions, contacts, live panel."""
    site_id, days = path_id(request, "site_id"), DateRange.parse(request.query)
    async with request.app[POOL].acquire() as conn:
        try:
            report = await web_report(conn, site_id, request.app[CONFIG].headline)
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
    buckets = _series(report, days)
    export = request.query.get("export")
    tables = _exports(report, buckets)
    if export in tables:
        return csvout.download(csvout.dicts_csv(tables[export]), f"{report['domain']}-{export}")
    if export:
        raise web.HTTPNotFound(text=f"no table {export!r}")
    series = [Series("Page views", buckets.fields.get("pageviews", []), "s0")]
    if report["visitors"] is not None:
        series.append(Series("Visitors", buckets.fields.get("visitors", []), "s1"))
    devices = {dim: grouped(report["devices"], dim, "pageviews") for dim in DEVICE_DIMENSIONS}
    contacts = report.get("contacts")
    return page(request, "site.html", report=report, days=days, buckets=buckets, series=series,
                devices={k: v for k, v in devices.items() if v}, contacts=contacts,
                shown_contacts=SHOWN_CONTACTS)


async def live_json(request: web.Request) -> web.Response:
    """GET /sites/{site_id}/live.json: page views of the last 30 minutes (polled every 5 s)."""
    site_id = path_id(request, "site_id")
    async with request.app[POOL].acquire() as conn:
        return web.json_response(await queries.live(conn, site_id))
