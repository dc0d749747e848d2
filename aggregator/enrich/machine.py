"""Machine or person: the rules behind ``traffic`` and ``machine_reason``.

Two kinds of evidence, see RULES.md for the sources:

* one hit alone -- the agent is a mail proxy, a crawler or a scanner; the
  request was a prefetch; the address belongs to Apple's relay or a mail
  security gateway;
* a recipient's events in one batch -- several links clicked within
  seconds, a click with no open and no browser behind it, a click seconds
  after the mail was sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aggregator.enrich.client import Client
from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.geo import Address


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


@dataclass(frozen=True, slots=True)
class Click:
    """A click as the cached path keeps it for the behavioural rules."""

    index: int
    job_id: Any
    recipient_id: Any
    link: str | None
    at: datetime | None
    lacks_browser: bool
    agent: Any  # carried for the caller, to rewrite a flagged row
    reason: str | None


Masks = dict[int, tuple[tuple[int, int], ...]]


def network_masks(networks: Sequence[Any]) -> Masks:
    """(netmask, network address) of each network as integers, by IP version."""
    return {v: tuple((int(n.netmask), int(n.network_address)) for n in networks if n.version == v) for v in (4, 6)}


def in_masks(address: Address | None, masks: Masks) -> bool:
    """``in_networks`` against ``network_masks``: the same test, in integers."""
    if address is None:
        return False
    number = int(address)
    return any(number & mask == base for mask, base in masks[address.version])


def in_networks(address: Address | None, networks: Sequence[Any]) -> bool:
    """True when ``address`` lies in one of ``networks`` (same family only)."""
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def hit_reason(hit: Mapping[str, Any], client: Client, apple: bool, scanner: bool) -> str | None:
    """Machine reason told by this hit alone, or None.

    ``apple`` and ``scanner``: whether the address lies in Apple's egress or a
    known scanner's networks (callers test once per address; see ``in_networks``).
    """
    kind = hit.get("kind")
    if client.generic and (kind == "open" or apple):
        return "apple_mpp"
    if kind == "open" and client.mail_client == "Apple Mail" and apple:
        return "apple_mpp"
    if client.agent_reason is not None:
        return client.agent_reason
    if client.scanner or (kind == "click" and client.office):
        return "scanner"
    if hit.get("prefetch") is True:  # the collector folds HEAD into prefetch
        return "prefetch"
    return "scanner" if scanner else None


def burst_clicks(clicks: list[tuple[datetime, int, str | None]], window: float, links: int) -> set[int]:
    """Indexes of clicks in a run on ``links``+ distinct links within ``window`` seconds."""
    flagged: set[int] = set()
    start = 0
    for end in range(len(clicks)):
        while (clicks[end][0] - clicks[start][0]).total_seconds() > window:
            start += 1
        run = clicks[start : end + 1]
        if len({link for _, _, link in run}) >= links:
            flagged.update(index for _, index, _ in run)
    return flagged


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
    if not any(events[i].kind == "open" for i in members):
        flagged.update(i for i in members if events[i].kind == "click" and lacks_browser(events[i]))
    return flagged


def scanner_click_indexes(
    clicks: Sequence[Click], opened: set[tuple[Any, Any]], sent_at: Mapping[Any, datetime | None], config: EnrichConfig
) -> list[Click]:
    """``scanner_clicks`` over the clicks only, ``opened`` naming the recipients with an open."""
    flagged: dict[int, Click] = {}
    groups: dict[tuple[Any, Any], list[Click]] = defaultdict(list)
    for click in clicks:
        if click.recipient_id is not None:
            groups[(click.job_id, click.recipient_id)].append(click)
        sent = sent_at.get(click.job_id)
        if sent is None or click.at is None:
            continue
        try:
            seconds = (click.at - sent).total_seconds()
        except TypeError:  # naive against aware: cannot be told
            continue
        if 0 <= seconds <= config.scanner_send_seconds:
            flagged[click.index] = click
    for key, members in groups.items():
        flagged.update((click.index, click) for click in group_clicks(members, key in opened, config))
    return list(flagged.values())


def group_clicks(members: list[Click], opened: bool, config: EnrichConfig) -> list[Click]:
    """``group_scanner_clicks`` for one recipient's clicks."""
    by_index = {click.index: click for click in members}
    try:
        runs = sorted((click.at, click.index, click.link) for click in members if click.at is not None)
        found = [by_index[i] for i in burst_clicks(runs, config.scanner_burst_seconds, config.scanner_burst_links)]
    except TypeError:  # naive and aware times mixed: no burst can be told
        found = []
    if not opened:
        found.extend(click for click in members if click.lacks_browser)
    return found
