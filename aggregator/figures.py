"""The three figures and the machine section, as mail and site reports give them.

Every count splits into three disjoint figures that add up to its total:
``human`` (a recognised browser or mail client), ``unknown`` (neither that
nor a proven machine) and ``machine``. The headline figure is human +
unknown, or human alone with PIXELTRACK_HEADLINE=recognised
(aggregator.config.headline_from_env); a report's ``headline`` says which.
Machine hits are counted at roll-up by reason and family in ``job_machine``
(kind 'open', 'click', 'doc' ... for mail, 'page' for websites), for every mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aggregator.config import HEADLINES

# What the headline figure counts, by setting.
COUNTED = {"all": "human + unknown", "recognised": "human"}

MACHINE = """
SELECT kind, reason, family, hits FROM job_machine WHERE job_id = $1 AND hits > 0
ORDER BY hits DESC, kind, reason, family
"""


def figure(enriched: Mapping[str, Any]) -> tuple[bool, bool]:
    """(machine, unknown): which of the three figures an enriched hit counts in (neither: human)."""
    traffic = enriched.get("traffic")
    return traffic == "machine", traffic != "machine" and traffic != "human"


def headline_of(headline: str) -> dict[str, str]:
    """A report's ``headline``: the setting and what it counts; ValueError for an unknown setting."""
    if headline not in HEADLINES:
        raise ValueError(f"headline must be one of {HEADLINES}, got {headline!r}")
    return {"setting": headline, "counts": COUNTED[headline]}


def machine_section(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Machine hits by reason, by family ('' = rolled up before families were kept) and in detail."""
    detail = [{"kind": r["kind"], "reason": r["reason"], "family": r["family"] or "unrecorded", "hits": r["hits"]}
              for r in rows]  # fmt: skip
    by_reason: dict[str, int] = {}
    by_family: dict[str, int] = {}
    for entry in detail:
        by_reason[entry["reason"]] = by_reason.get(entry["reason"], 0) + entry["hits"]
        by_family[entry["family"]] = by_family.get(entry["family"], 0) + entry["hits"]
    return {
        "hits": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))),
        "by_family": dict(sorted(by_family.items(), key=lambda item: (-item[1], item[0]))),
        "detail": detail,
    }
