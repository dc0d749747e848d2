"""Settings of the enrichment step, read from the environment.

Every window and list a machine rule uses is here so that an operator can
tune it without a release; RULES.md says where each default comes from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aggregator.enrich.agents import DEFAULT_SCANNER_AGENTS
from pixeltrack.core.config import ConfigError, Network, env_float, env_int, parse_networks

# Apple's own allocation (AS714): 17.0.0.0/8 and its IPv6 blocks. Mail
# Privacy Protection fetches through Apple's relay, whose first hops are here.
DEFAULT_APPLE_NETWORKS = "17.0.0.0/8,2620:149::/32,2a01:b740::/32"
# Published egress ranges of mail security gateways that click every link:
# Barracuda Email Security Service, Mimecast (US), Proofpoint (pphosted).
DEFAULT_SCANNER_NETWORKS = (
    "64.235.144.0/20,209.222.80.0/21,205.139.110.0/24,207.211.30.0/24,216.205.24.0/24,148.163.128.0/19,67.231.144.0/20"
)


def env_list(environ: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list variable, lowercased, blanks dropped."""
    raw = environ.get(name)
    raw = default if raw is None else raw
    return tuple(part.strip().lower() for part in raw.split(",") if part.strip())


def env_paths(environ: Mapping[str, str], name: str) -> tuple[Path, ...]:
    """Paths separated by commas or colons (PATH style)."""
    raw = environ.get(name, "")
    return tuple(Path(p.strip()) for p in raw.replace(":", ",").split(",") if p.strip())


def check_prefix(name: str, value: int, bits: int) -> int:
    """A prefix length must fit the address family."""
    if not 0 <= value <= bits:
        raise ConfigError(f"{name} must be between 0 and {bits}, got {value}")
    return value


@dataclass(frozen=True)
class EnrichConfig:
    """How hits are enriched: geo databases, masking, machine-traffic rules."""

    geoip_paths: tuple[Path, ...] = ()
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    # Fall back to the country data embedded in the iptocc package.
    embedded_geo: bool = True
    # Clicks of one recipient on at least `scanner_burst_links` distinct links
    # within `scanner_burst_seconds` of the first are all a scanner's.
    scanner_burst_seconds: float = 2.0
    scanner_burst_links: int = 2
    # A click this soon after the job's send time is a gateway's check.
    scanner_send_seconds: float = 10.0
    # A click without browser traits is a scanner's unless its recipient
    # opened the mail before it or at most this many seconds after it.
    scanner_open_ahead: float = 10.0
    # Lowercase substrings of user agents that only scanners send.
    scanner_agents: tuple[str, ...] = DEFAULT_SCANNER_AGENTS
    scanner_networks: tuple[Network, ...] = parse_networks(DEFAULT_SCANNER_NETWORKS)
    apple_networks: tuple[Network, ...] = parse_networks(DEFAULT_APPLE_NETWORKS)
    # The site's own hosts: a referrer from one of them is `internal`.
    internal_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EnrichConfig:
        """Build from PIXELTRACK_GEOIP, PIXELTRACK_IPV4_PREFIX, PIXELTRACK_SCANNER_* ..."""
        agents = ",".join(DEFAULT_SCANNER_AGENTS)
        return cls(
            geoip_paths=env_paths(environ, "PIXELTRACK_GEOIP"),
            ipv4_prefix=check_prefix("PIXELTRACK_IPV4_PREFIX", env_int(environ, "PIXELTRACK_IPV4_PREFIX", 24), 32),
            ipv6_prefix=check_prefix("PIXELTRACK_IPV6_PREFIX", env_int(environ, "PIXELTRACK_IPV6_PREFIX", 48), 128),
            embedded_geo=environ.get("PIXELTRACK_GEOIP_EMBEDDED", "1").strip() not in ("0", "false", "no"),
            scanner_burst_seconds=env_float(environ, "PIXELTRACK_SCANNER_BURST_SECONDS", 2.0),
            scanner_burst_links=env_int(environ, "PIXELTRACK_SCANNER_BURST_LINKS", 2),
            scanner_send_seconds=env_float(environ, "PIXELTRACK_SCANNER_SEND_SECONDS", 10.0),
            scanner_open_ahead=env_float(environ, "PIXELTRACK_SCANNER_OPEN_AHEAD", 10.0),
            scanner_agents=env_list(environ, "PIXELTRACK_SCANNER_AGENTS", agents),
            scanner_networks=parse_networks(
                environ.get("PIXELTRACK_SCANNER_NETWORKS", DEFAULT_SCANNER_NETWORKS),
                "PIXELTRACK_SCANNER_NETWORKS",
            ),
            apple_networks=parse_networks(
                environ.get("PIXELTRACK_SCANNER_APPLE_NETWORKS", DEFAULT_APPLE_NETWORKS),
                "PIXELTRACK_SCANNER_APPLE_NETWORKS",
            ),
            internal_hosts=env_list(environ, "PIXELTRACK_INTERNAL_HOSTS", ""),
        )

    @property
    def context_seconds(self) -> float:
        """How far past a click the behavioural rules look (the burst window or the open look-ahead)."""
        return max(self.scanner_burst_seconds, self.scanner_open_ahead)
