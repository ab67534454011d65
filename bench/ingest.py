"""End-to-end bulk import of 1,000,000 reports, against a goal of 150,000 rows/s.

The input is a CSV made once by the demo generator (``gis.demo``, seed 1) in
``var/bench/``: every role as a column, local times without offset (Asia/Jakarta,
as the city's exports write them), and 0.05 % deliberately bad rows (bad
latitude, unknown category, unparseable date) that must end in quarantine.

The import runs in its own database, ``petalapor_bench``, on the dev cluster
(``db.database_url(Settings())``) or on the ``DATABASE_URL`` server, so dev data is
untouched.  Each run starts from an empty ``reports`` table: the first big load,
which takes bulk mode and, the table being empty, the direct load (see
``db.ingest``).  Stages and their rates are printed:

* prepare tables (lock, drop indexes and keys, truncate the empty tables);
* parse (pyarrow CSV), validate (vectorised checks), snap (RW then kelurahan,
  including the lookup grid), H3 (r7-r11), encode (binary COPY bodies), which
  run in the main thread;
* copy reports and copy events (binary COPY straight into the tables; staging
  COPY and upsert when not a direct load), in the writer thread while the next
  chunk is prepared;
* indexes (re-creating the secondary indexes, the primary and unique keys,
  then re-checking the foreign keys), commit.

The server's bulk-load settings and the machine's load average (before, after)
are printed too: the embedded cluster is shared with other work, so compare
runs with their load.

The anchor is a plain psycopg ``COPY ... FROM STDIN (FORMAT csv)`` of the same file
into a table with the same columns and no indexes, in the same run (``lat`` and
``created_at`` as text there, as the file carries the deliberately bad values in them).
The last line
is the summary.

``--without gist,area,catalog-keys`` measures what dropping guarantees would buy
(the decision left to the issue's owner, see docs/benchmarks.md): the named
indexes or foreign keys are dropped from the bench database before the import,
and the database is dropped afterwards, so the next run starts from the full
schema again.  The summary line then names what was left out.

    python bench/ingest.py [--rows 1000000] [--regenerate] [--no-bulk] [--without gist,area]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

import db
from db.boundaries import store_boundary_set
from db.cluster import create_database
from db.ingest import Mapping, import_file
from db.migrate import migrate
from gis.boundaries import build_boundary_set, load_manifest
from gis.demo import generate_demo
from petalapor.catalog import sync_catalog
from petalapor.errors import MigrationError
from petalapor.settings import PathSettings, Settings

GOAL_ROWS_PER_S = 150_000
BENCH_DB = "petalapor_bench"
BAD_SHARE = 0.0005
CSV_COLUMNS = [
    "external_id",
    "source",
    "category",
    "opd",
    "status",
    "title",
    "description",
    "media_url",
    "created_at",
    "first_coordinated_at",
    "resolved_at",
    "updated_at",
    "public",
    "lon",
    "lat",
]
#: ``--without`` choices: what each drops from the bench database.
WITHOUT = {
    "gist": ["DROP INDEX reports_geom_gist"],  # bbox queries (tiles, GET /reports?bbox=)
    "area": ["DROP INDEX reports_rw", "DROP INDEX reports_kelurahan"],  # RW/kelurahan filters
    "catalog-keys": [  # reports' foreign keys onto categories, opds and statuses
        f"ALTER TABLE reports DROP CONSTRAINT reports_{col}_fkey"
        for col in ("category", "opd", "status")
    ],
}
ANCHOR_DDL = """
CREATE TABLE bench_anchor (
    external_id text, source text, category text, opd text, status text, title text,
    description text, media_url text, created_at text, first_coordinated_at timestamp,
    resolved_at timestamp, updated_at timestamp, public boolean, lon float8, lat text
)
"""


def bench_database() -> str:
    """DSN of ``petalapor_bench`` (created and migrated; boundaries and catalog loaded).

    The database is the bench's own: when its schema no longer matches the
    migrations (a migration was edited during development), it is made again.
    """
    server = db.database_url(Settings(), migrate=False)
    dsn = psycopg.conninfo.make_conninfo(server, dbname=BENCH_DB)
    for attempt in (1, 2):
        with psycopg.connect(server, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,))
            if not exists.fetchone():
                create_database(conn, BENCH_DB)
        try:
            migrate(dsn)
            break
        except MigrationError as exc:
            if attempt == 2:
                raise
            print(f"{BENCH_DB}: {exc}; making it again")
            drop_bench_database()
    with psycopg.connect(dsn) as conn:
        sync_catalog(conn)
    return dsn


def make_csv(path: Path, rows: int, rw) -> None:  # noqa: ANN001 - GeoDataFrame
    """Generate the demo reports once and write them as CSV, with a few bad rows."""
    demo = generate_demo(rw, n=rows, seed=1).reports
    frame = pd.DataFrame({c: demo[c] for c in CSV_COLUMNS})
    for col in ("created_at", "first_coordinated_at", "resolved_at", "updated_at"):
        frame[col] = frame[col].dt.tz_convert("Asia/Jakarta").dt.tz_localize(None)
    rng = np.random.default_rng(99)
    bad = rng.choice(rows, size=max(3, int(rows * BAD_SHARE)), replace=False)
    kinds = np.arange(bad.size) % 3
    frame = frame.astype({"lat": object, "category": object, "created_at": object})
    frame.loc[bad[kinds == 0], "lat"] = "-6.2x"
    frame.loc[bad[kinds == 1], "category"] = "banjir_bandang"
    frame.loc[bad[kinds == 2], "created_at"] = "31/02/2026 25:00"
    frame["lat"] = frame["lat"].astype(str)
    frame["created_at"] = frame["created_at"].astype(str).str.replace(" ", "T", n=1, regex=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    tmp.replace(path)


def reset(dsn: str) -> None:
    """Empty the report tables (the bench measures the first big load)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE reports, report_events, report_quarantine, report_imports CASCADE")
        conn.execute("DROP TABLE IF EXISTS bench_anchor")
        conn.execute("CHECKPOINT")


