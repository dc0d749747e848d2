"""The plain enrichment path, kept as a test oracle: every step for every hit.

Production has one path (``aggregator.enrich.run.Run``, each distinct value
worked out once). This one does the same work the obvious way, hit by hit and
with ``ipaddress`` membership tests, so tests and ``loadtest.bench_enrich``
can check that the cached path gives exactly these rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aggregator.enrich import EnrichConfig, Enricher
from aggregator.enrich.client import Client
from aggregator.enrich.geo import NOWHERE, Address, Geo, mask_ip, parse_ip
from aggregator.enrich.machine import BEHAVIOUR, burst_clicks, hit_reason, machine_family
from aggregator.enrich.text import clean, language

Place = tuple[Geo, str | None]


@dataclass(frozen=True, slots=True)
class Event:
    """The parts of a hit the behavioural rules look at."""

    kind: str | None
    job_id: Any
    recipient_id: Any
    link: str | None
    at: datetime | None
    client: Client
    has_language: bool


def in_networks(address: Address | None, networks: Sequence[Any]) -> bool:
    """True when ``address`` lies in one of ``networks`` (same family only)."""
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def lacks_browser(event: Event) -> bool:
    """No sign of a person's browser: no known browser, or no Accept-Language."""
    return not event.client.browser_like or not event.has_language


def send_seconds(event: Event, sent_at: Mapping[Any, datetime | None]) -> float | None:
    """Seconds between the job's send time and this event, when both are known."""
    sent = sent_at.get(event.job_id)
    if sent is None or event.at is None:
        return None
    try:
        return (event.at - sent).total_seconds()
    except TypeError:  # naive against aware: cannot be told
        return None


def scanner_clicks(events: Sequence[Event], sent_at: Mapping[Any, datetime | None], config: EnrichConfig) -> set[int]:
    """Indexes of clicks the behavioural rules put down to a link scanner."""
    flagged: set[int] = set()
    groups: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        if event.recipient_id is not None:
            groups[(event.job_id, event.recipient_id)].append(index)
        seconds = send_seconds(event, sent_at) if event.kind == "click" else None
        if seconds is not None and 0 <= seconds <= config.scanner_send_seconds:
            flagged.add(index)
    for members in groups.values():
        flagged |= group_scanner_clicks(events, members, config)
    return flagged


def group_scanner_clicks(events: Sequence[Event], members: list[int], config: EnrichConfig) -> set[int]:
    """Scanner clicks among one recipient's events."""
    try:
        clicks = sorted(
            (at, i, events[i].link)
            for i in members
            if events[i].kind == "click" and isinstance(at := events[i].at, datetime)
        )
        flagged = burst_clicks(clicks, config.scanner_burst_seconds, config.scanner_burst_links)
    except TypeError:  # naive and aware times mixed: no burst can be told
        flagged = set()
    opens = [events[i].at for i in members if events[i].kind == "open"]
    flagged.update(
        i for i in members
        if events[i].kind == "click" and lacks_browser(events[i]) and not any(
            open_counts(at, events[i].at, config.scanner_open_ahead) for at in opens)
    )  # fmt: skip
    return flagged


def open_counts(opened: datetime | None, clicked: datetime | None, ahead: float) -> bool:
    """An open clears a click when it came no later than ``ahead`` seconds after it (unknown times: it does)."""
    if opened is None or clicked is None:
        return True
    try:
        return opened <= clicked + timedelta(seconds=ahead)
    except TypeError:  # naive against aware
        return True


def event(hit: Mapping[str, Any], client: Client) -> Event:
    """What the behavioural rules need from one hit."""
    at = hit.get("received_at")
    return Event(
        kind=hit.get("kind"),
        job_id=hit.get("job_id"),
        recipient_id=hit.get("recipient_id"),
        link=clean(hit.get("link")),
        at=at if isinstance(at, datetime) else None,
        client=client,
        has_language=language(hit.get("accept_language")) is not None,
    )


def place(enricher: Enricher, address: Address | None) -> Place:
    """Geo answer and masked address."""
    if address is None:
        return NOWHERE, None
    config = enricher.config
    return enricher.geo.lookup(address), mask_ip(address, config.ipv4_prefix, config.ipv6_prefix)


def row(enricher: Enricher, hit: Mapping[str, Any], client: Client, reason: str | None, family: str | None,
        where: Place) -> dict[str, Any]:  # fmt: skip
    """The output columns of one hit."""
    geo, masked = where
    return {
        **enricher.client_columns(client, reason, family),
        "country": geo.country,
        "region": geo.region,
        "city": geo.city,
        "asn": geo.asn,
        "network": geo.network,
        "language": language(hit.get("accept_language")),
        **enricher.source_columns(hit),
        "client_ip_masked": masked,
    }


def enrich(
    config: EnrichConfig, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, datetime | None] | None = None
) -> list[dict[str, Any]]:
    """One output dict per input hit, same order: what ``Enricher(config).enrich`` must give."""
    enricher = Enricher(config)
    clients = [enricher.parse_agent(hit.get("user_agent")) for hit in hits]
    addresses = [parse_ip(hit.get("client_ip")) for hit in hits]
    networks = [in_networks(a, config.scanner_networks) for a in addresses]
    reasons = [
        hit_reason(h, c, in_networks(a, config.apple_networks), n)
        for h, c, a, n in zip(hits, clients, addresses, networks, strict=True)
    ]
    families = [
        None if r is None else machine_family(c, r, h.get("kind"), n)
        for h, c, r, n in zip(hits, clients, reasons, networks, strict=True)
    ]
    events = [event(hit, client) for hit, client in zip(hits, clients, strict=True)]
    for index in scanner_clicks(events, sent_at or {}, config):
        if reasons[index] is None:
            reasons[index], families[index] = "scanner", BEHAVIOUR
    return [
        row(enricher, hit, clients[i], reasons[i], families[i], place(enricher, addresses[i]))
        for i, hit in enumerate(hits)
    ]
