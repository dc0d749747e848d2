"""Settings of the aggregator, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aggregator.enrich.config import EnrichConfig
from pixeltrack.core.config import ConfigError, env_float, env_int

DEFAULT_INTERVAL = 60
# Raw hits a roll-up transaction claims at most. Each batch has costs of its own (per-job claims,
# markings and look-ups, the batch table's statements, the look-ahead past its newest hit), and
# each distinct agent, address, profile and recipient of a batch is worked out, looked up and
# upserted once a batch, so a recipient's hits in one batch are one upsert where several batches
# make several: the same 181,697 hits cost 36.1 µs a hit (median of 4) in batches of 20,000, 31.4
# in 50,000 and 28.0 in 100,000, the aggregator's peak RSS 112, 145 and 194 MB (loadtest/RESULTS.md,
# figure 16). On columns (§26) the same 204,698 hits cost 19.0 µs a hit in batches of 50,000, 15.8
# in 100,000 or 105,000 (two large batches) and 14.2-14.4 in one of 250,000: a second large batch
# costs about 300 ms of work on distinct values, whatever its size. The aggregator's peak RSS is
# about 330 MB before a batch (the enrichment's tables, polars) plus about 0.55 kB a claimed hit:
# 387 MB at 100,000, 470 MB at 250,000 (§25).
DEFAULT_BATCH = 250_000
DEFAULT_K = 5
DEFAULT_RETENTION_DAYS = 90
# Daily purge time, UTC hour.
DEFAULT_PURGE_HOUR = 3
# Document reading: a gap between two page views longer than this is idle time.
DEFAULT_READING_IDLE = 300
# The scheduled roll-up leaves hits younger than this many seconds for a later
# run: a click's verdict looks up to 10 s past it (the burst window, the open
# look-ahead; aggregator/mail/context.py), and what came in then must have
# reached the database (the collector flushes every 0.5 s).
DEFAULT_ROLLUP_HOLD = 15.0
# What the headline open/click figures and rates count: "all" = every hit not
# proven a machine's (human + unknown), "recognised" = recognised browsers and
# mail clients only (human). Reports show the three figures either way.
HEADLINES = ("all", "recognised")
DEFAULT_HEADLINE = "all"
# How the mail roll-up builds a batch: on columns (aggregator.mail.frames, polars) or hit by hit (the reference
# the columns are tested against, and what enrichers that give rows only take); "auto" (the default) goes on
# columns from DEFAULT_COLUMNS_FROM claimed hits on. Columns cost a batch a fixed ~20 ms more and save CPU per hit:
# the same CPU at batches of 10,000, less from 20,000 (loadtest/RESULTS.md §20). Since §24 (the rows that keep
# nothing no longer copied on columns) columns cost less from about 10,000: 101,024 hits rolled up in batches of
# N, the aggregator's and PostgreSQL's CPU a hit, medians of 3, on columns against hit by hit: N = 7,500 51.7
# against 50.4 us, 10,000 46.3 against 47.6, 17,600 (a 2-second interval of keep-up's load) 33.5 against 39.5.
ENGINES = ("auto", "columns", "hits")
DEFAULT_ENGINE = "auto"
DEFAULT_COLUMNS_FROM = 10_000


def headline_from_env(environ: Mapping[str, str]) -> str:
    """PIXELTRACK_HEADLINE (all | recognised), read the same way by the aggregator and the dashboard."""
    headline = environ.get("PIXELTRACK_HEADLINE", DEFAULT_HEADLINE).strip().lower() or DEFAULT_HEADLINE
    if headline not in HEADLINES:
        raise ConfigError(f"PIXELTRACK_HEADLINE must be one of {', '.join(HEADLINES)}, got {headline!r}")
    return headline


@dataclass(frozen=True)
class AggregatorConfig:
    """How often and how much to roll up, and how privacy limits are set."""

    database_url: str | None = None
    interval: int = DEFAULT_INTERVAL  # seconds between roll-ups
    batch_size: int = DEFAULT_BATCH  # raw hits claimed per transaction
    k_anonymity: int = DEFAULT_K  # smallest demographic cell shown on its own
    retention_days: int = DEFAULT_RETENTION_DAYS  # raw partitions kept at least this long
    purge_hour: int = DEFAULT_PURGE_HOUR
    reading_idle: int = DEFAULT_READING_IDLE  # longest gap between page views that counts as reading
    rollup_hold: float = DEFAULT_ROLLUP_HOLD  # seconds the scheduled roll-up leaves the newest hits
    headline: str = DEFAULT_HEADLINE  # PIXELTRACK_HEADLINE: all | recognised
    engine: str = DEFAULT_ENGINE  # PIXELTRACK_ROLLUP_ENGINE: auto | columns | hits (aggregator.mail.frames)
    columns_from: int = DEFAULT_COLUMNS_FROM  # PIXELTRACK_ROLLUP_COLUMNS_FROM: auto's least batch on columns
    enrich: EnrichConfig = field(default_factory=EnrichConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AggregatorConfig:
        """Build from DATABASE_URL and PIXELTRACK_ROLLUP_* / PIXELTRACK_K_ANONYMITY / PIXELTRACK_HEADLINE ..."""
        cfg = cls(
            database_url=environ.get("DATABASE_URL") or None,
            interval=env_int(environ, "PIXELTRACK_ROLLUP_INTERVAL", DEFAULT_INTERVAL),
            batch_size=env_int(environ, "PIXELTRACK_ROLLUP_BATCH", DEFAULT_BATCH),
            k_anonymity=env_int(environ, "PIXELTRACK_K_ANONYMITY", DEFAULT_K),
            retention_days=env_int(environ, "PIXELTRACK_RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
            purge_hour=env_int(environ, "PIXELTRACK_PURGE_HOUR", DEFAULT_PURGE_HOUR),
            reading_idle=env_int(environ, "PIXELTRACK_READING_IDLE", DEFAULT_READING_IDLE),
            rollup_hold=env_float(environ, "PIXELTRACK_ROLLUP_HOLD", DEFAULT_ROLLUP_HOLD),
            headline=headline_from_env(environ),
            engine=environ.get("PIXELTRACK_ROLLUP_ENGINE", DEFAULT_ENGINE).strip().lower() or DEFAULT_ENGINE,
            columns_from=env_int(environ, "PIXELTRACK_ROLLUP_COLUMNS_FROM", DEFAULT_COLUMNS_FROM),
            enrich=EnrichConfig.from_env(environ),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse values that make no sense, naming the variable."""
        for name, value, low in (
            ("PIXELTRACK_ROLLUP_INTERVAL", self.interval, 1),
            ("PIXELTRACK_ROLLUP_BATCH", self.batch_size, 1),
            ("PIXELTRACK_K_ANONYMITY", self.k_anonymity, 1),
            ("PIXELTRACK_RETENTION_DAYS", self.retention_days, 1),
            ("PIXELTRACK_READING_IDLE", self.reading_idle, 1),
            ("PIXELTRACK_ROLLUP_HOLD", self.rollup_hold, 0),
            ("PIXELTRACK_ROLLUP_COLUMNS_FROM", self.columns_from, 1),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if not 0 <= self.purge_hour <= 23:
            raise ConfigError(f"PIXELTRACK_PURGE_HOUR must be 0..23, got {self.purge_hour}")
        if self.headline not in HEADLINES:
            raise ConfigError(f"PIXELTRACK_HEADLINE must be one of {', '.join(HEADLINES)}, got {self.headline!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"PIXELTRACK_ROLLUP_ENGINE must be one of {', '.join(ENGINES)}, got {self.engine!r}")

    def with_interval(self, interval: int | None) -> AggregatorConfig:
        """A copy with the interval from a command-line flag, if given."""
        return self if interval is None else replace(self, interval=interval)
