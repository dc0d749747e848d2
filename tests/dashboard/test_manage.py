"""Manage: jobs and sites, recipient uploads (all or nothing), mail-merge files, erasure, API tokens."""

from __future__ import annotations

import csv
import io

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from pixeltrack.core.tokens import KIND_CLICK, KIND_OPEN, Signer
from pixeltrack.dashboard import accounts
from tests.conftest import TEST_SECRET
from tests.dashboard.conftest import log_in, mail_job, roll


def upload(csrf: str, text: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("csrf_token", csrf)
    form.add_field("file", text.encode(), filename="people.csv", content_type="text/csv")
    return form


class TestJobsAndSites:
    """Creating a job (with its send time) and a site (with its snippet)."""

    async def test_create(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """The job is stored with its UTC send time; the site's snippet carries a key for its id."""
        csrf = await log_in(client)
        answer = await client.post("/manage/jobs", data={"name": "Newsletter", "mode": "anonymous",
                                                         "sent_at": "2024-05-06T10:00", "csrf_token": csrf})
        assert "Created mail job 1." in await answer.text()
        row = await conn.fetchrow("SELECT name, mode, kind, sent_at::text FROM jobs")
        assert tuple(row) == ("Newsletter", "anonymous", "mail", "2024-05-06 10:00:00+00")
        answer = await client.post("/manage/sites", data={"domain": "blog.example", "mode": "unique",
                                                          "cookieless": "on", "csrf_token": csrf})
        html = await answer.text()
        assert "Created site 2 (blog.example)." in html
        assert 'src="https://t.example/t.js" data-site="' in html.replace("&#34;", '"')
        assert await conn.fetchval("SELECT cookieless FROM sites WHERE job_id = 2") is True

    async def test_bad_input(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """422 with the reason, nothing stored."""
        csrf = await log_in(client)
        answer = await client.post("/manage/jobs", data={"name": "x", "mode": "shout", "csrf_token": csrf})
        assert answer.status == 422 and "mode must be one of" in await answer.text()
        answer = await client.post("/manage/sites", data={"domain": "a/b", "mode": "blind", "csrf_token": csrf})
        assert answer.status == 422
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


class TestRecipients:
    """Uploads reuse the core import: every bad line listed, nothing imported unless all are good."""

    async def test_bad_file_lists_every_line(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """Two bad lines of three: 422, both listed, no recipient stored."""
        job = await mail_job(conn)
        csrf = await log_in(client)
        text = "recipient,consent\nann@example.org,yes\nbob@example.org,perhaps\nann@example.org,no\n"
        answer = await client.post(f"/manage/jobs/{job}/recipients", data=upload(csrf, text))
        html = await answer.text()
        assert answer.status == 422 and "2 bad row(s); nothing was imported" in html
        assert "line 3: consent must be yes or no, got &#39;perhaps&#39;" in html
        assert "line 4: recipient repeats line 2" in html
        assert await conn.fetchval("SELECT count(*) FROM recipients WHERE job_id = $1", job) == 4

    async def test_good_file(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """One new, one updated."""
        job = await mail_job(conn)
        csrf = await log_in(client)
        answer = await client.post(f"/manage/jobs/{job}/recipients",
                                   data=upload(csrf, "recipient,consent\nann@example.org,yes\nr2@example.org,yes\n"))
        assert f"Imported into job {job}: 1 new, 1 updated." in await answer.text()


class TestMergeFile:
    """The mail-merge CSV of `pixeltrack mint --all`: one row per recipient, URLs that verify."""

    async def test_rows(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """4 recipients, one tracked destination: open and click URLs signed for each recipient."""
        job = await mail_job(conn)
        csrf = await log_in(client)
        answer = await client.post(f"/manage/jobs/{job}/merge",
                                   data={"urls": "https://shop.example/sale\n", "csrf_token": csrf})
        assert answer.headers["Content-Disposition"] == f'attachment; filename="job-{job}-merge.csv"'
        rows = list(csv.reader(io.StringIO(await answer.text())))
        assert rows[0] == ["recipient", "open_url", "click_url_1"] and len(rows) == 5
        signer = Signer(TEST_SECRET)
        opened = signer.verify(rows[2][1].split("/o/")[1].removesuffix(".gif"))
        clicked = signer.verify(rows[2][2].split("/c/")[1])
        assert (rows[2][0], opened.kind, opened.job_id, opened.recipient_id) == ("r2@example.org", KIND_OPEN, job, 2)
        assert (clicked.kind, clicked.url) == (KIND_CLICK, "https://shop.example/sale")
        assert await conn.fetchval("SELECT url FROM links WHERE job_id = $1", job) == "https://shop.example/sale"

    async def test_bad_destination(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """A destination that is not http(s) is refused with 422."""
        job = await mail_job(conn)
        csrf = await log_in(client)
        answer = await client.post(f"/manage/jobs/{job}/merge", data={"urls": "javascript:alert(1)",
                                                                      "csrf_token": csrf})
        assert answer.status == 422 and "absolute http(s) URL" in await answer.text()


class TestForgetAndTokens:
    """Erasure through aggregator.privacy.forget; tokens shown once, stored hashed, revocable."""

    async def test_forget(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """r1's roll-up row goes; an unknown recipient is 422."""
        job = await mail_job(conn)
        await roll(conn)
        csrf = await log_in(client)
        answer = await client.post("/manage/forget", data={"recipient": "r1@example.org", "job": str(job),
                                                           "csrf_token": csrf})
        assert f"Forgot: job {job}, recipient #1:" in await answer.text()
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE recipient_id = 1") == 0
        answer = await client.post("/manage/forget", data={"recipient": "nobody", "csrf_token": csrf})
        assert answer.status == 422

    async def test_tokens(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """The new token works on the API until it is revoked."""
        csrf = await log_in(client)
        html = await (await client.post("/manage/tokens", data={"name": "cron", "role": "viewer",
                                                                "csrf_token": csrf})).text()
        token = html.split('data-field="token">')[1].split("<")[0]
        assert token.startswith("pt_")
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/v1/jobs", headers=headers)).status == 200
        [row] = await accounts.list_tokens(conn)
        html = await (await client.post(f"/manage/tokens/{row['token_id']}/revoke", data={"csrf_token": csrf})).text()
        assert f"Revoked API token {row['token_id']}." in html
        assert (await client.get("/api/v1/jobs", headers=headers)).status == 401
        assert token not in html
