"""The report API: bearer tokens, roles, JSON errors, the same reports as the CLI, and a true OpenAPI file."""

from __future__ import annotations

import json

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from aggregator.mail.report import build_report
from aggregator.render import render
from aggregator.web.report import render_site, site_report
from pixeltrack.dashboard import accounts
from tests.dashboard.conftest import mail_job, roll, website


@pytest.fixture
async def tokens(conn: asyncpg.Connection) -> dict[str, str]:
    """A viewer token and an admin token."""
    return {role: (await accounts.create_token(conn, f"{role} script", role))[1] for role in ("viewer", "admin")}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestReports:
    """GET reports answer exactly what `pixeltrack report --format json|csv` prints."""

    async def test_job_report_json_and_csv(self, client: TestClient, conn: asyncpg.Connection,
                                           tokens: dict[str, str]) -> None:
        """Same text as the CLI's render (recipients included); CSV on ?format=csv."""
        job = await mail_job(conn)
        await roll(conn)
        report = await build_report(conn, job, 5)
        answer = await client.get(f"/api/v1/jobs/{job}/report", headers=auth(tokens["viewer"]))
        assert (answer.status, answer.content_type) == (200, "application/json")
        assert await answer.text() == render(report, "json") + "\n"
        assert len(json.loads(await answer.text())["recipients"]) == 3
        answer = await client.get(f"/api/v1/jobs/{job}/report?format=csv", headers=auth(tokens["viewer"]))
        assert (answer.content_type, await answer.text()) == ("text/csv", render(report, "csv"))

    async def test_site_report(self, client: TestClient, conn: asyncpg.Connection, tokens: dict[str, str]) -> None:
        """The site report as render_site makes it, JSON and CSV; listed under /sites."""
        site = await website(conn)
        await roll(conn)
        report = await site_report(conn, site)
        answer = await client.get(f"/api/v1/sites/{site}/report", headers=auth(tokens["viewer"]))
        assert await answer.text() == render_site(report, "json")
        answer = await client.get(f"/api/v1/sites/{site}/report?format=csv", headers=auth(tokens["viewer"]))
        assert await answer.text() == render_site(report, "csv")
        sites = await (await client.get("/api/v1/sites", headers=auth(tokens["viewer"]))).json()
        assert [s["domain"] for s in sites["sites"]] == ["shop.example"]

    async def test_not_found_and_bad_format(self, client: TestClient, conn: asyncpg.Connection,
                                            tokens: dict[str, str]) -> None:
        """404 JSON for unknown jobs, sites and routes; 422 for an unknown format."""
        site = await website(conn)
        for path in ("/api/v1/jobs/99/report", "/api/v1/sites/99/report", f"/api/v1/jobs/{site}/report",
                     "/api/v1/nothing"):
            answer = await client.get(path, headers=auth(tokens["viewer"]))
            assert (answer.status, (await answer.json())["error"]["status"]) == (404, 404), path
        answer = await client.get(f"/api/v1/sites/{site}/report?format=xml", headers=auth(tokens["viewer"]))
        assert (answer.status, (await answer.json())["error"]["status"]) == (422, 422)


