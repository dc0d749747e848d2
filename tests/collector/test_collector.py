"""The collector over a real socket, writing to a real PostgreSQL."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import asyncpg
import pytest

from collector.answers import GIF
from collector.config import CollectorConfig
from pixeltrack.core.config import Secrets, parse_networks
from pixeltrack.core.mint import Minter
from tests.support.collector import flush, make_config, minter, path, rows, running

NO_STORE = "no-store, no-cache, must-revalidate, private, max-age=0"


class TestPixel:
    async def test_bytes_and_every_header(self, config: CollectorConfig) -> None:
        """The open pixel is the cached 1x1 GIF with no-store headers and no cookie."""
        async with running(config) as client:
            resp = await client.get(path(minter().open_url(7, 3)))
            body = await resp.read()
        assert resp.status == 200
        assert body == GIF and len(GIF) == 42 and GIF.startswith(b"GIF89a\x01\x00\x01\x00")
        assert resp.headers["Content-Type"] == "image/gif"
        assert resp.headers["Cache-Control"] == NO_STORE
        assert resp.headers["Pragma"] == "no-cache"
        assert resp.headers["Expires"] == "0"
        assert "Set-Cookie" not in resp.headers

    async def test_row_lands_with_fields(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """After a flush the open is one row with job, recipient, address and headers."""
        async with running(config) as client:
            await client.get(path(minter().open_url(7, 3)), headers={
                "User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15", "Referer": "https://mail.example/",
                "Accept-Language": "de-CH,de;q=0.9"})
            await flush(client)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["recipient_id"], row["link"], row["page"]) == ("open", 7, 3, None, None)
        assert row["client_ip"] == ipaddress.ip_address("127.0.0.1")
        assert row["user_agent"] == "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15"
        assert (row["referer"], row["accept_language"]) == ("https://mail.example/", "de-CH,de;q=0.9")
        assert (row["method"], row["prefetch"], row["reject_reason"], row["rolled_at"]) == ("GET", False, None, None)

    async def test_blind_token_has_no_recipient(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A blind job's pixel carries no recipient, and none is stored."""
        async with running(config) as client:
            await client.get(path(minter().open_url(9)))
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["recipient_id"]) == (9, None)


