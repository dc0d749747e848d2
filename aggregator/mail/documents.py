"""The report's documents section: per page views, readers, how far they got, reading seconds.

Read from what the roll-up merged (aggregator/mail/reading.py): doc_pages,
doc_page_seconds (medians without identities) and, for personal tracking,
doc_reader_pages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

PAGES = """
SELECT page, views, preloaded, readers, seconds, timed,
       sum(furthest) OVER (ORDER BY page DESC)::bigint AS reached
FROM doc_pages WHERE job_id = $1 ORDER BY page
"""
HISTOGRAM = "SELECT page, seconds, views FROM doc_page_seconds WHERE job_id = $1 AND views > 0 ORDER BY page, seconds"
READERS = """
SELECT d.recipient_id, r.recipient, d.page, d.views, d.seconds
FROM doc_reader_pages d
LEFT JOIN recipients r ON r.job_id = d.job_id AND r.recipient_id = d.recipient_id
WHERE d.job_id = $1 ORDER BY d.recipient_id, d.page
"""


def median(counts: Sequence[tuple[int, int]]) -> float | None:
    """Median of a histogram given as (value, count) pairs in value order."""
    total = sum(n for _, n in counts)
    if not total:
        return None
    values = []
    for rank in ((total - 1) // 2, total // 2):
        seen = 0
        for value, n in counts:
            seen += n
            if rank < seen:
                values.append(value)
                break
    return (values[0] + values[1]) / 2


def reader_entries(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per reader (personal tracking): seconds in all, furthest page, and each page's views and seconds."""
    readers: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = readers.setdefault(r["recipient_id"], {
            "recipient_id": r["recipient_id"], "recipient": r["recipient"], "total_seconds": 0.0,
            "furthest_page": 0, "pages": []})  # fmt: skip
        entry["pages"].append({"page": r["page"], "views": r["views"], "seconds": round(r["seconds"], 1)})
        entry["total_seconds"] = round(entry["total_seconds"] + r["seconds"], 1)
        if r["views"] > 0:
            entry["furthest_page"] = max(entry["furthest_page"], r["page"])
    return list(readers.values())


async def documents_section(conn: asyncpg.Connection, job_id: int, mode: str) -> dict[str, Any] | None:
    """The report's ``documents``: per page views, readers, reached, median and total seconds; None without any."""
    rows = await conn.fetch(PAGES, job_id)
    if not rows:
        return None
    blind = mode == "blind"
    hist: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for h in await conn.fetch(HISTOGRAM, job_id):
        hist[h["page"]].append((h["seconds"], h["views"]))
    pages = [
        {"page": r["page"], "views": r["views"], "preloaded": r["preloaded"],
         "unique_readers": None if blind else r["readers"], "reached": None if blind else r["reached"],
         "median_seconds": None if blind else median(hist[r["page"]]),
         "total_seconds": None if blind else round(r["seconds"], 1), "timed_views": None if blind else r["timed"]}
        for r in rows
    ]  # fmt: skip
    section: dict[str, Any] = {"pages": pages}
    if mode in ("personal", "permission_personal"):
        section["readers"] = reader_entries(await conn.fetch(READERS, job_id))
    return section