class TestWrites:
    """Writes need an admin token: 403 for viewers, 422 for bad input, 201 when made."""

    async def test_create_job(self, client: TestClient, conn: asyncpg.Connection, tokens: dict[str, str]) -> None:
        """A viewer is refused; bad input is 422; an admin creates the job with its send time."""
        body = {"name": "Launch", "mode": "unique", "sent_at": "2024-05-06T10:00:00+00:00"}
        assert (await client.post("/api/v1/jobs", json=body, headers=auth(tokens["viewer"]))).status == 403
        for bad in ({"name": "x", "mode": "loud"}, {"name": "", "mode": "blind"}, [1, 2],
                    {"name": "x", "mode": "blind", "sent_at": "soon"}):
            answer = await client.post("/api/v1/jobs", json=bad, headers=auth(tokens["admin"]))
            assert answer.status == 422, bad
        answer = await client.post("/api/v1/jobs", data=b"{not json", headers=auth(tokens["admin"]))
        assert answer.status == 422
        answer = await client.post("/api/v1/jobs", json=body, headers=auth(tokens["admin"]))
        assert answer.status == 201
        job = (await answer.json())["job_id"]
        row = await conn.fetchrow("SELECT name, mode, sent_at::text FROM jobs WHERE job_id = $1", job)
        assert tuple(row) == ("Launch", "unique", "2024-05-06 10:00:00+00")
        listed = await (await client.get("/api/v1/jobs", headers=auth(tokens["viewer"]))).json()
        assert [(j["job_id"], j["recipients"]) for j in listed["jobs"]] == [(job, 0)]

    async def test_recipients_csv(self, client: TestClient, conn: asyncpg.Connection, tokens: dict[str, str]) -> None:
        """All or nothing: a file with two bad lines is 422 listing both; a good one imports."""
        job = await mail_job(conn)
        bad = "recipient,consent,birth_year\nann@example.org,yes,1980\n,yes,\nbob@example.org,maybe,\n"
        answer = await client.post(f"/api/v1/jobs/{job}/recipients", data=bad.encode(), headers=auth(tokens["admin"]))
        assert answer.status == 422
        assert (await answer.json())["error"]["lines"] == [
            {"line": 3, "message": "recipient is empty"},
            {"line": 4, "message": "consent must be yes or no, got 'maybe'"}]
        assert await conn.fetchval("SELECT count(*) FROM recipients WHERE job_id = $1", job) == 4
        good = "recipient,consent\nann@example.org,yes\nr1@example.org,no\n"
        answer = await client.post(f"/api/v1/jobs/{job}/recipients", data=good.encode(), headers=auth(tokens["admin"]))
        assert await answer.json() == {"job_id": job, "added": 1, "updated": 1}
        answer = await client.post("/api/v1/jobs/99/recipients", data=good.encode(), headers=auth(tokens["admin"]))
        assert answer.status == 404
        answer = await client.post(f"/api/v1/jobs/{job}/recipients", data=good.encode(), headers=auth(tokens["viewer"]))
        assert answer.status == 403

    async def test_create_site_and_forget(self, client: TestClient, conn: asyncpg.Connection,
                                          tokens: dict[str, str]) -> None:
        """A new site answers with its key and snippet; forgetting a recipient removes their row."""
        answer = await client.post("/api/v1/sites", json={"domain": "Blog.Example", "mode": "blind"},
                                   headers=auth(tokens["admin"]))
        assert answer.status == 201
        site = await answer.json()
        assert site["domain"] == "blog.example" and site["snippet"].endswith(f'data-site="{site["key"]}"></script>')
        assert (await client.post("/api/v1/sites", json={"domain": "a b", "mode": "blind"},
                                  headers=auth(tokens["admin"]))).status == 422
        job = await mail_job(conn)
        await roll(conn)
        answer = await client.post(f"/api/v1/jobs/{job}/forget", json={"recipient": "r1@example.org"},
                                   headers=auth(tokens["admin"]))
        assert answer.status == 200
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE job_id = $1", job) == 2
        answer = await client.post(f"/api/v1/jobs/{job}/forget", json={"recipient": "nobody"},
                                   headers=auth(tokens["admin"]))
        assert answer.status == 404

    async def test_tokens(self, client: TestClient, conn: asyncpg.Connection, tokens: dict[str, str]) -> None:
        """Admins list and revoke tokens; a revoked token is 401 at once; unknown ids 404."""
        listed = await (await client.get("/api/v1/tokens", headers=auth(tokens["admin"]))).json()
        assert [(t["name"], t["role"], t["revoked_at"]) for t in listed["tokens"]] == [
            ("viewer script", "viewer", None), ("admin script", "admin", None)]
        assert "token_hash" not in listed["tokens"][0]
        assert (await client.get("/api/v1/tokens", headers=auth(tokens["viewer"]))).status == 403
        viewer_id = listed["tokens"][0]["token_id"]
        assert (await client.delete(f"/api/v1/tokens/{viewer_id}", headers=auth(tokens["admin"]))).status == 204
        assert (await client.delete(f"/api/v1/tokens/{viewer_id}", headers=auth(tokens["admin"]))).status == 404
        assert (await client.get("/api/v1/jobs", headers=auth(tokens["viewer"]))).status == 401
        stored = await conn.fetchval("SELECT token_hash FROM dashboard_api_tokens WHERE token_id = $1", viewer_id)
        assert stored == accounts.digest(tokens["viewer"]) and len(stored) == 32


class TestOpenApi:
    """/api/v1/openapi.json describes exactly the API routes of the app's router."""

    async def test_spec_matches_router(self, client: TestClient, tokens: dict[str, str]) -> None:
        """Every (method, path) under /api/v1 is in the spec and every operation of the spec is routed."""
        spec = await (await client.get("/api/v1/openapi.json", headers=auth(tokens["viewer"]))).json()
        assert spec["openapi"].startswith("3.")
        described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
        routed = set()
        for route in client.app.router.routes():
            path = route.resource.canonical
            if path.startswith("/api/v1") and route.method != "HEAD":
                routed.add((route.method, path))
        assert described == routed
        for path, ops in spec["paths"].items():
            for op in ops.values():
                params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
