"""Machine-or-person rules built from a recipient's event sequences."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from aggregator.enrich import EnrichConfig, Enricher
from aggregator.enrich.machine import Outside, link_key
from tests.support.fixtures.enrich_hits import IPHONE_MAIL, T0, click, hit

LINKS = ["https://shop.example/a", "https://shop.example/b", "https://shop.example/c"]


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """One enricher with the default rule windows."""
    return Enricher(EnrichConfig())


def reasons(enricher: Enricher, rows: list[dict[str, object]], **kwargs: object) -> list[str | None]:
    """machine_reason of each row."""
    return [row["machine_reason"] for row in enricher.enrich(rows, **kwargs)]  # type: ignore[arg-type]


class TestAllLinksAtOnce:
    """Every link clicked within two seconds: all those clicks are a scanner's."""

    def test_three_links_in_a_second(self, enricher: Enricher) -> None:
        rows = [hit(0), click(300.0, LINKS[0]), click(300.4, LINKS[1]), click(300.9, LINKS[2])]
        assert reasons(enricher, rows) == [None, "scanner", "scanner", "scanner"]

    def test_other_recipient_is_untouched(self, enricher: Enricher) -> None:
        rows = [
            click(300.0, LINKS[0]),
            click(300.5, LINKS[1]),
            hit(10, recipient_id=2),
            click(301, LINKS[0], recipient_id=2),
        ]
        assert reasons(enricher, rows) == ["scanner", "scanner", None, None]

    def test_same_link_twice_is_a_double_click(self, enricher: Enricher) -> None:
        rows = [hit(0), click(60.0, LINKS[0]), click(60.3, LINKS[0])]
        assert reasons(enricher, rows) == [None, None, None]

    def test_window_is_configurable(self) -> None:
        rows = [hit(0), click(60.0, LINKS[0]), click(63.0, LINKS[1])]
        assert reasons(Enricher(EnrichConfig()), rows) == [None, None, None]
        wide = Enricher(EnrichConfig(scanner_burst_seconds=5.0))
        assert reasons(wide, rows) == [None, "scanner", "scanner"]


class TestNoOpenNoBrowser:
    """A click with no open and no browser traits is a scanner's."""

    def test_no_agent_no_language(self, enricher: Enricher) -> None:
        rows = [click(600, LINKS[0], user_agent=None, accept_language=None)]
        assert reasons(enricher, rows) == ["scanner"]

    def test_browser_without_accept_language(self, enricher: Enricher) -> None:
        rows = [click(600, LINKS[0], accept_language=None)]
        assert reasons(enricher, rows) == ["scanner"]

    def test_with_an_open_it_is_not_told(self, enricher: Enricher) -> None:
        rows = [hit(0), click(600, LINKS[0], user_agent=None, accept_language=None)]
        out = enricher.enrich(rows)
        assert [(row["traffic"], row["machine_reason"]) for row in out] == [("human", None), ("unknown", None)]

    def test_browser_click_without_open_is_human(self, enricher: Enricher) -> None:
        """Images off: no open, but a real browser with a language."""
        out = enricher.enrich([click(600, LINKS[0])])
        assert (out[0]["traffic"], out[0]["machine_reason"]) == ("human", None)


class TestOpenLookAhead:
    """An open clears a click without browser traits if it came no later than A seconds after it (default 10)."""

    def test_open_seconds_later_clears(self, enricher: Enricher) -> None:
        rows = [click(600, LINKS[0], accept_language=None), hit(609.5)]
        assert reasons(enricher, rows) == [None, None]

    def test_open_a_minute_later_does_not(self, enricher: Enricher) -> None:
        """In one call or two, the open a minute after the click comes too late to clear it."""
        rows = [click(600, LINKS[0], accept_language=None), hit(660)]
        assert reasons(enricher, rows) == ["scanner", None]

    def test_look_ahead_is_configurable(self) -> None:
        rows = [click(600, LINKS[0], accept_language=None), hit(660)]
        assert reasons(Enricher(EnrichConfig(scanner_open_ahead=60.0)), rows) == [None, None]


class TestContext:
    """With a context, a recipient's events beyond the hits given count; recipients missing from it are not grouped."""

    def test_earlier_open_clears(self, enricher: Enricher) -> None:
        rows = [click(600, LINKS[0], accept_language=None)]
        context = {(7, 1): Outside(opens=[T0])}
        assert reasons(enricher, rows, context=context) == [None]

    def test_open_too_late_does_not(self, enricher: Enricher) -> None:
        rows = [click(600, LINKS[0], accept_language=None)]
        context = {(7, 1): Outside(opens=[T0 + timedelta(seconds=611)])}
        assert reasons(enricher, rows, context=context) == ["scanner"]

    def test_burst_with_clicks_beyond(self, enricher: Enricher) -> None:
        """A click 1.5 s after one on another link (rolled up before): both a burst; only the given one is told."""
        rows = [hit(0), click(301.5, LINKS[1])]
        context = {(7, 1): Outside(clicks=[(T0 + timedelta(seconds=300), link_key(LINKS[0]))])}
        assert reasons(enricher, rows, context=context) == [None, "scanner"]
        same_link = {(7, 1): Outside(clicks=[(T0 + timedelta(seconds=300), link_key(LINKS[1]))])}
        assert reasons(enricher, rows, context=same_link) == [None, None]

    def test_unlinked_recipient_gets_one_hit_rules_only(self, enricher: Enricher) -> None:
        """Recipient 2 is not in the context (blind, erased, key destroyed): no burst, no no-open rule."""
        rows = [click(300.0, LINKS[0], recipient_id=2, accept_language=None), click(300.5, LINKS[1], recipient_id=2)]
        assert reasons(enricher, rows, context={(7, 1): Outside()}) == [None, None]
        assert reasons(enricher, rows) == ["scanner", "scanner"]