class TestForgery:
    @pytest.mark.parametrize("token", ["garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "%ff%00", "x" * 5000])
    async def test_forged_pixel_still_gif_never_attributed(
        self, config: CollectorConfig, conn: asyncpg.Connection, token: str
    ) -> None:
        """A forged pixel gets the GIF, and its row belongs to no job or recipient."""
        async with running(config) as client:
            resp = await client.get(f"/o/{token}.gif")
            assert (resp.status, await resp.read()) == (200, GIF)
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["recipient_id"]) == (0, None)
        assert row["reject_reason"] in {"malformed", "bad_signature", "too_long"}

    async def test_tampered_click_is_404_without_redirect(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """Changing one character of a click token gives a plain 404 and a rejected hit."""
        token = path(minter().click_url(1, 2, "https://shop.example/sale")).removeprefix("/c/")
        forged = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
        async with running(config) as client:
            resp = await client.get(f"/c/{forged}", allow_redirects=False)
            assert resp.status == 404
            assert "Location" not in resp.headers
            assert resp.headers["Content-Type"].startswith("text/plain")
            await flush(client)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["link"], row["reject_reason"]) == ("click", 0, None, "bad_signature")

    async def test_open_token_is_not_a_click(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A valid open token used as a click is refused (no redirect to anywhere)."""
        token = path(minter().open_url(1, 2)).removeprefix("/o/").removesuffix(".gif")
        async with running(config) as client:
            resp = await client.get(f"/c/{token}", allow_redirects=False)
            assert resp.status == 404
            await flush(client)
        [row] = await rows(conn)
        assert (row["job_id"], row["reject_reason"]) == (0, "wrong_kind")


class TestClick:
    async def test_redirects_exactly_where_signed(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A click answers 302 to the signed destination, query string and all."""
        dest = "https://shop.example/sale?x=1&y=%C3%BC#top"
        async with running(config) as client:
            resp = await client.get(path(minter().click_url(4, 5, dest)) + "?next=https://evil.example",
                                    allow_redirects=False)
            assert resp.status == 302
            assert resp.headers["Location"] == dest
            assert resp.headers["Cache-Control"] == NO_STORE
            await flush(client)
        [row] = await rows(conn)
        assert (row["kind"], row["job_id"], row["recipient_id"], row["link"]) == ("click", 4, 5, dest)

    async def test_destination_must_be_http(self) -> None:
        """Minting refuses destinations that are not absolute http(s) URLs."""
        for bad in ("javascript:alert(1)", "//evil.example", "https://a.example/\r\nSet-Cookie: x"):
            with pytest.raises(ValueError):
                minter().click_url(1, 1, bad)


class TestRotation:
    async def test_old_and_new_keys_both_work(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """After rotating, a pixel signed with the previous key is still attributed."""
        config = make_config(db_url, tmp_path / "s", secrets=Secrets("new-key", ("old-key",)))
        old = Minter("old-key", "http://127.0.0.1").open_url(1, 1)
        new = Minter("new-key", "http://127.0.0.1").open_url(1, 2)
        stranger = Minter("stranger", "http://127.0.0.1").open_url(1, 3)
        async with running(config) as client:
            for url in (old, new, stranger):
                await client.get(path(url))
            await flush(client)
        got = [(r["job_id"], r["recipient_id"], r["reject_reason"]) for r in await rows(conn)]
        assert got == [(1, 1, None), (1, 2, None), (0, None, "bad_signature")]


class TestClientAddress:
    async def _ip_with(self, db_url: str, tmp: Path, conn: asyncpg.Connection, trusted: str, xff: str) -> str:
        config = make_config(db_url, tmp, trusted_proxies=parse_networks(trusted))
        async with running(config) as client:
            await client.get(path(minter().open_url(1, 1)), headers={"X-Forwarded-For": xff})
            await flush(client)
        [row] = await rows(conn)
        return str(row["client_ip"])

    async def test_untrusted_peer_header_ignored(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """X-Forwarded-For from a peer that is not a trusted proxy is not believed."""
        assert await self._ip_with(db_url, tmp_path, conn, "10.0.0.0/8", "203.0.113.9") == "127.0.0.1"

    async def test_trusted_proxy_rightmost_untrusted(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """Behind trusted proxies, the right-most untrusted hop is the client; spoofed left hops are ignored."""
        ip = await self._ip_with(db_url, tmp_path, conn, "127.0.0.1/32,10.0.0.0/8", "1.1.1.1, 198.51.100.7, 10.1.2.3")
        assert ip == "198.51.100.7"

    async def test_garbage_hop_stops_the_chain(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """An unparseable hop ends the walk at the last address that could be believed."""
        assert await self._ip_with(db_url, tmp_path, conn, "127.0.0.1", "198.51.100.7, not-an-ip") == "127.0.0.1"


class TestPrefetchAndDocs:
    @pytest.mark.parametrize(("method", "headers"), [
        ("HEAD", {}), ("GET", {"Sec-Purpose": "prefetch"}), ("GET", {"Purpose": "prefetch"}),
        ("GET", {"X-Moz": "prefetch"}), ("GET", {"Sec-Purpose": "prefetch;prerender"}),
    ])
    async def test_flagged(self, config: CollectorConfig, conn: asyncpg.Connection, method: str,
                           headers: dict[str, str]) -> None:
        """HEAD and browser prefetches get the normal answer but are flagged."""
        async with running(config) as client:
            resp = await client.request(method, path(minter().open_url(2, 2)), headers=headers)
            assert (resp.status, resp.headers["Content-Type"]) == (200, "image/gif")
            await flush(client)
        [row] = await rows(conn)
        assert (row["method"], row["prefetch"], row["job_id"]) == (method, True, 2)

    async def test_document_pages(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """Each page view is recorded with its number; a bad page number is rejected, still a GIF."""
        m = minter()
        async with running(config) as client:
            for page in (1, 2, 2, 17):
                resp = await client.get(path(m.doc_url(5, 8, page)))
                assert await resp.read() == GIF
            resp = await client.get(path(m.doc_url(5, 8, 1)).replace("/1.gif", "/zero.gif"))
            assert await resp.read() == GIF
            await flush(client)
        got = [(r["kind"], r["job_id"], r["recipient_id"], r["page"], r["reject_reason"]) for r in await rows(conn)]
        assert got == [("doc", 5, 8, p, None) for p in (1, 2, 2, 17)] + [("doc", 0, None, None, "bad_page")]


class TestInetCodec:
    def test_binary_form(self) -> None:
        """Addresses are encoded in PostgreSQL's binary inet layout, v4 and v6."""
        from collector.cleaning import inet_binary, inet_text

        assert inet_binary("203.0.113.7") == bytes([2, 32, 0, 4, 203, 0, 113, 7])
        v6 = inet_binary("2001:db8::1")
        assert v6[:4] == bytes([3, 128, 0, 16]) and len(v6) == 20
        assert inet_text(v6) == "2001:db8::1"

    async def test_ipv6_peer_lands(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """An IPv6 client address behind a trusted proxy is stored exactly."""
        config = make_config(db_url, tmp_path, trusted_proxies=parse_networks("127.0.0.1"))
        async with running(config) as client:
            await client.get(path(minter().open_url(1, 1)), headers={"X-Forwarded-For": "2001:db8:85a3::8a2e:370:7334"})
            await flush(client)
        [row] = await rows(conn)
        assert row["client_ip"] == ipaddress.ip_address("2001:db8:85a3::8a2e:370:7334")
