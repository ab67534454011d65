"""``petalapor layers ...``: context layers (JakWifi, ISPU) into the database, and the surface.

``load_default_layers(dsn)`` is the ``petalapor up`` step: synthetic JakWifi
when no hotspots are loaded, the ISPU stations and readings when none are,
the coverage, the default ISPU surface and the ISPU at every report, each only
when missing or stale, so running it again is cheap.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import psycopg

import db
from db import layers as store
from petalapor.errors import NotFoundError
from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``layers`` command group."""
    parser = sub.add_parser("layers", help="context layers: JakWifi hotspots, ISPU air quality")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    actions.add_parser(
        "list", help="registered layers, what is loaded, current imports"
    ).set_defaults(func=list_layers)

    imp = actions.add_parser(
        "import-jakwifi",
        help="import a JakWifi export (CSV or GeoJSON, open-data shape); replaces the hotspots",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--tolerance",
        type=float,
        default=store.SNAP_TOLERANCE_M,
        help="metres off the kelurahan polygons still accepted and snapped (default 100)",
    )
    imp.set_defaults(func=import_jakwifi)

    gen = actions.add_parser(
        "generate-jakwifi",
        help="store SYNTHETIC hotspots (the published per-city counts placed at random)",
    )
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", type=Path, help="also write them as an open-data CSV")
    gen.set_defaults(func=generate_jakwifi)

    ispu = actions.add_parser(
        "import-ispu", help="import ISPU stations and daily readings; prints every disagreement"
    )
    ispu.add_argument(
        "file", nargs="?", type=Path, help="default ../shared/data/ispu/ispu_dki_all.csv"
    )
    ispu.add_argument("--stations", type=Path, help="default ../shared/data/ispu/stations.csv")
    ispu.set_defaults(func=import_ispu)

    surf = actions.add_parser(
        "surface", help="write the ISPU IDW surface (COG), validate it, serve it"
    )
    surf.add_argument("--period", help="YYYY-MM, YYYY or YYYY-MM-DD (default: last complete month)")
    surf.add_argument("--power", type=float, default=2.0, help="IDW exponent (default 2)")
    surf.add_argument(
        "--cell", type=float, default=100.0, help="cell size, EPSG:3857 metres (default 100)"
    )
    surf.add_argument(
        "--out", type=Path, help="output .tif (default var/rasters/ispu_ispu_<period>.tif)"
    )
    surf.add_argument("--no-current", action="store_true", help="do not make it the served default")
    surf.set_defaults(func=surface)

    cov = actions.add_parser("coverage", help="recompute JakWifi coverage per RW and kelurahan")
    cov.add_argument(
        "--resnap", action="store_true", help="first snap the hotspots again (new boundaries)"
    )
    cov.set_defaults(func=coverage)

    exp = actions.add_parser("exposure", help="store the ISPU at every report's place and day")
    exp.add_argument("--missing-only", action="store_true", help="only reports without a value yet")
    exp.add_argument("--power", type=float, default=2.0)
    exp.set_defaults(func=exposure)


def _dsn() -> str:
    return db.database_url(Settings())


def list_layers(args: argparse.Namespace) -> int:
    """Print each registered layer with what is stored for it."""
    from layers import registry

    dsn = _dsn()
    with psycopg.connect(dsn) as conn:
        counts = store.layer_counts(conn)
        current = {name: store.current_import(conn, name) for name in ("jakwifi", "ispu")}
        try:
            surf = store.find_surface(conn)
        except NotFoundError:
            surf = None
    stored = {
        "jakwifi": (
            f"{counts['layer_jakwifi']} hotspots, coverage {counts['jakwifi_coverage']} units"
        ),
        "ispu_stations": (
            f"{counts['layer_ispu_stations']} stations, {counts['ispu_readings']} readings"
        ),
        "ispu_surface": f"{surf.period} ({surf.path})" if surf else "no surface",
    }
    for layer in registry.all_layers():
        flag = " [SYNTHETIC]" if _synthetic(layer.name, current) else ""
        print(f"{layer.name:<15} {layer.kind:<7} {layer.title}{flag}")
        print(f"{'':<15} stored: {stored.get(layer.name, '-')}")
        print(f"{'':<15} attribution: {layer.attribution}")
    for name, imp in current.items():
        if imp:
            print(
                f"current {name} import #{imp['id']}: {imp['source_file']} "
                f"at {imp['finished_at']:%Y-%m-%d %H:%M}"
            )
    print(f"reports with ISPU: {counts['report_ispu']}")
    return 0


