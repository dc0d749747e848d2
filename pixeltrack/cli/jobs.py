"""Handlers of the database-side subcommands: initdb, job, recipients, mint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pixeltrack.core import csvsafe, db, jobs, websites
from pixeltrack.core.config import CommonConfig, ConfigError, Secrets
from pixeltrack.core.embedded import embedded_database, embedded_url, stored_secret
from pixeltrack.core.mint import Minter
from pixeltrack.core.times import human_time

log = logging.getLogger("pixeltrack")


def resolve(environ: Mapping[str, str], need_db: bool = True, up: bool = False) -> CommonConfig:
    """Settings with the database URL resolved (embedded server started if unset).

    The embedded default keeps its signing key in the data folder: `up` makes
    it, and other commands on the same embedded data folder reuse it. With
    DATABASE_URL set, PIXELTRACK_SECRET must be given explicitly.
    """
    common = CommonConfig.from_env(environ)
    if common.database_url is None:
        if common.secrets is None and (up or (common.data_dir / "secret").exists()):
            common = replace(common, secrets=Secrets(stored_secret(common.data_dir)))
        if need_db:  # `up` applies the schema itself, every start
            url = embedded_url(common.data_dir) if up else embedded_database(common.data_dir)
            common = replace(common, database_url=url)
    return common


def need_secret(settings: CommonConfig) -> str:
    """The current signing key, or a ConfigError naming PIXELTRACK_SECRET."""
    if settings.secrets is None:
        raise ConfigError("PIXELTRACK_SECRET is not set: it is the key that signs tokens")
    return settings.secrets.current


def run_db(settings: CommonConfig, work: Callable[[Any], Awaitable[int]]) -> int:
    """Open a connection, run ``work(conn)``, close."""
    assert settings.database_url
    return db.run_with_connection(settings.database_url, work)


def cmd_initdb(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Apply schema.sql (idempotent)."""
    assert settings.database_url
    asyncio.run(db.apply_schema(settings.database_url))
    print("schema applied")
    return 0


def cmd_job_create(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Create a job (with its send time, if given) and print its id."""

    async def work(conn: Any) -> int:
        async with conn.transaction():
            job_id = await jobs.create_job(conn, args.name, args.mode, args.kind)
            if args.sent_at is not None:
                await jobs.mark_sent(conn, job_id, args.sent_at)
        print(job_id)
        return 0

    return run_db(settings, work)


def cmd_job_sent(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Record a mail job's send time (now, or --at); print the job and the time."""

    async def work(conn: Any) -> int:
        sent = await jobs.mark_sent(conn, args.job, args.at)
        name = (await jobs.get_job(conn, args.job))["name"]
        print(f"job {args.job} {name!r} sent at {human_time(sent)}")
        late, hour = await jobs.rolled_clicks_since(conn, args.job, sent)
        if late:
            print(f"note: {late} click(s) received from {human_time(hour)} on were rolled up before the send "
                  "time was known; the send-time rule did not judge them", file=sys.stderr)  # fmt: skip
        return 0

    return run_db(settings, work)


def cmd_job_list(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Show the jobs."""

    async def work(conn: Any) -> int:
        rows = await jobs.list_jobs(conn)
        print(f"{'id':>6}  {'kind':<5} {'mode':<20} {'recipients':>10}  {'created':<20}  {'sent':<20}  name")
        for r in rows:
            print(f"{r['job_id']:>6}  {r['kind']:<5} {r['mode']:<20} {r['recipients']:>10}  "
                  f"{human_time(r['created_at']):<20}  {human_time(r['sent_at']):<20}  {r['name']}")
        return 0

    return run_db(settings, work)


def cmd_recipients_import(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Import a recipients CSV, all rows or none."""
    try:
        rows = jobs.parse_csv(Path(args.file).read_text(encoding="utf-8-sig"))
    except jobs.RecipientsError as exc:
        for line, message in exc.errors:
            print(f"{args.file}:{line}: {message}", file=sys.stderr)
        print(f"{exc}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 1

    async def work(conn: Any) -> int:
        added, updated = await jobs.import_recipients(conn, args.job, rows)
        print(f"imported {len(rows)} recipients into job {args.job}: {added} new, {updated} updated")
        return 0

    return run_db(settings, work)


def cmd_mint(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Print pixel, click and document URLs (one recipient, or a CSV for all)."""
    minter = Minter(need_secret(settings), args.base_url or settings.base_url)

    async def work(conn: Any) -> int:
        job = await jobs.get_job(conn, args.job)
        blind = job["mode"] == "blind"
        if args.url:
            await jobs.register_links(conn, args.job, args.url)
        # Personal tracking: clicks may name the recipient to the destination website.
        identified = await websites.identifiable(conn, args.job)
        if args.all:
            rows = [] if blind else await jobs.all_recipients(conn, args.job)
            targets = [(r["recipient_id"], r["recipient"]) for r in rows]
            print_merge_csv(minter, args, targets or [(None, "")], identified)
            return 0
        rid = None
        if args.recipient and not blind:
            rid = await jobs.recipient_id(conn, args.job, args.recipient)
        print_urls(minter, args, rid, rid in identified)
        return 0

    return run_db(settings, work)


def print_urls(minter: Minter, args: argparse.Namespace, rid: int | None, identify: bool = False) -> None:
    """One recipient's URLs, labelled (``identify``: clicks carry the contact to the website)."""
    if args.doc:
        for page in range(1, args.pages + 1):
            print(f"doc page {page}: {minter.doc_url(args.job, rid, page)}")
        return
    print(f"open: {minter.open_url(args.job, rid)}")
    for url in args.url or []:
        print(f"click {url}: {minter.click_url(args.job, rid, url, identify)}")


def print_merge_csv(minter: Minter, args: argparse.Namespace, targets: list[tuple[int | None, str]],
                    identified: set[int] | frozenset[int] = frozenset()) -> None:
    """A mail-merge CSV: recipient, open pixel, one column per tracked link (formulas neutralised)."""
    out = csvsafe.writer(sys.stdout)
    urls = args.url or []
    out.writerow(["recipient", "open_url", *[f"click_url_{i + 1}" for i in range(len(urls))]])
    for rid, recipient in targets:
        first = minter.doc_url(args.job, rid) if args.doc else minter.open_url(args.job, rid)
        identify = rid in identified
        out.writerow([recipient, first, *[minter.click_url(args.job, rid, u, identify) for u in urls]])
