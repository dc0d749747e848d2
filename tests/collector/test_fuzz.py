"""Any bytes in any token position get the documented answer, and nothing is logged as an error.

Hypothesis throws random and mutated tokens (valid ones with characters
inserted, deleted or flipped, junk prefixes and suffixes, unicode, raw bytes,
percent-encodings, very long ones) at every endpoint that reads a token,
through the real app on a real socket: pixels answer 200 and the GIF, a click
302 exactly when its token verifies as a click and 404 otherwise, a page-view
pixel 200, a beacon 204. An ERROR record (aiohttp's "Error handling request"
with a traceback, the 500 path) fails the example.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import string
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.answers import GIF
from collector.app import create_app, make_runner
from pixeltrack.core.mint import has_control_chars
from pixeltrack.core.tokens import KIND_CLICK, KIND_CONTACT, KIND_DOC, KIND_OPEN, KIND_SITE, Signer, TokenError
from tests.conftest import TEST_SECRET
from tests.support.collector import make_config

SIGNER = Signer(TEST_SECRET)
ALPHABET = string.ascii_letters + string.digits + "-_"
SUB_DELIMS = "!$&'()*+,;=:@~"   # legal unencoded in a path segment
MAX_PATH = 15_000                # under the collector's 16 KiB request-line limit (longer is a 400 by design)
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Collector:
    """The real collector app (production runner) on a loopback port, served from a thread of its own."""

    def __init__(self, db_url: str, spool: Path) -> None:
        self.config = make_config(db_url, spool)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = make_runner(create_app(self.config))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site.port
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Collector:
        self._thread.start()
        assert self._ready.wait(30), "collector did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def collector(db_url: str, tmp_path: Path) -> Iterator[Collector]:
    with Collector(db_url, tmp_path / "spool") as c:
        yield c


@pytest.fixture
def client(collector: Collector) -> Iterator[http.client.HTTPConnection]:
    """One keep-alive connection (http.client reopens it when the server closes)."""
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    yield conn
    conn.close()


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.WARNING)
    yield caplog


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records (and any with a traceback) logged so far, cleared for the next example."""
    bad = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    caplog.clear()
    return bad


def click_tokens() -> st.SearchStrategy[str]:
    """Click tokens, with and without a recipient, identifying or not."""
    ids = st.integers(0, 2**40)
    url = st.sampled_from(["https://example.com/", "https://shop.example/a?b=c&d=%20e", "http://x.example/é"])
    return st.builds(lambda j, r, u, i: SIGNER.mint(KIND_CLICK, j, r, u, identify=i and r is not None),
                     ids, st.none() | ids, url, st.booleans())


def valid_tokens() -> st.SearchStrategy[str]:
    """Tokens the collector accepts: every kind, ids of every varint width, identifying clicks."""
    ids = st.integers(0, 2**40)
    return st.one_of(
        st.builds(lambda j, r: SIGNER.mint(KIND_OPEN, j, r), ids, st.none() | ids),
        click_tokens(),
        st.builds(lambda j, r: SIGNER.mint(KIND_DOC, j, r), ids, st.none() | ids),
        st.builds(lambda j, f: SIGNER.mint(KIND_SITE, j, f), ids, st.integers(0, 63)),
        st.builds(lambda j, r: SIGNER.mint(KIND_CONTACT, j, r), ids, ids),
    )


@st.composite
def mutated(draw: st.DrawFn, tokens: st.SearchStrategy[str] | None = None) -> str:
    """A valid token with characters inserted, deleted, flipped, or junk around it."""
    token = draw(tokens if tokens is not None else valid_tokens())
    junk = draw(st.text(min_size=1, max_size=8) | st.text(string.punctuation + " ", min_size=1, max_size=8)
                | st.sampled_from(["!", "=", "==", "+", "/", "%", " ", ".", "\x00"]))
    at = draw(st.integers(0, len(token) - 1))
    op = draw(st.sampled_from(["prefix", "suffix", "insert", "delete", "flip", "truncate", "repeat", "swapcase"]))
    if op == "prefix":
        return junk + token
    if op == "suffix":
        return token + junk
    if op == "insert":
        return token[:at] + junk + token[at:]
    if op == "delete":
        return token[:at] + token[at + 1:]
    if op == "flip":
        return token[:at] + draw(st.sampled_from(ALPHABET)) + token[at + 1:]
    if op == "truncate":
        return token[:at]
    if op == "repeat":
        return token * draw(st.integers(2, 300))
    return token.swapcase()


def any_token() -> st.SearchStrategy[str]:
    """Random text, base64url-looking noise, very long tokens, and mutated valid ones."""
    return st.one_of(
        valid_tokens(), mutated(), mutated(), st.text(max_size=64),
        st.text(alphabet=ALPHABET, max_size=80), st.text(alphabet=ALPHABET, min_size=4000, max_size=5000),
    )


@st.composite
def in_path(draw: st.DrawFn, tokens: st.SearchStrategy[str] | None = None) -> tuple[str, str]:
    """(what the handler sees, how it is spelled in the URL): percent-encoded whole, or with sub-delims raw."""
    if draw(st.integers(0, 9)) == 0:  # raw bytes, every one percent-encoded (often not UTF-8)
        raw = draw(st.binary(min_size=1, max_size=200))
        return raw.decode("utf-8", "replace"), "".join(f"%{b:02X}" for b in raw)
    token = draw(tokens if tokens is not None else any_token())
    safe = draw(st.sampled_from(["", SUB_DELIMS, ALPHABET]))
    return token, quote(token.encode("utf-8", "surrogatepass"), safe=safe)


