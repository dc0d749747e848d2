"""Tracking modes, enforced per hit before anything is stored.

Each claimed hit gets a *track*, the mode that applies to that very event:

- ``personal``: personal jobs, and permission_personal recipients whose
  consent was in force when the hit arrived;
- ``unique``: unique jobs and everyone else in permission_personal jobs;
- ``anonymous``: counted per demographic cell, never per person;
- ``blind``: counts only (blind jobs, hits without a recipient, recipients
  erased with ``forget``);
- ``rejected``: refused tokens and unknown jobs; never an open or a click.

The track decides which columns of the raw hit survive the roll-up
(the masked address on the personal track, `stored_enrichment`) and whether a keyed hash lets repeats be recognised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pixeltrack.core import columns

PERSONAL, UNIQUE, ANONYMOUS, BLIND, REJECTED = "personal", "unique", "anonymous", "blind", "rejected"
# Tracks whose recipient has a keyed hash (repeats recognised, events linked across batches).
HASHED = frozenset((PERSONAL, UNIQUE, ANONYMOUS))
# Tracks that keep nothing per hit: their raw rows are deleted in the transaction that rolls
# them up (queries.DROP_ROLLED), not rewritten. What they count is in the report tables, the
# recipients they recognise in unique_seen by keyed hash, and the collector's tombstones
# (copied_hits) keep a replay from inserting them again.
ROWLESS = frozenset((UNIQUE, ANONYMOUS, BLIND))

# Enrichment columns a hit's track keeps, per track: on the raw row (personal and rejected hits;
# the ROWLESS tracks' rows are deleted) and in the batch profile the merges group by. Non-personal hits keep
# what describes the event but nothing that narrows it down to a person or
# a household (columns.NARROWING: city, network, ASN, ad click id); blind
# hits keep only the human/machine split.
KEPT: dict[str, frozenset[str]] = {
    PERSONAL: frozenset(columns.ENRICHED),
    UNIQUE: frozenset(columns.ENRICHED) - frozenset(columns.NARROWING),
    ANONYMOUS: frozenset(columns.ENRICHED) - frozenset(columns.NARROWING),
    BLIND: frozenset(columns.MACHINE),
    REJECTED: frozenset(columns.MACHINE),
}
# Per track, the enrichment key each enrichment column of STORED takes its
# value from: the column's own name where the track keeps it, else a key no
# enrichment has (so None), for a C-level map over each hit's dict.
_NOTHING = ""
STORED_FROM = {track: tuple(n if n in kept else _NOTHING for n in columns.ENRICHED) for track, kept in KEPT.items()}
AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))
UNKNOWN = "unknown"


class Person(NamedTuple):
    """What a batch's hits need to know of a recipient (queries.PEOPLE)."""

    consent: bool | None
    consent_changed_at: dt.datetime | None
    birth_year: int | None
    gender: str | None
    zip: str | None
    forgotten: bool


NOBODY = Person(None, None, None, None, None, False)  # no row in recipients, not forgotten


@dataclass
class Who:
    """A batch's jobs (mode, send time; absent: unknown job) and recipients, looked up once each, not per hit."""

    modes: dict[int, str | None] = field(default_factory=dict)
    sent: dict[int, dt.datetime | None] = field(default_factory=dict)
    people: dict[tuple[int, int], Person] = field(default_factory=dict)

    def person(self, hit: Mapping[str, Any]) -> Person:
        """The hit's recipient (NOBODY: none, or unknown)."""
        return self.people.get((hit["job_id"], hit["recipient_id"]), NOBODY)


def track_of(hit: Mapping[str, Any], who: Who) -> str:
    """The track of one claimed hit (``who``: its job and recipient)."""
    job, rid = hit["job_id"], hit["recipient_id"]
    mode = who.modes.get(job)
    if hit["reject_reason"] is not None or job == 0 or mode is None:
        return REJECTED
    if mode == "blind" or rid is None:
        return BLIND
    person = who.people.get((job, rid), NOBODY)  # who.person(hit), once a hit
    if person.forgotten:
        return BLIND
    if mode == "permission_personal":
        # consent in force when the hit arrived (NULL anywhere: not consenting)
        at = person.consent_changed_at
        return PERSONAL if person.consent and at is not None and at <= hit["received_at"] else UNIQUE
    return mode  # personal | unique | anonymous


def reject_reason(hit: Mapping[str, Any], who: Who) -> str | None:
    """Why a hit is not counted: the collector's reason, or an unknown job."""
    if hit["reject_reason"] is not None:
        return str(hit["reject_reason"])
    return "unknown_job" if who.modes.get(hit["job_id"]) is None else None


def age_band(birth_year: int | None, at: dt.datetime) -> str:
    """Age band at the time of the hit (bands of ten years from 25)."""
    if birth_year is None:
        return UNKNOWN
    age = at.year - birth_year
    for limit, band in AGE_BANDS:
        if age < limit:
            return band
    return "65+"


def cell_of(hit: Mapping[str, Any], person: Person) -> tuple[str, str, str]:
    """The demographic cell (age band, gender, zip) of an anonymous hit by ``person``."""
    gender = (person.gender or "").strip().lower() or UNKNOWN
    zip_code = (person.zip or "").strip().upper() or UNKNOWN
    return age_band(person.birth_year, hit["received_at"]), gender, zip_code


def recipient_hash(key: bytes, recipient_id: int) -> bytes:
    """Keyed hash of a recipient: recognisable while the job key exists, never after."""
    return recipient_hasher(key)(recipient_id)


def recipient_hasher(key: bytes) -> Callable[[int], bytes]:
    """``recipient_hash`` under one job key (the one definition of it): BLAKE2b-128 keyed with the job
    key over the id's 8 big-endian signed bytes; the keyed state is made once and copied per
    recipient (a third cheaper than keying a new hash each time)."""
    keyed = hashlib.blake2b(key=key, digest_size=16)

    def rhash(recipient_id: int) -> bytes:
        state = keyed.copy()
        state.update(recipient_id.to_bytes(8, "big", signed=True))
        return state.digest()

    return rhash


def stored_enrichment(track: str, enriched: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of columns.ENRICHED as the track allows (None for what it may not keep)."""
    return tuple(map(enriched.get, STORED_FROM[track]))
