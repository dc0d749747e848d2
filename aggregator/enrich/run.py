"""One ``enrich`` call: each distinct value is worked out once.

Each input decides its share of the row once per run: an agent its client
columns (per machine reason and family), an address its geo columns, masked address and network
tests, an Accept-Language its language, a (kind, URL, referrer) its source
columns. A hit's row is then a merge of those parts (``Parts``: the mail
roll-up keeps them apart and knows a hit's profile by their identities; equal
parts are one object within a run). The behavioural rules
(burst, no open, send time) only ever flag clicks, so only clicks are kept
for them, and flagged rows get the scanner's client part afterwards. The
roll-up passes a ``Context``: what it knows of the batch's recipients
beyond the batch (machine.Outside).

Agents and addresses are kept by the enricher across calls: a roll-up's
batches see the same mail proxies and the same recipients' networks again
and again (an address cost 4 to 6 us to place, mask and test, and a batch of
the cost benchmark's mix held 18,000 distinct ones). The other tables live
for one call. Every table is cleared once it holds ``LIMIT`` entries, so
neither a huge call nor a long-running aggregator grows it without bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from socket import AF_INET6, inet_ntop
from typing import TYPE_CHECKING, Any

from aggregator.enrich.client import Client
from aggregator.enrich.geo import Address, mask_ip, parse_ip
from aggregator.enrich.machine import (
    BEHAVIOUR,
    Click,
    Context,
    hit_reason,
    in_masks,
    link_key,
    machine_family,
    network_masks,
    scanner_click_indexes,
)
from aggregator.enrich.text import language
from pixeltrack.core.addresses import parse_in_c

if TYPE_CHECKING:
    from aggregator.enrich.enricher import Enricher

LIMIT = 65_536
GEO_KEYS = ("country", "region", "city", "asn", "network")
# What one address contributes: geo columns, masked address, in Apple's relay, in a scanner network.
Spot = tuple[dict[str, Any], str | None, bool, bool]
# One agent: its client, its client columns (not a machine: key None, or per
# (machine reason, family)) and its verdicts: (machine reason, client columns)
# per (kind, prefetch, address in Apple's relay, in a scanner network).
Agent = tuple[
    Client,
    dict[tuple[str, str | None] | None, dict[str, Any]],
    dict[tuple[object, bool, bool, bool], tuple[str | None, dict[str, Any]]],
]
# A hit's enrichment as the cached parts it merges: client part, geo columns,
# language, source columns, masked address (``merged`` makes the row).
Parts = tuple[dict[str, Any], dict[str, Any], str | None, dict[str, Any], str | None]
Opened = defaultdict[tuple[Any, Any], list[datetime | None]]  # open times per (job_id, recipient_id)
NOWHERE_SPOT: Spot = (dict.fromkeys(GEO_KEYS), None, False, False)
_UNSEEN: Any = object()  # a language not looked up yet (None is a language's value)


def remember(table: dict[Any, Any], key: object, value: Any) -> Any:
    """Store ``value`` under ``key``, emptying ``table`` first when it is full."""
    if len(table) >= LIMIT:
        table.clear()
    table[key] = value
    return value


def merged(parts: Parts) -> dict[str, Any]:
    """The enrichment row of a hit's parts (enricher.OUTPUT_KEYS order)."""
    client, geo, lang, source, masked = parts
    return {**client, **geo, "language": lang, **source, "client_ip_masked": masked}


def whole(row: dict[str, Any]) -> Parts:
    """An enrichment row taken as one part (enrichers that give rows only): ``merged`` gives its values back."""
    return row, {}, row.get("language"), {}, row.get("client_ip_masked")


def mask_v4(address: IPv4Address, prefix: int) -> str:
    """``mask_ip`` for a plain IPv4 address, with integer arithmetic."""
    n = int(address) & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def mask_v6(address: IPv6Address, prefix: int) -> str:
    """``mask_ip`` for an IPv6 address (not IPv4-mapped) cut to ``prefix`` <= 96 bits, in C.

    ``inet_ntop`` writes what ``str`` of ``ipaddress`` does (lower case, no
    leading zeros, the first longest run of two or more zero groups as
    "::") except for the two forms with an IPv4 tail, "::a.b.c.d" and
    "::ffff:a.b.c.d": neither can come out of a cut to 96 bits or fewer (the
    last two groups are zero) of an address that is not IPv4-mapped.
    """
    number = int(address) & ~((1 << (128 - prefix)) - 1)
    return inet_ntop(AF_INET6, number.to_bytes(16, "big"))


