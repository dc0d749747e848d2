"""Enrichment throughput with cache cold and warm.

Generates a realistic mix of hits (a few hundred distinct agents and a few
thousand addresses, repeated as in a real mailing) and times three passes:

* cold     -- first pass of a fresh Enricher in this process (per-run caches
              start empty, ua-parser's lazy rules load and the crawler
              list's matcher is built on first use);
* warm     -- the same batch again: caches fill again, rules already loaded;
* uncached -- the test oracle (tests/aggregator/enrich/reference.py: every
              step for every hit), only when ``tests`` is importable (a
              source checkout); production has no uncached path, so an
              installed wheel prints no such column.

Prints hits/s and ratios; no assertions (STYLE.md: benchmarks measure).

    python -m loadtest.bench_enrich --hits 50000
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.enrich import EnrichConfig, Enricher

oracle: Callable[..., list[dict[str, Any]]] | None
try:  # the test oracle, present in a source checkout only
    from tests.aggregator.enrich.reference import enrich as oracle
except ImportError:
    oracle = None

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "support" / "fixtures" / "user_agents.json"
LANGUAGES = ["en-US,en;q=0.9", "de-DE,de;q=0.9", "fr-FR,fr;q=0.8", None]
REFERERS = [None, None, "https://www.google.com/", "https://mail.google.com/", "https://t.co/x"]


def agents(rng: random.Random, distinct: int) -> list[str]:
    """Fixture agents plus browser variants with many versions, like real traffic."""
    base = [case["ua"] for case in json.loads(FIXTURE.read_text())["cases"] if case["ua"]]
    variants = [
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{rng.randint(100, 130)}.0.{rng.randint(1000, 7000)}.{rng.randint(0, 200)} Safari/537.36"
        for _ in range(distinct - len(base))
    ]
    return base + variants


def generate(count: int, seed: int = 4) -> list[dict[str, Any]]:
    """``count`` hits over 5,000 recipients with Zipf-like repeats of agents."""
    rng = random.Random(seed)
    pool = agents(rng, 300)
    addresses = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                 for _ in range(4000)]  # fmt: skip
    start = datetime(2025, 3, 4, 12, tzinfo=UTC)
    hits = []
    for n in range(count):
        kind = rng.choice(("open", "open", "click", "page"))
        hits.append({
            "hit_id": n, "received_at": start + timedelta(seconds=n * 0.05), "kind": kind,
            "job_id": 1, "recipient_id": rng.randint(1, 5000),
            "link": f"https://shop.example/p/{rng.randint(1, 8)}?utm_source=mail" if kind != "open" else None,
            "page": None, "client_ip": rng.choice(addresses),
            "user_agent": pool[int(rng.paretovariate(1.1)) % len(pool)],
            "referer": rng.choice(REFERERS), "accept_language": rng.choice(LANGUAGES),
            "method": "GET", "prefetch": False,
        })  # fmt: skip
    return hits


def rate(enricher: Enricher, hits: list[dict[str, Any]], sent_at: dict[int, datetime]) -> float:
    """Hits per second of one enrich call."""
    began = time.perf_counter()
    enricher.enrich(hits, sent_at)
    return len(hits) / (time.perf_counter() - began)


def oracle_rate(hits: list[dict[str, Any]], sent_at: dict[int, datetime]) -> float | None:
    """Hits per second of the uncached test oracle, or None without it."""
    if oracle is None:
        return None
    began = time.perf_counter()
    oracle(EnrichConfig(), hits, sent_at)
    return len(hits) / (time.perf_counter() - began)


def main() -> None:
    """Run the passes and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hits", type=int, default=50_000)
    args = parser.parse_args()
    hits = generate(args.hits)
    sent_at = {1: hits[0]["received_at"] - timedelta(hours=1)}
    distinct_agents = len({h["user_agent"] for h in hits})
    distinct_ips = len({h["client_ip"] for h in hits})
    print(f"{len(hits)} hits, {distinct_agents} distinct agents, {distinct_ips} distinct addresses")
    cold = rate(Enricher(EnrichConfig()), hits, sent_at)
    warm = rate(Enricher(EnrichConfig()), hits, sent_at)
    uncached = oracle_rate(hits, sent_at)
    print(f"cold:     {cold:10.0f} hits/s ({1e6 / cold:.1f} µs/hit)")
    print(f"warm:     {warm:10.0f} hits/s ({1e6 / warm:.1f} µs/hit)")
    print(f"ratio warm/cold:     {warm / cold:.2f}")
    if uncached is None:
        print("uncached: -- (the test oracle is not importable: no tests/ beside this install)")
    else:
        print(f"uncached: {uncached:10.0f} hits/s (test oracle)")
        print(f"ratio warm/uncached: {warm / uncached:.2f}")


if __name__ == "__main__":
    main()
