"""Machine or not, from the user agent alone: the detection layers in order.

1. ``proxy`` -- pixeltrack's mail image proxies (Gmail, Yahoo, HEY, Fastmail,
   Front, Superhuman ...), first so that each keeps its own reason;
2. ``list`` -- the crawler-user-agents list (``crawlers``), case-sensitive;
3. ``pixeltrack`` -- pixeltrack's own crawler rules (``agents.OWN_CRAWLERS``:
   headless browsers, link previews, HTTP libraries the list misses) and
   ua-parser's ``Spider`` device (uap-core's bot rules);
4. ``isbot`` -- the patterns of isbot (PyPI ``is-bot``), only for agents in
   which nothing else was recognised: no mail client, no browser family
   known to ua-parser and no mail security gateway's name (``gated``;
   RULES.md gives the figures behind the gate).

Scanners (mail security gateways by name, Outlook fetching a link) come
after these, in ``machine.hit_reason``; the gate keeps the generic isbot
patterns from taking a named gateway's agent (``Microsoft Office Existence
Discovery``) away from the ``scanner`` reason. The first layer that fires gives the
machine reason and the family (a fixed name from the layer's own data, never
text of the agent). Callers cache the verdict per distinct agent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ua_parser import Result

from aggregator.enrich import agents, crawlers


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why an agent is a machine: reason, family (who), and the layer that told."""

    reason: str
    family: str
    layer: str


@functools.cache
def is_bot_search() -> object:
    """isbot's patterns as one case-insensitive ``regex`` pattern (they need its look-behinds)."""
    import regex
    from is_bot import Bots

    return regex.compile("|".join(f"(?:{p})" for p in sorted(Bots().patterns)), regex.IGNORECASE)


def gated(result: Result, mail_client: str | None, scanner: bool = False) -> bool:
    """Whether the is-bot layer may judge this agent: no mail client, browser family or gateway name."""
    family = result.user_agent.family if result.user_agent else "Other"
    return mail_client is None and not scanner and family in agents.NOT_A_BROWSER


def is_bot(ua: str) -> bool:
    """isbot's verdict on ``ua`` (ungated)."""
    return is_bot_search().search(ua) is not None  # type: ignore[attr-defined]


def own_crawler(ua: str) -> str | None:
    """Family of the first of pixeltrack's own crawler rules that fires, or None."""
    if agents.OWN_CRAWLER.search(ua) is None:
        return None
    return next(family for pattern, family in agents.OWN_CRAWLER_RULES if pattern.search(ua))


def agent_verdict(ua: str, result: Result, mail_client: str | None, scanner: bool = False) -> Verdict | None:
    """The first layer that calls ``ua`` a machine, or None.

    ``result``: ua-parser's parse; ``mail_client``: the mail program shown, if
    any; ``scanner``: the agent names a mail security gateway.
    """
    for pattern, reason, family in agents.PROXIES:
        if pattern.search(ua):
            return Verdict(reason, family, "proxy")
    entry = crawlers.matcher()(ua)
    if entry is not None:
        return Verdict("crawler", entry.family, "list")
    own = own_crawler(ua)
    if own is not None:
        return Verdict("crawler", own, "pixeltrack")
    if result.device is not None and result.device.family == "Spider":
        return Verdict("crawler", agents.UAP_SPIDER_FAMILY, "pixeltrack")
    if gated(result, mail_client, scanner) and is_bot(ua):
        return Verdict("crawler", agents.IS_BOT_FAMILY, "isbot")
    return None
