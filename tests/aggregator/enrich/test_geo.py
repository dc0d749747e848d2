"""Location from MaxMind-format databases, the embedded default, and masking."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from aggregator.enrich import EnrichConfig, Enricher, mask_ip
from pixeltrack.core.config import ConfigError
from tests.support.fixtures.enrich_hits import hit

CITY = {
    "country": {"iso_code": "DE", "names": {"en": "Germany"}},
    "subdivisions": [{"iso_code": "BY", "names": {"en": "Bavaria"}}],
    "city": {"names": {"en": "Munich"}},
}
ASN = {"autonomous_system_number": 64500, "autonomous_system_organization": "Example Net"}
IPINFO_LITE = {"country_code": "FR", "country": "France", "asn": "AS64501", "as_name": "Lite Telecom"}


def write_db(path: Path, networks: dict[str, dict[str, object]], database_type: str) -> Path:
    """An IPv6 (IPv4-compatible) .mmdb with one record per network."""
    writer = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """A GeoLite2-City-like, a GeoLite2-ASN-like and an IPinfo-Lite-like database."""
    folder = tmp_path_factory.mktemp("geo")
    city = write_db(folder / "city.mmdb", {"203.0.113.0/24": CITY, "2001:db8:1::/48": CITY}, "GeoLite2-City")
    asn = write_db(folder / "asn.mmdb", {"203.0.113.0/24": ASN, "2001:db8:1::/48": ASN}, "GeoLite2-ASN")
    lite = write_db(folder / "lite.mmdb", {"198.51.100.0/24": IPINFO_LITE}, "ipinfo lite.mmdb")
    return city, asn, lite


def located(enricher: Enricher, address: str) -> tuple[object, ...]:
    """(country, region, city, asn, network) of one open from ``address``."""
    out = enricher.enrich([hit(client_ip=address)])[0]
    return out["country"], out["region"], out["city"], out["asn"], out["network"]


class TestDatabases:
    """Configured databases answer country, region, city and network."""

    def test_geolite2_city_and_asn(self, databases: tuple[Path, ...]) -> None:
        enricher = Enricher(EnrichConfig(geoip_paths=databases))
        assert located(enricher, "203.0.113.77") == ("DE", "Bavaria", "Munich", 64500, "Example Net")

    def test_ipv6(self, databases: tuple[Path, ...]) -> None:
        enricher = Enricher(EnrichConfig(geoip_paths=databases))
        assert located(enricher, "2001:db8:1:2::5") == ("DE", "Bavaria", "Munich", 64500, "Example Net")

    def test_ipinfo_lite_flat_layout(self, databases: tuple[Path, ...]) -> None:
        enricher = Enricher(EnrichConfig(geoip_paths=databases))
        assert located(enricher, "198.51.100.9") == ("FR", None, None, 64501, "Lite Telecom")

    def test_ipv4_object(self, databases: tuple[Path, ...]) -> None:
        enricher = Enricher(EnrichConfig(geoip_paths=databases))
        out = enricher.enrich([hit(client_ip=ipaddress.ip_address("203.0.113.77"))])[0]
        assert (out["city"], out["client_ip_masked"]) == ("Munich", "203.0.113.0")

    def test_unknown_address(self, databases: tuple[Path, ...]) -> None:
        enricher = Enricher(EnrichConfig(geoip_paths=databases, embedded_geo=False))
        assert located(enricher, "192.0.2.1") == (None, None, None, None, None)


class TestMissingDatabase:
    """A configured database that cannot be read stops start-up, naming the variable."""

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="PIXELTRACK_GEOIP: cannot read .*nope.mmdb"):
            Enricher(EnrichConfig(geoip_paths=(tmp_path / "nope.mmdb",)))

    def test_not_a_database(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.mmdb"
        junk.write_bytes(b"not a database")
        with pytest.raises(ConfigError, match="junk.mmdb"):
            Enricher(EnrichConfig(geoip_paths=(junk,)))


class TestEmbeddedDefault:
    """With no database configured the embedded data still gives the country, offline."""

    def test_google_dns(self) -> None:
        assert located(Enricher(EnrichConfig()), "8.8.8.8") == ("US", None, None, None, None)

    def test_heise_de(self) -> None:
        assert located(Enricher(EnrichConfig()), "193.99.144.80")[0] == "DE"

    def test_ipv6_google(self) -> None:
        assert located(Enricher(EnrichConfig()), "2001:4860:4860::8888")[0] == "US"

    def test_private_address_has_no_country(self) -> None:
        assert located(Enricher(EnrichConfig()), "10.1.2.3")[0] is None

    def test_can_be_turned_off(self) -> None:
        assert located(Enricher(EnrichConfig(embedded_geo=False)), "8.8.8.8")[0] is None

    def test_database_fills_gaps_before_embedded(self, databases: tuple[Path, ...]) -> None:
        """An address the databases do not know still gets its country."""
        enricher = Enricher(EnrichConfig(geoip_paths=databases))
        assert located(enricher, "8.8.8.8") == ("US", None, None, None, None)


class TestMasking:
    """Addresses are cut to /24 (or /16) and /48."""

    def test_v4_24(self) -> None:
        assert mask_ip("203.0.113.77") == "203.0.113.0"

    def test_v4_16(self) -> None:
        assert mask_ip("203.0.113.77", v4_prefix=16) == "203.0.0.0"

    def test_v6_48(self) -> None:
        assert mask_ip("2001:db8:abcd:1234:5678::1") == "2001:db8:abcd::"

    def test_v4_mapped_v6_is_v4(self) -> None:
        assert mask_ip("::ffff:203.0.113.77") == "203.0.113.0"

    def test_address_object(self) -> None:
        assert mask_ip(ipaddress.ip_address("198.51.100.200")) == "198.51.100.0"

    def test_invalid(self) -> None:
        assert [mask_ip(v) for v in ("", None, "300.1.1.1", "abc", "1.2.3.4/24")] == [None] * 5

    def test_enricher_uses_configured_prefix(self) -> None:
        enricher = Enricher(EnrichConfig(ipv4_prefix=16, embedded_geo=False))
        rows = enricher.enrich([hit(client_ip="203.0.113.77"), hit(client_ip="2001:db8:abcd:1234::1")])
        assert [row["client_ip_masked"] for row in rows] == ["203.0.0.0", "2001:db8:abcd::"]
