"""The overview and the mail job page (HTML, and CSV of every table with ?export=)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aggregator.mail.report import UnknownJob
from pixeltrack.dashboard import csvout, queries
from pixeltrack.dashboard.charts import Series
from pixeltrack.dashboard.keys import CONFIG, COUNTS, POOL
from pixeltrack.dashboard.render import page
from pixeltrack.dashboard.reports import DateRange, bucket, dimension_rows, job_report, rates

# Keys of the job report drawn by their own section; any other key is shown generically.
DRAWN = {"job", "name", "kind", "mode", "sent_at", "recipients_count", "opens", "clicks", "views", "links",
         "recipients", "k_anonymity", "demographics", "timeline", "breakdowns", "machine", "headline"}
PERSONAL = ("personal", "permission_personal")
MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str) -> int:
    """An id from the path, 404 when it cannot be one."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise web.HTTPNotFound()
    return value


def page_number(request: web.Request) -> int:
    """?page=N, at least 1 (a bad value is page 1)."""
    raw = request.query.get("page", "1")
    return max(1, min(int(raw), 10_000_000)) if raw.isdigit() and len(raw) < 9 else 1


async def overview(request: web.Request) -> web.Response:
    """GET /: every mail job and site with headline figures, trends and pipeline health."""
    config = request.app[CONFIG]
    async with request.app[POOL].acquire() as conn:
        data = await queries.overview(conn, request.app[COUNTS], config.headline)
        health = await queries.health(conn, config.spool_dir)
    for job in data["jobs"]:
        job["rates"] = rates(job)
    return page(request, "overview.html", jobs=data["jobs"], sites=data["sites"], health=health)


def timeline_chart(buckets: Any) -> Any:
    """Human opens and clicks, and machine events as a separate series."""
    f = buckets.fields
    machine = [a + b for a, b in zip(f.get("machine_opens", []), f.get("machine_clicks", []), strict=False)]
    series = [Series("Opens", f.get("opens", []), "s0"), Series("Clicks", f.get("clicks", []), "s1"),
              Series("Machine", machine, "s2")]
    return series


def _exports(report: dict[str, Any], buckets: Any) -> dict[str, tuple[list[str] | None, list[dict[str, Any]]]]:
    tables: dict[str, tuple[list[str] | None, list[dict[str, Any]]]] = {
        "headline": (["metric", "kind", "value"], [
            {"metric": m, "kind": kind, "value": v}
            for kind in ("opens", "clicks") for m, v in report[kind].items()
        ] + [{"metric": m, "kind": kind, "value": v}
             for kind, c in report.get("views", {}).items() for m, v in c.items()]),
        "links": (None, report["links"]),
        "timeline": (None, buckets.rows()),
        "breakdowns": (["dimension", "value", "opens", "clicks", "views", "machine"], [
            {"dimension": dim, **row} for dim, values in report["breakdowns"].items()
            for row in dimension_rows(values)
        ]),
    }  # fmt: skip
    if "demographics" in report:
        tables["demographics"] = (None, report["demographics"])
    return tables


async def _recipients_csv(request: web.Request, job_id: int, name: str) -> web.StreamResponse:
    """Every recipient row, streamed from a cursor 5 000 at a time (never all in memory)."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{csvout.safe_name(name)}-recipients.csv"'})
    await response.prepare(request)
    await response.write(csvout.to_csv(queries.RECIPIENT_COLUMNS, []).encode())
    query = queries.RECIPIENT_PAGES[("id", "ASC", False)]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        cursor = await conn.cursor(query, job_id, None, 0)
        while rows := await cursor.fetch(5000):
            body = csvout.to_csv(None, ([r[c] for c in queries.RECIPIENT_COLUMNS] for r in rows))
            await response.write(body.encode())
    await response.write_eof()
    return response


async def job_page(request: web.Request) -> web.StreamResponse:
    """GET /jobs/{job_id}: headline cards, chart, links, breakdowns, recipients or demographic cells."""
    job_id, config = path_id(request, "job_id"), request.app[CONFIG]
    days = DateRange.parse(request.query)
    async with request.app[POOL].acquire() as conn:
        try:
            report = await job_report(conn, job_id, config.k_anonymity, request.app[COUNTS], headline=config.headline)
        except UnknownJob as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        if report["kind"] == "site":
            raise web.HTTPFound(f"/sites/{job_id}")
        buckets = bucket(report["timeline"], "hour", days)
        export = request.query.get("export")
        if export == "recipients" and "recipients" in report:
            return await _recipients_csv(request, job_id, report["name"])
        tables = _exports(report, buckets)
        if export in tables:
            columns, rows = tables[export]
            return csvout.download(csvout.dicts_csv(rows, columns), f"{report['name']}-{export}")
        if export:
            raise web.HTTPNotFound(text=f"no table {export!r}")
        recipients: list[dict[str, Any]] = []
        more = False
        q = request.query.get("q", "")[:200]
        sort, way, number = request.query.get("sort", "id"), request.query.get("dir", "asc"), page_number(request)
        if "recipients" in report:
            recipients, more = await queries.recipient_page(conn, job_id, q=q, sort=sort, way=way, page=number,
                                                            size=config.page_size)
    links_max = max((link["clicks"] + link["machine"] for link in report["links"]), default=0)
    breakdowns = {dim: dimension_rows(values) for dim, values in report["breakdowns"].items() if values}
    extra = {k: v for k, v in report.items() if k not in DRAWN}
    return page(request, "job.html", report=report, rates=rates(report), days=days, buckets=buckets,
                series=timeline_chart(buckets), links_max=links_max, breakdowns=breakdowns, extra=extra,
                recipients=recipients, more=more, q=q, sort=sort if sort in queries.SORTS else "id",
                way="desc" if way == "desc" else "asc", page_no=number, sorts=list(queries.SORTS))
