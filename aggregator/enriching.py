"""The one call that enriches a batch of claimed hits.

`aggregator.enrich` (device, geo, machine-traffic rules) is a separate
package; while it is absent, `FlagEnricher` stands in and classifies from the
raw flags only: HEAD or prefetch is machine traffic (reason ``prefetch``),
everything else is unknown. The roll-up never needs to know which one runs.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aggregator.enrich import OUTPUT_KEYS

log = logging.getLogger(__name__)

# The enrichment columns, in the order the enricher returns them (one list).
ENRICH_KEYS = OUTPUT_KEYS


class Enriching(Protocol):
    """What the roll-up needs from an enricher."""

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, dt.datetime | None]
    ) -> list[dict[str, Any]]: ...


def is_prefetch(hit: Mapping[str, Any]) -> bool:
    """A fetch no person asked for: HEAD, or flagged prefetch by the collector."""
    return bool(hit["prefetch"]) or hit["method"] == "HEAD"


@functools.lru_cache(maxsize=65536)
def mask_ip(raw: str | None, v4_prefix: int = 24, v6_prefix: int = 48) -> str | None:
    """The network part of an address (203.0.113.7 -> 203.0.113.0)."""
    if not raw:
        return None
    addr = ipaddress.ip_address(raw.split("/")[0])
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


class FlagEnricher:
    """Stand-in enricher: machine traffic from the HEAD/prefetch flags only."""

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, dt.datetime | None]
    ) -> list[dict[str, Any]]:
        """One dict of ENRICH_KEYS per hit, in order."""
        out = []
        for hit in hits:
            row = dict.fromkeys(ENRICH_KEYS)
            machine = is_prefetch(hit)
            row["traffic"] = "machine" if machine else "unknown"
            row["machine_reason"] = "prefetch" if machine else None
            row["client_ip_masked"] = mask_ip(hit["client_ip"])
            out.append(row)
        return out


def make_enricher(config: Any) -> Enriching:
    """The enrichment package's Enricher when installed, else FlagEnricher."""
    try:
        from aggregator.enrich import EnrichConfig, Enricher
    except ImportError:
        log.warning("aggregator.enrich not available: machine traffic from HEAD/prefetch flags only")
        return FlagEnricher()
    return Enricher(config if config is not None else EnrichConfig())
