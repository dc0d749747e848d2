"""Load tests and benchmarks for the pixeltrack collector.

``python -m loadtest run`` sets up a campaign in a throwaway database, drives
a realistic mix of pixel and click traffic at a collector and checks that the
database holds exactly the hits that were answered. ``python -m loadtest.bench``
measures the collector against baselines (see RESULTS.md).
"""
