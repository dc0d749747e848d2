"""The batch step: raw hits in, enrichment columns out, in the same order.

With ``cache=True`` (the default) a call runs in ``run.Run``: each distinct
agent, address, language and source is worked out once. Parsed agents are
kept by the Enricher across calls (bounded); everything derived from an
address lives only for one ``enrich`` call, so no full address outlives the
batch that brought it. ``cache=False`` runs the plain reference path below,
every step for every hit; both give the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from aggregator.enrich.client import Client, parse_client
from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.geo import NOWHERE, Address, Geo, GeoLookup, mask_ip, parse_ip
from aggregator.enrich.machine import Event, hit_reason, in_networks, scanner_clicks
from aggregator.enrich.run import Agent, Run
from aggregator.enrich.source import Source, classify
from aggregator.enrich.text import clean, language
from pixeltrack.core import columns

# The enrichment columns of raw_hits (one list, in pixeltrack.core.columns),
# then the masked address that personal hits keep as client_ip.
OUTPUT_KEYS = (*columns.ENRICHED, "client_ip_masked")
PROXY_REASONS = frozenset({"apple_mpp", "gmail_proxy", "yahoo_proxy", "image_proxy"})
SOURCE_FIELDS = tuple(field.name for field in fields(Source))
Place = tuple[Geo, str | None]


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
        # Parsed agents by text, kept across calls (run.LIMIT bounds it).
        self.agents: dict[object, Agent] = {}

    def close(self) -> None:
        """Release the geo databases."""
        self.geo.close()

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, datetime | None] | None = None
    ) -> list[dict[str, Any]]:
        """One output dict per input hit, same order."""
        if self._cache:
            return Run(self).enrich(hits, sent_at or {})
        clients = [self.parse_agent(hit.get("user_agent")) for hit in hits]
        addresses = [parse_ip(hit.get("client_ip")) for hit in hits]
        reasons = [
            hit_reason(h, c, in_networks(a, self.config.apple_networks), in_networks(a, self.config.scanner_networks))
            for h, c, a in zip(hits, clients, addresses, strict=True)
        ]
        events = [self._event(hit, client) for hit, client in zip(hits, clients, strict=True)]
        for index in scanner_clicks(events, sent_at or {}, self.config):
            reasons[index] = reasons[index] or "scanner"
        return [self._row(hit, clients[i], reasons[i], self._place(addresses[i])) for i, hit in enumerate(hits)]

    def parse_agent(self, user_agent: object) -> Client:
        """What one user-agent value says, with the configured scanner names."""
        return parse_client(user_agent, self.config.scanner_agents)

    @staticmethod
    def client_columns(client: Client, reason: str | None) -> dict[str, Any]:
        """The client columns, traffic and machine reason of a hit."""
        device, traffic = verdict(client, reason)
        return {
            "device_class": device,
            "browser": client.browser,
            "browser_version": client.browser_version,
            "os": client.os,
            "os_version": client.os_version,
            "mail_client": client.mail_client,
            "traffic": traffic,
            "machine_reason": reason,
        }

    def source_columns(self, hit: Mapping[str, Any]) -> dict[str, Any]:
        """The source columns of a hit."""
        found = classify(hit, self.config.internal_hosts)
        return {name: getattr(found, name) for name in SOURCE_FIELDS}

    def _place(self, address: Address | None) -> Place:
        """Geo answer and masked address."""
        if address is None:
            return NOWHERE, None
        return self.geo.lookup(address), mask_ip(address, self.config.ipv4_prefix, self.config.ipv6_prefix)

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

    def _row(self, hit: Mapping[str, Any], client: Client, reason: str | None, place: Place) -> dict[str, Any]:
        """The output columns of one hit."""
        geo, masked = place
        return {
            **self.client_columns(client, reason),
            "country": geo.country,
            "region": geo.region,
            "city": geo.city,
            "asn": geo.asn,
            "network": geo.network,
            "language": language(hit.get("accept_language")),
            **self.source_columns(hit),
            "client_ip_masked": masked,
        }


class Enriching(Protocol):
    """What the roll-up needs from an enricher (tests pass a flags-only stand-in)."""

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, datetime | None]
    ) -> list[dict[str, Any]]: ...


def make_enricher(config: EnrichConfig | None = None) -> Enriching:
    """The production enricher (cached path) for ``config`` (defaults when None)."""
    return Enricher(config if config is not None else EnrichConfig())
