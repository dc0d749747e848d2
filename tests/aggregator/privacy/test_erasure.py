"""Complete erasure: after `forget`, no table holds anything of the recipient; the tombstone refuses them."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from aggregator.config import AggregatorConfig
from aggregator.mail.rollup import rollup
from aggregator.mail.tracks import recipient_hash
from aggregator.privacy.forget import forget
from aggregator.rollup import rollup_all
from pixeltrack.core import db, erasure, jobs
from pixeltrack.core.websites import create_site
from tests.conftest import TEST_SECRET
from tests.support.hits import add_hits, at, hit, with_runs

ADDRESS = "Ann.Example@mail.test"
RID, OTHER = 7, 3  # Ann's number is the job's highest: it must never be given again
IP, MASKED = "203.0.113.7", "203.0.113.0"
BIRTH_YEAR, GENDER, ZIP = 1961, "diverse", "80331"
COOKIE = "va-ann"
SITE = "https://shop.example"
CFG = AggregatorConfig(batch_size=1000)
PAGE_VIEW = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, accept_language, method,
                      url, title, visitor_id, screen, contact)
VALUES ($1, $2, 'page', $3, $4, $5, 'de-DE', 'POST', $6, 'page', $7, '1280x720', $8)
""")
COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
  AND c.data_type IN ('text', 'character varying', 'bytea', 'inet', 'smallint', 'integer', 'bigint')
