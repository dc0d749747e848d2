"""User-agent evidence: mail clients, mail proxies, crawlers and scanners.

Data only. Each pattern is matched case-insensitively against the user agent;
the first match wins, so specific patterns come before general ones. RULES.md
gives the source of every entry.
"""

from __future__ import annotations

import re

# (pattern, mail client) -- the client that rendered the mail or fetched for it.
MAIL_CLIENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
        (r"GoogleImageProxy|ggpht\.com", "Gmail"),
        (r"YahooMailProxy|YahooCacheSystem|YahooMobileMail", "Yahoo Mail"),
        (r"Outlook-iOS|Outlook-Android|Microsoft Outlook|MSOffice|ms-office|Microsoft Office/", "Outlook"),
        (r"Thunderbird/", "Thunderbird"),
        (r"SamsungEmail", "Samsung Email"),
        (r"Windows Live Mail", "Windows Live Mail"),
        (r"eM Client", "eM Client"),
        (r"Postbox", "Postbox"),
        (r"Airmail", "Airmail"),
        (r"Evolution/", "Evolution"),
        (r"KMail|kmail2", "KMail"),
        (r"The Bat!", "The Bat!"),
        (r"Lotus Notes|IBM Notes", "Notes"),
        (r"HeyImageProxy", "HEY"),
        (r"FrontApp", "Front"),
    )
)

# Outlook for Windows/Mac (not its mobile apps) hands links to the browser, so
# a *click* carrying its agent is a fetch by Office or Safe Links, not a person.
OFFICE_FETCH = re.compile(r"Microsoft Outlook|MSOffice|ms-office|Microsoft Office", re.IGNORECASE)

# The iOS system web view with nothing after the build token: the Mail app.
# In-app browsers (Facebook, Google, Outlook ...) append their own token.
IOS_MAIL = re.compile(r"\((?:iPhone|iPad|iPod);.*\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\) Mobile/\w+$")

# (pattern, machine reason) for mail providers' image proxies.
PROXIES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (r"GoogleImageProxy|ggpht\.com", "gmail_proxy"),
        (r"YahooMailProxy|YahooCacheSystem", "yahoo_proxy"),
        (r"ImageProxy|Image-Proxy|FrontApp|Superhuman|via proxy", "image_proxy"),
    )
)

# Tools and headless browsers that ua-parser does not file under "Spider".
CRAWLER = re.compile(
    r"HeadlessChrome|PhantomJS|Puppeteer|Playwright|Selenium|python-requests|python-urllib|"
    r"python-httpx|aiohttp|^curl/|^Wget/|Go-http-client|^Java/|okhttp|libwww-perl|Scrapy|"
    r"node-fetch|axios/|undici|facebookexternalhit|Slackbot|Twitterbot|WhatsApp/|TelegramBot|"
    r"Discordbot|LinkedInBot|Applebot|bingpreview|[a-z]bot/|crawler|spider",
    re.IGNORECASE,
)

# Lowercase substrings of agents sent by mail security gateways when they
# check links (vendor names, documented in RULES.md). Overridable by
# PIXELTRACK_SCANNER_AGENTS.
DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "microsoft office existence discovery",
    "ironport",
    "cisco secure email",
    "trendmicro",
    "trend micro",
    "symantec",
    "forcepoint",
    "fortimail",
    "sophos",
    "checkpoint",
    "zscaler",
    "cloudmark",
    "vadesecure",
)

# ua-parser families that mean "no real browser was identified".
NOT_A_BROWSER = frozenset({"Other", "Spider"})

DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Fedora",
        "Debian",
        "Chrome OS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
        "Red Hat",
        "SUSE",
        "Mint",
        "Arch Linux",
        "Gentoo",
        "macOS",
    }
)
MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "HarmonyOS"})
TABLET = re.compile(r"iPad|Tablet|Kindle|Silk/|PlayBook|Nexus (?:7|9|10)\b|SM-[TXP]\d", re.IGNORECASE)
MOBILE = re.compile(r"iPhone|iPod|Mobile|Windows Phone|Opera Mini|BlackBerry", re.IGNORECASE)
