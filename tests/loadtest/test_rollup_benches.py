"""CI smokes of the roll-up benchmarks: tiny runs, and their own consistency lines (never their timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(module: str, server_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`python -m loadtest.<module> <flags>` on the test server; exit 0 asserted with its output."""
    proc = subprocess.run([sys.executable, "-m", f"loadtest.{module}", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "DATABASE_URL": server_url})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def hits_collected(out: str) -> str:
    """How many hits a benchmark's collect took, as it printed the number (with commas)."""
    found = re.search(r"^([\d,]+) hits collected at", out, re.MULTILINE)
    assert found, out
    return found[1]


def assert_lines(out: str, names: tuple[str, ...], figures: str) -> None:
    """A line "  <name> <figures>" in ``out`` for each of ``names`` (``figures``: a pattern)."""
    for name in names:
        assert re.search(rf"^  {re.escape(name)} +{figures}$", out, re.MULTILINE), out


@pytest.mark.slow
class TestKeepUpSmoke:
    """`bench_keepup` for 5 s: a line per second, then every answered hit stored, counted and rolled up."""

    def test_nothing_lost(self, server_url: str) -> None:
        """Answered = stored (tombstones) = report_job_totals + report_rejected, none unrolled, the aggregator exits 0."""
        out = bench("bench_keepup", server_url, "--duration", "5", "--interval", "1", "--every", "1",
                    "--recipients", "2000", "--mix-size", "5000").stdout  # fmt: skip
        assert len(re.findall(r"^ +\d+ s  load +stored", out, re.MULTILINE)) >= 4, out
        clients = re.search(r"^campaign .* distinct agents, ([\d,]+) client addresses$", out, re.MULTILINE)
        assert clients and int(clients[1].replace(",", "")) > 1_000, out  # 5,000 requests from 20,000 addresses
        answered = int(re.search(r"^answered +([\d,]+) hits", out, re.MULTILINE)[1].replace(",", ""))  # type: ignore[index]
        assert answered > 0, out
        assert f"loss: 0 of {answered} (database holds exactly the {answered} answered hits)" in out, out
        reported = re.search(r"^reported .* = ([\d,]+) hits; answered minus reported, per category: loss: 0 of",
                             out, re.MULTILINE)
        assert reported and int(reported[1].replace(",", "")) == answered, out
        stored = re.search(r"^stored +([\d,]+) hits by the collectors' tombstones \(copied_hits\), as many as answered$",
                           out, re.MULTILINE)
        assert stored and int(stored[1].replace(",", "")) == answered, out
        assert re.search(r"^unrolled +0 raw hits", out, re.MULTILINE), out
        assert re.search(r"; 0 errors; exit 0$", out, re.MULTILINE), out
        assert re.search(r"^catch-up .* all rolled up after [\d.]+ s", out, re.MULTILINE), out
        assert out.rstrip().endswith("nothing lost"), out


@pytest.mark.slow
class TestTwoAggregatorsSmoke:
    """`bench_two_aggregators` on a small backlog: one and two aggregators roll up every hit exactly once."""

    def test_exactly_once(self, server_url: str) -> None:
        """Both runs roll up all 4000 hits, none left, hit counts identical; every aggregator's line printed."""
        out = bench("bench_two_aggregators", server_url, "--hits", "4000", "--rounds", "1",
                    "--recipients", "2000", "--mix-size", "4000").stdout  # fmt: skip
        assert "loss: 0 of 4000 (database holds exactly the 4000 answered hits)" in out, out
        assert len(re.findall(r"^    pt-aggregator-\d: rolled up \d+ hits", out, re.MULTILINE)) == 3, out
        for who in ("one aggregator ", "two aggregators"):
            assert re.search(rf"^{who} +rolled up 4,000 of 4,000, 0 left unrolled; hit counts identical", out,
                             re.MULTILINE), out  # fmt: skip
        assert re.search(r"^speed-up +one / two: [\d.]+x", out, re.MULTILINE), out
        assert out.rstrip().endswith("exactly once: yes"), out


