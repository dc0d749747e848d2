"""The pages without a browser: figures from the report layer, recipients a page at a time, CSV exports."""

from __future__ import annotations

import csv
import io
import re
import uuid
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from aggregator.mail.report import build_report
from pixeltrack.dashboard.app import create_app
from pixeltrack.dashboard.render import number, percent
from pixeltrack.dashboard.reports import rates
from tests.dashboard.conftest import PAGE_VIEW, XSS, dash_config, log_in, mail_job, roll, website
from tests.support.hits import add_job, add_recipients, at

UNKNOWN = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"  # no browser, no machine
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

METRIC = re.compile(r'data-metric="([^"]+)">([^<]*)<')


def metrics(html: str) -> dict[str, str]:
    """data-metric name -> the text shown (the first of each name)."""
    found: dict[str, str] = {}
    for name, text in METRIC.findall(html):
        found.setdefault(name, text)
    return found


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


class TestJobPage:
    """The job page shows build_report's figures for the same data."""

    async def test_figures_equal_the_report(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """Opens 4 total, 3 human, 1 machine, 3 unique (1 inferred); clicks 5/4/1/2; rates from them."""
        job = await mail_job(conn)
        await roll(conn)
        report = await build_report(conn, job)
        await log_in(client)
        shown = metrics(await (await client.get(f"/jobs/{job}")).text())
        for kind in ("opens", "clicks"):
            for key, value in report[kind].items():
                assert shown[f"{kind}.{key}"] == number(value), (kind, key)
        assert (report["opens"]["headline"], report["opens"]["unique"], report["clicks"]["headline"]) == (3, 3, 4)
        r = rates(report)
        assert (shown["open_rate"], shown["click_rate"], shown["click_to_open"]) == (
            percent(r["open_rate"]), percent(r["click_rate"]), percent(r["click_to_open"]))
        assert (shown["open_rate"], shown["click_rate"], shown["click_to_open"]) == ("75.0 %", "50.0 %", "66.7 %")
        assert shown["recipients_count"] == "4"

    async def test_chart_and_day_buckets(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """Activity over 27 hours is drawn per hour; a range of one day keeps that day's hours only."""
        job = await mail_job(conn)
        await roll(conn)
        await log_in(client)
        html = await (await client.get(f"/jobs/{job}")).text()
        path = re.search(r'<path class="line s0" data-series="Opens" d="([^"]+)"', html)
        assert path and path.group(1).count("L") == 26  # 27 hours: 10:00 on the 6th to 12:00 on the 7th
        html = await (await client.get(f"/jobs/{job}?from=2024-05-07&to=2024-05-07")).text()
        assert '<th scope="row">2024-05-07 12:00</th>' in html and '<th scope="row">2024-05-06 10:00</th>' not in html
        bad = await (await client.get(f"/jobs/{job}?from=yesterday")).text()
        assert "Dates must be given as YYYY-MM-DD" in bad

    async def test_unknown_and_site_ids(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """404 for no such job (and for an id past bigint); a site's id goes to its site page."""
        site = await website(conn)
        await log_in(client)
        assert (await client.get("/jobs/999")).status == 404
        assert (await client.get("/jobs/99999999999999999999")).status == 404
        assert (await client.get("/jobs/9999999999999999999")).status == 404
        answer = await client.get(f"/jobs/{site}", allow_redirects=False)
        assert answer.headers["Location"] == f"/sites/{site}"


class TestRecipients:
    """Recipients come a page at a time from the roll-up table: searchable, sortable, never all at once."""

    async def test_pages_search_and_sort(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """120 active recipients: page 1 holds 50 and links to page 2; page 3 holds 20; search and sort narrow."""
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, 120)
        await conn.execute("""
            INSERT INTO report_recipients (job_id, recipient_id, opens, clicks)
            SELECT $1, i, i % 7, i % 3 FROM generate_series(1, 120) i""", job)
        await log_in(client)
        first = await (await client.get(f"/jobs/{job}")).text()
        assert first.count("@example.org</th>") == 50 and 'rel="next"' in first and 'rel="prev"' not in first
        third = await (await client.get(f"/jobs/{job}?page=3")).text()
        assert third.count("@example.org</th>") == 20 and 'rel="next"' not in third
        found = await (await client.get(f"/jobs/{job}?q=r11")).text()
        assert re.findall(r"(r\d+)@example.org</th>", found) == ["r11", "r110", "r111", "r112", "r113", "r114",
                                                                  "r115", "r116", "r117", "r118", "r119"]
        assert "No recipient activity matches" in await (await client.get(f"/jobs/{job}?q=%25")).text()
        top = await (await client.get(f"/jobs/{job}?sort=opens&dir=desc")).text()
        assert re.findall(r"(r\d+)@example.org</th>", top)[:3] == ["r118", "r111", "r104"]  # 6 opens, ties by id
        assert 'aria-sort="descending"' in top

    async def test_recipients_csv_streams_all(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """The CSV holds every active recipient (12 001 rows, more than one cursor chunk)."""
        job = await add_job(conn, "personal")
        await conn.execute("""
            INSERT INTO recipients (job_id, recipient_id, recipient) SELECT $1, i, 'r' || i FROM generate_series(1, 12001) i;
            INSERT INTO report_recipients (job_id, recipient_id, opens) SELECT $1, i, 1 FROM generate_series(1, 12001) i
        """.replace("$1", str(job)))
        await log_in(client)
        answer = await client.get(f"/jobs/{job}?export=recipients")
        assert answer.headers["Content-Disposition"].endswith('-recipients.csv"')
        rows = rows_of(await answer.text())
        assert rows[0][:3] == ["recipient_id", "recipient", "opens"] and len(rows) == 12002
        assert rows[-1][:3] == ["12001", "r12001", "1"]


class TestExports:
    """Every table downloads as CSV; cells that a spreadsheet would run as formulas are neutralised."""

    async def test_links_csv_neutralised(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """A link whose URL starts with = is exported with a leading apostrophe."""
        job = await mail_job(conn, name="=HYPERLINK(1)")
        await roll(conn)
        await conn.execute("INSERT INTO links (job_id, link_id, url) VALUES ($1, 7, '=cmd|calc')", job)
        await log_in(client)
        for table in ("headline", "links", "timeline", "breakdowns"):
            answer = await client.get(f"/jobs/{job}?export={table}")
            assert (answer.status, answer.content_type) == (200, "text/csv"), table
        links = rows_of(await (await client.get(f"/jobs/{job}?export=links")).text())
        assert links[0] == ["link_id", "url", "clicks", "unique_clicks", "human", "unknown", "machine", "total"]
        assert ["7", "'=cmd|calc", "0", "0", "0", "0", "0", "0"] in links
        disposition = (await client.get(f"/jobs/{job}?export=links")).headers["Content-Disposition"]
        assert disposition == 'attachment; filename="_HYPERLINK_1_-links.csv"'
        assert (await client.get(f"/jobs/{job}?export=nothing")).status == 404


class TestSitePage:
    """The site page shows site_report's figures; the live panel counts recent raw page views."""

    async def test_figures(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """3 page views by 2 visitors in 2 sessions; top pages and sources listed."""
        site = await website(conn)
        await roll(conn)
        await log_in(client)
        html = await (await client.get(f"/sites/{site}")).text()
        shown = metrics(html)
        assert (shown["pageviews"], shown["visitors"], shown["visits"], shown["sessions.count"]) == ("3", "2", "2", "2")
        assert "cheap shoes" in html and "/pricing" in html
        assert (await client.get(f"/sites/{site}?export=top_pages")).status == 200

    async def test_three_figures(self, client: TestClient, conn: asyncpg.Connection, db_url: str,
                                 tmp_path: Path) -> None:
        """Chrome's 3 views, an unrecognised agent's and Googlebot's: human 3, unknown 1, machine 1 of 5;
        the headline counts 4 views of 3 visitors, or 3 of 2 with PIXELTRACK_HEADLINE=recognised."""
        site = await website(conn)
        for ua, visitor in ((UNKNOWN, "vc"), (GOOGLEBOT, None)):
            await conn.execute(PAGE_VIEW, uuid.uuid4(), at(80), site, ua, None, "https://shop.example/", "Home", visitor)
        await roll(conn)
        await log_in(client)
        html = await (await client.get(f"/sites/{site}")).text()
        shown = metrics(html)
        assert [shown[k] for k in ("pageviews", "human", "unknown", "machine", "total", "visitors")] == [
            "4", "3", "1", "1", "5", "3"]  # fmt: skip
        assert "Page views (people and unrecognised)" in html
        machine = html[html.index('id="machine-h"'):]
        assert "Googlebot" in machine[: machine.index("</section>")]
        server = TestServer(create_app(dash_config(db_url, tmp_path, headline="recognised")), host="127.0.0.1")
        async with TestClient(server) as recognised:
            await log_in(recognised)
            html = await (await recognised.get(f"/sites/{site}")).text()
            shown = metrics(html)
            assert [shown[k] for k in ("pageviews", "human", "unknown", "machine", "total", "visitors")] == [
                "3", "3", "1", "1", "5", "2"]  # fmt: skip
            assert "Page views (recognised people)" in html
            overview = await (await recognised.get("/")).text()
            row = metrics(overview[overview.index(f'data-site="{site}"'):])
            assert (row["pageviews"], row["visitors"]) == ("3", "2")

    async def test_live(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """Page views of the last 30 minutes per minute; older and rejected ones are not counted."""
        site = await website(conn)
        await conn.execute("SELECT pixeltrack_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 3)")
        await conn.execute("""
            INSERT INTO raw_hits (hit_id, received_at, kind, job_id, method, url, reject_reason)
            SELECT gen_random_uuid(), now() - make_interval(mins => m), 'page', $1, 'POST', 'https://shop.example/' || m, r
            FROM (VALUES (1, NULL), (1, NULL), (3, NULL), (45, NULL), (2, 'bad_key')) v(m, r)""", site)
        await log_in(client)
        live = await (await client.get(f"/sites/{site}/live.json")).json()
        assert (live["total"], sum(live["views"]), len(live["views"])) == (3, 3, 30)
        assert live["pages"][0] == {"url": "https://shop.example/1", "views": 2}


class TestOverview:
    """Every job and site with its headline figures, and the pipeline's health."""

    async def test_figures(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """The job's opens and clicks as build_report has them; the site's page views; 9 hits waiting."""
        job = await mail_job(conn, name=XSS)
        site = await website(conn)
        await log_in(client)
        html = await (await client.get("/")).text()
        assert "Roll-up lag" in html and metrics(html)["hits_per_minute"] == "0"
        assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        await roll(conn)
        report = await build_report(conn, job)
        html = await (await client.get("/")).text()
        row = html[html.index(f'data-job="{job}"'):]
        shown = metrics(row)
        assert (shown["opens.headline"], shown["opens.unique"], shown["clicks.headline"], shown["clicks.unique"]) == (
            number(report["opens"]["headline"]), number(report["opens"]["unique"]),
            number(report["clicks"]["headline"]), number(report["clicks"]["unique"]))
        assert metrics(html[html.index(f'data-site="{site}"'):])["pageviews"] == "3"
        assert metrics(html)["rollup_lag"] == "up to date"

    async def test_hits_per_minute_from_the_tombstones(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """600 + 400 hits stored in the last 5 minutes (9,000 before them) are 200 a minute, rows rolled up or not."""
        stored = ((1, 600, 2), (1_000, 400, 4), (5_000, 9_000, 9))  # (first ordinal, hits, minutes ago)
        await conn.executemany(
            "INSERT INTO copied_hits (first_id, last_id, hits, copied_at) "
            "VALUES ($1, $2, $3, now() - make_interval(mins => $4))",
            [(uuid.UUID(int=first), uuid.UUID(int=first + n - 1), n, ago) for first, n, ago in stored])
        await log_in(client)
        assert metrics(await (await client.get("/")).text())["hits_per_minute"] == "200"

    async def test_recipient_count_follows_imports(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """The cached count is counted again after an import adds recipients (overview, job page and API alike)."""
        job = await mail_job(conn)
        await log_in(client)
        assert metrics(await (await client.get("/")).text())["recipients_count"] == "4"
        await add_recipients(conn, job, 3, first=5)
        assert metrics(await (await client.get("/")).text())["recipients_count"] == "7"
        assert metrics(await (await client.get(f"/jobs/{job}")).text())["recipients_count"] == "7"
        assert (await build_report(conn, job))["recipients_count"] == 7
