"""Handler tuples into COPY rows, a column at a time: exact rows and exact repair counts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import uuid
from collections import Counter

from collector.cleaning import ClientAddress, parse_ip, parse_ip_text, parse_reference
from collector.rows import COLUMNS, HIT_FIELDS, RowMaker, Tally, text_column
from pixeltrack.core.config import parse_networks

PREFIX = bytes.fromhex("0123456789abcdef")
TS = 1_790_000_000.25  # 2026-09-21 14:13:20.25 UTC
AT = dt.datetime(2026, 9, 21, 14, 13, 20, 250000, tzinfo=dt.UTC)
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)"


def hit(**fields: object) -> tuple[object, ...]:
    """A handler tuple: an accepted open from 192.0.2.7 unless ``fields`` say otherwise."""
    base: dict[str, object] = {
        "ts": TS, "kind": "open", "job_id": 3, "recipient_id": 41, "link": None, "page": None,
        "peer": "192.0.2.7", "xff": None, "user_agent": UA, "referer": None, "accept_language": "de",
        "method": "GET", "prefetch": False, "reject_reason": None, "extra": None,
    }
    base.update(fields)
    return tuple(base[name] for name in HIT_FIELDS)


def as_dicts(rows: list[tuple[object, ...]]) -> list[dict[str, object]]:
    assert all(len(r) == len(COLUMNS) for r in rows)
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def maker(trusted: str = "") -> RowMaker:
    return RowMaker(PREFIX, ClientAddress(parse_networks(trusted)))


class TestRows:
    def test_clean_batch_passes_through(self) -> None:
        """Clean mail hits: ids prefix+counter, UTC times, address text, values as sent, tallies by kind."""
        m, tally = maker(), Tally()
        rows = as_dicts(m.rows([hit(), hit(kind="click", link="https://a.example/x", recipient_id=42),
                                hit(kind="doc", page=7, peer="2001:db8::1")], tally))
        assert [r["hit_id"] for r in rows] == [uuid.UUID(bytes=PREFIX + n.to_bytes(8, "big")) for n in (1, 2, 3)]
        assert [r["received_at"] for r in rows] == [AT] * 3
        assert [(r["kind"], r["job_id"], r["recipient_id"], r["link"], r["page"]) for r in rows] == [
            ("open", 3, 41, None, None), ("click", 3, 42, "https://a.example/x", None), ("doc", 3, 41, None, 7)]
        assert [r["client_ip"] for r in rows] == ["192.0.2.7", "192.0.2.7", "2001:db8::1"]
        assert {(r["user_agent"], r["accept_language"], r["method"], r["prefetch"]) for r in rows} == {
            (UA, "de", "GET", False)}
        assert all(r[c] is None for r in rows for c in ("url", "title", "visitor_id", "screen", "contact"))
        assert (tally.kinds, tally.reasons, tally.repairs) == (Counter(open=1, click=1, doc=1), Counter(), Counter())

    def test_counter_runs_on_across_batches(self) -> None:
        """The next batch's ids continue the counter: 4 and 5 after three rows."""
        m = maker()
        m.rows([hit(), hit(), hit()], Tally())
        ids = [r[0] for r in m.rows([hit(), hit()], Tally())]
        assert [i.bytes[8:] for i in ids] == [(4).to_bytes(8, "big"), (5).to_bytes(8, "big")]

    def test_rejected_tallied_by_reason(self) -> None:
        """Refused hits count under their reason, accepted ones under their kind."""
        tally = Tally()
        maker().rows([hit(), hit(job_id=0, recipient_id=None, reject_reason="bad_signature"),
                      hit(kind="click", job_id=0, recipient_id=None, reject_reason="bad_signature"),
                      hit(kind="doc", job_id=0, recipient_id=None, reject_reason="bad_page")], tally)
        assert (tally.kinds, tally.reasons) == (Counter(open=1), Counter(bad_signature=2, bad_page=1))

    def test_repairs_only_where_needed(self) -> None:
        """A dirty value is cut, stripped or re-encoded and counted; its clean neighbours stay as sent."""
        tally = Tally()
        rows = as_dicts(maker().rows([
            hit(user_agent="x" * 1500), hit(user_agent="a\x00b"), hit(referer="https://b.example/\udcff"),
            hit(accept_language="fr"), hit(user_agent=None),
        ], tally))
        assert [r["user_agent"] for r in rows] == ["x" * 1024, "ab", UA, UA, None]
        assert [r["referer"] for r in rows] == [None, None, "https://b.example/\ufffd", None, None]
        assert [r["accept_language"] for r in rows] == ["de", "de", "de", "fr", "de"]
        assert tally.repairs == Counter(too_long=1, nul_byte=1, bad_encoding=1)

    def test_forwarded_for_from_trusted_proxy_only(self) -> None:
        """X-Forwarded-For is believed from a trusted peer only; garbage hops are counted."""
        tally = Tally()
        rows = maker("10.0.0.0/8").rows([
            hit(peer="10.0.0.5", xff="198.51.100.9, 10.0.0.7"), hit(peer="192.0.2.7", xff="198.51.100.9"),
            hit(peer="10.0.0.5", xff="not-an-ip"), hit(peer="10.0.0.5"),
        ], tally)
        assert [r[COLUMNS.index("client_ip")] for r in rows] == ["198.51.100.9", "192.0.2.7", "10.0.0.5", "10.0.0.5"]
        assert tally.repairs == Counter(bad_forwarded_for=1)

    def test_forwarded_for_ipv6_and_mapped(self) -> None:
        """Hops in IPv6 and IPv4-mapped form: stored in their canonical text, a mapped one as IPv4."""
        rows = maker("10.0.0.0/8, 2001:db8:ffff::/48").rows([
            hit(peer="10.0.0.5", xff="2001:DB8:0:0:1::1, 2001:db8:ffff::9"), hit(peer="10.0.0.5", xff="::ffff:198.51.100.9"),
            hit(peer="2001:db8:ffff::1", xff="2001:0db8:0000:0000:0000:0000:0000:0001"), hit(peer="::ffff:10.1.2.3"),
            hit(peer="10.0.0.5", xff="fe80::1%eth0"),
        ], Tally())  # fmt: skip
        assert [r[COLUMNS.index("client_ip")] for r in rows] == [
            "2001:db8::1:0:0:1", "198.51.100.9", "2001:db8::1", "10.1.2.3", "fe80::1"]

    def test_addresses_parse_as_ipaddress_does(self) -> None:
        """Every spelling: the C fast path gives ipaddress's address and text, or goes its way."""
        rng = random.Random(5)
        texts = [
            "::", "::1", "::2", "::ffff:17.1.2.3", "::ffff:1102:303", "::17.1.2.3", "0:0:0:0:0:1:0:0", "::1234:0:0",
            "fe80::1%eth0", "fe80::1%", " 2001:db8::1", "2001:db8::1\n", "2001:DB8::A", "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8", "2001:db8:::1", "2001:db8::g", "::1.2.3.04", "1.2.3.04", "01.2.3.4", "1.2.3", "1.2.3.4.5",
            "256.1.1.1", "\u0661.2.3.4", "1.2.3.4\x00", "", " ", "0.0.0.0", "255.255.255.255", "1.2.3.4 ", "x",
        ]  # fmt: skip
        texts += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(300)]
        texts += [ipaddress.IPv6Address(rng.getrandbits(128)).exploded.upper() for _ in range(100)]
        texts += [str(ipaddress.IPv6Address(rng.getrandbits(64) << 64)) for _ in range(100)]
        texts += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(300)]
        for text in texts:
            reference = parse_reference(text)
            assert (parse_ip(text), parse_ip_text(text)) == (reference, None if reference is None else str(reference))
        assert sum(parse_ip(t) is None for t in texts) == 13  # the 13 misspelt ones, from "2001:db8:::1" on

    def test_page_view_extras(self) -> None:
        """Website extras fill their columns, cut at their limits; mail hits beside them stay empty."""
        tally = Tally()
        extra = {"url": "https://s.example/p", "title": "T" * 600, "visitor_id": "v123456789", "screen": None}
        rows = as_dicts(maker().rows([hit(kind="page", extra=extra), hit()], tally))
        assert [(r["url"], r["title"], r["visitor_id"], r["screen"], r["contact"]) for r in rows] == [
            ("https://s.example/p", "T" * 512, "v123456789", None, None), (None, None, None, None, None)]
        assert tally.repairs == Counter(too_long=1)

    def test_empty_batch(self) -> None:
        """No hits, no rows, the counter unchanged."""
        m = maker()
        assert (m.rows([], Tally()), m.count) == ([], 0)


class TestTextColumn:
    def test_clean_column_is_returned_as_is(self) -> None:
        """A column that needs no repair is the same object, not a copy."""
        values = ("a", None, "", "b" * 10)
        assert text_column(values, 10, Counter()) is values

    def test_limit_is_inclusive(self) -> None:
        """A value exactly at the limit is kept; one over it is cut and counted once."""
        repairs: Counter[str] = Counter()
        assert text_column(("ab", "abc"), 2, repairs) == ["ab", "ab"]
        assert repairs == Counter(too_long=1)
