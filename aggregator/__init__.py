"""The aggregator: rolls raw hits up into report tables (``pixeltrack aggregator``).

polars sizes its thread pool once, when it is first imported, from
POLARS_MAX_THREADS (default: one thread per core). The roll-up's frames are a
batch's hundred thousand rows, worked between statements that wait on
PostgreSQL; spread over threads they cost more CPU in all (synchronisation,
work split too fine), and a roll-up is measured in CPU (loadtest/RESULTS.md §23:
4% of the aggregator's own with two threads). PIXELTRACK_ROLLUP_THREADS sets it
for the aggregator (default 1); a POLARS_MAX_THREADS already set wins. polars
is imported here, under that setting, and the environment restored: processes
the aggregator starts keep their own default.
"""

import os

if "POLARS_MAX_THREADS" not in os.environ:
    os.environ["POLARS_MAX_THREADS"] = os.environ.get("PIXELTRACK_ROLLUP_THREADS", "1").strip() or "1"
    try:
        import polars  # noqa: F401  (its pool is sized now)
    finally:
        del os.environ["POLARS_MAX_THREADS"]
