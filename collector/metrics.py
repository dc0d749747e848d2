"""Prometheus metrics of one collector process (or of all, with --workers).

Counters are bumped once per batch by the flusher, not per request, so the
request path never touches them; `buffered` covers hits not yet counted.
With several worker processes the parent sets PROMETHEUS_MULTIPROC_DIR and
/metrics adds up every worker's values.
"""

from __future__ import annotations

import os
from collections import Counter as TallyCounter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess


class Metrics:
    """The collector's instruments, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("pixeltrack_hits_accepted", "Hits attributed to a job", ["kind"], registry=r)
        self.rejected = Counter("pixeltrack_hits_rejected", "Hits whose token was refused", ["reason"], registry=r)
        self.repaired = Counter("pixeltrack_input_repaired", "Input values cleaned at the edge", ["reason"], registry=r)
        self.written = Counter("pixeltrack_hits_written", "Hits written to PostgreSQL", registry=r)
        self.spooled = Counter("pixeltrack_hits_spooled", "Hits written to the disk spool", registry=r)
        self.replayed = Counter("pixeltrack_hits_replayed", "Spooled hits replayed into PostgreSQL", registry=r)
        self.already = Counter("pixeltrack_hits_already_stored",
                               "Hits a replay or a retried COPY found stored already (or rolled up): not written twice",
                               registry=r)
        self.connections_cut = Counter("pixeltrack_connections_cut",
                                       "Connections the collector closed: slow_request, over_cap", ["reason"],
                                       registry=r)
        self.copy_failures = Counter("pixeltrack_copy_failures", "COPY batches that failed", registry=r)
        self.flush_seconds = Histogram(
            "pixeltrack_flush_seconds", "Time to write one batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # multiprocess_mode only matters with PROMETHEUS_MULTIPROC_DIR (--workers).
        self.buffered = Gauge("pixeltrack_hits_buffered", "Hits in memory awaiting a flush", registry=r,
                              multiprocess_mode="livesum")
        self.spool_bytes = Gauge("pixeltrack_spool_bytes", "Bytes waiting in the spool", registry=r,
                                 multiprocess_mode="max")
        self.database_up = Gauge("pixeltrack_database_up", "1 when the last write reached PostgreSQL",
                                 registry=r, multiprocess_mode="min")
        self.database_up.set(1)
        # What can go wrong on the way to PostgreSQL, and what became of the hits (issue 11).
        self.flush_errors = Counter("pixeltrack_flush_errors", "Unexpected errors in the flusher (logged; it goes on)",
                                    registry=r)
        self.flusher_restarts = Counter("pixeltrack_flusher_restarts", "Times the flusher task ended and was restarted",
                                        registry=r)
        self.spool_failures = Counter("pixeltrack_spool_write_failures",
                                      "Spool writes refused (disk full, read-only, size limit)", registry=r)
        self.quarantined = Counter("pixeltrack_spool_quarantined",
                                   "Spool batches or journal files that could not be read, moved to quarantine/",
                                   registry=r)
        self.recovered = Counter("pixeltrack_hits_recovered", "Hits read back from a dead collector's journal",
                                 registry=r)
        self.unjournaled = Counter("pixeltrack_hits_unjournaled", "Hits answered while no journal could be written",
                                   registry=r)
        self.lost = Counter("pixeltrack_hits_lost", "Hits neither PostgreSQL, the spool, memory nor the journal kept",
                            registry=r)
        self.held = Gauge("pixeltrack_hits_held", "Hits in memory that neither PostgreSQL nor the spool took",
                          registry=r, multiprocess_mode="livesum")
        self.parked = Gauge("pixeltrack_hits_parked", "Hits past PIXELTRACK_MAX_HELD, kept only in the journal",
                            registry=r, multiprocess_mode="livesum")
        self.journal_up = Gauge("pixeltrack_journal_up", "1 while hits are journaled before they are answered",
                                registry=r, multiprocess_mode="min")
        self.journal_up.set(1)

    def count_batch(self, kinds: TallyCounter[str], reasons: TallyCounter[str], repairs: TallyCounter[str]) -> None:
        """Add one batch's tallies."""
        for kind, n in kinds.items():
            self.accepted.labels(kind).inc(n)
        for reason, n in reasons.items():
            self.rejected.labels(reason).inc(n)
        for reason, n in repairs.items():
            self.repaired.labels(reason).inc(n)

    def render(self) -> bytes:
        """The text exposition format."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