def _synthetic(name: str, current: dict) -> bool:
    from layers import registry

    if name == "jakwifi" and current.get("jakwifi"):
        return bool(current["jakwifi"]["synthetic"])
    return registry.get(name).synthetic


def import_jakwifi(args: argparse.Namespace) -> int:
    """Import a hotspot file and print the report."""
    result = store.import_jakwifi(_dsn(), args.file, tolerance_m=args.tolerance)
    print(result.report_text)
    _print_import(result)
    return 0


def generate_jakwifi(args: argparse.Namespace) -> int:
    """Generate and store the synthetic hotspots."""
    result = store.generate_jakwifi(_dsn(), seed=args.seed)
    print(result.report_text)
    if args.out:
        from layers.jakwifi import write_open_data_csv

        with psycopg.connect(_dsn()) as conn:
            frames = store.boundary_frames(conn)
        from layers.jakwifi import generate_hotspots

        hotspots = generate_hotspots(
            frames["rw"], frames["kelurahan"], kecamatan=frames["kecamatan"], seed=args.seed
        )
        print(f"written: {write_open_data_csv(hotspots, args.out)}")
    _print_import(result)
    return 0


def import_ispu(args: argparse.Namespace) -> int:
    """Import stations and readings; print the full report (every disagreement)."""
    dsn = _dsn()
    result = store.import_ispu(dsn, args.file, stations=args.stations)
    print(result.report_text)
    _print_import(result)
    with psycopg.connect(dsn) as conn:
        stale = conn.execute("SELECT count(*) FROM report_ispu").fetchone()[0]
    if stale:
        print(
            f"note: {stale} reports have ISPU values from the previous import: "
            "run `petalapor layers exposure`"
        )
    return 0


def surface(args: argparse.Namespace) -> int:
    """Write the COG, print its path and validate it."""
    rec = store.write_ispu_surface(
        _dsn(),
        period=args.period,
        power=args.power,
        cell_size=args.cell,
        path=args.out,
        make_current=not args.no_current,
    )
    print(rec.path)
    stations = ", ".join(
        f"{s['station_id']} {s['value']:.1f} ({s['n_days']} d)" for s in rec.stations
    )
    print(
        f"period {rec.period_start}..{rec.period_end}, power {rec.power:g}, "
        f"cell {rec.cell_size:g} m, {rec.n_stations} stations: {stations}"
    )
    ok, errors, warnings = _validate(rec.path)
    print("rio cogeo validate: " + ("valid cloud-optimized GeoTIFF" if ok else "INVALID"))
    for text in [*errors, *warnings]:
        print(f"  {text}")
    return 0 if ok else 1


