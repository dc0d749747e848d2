"""The column sets of raw_hits, named once and imported everywhere.

A column named in one list but missing from another used to become a column
that is silently always NULL (or, for the scrub rule, a privacy bug). Every
list of raw_hits columns in the code is one of these tuples or is built from
them at import time; tests/core/test_columns.py checks them against the
table PostgreSQL really has.

- ``RAW``: what the collector COPYs into raw_hits (``collector.rows.COLUMNS``):
  ``HIT`` for every hit, then ``PAGE_VIEW`` for the page views of websites;
- ``ENRICHED``: filled by the aggregator's enrichment when a hit is rolled up;
- ``RAW_HITS``: every column of raw_hits, in table order;
- ``NARROWING``: enrichment that narrows a hit down to a household or a
  person (kept only for personal tracking);
- ``PERSONAL``: what identifies or narrows down a person; erasure
  (``forget``) and retention set exactly these to NULL;
- ``TYPES``: the SQL type of each raw_hits column (batch tables use it).

The SQL helpers only join these constant names; no value is ever formatted
into SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HIT = (
    "hit_id", "received_at", "kind", "job_id", "recipient_id", "link", "page", "client_ip",
    "user_agent", "referer", "accept_language", "method", "prefetch", "reject_reason",
)  # fmt: skip
PAGE_VIEW = ("url", "title", "visitor_id", "screen", "contact")
RAW = (*HIT, *PAGE_VIEW)

CLIENT = ("device_class", "browser", "browser_version", "os", "os_version", "mail_client", "traffic", "machine_reason")
PLACE = ("country", "region", "city", "asn", "network")
SOURCE = (
    "source_class", "source_name", "search_phrase", "utm_source", "utm_medium", "utm_campaign",
    "utm_term", "utm_content", "click_id",
)  # fmt: skip
# The order the enricher returns them in (and raw_hits holds them in).
ENRICHED = (*CLIENT, *PLACE, "language", *SOURCE)
ROLLED = "rolled_at"
RAW_HITS = (*HIT, ROLLED, *ENRICHED, *PAGE_VIEW)  # table order: page views came later

MACHINE = ("traffic", "machine_reason")  # what even blind and rejected hits keep
NARROWING = ("region", "city", "asn", "network", "click_id")
# Headers as the client sent them: kept only on personal hits.
HEADERS = ("user_agent", "referer", "accept_language")
PERSONAL = ("recipient_id", "client_ip", *HEADERS, *NARROWING, "visitor_id", "screen", "contact")

TYPES: Mapping[str, str] = {
    "hit_id": "uuid", "received_at": "timestamptz", "kind": "text", "job_id": "bigint",
    "recipient_id": "bigint", "link": "text", "page": "integer", "client_ip": "inet",
    "user_agent": "text", "referer": "text", "accept_language": "text", "method": "text",
    "prefetch": "boolean", "reject_reason": "text", ROLLED: "timestamptz", "asn": "bigint",
    **{name: "text" for name in (*PAGE_VIEW, *ENRICHED) if name != "asn"},
}  # fmt: skip


def listed(names: Iterable[str], **expressions: str) -> str:
    """``a, b, c`` for SQL; a name given in ``expressions`` becomes ``expression AS name``."""
    return ", ".join(f"{expressions[n]} AS {n}" if n in expressions else n for n in names)


def typed(names: Iterable[str], extra: Mapping[str, str] | None = None) -> str:
    """``a uuid, b text`` for a CREATE TABLE: raw_hits types, or ``extra`` for other columns."""
    types = {**TYPES, **(extra or {})}
    return ", ".join(f"{n} {types[n]}" for n in names)


def assigned(names: Iterable[str], source: str) -> str:
    """``a = s.a, b = s.b`` for an UPDATE ... FROM ``source``."""
    return ", ".join(f"{n} = {source}.{n}" for n in names)


def nulled(names: Iterable[str]) -> str:
    """``a = NULL, b = NULL`` for an UPDATE."""
    return ", ".join(f"{n} = NULL" for n in names)