def anchor_copy(dsn: str, path: Path) -> float:
    """Seconds for a plain psycopg COPY of the CSV file into an unindexed table."""
    with psycopg.connect(dsn) as conn:
        conn.execute(ANCHOR_DDL)
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_anchor FROM STDIN (FORMAT csv, HEADER true)") as copy,
        ):
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    copy.write(block)
        conn.commit()
        took = time.perf_counter() - started
        conn.execute("DROP TABLE bench_anchor")
        conn.commit()
    return took


def cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine since boot (Linux ``/proc/stat``).

    Busy: user, nice, system, irq and softirq time; stolen: time the hypervisor gave
    the virtual CPUs to someone else.  Zeros where there is no ``/proc/stat``.
    """
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def line(name: str, seconds: float, rows: int) -> str:
    """One stage: time and rate."""
    rate = f"{rows / seconds:>12,.0f} rows/s" if seconds > 0 else ""
    return f"  {name:<22} {seconds:>8.2f} s {rate}"


def main() -> None:
    """Run the benchmark and print the summary last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--regenerate", action="store_true", help="write the CSV again")
    parser.add_argument(
        "--no-bulk", action="store_true", help="incremental index maintenance (slow)"
    )
    parser.add_argument(
        "--without",
        default="",
        help=f"comma-separated guarantees to leave out (measured only): {', '.join(WITHOUT)}",
    )
    args = parser.parse_args()
    without = [w for w in args.without.split(",") if w]
    unknown = sorted(set(without) - set(WITHOUT))
    if unknown:
        parser.error(f"--without: unknown {unknown}; choose from {', '.join(WITHOUT)}")

    dsn = bench_database()
    try:
        run(dsn, args, without)
    finally:
        if without:  # the schema is no longer the migrations': make it again next time
            drop_bench_database()


def drop_bench_database() -> None:
    """Drop ``petalapor_bench``: its schema is no longer the migrations' (``--without``, edits)."""
    server = db.database_url(Settings(), migrate=False)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


