"""Setting up a realistic campaign: jobs in every tracking mode, recipients, links.

Everything goes into a database the load test owns: a throwaway one made on
the server of DATABASE_URL (or the embedded pgserver) by
``loadtest.support.create_database``, dropped afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pixeltrack.core import db, jobs

# (mode, share of the recipients); a blind job has no recipients at all.
JOB_MODES = (("personal", 0.35), ("permission_personal", 0.25), ("anonymous", 0.2), ("unique", 0.2),
             ("blind", 0.0))
LINKS = (
    "https://shop.example.com/spring-sale?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "https://shop.example.com/products/linen-shirt-blue?utm_source=newsletter&utm_medium=email",
    "https://www.example.org/blog/2024/how-we-make-our-shirts",
    "https://shop.example.com/account/preferences",
    "https://example.com/unsubscribe?list=weekly",
)
GENDERS = ("f", "m", "d", None)
ZIPS = ("10115", "20095", "50667", "60311", "80331", "01067", "04109", "70173", "90402", None)


@dataclass(frozen=True)
class Job:
    """One job of the campaign and what its tokens may carry."""

    job_id: int
    mode: str
    recipients: int  # recipient ids are 0 .. recipients - 1; 0 for blind jobs
    links: tuple[str, ...]


@dataclass(frozen=True)
class Campaign:
    """The jobs made for one load-test run."""

    jobs: tuple[Job, ...]

    @property
    def job_ids(self) -> list[int]:
        """Ids of every job of the run."""
        return [j.job_id for j in self.jobs]

    @property
    def recipients(self) -> int:
        """Recipients over all jobs."""
        return sum(j.recipients for j in self.jobs)


def server_url(configured: str | None, data_dir: Path = Path(".pixeltrack")) -> str:
    """The server to make throwaway databases on: DATABASE_URL's, or the embedded one."""
    if configured:
        return configured
    from pixeltrack.core.embedded import embedded_url

    return embedded_url(data_dir)


def _recipient_rows(job_id: int, count: int, rng: random.Random) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for rid in range(count):
        year = rng.randint(1950, 2006) if rng.random() < 0.8 else None
        rows.append((job_id, rid, f"r{rid}.j{job_id}@mail.example.net", rng.random() < 0.6, year,
                     rng.choice(GENDERS), rng.choice(ZIPS)))
    return rows


async def setup(url: str, recipients: int = 20_000, seed: int = 7, sets: int = 1) -> Campaign:
    """Make one job per tracking mode, ``recipients`` recipients in all, and their links.

    ``sets``: that many jobs of each mode, the recipients shared out among them
    (a database serving many campaigns at once: a roll-up batch then holds many jobs).

    Recipients are written with COPY (the CSV import path checks row by row
    and would make set-up dominate a short run); ids are numbered from 0 as
    the import numbers them.
    """
    rng = random.Random(seed)
    conn = await db.connect(url)
    made = []
    try:
        for mode, share in (m for _ in range(sets) for m in JOB_MODES):
            job_id = await jobs.create_job(conn, f"loadtest {mode}", mode)
            count = int(recipients * share / sets)
            if count:
                await conn.copy_records_to_table(
                    "recipients", records=_recipient_rows(job_id, count, rng),
                    columns=("job_id", "recipient_id", "recipient", "consent", "birth_year", "gender", "zip"))
            links = tuple(rng.sample(LINKS, 3 if mode != "blind" else 2))
            await jobs.register_links(conn, job_id, list(links))
            made.append(Job(job_id, mode, count, links))
    finally:
        await conn.close()
    return Campaign(tuple(made))
