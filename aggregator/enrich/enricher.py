"""The batch step: raw hits in, enrichment columns out, in the same order.

Each run caches parsed agents by distinct string and geo answers by address;
both caches live only for one ``enrich`` call, so no full address outlives the
batch that brought it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from .client import Client, parse_client
from .config import EnrichConfig
from .geo import NOWHERE, Address, Geo, GeoLookup, mask_ip, parse_ip
from .machine import Event, hit_reason, scanner_clicks
from .source import Source, classify
from .text import clean

OUTPUT_KEYS = (
    "device_class", "browser", "browser_version", "os", "os_version", "mail_client",
    "traffic", "machine_reason", "country", "region", "city", "asn", "network", "language",
    "source_class", "source_name", "search_phrase", "utm_source", "utm_medium", "utm_campaign",
    "utm_term", "utm_content", "click_id", "client_ip_masked",
)  # fmt: skip
PROXY_REASONS = frozenset({"apple_mpp", "gmail_proxy", "yahoo_proxy", "image_proxy"})
_LANGUAGE = re.compile(r"[a-z]{2,3}")
SOURCE_FIELDS = tuple(field.name for field in fields(Source))
Place = tuple[Geo, str | None]


def language(header: object) -> str | None:
    """Primary language of an Accept-Language header: 'de' from 'de-CH,de;q=0.9'."""
    text = clean(header, 256)
    if text is None:
        return None
    tag = text.split(",", 1)[0].split(";", 1)[0].strip().replace("_", "-").split("-", 1)[0].lower()
    return tag if _LANGUAGE.fullmatch(tag) else None


def verdict(client: Client, reason: str | None) -> tuple[str, str]:
    """(device_class, traffic) once the machine reason is known."""
    device = client.device_class
    if reason in PROXY_REASONS:
        device = "mail_proxy"
    elif reason in ("crawler", "scanner") and device == "unknown":
        device = "bot"
    if reason is not None:
        return device, "machine"
    return device, "human" if client.browser_like else "unknown"


class Enricher:
    """Adds client, machine, location, language and source columns to raw hits."""

    def __init__(self, config: EnrichConfig, *, cache: bool = True) -> None:
        self.config = config
        self.geo = GeoLookup(config.geoip_paths, config.embedded_geo)
        self._cache = cache

    def close(self) -> None:
        """Release the geo databases."""
        self.geo.close()

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, datetime | None] | None = None
    ) -> list[dict[str, Any]]:
        """One output dict per input hit, same order."""
        agents: dict[object, Client] = {}
        places: dict[Address, Place] = {}
        sources: dict[tuple[object, ...], dict[str, Any]] = {}
        clients = [self._client(hit.get("user_agent"), agents) for hit in hits]
        addresses = [parse_ip(hit.get("client_ip")) for hit in hits]
        reasons = [hit_reason(h, c, a, self.config) for h, c, a in zip(hits, clients, addresses, strict=True)]
        events = [self._event(hit, client) for hit, client in zip(hits, clients, strict=True)]
        for index in scanner_clicks(events, sent_at or {}, self.config):
            reasons[index] = reasons[index] or "scanner"
        return [
            self._row(hit, clients[i], reasons[i], self._place(addresses[i], places), sources)
            for i, hit in enumerate(hits)
        ]

    def _client(self, user_agent: object, cache: dict[object, Client]) -> Client:
        """Parsed agent, once per distinct string in this run."""
        key = user_agent if isinstance(user_agent, str | bytes) or user_agent is None else repr(user_agent)
        if not self._cache:
            return parse_client(user_agent, self.config.scanner_agents)
        found = cache.get(key)
        if found is None:
            found = cache[key] = parse_client(user_agent, self.config.scanner_agents)
        return found

    def _place(self, address: Address | None, cache: dict[Address, Place]) -> Place:
        """Geo answer and masked address, once per distinct address in this run."""
        if address is None:
            return NOWHERE, None
        found = cache.get(address) if self._cache else None
        if found is None:
            masked = mask_ip(address, self.config.ipv4_prefix, self.config.ipv6_prefix)
            found = (self.geo.lookup(address), masked)
            if self._cache:
                cache[address] = found
        return found

    def _source(self, hit: Mapping[str, Any], cache: dict[tuple[object, ...], dict[str, Any]]) -> dict[str, Any]:
        """Source columns, once per distinct (kind, landing URL, referrer) in this run."""
        key = (hit.get("kind"), hit.get("url"), hit.get("link"), hit.get("referer"))
        if not self._cache or not all(part is None or isinstance(part, str) for part in key):
            found = classify(hit, self.config.internal_hosts)
            return {name: getattr(found, name) for name in SOURCE_FIELDS}
        row = cache.get(key)
        if row is None:
            found = classify(hit, self.config.internal_hosts)
            row = cache[key] = {name: getattr(found, name) for name in SOURCE_FIELDS}
        return row

    @staticmethod
    def _event(hit: Mapping[str, Any], client: Client) -> Event:
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

    def _row(
        self, hit: Mapping[str, Any], client: Client, reason: str | None,
        place: Place, sources: dict[tuple[object, ...], dict[str, Any]],
    ) -> dict[str, Any]:  # fmt: skip
        """The output columns of one hit."""
        device, traffic = verdict(client, reason)
        geo, masked = place
        return {
            "device_class": device,
            "browser": client.browser,
            "browser_version": client.browser_version,
            "os": client.os,
            "os_version": client.os_version,
            "mail_client": client.mail_client,
            "traffic": traffic,
            "machine_reason": reason,
            "country": geo.country,
            "region": geo.region,
            "city": geo.city,
            "asn": geo.asn,
            "network": geo.network,
            "language": language(hit.get("accept_language")),
            **self._source(hit, sources),
            "client_ip_masked": masked,
        }