def run(dsn: str, args: argparse.Namespace, without: list[str]) -> None:
    """Import the file once (after the anchor COPY) and print the stages and summary."""
    bset = build_boundary_set(load_manifest())
    store_boundary_set(dsn, bset)
    path = PathSettings().var / "bench" / f"reports_{args.rows}.csv"
    if args.regenerate or not path.exists():
        started = time.perf_counter()
        make_csv(path, args.rows, bset.frames["rw"])
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    print(f"input: {path} ({path.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)")

    with psycopg.connect(dsn) as conn:
        shown = [
            f"{name}={conn.execute('SELECT current_setting(%s)', (name,)).fetchone()[0]}"
            for name in ("wal_level", "max_wal_size", "maintenance_work_mem", "shared_buffers")
        ]
    print(f"server: {', '.join(shown)}; {os.cpu_count()} cores")
    load_before = os.getloadavg()[0]
    reset(dsn)
    if without:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in without:
                for statement in WITHOUT[name]:
                    conn.execute(statement)
        print(f"left out for this run: {', '.join(without)}")
    anchor = anchor_copy(dsn, path)
    reset(dsn)
    mapping = Mapping(name="bench")
    cpu_before, own_before = cpu_seconds(), time.process_time()
    started = time.perf_counter()
    summary = import_file(dsn, path, mapping, bulk=False if args.no_bulk else None, progress=False)
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds()
    cpu, stolen = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    own = time.process_time() - own_before
    print(summary.render())
    rows = summary.read
    s = summary.seconds
    print("stages (main thread; the writer thread's COPY overlaps it):")
    print(line("prepare tables", s.get("prepare tables", 0.0), rows))
    for name in ("read", "validate", "snap", "h3", "encode", "queue wait", "db drain"):
        print(line("parse (pyarrow CSV)" if name == "read" else name, s.get(name, 0.0), rows))
    if summary.direct:
        print(line("  copy reports (writer)", s.get("copy", 0.0), rows))
        print(line("  copy events (writer)", s.get("events", 0.0), rows))
    else:
        print(line("  copy staging (writer)", s.get("copy", 0.0), rows))
        print(line("  upsert+events (writer)", s.get("upsert", 0.0), rows))
    for name in ("indexes", "quarantine", "commit"):
        print(line(name, s.get(name, 0.0), rows))
    print(line("total (wall)", wall, rows))
    if summary.index_seconds:
        print("bulk mode rebuild (indexes, then foreign keys re-validated):")
        for name, took in summary.index_seconds.items():
            print(f"    {name:<34} {took:>6.2f} s")
    print(line("anchor: plain COPY", anchor, rows))
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    if cpu > 0:  # the floor: every core busy for the whole import
        cores = os.cpu_count() or 1
        print(
            f"CPU: {cpu:.1f} s busy on {cores} cores during the import (this Python process "
            f"{own:.1f} s, PostgreSQL and the rest {cpu - own:.1f} s): even with every core busy "
            f"throughout it needs {cpu / cores:.2f} s, at most {rows / (cpu / cores):,.0f} rows/s"
            f"; {stolen:.1f} s stolen by the hypervisor"
        )
    assert summary.read == summary.stored + summary.updated + summary.quarantined
    reset(dsn)  # leave the dev cluster lean: the bench database keeps no rows
    rate = rows / wall
    print(
        f"ingest runs at {rate / (rows / anchor):.2f}x the plain COPY anchor "
        f"({rows / anchor:,.0f} rows/s); bulk mode: {summary.bulk}, direct load: {summary.direct}"
    )
    rebuild = s.get("indexes", 0.0)
    loaded = rows / max(wall - rebuild, 1e-9)
    kept = "every index and key" if not without else f"all but: {', '.join(without)}"
    print(
        f"ingest: {rate / GOAL_ROWS_PER_S:.2f}x goal ({rate:,.0f} rows/s vs {GOAL_ROWS_PER_S:,} "
        f"end to end, committed with {kept}; parse to COPY alone {loaded:,.0f} "
        f"rows/s, then {rebuild:.1f} s rebuilding indexes and keys)"
    )


if __name__ == "__main__":
    main()
