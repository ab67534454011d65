"""``petalapor boundaries import [PATH]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psycopg

import db
from db.boundaries import current_set, store_boundary_set
from gis.boundaries import BoundarySource, build_boundary_set, load_manifest, sources_fingerprint
from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``boundaries`` command group."""
    parser = sub.add_parser("boundaries", help="import kelurahan and RW polygons")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="load boundaries (GeoJSON, GeoPackage, Shapefile or zip)",
        description=(
            "PATH is a folder holding the manifest's files or a manifest .toml; by default "
            "data/boundaries/sources.toml with files from data/boundaries/ or "
            "../shared/data/boundaries/."
        ),
    )
    imp.add_argument("path", nargs="?", type=Path, help="folder or manifest .toml")
    imp.add_argument(
        "--kelurahan", type=Path, help="kelurahan file (default mapping of the manifest)"
    )
    imp.add_argument("--rw", type=Path, help="RW file (default mapping of the manifest)")
    imp.add_argument("--force", action="store_true", help="store even when the same set is loaded")
    imp.add_argument(
        "--check", action="store_true", help="validate and print the report; store nothing"
    )
    imp.set_defaults(func=run_import)


def sources_from_args(args: argparse.Namespace) -> list[BoundarySource]:
    """The manifest's sources, with --kelurahan/--rw replacing their files."""
    sources = load_manifest(args.path)
    override = {"kelurahan": args.kelurahan, "rw": args.rw}
    return [
        BoundarySource(s.level, override[s.level], s.columns, None) if override.get(s.level) else s
        for s in sources
    ]


def run_import(args: argparse.Namespace) -> int:
    """Build, validate and store a boundary set; print the report."""
    started = time.perf_counter()
    sources = sources_from_args(args)
    for src in sources:
        print(f"{src.level:<10} {src.path}")
    dsn = None if args.check else db.database_url(Settings())
    if dsn and not args.force:
        with psycopg.connect(dsn) as conn:
            existing = current_set(conn)
        if existing and existing["fingerprint"] == sources_fingerprint(sources):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(existing["counts"].items()))
            print(f"boundary set {existing['id']}: unchanged (same files and mapping; {counts})")
            return 0
    bset = build_boundary_set(sources)
    print(bset.report.render())
    if args.check:
        return 0
    result = store_boundary_set(dsn, bset, force=args.force)
    took = time.perf_counter() - started
    print(f"boundary set {result.set_id}: {result.status} in {took:.1f} s")
    return 0
