"""Every CSV the product writes opens in a spreadsheet as data: formulas in text cells are neutralised."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from pathlib import Path

import asyncpg
import pytest

from aggregator.render import as_csv
from aggregator.web.report import render_site, site_report
from aggregator.web.rollup import rollup_sites
from pixeltrack.cli.main import main
from pixeltrack.core.mint import Minter
from pixeltrack.core.websites import create_site
from tests.conftest import TEST_SECRET
from tests.support.cli import cli_env
from tests.support.hits import with_runs

HYPERLINK = '=HYPERLINK("https://evil.example","x")'
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
AT = dt.datetime(2024, 5, 6, 10, tzinfo=dt.UTC)


class TestSiteReportCsv:
    """`pixeltrack report --site S --format csv`."""

    async def test_utm_formula_quoted(self, conn: asyncpg.Connection) -> None:
        """A landing URL's utm_source =HYPERLINK(...) reaches the CSV as '=HYPERLINK(...); numbers stay bare."""
        job = int((await create_site(conn, "shop.example", "unique"))["job_id"])
        landing = "https://shop.example/home?utm_source=%3DHYPERLINK(%22https%3A%2F%2Fevil.example%22%2C%22x%22)"
        await conn.execute(
            with_runs("INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, accept_language,"
                      " method, url) VALUES ($1, $2, 'page', $3, '203.0.113.5', $4, 'de', 'POST', $5)"),
            uuid.uuid4(), AT, job, CHROME, landing + "&utm_medium=email")
        await rollup_sites(conn, today=AT.date())
        assert (await site_report(conn, job))["sources"][0]["utm_source"] == HYPERLINK
        assert render_site(await site_report(conn, job), "csv") == "\r\n".join([
            "section,key,value,extra", f"summary,site,{job},", "summary,domain,shop.example,", "summary,mode,unique,",
            "summary,headline,all,", "summary,headline_counts,human + unknown,",
            "summary,pageviews,1,", "summary,human,1,", "summary,unknown,0,", "summary,machine,0,", "summary,total,1,",
            "summary,visitors,1,", "summary,visits,1,",
            "summary,sessions,1,", "summary,pages_per_session,1.0,", "summary,avg_duration_seconds,0.0,",
            "top pages,/home,1,1|1|0", "entry pages,/home,1,",
            'sources,email,1,"\'=HYPERLINK(""https://evil.example"",""x"")||=HYPERLINK(""https://evil.example"",""x"")'
            '|email|"',
            "devices,desktop,1,Windows|Chrome||1|0", "daily,2024-05-06,1,1|1|0|0|1",
            "hourly,2024-05-06 10:00:00+00:00,1,1|1|0|0", "machine,hits,0,", "",
        ])  # fmt: skip


class TestMailReportCsv:
    """`pixeltrack report --job J --format csv`."""

    def test_text_quoted_numbers_kept(self) -> None:
        """Job name, link, recipient and breakdown value are quoted; -1 stays a number."""
        report = {
            "job": 4, "name": "=2+3", "mode": "personal", "sent_at": None, "recipients_count": 1,
            "opens": {"total": 1, "unique": 1}, "clicks": {"total": 0, "unique": 0},
            "links": [{"url": "-1.example", "clicks": 0, "unique_clicks": 0, "machine": 0, "total": 0}],
            "recipients": [{"recipient": "@evil", "recipient_id": 1, "opens": 1, "clicks": 0, "first_open": None,
                            "last_open": None, "open_inferred": False}],
            "timeline": [], "breakdowns": {"country": {"+1": {"opens": -1}}},
        }  # fmt: skip
        assert as_csv(report) == "\n".join([
            "section,item,metric,value", "job,,job,4", "job,,name,'=2+3", "job,,mode,personal", "job,,sent_at,",
            "job,,recipients_count,1", "totals,opens,total,1", "totals,opens,unique,1", "totals,clicks,total,0",
            "totals,clicks,unique,0", "links,'-1.example,clicks,0", "links,'-1.example,unique_clicks,0",
            "links,'-1.example,machine,0", "links,'-1.example,total,0", "recipients,'@evil,opens,1",
            "recipients,'@evil,clicks,0", "recipients,'@evil,first_open,", "recipients,'@evil,last_open,",
            "recipients,'@evil,open_inferred,False", "breakdown:country,'+1,opens,-1", "",
        ])  # fmt: skip


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return cli_env(db_url, monkeypatch)


class TestMintAllCsv:
    """`pixeltrack mint --all`."""

    def test_recipients_quoted(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Imported recipients starting with = and + are quoted in the mail-merge CSV; URLs are unchanged."""
        recipients = ["=cmd|' /C calc'!A0", "+49 30 1234", "ok@x.org"]
        buf = io.StringIO()
        csv.writer(buf).writerows([["recipient", "consent"], *[[r, "yes"] for r in recipients]])
        (tmp_path / "r.csv").write_text(buf.getvalue())
        assert main(["job", "create", "--name", "j", "--mode", "unique"]) == 0
        assert main(["recipients", "import", "--job", "1", str(tmp_path / "r.csv")]) == 0
        capsys.readouterr()
        assert main(["mint", "--job", "1", "--all", "--url", "https://a.example/"]) == 0
        m = Minter(TEST_SECRET, "https://t.example")
        rows = [f"{shown},{m.open_url(1, i)},{m.click_url(1, i, 'https://a.example/')}"
                for i, shown in enumerate(["'=cmd|' /C calc'!A0", "'+49 30 1234", "ok@x.org"])]
        assert capsys.readouterr().out == "\r\n".join(["recipient,open_url,click_url_1", *rows, ""])