class TestClickRightAfterSend:
    """A click within seconds of the job's send time is a scanner's."""

    def test_three_seconds_after_send(self, enricher: Enricher) -> None:
        rows = [hit(0), click(3.0, LINKS[0])]
        assert reasons(enricher, rows, sent_at={7: T0}) == [None, "scanner"]

    def test_a_minute_after_send(self, enricher: Enricher) -> None:
        rows = [hit(0), click(60.0, LINKS[0])]
        assert reasons(enricher, rows, sent_at={7: T0}) == [None, None]

    def test_unknown_send_time(self, enricher: Enricher) -> None:
        rows = [hit(0), click(3.0, LINKS[0])]
        assert reasons(enricher, rows, sent_at={7: None}) == [None, None]

    def test_blind_job_without_recipient(self, enricher: Enricher) -> None:
        rows = [click(2.0, LINKS[0], recipient_id=None)]
        assert reasons(enricher, rows, sent_at={7: T0 - timedelta(seconds=0)}) == ["scanner"]


class TestPerson:
    """A person opens, then clicks one link a minute later: human."""

    def test_open_then_click(self, enricher: Enricher) -> None:
        rows = [hit(0, user_agent=IPHONE_MAIL), click(60, LINKS[1])]
        out = enricher.enrich(rows, sent_at={7: T0 - timedelta(hours=1)})
        assert [(row["traffic"], row["machine_reason"], row["device_class"]) for row in out] == [
            ("human", None, "mobile"),
            ("human", None, "desktop"),
        ]

    def test_two_links_minutes_apart(self, enricher: Enricher) -> None:
        rows = [hit(0), click(60, LINKS[0]), click(240, LINKS[1])]
        assert reasons(enricher, rows) == [None, None, None]


class TestPrefetch:
    """HEAD requests and prefetch-flagged requests are machine traffic."""

    def test_head(self, enricher: Enricher) -> None:
        assert reasons(enricher, [click(600, LINKS[0], method="HEAD")]) == ["prefetch"]

    def test_prefetch_flag(self, enricher: Enricher) -> None:
        out = enricher.enrich([hit(0, prefetch=True)])
        assert (out[0]["traffic"], out[0]["machine_reason"]) == ("machine", "prefetch")


class TestConfigFromEnv:
    """Rule windows and lists come from PIXELTRACK_SCANNER_* variables."""

    def test_overrides(self) -> None:
        config = EnrichConfig.from_env(
            {
                "PIXELTRACK_SCANNER_BURST_SECONDS": "5",
                "PIXELTRACK_SCANNER_BURST_LINKS": "3",
                "PIXELTRACK_SCANNER_SEND_SECONDS": "30",
                "PIXELTRACK_SCANNER_OPEN_AHEAD": "20",
                "PIXELTRACK_SCANNER_AGENTS": "AcmeGuard, linkcheck",
                "PIXELTRACK_SCANNER_NETWORKS": "192.0.2.0/24",
                "PIXELTRACK_IPV4_PREFIX": "16",
                "PIXELTRACK_GEOIP": "/a.mmdb:/b.mmdb",
            }
        )
        assert (config.scanner_burst_seconds, config.scanner_burst_links, config.scanner_send_seconds) == (
            5.0,
            3,
            30.0,
        )
        assert (config.scanner_open_ahead, config.context_seconds) == (20.0, 20.0)
        assert config.scanner_agents == ("acmeguard", "linkcheck")
        assert [str(net) for net in config.scanner_networks] == ["192.0.2.0/24"]
        assert (config.ipv4_prefix, [str(p) for p in config.geoip_paths]) == (16, ["/a.mmdb", "/b.mmdb"])
        rows = [click(600, LINKS[0], user_agent="AcmeGuard/2.0 (+https://acme.example)")]
        assert reasons(Enricher(replace(config, geoip_paths=())), rows) == ["scanner"]

    def test_defaults(self) -> None:
        assert EnrichConfig.from_env({}) == EnrichConfig()

    def test_bad_prefix_names_the_variable(self) -> None:
        from pixeltrack.core.config import ConfigError

        with pytest.raises(ConfigError, match="PIXELTRACK_IPV4_PREFIX"):
            EnrichConfig.from_env({"PIXELTRACK_IPV4_PREFIX": "40"})
