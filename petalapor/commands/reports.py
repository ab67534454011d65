"""``petalapor reports import FILE`` and ``petalapor demo-data``; ``load_demo`` for ``up``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

import db
from petalapor.catalog import sync_catalog
from petalapor.errors import ConfigError
from petalapor.settings import Settings

#: Reports ``petalapor up`` loads when no demo reports are stored.
DEMO_REPORTS = 200_000
DEMO_SEED = 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reports`` command group and ``demo-data``."""
    parser = sub.add_parser(
        "reports", help="bulk-import citizen reports (CSV, GeoJSON, GeoParquet)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="import a file of reports",
        description=(
            "Validate, snap (RW, kelurahan), index (H3 r7-r11) and upsert reports by "
            "(source, external_id). Bad rows go to report_quarantine with their reason. "
            "Columns map onto roles by name, by --mapping (TOML; a bare name is looked up in "
            "data/mappings/) and by --column ROLE=COLUMN; --category/--source/--status/--opd "
            "fill empty or unmapped roles."
        ),
    )
    imp.add_argument("file", type=Path, help=".csv, .geojson or .parquet (GeoParquet)")
    imp.add_argument("--mapping", help="mapping file or name (e.g. petabencana)")
    imp.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="ROLE=COLUMN",
        help="take ROLE from COLUMN (repeatable), e.g. --column lat=latitude",
    )
    for role in ("category", "source", "status", "opd"):
        imp.add_argument(f"--{role}", help=f"default {role} where the file has none")
    imp.add_argument("--timezone", help="zone of timestamps without offset (default Asia/Jakarta)")
    imp.add_argument(
        "--tolerance",
        type=float,
        default=100.0,
        metavar="M",
        help="snapping tolerance in metres (default 100)",
    )
    imp.add_argument(
        "--bulk",
        choices=("auto", "on", "off"),
        default="auto",
        help="rebuild indexes after loading (auto: for large loads)",
    )
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=run_import)

    qual = actions.add_parser(
        "quality",
        help="data quality: placement (inside/nearest/outside), the farthest outside reports, "
        "recent imports and their quarantine",
    )
    qual.add_argument("--from", dest="start", help="reports created on or after (date)")
    qual.add_argument("--to", dest="end", help="reports created on or before (date)")
    qual.add_argument("--json", action="store_true", help="print the report as JSON")
    qual.set_defaults(func=run_quality)

    demo = sub.add_parser("demo-data", help="generate realistic demo reports and load them")
    demo.add_argument(
        "--n", type=int, default=DEMO_REPORTS, help=f"reports (default {DEMO_REPORTS:,})"
    )
    demo.add_argument("--seed", type=int, default=DEMO_SEED)
    demo.add_argument("--days", type=int, default=365, help="length of the period (default 365)")
    demo.add_argument("--replace", action="store_true", help="delete the stored demo reports first")
    demo.set_defaults(func=run_demo)


def _mapping_from_args(args: argparse.Namespace):  # noqa: ANN202 - db.ingest.Mapping
    """The mapping file (if any) with the CLI options applied."""
    from db.ingest import Mapping, load_mapping

    mapping = load_mapping(args.mapping) if args.mapping else Mapping(name="cli")
    columns = {}
    for item in args.column:
        role, sep, col = item.partition("=")
        if not sep or not role or not col:
            raise ConfigError(f"--column expects ROLE=COLUMN, got {item!r}")
        columns[role.strip()] = col.strip()
    defaults = {r: getattr(args, r) for r in ("category", "source", "status", "opd")}
    return mapping.with_options(columns=columns, defaults=defaults, timezone=args.timezone)


def run_import(args: argparse.Namespace) -> int:
    """Import one file and print the summary (exit 1 when rows were quarantined)."""
    from db.ingest import import_file

    mapping = _mapping_from_args(args)
    dsn = db.database_url(Settings())
    with psycopg.connect(dsn) as conn:
        sync_catalog(conn)
    bulk = {"auto": None, "on": True, "off": False}[args.bulk]
    summary = import_file(dsn, args.file, mapping, tolerance_m=args.tolerance, bulk=bulk)
    print(json.dumps(summary.as_dict(), indent=2, default=str) if args.json else summary.render())
    return 0


def run_quality(args: argparse.Namespace) -> int:
    """Print the data quality report over every stored report (hidden ones too)."""
    from api.routes.reports import parse_time
    from db.quality import quality_report, render_quality
    from db.reports import ReportFilter

    filters = ReportFilter(
        created_from=parse_time(args.start, "--from"),
        created_before=parse_time(args.end, "--to", end=True),
        include_private=True,
    )
    with psycopg.connect(db.database_url(Settings())) as conn:
        report = quality_report(conn, filters, imports=True)
    print(json.dumps(report, indent=2, default=str) if args.json else render_quality(report))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Generate and load demo reports."""
    dsn = db.database_url(Settings())
    load_demo(dsn, n=args.n, seed=args.seed, days=args.days, replace=args.replace, force=True)
    return 0


def demo_count(conn: psycopg.Connection) -> int:
    """Demo reports stored (external ids ``demo-...`` with ``attrs.demo``)."""
    from gis.demo import DEMO_ID_PREFIX

    return conn.execute(
        "SELECT count(*) FROM reports WHERE external_id LIKE %s AND attrs @> '{\"demo\": true}'",
        (DEMO_ID_PREFIX + "%",),
    ).fetchone()[0]


def load_demo(
    dsn: str,
    n: int = DEMO_REPORTS,
    seed: int = DEMO_SEED,
    *,
    days: int = 365,
    replace: bool = False,
    force: bool = False,
) -> None:
    """Load the demo reports unless some are stored (idempotent; ``petalapor up`` runs it).

    Parameters
    ----------
    dsn
        Database with boundaries loaded.
    n, seed, days
        Passed to :func:`gis.demo.generate_demo`.
    replace
        Delete the stored demo reports (and their events) first.
    force
        Load even when demo reports are present (they are upserted by external id).
    """
    from db.ingest import Mapping, import_frame, places_from_db
    from gis.demo import DEMO_ID_PREFIX, generate_demo

    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        sync_catalog(conn)
        if replace:
            with conn.transaction():
                deleted = conn.execute(
                    "DELETE FROM reports WHERE external_id LIKE %s AND attrs @> '{\"demo\": true}'",
                    (DEMO_ID_PREFIX + "%",),
                ).rowcount
            print(f"demo data: deleted {deleted:,} demo reports")
        present = demo_count(conn)
        if present and not force:
            print(f"demo data: {present:,} demo reports present, nothing to do")
            return
        rw = places_from_db(conn).rw
    print(f"demo data: generating {n:,} reports (seed {seed}, {days} days) ...", flush=True)
    demo = generate_demo(rw, n=n, seed=seed, days=days)
    print(
        f"demo data: {len(demo.reports):,} reports, {len(demo.events):,} events generated "
        f"in {time.perf_counter() - started:.1f} s; loading ...",
        file=sys.stdout,
        flush=True,
    )
    summary = import_frame(
        dsn,
        demo.reports,
        Mapping(name="demo"),
        label=f"demo:n={n},seed={seed},days={days}",
        events=demo.events,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE reports")
        conn.execute("ANALYZE report_events")
    print(summary.render())
    print(f"demo data: done in {time.perf_counter() - started:.1f} s")
