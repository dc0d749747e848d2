"""The prebuilt answers on the wire: exact bytes over a raw socket, every HTTP/1.x form; aiohttp's side of them."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import importlib.metadata
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from collector import answers
from collector.answers import GIF, NOT_FOUND_BODY, PIXEL, CannedResponse
from collector.config import CollectorConfig
from pixeltrack.core.mint import has_control_chars
from pixeltrack.core.tokens import KIND_CLICK, Signer
from tests.conftest import TEST_SECRET
from tests.support.collector import flush, minter, path, read_pipelined_pixels, rows, running

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
            answers = await read_pipelined_pixels(port_of(client), req, count, pause=1.0)
            health = await client.get("/healthz")
        assert (answers, health.status) == (count, 200)


def vary(attr: str) -> tuple[Any, Callable[[web.StreamResponse], Any]]:
    """A value to set ``attr`` to on a fresh StreamResponse, and how aiohttp's public side reads it back."""
    headers = CIMultiDictProxy(CIMultiDict({"X": "1"}))
    readers: dict[str, tuple[Any, Callable[[web.StreamResponse], Any]]] = {
        "_status": (299, lambda r: r.status),
        "_reason": ("Fine", lambda r: r.reason),
        "_headers": (headers, lambda r: r.headers),
        "_state": ({"k": 7}, lambda r: {"k": r["k"]}),
        "_keep_alive": (True, lambda r: r.keep_alive),
        "_eof_sent": (True, lambda r: r.prepared),
        "_body_length": (42, lambda r: r.body_length),
    }
    assert attr in readers, f"CannedResponse now sets {attr!r}: say here which public member of StreamResponse reads it"
    return readers[attr]


class TestAiohttpContract:
    """What CannedResponse relies on in aiohttp's internals is still there (aiohttp is pinned; this names what broke)."""

    @pytest.fixture
    async def prepared(self, config: CollectorConfig) -> CannedResponse:
        """A CannedResponse as aiohttp finished it: after a real pixel request."""
        kept: list[web.StreamResponse] = []

        async def keep(request: web.Request) -> web.StreamResponse:
            kept.append(CannedResponse(PIXEL))
            return kept[-1]

        app = web.Application()
        app.router.add_get("/", keep)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            assert (await client.get("/")).status == 200
        assert isinstance(kept[0], CannedResponse)
        return kept[0]

    def test_private_attributes_exist(self, prepared: CannedResponse) -> None:
        """Every private attribute CannedResponse sets exists on StreamResponse and its public member reads it."""
        aiohttp_version = importlib.metadata.version("aiohttp")
        own = {"_canned", "_location"}
        for attr in sorted(set(vars(prepared)) - own):
            assert hasattr(web.StreamResponse(), attr), (
                f"aiohttp {aiohttp_version}: StreamResponse has no {attr!r}, which collector.answers.CannedResponse "
                f"sets; set PIXELTRACK_CANNED_ANSWERS=0 and adapt CannedResponse")
            value, read = vary(attr)
            plain = web.StreamResponse()
            setattr(plain, attr, value)
            assert read(plain) == value, (
                f"aiohttp {aiohttp_version}: StreamResponse no longer reads {attr!r} where CannedResponse expects it; "
                f"set PIXELTRACK_CANNED_ANSWERS=0 and adapt CannedResponse")
        assert set(vars(prepared)) - own == {"_state", "_headers", "_status", "_reason", "_keep_alive", "_eof_sent",
                                             "_body_length"}
        assert (prepared.status, prepared.keep_alive, prepared.prepared, prepared.body_length) == (200, True, True, 42)

    def test_init_sets_nothing_else(self) -> None:
        """StreamResponse.__init__ (which CannedResponse skips) sets no instance attribute CannedResponse lacks."""
        missing = set(vars(web.StreamResponse())) - set(vars(CannedResponse(PIXEL)))
        assert not missing, (f"aiohttp {importlib.metadata.version('aiohttp')}: StreamResponse.__init__ now sets "
                             f"{sorted(missing)}, which CannedResponse (it skips __init__) does not")

    def test_methods_it_overrides_and_calls(self) -> None:
        """prepare and write_eof keep their signatures; the request members and the writer's drain still exist."""
        for name, params in (("prepare", ["self", "request"]), ("write_eof", ["self", "data"])):
            got = list(inspect.signature(getattr(web.StreamResponse, name)).parameters)
            assert got == params, f"aiohttp: StreamResponse.{name}{params} is now {got}; CannedResponse overrides it"
        for name in ("transport", "keep_alive", "version", "method", "writer"):
            assert hasattr(web.BaseRequest, name), f"aiohttp: BaseRequest.{name}, read by CannedResponse.prepare, is gone"
        assert inspect.iscoroutinefunction(StreamWriter.drain), "aiohttp: StreamWriter.drain, awaited by CannedResponse, is gone"


