"""The detection layers over public agent samples: crawlers come out machine, people never do.

Samples and their licences: tests/support/fixtures/agents/PROVENANCE.md.
Each test prints a table of every agent with its verdict (shown by pytest
on failure, or with -s).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aggregator.enrich import crawlers, layers
from aggregator.enrich.client import Client, parse_client

ROOT = Path(__file__).parents[3]
SAMPLES = ROOT / "tests" / "support" / "fixtures" / "agents"


def sample(name: str) -> list[dict[str, Any]]:
    """One of the sample files, a list of {"ua": ..., "source": ...}."""
    rows: list[dict[str, Any]] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return rows


def table(rows: list[tuple[str, Client]]) -> str:
    """verdict, reason / family, agent: one line each."""
    lines = []
    for ua, client in rows:
        verdict = "machine" if client.agent_reason else ("human" if client.browser_like else "unknown")
        lines.append(f"{verdict:8} {client.agent_reason or '-':12} {client.family or '-':32} {ua[:110]}")
    return "\n".join(lines)


def judged(name: str) -> list[tuple[str, Client]]:
    """Each agent of a sample with its parsed client, the table printed."""
    rows = [(row["ua"], parse_client(row["ua"])) for row in sample(name)]
    print(f"\n== {name}\n{table(rows)}")
    return rows


class TestPrimaryList:
    """Every agent drawn from crawler-user-agents 1.67.0 comes out machine."""

    def test_all_machine(self) -> None:
        rows = judged("crawlers_primary.json")
        missed = [(ua, c) for ua, c in rows if c.agent_reason is None]
        reasons = Counter(c.agent_reason for _, c in rows)
        assert len(rows) == 312 and len(rows) - len(missed) >= 200
        assert not missed, f"{len(missed)} of {len(rows)} missed:\n{table(missed)}"
        # two are Yahoo's cache agents, which the proxy layer (first) names
        assert reasons == {"crawler": 310, "yahoo_proxy": 2}, reasons

    def test_layers_that_told(self) -> None:
        """The list itself tells nearly all; pixeltrack's rules are a backstop."""
        told = Counter(
            found.layer if (found := layers.agent_verdict(row["ua"], *_parsed(row["ua"]))) else None
            for row in sample("crawlers_primary.json")
        )
        assert told == {"list": 310, "proxy": 2}, told


def _parsed(ua: str) -> tuple[Any, str | None]:
    """ua-parser's result and the mail client, as parse_client sees them."""
    from ua_parser import Domain

    from aggregator.enrich.client import mail_client, parser

    result = parser()(ua, Domain.ALL).complete()
    return result, mail_client(ua, result)


class TestSecondSource:
    """Crawler-Detect's fixtures (agents not in the list): 93 of 100 come out machine."""

    def test_machine(self) -> None:
        rows = judged("crawlers_secondary.json")
        caught = [(ua, c) for ua, c in rows if c.agent_reason is not None]
        missed = [(ua, c) for ua, c in rows if c.agent_reason is None]
        assert len(rows) == 100
        assert len(caught) >= 50, f"only {len(caught)} of {len(rows)} caught; missed:\n{table(missed)}"
        assert len(caught) == 93, f"{len(caught)} of {len(rows)} caught; missed:\n{table(missed)}"

    def test_which_layers(self) -> None:
        """None is an instance of the list, yet its patterns catch 32; pixeltrack's rules 25, isbot 36."""
        told = Counter(
            found.layer if (found := layers.agent_verdict(row["ua"], *_parsed(row["ua"]))) else None
            for row in sample("crawlers_secondary.json")
        )
        assert told == {"list": 32, "pixeltrack": 25, "isbot": 36, None: 7}, told


