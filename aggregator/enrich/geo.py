"""Where an address is: country, region, city and network, plus masking.

Databases are MaxMind-format (.mmdb) files read with ``maxminddb``; several
can be configured (e.g. a City and an ASN database) and the first one that
knows a field answers it. Three record layouts are understood: MaxMind
GeoLite2/GeoIP2 (also used by DB-IP Lite), and IPinfo's flat layout
(``country_code``, ``asn`` as "AS123", ``as_name``). With no database, or for
an address none of them knows, the country comes from the registry data
embedded in the ``iptocc`` package: offline, no download at run time.

Look-ups use the full address; only the result and the masked address leave
this module.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import maxminddb
from iptocc import country_code

from aggregator.enrich.text import label
from pixeltrack.core.config import ConfigError

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Geo:
    """What the databases say about one address."""

    country: str | None = None
    region: str | None = None
    city: str | None = None
    asn: int | None = None
    network: str | None = None

    def missing(self) -> bool:
        """True while some field is still unknown."""
        return None in (self.country, self.region, self.city, self.asn, self.network)


NOWHERE = Geo()


def parse_ip(value: object) -> Address | None:
    """An address from a str or ipaddress object; None for anything invalid."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address: Address = value
    else:
        # No cleaning here: an address with stray bytes in it is not an address.
        if not isinstance(value, str) or len(value) > 64 or not value.isprintable():
            return None
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def mask_ip(ip: object, v4_prefix: int = 24, v6_prefix: int = 48) -> str | None:
    """The network address of ``ip`` cut to the prefix, e.g. '203.0.113.0'; None when invalid."""
    address = parse_ip(ip)
    if address is None:
        return None
    prefix = v4_prefix if address.version == 4 else v6_prefix
    network = ipaddress.ip_network((address, prefix), strict=False)
    return str(network.network_address)


def name_of(record: Any) -> str | None:
    """English name of a GeoLite2 sub-record ({'names': {'en': ...}})."""
    if isinstance(record, Mapping):
        names = record.get("names")
        if isinstance(names, Mapping):
            return label(names.get("en"))
    return None


def asn_number(value: Any) -> int | None:
    """ASN from 15169, '15169' or 'AS15169'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 2**32 else None
    if isinstance(value, str):
        digits = value.upper().removeprefix("AS")
        if digits.isdigit() and 0 < int(digits) < 2**32:
            return int(digits)
    return None


def country_of(record: Mapping[str, Any]) -> str | None:
    """ISO country code from any known layout."""
    country = record.get("country")
    registered = record.get("registered_country")
    code = record.get("country_code")
    if isinstance(country, Mapping):
        code = country.get("iso_code")
    elif code is None and isinstance(country, str) and len(country) == 2:
        code = country  # IPinfo's other layouts carry the code in "country"
    if code is None and isinstance(registered, Mapping):
        code = registered.get("iso_code")
    code = label(code, 2)
    return code.upper() if code else None


def place_of(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(region, city) from GeoLite2 sub-records or IPinfo's flat strings."""
    subdivisions = record.get("subdivisions")
    region = None
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], Mapping):
        region = name_of(subdivisions[0]) or label(subdivisions[0].get("iso_code"))
    elif isinstance(record.get("region"), str):
        region = label(record["region"])
    city = record.get("city")
    return region, name_of(city) if isinstance(city, Mapping) else label(city)


def from_record(record: Mapping[str, Any]) -> Geo:
    """Fields of one database record, whichever of the known layouts it has."""
    region, city = place_of(record)
    asn = asn_number(record.get("autonomous_system_number", record.get("asn")))
    network = label(record.get("autonomous_system_organization") or record.get("as_name"))
    return Geo(country_of(record), region, city, asn, network)


def merge(first: Geo, second: Geo) -> Geo:
    """``first`` with its gaps filled from ``second``."""
    return replace(
        first,
        country=first.country or second.country,
        region=first.region or second.region,
        city=first.city or second.city,
        asn=first.asn or second.asn,
        network=first.network or second.network,
    )


class GeoLookup:
    """Reads the configured databases, then the embedded country data."""

    def __init__(self, paths: Iterable[Path] = (), embedded: bool = True) -> None:
        self._readers = [open_reader(path) for path in paths]
        self._embedded = embedded

    def lookup(self, address: Address | None, text: str | None = None) -> Geo:
        """Country, region, city and network of ``address`` as far as known (``text``: its str, if at hand)."""
        if address is None:
            return NOWHERE
        geo = NOWHERE
        for reader in self._readers:
            try:
                record = reader.get(address)
            except (ValueError, maxminddb.InvalidDatabaseError) as exc:
                log.debug("geo look-up failed: %s", exc)
                continue
            if isinstance(record, Mapping):
                geo = merge(geo, from_record(record))
            if not geo.missing():
                break
        if geo.country is None and self._embedded:
            country = embedded_country(address, text)
            geo = Geo(country=country) if geo is NOWHERE else replace(geo, country=country)
        return geo

    def place(self, address: Address, text: str | None = None) -> tuple[str | None, str | None, str | None, int | None,
                                                                        str | None]:
        """``lookup``'s (country, region, city, asn, network) as a tuple; with no database, without a ``Geo``."""
        if not self._readers:
            return (embedded_country(address, text) if self._embedded else None), None, None, None, None
        geo = self.lookup(address, text)
        return geo.country, geo.region, geo.city, geo.asn, geo.network

    def close(self) -> None:
        """Release the database files."""
        for reader in self._readers:
            reader.close()
        self._readers = []


def open_reader(path: Path) -> maxminddb.Reader:
    """Open one database; a missing or broken file stops start-up, naming it."""
    try:
        return maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"PIXELTRACK_GEOIP: cannot read {path}: {exc}") from exc


def embedded_country(address: Address, text: str | None = None) -> str | None:
    """Country from the registry data shipped inside ``iptocc`` (``text``: ``str(address)``, if at hand)."""
    return country_code(text or str(address))
