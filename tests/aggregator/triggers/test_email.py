"""E-mail alerts: a real SMTP server (aiosmtpd) on loopback receives them."""

from __future__ import annotations

import asyncio
import dataclasses
import email
from collections.abc import Iterator
from email.message import Message
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from loadtest.support import free_port
from tests.aggregator.triggers.flow import (
    CFG,
    GMAIL_IP,
    GMAIL_PROXY,
    A,
    at,
    dispatcher,
    make_trigger,
    raw,
    roll,
    scan_at,
)
from tests.support.hits import add_hits, add_job, add_recipients


class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


class Smtp:
    """A real SMTP server on a loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.box = Mailbox()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    """A running SMTP server."""
    server = Smtp()
    server.start()
    yield server
    server.stop()


def body_of(message: Message) -> str:
    """The plain-text body."""
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode().replace("\r\n", "\n")


async def clicked_job(conn: asyncpg.Connection, **job: Any) -> int:
    """A personal job of one recipient with a click trigger mailing ops@example.org; r1 clicks A,
    rolled up and scanned: one alert is pending."""
    job_id = await add_job(conn, "personal", **job)
    await add_recipients(conn, job_id, 1)
    await make_trigger(conn, job_id, "click", email="ops@example.org")
    await add_hits(conn, [raw("click", job_id, 1, 0, link=A)])
    await roll(conn)
    await scan_at(conn, 300)
    return job_id


class TestEmailAlerts:
    """Plain text: who (where the mode allows), what, when, device."""

    async def test_click_alert(self, conn: asyncpg.Connection, db_url: str, smtp: Smtp) -> None:
        """A human click of r1 reaches the mailbox as one plain-text alert."""
        job = await clicked_job(conn, name="Spring sale")
        async with dispatcher(db_url, dataclasses.replace(CFG, smtp_url=smtp.url)) as d:
            await d.run_once()
        [(to, message)] = smtp.box.messages
        event_id = await conn.fetchval("SELECT event_id::text FROM trigger_events")
        assert to == ["ops@example.org"]
        assert message["Subject"] == "[pixeltrack] click: r1@example.org"
        assert (message["From"], message["Pixeltrack-Event-Id"]) == ("pixeltrack@localhost", event_id)
        assert message.get_content_type() == "text/plain"
        assert body_of(message) == (
            f"What: r1@example.org clicked {A}\nWho: r1@example.org\nWhen: {at(0).isoformat()}\nDevice: desktop\n"
            f"Where: job {job} 'Spring sale'\nEvent: click, id {event_id}\n\n-- pixeltrack trigger 1\n"
        )

    async def test_counts_only(self, conn: asyncpg.Connection, db_url: str, smtp: Smtp) -> None:
        """A unique job's threshold alert names nobody."""
        job = await add_job(conn, "unique", name="Newsletter")
        await add_recipients(conn, job, 2)
        await make_trigger(conn, job, "job.threshold", email="ops@example.org", count=1)
        await add_hits(conn, [raw("open", job, 1, 0), raw("open", job, 2, 1, ua=GMAIL_PROXY, ip=GMAIL_IP)])
        await roll(conn)
        await scan_at(conn, 300)
        async with dispatcher(db_url, dataclasses.replace(CFG, smtp_url=smtp.url)) as d:
            await d.run_once()
        [(_, message)] = smtp.box.messages
        text = body_of(message)
        assert text.startswith(f"What: job {job} 'Newsletter' reached 1 unique opens\nWhen: ")
        assert "Count: 1\n" in text and "Who:" not in text and "@" not in text

    async def test_server_away(self, conn: asyncpg.Connection, db_url: str) -> None:
        """SMTP server down: retried, delivered once it is back."""
        server = Smtp()
        await clicked_job(conn)
        async with dispatcher(db_url, dataclasses.replace(CFG, smtp_url=server.url)) as d:
            await d.run_once()
            assert await conn.fetchval("SELECT attempts FROM trigger_events WHERE status = 'pending'") == 1
            server.start()
            try:
                await asyncio.sleep(0.2)
                await d.run_once()
                await asyncio.sleep(0.2)
                await d.run_once()
            finally:
                server.stop()
        assert len(server.box.messages) == 1
        assert await conn.fetchval("SELECT status FROM trigger_events") == "delivered"

    async def test_no_smtp_url(self, conn: asyncpg.Connection, db_url: str) -> None:
        """Without PIXELTRACK_SMTP_URL the attempt fails, saying so, and stays pending."""
        await clicked_job(conn)
        async with dispatcher(db_url) as d:
            await d.run_once()
        error = await conn.fetchval("SELECT last_error FROM trigger_events WHERE status = 'pending'")
        assert "PIXELTRACK_SMTP_URL is not set" in error
