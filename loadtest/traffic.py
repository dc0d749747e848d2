"""The request mix both drivers send: real clients, real referrers, many recipients.

A run cycles through a shuffled list of requests made once from the
campaign: 70% opens, 20% clicks, 5% document pages and 5% forged or
malformed tokens (tampered, truncated, random, used on the wrong endpoint).
Each request knows its category (kind, and whether the collector must
accept it) and the status it must get, so answers can be counted per kind.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass, replace

from loadtest.campaign import Campaign, Job
from pixeltrack.core.mint import Minter

CATEGORIES = ("open", "click", "doc", "open/rejected", "click/rejected", "doc/rejected")
# Expected answer per category: the pixel always, a redirect only for a valid click.
EXPECT = {"open": 200, "doc": 200, "click": 302, "open/rejected": 200, "doc/rejected": 200, "click/rejected": 404}

# (weight, User-Agent) as mail opens are seen today: proxies dominate.
OPEN_AGENTS = (
    (30, "Mozilla/5.0"),  # Apple Mail Privacy Protection proxy
    (22, "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
    (10, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Mobile/15E148"),
    (9, "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"),
    (6, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 Edg/124.0.0.0"),
    (5, "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
    (5, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"),
    (4, "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36"),
    (3, "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1"),
    (3, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (3, "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"),
)
CLICK_AGENTS = (
    (30, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.4 Mobile/15E148 Safari/604.1"),
    (28, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
         "Safari/537.36"),
    (14, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/124.0.6367.82 Mobile Safari/537.36"),
    (10, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.4.1 Safari/605.1.15"),
    (8, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (6, "Mozilla/5.0 (compatible; Microsoft Defender SmartScreen; +https://aka.ms/smartscreen)"),
    (4, "Mozilla/5.0 (compatible; proofpoint-urldefense/1.0)"),
)
# (weight, Referer); "" sends none (most mail clients send none for images).
OPEN_REFERERS = ((85, ""), (8, "https://mail.google.com/"), (4, "https://outlook.live.com/"),
                 (3, "https://mail.yahoo.com/"))
CLICK_REFERERS = ((55, ""), (20, "https://mail.google.com/"), (12, "https://outlook.office.com/"),
                  (8, "https://outlook.live.com/"), (5, "https://webmail.gmx.net/"))
DOC_REFERERS = ((70, "https://docs.example.com/viewer/annual-report-2024"), (30, ""))
LANGUAGES = ((40, "en-US,en;q=0.9"), (25, "de-DE,de;q=0.9,en;q=0.8"), (15, "fr-FR,fr;q=0.9"),
             (10, ""), (10, "es-ES,es;q=0.9,en;q=0.5"))
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class Request:
    """One request of the mix: what to send and what must come back."""

    category: str
    path: str
    headers: tuple[tuple[str, str], ...]

    @property
    def expect(self) -> int:
        """The status the collector must answer with."""
        return EXPECT[self.category]


def _pick(rng: random.Random, table: tuple[tuple[int, str], ...]) -> str:
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def _headers(rng: random.Random, agents: tuple[tuple[int, str], ...],
             referers: tuple[tuple[int, str], ...]) -> tuple[tuple[str, str], ...]:
    out = [("User-Agent", _pick(rng, agents)), ("Accept", "image/avif,image/webp,image/*,*/*;q=0.8")]
    referer = _pick(rng, referers)
    if referer:
        out.append(("Referer", referer))
    language = _pick(rng, LANGUAGES)
    if language:
        out.append(("Accept-Language", language))
    if rng.random() < 0.1:  # behind the load balancer
        out.append(("X-Forwarded-For", f"203.0.113.{rng.randint(1, 254)}"))
    return tuple(out)


def _tamper(rng: random.Random, token: str) -> str:
    # Never the last two characters: their spare bits may decode to the same bytes.
    i = rng.randrange(len(token) - 2)
    return token[:i] + rng.choice(B64.replace(token[i], "")) + token[i + 1:]


class MixBuilder:
    """Makes requests for one campaign, signed with the collector's secret."""

    def __init__(self, campaign: Campaign, secret: str, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.signer = Minter(secret, "").signer
        self.minter = Minter(secret, "")
        self.jobs = campaign.jobs
        self.weights = [max(j.recipients, 500) for j in campaign.jobs]

    def _target(self) -> tuple[Job, int | None]:
        job = self.rng.choices(self.jobs, weights=self.weights)[0]
        return job, (self.rng.randrange(job.recipients) if job.recipients else None)

    def open(self) -> Request:
        """A valid open."""
        job, rid = self._target()
        return Request("open", self.minter.open_url(job.job_id, rid), _headers(self.rng, OPEN_AGENTS, OPEN_REFERERS))

    def click(self) -> Request:
        """A valid click on one of the job's links."""
        job, rid = self._target()
        path = self.minter.click_url(job.job_id, rid, self.rng.choice(job.links))
        return Request("click", path, _headers(self.rng, CLICK_AGENTS, CLICK_REFERERS))

    def doc(self) -> Request:
        """A valid document page view."""
        job, rid = self._target()
        path = self.minter.doc_url(job.job_id, rid, self.rng.randint(1, 24))
        return Request("doc", path, _headers(self.rng, OPEN_AGENTS, DOC_REFERERS))

    def forged(self) -> Request:
        """A refused token: tampered, truncated, random, wrong endpoint or bad page."""
        job, rid = self._target()
        rng, m = self.rng, self.minter
        case = rng.randrange(8)
        if case == 0:
            return Request("open/rejected", "/o/" + _tamper(rng, m.open_url(job.job_id, rid)[3:-4]) + ".gif",
                           _headers(rng, OPEN_AGENTS, OPEN_REFERERS))
        if case == 1:
            junk = "".join(rng.choice(B64) for _ in range(rng.randint(2, 40)))
            return Request("open/rejected", f"/o/{junk}.gif", _headers(rng, OPEN_AGENTS, OPEN_REFERERS))
        if case == 2:  # a document token used as an open pixel
            return Request("open/rejected", "/o/" + m.doc_url(job.job_id, rid).split("/")[2] + ".gif",
                           _headers(rng, OPEN_AGENTS, OPEN_REFERERS))
        if case in (3, 4):
            token = m.click_url(job.job_id, rid, rng.choice(job.links))[3:]
            return Request("click/rejected", "/c/" + _tamper(rng, token), _headers(rng, CLICK_AGENTS, CLICK_REFERERS))
        if case == 5:  # an open token used as a link, or a cut-off link
            token = m.open_url(job.job_id, rid)[3:-4] if rng.random() < 0.5 else m.click_url(
                job.job_id, rid, job.links[0])[3:30]
            return Request("click/rejected", "/c/" + token, _headers(rng, CLICK_AGENTS, CLICK_REFERERS))
        if case == 6:  # page 0 does not exist
            return Request("doc/rejected", m.doc_url(job.job_id, rid, 1).replace("/1.gif", "/0.gif"),
                           _headers(rng, OPEN_AGENTS, DOC_REFERERS))
        token = _tamper(rng, m.doc_url(job.job_id, rid).split("/")[2])
        return Request("doc/rejected", f"/d/{token}/{rng.randint(1, 9)}.gif", _headers(rng, OPEN_AGENTS, DOC_REFERERS))

    def build(self, count: int) -> list[Request]:
        """``count`` requests in the mix 70/20/5/5 (open/click/doc/forged), shuffled."""
        kinds = (self.open, self.click, self.doc, self.forged)
        chosen = self.rng.choices(kinds, weights=(70, 20, 5, 5), k=count)
        return [make() for make in chosen]


def build_mix(campaign: Campaign, secret: str, count: int = 50_000, seed: int = 11) -> list[Request]:
    """The request list a run cycles through (distinct recipients: thousands)."""
    return MixBuilder(campaign, secret, seed).build(count)


# The last build or patch number of an agent (".36" of "Safari/537.36", "_1" of "17_4_1").
_BUILD = re.compile(r"(?<=[._])(\d+)(?!.*[._]\d)")
_MOZILLA = "Mozilla/5.0"


def vary_agent(agent: str, build: int) -> str:
    """``agent`` with its last build number moved up by ``build``; one whose only number is "Mozilla/5.0" as is."""
    m = _BUILD.search(agent)
    if m is None or (agent.startswith(_MOZILLA) and m.start() < len(_MOZILLA)):
        return agent
    return agent[: m.start()] + str(int(m[1]) + build) + agent[m.end() :]


def vary_agents(requests: list[Request], variants: int, seed: int = 13) -> list[Request]:
    """The same requests, each agent in one of ``variants`` builds.

    Real traffic brings hundreds of distinct agents, and the enricher parses
    each distinct one (the mix alone has a few dozen).
    """
    rng = random.Random(seed)

    def header(name: str, value: str) -> tuple[str, str]:
        return name, vary_agent(value, rng.randrange(variants)) if name == "User-Agent" else value

    return [replace(r, headers=tuple(header(n, v) for n, v in r.headers)) for r in requests]


def public_addresses(count: int, seed: int = 17, v6_share: float = 0.2) -> list[str]:
    """``count`` distinct global addresses, about ``v6_share`` of them IPv6 (in 2000::/3), the rest IPv4."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        if rng.random() < v6_share:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
                (1 << 125) | rng.getrandbits(125))
        else:
            address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global:
            out[str(address)] = None
    return list(out)


def vary_addresses(requests: list[Request], count: int, seed: int = 17) -> list[Request]:
    """The same requests, each from one of ``count`` public addresses, as a load balancer names them.

    Every request gets an X-Forwarded-For with its address (the collector must
    trust the balancer's address, PIXELTRACK_TRUSTED_PROXIES), instead of the
    mix's own (a tenth of the requests, 254 addresses): real traffic comes from
    about as many addresses as devices, and the roll-up works out each distinct
    address of a batch (place, network tests, masked address) once.
    """
    rng = random.Random(seed)
    pool = public_addresses(count, seed)

    def headers(request: Request) -> tuple[tuple[str, str], ...]:
        kept = tuple((n, v) for n, v in request.headers if n != "X-Forwarded-For")
        return (*kept, ("X-Forwarded-For", rng.choice(pool)))

    return [replace(r, headers=headers(r)) for r in requests]


def raw_request(request: Request, host: str) -> bytes:
    """The request as HTTP/1.1 bytes on a kept-alive connection."""
    lines = [f"GET {request.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
