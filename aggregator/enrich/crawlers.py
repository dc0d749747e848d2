"""The base layer of crawler detection: the crawler-user-agents list.

The list (PyPI ``crawler-user-agents``, MIT, pinned exactly in pyproject.toml)
ships ``crawleruseragents/crawler-user-agents.json``: about 1,500 patterns,
each with the agents it was written for. Its patterns are regular
expressions matched **case-sensitively**, as the list's own tests do.

``OVERRIDES`` narrows the few patterns that also match real people's agents
(each replacement still matches the list's own instances; ``None`` drops
one). Upgrading the list: bump the pin and run
``tests/aggregator/enrich/test_layers.py``, whose people sample must stay at
no false positive (RULES.md).

Matching ~1,500 patterns one by one costs ~1 ms per agent; joined into one
alternation ~0.1 ms. Here the patterns that stand for a finite set of plain
strings (nearly all) become one trie-shaped regex that branches a character
at a time, and the few real regexes are tried only when a required literal
of theirs occurs: same answers, ~15 µs per agent. Verdicts are cached per
distinct agent by the enricher, so this runs once per agent anyway.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import Any

try:  # the parser behind re.compile; only used to find plain-string patterns
    from re import _constants as sre_constants  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Python without them: every pattern is a regex
    sre_parse = sre_constants = None

PACKAGE = "crawler-user-agents"
DATA = ("crawleruseragents", "crawler-user-agents.json")

# Patterns of the list that match people's agents, narrowed (or dropped: None).
# Found over 36,000 browser, mail-client and app agents (RULES.md, "false positives").
OVERRIDES: dict[str, str | None] = {
    r"AP3A\.240617\.008": None,  # an Android 15 build id shared by many OPPO/OnePlus/realme phones
    r"008\/": r"^008\/",  # also inside device models (TS1008/) and Opera Mini builds (39008/)
    r"Sogou": r"Sogou[ -](?:\w+[ -])?[Ss]pider",  # Sogou Mobile Browser (SogouMSE, SogouMobileBrowser)
    r"Sonic": r"RankSonic|Sonic\/",  # ViewSonic devices
    r"Butterfly": r"Butterfly\/",  # HTC Butterfly phones
    r"Fever": r"Fever\/",  # Fever_Plus_J and other device names
    r"Expanse": r"Expanse[ ,]",  # a device named Expanse
    r"Viber": r"^Viber",  # Viber's in-app browser appends Viber/<v> to a full browser agent
    r"Blackboard": r"Blackboard Safeassign",  # the Blackboard app's in-app browser
    r"Fluid": None,  # a site-specific browser; its one instance is that browser
}
WORD_END = " /;:()_-+.,\\^$"


@dataclass(frozen=True, slots=True)
class Entry:
    """One pattern of the list, as matched, and the short name it reports."""

    pattern: str
    family: str


def _expand(items: Any, limit: int = 64) -> list[str] | None:
    """The finite list of strings a parsed (sub)pattern matches, or None."""
    c = sre_constants
    out = [""]
    for op, av in items:
        if op is c.LITERAL:
            alts: list[str] | None = [chr(av)]
        elif op is c.IN and all(o is c.LITERAL for o, _ in av):
            alts = [chr(v) for _, v in av]
        elif op is c.SUBPATTERN:
            alts = _expand(av[-1], limit)
        elif op is c.BRANCH:
            alts = []
            for branch in av[1]:
                found = _expand(branch, limit)
                if found is None:
                    return None
                alts += found
        else:
            return None
        if alts is None:
            return None
        out = [a + b for a in out for b in alts]
        if len(out) > limit:
            return None
    return out


def literals(pattern: str) -> list[str] | None:
    """The plain strings ``pattern`` matches (it is found where one of them occurs), or None."""
    if sre_parse is None:
        return None
    try:
        return _expand(list(sre_parse.parse(pattern)))
    except (re.error, TypeError, ValueError):
        return None


def required_literal(pattern: str) -> str | None:
    """The longest run of plain characters every match of ``pattern`` contains (3+), or None."""
    if sre_parse is None:
        return None
    best, run = "", ""
    for op, av in sre_parse.parse(pattern):
        if op is sre_constants.LITERAL:
            run += chr(av)
        else:
            best, run = max(best, run, key=len), ""
    best = max(best, run, key=len)
    return best if len(best) >= 3 else None


def trie_regex(words: list[str]) -> str:
    """A regex equal to an alternation of ``words`` that branches one character at a time.

    Where a word ends the match is complete (a longer word sharing the prefix
    adds nothing to "does one occur"), so the matched text is always one of ``words``.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        if "" in node:
            return ""
        alts = [re.escape(ch) + emit(node[ch]) for ch in sorted(node)]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie) if words else r"(?!x)x"


def family_of(pattern: str, instances: tuple[str, ...] = ()) -> str:
    """A short name for a list entry: the plain string of its pattern that its first agent
    shows (else its first plain string, or its longest literal), trimmed."""
    found = literals(pattern) or [required_literal(pattern) or pattern]
    shown = [text for text in found if instances and text in instances[0]]
    name = (shown or found)[0].strip(WORD_END)
    return name or pattern


class Matcher:
    """Which entry of a pattern list an agent matches first, if any (same answers as one alternation)."""

    def __init__(self, entries: list[Entry]) -> None:
        self.by_literal: dict[str, Entry] = {}
        rest: list[Entry] = []
        for entry in entries:
            found = literals(entry.pattern)
            if found is None:
                rest.append(entry)
                continue
            for text in found:
                self.by_literal.setdefault(text, entry)
        self.literal = re.compile(trie_regex(list(self.by_literal)))
        gates = [required_literal(e.pattern) for e in rest]
        self.gated = [(e, re.compile(e.pattern)) for e, g in zip(rest, gates, strict=True) if g is not None]
        self.ungated = [(e, re.compile(e.pattern)) for e, g in zip(rest, gates, strict=True) if g is None]
        self.gate = re.compile(trie_regex([g for g in gates if g is not None]))
        self.any_gated = re.compile("|".join(f"(?:{e.pattern})" for e, _ in self.gated) or r"(?!x)x")

    def __call__(self, ua: str) -> Entry | None:
        """The entry whose pattern occurs in ``ua`` (a plain-string one first), or None."""
        hit = self.literal.search(ua)
        if hit is not None:
            return self.by_literal[hit.group()]
        if self.gate.search(ua) is not None and self.any_gated.search(ua) is not None:
            return next(entry for entry, rx in self.gated if rx.search(ua))
        return next((entry for entry, rx in self.ungated if rx.search(ua)), None)


def entries(data: list[dict[str, Any]]) -> list[Entry]:
    """The list's patterns after ``OVERRIDES``, each with its family name."""
    out = []
    for item in data:
        pattern = item["pattern"]
        narrowed = OVERRIDES.get(pattern, pattern)
        if narrowed is not None:
            out.append(Entry(narrowed, family_of(pattern, tuple(item.get("instances") or ()))))
    return out


def load() -> list[dict[str, Any]]:
    """The list as the installed package ships it."""
    text = importlib.resources.files(DATA[0]).joinpath(DATA[1]).read_text(encoding="utf-8")
    data: list[dict[str, Any]] = json.loads(text)
    return data


def version() -> str:
    """The installed version of the list (RULES.md names the pinned one)."""
    return importlib.metadata.version(PACKAGE)


@functools.cache
def matcher() -> Matcher:
    """The process-wide matcher over the installed list (built once, ~0.3 s)."""
    return Matcher(entries(load()))
