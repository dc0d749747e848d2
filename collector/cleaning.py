"""Validating and cleaning what a client sent, at the edge of the batch.

Everything here runs in the flusher, once per batch, never in the request
handler: the handler only copies references. Nothing a client can send may
fail a COPY, so text is cut, stripped of NUL bytes and made valid UTF-8, and
each repair is counted by reason.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from functools import lru_cache

from pixeltrack.core.config import Network

# Longest value kept per header; longer ones are cut (and counted).
LIMITS = {"user_agent": 1024, "referer": 2048, "accept_language": 256, "link": 2048}
XFF_MAX_HOPS = 32


def clean_text(value: str | None, limit: int, repairs: Counter[str]) -> str | None:
    """``value`` made safe for a PostgreSQL text column."""
    if value is None:
        return None
    if len(value) > limit:
        value = value[:limit]
        repairs["too_long"] += 1
    if "\x00" in value:
        value = value.replace("\x00", "")
        repairs["nul_byte"] += 1
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = value.encode("utf-8", "replace")
            value = raw.decode("utf-8", "replace")
            repairs["bad_encoding"] += 1
    return value


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from text, or None; IPv4-mapped IPv6 becomes IPv4."""
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


class ClientAddress:
    """Resolves the client: the peer, or the right-most untrusted X-Forwarded-For hop."""

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted
        self._is_trusted = lru_cache(maxsize=4096)(self._check)

    def _check(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self.trusted)

    def resolve(self, peer: str | None, xff: str | None, repairs: Counter[str]) -> str | None:
        """The address to record, as text, or None when there is none."""
        addr = parse_ip(peer) if peer else None
        if addr is None or not xff or not self.trusted or not self._is_trusted(addr):
            return str(addr) if addr is not None else None
        hops = xff.split(",")[-XFF_MAX_HOPS:]
        for hop in reversed(hops):
            candidate = parse_ip(hop)
            if candidate is None:
                repairs["bad_forwarded_for"] += 1
                break  # garbage ends the chain: keep the last address we could believe
            addr = candidate
            if not self._is_trusted(candidate):
                break
        return str(addr)


# PostgreSQL's binary inet: family (2 = IPv4, 3 = IPv6), prefix bits, is_cidr, length, address.
_INET_FAMILY = {4: 2, 6: 3}


@lru_cache(maxsize=65536)
def inet_binary(text: str) -> bytes:
    """The binary wire form of an address, made once per distinct address.

    asyncpg's own inet encoder parses the text with ``ipaddress`` for every
    row, which was most of the COPY's client-side CPU; a hit batch repeats
    few addresses, so caching the encoded form removes that cost.
    """
    addr = ipaddress.ip_address(text)
    packed = addr.packed
    return bytes((_INET_FAMILY[addr.version], len(packed) * 8, 0, len(packed))) + packed


def inet_text(data: bytes) -> str:
    """Decode the binary wire form (the collector never reads addresses, but a codec needs both ways)."""
    return str(ipaddress.ip_address(data[4:]))


async def use_cached_inet(conn: object) -> None:
    """Pool ``init``: encode inet values with ``inet_binary`` on this connection."""
    await conn.set_type_codec(  # type: ignore[attr-defined]
        "inet", schema="pg_catalog", encoder=inet_binary, decoder=inet_text, format="binary"
    )
