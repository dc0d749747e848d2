"""The prebuilt answers on the wire: exact bytes over a raw socket, every HTTP/1.x form."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import socket
import time

import asyncpg
import pytest

from collector.answers import GIF, NOT_FOUND_BODY
from collector.config import CollectorConfig
from pixeltrack.core.mint import has_control_chars
from pixeltrack.core.tokens import KIND_CLICK, Signer
from tests.conftest import TEST_SECRET
from tests.support.collector import flush, minter, path, rows, running

NO_STORE = (b"Cache-Control: no-store, no-cache, must-revalidate, private, max-age=0\r\n"
            b"Pragma: no-cache\r\nExpires: 0\r\n")
DATE = re.compile(rb"Date: ([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)\r\n")


def without_date(answer: bytes) -> bytes:
    """The answer with its Date line checked (within 5 s of now) and removed."""
    found = DATE.search(answer)
    assert found is not None, answer
    sent = email.utils.parsedate_to_datetime(found.group(1).decode()).timestamp()
    assert abs(sent - time.time()) < 5
    return answer[: found.start()] + answer[found.end() :]


async def exchange(port: int, data: bytes, answers: int = 1) -> tuple[list[bytes], bool]:
    """Send ``data`` raw; read ``answers`` responses; (responses, whether the server then closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = []
    try:
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            body = b"" if data.startswith(b"HEAD") else await reader.readexactly(length)
            got.append(head + body)
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
        except TimeoutError:
            closed = False
    finally:
        writer.close()
    return got, closed


def port_of(client: object) -> int:
    return int(client.port)  # type: ignore[attr-defined]


def gif_answer(version: bytes, connection: bytes = b"") -> bytes:
    return (b"HTTP/" + version + b" 200 OK\r\nContent-Type: image/gif\r\n" + NO_STORE
            + b"Content-Length: 42\r\n" + connection + b"\r\n" + GIF)


class TestPixelBytes:
    async def test_http11_keep_alive_exact_bytes(self, config: CollectorConfig) -> None:
        """HTTP/1.1: the exact answer, twice on one kept-alive connection."""
        target = path(minter().open_url(7, 3)).encode()
        req = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        async with running(config) as client:
            answers, closed = await exchange(port_of(client), req + req, answers=2)
        assert [without_date(a) for a in answers] == [gif_answer(b"1.1")] * 2
        assert not closed

    async def test_http11_connection_close(self, config: CollectorConfig) -> None:
        """HTTP/1.1 with Connection: close gets the header and a closed connection."""
        target = path(minter().open_url(7, 3)).encode()
        async with running(config) as client:
            [answer], closed = await exchange(
                port_of(client), b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert without_date(answer) == gif_answer(b"1.1", b"Connection: close\r\n")
        assert closed

    async def test_http10_closes_unless_asked(self, config: CollectorConfig) -> None:
        """HTTP/1.0 answers in 1.0; closed by default, kept with Connection: keep-alive."""
        target = path(minter().open_url(7, 3)).encode()
        async with running(config) as client:
            [plain], closed = await exchange(port_of(client), b"GET " + target + b" HTTP/1.0\r\n\r\n")
            [kept], kept_closed = await exchange(
                port_of(client), b"GET " + target + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (without_date(plain), closed) == (gif_answer(b"1.0"), True)
        assert (without_date(kept), kept_closed) == (gif_answer(b"1.0", b"Connection: keep-alive\r\n"), False)

    async def test_head_has_length_but_no_body(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """HEAD: the GIF's headers with Content-Length 42 and no body; a pipelined GET still parses."""
        target = path(minter().open_url(7, 3)).encode()
        async with running(config) as client:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
            writer.write(b"HEAD " + target + b" HTTP/1.1\r\nHost: t\r\n\r\nGET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) + await reader.readexactly(42)
            writer.close()
            await flush(client)
        assert without_date(head) == gif_answer(b"1.1")[: -len(GIF)]
        assert without_date(second) == gif_answer(b"1.1")
        assert [(r["method"], r["prefetch"]) for r in await rows(conn)] == [("HEAD", True), ("GET", False)]

    async def test_pipelined_answers_in_order(self, config: CollectorConfig) -> None:
        """Three pipelined requests (open, click, forged click) get three answers in order."""
        m = minter()
        reqs = [path(m.open_url(1, 1)), path(m.click_url(1, 1, "https://a.example/x")), "/c/forged"]
        data = b"".join(b"GET " + r.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n" for r in reqs)
        async with running(config) as client:
            answers, _ = await exchange(port_of(client), data, answers=3)
        assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"302", b"404"]


class TestRedirectBytes:
    async def test_302_exact_bytes(self, config: CollectorConfig) -> None:
        """A click's answer: 302, no-store, the signed Location, empty body."""
        target = path(minter().click_url(4, 5, "https://shop.example/sale?x=1&y=%C3%BC#top")).encode()
        async with running(config) as client:
            [answer], _ = await exchange(port_of(client), b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert without_date(answer) == (b"HTTP/1.1 302 Found\r\n" + NO_STORE + b"Content-Length: 0\r\n"
                                        b"Location: https://shop.example/sale?x=1&y=%C3%BC#top\r\n\r\n")

    async def test_404_exact_bytes(self, config: CollectorConfig) -> None:
        """A forged click's answer: 404, plain text, no-store, the fixed message."""
        async with running(config) as client:
            [answer], _ = await exchange(port_of(client), b"GET /c/AAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: t\r\n\r\n")
        assert without_date(answer) == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                        + NO_STORE + b"Content-Length: 37\r\n\r\n" + NOT_FOUND_BODY)

    async def test_signed_header_injection_is_refused(self, config: CollectorConfig, conn: asyncpg.Connection) -> None:
        """A click token signed over a URL with CR LF (a minting bug) answers 404, never a split header."""
        token = Signer(TEST_SECRET).mint(KIND_CLICK, 3, 4, "https://a.example/\r\nSet-Cookie: x=1")
        async with running(config) as client:
            [answer], _ = await exchange(port_of(client), b"GET /c/" + token.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            await flush(client)
        assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"Set-Cookie" not in answer
        [row] = await rows(conn)
        assert (row["job_id"], row["recipient_id"], row["link"], row["reject_reason"]) == (0, None, None,
                                                                                           "bad_destination")


class TestControlChars:
    def test_control_characters(self) -> None:
        """CR, LF, NUL, DEL and tab are control characters (mint's rule); non-ASCII and percent-escapes are not."""
        assert [has_control_chars(v) for v in ("https://a.example/\r\nX: y", "a\nb", "a\x00b", "a\x7fb",
                                               "a\tb")] == [True] * 5
        assert [has_control_chars(v) for v in ("https://ä.example/ü", "https://a.example/%0D%0A",
                                               "https://a.example/\u2028")] == [False] * 3


class TestAccessLog:
    async def test_access_log_reads_the_answer(self, config: CollectorConfig, caplog: pytest.LogCaptureFixture) -> None:
        """With aiohttp's access log on, a prebuilt answer logs its status and body size."""
        caplog.set_level(logging.INFO, logger="aiohttp.access")
        async with running(config) as client:
            resp = await client.get(path(minter().open_url(7, 3)))
            await resp.read()
        lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
        assert len(lines) == 1 and '" 200 42 ' in lines[0], lines
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class TestSlowReader:
    async def test_pipelined_flood_read_late(self, config: CollectorConfig) -> None:
        """40 000 pipelined pixels read only after a pause: every answer arrives whole and in order.

        The answers outgrow the socket buffers (a small receive window), so the
        server must wait for the client (the drain path) instead of piling up bytes.
        """
        target = path(minter().open_url(7, 3)).encode()
        req = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        count = 40_000
        async with running(config) as client:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.connect(("127.0.0.1", port_of(client)))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
            writer.write(req * count)
            sending = asyncio.ensure_future(writer.drain())  # the server stops reading while we do not read
            await asyncio.sleep(1.0)
            answers = 0
            while answers < count:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n") and await reader.readexactly(42) == GIF
                answers += 1
            await sending
            writer.close()
            health = await client.get("/healthz")
        assert (answers, health.status) == (count, 200)