ORDER BY 1, 2
"""
ANN_ROLLED, ANN_PENDING, ANN_LATER = 0, 120, 180  # minutes after T0 of Ann's hits
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


async def personal_job(conn: asyncpg.Connection) -> tuple[int, int]:
    """Mail job 'spring' (Ann #7 and Bob #3) and a personal site Ann reached by a tracked click."""
    mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('spring', 'personal') RETURNING job_id")
    await conn.executemany(
        "INSERT INTO recipients (job_id, recipient_id, recipient, consent, birth_year, gender, zip)"
        " VALUES ($1, $2, $3, true, $4, $5, $6)",
        [(mail, RID, ADDRESS, BIRTH_YEAR, GENDER, ZIP), (mail, OTHER, "bob@mail.test", 1990, "m", "10115")],
    )
    site = int((await create_site(conn, "shop.example", "personal"))["job_id"])
    await add_hits(conn, [
        hit("open", mail, RID, ANN_ROLLED, ip=IP, ua=UA), hit("click", mail, RID, 1, SITE + "/landing", ip=IP, ua=UA),
        hit("open", mail, OTHER, 2, ip="198.51.100.9", ua=UA),
    ])  # fmt: skip
    for minute, path, visitor, contact in ((60, "/a", COOKIE, None), (65, "/a", "vb", None),
                                           (70, "/landing", COOKIE, f"{mail}:{RID}"), (72, "/b", COOKIE, None)):
        ip = IP if visitor == COOKIE else "198.51.100.9"
        await conn.execute(PAGE_VIEW, uuid.uuid4(), at(minute), site, ip, UA, SITE + path, visitor, contact)
    await rollup_all(conn, CFG)
    await add_hits(conn, [hit("open", mail, RID, ANN_PENDING, ip=IP, ua=UA)])  # not rolled up yet
    return mail, site


def traces(table: str, column: str, kind: str, value: Any, mail: int, rhash: bytes) -> bool:
    """Whether one stored value is something of Ann's."""
    if kind == "bytea":
        return bytes(value) == rhash or ADDRESS.casefold().encode() in bytes(value).lower()
    if kind in ("smallint", "integer", "bigint"):
        return value == BIRTH_YEAR or (column == "recipient_id" and value == RID)
    if kind == "inet":
        return str(value).split("/")[0] in (IP, MASKED)
    text = str(value).casefold()
    needles = (ADDRESS.casefold(), IP, MASKED, ZIP, GENDER, f"{mail}:{RID}", COOKIE)
    return any(needle in text for needle in needles)


async def everything_of_ann(conn: asyncpg.Connection, mail: int, rhash: bytes) -> set[tuple[str, str]]:
    """(table, column) of every text, bytea, inet and integer column in the public schema holding Ann's data."""
    found = set()
    for table, column, kind in await conn.fetch(COLUMNS):
        values = await conn.fetch(f'SELECT "{column}" AS v FROM "{table}" WHERE "{column}" IS NOT NULL')
        if any(traces(table, column, kind, r["v"], mail, rhash) for r in values):
            found.add((table.removesuffix("_default"), column))
    return found


async def totals(conn: asyncpg.Connection, mail: int) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT kind, total, unique_count FROM report_job_totals WHERE job_id = $1 ORDER BY 1", mail)
    return [tuple(r) for r in rows]


class TestForgetEverywhere:
    """forget leaves nothing of the recipient in any table, only the tombstone; later hits are not attributed."""

    async def test_nothing_left(self, conn: asyncpg.Connection) -> None:
        """Before: Ann in 16 columns of 8 tables; after: only her number in the tombstone, also once a later hit is rolled up."""
        mail, _ = await personal_job(conn)
        key = await conn.fetchval("SELECT key FROM job_keys WHERE job_id = $1", mail)
        rhash = recipient_hash(key, RID)
        assert await everything_of_ann(conn, mail, rhash) == {
            ("raw_hits", "client_ip"), ("raw_hits", "contact"), ("raw_hits", "recipient_id"),
            ("raw_hits", "visitor_id"), ("recipients", "birth_year"), ("recipients", "gender"),
            ("recipients", "recipient"), ("recipients", "recipient_id"), ("recipients", "zip"),
            ("report_recipient_links", "recipient_id"), ("report_recipients", "recipient_id"),
            ("site_contact_views", "recipient_id"), ("site_contacts", "recipient_id"),
            ("site_contacts", "visitor_id"), ("unique_seen", "hash"), ("mail_openers", "hash"),
        }  # fmt: skip
        [done] = await forget(conn, ADDRESS)
        # hashes: open, click and link, each also in the recognised-people scope (r:open, r:click, r:link)
        assert (done.raw_hits, done.recipient_rows, done.link_rows, done.hashes) == (4, 1, 1, 6)
        assert (done.site_rows, done.page_views, done.identity, done.rule_rows) == (4, 2, 1, 1)
        assert await everything_of_ann(conn, mail, rhash) == {("forgotten_recipients", "recipient_id")}

        await add_hits(conn, [hit("open", mail, RID, ANN_LATER, ip=IP, ua=UA)])  # her old token, e.g. from a spool
        await rollup_all(conn, CFG)
        assert await totals(conn, mail) == [("click", 1, 1), ("open", 4, 2)]
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1 AND rolled_at IS NULL", mail) == 0
        assert [r[0] for r in await conn.fetch("SELECT recipient_id FROM report_recipients")] == [OTHER]
        assert await everything_of_ann(conn, mail, rhash) == {("forgotten_recipients", "recipient_id")}

    async def test_during_a_batch(self, db_url: str, conn: asyncpg.Connection) -> None:
        """A batch claimed Ann's pending open: forget waits for it (no deadlock), then removes what it merged."""
        mail, _ = await personal_job(conn)
        key = await conn.fetchval("SELECT key FROM job_keys WHERE job_id = $1", mail)
        claimed, release = asyncio.Event(), asyncio.Event()

        async def pause() -> None:  # the batch holds Ann's hit, claimed, not yet merged
            claimed.set()
            await release.wait()

        batch = asyncio.create_task(rollup(conn, CFG, fault=pause))
        await claimed.wait()
        other = await db.connect(db_url)
        try:
            erasing = asyncio.create_task(forget(other, ADDRESS))
            await asyncio.sleep(0.5)
            assert not erasing.done()  # it waits for the gate the batch holds
            release.set()
            assert (await batch).hits == 1
            [done] = await erasing
        finally:
            await other.close()
        assert (done.raw_hits, done.recipient_rows, done.link_rows, done.hashes) == (4, 1, 1, 6)
        assert await totals(conn, mail) == [("click", 1, 1), ("open", 3, 2)]
        left = await everything_of_ann(conn, mail, recipient_hash(key, RID))
        assert left == {("forgotten_recipients", "recipient_id")}

    async def test_again_by_tombstone(self, conn: asyncpg.Connection) -> None:
        """forget on an erased recipient finds her by the tombstone, in any case, and has nothing more to remove."""
        mail, _ = await personal_job(conn)
        await forget(conn, ADDRESS, mail)
        [again] = await forget(conn, "  ann.example@MAIL.test")
        assert (again.job_id, again.recipient_id, again.raw_hits, again.identity) == (mail, RID, 0, 0)
        assert again.describe().endswith("already erased; tombstone kept")
        stone = await conn.fetchval("SELECT tombstone FROM forgotten_recipients WHERE job_id = $1", mail)
        key = await erasure.erasure_key(conn)
        assert key is not None and stone == erasure.tombstone(key, mail, "ann.example@mail.test")
        assert ADDRESS.casefold().encode() not in stone.lower()


class TestTombstone:
    """A forgotten recipient is never minted for or imported again into that job; others are."""

    async def test_mint_refused(self, conn: asyncpg.Connection) -> None:
        """recipient_id refuses her (any case) with a clear message; --all lists only Bob."""
        mail, _ = await personal_job(conn)
        await forget(conn, ADDRESS)
        for spelling in (ADDRESS, "ann.example@mail.test"):
            with pytest.raises(erasure.ForgottenRecipient, match="erased with `pixeltrack forget`"):
                await jobs.recipient_id(conn, mail, spelling)
        with pytest.raises(LookupError, match="has no recipient 'nobody@mail.test'"):
            await jobs.recipient_id(conn, mail, "nobody@mail.test")
        assert [tuple(r) for r in await jobs.all_recipients(conn, mail)] == [(OTHER, "bob@mail.test")]

    async def test_import_refused_and_numbers_kept(self, conn: asyncpg.Connection) -> None:
        """Importing her again is refused as a whole; a new person gets number 8, never her 7."""
        mail, _ = await personal_job(conn)
        await forget(conn, ADDRESS)
        new = jobs.Recipient("carl@mail.test", True, None, None, None)
        again = jobs.Recipient(" ANN.example@mail.test ", True, BIRTH_YEAR, GENDER, ZIP)
        with pytest.raises(erasure.ForgottenInImport, match="data row\\(s\\) 2 name recipients erased"):
            await jobs.import_recipients(conn, mail, [new, again])
        assert await conn.fetchval("SELECT count(*) FROM recipients WHERE job_id = $1", mail) == 1
        assert await jobs.import_recipients(conn, mail, [new]) == (1, 0)
        assert await jobs.recipient_id(conn, mail, "carl@mail.test") == RID + 1
        other_job = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('autumn', 'personal') RETURNING job_id")
        assert await jobs.import_recipients(conn, other_job, [again]) == (1, 0)  # a new job is a new consent

    async def test_cli_refuses(self, db_url: str, conn: asyncpg.Connection, tmp_path: Any) -> None:
        """`pixeltrack mint` and `recipients import` exit 1 naming the erasure."""
        mail, _ = await personal_job(conn)
        await forget(conn, ADDRESS)
        env = dict(os.environ, DATABASE_URL=db_url, PIXELTRACK_SECRET=TEST_SECRET)
        csv_file = tmp_path / "r.csv"
        csv_file.write_text(f"recipient,consent\n{ADDRESS},yes\n")
        for args in (("mint", "--job", str(mail), "--recipient", ADDRESS),
                     ("recipients", "import", "--job", str(mail), str(csv_file))):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pixeltrack.cli.main", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert (proc.returncode, out) == (1, b"")
            assert b"erased with `pixeltrack forget`" in err

