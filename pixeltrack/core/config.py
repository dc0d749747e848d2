"""Settings shared by every pixeltrack service, read from the environment."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A required setting is missing or malformed; the message names it."""


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """Read an integer variable, naming it when it does not parse."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    """Read a float variable, naming it when it does not parse."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def parse_networks(raw: str, name: str = "PIXELTRACK_TRUSTED_PROXIES") -> tuple[Network, ...]:
    """Parse a comma-separated list of CIDRs (a bare address is a /32 or /128)."""
    nets = []
    for part in raw.replace(" ", ",").split(","):
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ConfigError(f"{name}: {part!r} is not an address or CIDR") from exc
    return tuple(nets)


@dataclass(frozen=True)
class Secrets:
    """Signing keys: the current one signs, any of them verifies (rotation)."""

    current: str
    previous: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Secrets:
        """Read PIXELTRACK_SECRET and PIXELTRACK_SECRET_PREVIOUS (comma-separated)."""
        current = environ.get("PIXELTRACK_SECRET", "")
        if not current:
            raise ConfigError(
                "PIXELTRACK_SECRET is not set: it is the key that signs pixel and click "
                "tokens (any long random string, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)"
            )
        previous = tuple(p for p in environ.get("PIXELTRACK_SECRET_PREVIOUS", "").split(",") if p)
        return cls(current, previous)


@dataclass(frozen=True)
class CommonConfig:
    """What every command needs: where the database is and where data lives."""

    database_url: str | None
    data_dir: Path
    base_url: str
    secrets: Secrets | None = field(default=None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, need_secret: bool = False) -> CommonConfig:
        """Build from the environment; ``need_secret`` makes PIXELTRACK_SECRET required."""
        secrets = Secrets.from_env(environ) if need_secret or environ.get("PIXELTRACK_SECRET") else None
        return cls(
            database_url=environ.get("DATABASE_URL") or None,
            data_dir=Path(environ.get("PIXELTRACK_DATA_DIR", ".pixeltrack")),
            base_url=environ.get("PIXELTRACK_BASE_URL", "http://127.0.0.1:8080").rstrip("/"),
            secrets=secrets,
        )
