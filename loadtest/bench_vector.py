"""A roll-up core that works on columns, priced: `python -m loadtest.bench_vector [--duration 10] [--rounds 3]`.

Issue 13 asks for a roll-up at most 0.25x of collecting. ``bench_floor``
showed that a roll-up reading every hit into Python objects and rewriting
the kept raw rows cannot get there, and ``bench_setbased`` that judging in
PostgreSQL instead moves the cost rather than removing it (joining every hit
with the tables of distinct values costs PostgreSQL about what the Python
did). This benchmark prices the third way: the batch read once as columns
(Apache Arrow through ADBC's PostgreSQL driver, which decodes the binary
COPY in C) and worked on by a columnar engine (polars), with only the
distinct values going through the product's own Python:

- ``read``: every waiting mail hit, the jobs and the jobs' recipients;
- ``tracks``: each hit's track from the job's mode and the recipient's
  consent (tracks.track_of as an expression), and its hour;
- ``distinct values``: each distinct address, Accept-Language and source
  worked out once by the product's enrichment (``run.Run``), joined back;
- ``verdicts``: each distinct (agent, kind, prefetch, address tests) judged
  once by the product's rules, joined back;
- ``hashes``: each recipient of a hashed track keyed once (the product's hasher);
- ``click rules``: the burst (another link within W s), no open with no
  browser traits, and the send-time rule, as joins over the batch's clicks;
- ``groupings``: the ten report groupings;
- ``grouped rows in``: the grouped rows sent to PostgreSQL and inserted
  into indexed tables (what the merges' upserts would write);

and then the two ways the raw rows can end, in SQL as ``bench_floor`` does
them: ``delete`` (the tracks that keep nothing) and ``rewrite`` (the kept
personal and rejected rows marked rolled, their address masked, their
enrichment set). The same copy is rolled up by the product
(``aggregator --once``) for comparison, alternating.

A prototype for pricing, not a design: it leaves out what the product's
roll-up also does (a recipient's events in earlier batches and in hits
not rolled up yet, reading time, profile numbers, whole instants, the
saved context) and its verdicts are not checked against the product's.
What it does check, and the CI smoke asserts: every waiting hit read once,
and its counts per job and kind equal the product's report_job_totals and
report_rejected on the same hits. Needs the ``vector`` extra
(``pip install 'pixeltrack[vector]'``: adbc-driver-postgresql; polars and
pyarrow are the product's own since its columns engine). Measures and prints; asserts nothing.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import psutil

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, make_enricher
from aggregator.enrich.run import Run
from aggregator.mail import tracks as modes
from loadtest import support
from loadtest.bench_cost import (
    Collected,
    Mix,
    aggregate_once,
    collect,
    collect_and_measure,
    pg_cpu,
    pixeltrack,
    roll_up,
)
from loadtest.bench_floor import _ROWLESS, TYPICAL
from pixeltrack.core import columns

READ = """
SELECT hit_id::text AS hit_id, received_at, kind, job_id, recipient_id, link, page, host(client_ip) AS client_ip,
       user_agent, referer, accept_language, prefetch, reject_reason
