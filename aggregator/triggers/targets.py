"""Where events may go: http(s) webhooks on public addresses, and e-mail addresses.

A webhook is refused when its host is, or resolves to, a private, loopback,
link-local or otherwise non-global address (server-side request forgery),
unless PIXELTRACK_TRIGGER_ALLOW_PRIVATE=1. The check runs when the trigger
is created and again at every send: ``GuardedResolver`` is the resolver of
the sending client, so the address checked is the address connected to
(no second lookup for a DNS rebinding to slip into). Redirects are never
followed (the dispatcher sends with ``allow_redirects=False``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

MAX_URL = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """A webhook URL or e-mail address that events may not be sent to; the message says why."""


class ForbiddenAddress(OSError):
    """Raised at send time: the host resolved to an address events may not be sent to."""


def why_forbidden(address: Address) -> str | None:
    """The reason an address is refused, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return why_forbidden(address.ipv4_mapped)
    for reason, test in (
        ("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
        ("link-local", address.is_link_local), ("private", address.is_private),
        ("multicast", address.is_multicast), ("reserved", address.is_reserved),
    ):  # fmt: skip
        if test:
            return reason
    return None if address.is_global else "not public"


def literal(host: str) -> Address | None:
    """The address when ``host`` is an IP literal, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_webhook(url: str) -> SplitResult:
    """An http(s) URL with a host, or TargetRefused."""
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise TargetRefused("webhook: not a plain URL (too long, or spaces or control characters)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise TargetRefused(f"webhook: {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"webhook: only http and https URLs, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise TargetRefused(f"webhook: {url!r} has no host")
    return parts


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is its own)."""
    if literal(host) is not None:
        return [str(literal(host))]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refuse_addresses(host: str, addresses: list[str]) -> None:
    """TargetRefused naming the first address of ``host`` that is not public."""
    for text in addresses:
        reason = why_forbidden(ipaddress.ip_address(text.split("%")[0]))
        if reason is not None:
            where = host if literal(host) is not None else f"{host} resolves to {text}"
            raise TargetRefused(
                f"webhook: {where} ({reason}); only public addresses may receive events "
                "(set PIXELTRACK_TRIGGER_ALLOW_PRIVATE=1 for a receiver on your own network)"
            )


async def check_webhook(url: str, allow_private: bool) -> None:
    """Refuse a webhook URL that is malformed, or whose host resolves to a non-public address."""
    parts = parse_webhook(url)
    host = parts.hostname or ""
    try:
        addresses = await resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise TargetRefused(f"webhook: {host} does not resolve: {exc}") from exc
    if not allow_private:
        refuse_addresses(host, addresses)


def check_email(address: str) -> None:
    """A single plain address (no display name, no list, no header injection)."""
    local, at, domain = address.rpartition("@")
    bad = len(address) > 254 or not at or not local or "." not in domain.strip(".")
    if bad or any(c.isspace() or c in ",;<>\"'" or ord(c) < 32 for c in address):
        raise TargetRefused(f"email: {address!r} is not a plain e-mail address")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses non-public addresses: the client connects only to what passed."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host``, or ForbiddenAddress when any of them is not public."""
        found = await self.inner.resolve(host, port, family)
        if not self.allow_private:
            try:
                refuse_addresses(host, [r["host"] for r in found])
            except TargetRefused as exc:
                raise ForbiddenAddress(str(exc)) from None
        return found

    async def close(self) -> None:
        """Release the inner resolver."""
        await self.inner.close()


def check_literal(url: str, allow_private: bool) -> None:
    """At send time: an IP-literal host never reaches the resolver, so it is checked here."""
    parts = parse_webhook(url)
    address = literal(parts.hostname or "")
    if address is not None and not allow_private:
        try:
            refuse_addresses(parts.hostname or "", [str(address)])
        except TargetRefused as exc:
            raise ForbiddenAddress(str(exc)) from None
