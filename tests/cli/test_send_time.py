"""The send time: `job create --sent-at`, `job sent`, mark_sent, and the scanner rule that needs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pixeltrack.cli.main import main
from pixeltrack.core import jobs
from tests.conftest import TEST_SECRET
from tests.support.hits import T0, add_hits, hit

SHOP = "https://shop.example/spring"


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("PIXELTRACK_SECRET", TEST_SECRET)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on_db(db_url: str, work: Any) -> Any:
    """Run ``work(conn)`` on its own connection and loop (the CLI runs its own event loops)."""

    async def go() -> Any:
        conn = await asyncpg.connect(db_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def mail_job(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> None:
    """Job 1, personal, with r1@x.org and r2@x.org (recipient ids 0 and 1)."""
    assert run(capsys, "job", "create", "--name", "Spring", "--mode", "personal", *extra)[:2] == (0, "1\n")
    f = tmp_path / "r.csv"
    f.write_text("recipient,consent\nr1@x.org,yes\nr2@x.org,yes\n")
    assert run(capsys, "recipients", "import", "--job", "1", str(f))[0] == 0


def clicks_at(db_url: str, *seconds: int) -> None:
    """One click per recipient (0, 1, ...), ``seconds`` after T0, from a person's browser."""
    rows = [hit("click", 1, rid, link=SHOP, received_at=T0 + dt.timedelta(seconds=s)) for rid, s in enumerate(seconds)]
    on_db(db_url, lambda conn: add_hits(conn, rows))


def verdicts(db_url: str) -> list[tuple[Any, ...]]:
    """(recipient, traffic, machine_reason) of the rolled-up clicks."""
    sql = "SELECT recipient_id, traffic, machine_reason FROM raw_hits WHERE kind = 'click' ORDER BY recipient_id"
    return on_db(db_url, lambda conn: conn.fetch(sql))