FROM raw_hits WHERE rolled_at IS NULL AND kind <> 'page'
"""
JOBS = "SELECT job_id, mode, sent_at FROM jobs"
PEOPLE = """
SELECT job_id, recipient_id, consent, consent_changed_at, birth_year, gender, zip FROM recipients
"""
FORGOTTEN = "SELECT job_id, recipient_id, true AS forgotten FROM forgotten_recipients"
# The grouped rows' tables, each with the key the report table it stands for has.
GROUPED_KEYS = {
    "totals": ("job_id", "kind"),
    "hourly": ("job_id", "hour", "kind"),
    "links": ("job_id", "link"),
    "recipients": ("job_id", "recipient_id"),
    "recipient_links": ("job_id", "recipient_id", "link"),
    "seen": ("job_id", "rhash"),
    "demographics": ("job_id", "birth_year", "gender", "zip", "kind"),
    "breakdowns": None,  # many nullable columns: a plain insert
    "machine": None,
    "rejected": ("job_id", "hour", "kind", "reject_reason"),
}
_KEY = "r.job_id = b.job_id AND r.received_at = b.received_at AND r.hit_id = b.hit_id::uuid"
DELETE = f"DELETE FROM raw_hits r USING judged b WHERE b.track IN ({_ROWLESS}) AND {_KEY}"
_HEADERS = ", ".join(f"{n} = CASE WHEN b.track = 'rejected' THEN NULL ELSE r.{n} END" for n in columns.HEADERS)
REWRITE = f"""
UPDATE raw_hits r SET rolled_at = now(),
    client_ip = set_masklen(client_ip, CASE WHEN family(client_ip) = 4 THEN 24 ELSE 48 END)::cidr::inet,
    {_HEADERS}, {", ".join(f"{n} = {TYPICAL[n]}" for n in columns.ENRICHED)}
