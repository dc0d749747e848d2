"""loadtest.traffic: the client addresses the cost bench sends, as a load balancer names them."""

from __future__ import annotations

import ipaddress

from loadtest.traffic import Request, public_addresses, vary_addresses

REQUESTS = [
    Request("open", f"/o/{n}.gif", (("User-Agent", "a"), ("X-Forwarded-For", "203.0.113.7"), ("Referer", "r")))
    if n % 10 == 0 else Request("open", f"/o/{n}.gif", (("User-Agent", "a"), ("Referer", "r")))
    for n in range(5_000)
]  # fmt: skip


def test_public_addresses_are_distinct_and_global() -> None:
    """1,000 distinct addresses, each global, of both versions, the same for the same seed."""
    pool = public_addresses(1_000)
    parsed = [ipaddress.ip_address(a) for a in pool]
    assert len(set(pool)) == 1_000 and all(a.is_global for a in parsed)
    assert [str(a) for a in parsed] == pool  # each in its canonical text
    v6 = sum(a.version == 6 for a in parsed)
    assert 100 < v6 < 300  # about a fifth
    assert public_addresses(1_000) == pool and public_addresses(1_000, seed=1) != pool


def test_every_request_gets_one_address_of_the_pool() -> None:
    """Each request: its own headers in order, then one X-Forwarded-For from the 50 (the mix's own replaced)."""
    pool = set(public_addresses(50))
    varied = vary_addresses(REQUESTS, 50)
    assert [(r.category, r.path) for r in varied] == [(r.category, r.path) for r in REQUESTS]
    for request in varied:
        names = [n for n, _ in request.headers]
        assert names == ["User-Agent", "Referer", "X-Forwarded-For"]
        assert request.headers[-1][1] in pool
    assert {r.headers[-1][1] for r in varied} == pool  # 5,000 draws from 50: every one is used