@pytest.mark.slow
class TestCostPairsSmoke:
    """`bench_cost --duration 1 --pairs 1` on its private PostgreSQL: one collect, its roll-up, a ratio."""

    def test_one_pair(self, server_url: str) -> None:
        """Exit 0, one pair line with both costs and every collected hit rolled up, and the median line."""
        out = bench("bench_cost", server_url, "--duration", "1", "--pairs", "1").stdout
        pair = re.search(r"^pair 1: ([\d,]+) hits collected at .*; collect [\d.]+ \+ [\d.]+ = [\d.]+ us per hit; "
                         r"roll-up [\d.]+ \+ [\d.]+ = [\d.]+ us per hit: \d+\.\d\dx \[rolled up (\d+) hits in \d+ "
                         r"batches", out, re.MULTILINE)
        assert pair and int(pair[1].replace(",", "")) == int(pair[2]) > 0, out
        assert re.search(r"^roll-up / collect, 1 pairs: median (\d+\.\d\d)x, least \1x, all \1 \(aim 0\.25x\)$", out,
                         re.MULTILINE), out

    def test_stages_against(self, server_url: str) -> None:
        """`--stages --against` this very tree: each round rolls up every collected hit with both, and the medians
        table names the stages for both, then the totals' ratio."""
        out = bench("bench_cost", server_url, "--duration", "1", "--stages", "--rounds", "1",
                    "--against", str(ROOT)).stdout  # fmt: skip
        collected = hits_collected(out)
        rounds = re.findall(r"^round 1 (this tree|against): ([\d,]+) hits, [\d.]+ us per hit$", out, re.MULTILINE)
        assert [who for who, _ in rounds] == ["this tree", "against"], out
        assert {hits for _, hits in rounds} == {collected}, out
        assert_lines(out, ("claim", "enrich", "build", "copy", "mark", "merge_totals"),
                     r"\d+\.\d\d / +\d+\.\d\d +\d+\.\d\d / +\d+\.\d\d")  # fmt: skip
        assert re.search(r"^  total \(median\) +[\d.]+ +[\d.]+  \(\d+\.\d\dx\)$", out, re.MULTILINE), out
        walls = re.findall(r"^ +[\d.]+ +[\d.]+  (.+)$", out.split("longest statements")[-1], re.MULTILINE)
        assert len(walls) == 12 and any(w.startswith("SELECT hit_id::text AS hit_id") for w in walls), out

    def test_marginal(self, server_url: str) -> None:
        """`--marginal 0.5`: the 'all' round rolls up every collected hit, the 'part' round its share, and the
        split of a run's cost is printed."""
        out = bench("bench_cost", server_url, "--duration", "1", "--marginal", "0.5", "--rounds", "1").stdout
        collected = int(hits_collected(out).replace(",", ""))
        rounds = {who: (int(hits.replace(",", "")), int(rolled)) for who, hits, rolled in re.findall(
            r"^round 1 (all|part): ([\d,]+) hits, aggregator [\d.-]+ s \+ PostgreSQL [\d.-]+ s = [\d.-]+ us per hit "
            r"\[rolled up (\d+) hits", out, re.MULTILINE)}  # fmt: skip
        assert rounds["all"] == (collected, collected), out
        assert rounds["part"][0] == rounds["part"][1] and 0 < rounds["part"][1] < collected, out
        assert re.search(r"^all [\d,]+ hits: [\d.-]+ us per hit = [\d.-]+x collect .*; a hit more: aggregator [\d.-]+ "
                         r"\+ PostgreSQL [\d.-]+ = [\d.-]+ us = [\d.-]+x; the rest, a run's: aggregator [\d.-]+ \+ "
                         r"PostgreSQL [\d.-]+ s", out, re.MULTILINE), out  # fmt: skip


@pytest.mark.slow
class TestSetBasedSmoke:
    """`bench_setbased --duration 1 --rounds 1`: both ways build a batch of every collected hit, each step priced."""

    def test_both_ways(self, server_url: str) -> None:
        """Every collected hit built by today's steps and by the prototype; each step's line; the ratio line."""
        out = bench("bench_setbased", server_url, "--duration", "1", "--rounds", "1").stdout
        collected = hits_collected(out)
        built = re.findall(r"^(today|set-based): ([\d,]+) hits, [\d.]+ us per hit$", out, re.MULTILINE)
        assert built == [("today", collected), ("set-based", collected)], out
        assert_lines(out, ("today: judge, enrich, build, copy", "set: batch rows (one INSERT ... SELECT)",
                           "set: clicks and document views, hit by hit"), r"\d+\.\d\d / +\d+\.\d\d")  # fmt: skip
        assert re.search(r"^set-based / today: \d+\.\d\dx, -?[\d.]+ us per hit less$", out, re.MULTILINE), out


