"""What fetched the pixel or followed the link: browser, OS, device, mail client.

Parsing uses ua-parser 1.x with the uap-core rules compiled into
``ua-parser-builtins``, run by the Rust ``ua-parser-rs`` resolver when it is
installed (roughly ten times faster than the pure-Python matcher) and by the
basic resolver otherwise. Results are cached per distinct agent by the caller.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import ua_parser
from ua_parser import Domain, Result

from aggregator.enrich import agents
from aggregator.enrich.layers import agent_verdict
from aggregator.enrich.text import clean, label


@dataclass(frozen=True, slots=True)
class Client:
    """What one user-agent string says about the software behind it."""

    device_class: str
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None
    mail_client: str | None = None
    # machine reason the agent alone proves (proxy, crawler), else None
    agent_reason: str | None = None
    # who the machine is (crawler or proxy name, scanner vendor), from fixed lists
    family: str | None = None
    # the agent is the bare "Mozilla/5.0" Apple's privacy relay sends
    generic: bool = False
    # a real browser or mail client was recognised
    browser_like: bool = False
    # Outlook desktop / Office: a click with this agent is not a person's
    office: bool = False
    # the agent names a mail security gateway
    scanner: bool = False


UNKNOWN = Client(device_class="unknown")
GENERIC_AGENT = "Mozilla/5.0"


@functools.cache
def parser() -> ua_parser.Parser:
    """The process-wide parser, without ua-parser's own cache (we cache per run)."""
    if importlib.util.find_spec("ua_parser_rs"):
        from ua_parser.regex import Resolver

        return ua_parser.Parser(Resolver(ua_parser.load_lazy_builtins()))
    return ua_parser.Parser(ua_parser.BasicResolver(ua_parser.load_builtins()))


def version(*parts: str | None) -> str | None:
    """Dotted version from the parts present, up to the first missing one."""
    present: list[str] = []
    for part in parts:
        if part is None:
            break
        present.append(part)
    return label(".".join(present)) if present else None


def mail_client(ua: str, result: Result) -> str | None:
    """The mail program the agent shows, if any."""
    for pattern, name in agents.MAIL_CLIENTS:
        if pattern.search(ua):
            return name
    if result.user_agent and result.user_agent.family == "Apple Mail":
        return "Apple Mail"
    if agents.IOS_MAIL.search(ua):
        return "Apple Mail"
    return None


def device_class(ua: str, result: Result, reason: str | None, scanner: bool) -> str:
    """desktop | mobile | tablet | bot | mail_proxy | unknown."""
    if reason in ("gmail_proxy", "yahoo_proxy", "image_proxy"):
        return "mail_proxy"
    if reason == "crawler" or scanner:
        return "bot"
    os_family = result.os.family if result.os else None
    brand = result.device.brand if result.device else None
    if agents.TABLET.search(ua) or brand == "Generic_Android_Tablet":
        return "tablet"
    if os_family == "Android" and "Mobile" not in ua:
        return "tablet"
    if agents.MOBILE.search(ua) or os_family in agents.MOBILE_OS:
        return "mobile"
    if os_family in agents.DESKTOP_OS or agents.OFFICE_FETCH.search(ua):
        # Office's own agents ("MSOffice 16") name no OS but only run on desktops.
        return "desktop"
    return "unknown"


def parse_client(raw: object, scanner_agents: tuple[str, ...] = agents.DEFAULT_SCANNER_AGENTS) -> Client:
    """Classify one user-agent header value; anything unusable gives UNKNOWN."""
    ua = clean(raw)
    if ua is None:
        return UNKNOWN
    if ua == GENERIC_AGENT:
        return Client(device_class="unknown", generic=True)
    result = parser()(ua, Domain.ALL).complete()
    lowered = ua.lower()
    vendor = next((token for token in scanner_agents if token in lowered), None)
    scanner = vendor is not None
    client_app = mail_client(ua, result)
    found = agent_verdict(ua, result, client_app, scanner)
    reason = found.reason if found else None
    agent = result.user_agent
    family = agent.family if agent else None
    os_ = result.os
    return Client(
        device_class=device_class(ua, result, reason, scanner),
        browser=label(family) if family and family != "Other" else None,
        browser_version=version(agent.major, agent.minor) if agent else None,
        os=label(os_.family) if os_ and os_.family != "Other" else None,
        os_version=version(os_.major, os_.minor, os_.patch) if os_ else None,
        mail_client=client_app,
        agent_reason=reason,
        family=found.family if found else vendor,
        browser_like=reason is None
        and not scanner
        and ((family is not None and family not in agents.NOT_A_BROWSER) or client_app is not None),
        office=bool(agents.OFFICE_FETCH.search(ua)),
        scanner=scanner,
    )
