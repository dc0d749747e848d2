"""The enrichment path gives exactly the rows of the plain reference path (the test oracle)."""

from __future__ import annotations

import ipaddress
import json
import random
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.enrich import OUTPUT_KEYS, EnrichConfig, Enricher, machine, run
from tests.aggregator.enrich.reference import enrich as oracle
from tests.aggregator.enrich.reference import in_networks
from tests.support.fixtures.enrich_hits import T0

CASES = json.loads((Path(__file__).parents[2] / "support" / "fixtures" / "user_agents.json").read_text(encoding="utf-8"))["cases"]
ODD_AGENTS = [None, "", "Mozilla/5.0", "Mozilla/5.0 HeyImageProxy", b"curl/8.5.0", 5, "5", " Mozilla/5.0 ", "x\x00y"]
ODD_ADDRESSES = [
    None, "", "not an ip", "::ffff:17.1.2.3", "2620:149::1", "2a01:b740::9", "2001:db8::7", "017.1.2.3",
    ipaddress.ip_address("64.235.150.1"), ipaddress.ip_address("17.0.0.1"), ipaddress.ip_address("2001:db8::1"),
    " 198.51.100.7", 17, b"1.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3", "\u0661.2.3.4", "0.0.0.0", "1.2.3.4\n",
]  # fmt: skip
REFERERS = [None, "https://www.google.com/search?q=linen+shirt", "https://mail.google.com/", "https://t.co/x",
            "https://shop.example/cart", "android-app://com.slack", "http://[bad", 7, ["x"]]  # fmt: skip
LINKS = [f"https://shop.example/p/{n}?utm_source=mail&utm_medium=email" for n in range(4)] + [
    "https://shop.example/sale?gclid=abc",
    "https://shop.example/plain",
]
LANGUAGES = ["en-US,en;q=0.9", "de-CH,de;q=0.9", "fr", "*", "", None, b"it-IT", 3]
KINDS = ["open", "open", "click", "click", "page", None]


