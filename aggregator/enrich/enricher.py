"""The batch step: raw hits in, enrichment columns out, in the same order.

A call runs in ``run.Run``: each distinct agent, address, language and
source is worked out once. Parsed agents are kept by the Enricher across
calls (bounded); everything derived from an address lives only for one
``enrich`` call, so no full address outlives the batch that brought it.
This is the only enrichment path; the tests keep a plain one (every step for
every hit, ``tests/aggregator/enrich/reference.py``) as an oracle that must
give the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from aggregator.enrich import crawlers, layers
from aggregator.enrich.client import Client, parse_client, parser
from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.geo import GeoLookup
from aggregator.enrich.machine import Context
from aggregator.enrich.run import Agent, Parts, Run, Spot, whole
from aggregator.enrich.source import Source, classify
from pixeltrack.core import columns

# The enrichment columns of raw_hits (one list, in pixeltrack.core.columns),
# the machine's family right after the client columns (the roll-up counts
# machines by it; raw_hits does not keep it), then the masked address that
# personal hits keep as client_ip.
OUTPUT_KEYS = (*columns.CLIENT, "machine_family", *columns.ENRICHED[len(columns.CLIENT) :], "client_ip_masked")
PROXY_REASONS = frozenset({"apple_mpp", "gmail_proxy", "yahoo_proxy", "image_proxy"})
SOURCE_FIELDS = tuple(field.name for field in fields(Source))


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

    def __init__(self, config: EnrichConfig) -> None:
        self.config = config
        self.geo = GeoLookup(config.geoip_paths, config.embedded_geo)
        # Built once a process (about 0.6 s of regex compiling) when the enricher is made, not by
        # the first hit's batch: a run's cost per hit is then what the hits cost. isbot's pattern too
        # (17-60 ms, compiled by the first agent the gate let through until §25).
        parser()
        crawlers.matcher()
        layers.is_bot_search()
        # Parsed agents by text, and what each address contributes (its place, masked address and network
        # tests) with the place's geo columns, kept across calls (run.LIMIT bounds each).
        self.agents: dict[object, Agent] = {}
        self.spots: dict[object, Spot] = {}
        self.places: dict[tuple[Any, ...], dict[str, Any]] = {}

    def forget_addresses(self) -> None:
        """Empty the address tables (both: a spot names its place's dict); benchmarks place addresses anew."""
        self.spots.clear()
        self.places.clear()

    def close(self) -> None:
        """Release the geo databases."""
        self.geo.close()

    def enrich(
        self,
        hits: Sequence[Mapping[str, Any]],
        sent_at: Mapping[int, datetime | None] | None = None,
        context: Context | None = None,
    ) -> list[dict[str, Any]]:
        """One output dict per input hit, same order (``context``: what the roll-up knows beyond them)."""
        return Run(self).enrich(hits, sent_at or {}, context)

    def parts(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, datetime | None], context: Context | None = None
    ) -> list[Parts]:
        """``enrich`` as each hit's cached parts (run.Parts, run.merged makes the row)."""
        return Run(self).parts(hits, sent_at, context)

    def parse_agent(self, user_agent: object) -> Client:
        """What one user-agent value says, with the configured scanner names."""
        return parse_client(user_agent, self.config.scanner_agents)

    @staticmethod
    def client_columns(client: Client, reason: str | None, family: str | None = None) -> dict[str, Any]:
        """The client columns, traffic, machine reason and machine family of a hit."""
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
            "machine_family": family,
        }

    def source_columns(self, hit: Mapping[str, Any]) -> dict[str, Any]:
        """The source columns of a hit."""
        found = classify(hit, self.config.internal_hosts)
        return {name: getattr(found, name) for name in SOURCE_FIELDS}


class Enriching(Protocol):
    """What the roll-up needs from an enricher (tests pass a flags-only stand-in)."""

    def enrich(
        self,
        hits: Sequence[Mapping[str, Any]],
        sent_at: Mapping[int, datetime | None],
        context: Context | None = None,
    ) -> list[dict[str, Any]]: ...


def make_enricher(config: EnrichConfig | None = None) -> Enriching:
    """The production enricher (cached path) for ``config`` (defaults when None)."""
    return Enricher(config if config is not None else EnrichConfig())


def enrich_parts(
    enricher: Enriching,
    hits: Sequence[Mapping[str, Any]],
    sent_at: Mapping[int, datetime | None],
    context: Context | None = None,
) -> list[Parts]:
    """Each hit's enrichment as parts: the Enricher's cached ones, any other enricher's rows as one part each."""
    if isinstance(enricher, Enricher):
        return enricher.parts(hits, sent_at, context)
    return [whole(row) for row in enricher.enrich(hits, sent_at, context)]
