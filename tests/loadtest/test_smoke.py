"""CI smoke of the load command: a few seconds of traffic, and not one hit lost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from collector.answers import GIF
from loadtest import procs, support

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ["asyncio"] + (["wrk"] if shutil.which("wrk") else [])


@pytest.mark.slow
class TestLoadSmoke:
    """`python -m loadtest run` for 3 seconds answers hits and the database holds every one."""

    @pytest.mark.parametrize("driver", DRIVERS)
    def test_no_loss(self, server_url: str, driver: str) -> None:
        """Exit 0 and `loss: 0 of N` with N > 0; no timing is asserted."""
        env = {**os.environ, "DATABASE_URL": server_url}
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest", "run", "--duration", "3", "--driver", driver,
             "--connections", "16", "--recipients", "5000", "--mix-size", "10000"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        match = re.search(r"^loss: 0 of (\d+)", proc.stdout, re.MULTILINE)
        assert match, proc.stdout + proc.stderr
        assert int(match.group(1)) > 0


@pytest.mark.slow
class TestBaselines:
    """The benchmark's bare handlers answer exactly what the collector answers a pixel with."""

    @pytest.mark.parametrize("canned", [False, True])
    def test_bare_answers_the_gif(self, tmp_path: Path, canned: bool) -> None:
        """200, the 42-byte GIF and the no-store header on every route; SIGTERM ends it with 0."""
        port = support.free_port()
        cmd = [sys.executable, "-m", "loadtest.bare", "--port", str(port), *(["--canned"] if canned else [])]
        server = procs.Server(cmd, port, log=tmp_path / "bare.log")
        try:
            server.wait_ready()
            for route in ("/o/anything.gif", "/c/anything", "/d/anything/3.gif"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5) as r:
                    assert (r.status, r.read(), r.headers["Content-Type"]) == (200, GIF, "image/gif")
                    assert r.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, private, max-age=0"
        finally:
            assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("wrk"), reason="loadtest.ab drives with wrk")
class TestAB:
    """`python -m loadtest.ab` drives each server and prints a ratio line per server."""

    def test_one_short_round(self, server_url: str) -> None:
        """Exit 0 and one ratio line each for bare and collector; the base's ratio is exactly 1."""
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest.ab", "--servers", "bare,collector", "--rounds", "1", "--seconds", "1",
             "--recipients", "2000", "--mix-size", "2000"],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": server_url}, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"^  bare +CPU/hit x1\.000  hits/s x1\.000", proc.stdout, re.MULTILINE), proc.stdout
        assert re.search(r"^  collector +CPU/hit x\d+\.\d{3}  hits/s x\d+\.\d{3}", proc.stdout, re.MULTILINE)


@pytest.mark.slow
class TestDashboardBenchSmoke:
    """`python -m loadtest.bench_dashboard --scale 0.001` builds its data, serves it and times every route."""

    def test_every_route_answers(self, server_url: str) -> None:
        """Exit 0 and one table row per route (each route must answer 200); no timing is asserted."""
        env = {**os.environ, "DATABASE_URL": server_url}
        proc = subprocess.run([sys.executable, "-m", "loadtest.bench_dashboard", "--scale", "0.001", "--rounds", "2"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = re.findall(r"^\| (.+?) \| \d+ \| \d+ \| \d+ \| \d+ \|", proc.stdout, re.MULTILINE)
        assert len(rows) == 15 and rows[0] == "overview", proc.stdout


@pytest.mark.slow
class TestMarkingBenchSmoke:
    """`python -m loadtest.bench_marking --rows 300 --rounds 1`: every table shape marked, the product's ratio 1."""

    def test_every_shape(self, server_url: str) -> None:
        """Exit 0, one line per shape, the product's at exactly 1.00x and no HOT update, the delete's no HOT
        either, the fillfactor-50 shape's some (no timing is asserted)."""
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest.bench_marking", "--rows", "300", "--rounds", "1",
             "--database-url", server_url],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = dict(re.findall(r"^  (\S.*?) +\d+\.\d\d +(\d+\.\d\dx product +\d+% HOT)", proc.stdout, re.MULTILINE))
        assert list(lines) == ["product", "plain key", "key only", "no unrolled index", "HOT, fillfactor 50",
                               "recipient, no dedup", "key, no dedup", "reinserted", "moved",
                               "delete"], proc.stdout
        assert lines["product"] == "1.00x product    0% HOT" and lines["delete"].endswith(" 0% HOT")
        assert not lines["HOT, fillfactor 50"].endswith(" 0% HOT"), proc.stdout


class TestAddressesBenchSmoke:
    """`python -m loadtest.bench_addresses` on 200 addresses: both lines, with their ratios."""

    def test_both_lines(self) -> None:
        """Exit 0; the pool line counts the 200 addresses; a ratio for the collector and the enrichment."""
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest.bench_addresses", "--addresses", "200", "--hops", "2000", "--rounds", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"^200 addresses \(\d+ IPv6\), 2,000 hops$", proc.stdout, re.MULTILINE), proc.stdout
        for what in ("collector, per hop", "enrichment, per address"):
            assert re.search(rf"^{what}: +[\d.]+ µs; reference +[\d.]+ µs: \d+\.\d\dx$", proc.stdout, re.MULTILINE), proc.stdout
