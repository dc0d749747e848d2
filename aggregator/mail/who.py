"""Who a roll-up batch is about: its jobs (mode, send time), their recipients and the jobs' hash keys.

Looked up once a batch, whichever engine builds it (rollup.py hit by hit,
frames.py on columns): a job's recipients in one statement, named by the job
(on Citus, one shard answers).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping

import asyncpg

from aggregator.mail import queries
from aggregator.mail import tracks as modes


async def job_keys(conn: asyncpg.Connection, job_ids: set[int]) -> dict[int, bytes | None]:
    """Hash keys of the jobs, made on first use; None where destroyed."""
    if not job_ids:
        return {}
    ids = sorted(job_ids)
    keys = {r["job_id"]: r["key"] for r in await conn.fetch(queries.JOB_KEYS, ids)}
    missing = [j for j in ids if j not in keys]
    if missing:
        await conn.execute(queries.NEW_JOB_KEYS, missing, [secrets.token_bytes(32) for _ in missing])
        keys = {r["job_id"]: r["key"] for r in await conn.fetch(queries.JOB_KEYS, ids)}
    return keys


async def lookup(conn: asyncpg.Connection, recipients: Mapping[int, Collection[int]]) -> modes.Who:
    """The jobs of a batch and, by job, the recipients its hits name (every job of the batch, with or without)."""
    job_ids = sorted(recipients)
    who = modes.Who(sent=dict.fromkeys(job_ids))
    for r in await conn.fetch(queries.JOBS, job_ids):
        who.modes[r["job_id"]], who.sent[r["job_id"]] = r["mode"], r["sent_at"]
    people = who.people
    for job, ids in sorted(recipients.items()):
        mode = who.modes.get(job)
        if mode is None or mode == "blind" or not ids:  # rejected or blind whoever the recipient is; no recipient
            continue
        sql = queries.PEOPLE if mode in queries.PERSON_MODES else queries.FORGOTTEN
        for r in await conn.fetch(sql, job, sorted(ids)):
            key = (job, r["recipient_id"])
            if not people.get(key, modes.NOBODY).forgotten:  # forgotten, whatever recipients still holds
                people[key] = modes.Person(*tuple(r)[1:])
    return who
