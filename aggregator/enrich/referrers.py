"""Known referring sites: search engines, social networks, webmail.

Data only, looked up by host. A host matches an entry when it equals the
entry's domain or is a subdomain of it ("l.facebook.com" is Facebook).
Search engines are matched after dropping one leading label ("www.",
"m.", "uk." ...) and, for engines with a domain per country, by pattern.
"""

from __future__ import annotations

import re

# domain -> (engine, query parameters that carry the phrase)
SEARCH_ENGINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bing.com": ("Bing", ("q",)),
    "duckduckgo.com": ("DuckDuckGo", ("q",)),
    "search.yahoo.com": ("Yahoo", ("p",)),
    "search.yahoo.co.jp": ("Yahoo", ("p",)),
    "baidu.com": ("Baidu", ("wd", "word")),
    "ecosia.org": ("Ecosia", ("q",)),
    "search.brave.com": ("Brave", ("q",)),
    "startpage.com": ("Startpage", ("query", "q")),
    "qwant.com": ("Qwant", ("q",)),
    "search.naver.com": ("Naver", ("query",)),
    "seznam.cz": ("Seznam", ("q",)),
    "search.seznam.cz": ("Seznam", ("q",)),
    "ya.ru": ("Yandex", ("text",)),
    "sogou.com": ("Sogou", ("query",)),
    "so.com": ("360 Search", ("q",)),
    "search.aol.com": ("AOL", ("q", "query")),
    "ask.com": ("Ask", ("q",)),
    "kagi.com": ("Kagi", ("q",)),
    "yep.com": ("Yep", ("q",)),
    "mojeek.com": ("Mojeek", ("q",)),
}

# Engines with a domain per country: google.de, google.co.uk, yandex.ru ...
SEARCH_PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(r"^google\.(?:com?\.)?[a-z]{2,3}$"), "Google", ("q",)),
    (re.compile(r"^yandex\.(?:com?\.)?[a-z]{2,3}$"), "Yandex", ("text",)),
    (re.compile(r"^(?:[a-z]{2}\.)?search\.yahoo\.com$"), "Yahoo", ("p",)),
)

SOCIAL: dict[str, str] = {
    "facebook.com": "Facebook",
    "fb.me": "Facebook",
    "instagram.com": "Instagram",
    "twitter.com": "X",
    "x.com": "X",
    "t.co": "X",
    "linkedin.com": "LinkedIn",
    "lnkd.in": "LinkedIn",
    "reddit.com": "Reddit",
    "youtube.com": "YouTube",
    "pinterest.com": "Pinterest",
    "tiktok.com": "TikTok",
    "news.ycombinator.com": "Hacker News",
    "mastodon.social": "Mastodon",
    "bsky.app": "Bluesky",
    "threads.net": "Threads",
    "vk.com": "VK",
    "xing.com": "XING",
    "quora.com": "Quora",
    "tumblr.com": "Tumblr",
    "t.me": "Telegram",
    "web.whatsapp.com": "WhatsApp",
    "discord.com": "Discord",
}

WEBMAIL: dict[str, str] = {
    "mail.google.com": "Gmail",
    "outlook.live.com": "Outlook",
    "outlook.office.com": "Outlook",
    "outlook.office365.com": "Outlook",
    "safelinks.protection.outlook.com": "Outlook",
    "mail.yahoo.com": "Yahoo Mail",
    "mail.aol.com": "AOL Mail",
    "mail.proton.me": "Proton Mail",
    "mail.protonmail.com": "Proton Mail",
    "app.fastmail.com": "Fastmail",
    "mail.yandex.ru": "Yandex Mail",
    "mail.yandex.com": "Yandex Mail",
    "mail.zoho.com": "Zoho Mail",
    "mail.zoho.eu": "Zoho Mail",
    "web.de": "WEB.DE",
    "gmx.net": "GMX",
    "gmx.de": "GMX",
    "e.mail.ru": "Mail.ru",
    "icloud.com": "iCloud Mail",
    "mail.tutanota.com": "Tutanota",
    "app.tuta.com": "Tutanota",
}

# utm_medium values (lowercased) -> source class, as Plausible groups them.
MEDIUM_CLASS: dict[str, str] = {
    **dict.fromkeys(("email", "e-mail", "e_mail", "e mail", "newsletter", "mail"), "email"),
    **dict.fromkeys(
        (
            "social",
            "social-network",
            "social-media",
            "sm",
            "social network",
            "social media",
            "social_media",
            "paid_social",
            "paid-social",
            "paidsocial",
        ),
        "social",
    ),
    **dict.fromkeys(
        ("cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "sem", "search", "organic", "retargeting"),
        "search",
    ),
    **dict.fromkeys(("referral", "display", "banner", "cpm", "affiliate", "affiliates", "partner"), "referral"),
}

# Ad click identifiers -> (source name, class) when no utm_source is given.
CLICK_IDS: tuple[tuple[str, str, str], ...] = (
    ("gclid", "Google Ads", "search"),
    ("msclkid", "Microsoft Ads", "search"),
    ("fbclid", "Facebook", "social"),
)
