"""Website tracking at the collector: snippet, page views, site keys, privacy flags, identified clicks."""

from __future__ import annotations

import gzip
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from collector import snippet
from collector.answers import GIF
from collector.config import CollectorConfig
from pixeltrack.core.config import Secrets
from pixeltrack.core.mint import with_contact
from pixeltrack.core.tokens import KIND_CONTACT, KIND_OPEN, Signer, Token
from pixeltrack.core.websites import site_key
from tests.conftest import TEST_SECRET
from tests.support.collector import flush, make_config, minter, path, rows, running, scrape

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
VISITOR = "0123456789abcdef01234567"


def key(job: int, mode: str = "personal", dnt: str = "off", cookieless: bool = False) -> str:
    """A site key as `pixeltrack site create` makes it."""
    return site_key(Signer(TEST_SECRET), {"job_id": job, "mode": mode, "dnt_policy": dnt,
                                           "cookieless": cookieless, "spa_hash": False})


def view(k: str, **fields: Any) -> dict[str, Any]:
    """A beacon payload as the snippet sends it."""
    return {"k": k, "u": "https://shop.example/a?utm_source=news", "t": "Page A", "r": "https://www.google.com/",
            "s": "1280x720", "l": "de-CH", "v": VISITOR, "c": "", "p": 0, **fields}


class TestSnippet:
    async def test_served_cacheable(self, config: CollectorConfig) -> None:
        """/t.js is the minified snippet, cacheable for a day, gzipped under 1300 bytes, with an ETag."""
        async with running(config) as client:
            resp = await client.get("/t.js", headers={"Accept-Encoding": "identity"})
            body = await resp.read()
            zipped = await client.get("/t.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
            raw = await zipped.read()
        assert (resp.status, body) == (200, snippet.SNIPPET)
        assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
        assert resp.headers["Cache-Control"] == "public, max-age=86400"
        assert resp.headers["ETag"] == snippet.ETAG and "Set-Cookie" not in resp.headers
        assert zipped.headers["Content-Encoding"] == "gzip" and gzip.decompress(raw) == snippet.SNIPPET
        assert len(raw) < 1300 and b"//" not in snippet.SNIPPET.replace(b"://", b"")

    async def test_small_and_self_contained(self, config: CollectorConfig) -> None:
        """The served /t.js is under 2 KB uncompressed and loads nothing: no import, no other URL."""
        async with running(config) as client:
            body = await (await client.get("/t.js", headers={"Accept-Encoding": "identity"})).read()
        assert len(body) < 2048
        assert re.findall(rb"import|require|://|createElement|<script|fetch|XMLHttpRequest|eval|Function\(", body) == []
        # the only paths it builds are the collector's own page-view endpoints (on the base it was loaded from)
        assert re.findall(rb'"(/[^"]+)"', body) == [b"/r", b"/r.gif?"]

    def test_minified_from_readable_source(self) -> None:
        """The source keeps its names and comments; the served bytes have neither, and are the same in every process."""
        source = (snippet.STATIC / "t.js").read_text(encoding="utf-8")
        assert "function setCookie(name, value, days)" in source and "// " in source
        assert b"setCookie" not in snippet.SNIPPET and b"/*" not in snippet.SNIPPET and b"\n" not in snippet.SNIPPET
        code = "import sys; from collector import snippet; sys.stdout.write(snippet.ETAG)"
        etags = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=snippet.STATIC.parents[1], env={**os.environ, "PYTHONHASHSEED": seed}).stdout
                 for seed in ("1", "2")}
        assert etags == {snippet.ETAG}

    @pytest.mark.parametrize("header", [snippet.ETAG, f"W/{snippet.ETAG}", f'"x", {snippet.ETAG}', "*"])
    async def test_not_modified(self, config: CollectorConfig, header: str) -> None:
        """A matching If-None-Match gets 304 with no body."""
        async with running(config) as client:
            resp = await client.get("/t.js", headers={"If-None-Match": header})
            assert (resp.status, await resp.read(), resp.headers["ETag"]) == (304, b"", snippet.ETAG)
            other = await client.get("/t.js", headers={"If-None-Match": '"old"'})
            assert other.status == 200


