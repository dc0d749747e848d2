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

from pixeltrack.core.addresses import parse_in_c
from pixeltrack.core.config import Network

# Longest value kept per header; longer ones are cut (and counted).
LIMITS = {"user_agent": 1024, "referer": 2048, "accept_language": 256, "link": 2048}
XFF_MAX_HOPS = 32
# Distinct addresses whose parse (and text) the flusher keeps: behind a load balancer every client
# address comes in X-Forwarded-For, and a busy collector sees tens of thousands (4,096 missed 40%
# of 20,000: 8.6-11.5 us a hit in resolve, most of it ipaddress's parsing and spelling of IPv6).
ADDRESSES = 65_536
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def parse_ip(text: str) -> Address | None:
    """An address from text, or None; IPv4-mapped IPv6 becomes IPv4 (kept for ADDRESSES distinct texts)."""
    return _parse(text)[0]


@lru_cache(maxsize=ADDRESSES)
def _parse(text: str) -> tuple[Address | None, str | None]:
    """``parse_reference`` of ``text`` and the address's canonical text (``str``), in C where C agrees."""
    found = parse_in_c(text.strip().split("%", 1)[0])
    if found is not None:
        return found
    addr = parse_reference(text)
    return addr, None if addr is None else str(addr)


def parse_ip_text(text: str) -> str | None:
    """``str(parse_ip(text))``, None for no address."""
    return _parse(text)[1]


def parse_reference(text: str) -> Address | None:
    """The definition of ``parse_ip``, all in ``ipaddress``."""
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
        # (netmask, network address) as integers, by version: a test is a few integer operations.
        self._masks = {v: tuple((int(n.netmask), int(n.network_address)) for n in trusted if n.version == v)
                       for v in (4, 6)}  # fmt: skip

    def _is_trusted(self, addr: Address) -> bool:
        number = int(addr)
        return any(number & mask == base for mask, base in self._masks[addr.version])

    def resolve(self, peer: str | None, xff: str | None, repairs: Counter[str]) -> str | None:
        """The address to record, as text, or None when there is none."""
        addr, text = _parse(peer) if peer else (None, None)
        if addr is None or not xff or not self.trusted or not self._is_trusted(addr):
            return text
        hops = xff.split(",")[-XFF_MAX_HOPS:]
        for hop in reversed(hops):
            candidate, candidate_text = _parse(hop)
            if candidate is None:
                repairs["bad_forwarded_for"] += 1
                break  # garbage ends the chain: keep the last address we could believe
            addr, text = candidate, candidate_text
            if not self._is_trusted(candidate):
                break
        return text


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
