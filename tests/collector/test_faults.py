"""Hostile input and a database outage: the pixel answers, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from collector.answers import GIF
from collector.cleaning import ClientAddress
from collector.rows import COLUMN_TYPES, COLUMNS, RowMaker, Tally
from collector.state import BUFFER
from loadtest.support import Relay
from tests.collector.test_rows import hit
from tests.support.collector import flush, make_config, minter, path, rows, running, scrape, wait_for


async def raw_request(port: int, request: bytes) -> bytes:
    """Send exact bytes, return the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


class TestHostileInput:
    async def test_binary_nul_and_long_headers(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """Undecodable bytes, NUL bytes and oversized values are repaired and counted; the batch lands."""
        async with running(make_config(db_url, tmp_path)) as client:
            port = client.server.port
            token = path(minter().open_url(3, 4))
            ok = path(minter().open_url(3, 5))
            answer = await raw_request(port, (
                f"GET {token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
                + b"User-Agent: caf\xe9 \xff\xfe bot\r\n"
                + b"Referer: https://r.example/" + b"a" * 5000 + b"\r\n"
                + b"Accept-Language: " + b"de" * 200 + b"\r\n\r\n"))
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(GIF)
            await client.get(ok, headers={"User-Agent": "x%00y"})
            await flush(client)
            metrics = await scrape(client)
        got = await rows(conn)
        assert [(r["job_id"], r["recipient_id"]) for r in got] == [(3, 4), (3, 5)]
        assert got[0]["user_agent"] == "caf\ufffd \ufffd\ufffd bot"
        assert len(got[0]["referer"]) == 2048 and len(got[0]["accept_language"]) == 256
        assert 'pixeltrack_input_repaired_total{reason="too_long"} 2.0' in metrics
        assert 'pixeltrack_input_repaired_total{reason="bad_encoding"} 1.0' in metrics

    async def test_nul_in_path_and_broken_percent(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """NUL bytes and broken percent-encoding in the token give the GIF and a rejected row."""
        async with running(make_config(db_url, tmp_path)) as client:
            for bad in ("/o/%00%00abc.gif", "/o/%zz%f.gif", "/o/%C3%28.gif", "/c/%E2%82", "/d/%ff/1.gif"):
                answer = await raw_request(client.server.port, f"GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"), bad
            await flush(client)
        got = await rows(conn)
        assert len(got) == 5
        assert {r["job_id"] for r in got} == {0}
        assert all(r["reject_reason"] for r in got)

    @pytest.mark.parametrize("bad", [
        b"GET /o/a.gif HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"z" * 70000 + b"\r\n\r\n",
        b"GET /o/a.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x00b\r\n\r\n",
        b"GET /o/\x00.gif HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    ])
    async def test_invalid_http_refused_process_lives(self, db_url: str, tmp_path: Path,
                                                      conn: asyncpg.Connection, bad: bytes) -> None:
        """What is not HTTP at all (raw NUL, 70 kB header, TLS to a plain port) gets a 400; the next hit is stored."""
        async with running(make_config(db_url, tmp_path)) as client:
            answer = await raw_request(client.server.port, bad)
            assert answer.split(b" ", 2)[1] == b"400"
            metrics = await scrape(client)
            if not bad.startswith(b"\x16"):  # aiohttp logs TLS-on-a-plain-port at debug only; not counted
                assert 'pixeltrack_hits_rejected_total{reason="bad_http"} 1.0' in metrics
            resp = await client.get(path(minter().open_url(1, 1)))
            assert await resp.read() == GIF
            await flush(client)
        assert [(r["job_id"], r["recipient_id"]) for r in await rows(conn)] == [(1, 1)]


class TestMetricsAndHealth:
    async def test_counts_by_kind_and_reason(self, db_url: str, tmp_path: Path) -> None:
        """Accepted hits are counted by kind, rejected by reason, writes in total."""
        m = minter()
        async with running(make_config(db_url, tmp_path)) as client:
            for url in (m.open_url(1, 1), m.open_url(1, 2), m.click_url(1, 1, "https://a.example/")):
                await client.get(path(url), allow_redirects=False)
            await client.get("/o/forged.gif")
            await client.get("/c/forged", allow_redirects=False)
            await flush(client)
            text = await scrape(client)
            assert (await client.get("/healthz")).status == 200
            assert (await client.get("/readyz")).status == 200
        for line in ('pixeltrack_hits_accepted_total{kind="open"} 2.0', 'pixeltrack_hits_accepted_total{kind="click"} 1.0',
                     'pixeltrack_hits_rejected_total{reason="malformed"} 2.0', "pixeltrack_hits_written_total 5.0",
                     "pixeltrack_database_up 1.0", "pixeltrack_hits_buffered 0.0"):
            assert line in text, line


@pytest.fixture
async def relay(server_url: str) -> AsyncIterator[Relay]:
    """A relay to the test server (TCP, or the embedded server's unix socket) that the test can cut."""
    r = Relay(server_url)
    await r.start()
    yield r
    await r.close()


class TestDatabaseOutage:
    async def test_spool_and_replay_exactly(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection,
                                            relay: Relay) -> None:
        """PostgreSQL vanishes mid-traffic: pixels keep answering, hits spool, and all land once it is back."""
        config = make_config(relay.route(db_url), tmp_path / "spool", batch_size=7)
        m = minter()
        async with running(config) as client:
            writer = client.app[BUFFER]
            for i in range(20):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF
            await flush(client)
            await relay.cut()
            for i in range(20, 70):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF
            await flush(client)
            assert not writer.database_ok and len(writer.spool.pending()) >= 1
            assert (await client.get("/readyz")).status == 200  # the spool still keeps hits safely
            await relay.restore()
            for i in range(70, 80):
                await client.get(path(m.open_url(1, i)))

            async def drained() -> bool:
                await flush(client)
                return not writer.spool.pending() and writer.database_ok

            await wait_for(drained)
            text = await scrape(client)
        got = sorted(r["recipient_id"] for r in await rows(conn))
        assert got == list(range(80))
        assert "pixeltrack_hits_written_total 80.0" in text

    async def test_next_start_replays_leftover_spool(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection,
                                                     relay: Relay) -> None:
        """Hits spooled by a collector that stopped while PostgreSQL was down are replayed by the next one, once."""
        spool = tmp_path / "spool"
        await relay.cut()
        async with running(make_config(relay.route(db_url), spool)) as client:
            for i in range(12):
                await client.get(path(minter().open_url(2, i)))
        assert len(list(spool.glob("*.batch"))) == 1
        await relay.restore()
        async with running(make_config(relay.route(db_url), spool)) as client:
            await wait_for(lambda: _spool_empty(client))
        assert sorted(r["recipient_id"] for r in await rows(conn)) == list(range(12))

    async def test_readyz_503_when_spool_full(self, db_url: str, tmp_path: Path, relay: Relay) -> None:
        """Database down and spool over its limit: /readyz says 503, the pixel still answers."""
        await relay.cut()
        config = make_config(relay.route(db_url), tmp_path / "s", spool_max_bytes=10)
        async with running(config) as client:
            for i in range(3):
                await client.get(path(minter().open_url(1, i)))
                await flush(client)
            assert (await client.get("/readyz")).status == 503
            assert await (await client.get(path(minter().open_url(1, 9)))).read() == GIF
            assert sum(client.app[BUFFER].held()) + sum(1 for _ in (tmp_path / "s").glob("*.batch")) >= 1


async def _spool_empty(client: object) -> bool:
    writer = client.app[BUFFER]  # type: ignore[attr-defined]
    await writer.flush()
    return not writer.spool.pending()


def metric(text: str, name: str) -> float:
    """One sample's value from /metrics text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def batch_of(recipients: range) -> bytes:
    """A spool batch as a collector writes it: hits of job 4 for ``recipients``."""
    made = RowMaker(bytes.fromhex("00112233445566ff"), ClientAddress(())).rows(
        [hit(job_id=4, recipient_id=r) for r in recipients], Tally(), 0)
    return orjson.dumps([[str(v) if isinstance(v, uuid.UUID) else v for v in r] for r in made])


class TestSpoolFaults:
    async def test_bad_batches_are_quarantined_the_rest_stored(self, db_url: str, tmp_path: Path,
                                                               conn: asyncpg.Connection) -> None:
        """A cut-short, a garbled and a wrongly typed batch go to quarantine/; the good batch and live hits land."""
        spool = tmp_path / "spool"
        spool.mkdir()
        good = batch_of(range(100, 105))
        typed = orjson.loads(good)
        typed[2][3] = "four"  # job_id as text
        bad = {"00000000000000000001-1-000001.batch": good[: len(good) // 2],
               "00000000000000000002-1-000002.batch": b"\x00\xff garbled",
               "00000000000000000003-1-000003.batch": orjson.dumps(typed)}
        for name, data in bad.items():  # oldest names: replayed first, and they must not block the rest
            (spool / name).write_bytes(data)
        (spool / "00000000000000000004-1-000004.batch").write_bytes(good)
        m = minter()
        async with running(make_config(db_url, spool, scan_interval=0.05)) as client:
            for i in range(10):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF

            async def drained() -> bool:
                await flush(client)
                return not client.app[BUFFER].spool.pending()

            await wait_for(drained)
            text = await scrape(client)
        got = sorted((r["job_id"], r["recipient_id"]) for r in await rows(conn))
        assert got == [(1, i) for i in range(10)] + [(4, r) for r in range(100, 105)]
        assert sorted(p.name for p in (spool / "quarantine").glob("*.batch")) == sorted(bad)
        reasons = [(spool / "quarantine" / f"{name}.reason").read_text() for name in sorted(bad)]
        assert reasons[0].startswith("not JSON") and reasons[1].startswith("not JSON")
        assert reasons[2] == "a str value where bigint belongs\n"
        assert metric(text, "pixeltrack_spool_quarantined_total") == 3
        assert metric(text, "pixeltrack_flush_errors_total") == 0

    async def test_column_types_follow_the_schema(self, conn: asyncpg.Connection) -> None:
        """The types the spool checks a batch against are raw_hits' own, nullability included."""
        names = {"timestamp with time zone": "timestamptz"}
        got = {r["column_name"]: names.get(r["data_type"], r["data_type"]) + ("?" if r["is_nullable"] == "YES" else "")
               for r in await conn.fetch("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                                         "WHERE table_name = 'raw_hits' AND table_schema = current_schema()")}
        assert tuple(got[c] for c in COLUMNS) == COLUMN_TYPES

    async def test_leftover_temporary_files_removed_at_start(self, db_url: str, tmp_path: Path) -> None:
        """Temporary files of dead writers, of this process and old ones go at start; a live writer's fresh one stays."""
        spool = tmp_path / "spool"
        (spool / "journal").mkdir(parents=True)
        gone = await asyncio.create_subprocess_exec("true")  # a process that is gone for sure
        await gone.wait()
        now = time.time_ns()
        stale = [spool / f"{now:020d}-{gone.pid}-000001.batch.tmp", spool / f"{now:020d}-{os.getpid()}-000002.batch.tmp",
                 spool / f"{now:020d}-{os.getppid()}-000003.batch.tmp", spool / "journal" / "1-2-000001.journal.tmp"]
        fresh = spool / f"{now:020d}-{os.getppid()}-000004.batch.tmp"
        for p in [*stale, fresh]:
            p.write_bytes(b"[[")
        os.utime(stale[2], (time.time() - 120, time.time() - 120))
        async with running(make_config(db_url, spool)) as client:
            await flush(client)
        assert [p.exists() for p in stale] == [False] * 4
        assert fresh.exists()


class TestSharedSpool:
    async def test_running_collector_replays_another_ones_batch(self, db_url: str, tmp_path: Path,
                                                                conn: asyncpg.Connection, relay: Relay) -> None:
        """A batch another collector spooled (its database cut throughout) is replayed by a running one, once."""
        shared = tmp_path / "shared"
        await relay.cut()
        async with running(make_config(db_url, shared, scan_interval=0.05)) as b:
            async with running(make_config(relay.route(db_url), shared)) as a:
                for i in range(12):
                    assert await (await a.get(path(minter().open_url(2, i)))).read() == GIF
                await flush(a)
                assert metric(await scrape(a), "pixeltrack_hits_spooled_total") == 12

            async def replayed() -> bool:
                await flush(b)
                return not b.app[BUFFER].spool.pending()

            await wait_for(replayed)
            text = await scrape(b)
        assert sorted(r["recipient_id"] for r in await rows(conn, "job_id = 2")) == list(range(12))
        assert metric(text, "pixeltrack_hits_replayed_total") == 12


class TestFullSpool:
    async def test_full_spool_database_down_then_back(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection,
                                                      relay: Relay) -> None:
        """Database down, spool at its limit: 503, at most max_held rows in memory, the rest kept in the journal;
        when PostgreSQL is back every answered hit is stored exactly once."""
        spool = tmp_path / "spool"
        config = make_config(relay.route(db_url), spool, spool_max_bytes=1500, max_held=8, scan_interval=0.05)
        await relay.cut()
        m = minter()
        async with running(config) as client:
            writer = client.app[BUFFER]
            for i in range(40):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF
                if i % 4 == 3:
                    await flush(client)
            ready = await client.get("/readyz")
            why = await ready.text()
            text = await scrape(client)
            await relay.restore()

            async def stored() -> bool:
                await flush(client)
                return not writer.pending and not writer.spool.pending()

            await wait_for(stored)
            after = await scrape(client)
            ready_after = (await client.get("/readyz")).status
        assert (ready.status, why.startswith("cannot keep hits: database down and spool full")) == (503, True)
        spooled, held, parked = (metric(text, f"pixeltrack_hits_{n}") for n in ("spooled_total", "held", "parked"))
        assert spooled >= 4 and held <= 8 and parked >= 1
        assert spooled + held + parked == 40
        got = await rows(conn)
        assert sorted(r["recipient_id"] for r in got) == list(range(40))
        assert len({r["hit_id"] for r in got}) == 40
        assert (metric(after, "pixeltrack_hits_lost_total"), metric(after, "pixeltrack_hits_held"),
                metric(after, "pixeltrack_hits_parked"), ready_after) == (0, 0, 0, 200)

    async def test_readyz_503_when_spool_folder_fails(self, db_url: str, tmp_path: Path, relay: Relay) -> None:
        """Database down and a spool write failing (here: the folder replaced by a file): 503 with the reason, until
        the folder takes writes again."""
        spool = tmp_path / "s"
        await relay.cut()
        async with running(make_config(relay.route(db_url), spool, scan_interval=0.05)) as client:
            spool.rename(tmp_path / "moved")
            spool.write_text("not a folder")
            await client.get(path(minter().open_url(1, 1)))
            await flush(client)
            broken = await client.get("/readyz")
            why = await broken.text()
            spool.unlink()
            (tmp_path / "moved").rename(spool)
            await asyncio.sleep(0.06)
            await flush(client)
            assert (await client.get("/readyz")).status == 200
        assert broken.status == 503
        assert "NotADirectoryError" in why


class TestFlusherSurvives:
    async def test_unexpected_errors_are_counted_and_hits_land(self, db_url: str, tmp_path: Path,
                                                               conn: asyncpg.Connection) -> None:
        """An error making rows, then one escaping a whole flush: both logged and counted, the loop goes on, all land."""
        async with running(make_config(db_url, tmp_path / "spool")) as client:
            writer = client.app[BUFFER]
            real_rows, real_turn = writer.rows.rows, writer.replayer.turn
            faults = {"rows": 1, "turn": 1}

            def rows_failing_once(*args: object) -> object:
                if faults["rows"]:
                    faults["rows"] -= 1
                    raise RuntimeError("a bug making rows")
                return real_rows(*args)  # type: ignore[arg-type]

            async def turn_failing_once() -> None:
                if faults["turn"]:
                    faults["turn"] -= 1
                    raise RuntimeError("a bug after the write")
                await real_turn()

            writer.rows.rows = rows_failing_once  # type: ignore[method-assign]
            writer.replayer.turn = turn_failing_once  # type: ignore[method-assign]
            for i in range(5):
                assert await (await client.get(path(minter().open_url(1, i)))).read() == GIF

            async def landed() -> bool:
                return await conn.fetchval("SELECT count(*) FROM raw_hits") == 5 and not writer.pending

            await wait_for(landed)  # the flusher's own loop, not a flush() from here
            text = await scrape(client)
        assert sorted(r["recipient_id"] for r in await rows(conn)) == list(range(5))
        assert (faults, metric(text, "pixeltrack_flush_errors_total")) == ({"rows": 0, "turn": 0}, 2)

    async def test_flusher_task_is_restarted(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """The flusher's task cancelled from outside is started again (counted) and goes on writing."""
        async with running(make_config(db_url, tmp_path / "spool")) as client:
            writer = client.app[BUFFER]
            first = writer._task
            assert first is not None
            first.cancel()
            await asyncio.sleep(0.01)
            assert writer._task is not first and not writer._task.done()
            for i in range(3):
                await client.get(path(minter().open_url(1, i)))

            async def landed() -> bool:
                return await conn.fetchval("SELECT count(*) FROM raw_hits") == 3

            await wait_for(landed)
            text = await scrape(client)
        assert metric(text, "pixeltrack_flusher_restarts_total") == 1