class TestPageViews:
    async def test_image_request(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """GET /r.gif answers the GIF and records a page view with every field."""
        async with running(config) as client:
            resp = await client.get("/r.gif", params=view(key(5)), headers={
                "User-Agent": UA, "Referer": "https://shop.example/a", "Accept-Language": "fr"})
            assert (resp.status, await resp.read()) == (200, GIF)
            await flush(client)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["recipient_id"], row["reject_reason"]) == ("page", 5, None, None)
        assert (row["url"], row["title"], row["screen"]) == ("https://shop.example/a?utm_source=news", "Page A", "1280x720")
        assert (row["visitor_id"], row["contact"], row["method"]) == (VISITOR, None, "GET")
        assert (row["referer"], row["accept_language"], row["user_agent"]) == ("https://www.google.com/", "de-CH", UA)
        assert row["client_ip"] == ipaddress.ip_address("127.0.0.1")

    async def test_beacon(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """POST /r with a JSON body answers 204; no referrer in the payload means none stored."""
        async with running(config) as client:
            resp = await client.post("/r", data=orjson.dumps(view(key(5), r="")), headers={
                "Content-Type": "text/plain;charset=UTF-8", "Referer": "https://shop.example/a"})
            assert (resp.status, await resp.read()) == (204, b"")
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["method"], row["referer"], row["visitor_id"]) == (5, "POST", None, VISITOR)

    @pytest.mark.parametrize(("body", "reason"), [
        (b"\xff\x00\x80garbage", "bad_body"), (b"[1, 2]", "bad_body"), (b"{", "bad_body"), (b"", "bad_body"),
        (b'"text"', "bad_body"), (b"{" * 5000, "bad_body"), (b"x" * 9000, "body_too_long"),
    ])
    async def test_garbage_beacons(self, config: CollectorConfig, conn: asyncpg.Connection, body: bytes, reason: str) -> None:
        """Any body that is not a JSON object still gets 204 and one unattributed row."""
        async with running(config) as client:
            resp = await client.post("/r", data=body)
            assert resp.status == 204
            await flush(client)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["reject_reason"], row["url"], row["visitor_id"]) == ("page", 0, reason, None, None)

    async def test_wrong_types_and_bad_visitor(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """Fields of the wrong type are dropped, a visitor id that is not a plain id too; the view counts."""
        async with running(config) as client:
            await client.post("/r", data=orjson.dumps(view(key(5), u=5, t=["x"], s={"w": 1}, v="bad id; x=1")))
            await client.post("/r", data=orjson.dumps(view(key(5), t="\x00nul\u00e9", v="x" * 65)))
            await flush(client)
        first, second = await rows(conn)
        assert (first["job_id"], first["url"], first["title"], first["screen"], first["visitor_id"]) == (5, None, None, None, None)
        assert (second["title"], second["visitor_id"]) == ("nul\u00e9", None)


class TestSiteKeys:
    @pytest.mark.parametrize(("k", "reason"), [
        (None, "missing_key"), ("garbage", "malformed"), ("A" * 30, "bad_signature"), ("x" * 5000, "too_long"),
        (Signer(TEST_SECRET).mint(KIND_OPEN, 5, 1), "wrong_kind"), (Signer("other-secret").mint(5, 5, 0), "bad_signature"),
    ])
    async def test_unknown_key_never_attributed(self, config: CollectorConfig, conn: asyncpg.Connection,
                                                k: str | None, reason: str) -> None:
        """A missing, forged or foreign key gets the GIF and a row of job 0 without visitor or contact."""
        contact = Signer(TEST_SECRET).mint(KIND_CONTACT, 7, 3)
        params = {n: v for n, v in view(k or "", c=contact).items() if n != "k" or k}
        async with running(config) as client:
            resp = await client.get("/r.gif", params=params)
            assert (resp.status, await resp.read()) == (200, GIF)
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["reject_reason"], row["visitor_id"], row["contact"]) == (0, reason, None, None)

    async def test_rotated_secret_still_accepted(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """A key signed with the previous secret is still the site's after rotation."""
        config = make_config(db_url, tmp_path / "spool", secrets=Secrets("new-secret", (TEST_SECRET,)))
        async with running(config) as client:
            await client.get("/r.gif", params=view(key(8)))
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["reject_reason"]) == (8, None)


