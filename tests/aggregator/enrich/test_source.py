"""Entry source, search phrase, campaign parameters and language."""

from __future__ import annotations

import pytest

from aggregator.enrich import EnrichConfig, Enricher, language
from tests.support.fixtures.enrich_hits import hit

PAGE = "https://shop.example/spring"


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """An enricher that knows the site's own host."""
    return Enricher(EnrichConfig(internal_hosts=("shop.example",)))


def source(enricher: Enricher, **fields: object) -> tuple[object, object, object]:
    """(source_class, source_name, search_phrase) of one page hit."""
    out = enricher.enrich([hit(kind="page", **{"url": PAGE, **fields})])[0]
    return out["source_class"], out["source_name"], out["search_phrase"]


ENGINES = [
    ("https://www.google.com/search?q=red+shoes&hl=en", ("search", "Google", "red shoes")),
    ("https://www.google.co.uk/", ("search", "Google", None)),
    ("https://www.bing.com/search?q=blue%20hat&form=QBLH", ("search", "Bing", "blue hat")),
    ("https://duckduckgo.com/?q=rubber+ducks&ia=web", ("search", "DuckDuckGo", "rubber ducks")),
    ("https://uk.search.yahoo.com/search?p=yahoo+query&fr=yfp", ("search", "Yahoo", "yahoo query")),
    ("https://yandex.ru/search/?text=%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82&lr=213", ("search", "Yandex", "привет")),
    ("https://www.baidu.com/s?wd=%E4%BD%A0%E5%A5%BD", ("search", "Baidu", "你好")),
    ("https://m.baidu.com/s?word=%E4%BD%A0%E5%A5%BD", ("search", "Baidu", "你好")),
]


class TestSearchEngines:
    """Referrers from search engines give the engine and, when present, the phrase."""

    @pytest.mark.parametrize(("referer", "expected"), ENGINES, ids=[e[1][1] + str(i) for i, e in enumerate(ENGINES)])
    def test_engine(self, enricher: Enricher, referer: str, expected: tuple[object, ...]) -> None:
        assert source(enricher, referer=referer) == expected


class TestOtherReferrers:
    """Social, webmail, own-site and other referrers, and none at all."""

    def test_facebook(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://l.facebook.com/l.php?u=x") == ("social", "Facebook", None)

    def test_t_co(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://t.co/abc") == ("social", "X", None)

    def test_linkedin(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://www.linkedin.com/feed/") == ("social", "LinkedIn", None)

    def test_gmail(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://mail.google.com/") == ("email", "Gmail", None)

    def test_outlook_web(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://outlook.live.com/mail/0/") == ("email", "Outlook", None)

    def test_yahoo_mail_is_not_yahoo_search(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://mail.yahoo.com/d/folders/1") == ("email", "Yahoo Mail", None)

    def test_internal(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://shop.example/") == ("internal", "shop.example", None)

    def test_same_host_as_page_is_internal(self) -> None:
        assert source(Enricher(EnrichConfig()), referer="https://shop.example/a") == (
            "internal",
            "shop.example",
            None,
        )

    def test_referral(self, enricher: Enricher) -> None:
        assert source(enricher, referer="https://www.blog.example.org/post") == ("referral", "blog.example.org", None)

    def test_direct(self, enricher: Enricher) -> None:
        assert source(enricher, referer=None) == ("direct", None, None)

    def test_click_without_referrer_is_email(self, enricher: Enricher) -> None:
        out = enricher.enrich([hit(kind="click", link="https://shop.example/x")])[0]
        assert (out["source_class"], out["source_name"]) == ("email", None)

    def test_broken_referrer(self, enricher: Enricher) -> None:
        assert source(enricher, referer="http://[::1/%zz%") == ("direct", None, None)


class TestCampaign:
    """UTM parameters win over the referrer, as in Plausible."""

    def test_utm_beats_google(self, enricher: Enricher) -> None:
        url = (
            PAGE + "?utm_source=spring-newsletter&utm_medium=email&utm_campaign=spring25&utm_term=shoes&utm_content=top"
        )
        out = enricher.enrich([hit(kind="page", url=url, referer="https://www.google.com/search?q=x")])[0]
        got = {k: out[k] for k in ("source_class", "source_name", "search_phrase", "utm_source", "utm_medium")}
        assert got == {
            "source_class": "email",
            "source_name": "spring-newsletter",
            "search_phrase": None,
            "utm_source": "spring-newsletter",
            "utm_medium": "email",
        }
        assert (out["utm_campaign"], out["utm_term"], out["utm_content"]) == ("spring25", "shoes", "top")

    @pytest.mark.parametrize(
        ("medium", "expected"),
        [("social", "social"), ("cpc", "search"), ("Email", "email"), ("display", "referral"), ("weird", "referral")],
    )
    def test_medium_class(self, enricher: Enricher, medium: str, expected: str) -> None:
        url = f"{PAGE}?utm_source=acme&utm_medium={medium}"
        assert source(enricher, url=url)[0] == expected

    def test_source_name_class_without_medium(self, enricher: Enricher) -> None:
        assert source(enricher, url=PAGE + "?utm_source=facebook") == ("social", "facebook", None)

    def test_click_link_campaign(self, enricher: Enricher) -> None:
        link = "https://shop.example/x?utm_source=mailing&utm_medium=email&utm_campaign=c1"
        out = enricher.enrich([hit(kind="click", link=link)])[0]
        assert (out["source_class"], out["source_name"], out["utm_campaign"]) == ("email", "mailing", "c1")

    @pytest.mark.parametrize(
        ("param", "expected"),
        [("gclid", ("search", "Google Ads", "gclid")), ("msclkid", ("search", "Microsoft Ads", "msclkid")),
         ("fbclid", ("social", "Facebook", "fbclid"))],
    )  # fmt: skip
    def test_click_ids(self, enricher: Enricher, param: str, expected: tuple[str, str, str]) -> None:
        out = enricher.enrich([hit(kind="page", url=f"{PAGE}?{param}=Cj0KCQ123")])[0]
        assert (out["source_class"], out["source_name"], out["click_id"]) == expected

    def test_broken_percent_encoding(self, enricher: Enricher) -> None:
        out = enricher.enrich([hit(kind="page", url=PAGE + "?utm_source=%E4%zz%&utm_medium=%ff")])[0]
        assert (out["utm_source"], out["utm_medium"], out["source_class"]) == ("\ufffd%zz%", "\ufffd", "referral")


class TestLanguage:
    """The primary tag of Accept-Language, lowercased."""

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("de-CH,de;q=0.9,en;q=0.8", "de"), ("EN-us", "en"), ("fr", "fr"), ("pt_BR", "pt"), ("*", None),
         ("", None), (None, None), ("x" * 5000, None), ("\x00de", "de"), ("12-34", None)],
    )  # fmt: skip
    def test_language(self, header: object, expected: str | None) -> None:
        assert language(header) == expected

    def test_in_output(self, enricher: Enricher) -> None:
        assert enricher.enrich([hit(accept_language="de-CH,de;q=0.9")])[0]["language"] == "de"
