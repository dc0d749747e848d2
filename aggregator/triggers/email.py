"""E-mail alerts through SMTP (aiosmtplib): plain text, who (where allowed), what, when, device.

PIXELTRACK_SMTP_URL is ``smtp://[user:password@]host[:port]`` (STARTTLS when
the server offers it) or ``smtps://...`` (TLS from the start, port 465).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

from aggregator.triggers.payload import alert_text
from pixeltrack.core.config import ConfigError


class SmtpNotSet(ConfigError):
    """An e-mail trigger fired but PIXELTRACK_SMTP_URL is not set."""


def message(sender: str, to: str, raw_body: str, event_id: str) -> EmailMessage:
    """The alert as a plain-text mail."""
    subject, text = alert_text(raw_body)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="pixeltrack.invalid")
    msg["Pixeltrack-Event-Id"] = event_id
    msg.set_content(text)
    return msg


async def send_alert(smtp_url: str | None, sender: str, to: str, raw_body: str, event_id: str,
                     seconds: float) -> None:
    """Send one alert; raises aiosmtplib.SMTPException or OSError when the server refuses or is away."""
    if not smtp_url:
        raise SmtpNotSet("PIXELTRACK_SMTP_URL is not set: e-mail triggers need an SMTP server (smtp://host:port)")
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(f"PIXELTRACK_SMTP_URL must be smtp://host:port or smtps://host:port, got {smtp_url!r}")
    tls = parts.scheme == "smtps"
    await aiosmtplib.send(
        message(sender, to, raw_body, event_id),
        hostname=parts.hostname, port=parts.port or (465 if tls else 25), use_tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None, timeout=seconds,
    )  # fmt: skip