class TestPrivacyFlags:
    @pytest.mark.parametrize("headers", [{"DNT": "1"}, {"Sec-GPC": "1"}, {}])
    async def test_opt_out_turns_tracking_off(self, config: CollectorConfig, conn: asyncpg.Connection,
                                              headers: dict[str, str]) -> None:
        """By default Do Not Track or GPC (header or snippet flag) records nothing; the answer is the same."""
        payload = view(key(5), p=0 if headers else 1)
        async with running(config) as client:
            resp = await client.get("/r.gif", params=payload, headers=headers)
            assert (resp.status, await resp.read()) == (200, GIF)
            beacon = await client.post("/r", data=orjson.dumps(payload), headers=headers)
            assert beacon.status == 204
            await flush(client)
        assert await rows(conn) == []

    async def test_opt_out_tracked_blind(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """With --dnt blind a GPC visitor counts, without address, agent, visitor or contact."""
        contact = Signer(TEST_SECRET).mint(KIND_CONTACT, 7, 3)
        async with running(config) as client:
            await client.get("/r.gif", params=view(key(5, dnt="blind"), c=contact), headers={"Sec-GPC": "1", "User-Agent": UA})
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["url"], row["client_ip"], row["user_agent"]) == (5, "https://shop.example/a?utm_source=news", None, None)
        assert (row["visitor_id"], row["contact"]) == (None, None)

    async def test_opt_out_ignored(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """With --dnt ignore a DNT visitor is tracked as anyone else."""
        async with running(config) as client:
            await client.get("/r.gif", params=view(key(5, dnt="ignore")), headers={"DNT": "1", "User-Agent": UA})
            await flush(client)
        [row] = await rows(conn)
        assert (row["visitor_id"], row["user_agent"]) == (VISITOR, UA)

    @pytest.mark.parametrize(("mode", "cookieless", "visitor", "contact"), [
        ("personal", False, VISITOR, "7:3"), ("personal", True, None, "7:3"),
        ("unique", False, VISITOR, None), ("blind", False, None, None),
    ])
    async def test_mode_decides_identity(self, config: CollectorConfig, conn: asyncpg.Connection, mode: str,
                                         cookieless: bool, visitor: str | None, contact: str | None) -> None:
        """Only personal sites keep a contact; blind and cookie-less sites keep no visitor id."""
        token = Signer(TEST_SECRET).mint(KIND_CONTACT, 7, 3)
        async with running(config) as client:
            await client.post("/r", data=orjson.dumps(view(key(5, mode, cookieless=cookieless), c=token)))
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["visitor_id"], row["contact"]) == (5, visitor, contact)


class TestContact:
    async def test_identifying_click_adds_contact(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A click minted with identify redirects with pt_c (query and fragment kept) naming the recipient."""
        url = minter().click_url(7, 3, "https://shop.example/p?a=1#top", identify=True)
        async with running(config) as client:
            resp = await client.get(path(url), allow_redirects=False)
            await flush(client)
        location = resp.headers["Location"]
        assert resp.status == 302 and location.startswith("https://shop.example/p?a=1&pt_c=") and location.endswith("#top")
        token = location.split("pt_c=", 1)[1].removesuffix("#top")
        assert Signer(TEST_SECRET).verify(token) == Token(KIND_CONTACT, 7, 3, None)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["recipient_id"], row["link"]) == ("click", 7, 3, "https://shop.example/p?a=1#top")

    @pytest.mark.parametrize("rcpt", [3, None])
    async def test_plain_click_adds_nothing(self, config: CollectorConfig, rcpt: int | None) -> None:
        """Clicks of unique, anonymous and blind jobs (no identify flag) redirect to the exact destination."""
        url = minter().click_url(7, rcpt, "https://shop.example/p?a=1", identify=rcpt is None)
        async with running(config) as client:
            resp = await client.get(path(url), allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (302, "https://shop.example/p?a=1")

    @pytest.mark.parametrize(("url", "expected"), [
        ("https://a.example/", "https://a.example/?pt_c=T"), ("https://a.example/x?", "https://a.example/x?pt_c=T"),
        ("https://a.example/x?b=2&", "https://a.example/x?b=2&pt_c=T"), ("https://a.example/#/r?x", "https://a.example/?pt_c=T#/r?x"),
    ])
    def test_contact_url_shapes(self, url: str, expected: str) -> None:
        """The parameter goes into the query, before any fragment."""
        token = Signer(TEST_SECRET).mint(KIND_CONTACT, 1, 2)
        assert with_contact(Signer(TEST_SECRET), url, 1, 2) == expected.replace("T", token, 1)

    async def test_forged_contact_dropped_and_counted(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A forged pt_c leaves the page view without a contact and is counted by reason."""
        forged = Signer("other-secret").mint(KIND_CONTACT, 7, 3)
        async with running(config) as client:
            await client.post("/r", data=orjson.dumps(view(key(5), c=forged)))
            await client.post("/r", data=orjson.dumps(view(key(5), c=Signer(TEST_SECRET).mint(KIND_OPEN, 7, 3))))
            await flush(client)
            text = await scrape(client)
        assert [(r["job_id"], r["contact"]) for r in await rows(conn)] == [(5, None), (5, None)]
        assert 'pixeltrack_input_repaired_total{reason="contact_bad_signature"} 1.0' in text
        assert 'pixeltrack_input_repaired_total{reason="contact_wrong_kind"} 1.0' in text
