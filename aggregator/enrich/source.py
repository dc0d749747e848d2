"""Where a visit came from: search, social, email, direct, internal, referral.

Campaign parameters on the landing URL win over the referrer, as in
Plausible: with ``utm_source`` present it is the source name, and the class
comes from ``utm_medium`` (or, failing that, from what the source names).
Without them, an ad click id (gclid, msclkid, fbclid) names the network;
then the referrer's host is looked up in ``sites``. Lists live in ``sites``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aggregator.enrich import referrers as sites
from aggregator.enrich.text import clean, label

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
MAX_URL = 8192


@dataclass(frozen=True, slots=True)
class Source:
    """Entry source and campaign of one hit (the output column names)."""

    source_class: str | None = None
    source_name: str | None = None
    search_phrase: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    click_id: str | None = None


def split_url(value: object) -> tuple[str | None, dict[str, str]]:
    """(lowercased host, first value of each query parameter) of an http(s) URL."""
    url = clean(value, MAX_URL)
    if url is None:
        return None, {}
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None, {}
    if parts.scheme.lower() not in ("http", "https", "") or not host:
        return None, {}
    params: dict[str, str] = {}
    for key, val in parse_qsl(parts.query, errors="replace"):
        params.setdefault(key.lower(), val)
    return host.rstrip(".").lower(), params


def in_domains(host: str, table: Mapping[str, str]) -> str | None:
    """Value for ``host`` or its nearest listed parent domain."""
    labels = host.split(".")
    for start in range(len(labels) - 1):
        found = table.get(".".join(labels[start:]))
        if found is not None:
            return found
    return None


def search_engine(host: str) -> tuple[str, tuple[str, ...]] | None:
    """(engine, phrase parameters) when ``host`` is a search engine."""
    candidates = (host, host.split(".", 1)[1] if "." in host else host)
    for candidate in candidates:
        if candidate in sites.SEARCH_ENGINES:
            return sites.SEARCH_ENGINES[candidate]
        for pattern, name, params in sites.SEARCH_PATTERNS:
            if pattern.match(candidate):
                return name, params
    return None


def phrase(params: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    """The search phrase from the first parameter that carries one."""
    for key in keys:
        found = label(params.get(key))
        if found:
            return found
    return None


def from_referrer(referer: object, own_host: str | None, internal: tuple[str, ...]) -> Source | None:
    """Class, name and phrase from the referring page; None when there is none."""
    host, params = split_url(referer)
    if host is None:
        return None
    if host == own_host or in_domains(host, dict.fromkeys(internal, host)):
        return Source("internal", label(host))
    if mail := in_domains(host, sites.WEBMAIL):
        return Source("email", mail)
    if engine := search_engine(host):
        return Source("search", engine[0], phrase(params, engine[1]))
    if social := in_domains(host, sites.SOCIAL):
        return Source("social", social)
    return Source("referral", label(host.removeprefix("www.")))


def class_of_name(name: str) -> str:
    """Source class for a utm_source with no (known) utm_medium."""
    lowered = name.lower()
    if lowered in NAMED_CLASSES:
        return NAMED_CLASSES[lowered]
    host_class = in_domains(lowered, DOMAIN_CLASSES)
    return host_class or "referral"


def campaign(params: Mapping[str, str]) -> dict[str, str | None]:
    """The utm_* values and the click id kind of a landing URL."""
    found: dict[str, str | None] = {key: label(params.get(key)) for key in UTM_KEYS}
    found["click_id"] = next((key for key, _, _ in sites.CLICK_IDS if params.get(key)), None)
    return found


def classify(hit: Mapping[str, Any], internal: tuple[str, ...] = ()) -> Source:
    """Entry source of a hit from its landing URL (``url`` or ``link``) and referrer."""
    own_host, params = split_url(hit.get("url") or hit.get("link"))
    tags = campaign(params)
    name, medium = tags["utm_source"], tags["utm_medium"]
    if name:
        kind = sites.MEDIUM_CLASS.get(medium.lower()) if medium else None
        return Source(kind or class_of_name(name), name, None, **tags)
    for key, network, kind in sites.CLICK_IDS:
        if tags["click_id"] == key:
            return Source(kind, network, None, **tags)
    referred = from_referrer(hit.get("referer"), own_host, internal)
    if referred is not None:
        return Source(referred.source_class, referred.source_name, referred.search_phrase, **tags)
    fallback = "email" if hit.get("kind") in ("open", "click") else "direct"
    return Source(fallback, None, None, **tags)


NAMED_CLASSES: dict[str, str] = {
    **{name.lower(): "search" for name, _ in sites.SEARCH_ENGINES.values()},
    **{name.lower(): "search" for _, name, _ in sites.SEARCH_PATTERNS},
    **{name.lower(): "social" for name in sites.SOCIAL.values()},
    **{name.lower(): "email" for name in sites.WEBMAIL.values()},
    **dict.fromkeys(("newsletter", "email", "e-mail", "mail"), "email"),
    **dict.fromkeys(("twitter", "fb", "ig"), "social"),
}
DOMAIN_CLASSES: dict[str, str] = {
    **dict.fromkeys(sites.SEARCH_ENGINES, "search"),
    **dict.fromkeys(sites.SOCIAL, "social"),
    **dict.fromkeys(sites.WEBMAIL, "email"),
}
