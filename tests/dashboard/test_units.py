"""Small parts of the dashboard: CSV neutralising, the log-in limiter, time buckets, SVG charts."""

from __future__ import annotations

import datetime as dt

from pixeltrack.dashboard import charts, csvout
from pixeltrack.dashboard.login import safe_next
from pixeltrack.dashboard.ratelimit import RateLimiter
from pixeltrack.dashboard.reports import DateRange, bucket, rates


class TestCsvCells:
    """Cells a spreadsheet would run as a formula get a leading apostrophe; others pass unchanged."""

    def test_cells(self) -> None:
        risky = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
        assert [csvout.cell(v) for v in risky] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx"]
        assert [csvout.cell(v) for v in ("a=1", 5, -3, None, dt.date(2024, 5, 6))] == [
            "a=1", "5", "'-3", "", "2024-05-06"]
        assert csvout.to_csv(["h"], [["=x"], ["y"]]) == "h\r\n'=x\r\ny\r\n"

    def test_file_names(self) -> None:
        assert csvout.safe_name('a"b\r\nc/../é') == "a_b__c_..__"


class TestRateLimiter:
    """Five events per key per minute; old events expire; keys are bounded."""

    def test_window(self) -> None:
        now = [0.0]
        limit = RateLimiter(5, 60, max_keys=3, clock=lambda: now[0])
        for _ in range(5):
            assert not limit.blocked("ip:1")
            limit.add("ip:1", "email:a")
        assert limit.blocked("ip:1") and limit.blocked("ip:2", "email:a") and not limit.blocked("ip:2")
        now[0] = 60.5
        assert not limit.blocked("ip:1", "email:a")

    def test_bounded(self) -> None:
        limit = RateLimiter(1, 60, max_keys=3)
        for key in ("a", "b", "c", "d"):
            limit.add(key)
        assert not limit.blocked("a") and limit.blocked("d") and len(limit._events) == 3


class TestBuckets:
    """Time series are summed per hour (spans up to 72 hours) or per day, gaps filled with 0."""

    def test_hours_and_days(self) -> None:
        points = [{"hour": "2024-05-06T10:00:00+00:00", "opens": 2, "clicks": 1},
                  {"hour": "2024-05-06T13:00:00+00:00", "opens": 1, "clicks": 0}]
        hourly = bucket(points, "hour", DateRange())
        assert (hourly.unit, hourly.labels[0], hourly.fields["opens"]) == ("hour", "2024-05-06 10:00", [2, 0, 0, 1])
        points.append({"hour": "2024-05-10T01:00:00+00:00", "opens": 5, "clicks": 5})
        daily = bucket(points, "hour", DateRange())
        assert (daily.unit, daily.fields["opens"]) == ("day", [3, 0, 0, 0, 5])
        only = bucket(points, "hour", DateRange(dt.date(2024, 5, 10), dt.date(2024, 5, 10)))
        assert (only.labels, only.fields["clicks"]) == (["2024-05-10 01:00"], [5])

    def test_ranges(self) -> None:
        assert DateRange.parse({"from": "2024-05-06"}).first == dt.date(2024, 5, 6)
        assert DateRange.parse({"from": "2024-05-07", "to": "2024-05-06"}).error
        assert DateRange.parse({"to": "6 May"}).error


class TestRates:
    """Rates as the job_rates view has them."""

    def test_rates(self) -> None:
        report = {"mode": "unique", "recipients_count": 8, "opens": {"headline": 9, "unique": 4},
                  "clicks": {"headline": 3, "unique": 2}}
        assert rates(report) == {"open_rate": 0.5, "click_rate": 0.25, "click_to_open": 0.5}
        blind = {"mode": "blind", "recipients_count": 0, "opens": {"headline": 8, "unique": None},
                 "clicks": {"headline": 2, "unique": None}}
        assert rates(blind) == {"open_rate": None, "click_rate": None, "click_to_open": 0.25}


class TestCharts:
    """Charts are SVG with escaped text and one point per value."""

    def test_line_chart(self) -> None:
        svg = charts.line_chart(["a", "b", "<c>"], [charts.Series("<x>", [0, 5, 10])], "t&t")
        assert 'd="M0,184 L330,92 L660,0"' in svg
        assert "<title>t&amp;t</title>" in svg and "&lt;c&gt;" in svg and "<c>" not in svg
        assert charts.nice_top(0) == 1 and charts.nice_top(7) == 10 and charts.nice_top(101) == 200

    def test_bar(self) -> None:
        assert 'class="fill s0" width="40"' in charts.bar(1, 4)
        assert 'class="fill s0" width="0"' in charts.bar(1, 0)

    def test_next(self) -> None:
        assert [safe_next(t) for t in ("/jobs/1?q=a", "//evil", "https://evil", "/\\evil", None)] == [
            "/jobs/1?q=a", "/", "/", "/", "/"]
