"""``petalapor report --kelurahan CODE`` and ``petalapor analysis hotspots|metrics``.

``report`` writes a one-page HTML summary an OPD can share: the kelurahan's
key figures against the published targets (and the city's), a map of its RWs
coloured by the share resolved within 7 days, open backlog by age and
monthly counts.  Everything is inline (SVG and CSS, no scripts, no CDN), so
the file works offline and by e-mail.  Definitions: :mod:`gis.metrics`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import psycopg

import db
from db import analysis
from gis.metrics import MetricSpec
from petalapor.settings import Settings
from web_map.area_report import render_report, report_data


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` command and the ``analysis`` command group."""
    rep = sub.add_parser(
        "report", help="one-page HTML summary of a kelurahan for OPDs (works offline)"
    )
    rep.add_argument(
        "--kelurahan", required=True, metavar="CODE", help="kelurahan code, e.g. 3171010001"
    )
    rep.add_argument("--out", type=Path, help="HTML file to write (default laporan_<CODE>.html)")
    rep.add_argument("--lang", choices=["id", "en"], default="id", help="page language")
    _filter_args(rep)
    rep.set_defaults(func=run_report)

    grp = sub.add_parser("analysis", help="resolution metrics and hot spots from the command line")
    actions = grp.add_subparsers(dest="action", metavar="ACTION", required=True)
    met = actions.add_parser("metrics", help="write the resolution metrics table (csv or parquet)")
    met.add_argument(
        "--unit", default="kelurahan", help="rw, kelurahan, kecamatan, kota, h3_7..h3_11, none"
    )
    met.add_argument("--period", choices=["week", "month", "quarter", "year"])
    met.add_argument("--out", type=Path, required=True, help="output .csv or .parquet")
    _filter_args(met)
    met.set_defaults(func=run_metrics)
    hot = actions.add_parser(
        "hotspots", help="compute hot spots; --store publishes them as the `hotspots` tile layer"
    )
    hot.add_argument("--unit", default="h3_9")
    hot.add_argument("--metric", default="count", choices=["count", "rate", "backlog"])
    hot.add_argument("--method", default="gistar", choices=["gistar", "moran"])
    hot.add_argument("--permutations", type=int, default=9999)
    hot.add_argument("--seed", type=int, default=0)
    hot.add_argument(
        "--store",
        action="store_true",
        help="replace the published result (table analysis_hotspots)",
    )
    hot.add_argument("--out", type=Path, help="also write GeoJSON")
    _filter_args(hot)
    hot.set_defaults(func=run_hotspots)


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", help="figures as of this time (default now)")
    parser.add_argument("--from", dest="start", help="reports created at or after")
    parser.add_argument("--to", dest="end", help="reports created before")
    parser.add_argument(
        "--category", action="append", default=[], help="category code (repeatable)"
    )
    parser.add_argument("--opd", action="append", default=[], help="OPD code (repeatable)")
    parser.add_argument(
        "--min-reports", type=int, default=20, help="reliability threshold (default 20)"
    )


def _spec(args: argparse.Namespace, **grouping: Any) -> MetricSpec:
    return MetricSpec(
        as_of=args.as_of,
        start=args.start,
        end=args.end,
        categories=tuple(args.category),
        opds=tuple(args.opd),
        min_reports=args.min_reports,
        **grouping,
    )


def run_report(args: argparse.Namespace) -> int:
    """Build the kelurahan summary and write it."""
    spec = _spec(args)
    out = args.out or Path(f"laporan_{args.kelurahan}.html")
    with psycopg.connect(db.database_url(Settings())) as conn:
        data = report_data(conn, args.kelurahan, spec)
    out.write_text(render_report(data, args.lang), encoding="utf-8")
    reports = int(data["kelurahan"].get("reports") or 0)
    print(f"wrote {out} ({data['names']['kelurahan']}, {reports} reports)")
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """Write the metrics table."""
    unit = None if args.unit in ("none", "city") else args.unit
    spec = _spec(args, unit=unit, period=args.period)
    with psycopg.connect(db.database_url(Settings())) as conn:
        table = analysis.resolution_metrics(conn, spec)
    if args.out.suffix == ".parquet":
        table.to_parquet(args.out, index=False)
    else:
        table.to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(table)} rows, as of {spec.as_of.isoformat()}")
    return 0


def run_hotspots(args: argparse.Namespace) -> int:
    """Compute hot spots; print the class counts; store and/or write them."""
    spec = _spec(args, unit=args.unit)
    with psycopg.connect(db.database_url(Settings())) as conn:
        result = analysis.hotspots(
            conn,
            spec,
            metric=args.metric,
            method=args.method,
            permutations=args.permutations,
            seed=args.seed,
        )
        if args.store:
            n = analysis.store_hotspots(conn, result)
            print(f"published {n} units as the `hotspots` tile layer")
    for cls, n in result["class"].value_counts().sort_index().items():
        print(f"  {cls:<8} {n:>7}")
    if args.out:
        attrs, result.attrs = result.attrs, {}
        args.out.write_text(result.to_json(na="null", drop_id=True))
        result.attrs = attrs
        print(f"wrote {args.out}")
    return 0