class TestPeople:
    """373 current browsers and mail clients: none is a machine (false-positive rate 0)."""

    def test_none_machine(self) -> None:
        rows = judged("people.json")
        wrong = [(ua, c) for ua, c in rows if c.agent_reason is not None or c.scanner]
        rate = len(wrong) / len(rows)
        print(f"people: {len(rows)} agents, {len(wrong)} machine, false-positive rate {rate:.2%}")
        assert len(rows) >= 300
        assert rate <= 0.01, f"false-positive rate {rate:.2%} ({len(wrong)} of {len(rows)}):\n{table(wrong)}"
        assert not wrong, f"{len(wrong)} of {len(rows)} people called machine:\n{table(wrong)}"

    def test_all_recognised(self) -> None:
        """Every one of them is a recognised browser or mail client: human, not unknown."""
        rows = [(row["ua"], parse_client(row["ua"])) for row in sample("people.json")]
        unknown = [(ua, c) for ua, c in rows if not c.browser_like]
        assert not unknown, f"{len(unknown)} not recognised:\n{table(unknown)}"

    def test_mail_clients_in_sample(self) -> None:
        kinds = Counter(row["kind"] for row in sample("people.json"))
        assert kinds == {"browser": 350, "mail_client": 23}


LIBRARIES = [
    ("curl/8.11.1", "curl"), ("curl/7.88.1", "curl"), ("Wget/1.25.0", "Wget"), ("Wget/1.21.3", "Wget"),
    ("python-requests/2.32.3", "python-requests"), ("HTTPie/3.2.4", "HTTPie"), ("HTTPie/3.2.2", "HTTPie"),
    ("Go-http-client/1.1", "Go-http-client"), ("Go-http-client/2.0", "Go-http-client"),
    ("okhttp/4.12.0", "okhttp"), ("axios/1.7.9", "axios"), ("node-fetch", "node-fetch"),
    ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "node-fetch"),
]  # fmt: skip
# Runtimes and libraries the list misses: pixeltrack's own rules name them.
OWN = [
    ("Java-http-client/21.0.5", "Java-http-client"), ("GuzzleHttp/7", "GuzzleHttp"), ("Dart/3.6 (dart:io)", "Dart"),
    ("Deno/2.1.4", "Deno"), ("Bun/1.1.42", "Bun"), ("reqwest/0.12.12", "reqwest"), ("node", "node"),
    ("Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.26100; en-US) PowerShell/7.4.6", "PowerShell"),
    ("Faraday v2.12.2", "Faraday"), ("Ruby", "Ruby"),
]  # fmt: skip


class TestHttpLibraries:
    """HTTP libraries and tools are machines, named."""

    @pytest.mark.parametrize(("ua", "family"), LIBRARIES, ids=[ua for ua, _ in LIBRARIES])
    def test_library(self, ua: str, family: str) -> None:
        client = parse_client(ua)
        assert (client.agent_reason, client.device_class, client.browser_like) == ("crawler", "bot", False)
        assert family.lower() in (client.family or "").lower(), client.family

    @pytest.mark.parametrize(("ua", "family"), OWN, ids=[ua for ua, _ in OWN])
    def test_own_rules(self, ua: str, family: str) -> None:
        found = layers.agent_verdict(ua, *_parsed(ua))
        assert found == layers.Verdict("crawler", family, "pixeltrack")


