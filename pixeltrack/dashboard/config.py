"""Dashboard settings, read once from the environment (flags override)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aggregator.config import DEFAULT_HEADLINE, headline_from_env
from pixeltrack.core.config import ConfigError, Secrets, env_int

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboard needs; build with ``from_env`` or directly in tests."""

    database_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # the collector's public address, for snippets and minted URLs
    base_url: str = "http://127.0.0.1:8080"
    # signs site keys and mail-merge URLs; without it Manage cannot mint
    secrets: Secrets | None = None
    secure_cookies: bool = False  # behind TLS: the session cookie gets Secure
    session_hours: int = 12
    k_anonymity: int = 5  # smallest demographic cell shown on its own, as the aggregator's
    headline: str = DEFAULT_HEADLINE  # PIXELTRACK_HEADLINE, read as the aggregator reads it
    login_attempts: int = 5  # failed log-ins per minute, per address and per e-mail
    page_size: int = 50  # recipients per page
    spool_dir: Path | None = None  # the collector's spool on this host, for its size

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> DashboardConfig:
        """Read DATABASE_URL and PIXELTRACK_DASHBOARD_*; ``overrides`` (flags) win when not None."""
        url = environ.get("DATABASE_URL", "")
        if not url and not overrides.get("database_url"):
            raise ConfigError("DATABASE_URL is not set: the dashboard reads the reports from PostgreSQL")
        data_dir = Path(environ.get("PIXELTRACK_DATA_DIR", ".pixeltrack"))
        config = cls(
            database_url=url,
            host=environ.get("PIXELTRACK_DASHBOARD_HOST", DEFAULT_HOST),
            port=env_int(environ, "PIXELTRACK_DASHBOARD_PORT", DEFAULT_PORT),
            base_url=environ.get("PIXELTRACK_BASE_URL", "http://127.0.0.1:8080").rstrip("/"),
            secrets=Secrets.from_env(environ) if environ.get("PIXELTRACK_SECRET") else None,
            secure_cookies=environ.get("PIXELTRACK_DASHBOARD_SECURE_COOKIES", "") == "1",
            session_hours=env_int(environ, "PIXELTRACK_DASHBOARD_SESSION_HOURS", 12),
            k_anonymity=env_int(environ, "PIXELTRACK_K_ANONYMITY", 5),
            headline=headline_from_env(environ),
            login_attempts=env_int(environ, "PIXELTRACK_DASHBOARD_LOGIN_ATTEMPTS", 5),
            spool_dir=Path(environ.get("PIXELTRACK_SPOOL_DIR", str(data_dir / "spool"))),
        )
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if config.session_hours < 1 or config.login_attempts < 1 or config.k_anonymity < 1:
            raise ConfigError("PIXELTRACK_DASHBOARD_SESSION_HOURS, _LOGIN_ATTEMPTS and PIXELTRACK_K_ANONYMITY "
                              "must be at least 1")
        return config

    @property
    def url(self) -> str:
        """Where the dashboard listens."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
