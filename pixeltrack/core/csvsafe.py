"""CSV that a spreadsheet opens as data, never as formulas.

Every CSV the product writes goes through ``writer``. A text cell starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return would be run as
a formula by Excel, LibreOffice or Google Sheets (CSV injection: a UTM tag,
a page title or an imported recipient is enough), so it gets a leading
single quote, as OWASP recommends. Numbers are left as numbers: only ``str``
cells are changed, so -3 stays a negative number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Text(Protocol):
    def write(self, text: str, /) -> Any: ...


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class SafeWriter:
    """csv.writer whose rows are neutralised cell by cell."""

    def __init__(self, out: _Text, **fmt: Any) -> None:
        self._writer = csv.writer(out, **fmt)

    def writerow(self, row: Iterable[Any]) -> None:
        """Write one row."""
        self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write every row."""
        for row in rows:
            self.writerow(row)


def writer(out: _Text, **fmt: Any) -> SafeWriter:
    """A CSV writer on ``out`` (``fmt``: csv.writer's format parameters) that neutralises formulas."""
    return SafeWriter(out, **fmt)
