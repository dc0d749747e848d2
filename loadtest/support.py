"""Support shared by the load tests and the test suite: ports, throwaway databases, a stand-in enricher."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.enrich import OUTPUT_KEYS
from aggregator.enrich.geo import mask_ip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FlagEnricher:
    """Stand-in enricher: machine traffic from the collector's prefetch flag only, everything else unknown.

    Lets roll-up tests and the aggregator benchmark fix each hit's verdict by
    hand, independent of the user-agent rules.
    """

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, dt.datetime | None]
    ) -> list[dict[str, Any]]:
        """One dict of the enrichment columns per hit, in order."""
        out = []
        for hit in hits:
            row: dict[str, Any] = dict.fromkeys(OUTPUT_KEYS)
            machine = bool(hit["prefetch"])
            row["traffic"] = "machine" if machine else "unknown"
            row["machine_reason"] = "prefetch" if machine else None
            row["client_ip_masked"] = mask_ip(hit["client_ip"])
            out.append(row)
        return out
