"""Batch rows from the enricher's cached parts: the rows and profiles of the plain enrichment rows."""

from __future__ import annotations

import hashlib
from typing import Any

from aggregator.enrich import EnrichConfig, Enricher
from aggregator.enrich.run import merged, whole
from aggregator.mail import tracks as modes
from aggregator.mail.rows import BATCH_COLUMNS, BatchBuilder
from tests.aggregator.enrich.reference import enrich as oracle
from tests.aggregator.enrich.test_cache import mix

TRACKS = (modes.PERSONAL, modes.UNIQUE, modes.ANONYMOUS, modes.BLIND, modes.REJECTED)


def claimed(count: int, seed: int) -> list[dict[str, Any]]:
    """Hits of the enrichment mix with what a claim joins to them (no job keys: hashes stay None)."""
    return [
        {**hit, "reject_reason": None, "mode": "unique", "birth_year": None, "gender": None, "zip": None}
        for hit in mix(count, seed)
    ]


def test_parts_merge_to_the_reference_rows() -> None:
    """Each hit's parts, merged, are the oracle's row, key order included (flagged clicks too)."""
    hits = claimed(1500, 7)
    sent_at = {1: hits[0]["received_at"], 2: None, 3: hits[10]["received_at"]}
    rows = [merged(parts) for parts in Enricher(EnrichConfig()).parts(hits, sent_at)]
    expected = oracle(EnrichConfig(), hits, sent_at)
    assert [list(row.items()) for row in rows] == [list(row.items()) for row in expected]
    assert sum(row["machine_family"] == "link-check behaviour" for row in rows) > 0


def test_profiles_by_part_identity_are_the_profiles_by_value() -> None:
    """Numbered by (track, part identities), profiles and batch rows equal those numbered by values."""
    hits = claimed(3000, 11)
    tracks = [TRACKS[n % len(TRACKS)] for n in range(len(hits))]
    parts = Enricher(EnrichConfig()).parts(hits, {})
    by_parts, by_values = BatchBuilder({}), BatchBuilder({})
    rows = by_parts.rows(hits, parts, tracks)
    plain = by_values.rows(hits, [whole(merged(each)) for each in parts], tracks)
    assert rows == plain
    assert by_parts.profile_rows() == by_values.profile_rows()
    numbers = {row[BATCH_COLUMNS.index("profile")] for row in rows}
    assert numbers == set(range(len(by_parts.profile_rows())))
    # fewer distinct (track, parts) than hits (a deliberately varied mix): merged and reduced once per combination
    assert len(by_parts._known) < len(hits) * 0.6
    assert len(by_values._known) == len(hits)


def test_recipient_hasher_gives_the_keyed_hash() -> None:
    """The per-job hasher (keyed state copied per recipient) gives the stored hash: BLAKE2b-128 keyed with
    the job key over the id's 8 big-endian signed bytes, for any id, under each key, as recipient_hash does."""
    for key in (b"\x00" * 32, bytes(range(32))):
        rhash = modes.recipient_hasher(key)
        for rid in (0, 1, -1, 42, 2**63 - 1, -(2**63)):
            expected = hashlib.blake2b(rid.to_bytes(8, "big", signed=True), key=key, digest_size=16).digest()
            assert rhash(rid) == expected
            assert modes.recipient_hash(key, rid) == expected
    assert modes.recipient_hasher(b"\x00" * 32)(7) != modes.recipient_hasher(bytes(range(32)))(7)
