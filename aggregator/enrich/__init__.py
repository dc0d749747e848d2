"""Enrichment of raw hits, run by the aggregator in batch.

Never on the collector's request path. ``Enricher(config).enrich(hits,
sent_at)`` returns, for each raw hit, the enrichment columns of ``raw_hits``
(``pixeltrack.core.columns.ENRICHED``) plus ``machine_family`` and ``client_ip_masked``:

* client -- ``client``: browser, OS, device class, mail client (ua-parser);
* machine or person -- ``layers`` (the agent: mail proxies, the
  crawler-user-agents list in ``crawlers``, pixeltrack's own rules, isbot's
  patterns) and ``machine`` (Apple MPP, scanners, prefetches, behaviour):
  ``traffic`` human / unknown / machine, ``machine_reason`` and
  ``machine_family`` (who; counted by the roll-up, not stored in raw_hits);
  rules, sources and evidence in RULES.md;
* location -- ``geo``: country, region, city, ASN from configured .mmdb files,
  country from the data embedded in ``iptocc`` otherwise; address masking;
* entry source and campaign -- ``source`` with the site lists in ``sites``;
* language -- primary tag of Accept-Language.

Configuration (``EnrichConfig.from_env``):

================================== ======================================================
PIXELTRACK_GEOIP                    .mmdb paths, comma or colon separated
PIXELTRACK_GEOIP_EMBEDDED           0 to turn off the embedded country fallback
PIXELTRACK_IPV4_PREFIX / _IPV6_     masking prefix, default 24 / 48
PIXELTRACK_SCANNER_BURST_SECONDS    window for "many links at once", default 2
PIXELTRACK_SCANNER_BURST_LINKS      distinct links in that window, default 2
PIXELTRACK_SCANNER_SEND_SECONDS     "click right after send" window, default 10
PIXELTRACK_SCANNER_OPEN_AHEAD       an open this long after a click still counts, default 10
PIXELTRACK_SCANNER_AGENTS           comma list of scanner agent substrings
PIXELTRACK_SCANNER_NETWORKS         CIDRs of mail security gateways
PIXELTRACK_SCANNER_APPLE_NETWORKS   CIDRs of Apple's relay (MPP)
PIXELTRACK_INTERNAL_HOSTS           the site's own hosts (referrer => internal)
================================== ======================================================
"""

from __future__ import annotations

from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.enricher import OUTPUT_KEYS, Enricher
from aggregator.enrich.geo import mask_ip
from aggregator.enrich.text import language

__all__ = ["OUTPUT_KEYS", "EnrichConfig", "Enricher", "language", "mask_ip"]