class TestSendTimeRule:
    """End to end: a click 5 s after `job sent` is a scanner, one 5 minutes after is not."""

    def test_click_seconds_after_send_is_a_scanner(self, env: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        """r1 clicks at T+5 s (machine, scanner), r2 at T+300 s (human); the report says the rule applied."""
        mail_job(capsys, tmp_path)
        assert run(capsys, "job", "sent", "1", "--at", "2024-05-06T10:00:00Z") == \
            (0, "job 1 'Spring' sent at 2024-05-06 10:00 UTC\n", "")
        clicks_at(env, 5, 300)
        code, out, err = run(capsys, "aggregator", "--once")
        assert (code, err) == (0, "") and out.startswith("rolled up 2 hits in 1 batches")
        assert [tuple(r) for r in verdicts(env)] == [(0, "machine", "scanner"), (1, "human", None)]
        report = json.loads(run(capsys, "report", "--job", "1", "--format", "json")[1])
        assert report["clicks"] == {"total": 2, "human": 1, "unknown": 0, "machine": 1, "headline": 1, "unique": 1}
        assert report["send_time"] == {"sent_at": "2024-05-06T10:00:00+00:00", "rule_applied": True}
        assert [(r["clicks"], r["machine_clicks"]) for r in report["recipients"]] == [(0, 1), (1, 0)]
        assert "Send time unknown" not in run(capsys, "report", "--job", "1")[1]

    def test_without_send_time_the_rule_cannot_apply(self, env: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
        """No `job sent`: both clicks are human, and the report says the send-time rule did not apply."""
        mail_job(capsys, tmp_path)
        clicks_at(env, 5, 300)
        assert run(capsys, "aggregator", "--once")[0] == 0
        assert [tuple(r) for r in verdicts(env)] == [(0, "human", None), (1, "human", None)]
        report = json.loads(run(capsys, "report", "--job", "1", "--format", "json")[1])
        assert report["send_time"] == {"sent_at": None, "rule_applied": False}
        table = run(capsys, "report", "--job", "1")[1].splitlines()
        assert table[2] == "Send time unknown: the send-time rule did not apply."

    def test_sent_after_the_roll_up_says_so(self, env: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        """`job sent` after its clicks were rolled up warns that they were judged without it."""
        mail_job(capsys, tmp_path)
        clicks_at(env, 5, 300)
        run(capsys, "aggregator", "--once")
        assert run(capsys, "job", "sent", "1", "--at", "2024-05-06 10:00") == (
            0, "job 1 'Spring' sent at 2024-05-06 10:00 UTC\n",
            "note: 2 click(s) received from 2024-05-06 10:00 UTC on were rolled up before the send time was "
            "known; the send-time rule did not judge them\n")  # fmt: skip

    def test_counted_from_the_reports(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A unique job's rolled clicks leave no raw row; the note counts the 2 of 10:05 and 11:10, not 09:50's."""
        mail_job(capsys, tmp_path, "--mode", "unique")
        on_db(env, lambda conn: conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES (1, 2, 'r3')"))
        clicks_at(env, -600, 300, 4200)
        run(capsys, "aggregator", "--once")
        assert on_db(env, lambda conn: conn.fetchval("SELECT count(*) FROM raw_hits")) == 0
        assert run(capsys, "job", "sent", "1", "--at", "2024-05-06 10:20")[2] == (
            "note: 2 click(s) received from 2024-05-06 10:00 UTC on were rolled up before the send time was "
            "known; the send-time rule did not judge them\n")  # fmt: skip


class TestJobCommands:
    """`job create --sent-at`, `job sent` and `job list`."""

    def test_create_with_offset_and_list(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--sent-at with +02:00 is stored in UTC; `job list` shows it to the minute; a job not sent shows -."""
        run(capsys, "job", "create", "--name", "Spring", "--mode", "blind", "--sent-at", "2026-12-03T11:19:42+02:00")
        run(capsys, "job", "create", "--name", "Later", "--mode", "blind")
        code, out, err = run(capsys, "job", "list")
        assert (code, err) == (0, "")
        header, first, second = out.splitlines()
        assert header.split() == ["id", "kind", "mode", "recipients", "created", "sent", "name"]
        assert re.fullmatch(r"\s+1  mail  blind\s+0  \S+ \S+ UTC  2026-12-03 09:19 UTC  Spring", first), first
        assert re.fullmatch(r"\s+2  mail  blind\s+0  \S+ \S+ UTC  -\s+Later", second), second
        stored = on_db(env, lambda conn: conn.fetchval("SELECT sent_at FROM jobs WHERE job_id = 1"))
        assert stored == dt.datetime(2026, 12, 3, 9, 19, 42, tzinfo=dt.UTC)

    def test_sent_now_by_default(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --at the send time is now."""
        run(capsys, "job", "create", "--name", "Spring", "--mode", "unique")
        before = dt.datetime.now(dt.UTC)
        code, out, _ = run(capsys, "job", "sent", "1")
        after = dt.datetime.now(dt.UTC)
        stored = on_db(env, lambda conn: conn.fetchval("SELECT sent_at FROM jobs WHERE job_id = 1"))
        assert code == 0 and before <= stored <= after
        assert out == f"job 1 'Spring' sent at {stored:%Y-%m-%d %H:%M} UTC\n"

    def test_bad_time_is_refused(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A time that is not ISO 8601 stops at the parser, naming the text."""
        with pytest.raises(SystemExit) as stop:
            main(["job", "sent", "1", "--at", "yesterday"])
        assert stop.value.code == 2
        assert "not an ISO 8601 time: 'yesterday'" in capsys.readouterr().err

    def test_unknown_job_and_website(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """No job 9: exit 1 naming it; a website is never sent."""
        assert run(capsys, "job", "sent", "9") == (1, "", "pixeltrack: no job 9\n")
        run(capsys, "job", "create", "--name", "site", "--mode", "anonymous", "--kind", "site")
        assert run(capsys, "job", "sent", "1") == (1, "", "pixeltrack: job 1 is a website: only mail jobs are sent\n")


class TestMarkSent:
    """The Python API a sending program calls."""

    async def test_naive_is_utc_and_aware_is_converted(self, conn: asyncpg.Connection) -> None:
        """A naive time is stored as UTC; an aware one is converted; the stored time is returned."""
        job = await jobs.create_job(conn, "Spring", "personal")
        got = await jobs.mark_sent(conn, job, dt.datetime(2026, 12, 3, 9, 19))
        assert got == dt.datetime(2026, 12, 3, 9, 19, tzinfo=dt.UTC)
        cet = dt.timezone(dt.timedelta(hours=1))
        await jobs.mark_sent(conn, job, dt.datetime(2026, 12, 3, 10, 30, tzinfo=cet))
        assert await conn.fetchval("SELECT sent_at FROM jobs WHERE job_id = $1", job) == \
            dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)
