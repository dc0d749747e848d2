"""Machine or person: the rules behind ``traffic``, ``machine_reason`` and the family.

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


def hit_reason(hit: Mapping[str, Any], client: Client, apple: bool, scanner: bool) -> str | None:
    """Machine reason told by this hit alone, or None.

    ``apple`` and ``scanner``: whether the address lies in Apple's egress or a
    known scanner's networks (callers test once per address; see ``in_masks``).
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


# Families of the machine rules that look at more than the agent.
APPLE_MPP = "Apple MPP"
PREFETCH = "prefetch or HEAD"
OFFICE_CHECK = "Outlook link check"
GATEWAY_NETWORK = "security gateway network"
BEHAVIOUR = "link-check behaviour"


def machine_family(client: Client, reason: str | None, kind: object, network: bool) -> str | None:
    """Who the machine behind a hit with ``reason`` is, as ``hit_reason`` decided it.

    The agent's own family (crawler list entry, pixeltrack rule, proxy or
    gateway name) where the agent told; otherwise the rule's name. ``network``:
    the address is in a scanner network.
    """
    if reason is None:
        return None
    if reason == "apple_mpp":
        return APPLE_MPP
    if reason == client.agent_reason or (reason == "scanner" and client.scanner):
        return client.family
    if reason == "prefetch":
        return PREFETCH
    if kind == "click" and client.office:
        return OFFICE_CHECK
    return GATEWAY_NETWORK if network else BEHAVIOUR


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
