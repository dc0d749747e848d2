"""pixeltrack.core.timestamps reads and writes exactly what asyncpg's own timestamptz codec does."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from pixeltrack.core import db, timestamps

UTC = dt.UTC
EPOCH = dt.datetime(2000, 1, 1, tzinfo=UTC)
FAST_END = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=2**32)  # 2106-02-07 06:28:16
EDGES = [
    "infinity", "-infinity", "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00",
    "1969-12-31 23:59:59.999999+00", "1970-01-01 00:00:00+00", "1970-01-01 00:00:00.000001+00",
    "2000-01-01 00:00:00+00", "1999-12-31 23:59:59.999999+00", "2026-12-03 09:19:05.5+00",
    "2038-01-19 03:14:07.999999+00", "2038-01-19 03:14:08.000001+00",
    (FAST_END - dt.timedelta(microseconds=1)).isoformat(), FAST_END.isoformat(),
    (FAST_END + dt.timedelta(microseconds=1)).isoformat(),
]  # fmt: skip


def times(count: int, seed: int) -> list[dt.datetime]:
    """``count`` UTC times to the microsecond, 1900 to 2200 (most of them in the fast range)."""
    rng = random.Random(seed)
    low, high = (dt.datetime(year, 1, 1, tzinfo=UTC) for year in (1900, 2200))
    span = (high - low) // dt.timedelta(microseconds=1)
    return [low + dt.timedelta(microseconds=rng.randrange(span)) for _ in range(count)]


@pytest.fixture
async def both(server_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """A connection with asyncpg's own codec, and one made by db.connect (with timestamps')."""
    plain, ours = await asyncpg.connect(server_url), await db.connect(server_url)
    yield plain, ours
    await plain.close()
    await ours.close()


class TestDecode:
    """A timestamptz read with the codec is asyncpg's datetime: the same value, UTC, infinities naive."""

    async def test_same_datetimes(self, both: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
        texts = EDGES + [t.isoformat() for t in times(5000, seed=13)]
        sql = "SELECT t::timestamptz FROM unnest($1::text[]) AS t"
        plain, ours = both
        expected = [r[0] for r in await plain.fetch(sql, texts)]
        got = [r[0] for r in await ours.fetch(sql, texts)]
        assert got == expected
        assert [t.tzinfo for t in got] == [t.tzinfo for t in expected]
        assert (got[0], got[1]) == (dt.datetime.max, dt.datetime.min)
        # 45% of 1900-2200 is the fast range (2,224 here): both ways of decoding are compared
        assert sum(t.tzinfo is UTC and dt.datetime(1970, 1, 1, tzinfo=UTC) <= t < FAST_END for t in got) > 2000

    def test_fast_range_is_used_here(self) -> None:
        """This platform's gmtime counts no leap seconds, so times from 1970 to 2106 take fromtimestamp."""
        assert timestamps.posix_gmtime()
        assert timestamps.FAST_DECODE == 2**32 * 10**6


class TestEncode:
    """What the codec sends for a value is what asyncpg's own sends (the bytes PostgreSQL receives)."""

    VALUES = [
        dt.datetime.max.replace(tzinfo=UTC), dt.datetime.min.replace(tzinfo=UTC), dt.datetime.max, dt.datetime.min,
        EPOCH, dt.datetime(2026, 12, 3, 9, 19, 5, 123456), dt.date(2026, 12, 3),
        dt.datetime(2026, 12, 3, 9, 19, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ]  # fmt: skip

    async def test_same_bytes(self, both: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
        values = self.VALUES + times(2000, seed=17)
        sql = "SELECT timestamptz_send($1::timestamptz)"
        plain, ours = both
        assert [await ours.fetchval(sql, v) for v in values] == [await plain.fetchval(sql, v) for v in values]

    async def test_arrays(self, both: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
        """Arrays of timestamptz (the roll-up's unnest parameters) go through the same encoder."""
        sql = "SELECT array_agg(timestamptz_send(t) ORDER BY n) FROM unnest($1::timestamptz[]) WITH ORDINALITY AS u(t, n)"
        values = [*self.VALUES, *times(500, seed=19)]
        plain, ours = both
        assert await ours.fetchval(sql, values) == await plain.fetchval(sql, values)

    async def test_same_errors(self, both: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
        """A value asyncpg refuses is refused: not a time, or past datetime's end once taken to UTC."""
        for value in ("2026-12-03", dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-1)))):
            for conn in both:
                with pytest.raises(asyncpg.DataError):
                    await conn.fetchval("SELECT $1::timestamptz", value)

    def test_infinities_as_asyncpg_sends_them(self) -> None:
        """asyncpg sends its infinities, and the last and first microseconds of datetime in UTC, as infinity."""
        assert timestamps.SENT_AS_INFINITY == {252455615999999999: 2**63 - 1, -63082281600000000: -(2**63)}
        assert timestamps.encode(dt.datetime.max.replace(tzinfo=UTC)) == (2**63 - 1,)
        assert timestamps.encode(dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC)) == (1_000_000,)