def coverage(args: argparse.Namespace) -> int:
    """Recompute the coverage tables."""
    started = time.perf_counter()
    if args.resnap:
        result = store.resnap_jakwifi(_dsn())
        print(result.report_text)
        counts = result.extra["coverage"]
    else:
        with psycopg.connect(_dsn()) as conn:
            counts = store.refresh_coverage(conn)
    print(
        f"coverage: {counts['rw']} RW, {counts['kelurahan']} kelurahan "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def exposure(args: argparse.Namespace) -> int:
    """Compute the ISPU per report."""
    out = store.compute_report_ispu(_dsn(), only_missing=args.missing_only, power=args.power)
    print(
        f"ISPU for {out['reports']} reports ({out['with_value']} with a monthly value, "
        f"{out['with_day_value']} with a reading on their day) in {out['seconds']} s"
    )
    return 0


def _print_import(result: store.LayerImport) -> None:
    s = result.summary
    print(
        f"import #{result.import_id} ({result.layer}): read {s['read']} = valid {s['valid']} + "
        f"quarantined {s['quarantined']}, in {result.seconds:.1f} s"
    )
    if "coverage" in result.extra:
        print("coverage refreshed: " + json.dumps(result.extra["coverage"]))


def _validate(path: Path) -> tuple[bool, list[str], list[str]]:
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


# --------------------------------------------------------------------------- petalapor up


def load_default_layers(
    dsn: str, *, raster_dir: Path | None = None, verbose: bool = True
) -> dict[str, float]:
    """Load what is missing or stale; idempotent (the ``petalapor up`` step).

    1. JakWifi: the synthetic hotspots (seed 1) when none are stored, or when
       the synthetic ones were placed on another boundary set.
    2. ISPU: stations and readings from ``../shared/data/ispu`` when none are stored.
    3. Coverage: refreshed when it is empty or from another import.
    4. Surface: the default (last complete month) when no current surface
       file exists.
    5. Exposure: ISPU for reports without a value (all of them when the
       stored values come from an older ISPU import).

    Returns
    -------
    dict
        Seconds per step that ran (``total`` always).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, func, *a, **kw):  # noqa: ANN001, ANN202 - tiny local helper
        t = time.perf_counter()
        out = func(*a, **kw)
        timings[name] = round(time.perf_counter() - t, 2)
        if verbose:
            print(f"layers: {name} in {timings[name]:.1f} s")
        return out

    with psycopg.connect(dsn) as conn:
        has_boundaries = conn.execute("SELECT EXISTS (SELECT 1 FROM boundaries)").fetchone()[0]
        if not has_boundaries:
            if verbose:
                print("layers: no boundaries stored; skipped")
            return {"total": 0.0}
        jw = store.current_import(conn, "jakwifi")
        set_id = conn.execute("SELECT id FROM boundary_sets WHERE is_current").fetchone()
        n_hotspots = conn.execute("SELECT count(*) FROM layer_jakwifi").fetchone()[0]
        moved = (
            jw is not None
            and set_id is not None
            and jw["summary"].get("boundary_set_id") != set_id[0]
        )
    if jw is None or n_hotspots == 0 or (moved and jw["synthetic"]):
        # synthetic points are placed in the polygons: place them again on new boundaries
        step("jakwifi (synthetic, seed 1)", store.generate_jakwifi, dsn, seed=1)
    elif moved:
        step("jakwifi snapped to the new boundaries", store.resnap_jakwifi, dsn)
    with psycopg.connect(dsn) as conn:
        has_ispu = conn.execute("SELECT EXISTS (SELECT 1 FROM ispu_readings)").fetchone()[0]
    if not has_ispu:
        result = step("ispu import", store.import_ispu, dsn)
        if verbose:
            s = result.summary
            print(
                f"layers: ISPU {s['valid']} readings, {s['quarantined']} quarantined, "
                f"{s['disagreements']} disagreements (see `petalapor layers import-ispu`)"
            )
    with psycopg.connect(dsn) as conn:
        cur = store.current_import(conn, "jakwifi")
        stale = conn.execute(
            "SELECT count(*) = 0 OR bool_or(import_id IS DISTINCT FROM %s) FROM jakwifi_coverage",
            (cur["id"] if cur else None,),
        ).fetchone()[0]
        if stale:
            step("coverage", store.refresh_coverage, conn)
        try:
            store.find_surface(conn, raster_dir=raster_dir)
            need_surface = False
        except NotFoundError:
            need_surface = True
    if need_surface:
        rec = step("ispu surface", store.write_ispu_surface, dsn, raster_dir=raster_dir)
        if verbose:
            print(f"layers: ISPU surface {rec.period} -> {rec.path}")
    with psycopg.connect(dsn) as conn:
        ispu = store.current_import(conn, "ispu")
        old = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM report_ispu WHERE import_id IS DISTINCT FROM %s)",
            (ispu["id"],),
        ).fetchone()[0]
        missing = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM reports r WHERE NOT EXISTS "
            "(SELECT 1 FROM report_ispu x WHERE x.report_id = r.id))"
        ).fetchone()[0]
    if old or missing:
        out = step("exposure", store.compute_report_ispu, dsn, only_missing=not old)
        if verbose:
            print(f"layers: ISPU for {out['reports']} reports ({out['with_value']} with a value)")
    timings["total"] = round(time.perf_counter() - started, 2)
    if verbose:
        print(f"layers: ready in {timings['total']:.1f} s")
    return timings