@pytest.mark.slow
class TestFloorSmoke:
    """`bench_floor --duration 1 --rounds 1`: the product, the SQL floor and the read on the same collected hits."""

    def test_floor_and_read(self, server_url: str) -> None:
        """Every collected hit judged by the floor and read by the claim; each step's line; the three sums."""
        out = bench("bench_floor", server_url, "--duration", "1", "--rounds", "1").stdout
        collected = hits_collected(out)
        judged = re.search(r"^round 1: ([\d,]+) hits judged \(([\d,]+) deleted, ([\d,]+) rewritten\), ([\d,]+) read; "
                           r"product [\d.]+, floor [\d.]+, read [\d.]+ us per hit$", out, re.MULTILINE)
        assert judged, out
        hits, deleted, rewritten, read = (int(n.replace(",", "")) for n in judged.groups())
        assert hits == read == int(collected.replace(",", "")), out
        assert deleted + rewritten == hits and deleted > 0 and rewritten > 0, out
        assert_lines(out, ("product", "judge", "group", "delete", "rewrite", "floor", "read (aggregator)",
                           "read (PostgreSQL)"), r"\d+\.\d\d  \d\.\d\d\dx")  # fmt: skip
        assert re.search(r"^floor without the rewrite .*: [\d.]+ us per hit, \d\.\d\d\dx$", out, re.MULTILINE), out
        assert re.search(r"^floor with every hit read by the aggregator: [\d.]+ us per hit", out, re.MULTILINE), out


@pytest.mark.slow
class TestVectorSmoke:
    """`bench_vector --duration 1 --rounds 1`: the product and the columnar prototype on the same collected hits."""

    def test_counts_agree_with_the_product(self, server_url: str) -> None:
        """Every collected hit read once, deleted or rewritten; its counts per job and kind are the product's; each
        step's line and the three sums."""
        out = bench("bench_vector", server_url, "--duration", "1", "--rounds", "1").stdout
        collected = int(hits_collected(out).replace(",", ""))
        done = re.search(r"^round 1: ([\d,]+) hits read \(([\d,]+) deleted, ([\d,]+) rewritten\); product [\d.]+, "
                         r"columnar core [\d.]+ us per hit$", out, re.MULTILINE)  # fmt: skip
        assert done, out
        read, deleted, rewritten = (int(n.replace(",", "")) for n in done.groups())
        assert read == collected and deleted + rewritten == read and deleted > 0 and rewritten > 0, out
        agree = re.search(r"^counted ([\d,]+) hits in (\d+) \(job, kind\) cells; cells that differ from the "
                          r"product's: (\d+)$", out, re.MULTILINE)  # fmt: skip
        # every hit in one cell (rejected hits in cells of their own), each cell as the product counted it
        assert agree and agree[3] == "0" and int(agree[2]) >= 10 and int(agree[1].replace(",", "")) == read, out
        assert_lines(out, ("read", "tracks", "distinct values", "verdicts", "hashes", "click rules", "groupings",
                           "grouped rows in", "keys in", "delete", "rewrite"),
                     r"\d+\.\d\d \( *\d+\.\d\d\)  \d\.\d\d\dx")  # fmt: skip
        for total in ("columnar core", "core \\+ delete \\+ rewrite \\(raw rows as today\\)",
                      "core \\+ delete, kept rows not rewritten"):
            assert re.search(rf"^{total}: [\d.]+ us per hit, \d\.\d\d\dx", out, re.MULTILINE), out


async def test_a_share_is_written_anew(server_url: str) -> None:
    """bench_cost.part_of keeps the hits its counter draws (1,000 hits, half drawn) and writes them into emptied
    partitions: no dead row is left for a claim to step over, so the part's partitions take about half the
    pages; the runs are rebuilt."""
    from loadtest import bench_cost, support
    from pixeltrack.core import db
    from tests.support.hits import add_hits, hit

    url = await support.create_database(server_url, "pt_cost_share_test")
    part = None
    try:
        conn = await db.connect(url)
        rows = [hit("open", 1, i, i / 1000) for i in range(1000)]
        await add_hits(conn, rows)
        drawn = sorted(r[0] for r in rows if int(str(r[0])[-8:], 16) % 1000 < 500)
        pages = "SELECT sum(pg_relation_size(inhrelid))::int8 FROM pg_inherits WHERE inhparent = 'raw_hits'::regclass"
        before = await conn.fetchval(pages)
        await conn.close()
        part, count = await bench_cost.part_of(server_url, url, 0.5)
        assert count == len(drawn) and 400 < count < 600
        conn = await db.connect(part)
        assert sorted(r[0] for r in await conn.fetch("SELECT hit_id FROM raw_hits")) == drawn
        assert await conn.fetchval(pages) <= before * 0.6
        assert await conn.fetchval("SELECT sum(hits) FROM hit_runs") == count
        await conn.close()
    finally:
        for each in (url, part):
            if each is not None:
                await support.drop_database(server_url, each)
