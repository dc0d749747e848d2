"""Webhook signatures, as Stripe makes them.

``Pixeltrack-Signature: t=UNIX_SECONDS,v1=HEX`` where HEX is the HMAC-SHA256,
keyed with the trigger's secret, of ``"{t}.{raw body}"``. A receiver
recomputes it over the raw bytes it got, compares in constant time and
refuses a ``t`` too far from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Pixeltrack-Signature"
EVENT_ID_HEADER = "Pixeltrack-Event-Id"
TOLERANCE = 300  # seconds a receiver should accept between t and its clock


def new_secret() -> str:
    """A random signing secret for a trigger created without one."""
    return "whsec_" + secrets.token_urlsafe(32)


def digest(secret: str, timestamp: int, body: bytes) -> str:
    """HEX of HMAC-SHA256(secret, "{t}.{body}")."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for ``body`` at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={digest(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, now: float | None = None, tolerance: int = TOLERANCE) -> bool:
    """What a receiver does: a v1 signature matches and t is within ``tolerance`` of ``now``."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit():
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = digest(secret, t, body)
    return any(k.strip() == "v1" and hmac.compare_digest(v.strip(), expected) for k, v in parts)