def click_status(token: str) -> int:
    """The documented answer to /c/{token}: 302 for a click token that verifies, else 404."""
    try:
        t = SIGNER.verify(token)
    except TokenError:
        return 404
    return 302 if t.kind == KIND_CLICK and t.url and not has_control_chars(t.url) else 404


def get(client: http.client.HTTPConnection, target: str) -> tuple[int, bytes, http.client.HTTPResponse]:
    client.request("GET", target)
    resp = client.getresponse()
    return resp.status, resp.read(), resp


class TestEveryTokenPath:
    """Every endpoint that reads a token answers as documented for any bytes, logging no error."""

    @FUZZ
    @given(spelled=in_path(), suffix=st.sampled_from([".gif", ""]))
    def test_open_pixel(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                        spelled: tuple[str, str], suffix: str) -> None:
        """/o/{token}: always 200 and the GIF."""
        target = f"/o/{spelled[1]}{suffix}"
        if len(target) < MAX_PATH:
            status, body, resp = get(client, target)
            assert (status, body, resp.getheader("Content-Type")) == (200, GIF, "image/gif"), target[:200]
        assert errors(no_errors) == []

    @FUZZ
    @given(spelled=in_path(st.one_of(mutated(click_tokens()), any_token())))
    def test_click(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                   spelled: tuple[str, str]) -> None:
        """/c/{token}: 302 to the signed destination when it verifies as a click, 404 otherwise."""
        token, target = spelled[0], f"/c/{spelled[1]}"
        if len(target) < MAX_PATH:
            status, _, resp = get(client, target)
            assert status == click_status(token), target[:200]
            if status == 302:  # where it was signed to go (an identifying click adds a contact parameter)
                signed = SIGNER.verify(token).url or ""
                location = resp.getheader("Location", "").encode("latin-1").decode("utf-8")
                assert location.split("?")[0] == signed.split("?")[0]
        assert errors(no_errors) == []

    @FUZZ
    @given(token=click_tokens(), junk=st.text(string.punctuation + " ", min_size=1, max_size=6) | st.text(min_size=1),
           where=st.sampled_from(["prefix", "suffix", "inside"]), safe=st.sampled_from(["", SUB_DELIMS]))
    def test_click_with_junk(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                             token: str, junk: str, where: str, safe: str) -> None:
        """/c/{a click token with junk around or inside}: 404 (the junk is refused, not skipped)."""
        mutant = {"prefix": junk + token, "suffix": token + junk, "inside": token[:9] + junk + token[9:]}[where]
        status, _, _ = get(client, f"/c/{quote(mutant, safe=safe)}")
        assert (status, click_status(mutant)) == (404, 404), mutant
        assert errors(no_errors) == []

    @FUZZ
    @given(spelled=in_path(), page=in_path(st.one_of(st.integers(0, 10**7).map(str), st.text(max_size=12))))
    def test_doc_page(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                      spelled: tuple[str, str], page: tuple[str, str]) -> None:
        """/d/{token}/{page}: always 200 and the GIF, whatever either segment holds."""
        target = f"/d/{spelled[1]}/{page[1]}.gif"
        if len(target) < MAX_PATH:
            status, body, _ = get(client, target)
            assert (status, body) == (200, GIF), target[:200]
        assert errors(no_errors) == []

    @FUZZ
    @given(key=any_token(), contact=any_token())
    def test_page_pixel(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                        key: str, contact: str) -> None:
        """/r.gif?k=...&c=...: always 200 and the GIF."""
        target = f"/r.gif?k={quote(key, safe='')}&c={quote(contact, safe='')}&u=https%3A%2F%2Fs.example%2F"
        if len(target) < MAX_PATH:
            status, body, _ = get(client, target)
            assert (status, body) == (200, GIF), target[:200]
        assert errors(no_errors) == []

    @FUZZ
    @given(key=any_token(), contact=any_token(), raw=st.none() | st.binary(max_size=300))
    def test_beacon(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                    key: str, contact: str, raw: bytes | None) -> None:
        """POST /r with any k and c fields (or any body at all): always 204."""
        body = raw if raw is not None else orjson.dumps({"k": key, "c": contact, "u": "https://s.example/"})
        client.request("POST", "/r", body=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
        resp = client.getresponse()
        resp.read()
        assert resp.status == 204
        assert errors(no_errors) == []


class TestJunkPrefix:
    """The issue's case, pinned: junk in front of a valid click token is a 404, not a 500."""

    @pytest.mark.parametrize("junk", ["!", "==", "%21", "%20", "~", "'", "=", "+"])
    def test_junk_before_a_click(self, client: http.client.HTTPConnection, no_errors: pytest.LogCaptureFixture,
                                 junk: str) -> None:
        """/c/<junk><valid identifying click token>: 404, and no error logged."""
        token = SIGNER.mint(KIND_CLICK, 7, 3, "https://example.com/", identify=True)
        assert get(client, f"/c/{token}")[0] == 302
        assert get(client, f"/c/{junk}{token}")[0] == 404
        assert errors(no_errors) == []