def parse_text(raw: str) -> tuple[Address | None, str | None]:
    """``parse_ip`` of a str, and the address's canonical text when at hand (in C where C agrees:
    ``pixeltrack.core.addresses``; anything else goes the reference way)."""
    if len(raw) <= 64 and raw.isprintable() and (found := parse_in_c(raw)) is not None:
        return found
    return parse_ip(raw), None


class Run:
    """The tables of one cached ``enrich`` call."""

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        self.config = enricher.config
        self.agents: dict[object, Agent] = enricher.agents
        self.spots: dict[object, Spot] = enricher.spots
        self.places: dict[tuple[Any, ...], dict[str, Any]] = enricher.places  # geo columns by what the look-up found
        self.languages: dict[object, str | None] = {}
        self.links: dict[str, int | None] = {}
        self.sources: dict[tuple[object, ...], dict[str, Any]] = {}
        self.common: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        self.apple = network_masks(self.config.apple_networks)
        self.scanner = network_masks(self.config.scanner_networks)

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[Any, datetime | None], context: Context | None = None
    ) -> list[dict[str, Any]]:
        """One output dict per input hit, same order."""
        return [merged(parts) for parts in self.parts(hits, sent_at, context)]

    def parts(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[Any, datetime | None], context: Context | None = None
    ) -> list[Parts]:
        """The parts of each input hit, same order."""
        rows: list[Parts] = []
        clicks: list[Click] = []
        opened: Opened = defaultdict(list)
        for index, hit in enumerate(hits):
            rows.append(self.row(index, hit, clicks, opened))
        for click in scanner_click_indexes(clicks, opened, sent_at, self.config, context):
            if click.reason is None:
                flagged = self.client_part(click.agent, "scanner", BEHAVIOUR)  # type: ignore[arg-type]
                rows[click.position] = (flagged, *rows[click.position][1:])  # type: ignore[assignment]
        return rows

    def row(self, index: int, hit: Mapping[str, Any], clicks: list[Click], opened: Opened) -> Parts:
        """The parts of one hit; a click is noted for the behavioural rules.

        The usual case (text values seen before in the run) is looked up here; the methods
        named after each part take the rest (a call each cost a fifth of a hit's enrichment).
        """
        get = hit.get
        text = get("user_agent")
        if type(text) is not str or (agent := self.agents.get(text)) is None:
            agent = self.agent(text)
        text = get("client_ip")
        if type(text) is not str or (spot := self.spots.get(text)) is None:
            spot = self.spot(text)
        geo, masked, apple, scanner = spot
        kind = get("kind")
        if type(kind) is not str or (found := agent[2].get((kind, get("prefetch") is True, apple, scanner))) is None:
            found = self.verdict(agent, hit, kind, apple, scanner)
        reason, client = found
        text = get("accept_language")
        if type(text) is not str or (lang := self.languages.get(text, _UNSEEN)) is _UNSEEN:
            lang = self.language(text)
        if kind == "click":
            clicks.append(self.click(index, hit, agent, reason, lang))
        elif kind == "open" and (recipient := get("recipient_id")) is not None:
            at = get("received_at")
            opened[(get("job_id"), recipient)].append(at if isinstance(at, datetime) else None)
        try:
            source = self.sources.get((kind, get("url"), get("link"), get("referer")))
        except TypeError:  # an unhashable part
            source = None
        return client, geo, lang, self.source(hit, kind) if source is None else source, masked

    def verdict(
        self, agent: Agent, hit: Mapping[str, Any], kind: object, apple: bool, scanner: bool
    ) -> tuple[str | None, dict[str, Any]]:
        """Machine reason and client part of a hit by ``agent``, once per (kind, prefetch, address tests)."""
        key = (kind, hit.get("prefetch") is True, apple, scanner)
        cached = kind is None or type(kind) is str
        found = agent[2].get(key) if cached else None
        if found is None:
            reason = hit_reason(hit, agent[0], apple, scanner)
            family = None if reason is None else machine_family(agent[0], reason, kind, scanner)
            found = (reason, self.client_part(agent, reason, family))
            if cached:
                remember(agent[2], key, found)
        return found

    def shared(self, part: dict[str, Any]) -> dict[str, Any]:
        """One object for equal parts within the run, so that a hit's parts are known by identity."""
        try:
            found = self.common.get(key := tuple(part.items()))
        except TypeError:  # an unhashable value
            return part
        return remember(self.common, key, part) if found is None else found

    def click(self, index: int, hit: Mapping[str, Any], agent: Agent, reason: str | None, lang: str | None) -> Click:
        """What the behavioural rules need from one click."""
        at = hit.get("received_at")
        link = hit.get("link")
        key = self.links.get(link) if type(link) is str else None
        if key is None:
            key = link_key(link)
            if type(link) is str:
                remember(self.links, link, key)
        # Positional: a named tuple made with keywords takes twice as long.
        return Click(index, hit.get("job_id"), hit.get("recipient_id"), key, at if isinstance(at, datetime) else None,
                     not agent[0].browser_like or lang is None, agent, reason)  # fmt: skip

    def agent(self, user_agent: object) -> Agent:
        """Parsed agent, once per distinct text (other types are not cached)."""
        if type(user_agent) is str and (known := self.agents.get(user_agent)) is not None:
            return known  # the usual case first
        if not (user_agent is None or isinstance(user_agent, str | bytes)):
            return self.enricher.parse_agent(user_agent), {}, {}
        found = self.agents.get(user_agent)
        if found is None:
            found = remember(self.agents, user_agent, (self.enricher.parse_agent(user_agent), {}, {}))
        return found

    def client_part(self, agent: Agent, reason: str | None, family: str | None) -> dict[str, Any]:
        """Client columns, traffic, machine reason and family of an agent under ``reason``."""
        client, parts, _ = agent
        key = None if reason is None else (reason, family)
        found = parts.get(key)
        if found is None:
            found = parts[key] = self.shared(self.enricher.client_columns(client, reason, family))
        return found

    def spot(self, raw: object) -> Spot:
        """Geo columns, masked address and network tests, once per distinct address value."""
        if type(raw) is str and (known := self.spots.get(raw)) is not None:
            return known  # the usual case first
        if not (raw is None or isinstance(raw, str | IPv4Address | IPv6Address)):
            return self.locate(parse_ip(raw))
        found = self.spots.get(raw)
        if found is None:
            found = remember(
                self.spots, raw, self.locate(*parse_text(raw)) if type(raw) is str else self.locate(parse_ip(raw))
            )
        return found

    def locate(self, address: Address | None, text: str | None = None) -> Spot:
        """What one parsed address contributes to a row (``text``: its canonical str, if known)."""
        if address is None:
            return NOWHERE_SPOT
        place = self.enricher.geo.place(address, text)
        columns = self.places.get(place)
        if columns is None:
            if len(self.places) >= LIMIT:  # the spots name the places' dicts: one object a place, in every call
                self.spots.clear()
            columns = remember(self.places, place, self.shared(dict(zip(GEO_KEYS, place, strict=True))))
        masked: str | None
        if type(address) is IPv4Address:
            masked = mask_v4(address, self.config.ipv4_prefix)
        elif type(address) is IPv6Address and self.config.ipv6_prefix <= 96:
            masked = mask_v6(address, self.config.ipv6_prefix)
        else:
            masked = mask_ip(address, self.config.ipv4_prefix, self.config.ipv6_prefix)
        return columns, masked, in_masks(address, self.apple), in_masks(address, self.scanner)

    def language(self, header: object) -> str | None:
        """Primary language, once per distinct header text."""
        if type(header) is str and header in self.languages:
            return self.languages[header]  # the usual case first
        if not (header is None or isinstance(header, str)):
            return language(header)
        if header in self.languages:
            return self.languages[header]
        return remember(self.languages, header, language(header))

    def source(self, hit: Mapping[str, Any], kind: object) -> dict[str, Any]:
        """Source columns, once per distinct (kind, landing URL, referrer)."""
        get = hit.get
        key = (kind, get("url"), get("link"), get("referer"))
        # Types are checked on a miss only: a key found equals a stored all-text key.
        try:
            found = self.sources.get(key)
        except TypeError:  # an unhashable part
            found = None
        if found is None:
            found = self.shared(self.enricher.source_columns(hit))
            if all(part is None or type(part) is str for part in key):
                remember(self.sources, key, found)
        return found