def parsed(answer: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """(status line, headers lower-cased and sorted without Date and Server, body)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = [(n.lower(), v) for n, _, v in (line.partition(b": ") for line in lines)]
    return status, sorted(f for f in fields if f[0] not in (b"date", b"server")), body


@pytest.fixture
def plain_answers() -> Iterator[None]:
    """After a test with PIXELTRACK_CANNED_ANSWERS=0 (config.canned_answers=False), prebuilt answers again."""
    yield
    answers.use_canned(True)


class TestPlainAnswers:
    async def test_same_answers_without_canned_bytes(self, config: CollectorConfig) -> None:
        """Switched off, the pixel, the 302 and the 404 answer the same status, headers and body through web.Response."""
        m = minter()
        targets = [path(m.open_url(7, 3)), path(m.click_url(4, 5, "https://shop.example/sale?x=1&y=%C3%BC#top")),
                   "/c/AAAAAAAAAAAAAAAAAAAAAAAA", path(m.doc_url(7, 3, 2))]
        requests = [b"GET " + t.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n" for t in targets]
        requests.append(b"GET " + targets[0].encode() + b" HTTP/1.0\r\n\r\n")
        got: dict[bool, list[bytes]] = {}
        for canned in (True, False):
            try:
                async with running(dataclasses.replace(config, canned_answers=canned)) as client:
                    got[canned] = [(await exchange(port_of(client), req))[0][0] for req in requests]
            finally:
                answers.use_canned(True)
        assert [parsed(a) for a in got[False]] == [parsed(a) for a in got[True]]
        assert [parsed(a)[0] for a in got[True]] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 302 Found", b"HTTP/1.1 404 Not Found",
                                                      b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"]
        # the switch took effect: only aiohttp's ordinary path adds its Server header
        assert [b"\r\nServer: " in a for a in got[True] + got[False]] == [False] * 5 + [True] * 5

    async def test_head_without_canned_bytes(self, config: CollectorConfig, plain_answers: None) -> None:
        """Switched off, HEAD still gets the GIF's headers with Content-Length 42 and no body."""
        target = path(minter().open_url(7, 3)).encode()
        async with running(dataclasses.replace(config, canned_answers=False)) as client:
            [answer], _ = await exchange(port_of(client), b"HEAD " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert parsed(answer) == parsed(gif_answer(b"1.1")[: -len(GIF)])


class TestCannedSwitch:
    def test_env_switch_reaches_the_app(self) -> None:
        """PIXELTRACK_CANNED_ANSWERS=0 makes create_app answer through web.Response; unset, prebuilt bytes."""
        from collector.app import create_app

        env = {"DATABASE_URL": "postgresql://x/y", "PIXELTRACK_SECRET": TEST_SECRET}
        try:
            create_app(CollectorConfig.from_env({**env, "PIXELTRACK_CANNED_ANSWERS": "0"}))
            assert answers.respond is answers.plain_response
            create_app(CollectorConfig.from_env(env))
            assert answers.respond is CannedResponse
        finally:
            answers.use_canned(True)
