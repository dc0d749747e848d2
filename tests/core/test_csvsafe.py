"""Spreadsheet-safe CSV: formulas neutralised, numbers kept."""

from __future__ import annotations

import io

from pixeltrack.core import csvsafe


class TestNeutralise:
    """Text starting with = + - @ tab or CR gets a leading quote; anything else is unchanged."""

    def test_cells(self) -> None:
        """Six formula starts quoted; numbers, None and harmless text kept as they are."""
        cells = ["=1+2", "+49 30", "-x", "@SUM(A1)", "\tx", "\rx", "a=b", " =x", "'quoted", "", -3, 2.5, None]
        assert [csvsafe.neutralise(c) for c in cells] == [
            "'=1+2", "'+49 30", "'-x", "'@SUM(A1)", "'\tx", "'\rx", "a=b", " =x", "'quoted", "", -3, 2.5, None]


class TestWriter:
    """The writer neutralises every row and keeps csv.writer's quoting and format."""

    def test_exact_text(self) -> None:
        """Two rows, CSV quoting of the quoted formula, -3 as a number."""
        buf = io.StringIO()
        out = csvsafe.writer(buf, lineterminator="\n")
        out.writerow(["item", "value"])
        out.writerows([['=HYPERLINK("https://evil.example","x")', -3], ["-", "a,b"]])
        assert buf.getvalue() == (
            "item,value\n"
            '"\'=HYPERLINK(""https://evil.example"",""x"")",-3\n'
            "'-,\"a,b\"\n"
        )
