"""Making untrusted header text safe to parse and to store.

Headers reach the aggregator exactly as a client sent them: NUL bytes, lone
surrogates and megabyte strings included. Everything enrichment reads or
writes goes through here, so a hostile value turns into None, never into an
exception or a row PostgreSQL refuses.
"""

from __future__ import annotations

import re

# Longest header value worth parsing; real user agents stay under 512.
MAX_INPUT = 2048
# Longest value written to an enrichment column.
MAX_OUTPUT = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACE = re.compile(r"\s+")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def clean(value: object, limit: int = MAX_INPUT) -> str | None:
    """``value`` as printable UTF-8 text cut to ``limit``, or None when empty or not text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value[:limit]
    # Lone surrogates cannot be encoded to UTF-8: replace them, do not fail.
    value = value.encode("utf-8", "replace").decode("utf-8")
    value = _SPACE.sub(" ", _CONTROL.sub(" ", value)).strip()
    return value or None


def label(value: object, limit: int = MAX_OUTPUT) -> str | None:
    """A value for an output column: cleaned and short."""
    return clean(value, limit)


def language(header: object) -> str | None:
    """Primary language of an Accept-Language header: 'de' from 'de-CH,de;q=0.9'."""
    text = clean(header, 256)
    if text is None:
        return None
    tag = text.split(",", 1)[0].split(";", 1)[0].strip().replace("_", "-").split("-", 1)[0].lower()
    return tag if _LANGUAGE.fullmatch(tag) else None
