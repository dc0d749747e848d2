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

# (pattern, machine reason, family) for mail providers' image proxies: the
# first layer, before any crawler list, so that each keeps its own reason.
PROXIES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason, family)
    for pattern, reason, family in (
        (r"GoogleImageProxy|ggpht\.com", "gmail_proxy", "Gmail image proxy"),
        (r"YahooMailProxy|YahooCacheSystem", "yahoo_proxy", "Yahoo Mail proxy"),
        (r"HeyImageProxy", "image_proxy", "HEY image proxy"),
        (r"FastmailUA", "image_proxy", "Fastmail image proxy"),
        (r"FrontApp", "image_proxy", "Front"),
        (r"Superhuman", "image_proxy", "Superhuman"),
        (r"fwdcdn\.com|mail\.ukr\.net proxy", "image_proxy", "ukr.net mail proxy"),
        (r"ImageProxy|Image-Proxy|via proxy", "image_proxy", "other image proxy"),
    )
)

# pixeltrack's own crawler rules, the third layer (after the proxies and the
# crawler-user-agents list): (pattern, family), case-insensitive. Headless
# browsers, link-preview bots, and the HTTP libraries and runtimes whose
# default agents the list misses (Java's HttpClient, Guzzle, Dart, Deno, Bun,
# reqwest, Node's fetch, PowerShell, Faraday, Ruby's Net::HTTP). Generic
# tokens last.
OWN_CRAWLERS: tuple[tuple[str, str], ...] = (
    (r"HeadlessChrome", "HeadlessChrome"), (r"PhantomJS", "PhantomJS"), (r"Puppeteer", "Puppeteer"),
    (r"Playwright", "Playwright"), (r"Selenium", "Selenium"),
    (r"python-requests", "python-requests"), (r"python-urllib", "Python-urllib"), (r"python-httpx", "httpx"),
    (r"aiohttp", "aiohttp"), (r"^curl/", "curl"), (r"^Wget2?/", "Wget"), (r"^HTTPie/", "HTTPie"),
    (r"Go-http-client", "Go-http-client"), (r"^Java/", "Java"), (r"Java-http-client/", "Java-http-client"),
    (r"Apache-HttpClient/", "Apache-HttpClient"), (r"okhttp", "okhttp"), (r"libwww-perl", "libwww-perl"),
    (r"GuzzleHttp/", "GuzzleHttp"), (r"^Dart/", "Dart"), (r"^Deno/", "Deno"), (r"^Bun/", "Bun"),
    (r"^reqwest/", "reqwest"), (r"^node$", "node"), (r"node-fetch", "node-fetch"), (r"axios/", "axios"),
    (r"undici", "undici"), (r"PowerShell/", "PowerShell"), (r"^Faraday v", "Faraday"), (r"^Ruby$", "Ruby"),
    (r"Scrapy", "Scrapy"), (r"facebookexternalhit", "facebookexternalhit"), (r"Slackbot", "Slackbot"),
    (r"Twitterbot", "Twitterbot"), (r"WhatsApp/", "WhatsApp"), (r"TelegramBot", "TelegramBot"),
    (r"Discordbot", "Discordbot"), (r"LinkedInBot", "LinkedInBot"), (r"Applebot", "Applebot"),
    (r"bingpreview", "BingPreview"),
    (r"[a-z]bot/", "other bot"), (r"crawler", "other crawler"), (r"spider", "other spider"),
)  # fmt: skip
OWN_CRAWLER_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), family) for pattern, family in OWN_CRAWLERS
)
# One search for "does any own rule fire"; the list above then names which.
OWN_CRAWLER = re.compile("|".join(f"(?:{pattern})" for pattern, _ in OWN_CRAWLERS), re.IGNORECASE)
# ua-parser files an agent under device "Spider" by uap-core's bot rules.
UAP_SPIDER_FAMILY = "other crawler (uap-core)"
# The is-bot layer (isbot's patterns) names no crawler.
IS_BOT_FAMILY = "other bot (isbot)"

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