def mix(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` hits: repeated agents and addresses, recipients clicking in bursts and slowly."""
    rng = random.Random(seed)
    agents = [case["ua"] for case in CASES] + ODD_AGENTS
    addresses = [f"198.51.{rng.randint(0, 3)}.{rng.randint(1, 254)}" for _ in range(60)] + [
        f"17.{rng.randint(0, 255)}.0.1" for _ in range(5)
    ] + ["148.163.130.2", "205.139.110.9"] + ODD_ADDRESSES  # fmt: skip
    hits = []
    at = T0
    for n in range(count):
        kind = rng.choice(KINDS)
        # mostly seconds apart, sometimes a burst within one second, sometimes right after sending
        at += timedelta(seconds=rng.choice((0.2, 0.4, 1.5, 30.0, 300.0)))
        hits.append({
            "hit_id": n, "received_at": rng.choice((at, at, at, at.replace(tzinfo=None), None, T0 + timedelta(seconds=3))),
            "kind": kind, "job_id": rng.choice((1, 1, 2, 3)), "recipient_id": rng.choice((None, *range(1, 40))),
            "link": rng.choice(LINKS) if kind in ("click", "page") else None,
            "url": rng.choice((None, None, "https://shop.example/?utm_source=newsletter", "https://shop.example/")),
            "page": None, "client_ip": rng.choice(addresses), "user_agent": agents[int(rng.paretovariate(1.0)) % len(agents)],
            "referer": rng.choice(REFERERS), "accept_language": rng.choice(LANGUAGES),
            "method": rng.choice(("GET",) * 8 + ("HEAD", "head", None)), "prefetch": rng.random() < 0.03,
        })  # fmt: skip
        if str(hits[-1]["method"]).upper() == "HEAD":
            hits[-1]["prefetch"] = True  # as the collector stores a HEAD
    return hits


# scanner rows of the mix with all rules / with burst and send-time rules off
# (204, 130 while any open in the call cleared a click: 3 clicks without
# browser traits have only opens more than PIXELTRACK_SCANNER_OPEN_AHEAD later)
BEHAVIOUR = (207, 133)
SENT_AT = {1: T0, 2: T0.replace(tzinfo=None), 3: None}
CONFIGS = [
    EnrichConfig(),
    EnrichConfig(ipv4_prefix=20, ipv6_prefix=56, internal_hosts=("shop.example",), scanner_burst_links=3),
    EnrichConfig(ipv4_prefix=32, ipv6_prefix=0, scanner_burst_seconds=0.5, scanner_send_seconds=0.0),
]


class TestSameRowsAsReference:
    """Every dict of the cached path equals the reference path's, key for key, in order."""

    @pytest.mark.parametrize("config", CONFIGS, ids=["default", "wide", "narrow"])
    def test_mix(self, config: EnrichConfig) -> None:
        hits = mix(3000, seed=11)
        cached = Enricher(config).enrich(hits, SENT_AT)
        reference = oracle(config, hits, SENT_AT)
        assert len(cached) == len(reference) == 3000
        assert cached == reference
        assert all(list(row.items()) == list(ref.items()) for row, ref in zip(cached, reference, strict=True))
        assert all(tuple(row) == OUTPUT_KEYS for row in cached)

    @pytest.mark.parametrize("v6_prefix", [0, 1, 33, 48, 64, 95, 96, 97, 112, 128])
    def test_addresses(self, v6_prefix: int) -> None:
        """Addresses of both versions in every spelling, IPv6 cut anywhere: the reference's place and mask.

        IPv6 is parsed, spelled and cut in C up to 96 bits (``run.parse_text``, ``run.mask_v6``); the
        forms with an IPv4 tail, a scope or anything ``inet_pton`` refuses go the reference way.
        """
        rng = random.Random(v6_prefix)
        written = [
            "::", "::1", "::2", "::ffff:17.1.2.3", "::ffff:1102:303", "::17.1.2.3", "::1:2:3", "0:0:0:0:0:1:0:0",
            "::1234:0:0", "fe80::1%eth0", "fe80::1", " 2001:db8::1", "2001:db8::1\n", "2001:DB8::A", "2001:db8:0:0:1::1",
            "2001:0db8:0000:0000:0000:0000:0000:0001", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1::", "2001:db8::",
            "1:0:0:2:0:0:0:3", "1:0:0:0:2:0:0:3", "2001:db8:1:2:3:4:5:6:7", "2001:db8:::1", "2001:db8::g", "::1.2.3.04",
            "1.2.3.4", "203.0.113.9", "2a00:1450:4001:82b::200e", "2620:149:a44::1",
        ]  # fmt: skip
        shuffled = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(100)]
        shuffled += [str(ipaddress.IPv6Address(1 << 125 | rng.getrandbits(125))) for _ in range(200)]  # 2000::/3
        shuffled += [ipaddress.IPv6Address(rng.getrandbits(128)).exploded.upper() for _ in range(100)]
        shuffled += [str(ipaddress.IPv6Address(rng.getrandbits(64) << 64)) for _ in range(100)]  # zero tails
        shuffled += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(100)]
        hits = [{"hit_id": n, "received_at": T0, "kind": "open", "job_id": 1, "recipient_id": n, "link": None,
                 "url": None, "page": None, "client_ip": address, "user_agent": "Mozilla/5.0 (Windows NT 10.0)",
                 "referer": None, "accept_language": None, "method": "GET", "prefetch": False}
                for n, address in enumerate(written + shuffled)]  # fmt: skip
        config = EnrichConfig(ipv6_prefix=v6_prefix)
        cached = Enricher(config).enrich(hits, SENT_AT)
        assert cached == oracle(config, hits, SENT_AT)
        masked = {row["client_ip_masked"] for row in cached[: len(written)]}
        assert {None, "::", "17.1.2.0"} <= masked
        assert any(m and ":" in m and m != "::" for m in masked) == (v6_prefix > 0)
        assert sum(row["country"] is not None for row in cached) > 80  # random IPv4 ones mostly have one

    def test_mix_has_every_kind_of_verdict(self) -> None:
        """The mix is worth comparing: every reason, and clicks only the behavioural rules flag."""
        hits = mix(3000, seed=11)
        rows = Enricher(EnrichConfig()).enrich(hits, SENT_AT)
        alone = Enricher(EnrichConfig(scanner_burst_links=99, scanner_send_seconds=-1.0)).enrich(hits, SENT_AT)
        reasons = Counter(row["machine_reason"] for row in rows)
        assert set(reasons) == {
            None,
            "apple_mpp",
            "gmail_proxy",
            "yahoo_proxy",
            "image_proxy",
            "crawler",
            "scanner",
            "prefetch",
        }
        assert (reasons["scanner"], Counter(row["machine_reason"] for row in alone)["scanner"]) == BEHAVIOUR
        # every machine row names its machine, no other row does
        assert all((row["machine_reason"] is None) == (row["machine_family"] is None) for row in rows)
        families = Counter(row["machine_family"] for row in rows if row["machine_reason"] == "scanner")
        assert {"link-check behaviour", "security gateway network", "Outlook link check"} <= set(families)

    def test_agent_cache_across_calls(self) -> None:
        enricher = Enricher(EnrichConfig())
        for seed in (1, 2, 3):
            hits = mix(700, seed)
            assert enricher.enrich(hits, SENT_AT) == oracle(EnrichConfig(), hits, SENT_AT)

    def test_address_tables_across_calls(self) -> None:
        """Addresses seen by an earlier call are answered from the enricher's tables, with the reference's rows."""
        enricher = Enricher(CONFIGS[1])
        first, second = mix(700, seed=1), mix(700, seed=2)  # the same 22 odd and scanner addresses, 65 others each
        assert enricher.enrich(first, SENT_AT) == oracle(CONFIGS[1], first, SENT_AT)
        spots, places = dict(enricher.spots), dict(enricher.places)
        kept = (str, ipaddress.IPv4Address, ipaddress.IPv6Address, type(None))  # other types are parsed each time
        assert set(spots) == {h["client_ip"] for h in first if isinstance(h["client_ip"], kept)}
        assert len(spots) > 60
        assert enricher.enrich(second, SENT_AT) == oracle(CONFIGS[1], second, SENT_AT)
        for raw, spot in spots.items():  # the same objects: a place's dict is one object in every call
            assert enricher.spots[raw] is spot
        assert all(enricher.places[place] is columns for place, columns in places.items())

    def test_full_tables_are_emptied(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(run, "LIMIT", 3)
        enricher = Enricher(EnrichConfig())
        for seed in (5, 6):
            hits = mix(1000, seed=seed)
            assert enricher.enrich(hits, SENT_AT) == oracle(EnrichConfig(), hits, SENT_AT)
            assert len(enricher.agents) <= 3 and len(enricher.spots) <= 3 and len(enricher.places) <= 3
            # a spot's geo columns are the places table's own dict (emptying places empties the spots too)
            for spot in enricher.spots.values():
                assert spot[0] is run.NOWHERE_SPOT[0] or any(spot[0] is c for c in enricher.places.values())

    def test_rows_are_separate_dicts(self) -> None:
        """The roll-up edits rows in place: no two rows may share a dict."""
        rows = Enricher(EnrichConfig()).enrich(mix(500, seed=8), SENT_AT)
        assert len({id(row) for row in rows}) == 500


class TestNetworkMasks:
    """``machine.in_masks`` (prefix sets by length) answers as the reference's ``address in network`` does."""

    def test_random_networks_and_addresses(self) -> None:
        rng = random.Random(7)
        networks = [ipaddress.ip_network(f"{ipaddress.IPv4Address(rng.getrandbits(32))}/{rng.choice((0, 8, 13, 24, 31, 32))}",
                                         strict=False) for _ in range(12)]  # fmt: skip
        networks += [ipaddress.ip_network(f"{ipaddress.IPv6Address(rng.getrandbits(128))}/{rng.choice((1, 32, 47, 64, 128))}",
                                          strict=False) for _ in range(12)]  # fmt: skip
        addresses: list[Any] = [None, ipaddress.ip_address("::ffff:17.1.2.3")]
        for net in networks:  # each network's first and last address, and the ones just outside it
            first, last = int(net.network_address), int(net.broadcast_address)
            addresses += [net.network_address, net.broadcast_address]
            addresses += [ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n)
                          for n in (first - 1, last + 1) if 0 <= n < 2**net.max_prefixlen]  # fmt: skip
        addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(300)]
        addresses += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(300)]
        for chosen in (networks, networks[:12], networks[12:], networks[3:4], []):
            masks = machine.network_masks(chosen)
            answers = [machine.in_masks(a, masks) for a in addresses]
            assert answers == [in_networks(a, chosen) for a in addresses]
            assert sum(answers) >= 2 * len(chosen)  # each network's first and last address at least
