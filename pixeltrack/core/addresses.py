"""An address parsed and spelt in C where C and ``ipaddress`` agree (the collector's and the enrichment's fast path).

``inet_pton`` takes a dotted quad only as ``ipaddress`` does (four decimal
octets up to 255, no leading zeros), and such text is already canonical.
What it takes as IPv6 ``ipaddress`` takes as the same address, and
``inet_ntop`` spells it as ``str`` does (lower case, no leading zeros, the
first longest run of two or more zero groups as "::") except for the forms
with an IPv4 tail, "::a.b.c.d" and "::ffff:a.b.c.d", both in ::/80: that
block (with the IPv4-mapped addresses, which both callers turn into IPv4,
and loopback) is left to ``ipaddress``, as is everything C refuses (a
scope, "%eth0", spaces, other spellings).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

_ZEROS_80 = bytes(10)


def parse_in_c(text: str) -> tuple[IPv4Address | IPv6Address, str] | None:
    """(address, canonical text) of ``text``; None where ``ipaddress`` must decide (see the module)."""
    try:
        return IPv4Address(inet_pton(AF_INET, text)), text
    except (OSError, ValueError):
        pass
    try:
        packed = inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed[:10] == _ZEROS_80:
        return None
    return IPv6Address(packed), inet_ntop(AF_INET6, packed)