FROM judged b WHERE b.track NOT IN ({_ROWLESS}) AND {_KEY}
"""
CORE = ("read", "tracks", "distinct values", "verdicts", "hashes", "click rules", "groupings", "grouped rows in")
ENDS = ("delete", "rewrite")
Costs = dict[str, list[float]]  # step -> [this process s, backend s]


class Clock:
    """CPU per step of this process (all its threads: polars works on several) and of PostgreSQL (every process of
    the server, as ``bench_cost`` counts the product's roll-up)."""

    def __init__(self, postmaster: psutil.Process) -> None:
        self.postmaster = postmaster
        self.cpu: Costs = {}
        self._mark = self._now()

    def _now(self) -> tuple[float, float]:
        return time.process_time(), pg_cpu(self.postmaster)

    def add(self, step: str) -> None:
        """Account the CPU since the last step to ``step``."""
        now = self._now()
        spent = self.cpu.setdefault(step, [0.0, 0.0])
        spent[0] += now[0] - self._mark[0]
        spent[1] += now[1] - self._mark[1]
        self._mark = now


def frame(cur: Any, sql: str) -> pl.DataFrame:
    """The rows of ``sql`` as a polars frame (Arrow from ADBC, no Python object per value)."""
    cur.execute(sql)
    got = pl.from_arrow(cur.fetch_arrow_table())
    assert isinstance(got, pl.DataFrame)
    return got


def track_expr() -> pl.Expr:
    """tracks.track_of as an expression over a hit joined with its job and recipient."""
    consenting = pl.col("consent").fill_null(False) & (pl.col("consent_changed_at") <= pl.col("received_at"))
    return (
        pl.when(pl.col("reject_reason").is_not_null() | (pl.col("job_id") == 0) | pl.col("mode").is_null())
        .then(pl.lit(modes.REJECTED))
        .when((pl.col("mode") == "blind") | pl.col("recipient_id").is_null() | pl.col("forgotten").fill_null(False))
        .then(pl.lit(modes.BLIND))
        .when(pl.col("mode") == "permission_personal")
        .then(pl.when(consenting.fill_null(False)).then(pl.lit(modes.PERSONAL)).otherwise(pl.lit(modes.UNIQUE)))
        .otherwise(pl.col("mode"))
    )


def enrich_distinct(h: pl.DataFrame, run: Run) -> pl.DataFrame:
    """Each distinct address, language and source worked out once by ``run``, joined to the hits."""
    spots = []
    for address in h.get_column("client_ip").unique().to_list():
        geo, masked, apple, scanner = run.spot(address)
        spots.append((address, geo["country"], geo["region"], geo["city"], geo["asn"], masked, apple, scanner))
    d_spot = pl.DataFrame(spots, orient="row", schema={
        "client_ip": pl.String, "country": pl.String, "region": pl.String, "city": pl.String, "asn": pl.Int64,
        "masked": pl.String, "apple": pl.Boolean, "scanner": pl.Boolean})  # fmt: skip
    headers = h.get_column("accept_language").unique().to_list()
    d_lang = pl.DataFrame({"accept_language": headers, "language": [run.language(t) for t in headers]},
                          schema={"accept_language": pl.String, "language": pl.String})  # fmt: skip
    sources = []
    for kind, link, referer in h.select("kind", "link", "referer").unique().iter_rows():
        part = run.source({"kind": kind, "link": link, "referer": referer, "url": None}, kind)
        sources.append((kind, link, referer, part.get("source_class"), part.get("source_name")))
    d_source = pl.DataFrame(sources, orient="row", schema={
        "kind": pl.String, "link": pl.String, "referer": pl.String, "source_class": pl.String,
        "source_name": pl.String})  # fmt: skip
    return (
        h.join(d_spot, on="client_ip", how="left", nulls_equal=True)
        .join(d_lang, on="accept_language", how="left", nulls_equal=True)
        .join(d_source, on=["kind", "link", "referer"], how="left", nulls_equal=True)
    )


def judge_distinct(h: pl.DataFrame, run: Run) -> pl.DataFrame:
    """Each distinct (agent, kind, prefetch, address tests) judged once by the product's rules, joined."""
    combos = ["user_agent", "kind", "prefetch", "apple", "scanner"]
    verdicts = []
    for text, kind, prefetch, apple, scanner in h.select(combos).unique().iter_rows():
        agent = run.agent(text)
        reason, client = run.verdict(agent, {"kind": kind, "prefetch": prefetch}, kind, apple, scanner)
        verdicts.append((text, kind, prefetch, apple, scanner, client["device_class"], client["browser"],
                         client["os"], client["mail_client"], client["traffic"], reason,
                         client.get("machine_family"), not agent[0].browser_like))  # fmt: skip
    d_verdict = pl.DataFrame(verdicts, orient="row", schema={
        "user_agent": pl.String, "kind": pl.String, "prefetch": pl.Boolean, "apple": pl.Boolean,
        "scanner": pl.Boolean, "device_class": pl.String, "browser": pl.String, "os": pl.String,
        "mail_client": pl.String, "traffic": pl.String, "machine_reason": pl.String, "family": pl.String,
        "no_browser": pl.Boolean})  # fmt: skip
    return h.join(d_verdict, on=combos, how="left", nulls_equal=True)


def key_recipients(h: pl.DataFrame) -> pl.DataFrame:
    """Each recipient of a hashed track keyed once (a fixed key per job: the job keys are not what is priced)."""
    keyed = h.filter(pl.col("track").is_in(sorted(modes.HASHED))).select("job_id", "recipient_id").unique()
    hashers = {job: modes.recipient_hasher(job.to_bytes(8, "big", signed=True) * 4)
               for job in keyed.get_column("job_id").unique().to_list()}  # fmt: skip
    hashes = pl.Series("rhash", [hashers[job](rid) for job, rid in keyed.iter_rows()], dtype=pl.Binary)
    return h.join(keyed.with_columns(hashes), on=["job_id", "recipient_id"], how="left")


def click_rules(h: pl.DataFrame, config: AggregatorConfig) -> pl.DataFrame:
    """The behavioural rules over the batch's clicks; flagged clicks become machine."""
    rules = config.enrich
    within = pl.duration(seconds=rules.scanner_burst_seconds)
    clicks = h.filter((pl.col("kind") == "click") & pl.col("recipient_id").is_not_null()).select(
        "hit_id", "job_id", "recipient_id", "received_at", "link", "no_browser", "language", "sent_at")
    others = clicks.select("job_id", "recipient_id", pl.col("received_at").alias("at2"), pl.col("link").alias("link2"))
    burst = (clicks.join(others, on=["job_id", "recipient_id"])
             .filter((pl.col("link2") != pl.col("link")) & ((pl.col("at2") - pl.col("received_at")).abs() <= within))
             .select("hit_id"))  # fmt: skip
    first_open = (h.filter(pl.col("kind") == "open").group_by("job_id", "recipient_id")
                  .agg(first_open=pl.col("received_at").min()))  # fmt: skip
    ahead = pl.duration(seconds=rules.scanner_open_ahead)
    lonely = (clicks.join(first_open, on=["job_id", "recipient_id"], how="left")
              .filter((pl.col("first_open").is_null() | (pl.col("first_open") > pl.col("received_at") + ahead))
                      & (pl.col("no_browser") | pl.col("language").is_null()))
              .select("hit_id"))  # fmt: skip
    early = clicks.filter(pl.col("received_at") - pl.col("sent_at") <= pl.duration(seconds=rules.scanner_send_seconds))
    flagged = pl.concat([burst, lonely, early.select("hit_id")]).unique().with_columns(flagged=pl.lit(True))
    traffic = pl.when(pl.col("flagged").fill_null(False)).then(pl.lit("machine")).otherwise(pl.col("traffic"))
    return (h.join(flagged, on="hit_id", how="left").with_columns(traffic=traffic)
            .with_columns(machine=pl.col("traffic") == "machine", unknown=pl.col("traffic") == "unknown"))  # fmt: skip


def groupings(h: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The report groupings of the judged hits."""
    counted = h.filter(pl.col("track") != modes.REJECTED)
    figures = (pl.len().alias("hits"), pl.col("machine").sum().alias("machine"),
               pl.col("unknown").sum().alias("unknown"))  # fmt: skip
    personal = h.filter(pl.col("track") == modes.PERSONAL)
    scope = pl.col("kind").replace_strict({"open": 1, "click": 2}, default=4, return_dtype=pl.Int32)
    return {
        "totals": counted.group_by("job_id", "kind").agg(*figures),
        "hourly": counted.group_by("job_id", "hour", "kind").agg(*figures),
        "links": counted.filter(pl.col("kind") == "click").group_by("job_id", "link").agg(*figures),
        "recipients": personal.group_by("job_id", "recipient_id").agg(
            opens=(pl.col("kind") == "open").sum(), clicks=(pl.col("kind") == "click").sum(),
            first=pl.col("received_at").min(), last=pl.col("received_at").max()),
        "recipient_links": personal.filter(pl.col("kind") == "click").group_by("job_id", "recipient_id", "link").agg(
            clicks=pl.len(), first=pl.col("received_at").min(), last=pl.col("received_at").max()),
        "seen": h.filter(pl.col("rhash").is_not_null() & ~pl.col("machine")).group_by("job_id", "rhash").agg(
            scopes=scope.unique().sum()),
        "demographics": h.filter(pl.col("track") == modes.ANONYMOUS).group_by(
            "job_id", "birth_year", "gender", "zip", "kind").agg(pl.len().alias("hits")),
        "breakdowns": counted.group_by("job_id", "kind", "device_class", "browser", "os", "mail_client", "country",
                                       "language", "source_class", "source_name").agg(*figures),
        "machine": counted.filter(pl.col("machine")).group_by("job_id", "kind", "machine_reason", "family").agg(
            pl.len().alias("hits")),
        "rejected": h.filter(pl.col("track") == modes.REJECTED).group_by("job_id", "hour", "kind", "reject_reason").agg(
            pl.len().alias("hits")),
    }  # fmt: skip


def grouped_in(cur: Any, grouped: dict[str, pl.DataFrame]) -> None:
    """Each grouping sent as Arrow and inserted into an indexed table of its own (as an upsert would write)."""
    for name, rows in grouped.items():
        cur.adbc_ingest(f"g_{name}", rows.to_arrow(), mode="create", temporary=True)
        key = GROUPED_KEYS[name]
        cur.execute(f"CREATE TEMP TABLE t_{name} (LIKE g_{name}) ON COMMIT DROP")
        if key is not None:
            cur.execute(f"CREATE UNIQUE INDEX ON t_{name} ({', '.join(key)})")
        cur.execute(f"INSERT INTO t_{name} SELECT * FROM g_{name}")


def vector(
    url: str, postmaster: psutil.Process, config: AggregatorConfig
) -> tuple[dict[str, int], Costs, pl.DataFrame]:
    """The columnar core and the two endings on ``url`` (one transaction, committed): counts, costs, hits per job and
    kind. Its enricher is new, as an ``aggregator --once``'s is: every agent is parsed again."""
    enricher = make_enricher(config.enrich)
    assert isinstance(enricher, Enricher)
    conn = adbc.connect(url)
    try:
        cur = conn.cursor()
        clock = Clock(postmaster)
        hits = frame(cur, READ)
        jobs, people, forgotten = frame(cur, JOBS), frame(cur, PEOPLE), frame(cur, FORGOTTEN)
        clock.add("read")
        h = (hits.join(jobs, on="job_id", how="left").join(people, on=["job_id", "recipient_id"], how="left")
             .join(forgotten, on=["job_id", "recipient_id"], how="left")
             .with_columns(track=track_expr(), hour=pl.col("received_at").dt.truncate("1h")))  # fmt: skip
        clock.add("tracks")
        run = Run(enricher)
        h = enrich_distinct(h, run)
        clock.add("distinct values")
        h = judge_distinct(h, run)
        clock.add("verdicts")
        h = key_recipients(h)
        clock.add("hashes")
        h = click_rules(h, config)
        clock.add("click rules")
        grouped = groupings(h)
        clock.add("groupings")
        grouped_in(cur, grouped)
        clock.add("grouped rows in")
        keys = h.select("job_id", "received_at", "hit_id", "track").to_arrow()
        cur.adbc_ingest("judged", keys, mode="create", temporary=True)
        cur.execute("ANALYZE judged")
        cur.execute("SET LOCAL enable_nestloop = off")
        clock.add("keys in")
        cur.execute(DELETE)
        deleted = cur.rowcount
        clock.add("delete")
        cur.execute(REWRITE)
        rewritten = cur.rowcount
        clock.add("rewrite")
        conn.commit()
        cur.close()
    finally:
        conn.close()
    counts = {"read": hits.height, "deleted": deleted, "rewritten": rewritten}
    rejected = grouped["rejected"].group_by("job_id", "kind").agg(pl.col("hits").sum())
    per_kind = pl.concat([grouped["totals"].select("job_id", "kind", "hits"),
                          rejected.with_columns(kind=pl.lit("rejected:") + pl.col("kind"))])  # fmt: skip
    return counts, clock.cpu, per_kind


def product_totals(url: str) -> pl.DataFrame:
    """The product's hits per job and kind: report_job_totals, and report_rejected as the rejected track."""
    conn = adbc.connect(url)
    try:
        cur = conn.cursor()
        totals = frame(cur, "SELECT job_id, kind, total AS hits FROM report_job_totals")
        rejected = frame(cur, "SELECT job_id, kind, sum(hits)::bigint AS hits FROM report_rejected GROUP BY 1, 2")
        totals = totals.with_columns(pl.col("hits").cast(pl.Int64))
        cur.close()
    finally:
        conn.close()
    return pl.concat([totals, rejected.with_columns(kind=pl.lit("rejected:") + pl.col("kind"))])


async def agreement(server_url: str, postmaster: psutil.Process, got: Collected, config: AggregatorConfig) -> str:
    """On one copy: the prototype's counts per job and kind against the product's on the same hits."""
    copy = await support.create_database(server_url, "pt_vector", template=got.url)
    try:
        _, _, ours = vector(copy, postmaster, config)
    finally:  # the prototype deleted and rewrote raw rows: the product rolls up a fresh copy

        await support.drop_database(server_url, copy)
    copy = await support.create_database(server_url, "pt_vector", template=got.url)
    try:
        pixeltrack(copy, None, "initdb")
        aggregate_once(copy)
        theirs = product_totals(copy)
    finally:
        await support.drop_database(server_url, copy)
    mine = ours.with_columns(pl.col("hits").cast(pl.Int64))
    joined = mine.join(theirs, on=["job_id", "kind"], how="full", suffix="_product", coalesce=True)
    differ = joined.filter(pl.col("hits").fill_null(0) != pl.col("hits_product").fill_null(0)).height
    counted = int(mine.get_column("hits").sum())
    return (f"counted {counted:,} hits in {mine.height} (job, kind) cells; "
            f"cells that differ from the product's: {differ}")


async def bench(server_url: str, postmaster: psutil.Process, seconds: float, rounds: int, tmp: Path) -> None:
    """Collect once; ``rounds`` times the product and the prototype on fresh copies, alternating; medians."""
    got = await collect(server_url, postmaster, seconds, tmp, Mix())
    print(f"{got.line}; collect {got.us:.1f} us per hit (collector {got.app / got.hits * 1e6:.1f} + PostgreSQL "
          f"{got.pg / got.hits * 1e6:.1f})", flush=True)
    config = AggregatorConfig.from_env({})
    runs: dict[str, list[float]] = {}
    try:
        for n in range(rounds):
            app, pg, _ = await roll_up(server_url, got.url, postmaster, None)
            runs.setdefault("product", []).append((app + pg) / got.hits * 1e6)
            copy = await support.create_database(server_url, "pt_vector", template=got.url)
            try:
                counts, costs, _ = vector(copy, postmaster, config)
            finally:
                await support.drop_database(server_url, copy)
            for step, (ours, backend) in costs.items():
                runs.setdefault(step, []).append((ours + backend) / counts["read"] * 1e6)
                runs.setdefault(f"{step}: PostgreSQL", []).append(backend / counts["read"] * 1e6)
            core = sum(sum(costs[step]) for step in CORE) / counts["read"] * 1e6
            print(f"round {n + 1}: {counts['read']:,} hits read ({counts['deleted']:,} deleted, "
                  f"{counts['rewritten']:,} rewritten); product {runs['product'][-1]:.1f}, columnar core {core:.1f} "
                  "us per hit", flush=True)
        line = await agreement(server_url, postmaster, got, config)
    finally:
        await support.drop_database(server_url, got.url)
    median = {step: statistics.median(values) for step, values in runs.items()}
    print(f"medians of {rounds} rounds, µs per hit (of it PostgreSQL's), and against collecting ({got.us:.1f} µs):")
    for step in ("product", *CORE, "keys in", *ENDS):
        print(f"  {step:<20} {median[step]:6.2f} ({median[step + ': PostgreSQL'] if step != 'product' else 0:5.2f})"
              f"  {median[step] / got.us:.3f}x")
    core = sum(median[step] for step in CORE)
    ends = median["keys in"] + median["delete"]
    today = core + ends + median["rewrite"]
    print(f"columnar core: {core:.2f} us per hit, {core / got.us:.3f}x")
    print(f"core + delete + rewrite (raw rows as today): {today:.2f} us per hit, {today / got.us:.3f}x (aim 0.25x)")
    print(f"core + delete, kept rows not rewritten: {core + ends:.2f} us per hit, {(core + ends) / got.us:.3f}x "
          "(aim 0.25x)")
    print(line)


def main() -> None:
    """A private PostgreSQL in a temporary folder; collect; the rounds; stop it."""
    collect_and_measure(__doc__ or "", "pixeltrack-vector-", "product and prototype, alternating", bench)


if __name__ == "__main__":
    main()