class TestOrder:
    """Proxies before the list, scanners' names before isbot, mail clients never judged by isbot."""

    @pytest.mark.parametrize(
        ("ua", "reason", "family"),
        [
            ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
             "gmail_proxy", "Gmail image proxy"),
            ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "yahoo_proxy",
             "Yahoo Mail proxy"),
            ("Mozilla/5.0 (compatible; FastmailUA/1.0; +https://www.fastmail.com/)", "image_proxy",
             "Fastmail image proxy"),
            ("Mozilla/5.0 HeyImageProxy", "image_proxy", "HEY image proxy"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler", "Googlebot"),
            ("Mozilla/5.0 (compatible; Miniflux/2.0.12; +https://miniflux.app)", "crawler", "Miniflux"),
            ("Mozilla/5.0 (compatible; FlipboardProxy/1.2; +http://flipboard.com/browserproxy)", "crawler",
             "FlipboardProxy"),
        ],
    )  # fmt: skip
    def test_first_layer_names_it(self, ua: str, reason: str, family: str) -> None:
        client = parse_client(ua)
        assert (client.agent_reason, client.family) == (reason, family)

    def test_scanner_name_beats_isbot(self) -> None:
        """isbot's "discovery" would call Office's link probe a crawler; it stays a named scanner."""
        ua = "Microsoft Office Existence Discovery"
        assert layers.is_bot(ua)
        client = parse_client(ua)
        assert (client.agent_reason, client.scanner, client.family) == (
            None, True, "microsoft office existence discovery",
        )  # fmt: skip

    def test_mail_client_not_judged_by_isbot(self) -> None:
        """isbot's ``^yahoo`` fires on Yahoo's Android mail app: a recognised mail client stays human."""
        ua = "YahooMobileMail/1.0 (Android Mail; 1.3.10) (supersonic;HTC;PC36100;2.3.5/GRJ90)"
        assert layers.is_bot(ua)
        client = parse_client(ua)
        assert (client.agent_reason, client.mail_client, client.browser_like) == (None, "Yahoo Mail", True)

    def test_browser_not_judged_by_isbot(self) -> None:
        """isbot's "google" fires on an agent ua-parser knows as Chrome: the gate keeps it human."""
        ua = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36 google"
        assert layers.is_bot(ua)
        assert parse_client(ua).agent_reason is None

    def test_isbot_catches_the_unrecognised(self) -> None:
        found = layers.agent_verdict("Foo", *_parsed("Foo"))
        assert found == layers.Verdict("crawler", "other bot (isbot)", "isbot")


class TestCrawlerList:
    """The trie matcher gives the answers of one plain alternation, and the pin is the one tested."""

    def test_same_answers_as_alternation(self) -> None:
        entries = crawlers.entries(crawlers.load())
        naive = re.compile("|".join(f"(?:{e.pattern})" for e in entries))
        matcher = crawlers.Matcher(entries)
        agents = [i for item in crawlers.load() for i in item["instances"]]
        agents += [row["ua"] for name in ("people.json", "crawlers_secondary.json") for row in sample(name)]
        differ = [ua for ua in agents if (matcher(ua) is not None) != (naive.search(ua) is not None)]
        assert len(agents) == 2123 + 373 + 100 and differ == []

    def test_found_entry_matches(self) -> None:
        """The entry the matcher names is one whose pattern really occurs."""
        matcher = crawlers.matcher()
        for row in sample("crawlers_primary.json"):
            entry = matcher(row["ua"])
            assert entry is not None and re.search(entry.pattern, row["ua"]), row["ua"]

    def test_overrides_keep_own_instances(self) -> None:
        """A narrowed pattern still matches every agent the list gives for it."""
        for item in crawlers.load():
            narrowed = crawlers.OVERRIDES.get(item["pattern"], item["pattern"])
            if narrowed is not None:
                assert all(re.search(narrowed, i) for i in item["instances"]), item["pattern"]

    def test_case_sensitive(self) -> None:
        """The list is matched as written: "Googlebot/" occurs, "googlebot/" does not."""
        matcher = crawlers.matcher()
        assert matcher("Googlebot/2.1") is not None and matcher("xgooglebot/2.1") is None

    def test_pinned_version(self) -> None:
        """pyproject pins exactly the version the samples were drawn from."""
        deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        assert f"{crawlers.PACKAGE}==1.67.0" in deps
        assert crawlers.version() == "1.67.0"


def test_the_enricher_compiles_isbot_when_made() -> None:
    """isbot's pattern is compiled with the enricher, so that no roll-up's first agent pays for it."""
    from aggregator.enrich.config import EnrichConfig
    from aggregator.enrich.enricher import Enricher

    layers.is_bot_search.cache_clear()
    Enricher(EnrichConfig.from_env({})).close()
    assert layers.is_bot_search.cache_info().currsize == 1
