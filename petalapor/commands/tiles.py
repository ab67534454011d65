"""``petalapor export heatmap`` and ``petalapor tiles refresh|warm|status|clear``.

``export heatmap --out f.tif`` writes the report density surface (the same
kernel as the heatmap tiles) as a Cloud-Optimised GeoTIFF, validated with
rio-cogeo.  ``tiles refresh`` drains the change queue (``--full`` rebuilds
every roll-up, e.g. after a bulk import); running servers are notified.
``tiles warm`` requests the tiles of a server so its cache is hot.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import db
from petalapor.settings import Settings


def _export_actions(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``export`` group's sub-parsers (shared with other modules that export things)."""
    parser = sub.choices.get("export") if hasattr(sub, "choices") else None
    if parser is None:
        parser = sub.add_parser("export", help="export maps and data to files")
        actions = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
        parser.set_defaults(_export_actions=actions)
        return actions
    return parser.get_default("_export_actions") or next(
        a
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
    )


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="date_from", metavar="YYYY-MM-DD", help="first day (WIB) of created_at"
    )
    parser.add_argument(
        "--to", dest="date_to", metavar="YYYY-MM-DD", help="last day (WIB) of created_at"
    )
    parser.add_argument(
        "--category", action="append", default=[], help="category code (repeatable)"
    )
    parser.add_argument("--opd", action="append", default=[], help="OPD code (repeatable)")
    parser.add_argument("--status", action="append", default=[], help="status code (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export heatmap`` and the ``tiles`` command group."""
    heat = _export_actions(sub).add_parser(
        "heatmap", help="report density as a Cloud-Optimised GeoTIFF (EPSG:32748, reports per km²)"
    )
    heat.add_argument("--out", required=True, help="output .tif")
    heat.add_argument(
        "--resolution", type=float, default=50.0, help="cell size in metres (default 50)"
    )
    heat.add_argument(
        "--bandwidth", type=float, help="kernel sigma in metres (default from settings)"
    )
    heat.add_argument(
        "--all",
        action="store_true",
        help="include reports hidden by their reporter, no k-anonymity mask (internal use only)",
    )
    _filter_args(heat)
    heat.set_defaults(func=export_heatmap)

    parser = sub.add_parser("tiles", help="vector tile roll-ups and cache")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    refresh = actions.add_parser("refresh", help="apply queued report changes to the tile roll-ups")
    refresh.add_argument(
        "--full", action="store_true", help="rebuild every roll-up from the reports"
    )
    refresh.set_defaults(func=refresh_rollups)
    actions.add_parser("status", help="queued changes and roll-up sizes (JSON)").set_defaults(
        func=status
    )
    warm = actions.add_parser(
        "warm", help="request tiles from a running server so its cache is hot"
    )
    warm.add_argument(
        "--url", default=None, help="server base URL (default http://HOST:PORT of the API settings)"
    )
    warm.add_argument(
        "--layers",
        default="hexes,kelurahan",
        help="comma-separated layers (default hexes,kelurahan)",
    )
    warm.add_argument("--zooms", default="10-14", help="zoom range, e.g. 10-14")
    warm.add_argument("--key", help="API key to send (for the reports layer)")
    warm.add_argument("--concurrency", type=int, default=4)
    warm.set_defaults(func=warm_cache)
    clear = actions.add_parser(
        "clear", help="delete the on-disk tile cache (PETALAPOR_TILES_CACHE_DIR)"
    )
    clear.set_defaults(func=clear_disk)


def export_heatmap(args: argparse.Namespace) -> int:
    """Write the COG and print a JSON summary."""
    import psycopg

    from tiles.filters import parse_filters
    from tiles.heatmap import Heatmap
    from tiles.layers import TileContext
    from tiles.settings import TileSettings
    from tiles.viewer import PUBLIC, Viewer

    filters = parse_filters(
        {
            "from": [args.date_from] if args.date_from else [],
            "to": [args.date_to] if args.date_to else [],
            "category": args.category,
            "opd": args.opd,
            "status": args.status,
        }
    )
    settings = TileSettings()
    heatmap = Heatmap(
        TileContext.from_settings(settings),
        args.bandwidth or settings.heatmap_bandwidth_m,
        settings.heatmap_colormap,
        settings.heatmap_scale,
    )
    dsn = db.database_url(Settings())
    with psycopg.connect(dsn) as conn:
        summary = heatmap.export_cog(
            conn,
            args.out,
            filters,
            Viewer("admin") if args.all else PUBLIC,
            resolution_m=args.resolution,
        )
    print(json.dumps(summary, indent=2))
    return 0


def refresh_rollups(args: argparse.Namespace) -> int:
    """Drain the queue (or rebuild everything) and notify running servers."""
    import psycopg

    from tiles.layers import TileContext
    from tiles.rollup import process_changes
    from tiles.settings import TileSettings

    ctx = TileContext.from_settings(TileSettings())
    dsn = db.database_url(Settings())
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        if args.full:
            conn.execute("INSERT INTO tile_changes (kind) VALUES ('full')")
            conn.commit()
        batch = process_changes(conn, ctx, source="cli")
    print(
        f"tile roll-ups: {batch.rows} queued rows, full={batch.full}, "
        f"{len(batch.footprints)} footprints, {time.perf_counter() - started:.1f} s"
    )
    return 0


def status(args: argparse.Namespace) -> int:
    """Print queue length and roll-up sizes."""
    import psycopg

    dsn = db.database_url(Settings())
    with psycopg.connect(dsn) as conn:
        out = {
            "queued_changes": conn.execute("SELECT count(*) FROM tile_changes").fetchone()[0],
            "hex_cells": conn.execute("SELECT count(*) FROM tile_hex_cells").fetchone()[0],
            "hex_stats": dict(
                conn.execute(
                    "SELECT scope || ':r' || res, count(*) FROM tile_hex_stats GROUP BY 1 "
                    "ORDER BY 1"
                ).fetchall()
            ),
            "area_stats": dict(
                conn.execute(
                    "SELECT scope || ':' || level, count(*) FROM tile_area_stats GROUP BY 1 "
                    "ORDER BY 1"
                ).fetchall()
            ),
        }
    print(json.dumps(out, indent=2))
    return 0


def _zoom_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def warm_cache(args: argparse.Namespace) -> int:
    """GET every tile over Jakarta for the layers and zooms given; print a summary."""
    import httpx

    from tiles.tms import JAKARTA_BOUNDS, Box, mercator_box, tile_range

    settings = Settings()
    base = (args.url or f"http://{settings.api.host}:{settings.api.port}").rstrip("/")
    box = mercator_box(Box(*JAKARTA_BOUNDS))
    urls = []
    for layer in [name.strip() for name in args.layers.split(",") if name.strip()]:
        for z in _zoom_range(args.zooms):
            x0, x1, y0, y1 = tile_range(box, z)
            urls += [
                f"{base}/tiles/{layer}/{z}/{x}/{y}.mvt"
                for x in range(x0, x1 + 1)
                for y in range(y0, y1 + 1)
            ]
    headers = {"accept-encoding": "gzip"} | ({"x-api-key": args.key} if args.key else {})
    counts: dict[int, int] = {}
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=60) as client:

        def fetch(url: str) -> int:
            return client.get(url).status_code

        with ThreadPoolExecutor(max(1, args.concurrency)) as pool:
            for code in pool.map(fetch, urls):
                counts[code] = counts.get(code, 0) + 1
    print(f"warmed {len(urls)} tiles in {time.perf_counter() - started:.1f} s: {counts}")
    return 0 if all(c in (200, 204) for c in counts) else 1


def clear_disk(args: argparse.Namespace) -> int:
    """Remove the disk cache folder's content."""
    from tiles.cache import TileCache
    from tiles.settings import TileSettings

    folder = TileSettings().cache_dir
    if folder is None:
        print("no disk cache configured (PETALAPOR_TILES_CACHE_DIR)")
        return 0
    TileCache(0, folder).clear()
    print(f"cleared {folder}")
    return 0
