"""Prometheus metrics of trigger delivery, in a registry of their own (one per aggregator)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class TriggerMetrics:
    """Sent, failed, retried and dead-lettered deliveries; pending events and the oldest one's age."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.found = Counter("pixeltrack_trigger_events", "Events written to the outbox", ["type"], registry=r)
        self.sent = Counter("pixeltrack_trigger_sent", "Deliveries acknowledged (2xx, or mail accepted)", registry=r)
        self.failed = Counter("pixeltrack_trigger_failed", "Delivery attempts that failed", ["reason"], registry=r)
        self.retried = Counter("pixeltrack_trigger_retried", "Failed deliveries scheduled again", registry=r)
        self.dead = Counter("pixeltrack_trigger_dead", "Deliveries given up after the retry period", registry=r)
        self.pending = Gauge("pixeltrack_trigger_pending", "Events waiting for delivery", registry=r)
        self.oldest = Gauge("pixeltrack_trigger_oldest_pending_seconds", "Age of the oldest pending event",
                            registry=r)  # fmt: skip
        self.seconds = Histogram(
            "pixeltrack_trigger_send_seconds", "Time of one delivery attempt", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
