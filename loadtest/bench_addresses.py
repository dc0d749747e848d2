"""What a client address costs, in the collector and in the enrichment: `python -m loadtest.bench_addresses`.

Behind a load balancer every hit names its client in X-Forwarded-For, and real
traffic brings about as many addresses as devices. Per address (``--addresses``
distinct public ones, a fifth IPv6; ``--hops`` hops drawn from them), CPU of:

* the collector's ``ClientAddress.resolve`` against its reference: the same
  hop parsed by ``ipaddress`` every time, tested against the trusted networks
  and spelt with ``str`` (what it did before 2026-12-04, less its caches);
* the enrichment's ``Run.spot`` (place, masked address, network tests) against
  its reference: ``GeoLookup.lookup``, ``mask_ip`` and ``ipaddress`` membership
  tests, once per distinct address as both do (the enricher's address tables,
  kept across calls, are emptied before each round).

Each pair is measured in this run, alternating, ``--rounds`` times; the
medians and their ratios are printed. Measures and prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

from aggregator.enrich.config import EnrichConfig
from aggregator.enrich.enricher import Enricher
from aggregator.enrich.geo import mask_ip, parse_ip
from aggregator.enrich.run import Run
from collector import cleaning
from collector.cleaning import ClientAddress, parse_reference
from loadtest.traffic import public_addresses
from pixeltrack.core.config import parse_networks

TRUSTED = parse_networks("127.0.0.1, 10.0.0.0/8")


def collector_reference(hop: str) -> str | None:
    """A hop from the trusted balancer resolved the plain way: parsed, tested, spelt."""
    addr = parse_reference(hop)
    if addr is None:
        return None
    any(addr.version == net.version and addr in net for net in TRUSTED)
    return str(addr)


def spot_reference(enricher: Enricher, config: EnrichConfig) -> Callable[[str], object]:
    """The enrichment's address work the plain way (the test oracle's steps)."""
    apple, scanner = config.apple_networks, config.scanner_networks

    def spot(text: str) -> object:
        address = parse_ip(text)
        if address is None:
            return None
        inside = [address.version == n.version and address in n for n in (*apple, *scanner)]
        return enricher.geo.lookup(address), mask_ip(address, config.ipv4_prefix, config.ipv6_prefix), inside

    return spot


def timed(work: Callable[[str], object], items: Sequence[str]) -> float:
    """CPU µs per item of ``work`` over ``items``."""
    began = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - began) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=20_000, help="distinct client addresses (default 20000)")
    parser.add_argument("--hops", type=int, default=200_000, help="X-Forwarded-For hops resolved (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    pool = public_addresses(args.addresses)
    rng = random.Random(3)
    hops: Sequence[str] = [rng.choice(pool) for _ in range(args.hops)]
    config = EnrichConfig()
    enricher = Enricher(config)
    reference = spot_reference(enricher, config)
    print(f"{len(pool):,} addresses ({sum(':' in a for a in pool):,} IPv6), {len(hops):,} hops")
    spent: dict[str, list[float]] = {name: [] for name in ("resolve", "resolve ref", "spot", "spot ref")}
    for _ in range(args.rounds):
        cleaning._parse.cache_clear()  # each address first seen in the round, as by a new collector
        addresses, repairs = ClientAddress(TRUSTED), Counter[str]()
        spent["resolve"].append(timed(partial(addresses.resolve, "127.0.0.1", repairs=repairs), hops))
        spent["resolve ref"].append(timed(collector_reference, hops))
        enricher.forget_addresses()  # the enricher keeps addresses across calls: each round places them anew
        spent["spot"].append(timed(Run(enricher).spot, pool))
        spent["spot ref"].append(timed(reference, pool))
    mid = {name: statistics.median(values) for name, values in spent.items()}
    print(f"collector, per hop:        {mid['resolve']:6.2f} µs; reference {mid['resolve ref']:6.2f} µs: "
          f"{mid['resolve'] / mid['resolve ref']:.2f}x")
    print(f"enrichment, per address:   {mid['spot']:6.2f} µs; reference {mid['spot ref']:6.2f} µs: "
          f"{mid['spot'] / mid['spot ref']:.2f}x")


if __name__ == "__main__":
    main()
