"""Settings of triggers: hold-back, delivery, retries, SMTP; read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aggregator.enrich.config import EnrichConfig
from pixeltrack.core.config import ConfigError, env_float, env_int

DEFAULT_HOLD = 120  # seconds after a hit before its machine verdict counts as settled
DEFAULT_RETRY_FOR = 86_400  # a day of retries, then dead-lettered


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A 0/1 switch (also true/false, yes/no)."""
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TriggerConfig:
    """How events are found and delivered."""

    hold: float = DEFAULT_HOLD
    # Scan this far behind the watermark again: hits that reach the database
    # late (a collector's spool replayed) still raise their event, once.
    lookback: float = 600.0
    scan_interval: float = 5.0
    include_unknown: bool = False  # also alert on traffic the rules cannot call human or machine
    allow_private: bool = False  # webhooks to private, loopback and link-local addresses
    timeout: float = 10.0  # seconds per delivery attempt
    retry_base: float = 5.0  # first retry after about this many seconds, doubling
    retry_max: float = 3600.0  # longest wait between two attempts
    retry_for: float = DEFAULT_RETRY_FOR
    per_target: int = 4  # deliveries in flight to one target, per aggregator
    in_flight: int = 32  # deliveries in flight, per aggregator
    lease: float = 60.0  # a claimed delivery is another aggregator's again after this
    poll: float = 0.5  # seconds between looks at the outbox
    smtp_url: str | None = None
    smtp_from: str = "pixeltrack@localhost"
    metrics_port: int | None = None
    # The link-scanner burst rule of the enrichment, applied across roll-up batches.
    burst_seconds: float = 2.0
    burst_links: int = 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TriggerConfig:
        """Build from PIXELTRACK_TRIGGER_*, PIXELTRACK_SMTP_URL and PIXELTRACK_SMTP_FROM."""
        enrich = EnrichConfig.from_env(environ)
        port = env_int(environ, "PIXELTRACK_TRIGGER_METRICS_PORT", 0)
        cfg = cls(
            hold=env_float(environ, "PIXELTRACK_TRIGGER_HOLD", DEFAULT_HOLD),
            lookback=env_float(environ, "PIXELTRACK_TRIGGER_LOOKBACK", 600.0),
            scan_interval=env_float(environ, "PIXELTRACK_TRIGGER_SCAN_INTERVAL", 5.0),
            include_unknown=env_flag(environ, "PIXELTRACK_TRIGGER_UNKNOWN"),
            allow_private=env_flag(environ, "PIXELTRACK_TRIGGER_ALLOW_PRIVATE"),
            timeout=env_float(environ, "PIXELTRACK_TRIGGER_TIMEOUT", 10.0),
            retry_base=env_float(environ, "PIXELTRACK_TRIGGER_RETRY_BASE", 5.0),
            retry_max=env_float(environ, "PIXELTRACK_TRIGGER_RETRY_MAX", 3600.0),
            retry_for=env_float(environ, "PIXELTRACK_TRIGGER_RETRY_FOR", DEFAULT_RETRY_FOR),
            per_target=env_int(environ, "PIXELTRACK_TRIGGER_PER_TARGET", 4),
            in_flight=env_int(environ, "PIXELTRACK_TRIGGER_IN_FLIGHT", 32),
            lease=env_float(environ, "PIXELTRACK_TRIGGER_LEASE", 60.0),
            poll=env_float(environ, "PIXELTRACK_TRIGGER_POLL", 0.5),
            smtp_url=environ.get("PIXELTRACK_SMTP_URL") or None,
            smtp_from=environ.get("PIXELTRACK_SMTP_FROM") or "pixeltrack@localhost",
            metrics_port=port or None,
            burst_seconds=enrich.scanner_burst_seconds,
            burst_links=enrich.scanner_burst_links,
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse values that make no sense, naming the variable."""
        for name, value, low in (
            ("PIXELTRACK_TRIGGER_HOLD", self.hold, 0),
            ("PIXELTRACK_TRIGGER_LOOKBACK", self.lookback, 0),
            ("PIXELTRACK_TRIGGER_SCAN_INTERVAL", self.scan_interval, 0.05),
            ("PIXELTRACK_TRIGGER_TIMEOUT", self.timeout, 0.1),
            ("PIXELTRACK_TRIGGER_RETRY_BASE", self.retry_base, 0.01),
            ("PIXELTRACK_TRIGGER_RETRY_MAX", self.retry_max, 0.01),
            ("PIXELTRACK_TRIGGER_RETRY_FOR", self.retry_for, 0),
            ("PIXELTRACK_TRIGGER_PER_TARGET", self.per_target, 1),
            ("PIXELTRACK_TRIGGER_IN_FLIGHT", self.in_flight, 1),
            ("PIXELTRACK_TRIGGER_POLL", self.poll, 0.01),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.lease <= self.timeout:
            raise ConfigError(
                "PIXELTRACK_TRIGGER_LEASE must be longer than PIXELTRACK_TRIGGER_TIMEOUT: a claimed delivery must be "
                f"sent before another aggregator may take it ({self.lease} <= {self.timeout})"
            )

    @property
    def traffic(self) -> list[str]:
        """The traffic verdicts that may raise an event."""
        return ["human", "unknown"] if self.include_unknown else ["human"]
