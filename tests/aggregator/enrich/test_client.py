"""Client classification of real user agents, and input that must not crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregator.enrich import OUTPUT_KEYS, EnrichConfig, Enricher
from tests.aggregator.enrich.reference import enrich as oracle
from tests.support.fixtures.enrich_hits import CHROME, hit

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "support" / "fixtures" / "user_agents.json").read_text(encoding="utf-8")
)["cases"]


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """One enricher with the default configuration."""
    return Enricher(EnrichConfig())


class TestUserAgentFixtures:
    """Each real agent lands in its expected device class, mail client and reason."""

    @pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
    def test_case(self, enricher: Enricher, case: dict[str, Any]) -> None:
        kind = case.get("kind", "open")
        row = hit(
            kind=kind,
            recipient_id=None,
            link="https://shop.example/" if kind == "click" else None,
            client_ip=case.get("client_ip", "198.51.100.7"),
            user_agent=case["ua"],
        )
        out = enricher.enrich([row])[0]
        assert {key: out[key] for key in case["expect"]} == case["expect"]


class TestVersions:
    """Browser versions keep major.minor, OS versions up to the patch."""

    def test_chrome_on_windows(self, enricher: Enricher) -> None:
        out = enricher.enrich([hit(user_agent=CHROME)])[0]
        assert (out["browser"], out["browser_version"], out["os"], out["os_version"]) == (
            "Chrome",
            "124.0",
            "Windows",
            "10",
        )

    def test_safari_on_mac(self, enricher: Enricher) -> None:
        agent = next(case["ua"] for case in CASES if case["name"] == "desktop_safari")
        out = enricher.enrich([hit(user_agent=agent)])[0]
        assert (out["browser_version"], out["os"], out["os_version"]) == ("17.4", "Mac OS X", "10.15.7")


HOSTILE: list[object] = [
    "\x00" * 10,
    "Mozilla/5.0\x00(evil)",
    "A" * 1_000_000,
    "Mozilla/5.0 (" * 50_000,
    "\ud800\udfff broken surrogates",
    b"\xff\xfe bytes",
    12345,
    "",
]


class TestHostileInput:
    """Hostile header values give None/unknown fields, never an exception."""

    @pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
    def test_every_field_survives(self, enricher: Enricher, value: object) -> None:
        row = hit(
            kind="page",
            user_agent=value,
            client_ip=value,
            referer=value,
            accept_language=value,
            link=value,
            url=value,
        )
        out = enricher.enrich([row])[0]
        assert tuple(out) == OUTPUT_KEYS
        assert out["client_ip_masked"] is None
        assert out["country"] is None
        for text in out.values():
            assert not isinstance(text, str) or ("\x00" not in text and len(text) <= 200)
            if isinstance(text, str):
                text.encode("utf-8")

    def test_nul_agent_is_unknown(self, enricher: Enricher) -> None:
        out = enricher.enrich([hit(user_agent="\x00\x00")])[0]
        assert (out["device_class"], out["traffic"], out["browser"]) == ("unknown", "unknown", None)

    def test_invalid_addresses(self, enricher: Enricher) -> None:
        rows = [hit(client_ip=value) for value in ("999.1.1.1", "1.2.3", "fe80::1%", "::g", "1.2.3.4\x00")]
        out = enricher.enrich(rows)
        assert [row["client_ip_masked"] for row in out] == [None, None, None, None, None]


class TestOutputShape:
    """One dict per hit in input order, with exactly the enrichment columns."""

    def test_order_and_keys(self, enricher: Enricher) -> None:
        agents = [CASES[0]["ua"], CHROME, None, "curl/8.5.0"]
        out = enricher.enrich([hit(user_agent=agent, kind="page") for agent in agents])
        assert [row["browser"] for row in out] == [None, "Chrome", None, "curl"]
        assert all(tuple(row) == OUTPUT_KEYS for row in out)
        assert len(OUTPUT_KEYS) == 25

    def test_empty_batch(self, enricher: Enricher) -> None:
        assert enricher.enrich([]) == []

    def test_uncached_gives_same_rows(self) -> None:
        rows = [hit(user_agent=case["ua"], kind=case.get("kind", "open")) for case in CASES]
        cached = Enricher(EnrichConfig()).enrich(rows)
        assert oracle(EnrichConfig(), rows) == cached
