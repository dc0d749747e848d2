"""Collector settings, read once from the environment (flags override)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pixeltrack.core.config import ConfigError, Network, Secrets, env_float, env_int, parse_networks


@dataclass(frozen=True)
class CollectorConfig:
    """Everything the collector needs; build with ``from_env`` or directly in tests."""

    database_url: str
    secrets: Secrets
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    trusted_proxies: tuple[Network, ...] = ()
    batch_size: int = 5000          # rows per COPY
    flush_interval: float = 0.5     # seconds: the oldest buffered hit waits at most this long
    max_buffer: int = 200_000       # past this the buffer goes straight to the spool
    copy_timeout: float = 10.0      # a COPY slower than this is spooled instead
    spool_dir: Path = Path(".pixeltrack/spool")
    spool_max_bytes: int = 1 << 30  # 1 GiB; past it /readyz turns 503
    drain_grace: float = 2.0        # seconds /readyz says 503 before the listener closes
    reuse_port: bool = False
    # Connections and the operator listener (collector.connections, collector.serve).
    keepalive_timeout: float = 15.0  # an idle keep-alive connection closes after this long
    header_timeout: float = 10.0     # a request must arrive whole within this long of its first byte
    max_connections: int = 0        # per process; 0: the open-file limit less a reserve
    operator_host: str = "127.0.0.1"  # /metrics and the health checks for operators: loopback by default
    operator_port: int = 9464       # 0: no operator listener
    # Durability (issue 11): the write-ahead journal, rows held when nothing takes them, spool scans.
    max_held: int = 100_000          # rows kept in memory while neither PostgreSQL nor the spool takes them
    journal_segment_bytes: int = 8 << 20  # size of one journal file; the next starts when it is full
    scan_interval: float = 2.0       # seconds between looks for other collectors' batches and journals
    canned_answers: bool = True      # PIXELTRACK_CANNED_ANSWERS=0: answer through web.Response (collector.answers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> CollectorConfig:
        """Read the PIXELTRACK_* variables; ``overrides`` (flags) win when not None."""
        url = environ.get("DATABASE_URL", "")
        if not url and not overrides.get("database_url"):
            raise ConfigError("DATABASE_URL is not set: the collector needs its PostgreSQL")
        data_dir = Path(environ.get("PIXELTRACK_DATA_DIR", ".pixeltrack"))
        config = cls(
            database_url=url,
            secrets=Secrets.from_env(environ),
            host=environ.get("PIXELTRACK_HOST", "127.0.0.1"),
            port=env_int(environ, "PIXELTRACK_PORT", 8080),
            workers=env_int(environ, "PIXELTRACK_WORKERS", 1),
            trusted_proxies=parse_networks(environ.get("PIXELTRACK_TRUSTED_PROXIES", "")),
            batch_size=env_int(environ, "PIXELTRACK_BATCH_SIZE", 5000),
            flush_interval=env_float(environ, "PIXELTRACK_FLUSH_INTERVAL", 0.5),
            max_buffer=env_int(environ, "PIXELTRACK_MAX_BUFFER", 200_000),
            copy_timeout=env_float(environ, "PIXELTRACK_COPY_TIMEOUT", 10.0),
            spool_dir=Path(environ.get("PIXELTRACK_SPOOL_DIR", str(data_dir / "spool"))),
            spool_max_bytes=env_int(environ, "PIXELTRACK_SPOOL_MAX_BYTES", 1 << 30),
            drain_grace=env_float(environ, "PIXELTRACK_DRAIN_GRACE", 2.0),
            keepalive_timeout=env_float(environ, "PIXELTRACK_KEEPALIVE_TIMEOUT", 15.0),
            header_timeout=env_float(environ, "PIXELTRACK_HEADER_TIMEOUT", 10.0),
            max_connections=env_int(environ, "PIXELTRACK_MAX_CONNECTIONS", 0),
            operator_host=environ.get("PIXELTRACK_OPERATOR_HOST", "127.0.0.1"),
            operator_port=env_int(environ, "PIXELTRACK_OPERATOR_PORT", 9464),
            max_held=env_int(environ, "PIXELTRACK_MAX_HELD", 100_000),
            journal_segment_bytes=env_int(environ, "PIXELTRACK_JOURNAL_SEGMENT_BYTES", 8 << 20),
            scan_interval=env_float(environ, "PIXELTRACK_SCAN_INTERVAL", 2.0),
            canned_answers=environ.get("PIXELTRACK_CANNED_ANSWERS", "1").strip().lower()
            not in ("0", "false", "no", "off"),
        )
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if config.batch_size < 1 or config.flush_interval <= 0 or config.workers < 1:
            raise ConfigError("PIXELTRACK_BATCH_SIZE, PIXELTRACK_FLUSH_INTERVAL and --workers must be positive")
        if config.keepalive_timeout <= 0 or config.header_timeout <= 0 or config.max_connections < 0:
            raise ConfigError("PIXELTRACK_KEEPALIVE_TIMEOUT and PIXELTRACK_HEADER_TIMEOUT must be positive, "
                              "PIXELTRACK_MAX_CONNECTIONS 0 (automatic) or more")
        if not 0 <= config.operator_port <= 65535:
            raise ConfigError("PIXELTRACK_OPERATOR_PORT must be a port number, or 0 for no operator listener")
        if config.max_held < 0 or config.journal_segment_bytes < 1 << 20 or config.scan_interval <= 0:
            raise ConfigError("PIXELTRACK_MAX_HELD must be >= 0, PIXELTRACK_JOURNAL_SEGMENT_BYTES >= 1048576 "
                              "and PIXELTRACK_SCAN_INTERVAL positive")
        return config
