"""Times as people read them and as programs exchange them, in UTC throughout.

Tables print ``2026-12-03 09:19 UTC`` (minutes); JSON carries ISO 8601. A
time given without an offset is taken to be UTC.
"""

from __future__ import annotations

import datetime as dt


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (``2026-12-03T09:19:05Z``, ``2026-12-03 10:19+01:00``) in UTC; naive means UTC.

    ValueError names the text when it is not a time.
    """
    try:
        return as_utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-03T09:19:00Z; without an offset, UTC)") \
            from exc


def human_time(value: dt.datetime | None) -> str:
    """``2026-12-03 09:19 UTC``, or ``-`` when unknown."""
    return "-" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M UTC")

