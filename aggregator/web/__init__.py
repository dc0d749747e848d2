"""Website tracking roll-ups and reports (issue 6).

``rollup_sites(conn)`` claims and rolls up page views on its own;
``merge_page_hits(conn, hits, enriched)`` does the merge for page views an
outer run claimed with ``queries.CLAIM_PAGES`` (``rollup.with_settings``); ``report.site_report(conn,
site_id)`` and ``render.render_site(report, fmt)`` read the result.
"""

from __future__ import annotations

from aggregator.web.queries import CLAIM_PAGES
from aggregator.web.rollup import merge_page_hits, rollup_sites

__all__ = ["CLAIM_PAGES", "merge_page_hits", "rollup_sites"]
