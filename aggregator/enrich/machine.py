"""Machine or person: the rules behind ``traffic``, ``machine_reason`` and the family.

Two kinds of evidence, see RULES.md for the sources:

* one hit alone -- the agent is a mail proxy, a crawler or a scanner; the
  request was a prefetch; the address belongs to Apple's relay or a mail
  security gateway;
* a recipient's events around a click -- several links clicked within
  seconds, a click with no open (by a few seconds after it) and no browser
  behind it, a click seconds after the mail was sent.

The rules look at time windows around each click, never at which hits
happen to be enriched together: the roll-up hands in what it knows of a
recipient beyond its batch (``Outside``), so that the same hits give the same
verdicts however they are split into batches (aggregator/mail/context.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from aggregator.enrich.client import Client
from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.geo import Address
from aggregator.enrich.text import clean
from pixeltrack.core.tokens import link_id_for


class Click(NamedTuple):
    """A click as the cached path keeps it for the behavioural rules (a named tuple: one is made per
    click, and a frozen dataclass took four times as long to make)."""

    position: int  # among the hits enriched together
    job_id: Any
    recipient_id: Any
    link: int | None  # link_key of the destination
    at: datetime | None
    lacks_browser: bool
    agent: Any  # carried for the caller, to rewrite a flagged row
    reason: str | None


@dataclass(slots=True)
class Outside:
    """What is known of one recipient beyond the hits enriched together: their opens and nearby clicks."""

    opens: list[datetime] = field(default_factory=list)
    clicks: list[tuple[datetime, int]] = field(default_factory=list)  # (at, link_key)


# (job_id, recipient_id) -> Outside, for every recipient whose events may be
# linked (a keyed hash exists); a recipient missing from it gets no per-recipient rule.
Context = Mapping[tuple[Any, Any], Outside]
Opens = Mapping[tuple[Any, Any], list[datetime | None]]  # open times (None: unknown) per recipient
# By IP version: (shift, network prefixes) per prefix length; an address is in one of the networks when
# ``int(address) >> shift`` is among that length's prefixes.
Masks = dict[int, tuple[tuple[int, frozenset[int]], ...]]
BITS = {4: 32, 6: 128}


def link_key(link: object) -> int | None:
    """The identity of a clicked destination the burst rule compares: link_id_for of the cleaned text."""
    text = clean(link)
    return None if text is None else link_id_for(text)


def network_masks(networks: Sequence[Any]) -> Masks:
    """The networks as sets of prefixes, one set per prefix length, by IP version (``Masks``).

    A test then costs a shift and a set look-up per distinct prefix length, not a mask per network
    (the default scanner networks: 7 networks, 4 lengths; both tests 2.2 -> 1.2 us an address).
    """
    masks: Masks = {}
    for version, bits in BITS.items():
        by_length: dict[int, set[int]] = defaultdict(set)
        for n in networks:
            if n.version == version:
                by_length[n.prefixlen].add(int(n.network_address) >> (bits - n.prefixlen))
        masks[version] = tuple((bits - length, frozenset(found)) for length, found in sorted(by_length.items()))
    return masks


def in_masks(address: Address | None, masks: Masks) -> bool:
    """``in_networks`` against ``network_masks``: the same test, in integers."""
    if address is None:
        return False
    number = int(address)
    # A loop, not any() over a generator: a generator's frame would cost as much as the look-ups.
    for shift, prefixes in masks[address.version]:  # noqa: SIM110
        if number >> shift in prefixes:
            return True
    return False


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


def burst_clicks(clicks: Sequence[tuple[datetime, int, Hashable]], window: float, links: int) -> set[int]:
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


def opened_in_time(opens: Sequence[datetime | None], at: datetime | None, ahead: float) -> bool:
    """Whether one of ``opens`` came at most ``ahead`` seconds after a click at ``at``.

    An open or a click whose time is unknown (or cannot be compared) counts as in time.
    """
    if at is None:
        return bool(opens)
    limit = at + timedelta(seconds=ahead)
    for opened in opens:
        try:
            if opened is None or opened <= limit:
                return True
        except TypeError:  # naive against aware: cannot be told
            return True
    return False


def scanner_click_indexes(
    clicks: Sequence[Click],
    opened: Opens,
    sent_at: Mapping[Any, datetime | None],
    config: EnrichConfig,
    context: Context | None = None,
) -> list[Click]:
    """The clicks the behavioural rules put down to a scanner.

    ``opened``: open times of the recipients among the hits. Without
    ``context`` every recipient's events are the hits given; with it, only
    the recipients it names are grouped, their ``Outside`` events added.
    """
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
            flagged[click.position] = click
    nothing = Outside()
    for key, members in groups.items():
        outside = nothing if context is None else context.get(key)
        if outside is None:
            continue
        # The open rule's only input: made for the groups that it can judge (a click without a browser).
        opens = [*opened.get(key, ()), *outside.opens] if any(c.lacks_browser for c in members) else []
        for click in group_clicks(members, opens, outside.clicks, config):
            flagged[click.position] = click
    return list(flagged.values())


def group_clicks(
    members: list[Click],
    opens: Sequence[datetime | None],
    outside: Sequence[tuple[datetime, int]],
    config: EnrichConfig,
) -> list[Click]:
    """Scanner clicks among one recipient's clicks (``outside``: their other clicks, never flagged here).

    ``opens`` matter only to the clicks without a browser.
    """
    timed = [(click.at, click.position, click.link) for click in members if click.at is not None]
    found: list[Click] = []
    # A burst needs that many distinct links in one window, so at least that many in all: most
    # recipients click one link (once or again), and their clicks are neither sorted nor windowed.
    if len({link for _, _, link in timed} | {link for _, link in outside}) >= config.scanner_burst_links:
        by_index = {click.position: click for click in members}
        try:
            runs = sorted(timed + [(at, -1 - n, link) for n, (at, link) in enumerate(outside)])
            burst = burst_clicks(runs, config.scanner_burst_seconds, config.scanner_burst_links)
            found = [by_index[i] for i in sorted(burst) if i >= 0]
        except TypeError:  # naive and aware times mixed: no burst can be told
            found = []
    ahead = config.scanner_open_ahead
    found.extend(c for c in members if c.lacks_browser and not opened_in_time(opens, c.at, ahead))
    return found
