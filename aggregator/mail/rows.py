"""Turns claimed hits into rows of the rollup_batch and rollup_profile tables.

Pure Python, no I/O: enrichment parts (aggregator.enrich.run.Parts) and job keys come in, one tuple per
hit comes out in queries.BATCH_COLUMNS order, already reduced to what the hit's track may keep;
the enrichment it keeps is numbered once per distinct profile (queries.PROFILE_COLUMNS). A hit's
profile is looked up by its track and the identities of its parts; only a new combination is
merged and reduced to its values (``tracks.stored_enrichment``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.enrich.run import Parts, merged
from aggregator.figures import figure
from aggregator.mail import tracks as modes
from aggregator.mail.queries import BATCH_COLUMNS, PROFILE_COLUMNS
from pixeltrack.core.tokens import link_id_for

__all__ = ["BATCH_COLUMNS", "PROFILE_COLUMNS", "BatchBuilder"]


NO_CELL = (None, None, None)
_UNSEEN = b""  # no recipient hash worked out yet (None: the job key is destroyed)
# What a hit's track and parts decide of its row: profile number, machine, unknown, machine family.
Described = tuple[int, bool, bool, str | None]


class BatchBuilder:
    """Builds one batch's rows; caches link ids and recipient hashes, numbers the profiles."""

    def __init__(self, keys: Mapping[int, bytes | None], who: modes.Who | None = None) -> None:
        self.keys = keys
        self.who = who if who is not None else modes.Who()
        self._links: dict[str, int] = {}
        self._hashes: dict[tuple[int, int], bytes | None] = {}
        self._hashers = {job: modes.recipient_hasher(key) for job, key in keys.items() if key is not None}
        self._profiles: dict[tuple[Any, ...], int] = {}
        # By (track, part identities); the parts are held so that no identity is reused.
        self._known: dict[tuple[Any, ...], Described] = {}
        self._held: list[Parts] = []

    def link_id(self, url: str | None) -> int | None:
        """Stable id of a clicked URL."""
        if url is None:
            return None
        found = self._links.get(url)
        if found is None:
            found = self._links[url] = link_id_for(url)
        return found

    def rhash(self, job_id: int, recipient_id: int) -> bytes | None:
        """Keyed hash of a recipient, None once the job key is destroyed."""
        found = self._hashes.get(cache_key := (job_id, recipient_id), _UNSEEN)
        if found is _UNSEEN:
            hasher = self._hashers.get(job_id)
            found = self._hashes[cache_key] = None if hasher is None else hasher(recipient_id)
        return found

    def describe(self, track: str, parts: Parts) -> Described:
        """Profile number (the enrichment the hit keeps on its track, tracks.stored_enrichment) and figures."""
        client, geo, lang, source, _ = parts
        key = (track, id(client), id(geo), lang, id(source))
        found = self._known.get(key)
        if found is None:
            values = modes.stored_enrichment(track, merged(parts))
            number = self._profiles.get(values)
            if number is None:
                number = self._profiles[values] = len(self._profiles)
            machine, unknown = figure(client)
            found = self._known[key] = (number, machine, unknown, client.get("machine_family") if machine else None)
            self._held.append(parts)
        return found

    def profile_rows(self) -> list[tuple[Any, ...]]:
        """The rollup_profile rows of the profiles numbered so far."""
        return [(number, *values) for values, number in self._profiles.items()]

    def row(self, hit: Mapping[str, Any], parts: Parts, track: str) -> tuple[Any, ...]:
        """The batch row of one hit on ``track`` (tracks.track_of)."""
        client, geo, lang, source, masked = parts
        found = self._known.get((track, id(client), id(geo), lang, id(source)))  # describe's usual case, inline
        number, machine, unknown, family = self.describe(track, parts) if found is None else found
        job, rid, kind = hit["job_id"], hit["recipient_id"], hit["kind"]
        if track == modes.PERSONAL:  # the most common track first: its row keeps the most
            link = hit["link"] if kind == "click" else None
            return (
                hit["hit_id"], hit["received_at"], job, kind, track, machine, unknown, family, rid,
                self.rhash(job, rid), None if link is None else self.link_id(link), link, None, *NO_CELL,
                number, masked,  # personal hits keep the masked address, never the full one
            )  # fmt: skip
        link = hit["link"] if kind == "click" and track != modes.REJECTED else None
        return (
            hit["hit_id"], hit["received_at"], job, kind, track, machine, unknown,
            family, None,
            self.rhash(job, rid) if track in modes.HASHED else None, None if link is None else self.link_id(link), link,
            modes.reject_reason(hit, self.who) if track == modes.REJECTED else None,
            *(modes.cell_of(hit, self.who.person(hit)) if track == modes.ANONYMOUS else NO_CELL),
            number, None,
        )  # fmt: skip

    def rows(self, hits: Sequence[Mapping[str, Any]], parts: Sequence[Parts], tracks: Sequence[str]) -> list[tuple]:
        """Batch rows of all hits, in order (``parts``: each hit's enrichment, ``tracks``: its track)."""
        row = self.row
        return [row(hit, each, track) for hit, each, track in zip(hits, parts, tracks, strict=True)]
