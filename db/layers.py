"""Storing the context layers: JakWifi hotspots, ISPU stations and readings, surfaces.

Every import is one transaction: the layer's rows are replaced as a set, the
import is logged in ``layer_imports`` (summary and full report as JSON, the
printed report as text) and every quarantined row goes to
``layer_quarantine`` with file, row, field, reason and the raw record.  On any
error nothing changes.  Quarantine rows of earlier imports are kept.

* **JakWifi**: :func:`import_jakwifi` (a file, through
  :func:`layers.jakwifi.read_hotspots` with the kelurahan polygons as service
  area) and :func:`generate_jakwifi` (the seeded synthetic stand-in).  Every
  point is snapped with :class:`gis.snap.SnapIndex`: RW first, the kelurahan
  rule where no RW matches (Kepulauan Seribu has no RW polygons), as the
  reports are.  Codes and names stored are those of the snap; the file's are
  kept in ``source``.  The coverage per RW and kelurahan
  (``jakwifi_coverage``, see :func:`refresh_coverage`) is refreshed in the same
  transaction.
* **ISPU**: :func:`import_ispu` stores the stations (``location_method`` kept)
  and the readings of :func:`layers.ispu.read_ispu_csv`; every disagreement
  between derived and published values is in the stored report.
* **Surfaces**: :func:`write_ispu_surface` writes a COG from the *stored*
  readings (:func:`layers.surface.write_surface`) and records it in
  ``ispu_surfaces``; :func:`find_surface` picks the one to serve.
* **Exposure**: :func:`compute_report_ispu` gives each report the ISPU at its
  place and day (:func:`layers.surface.idw_at_points`), stored in
  ``report_ispu``.

SQL identifiers are fixed in this module; every value is bound.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg.rows import dict_row, tuple_row
from pyproj import Transformer

from gis.boundaries import METRIC_CRS
from layers.jakwifi import COLUMNS as HOTSPOT_COLUMNS
from layers.jakwifi import PLACE_COLUMNS as HOTSPOT_PLACE_COLUMNS
from petalapor.errors import DataError, InvalidParameterError, NotFoundError

#: The file's own place columns kept in ``layer_jakwifi.source`` (the kota name follows its code).
_SOURCE_PLACE_COLUMNS = tuple(c for c in HOTSPOT_PLACE_COLUMNS if c != "kota")
#: Snapping tolerance (metres, UTM 48S) of hotspots to RW / kelurahan, as for reports.
SNAP_TOLERANCE_M = 100.0
#: Coverage units (boundary levels).
COVERAGE_UNITS: tuple[str, ...] = ("rw", "kelurahan")
#: Time zone of report days (for the ISPU at a report's day).
TIMEZONE = "Asia/Jakarta"
#: Session settings (transaction-local) for the coverage query: no JIT start-up cost, and
#: a parallel scan of the (small, TOASTed) boundaries table.
_COVERAGE_SETTINGS: dict[str, str] = {
    "jit": "off",
    "min_parallel_table_scan_size": "0",
    "parallel_setup_cost": "100",
}
#: pg_advisory_xact_lock key serialising layer imports.
_LOCK_KEY = 0x1A7E5_0004

#: Stored hotspot attributes: the importer's and generator's columns, without the geometry.
_HOTSPOT_COLUMNS: tuple[str, ...] = tuple(c for c in HOTSPOT_COLUMNS if c != "geometry")
_READING_COLUMNS: tuple[str, ...] = (
    "date",
    "station_id",
    "station",
    "pm25",
    "pm10",
    "so2",
    "co",
    "o3",
    "no2",
    "ispu",
    "critical",
    "critical_all",
    "category",
    "published_max",
    "published_critical",
    "published_category",
    "source_row",
)


@dataclass(frozen=True)
class LayerImport:
    """What an import stored: the ``layer_imports`` row and its report."""

    import_id: int
    layer: str
    summary: dict[str, Any]
    report_text: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- boundaries


def boundary_frames(
    conn: psycopg.Connection, levels: Iterable[str] = ("rw", "kelurahan", "kecamatan")
) -> dict[str, gpd.GeoDataFrame]:
    """The stored boundaries of ``levels`` as GeoDataFrames (EPSG:4326), sorted by code.

    Raises
    ------
    NotFoundError
        No boundaries are stored (run ``petalapor boundaries import``).
    """
    out = {}
    for level in levels:
        rows = _q(
            conn,
            "SELECT code, name, parent_code, kelurahan_code, kecamatan_code, kota_code, area_m2, "
            "ST_AsBinary(geom) AS wkb FROM boundaries WHERE level = %s ORDER BY code",
            (level,),
        ).fetchall()
        names = [
            "code",
            "name",
            "parent_code",
            "kelurahan_code",
            "kecamatan_code",
            "kota_code",
            "area_m2",
        ]
        frame = pd.DataFrame([r[:7] for r in rows], columns=names)
        geoms = shapely.from_wkb([bytes(r[7]) for r in rows]) if rows else []
        out[level] = gpd.GeoDataFrame(frame, geometry=geoms, crs="EPSG:4326")
    if all(len(f) == 0 for f in out.values()):
        raise NotFoundError("no boundaries stored: run `petalapor boundaries import` first")
    return out


def _boundary_set_id(conn: psycopg.Connection) -> int | None:
    row = _q(conn, "SELECT id FROM boundary_sets WHERE is_current").fetchone()
    return None if row is None else int(row[0])


class Snapper:
    """RW-then-kelurahan snapping of hotspots (the rule of ``docs/architecture.md``).

    The kelurahan index is only built when some point has no RW.
    """

    def __init__(
        self, frames: Mapping[str, gpd.GeoDataFrame], tolerance_m: float = SNAP_TOLERANCE_M
    ):
        """Keep the frames; build the RW index."""
        from gis.snap import SnapIndex

        self.tolerance_m = float(tolerance_m)
        self.rw = frames["rw"].reset_index(drop=True)
        self.kelurahan = frames["kelurahan"].reset_index(drop=True)
        self.kecamatan = frames.get("kecamatan")
        self._rw_index = SnapIndex.from_frame(self.rw, code_col="code", tolerance_m=tolerance_m)
        self._kel_index: Any = None

    def _kelurahan_index(self) -> Any:
        from gis.snap import SnapIndex

        if self._kel_index is None:
            self._kel_index = SnapIndex.from_frame(
                self.kelurahan, code_col="code", tolerance_m=self.tolerance_m
            )
        return self._kel_index

    def snap(self, lon: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
        """Codes, names and method per point.

        Returns
        -------
        pandas.DataFrame
            ``rw_code, rw, kelurahan_code, kelurahan, kecamatan_code, kecamatan,
            kota_code, kota, snap_level, snap_method, snap_distance_m``.
        """
        from layers.jakwifi import KOTA_NAMES

        n = len(lon)
        out = pd.DataFrame(
            {
                "rw_code": None,
                "rw": None,
                "kelurahan_code": None,
                "snap_level": None,
                "snap_method": "outside",
                "snap_distance_m": 0.0,
            },
            index=range(n),
        ).astype({"rw_code": object, "rw": object, "kelurahan_code": object, "snap_level": object})
        if n == 0:
            return self._names(out, KOTA_NAMES)
        res = self._rw_index.snap(np.asarray(lon, float), np.asarray(lat, float))
        hit = res.row >= 0
        rows = self.rw.iloc[res.row[hit]]
        out.loc[hit, "rw_code"] = rows["code"].to_numpy()
        out.loc[hit, "rw"] = rows["name"].to_numpy()
        out.loc[hit, "kelurahan_code"] = rows["kelurahan_code"].to_numpy()
        out.loc[hit, "snap_level"] = "rw"
        out["snap_method"] = res.method.astype(object)
        out["snap_distance_m"] = res.distance_m
        miss = np.flatnonzero(~hit)
        if miss.size:
            kel = self._kelurahan_index().snap(
                np.asarray(lon, float)[miss], np.asarray(lat, float)[miss]
            )
            got = kel.row >= 0
            idx = miss[got]
            out.loc[idx, "kelurahan_code"] = self.kelurahan["code"].to_numpy()[kel.row[got]]
            out.loc[idx, "snap_level"] = "kelurahan"
            out.loc[miss, "snap_method"] = kel.method.astype(object)
            out.loc[miss, "snap_distance_m"] = kel.distance_m
        return self._names(out, KOTA_NAMES)

    def _names(self, out: pd.DataFrame, kota_names: Mapping[str, str]) -> pd.DataFrame:
        kel = self.kelurahan.set_index("code")
        out["kelurahan"] = out["kelurahan_code"].map(kel["name"])
        out["kecamatan_code"] = out["kelurahan_code"].map(kel["kecamatan_code"])
        out["kota_code"] = out["kelurahan_code"].map(kel["kota_code"])
        if self.kecamatan is not None and len(self.kecamatan):
            out["kecamatan"] = out["kecamatan_code"].map(self.kecamatan.set_index("code")["name"])
        else:
            out["kecamatan"] = None
        out["kota"] = out["kota_code"].map(
            lambda c: kota_names.get(c) if isinstance(c, str) else None
        )
        return out.astype(object).where(out.notna(), None).astype({"snap_distance_m": float})


_SNAPPERS: dict[tuple[str | None, float], Snapper] = {}


def snapper_for(conn: psycopg.Connection, tolerance_m: float = SNAP_TOLERANCE_M) -> Snapper:
    """A :class:`Snapper` on the current boundary set (one cached per process, by fingerprint)."""
    row = _q(conn, "SELECT fingerprint FROM boundary_sets WHERE is_current").fetchone()
    key = (None if row is None else row[0], float(tolerance_m))
    if key not in _SNAPPERS:
        frames = boundary_frames(conn)
        _SNAPPERS.clear()  # keep one: the indexes are large
        _SNAPPERS[key] = Snapper(frames, tolerance_m)
    return _SNAPPERS[key]


# --------------------------------------------------------------------------- JakWifi


def import_jakwifi(
    dsn: str, path: str | Path, *, tolerance_m: float = SNAP_TOLERANCE_M
) -> LayerImport:
    """Import a JakWifi export (CSV or GeoJSON), snap it and replace the stored hotspots.

    Parameters
    ----------
    dsn
        Database URL (migrated, boundaries stored).
    path
        The export, in the open-data shape (:func:`layers.jakwifi.read_hotspots`).
    tolerance_m
        Points this close (UTM metres) to a kelurahan are accepted, and snapped
        to the nearest RW / kelurahan within it.

    Returns
    -------
    LayerImport
        ``summary["read"] == summary["valid"] + summary["quarantined"]``.

    Raises
    ------
    DataError
        Unreadable file or no coordinate columns; nothing is stored.

    Examples
    --------
    >>> result = import_jakwifi(dsn, "jakwifi.csv")        # doctest: +SKIP
    >>> print(result.report_text)                            # doctest: +SKIP

    See Also
    --------
    generate_jakwifi, refresh_coverage
    """
    from layers.jakwifi import read_hotspots

    started = time.perf_counter()
    path = Path(path)
    with psycopg.connect(dsn) as conn:
        frames = boundary_frames(conn)
        result = read_hotspots(path, service_area=frames["kelurahan"], tolerance_m=tolerance_m)
        raw = raw_records(path)
        rows = _valid_rows(raw, result.quarantine, len(result.hotspots))
        snapper = snapper_for(conn, tolerance_m)
        summary = {
            "read": result.read,
            "valid": result.valid,
            "quarantined": result.quarantined,
            "quarantine_entries": len(result.quarantine),
            "columns": result.columns,
            "tolerance_m": tolerance_m,
        }
        stored = _store_hotspots(
            conn,
            result.hotspots,
            source_rows=rows,
            source_file=str(path),
            synthetic=result.synthetic,
            snapper=snapper,
            summary=summary,
            quarantine=result.quarantine,
            raw=raw,
            report_head=result.render(),
        )
    return _timed(stored, started)


def generate_jakwifi(dsn: str, *, seed: int = 1) -> LayerImport:
    """Generate the synthetic hotspots on the stored boundaries and store them (marked synthetic).

    The published per-city counts (:data:`layers.jakwifi.PUBLISHED_COUNTS`) are
    placed by :func:`layers.jakwifi.generate_hotspots`; same seed and
    boundaries, same points.
    """
    from layers.jakwifi import generate_hotspots

    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        frames = boundary_frames(conn)
        hotspots = generate_hotspots(
            frames["rw"], frames["kelurahan"], kecamatan=frames["kecamatan"], seed=seed
        )
        n = len(hotspots)
        summary = {"read": n, "valid": n, "quarantined": 0, "quarantine_entries": 0, "seed": seed}
        head = (
            f"JakWifi synthetic hotspots: generated with seed {seed} from the published per-city "
            f"counts ({n} points); NOT real locations"
        )
        stored = _store_hotspots(
            conn,
            hotspots,
            source_rows=np.arange(1, n + 1),
            source_file=f"generated:seed={seed}",
            synthetic=True,
            snapper=snapper_for(conn),
            summary=summary,
            quarantine=None,
            raw={},
            report_head=head,
        )
    return _timed(stored, started)


def resnap_jakwifi(dsn: str, *, tolerance_m: float = SNAP_TOLERANCE_M) -> LayerImport:
    """Snap the stored hotspots again to the current boundaries (after a boundary import).

    The file's own codes (``source``) are kept; the result is a new current
    import of the same source, and the coverage is refreshed with it.

    Raises
    ------
    NotFoundError
        No hotspots are stored.
    """
    from layers.jakwifi import KOTA_NAMES

    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        prev = current_import(conn, "jakwifi")
        rows = _q(
            conn,
            "SELECT id, name, address, synthetic, source, source_row, ST_X(geom), ST_Y(geom) "
            "FROM layer_jakwifi ORDER BY source_row, id",
        ).fetchall()
        if prev is None or not rows:
            raise NotFoundError("no JakWifi hotspots stored: nothing to snap again")
        frame = pd.DataFrame(
            rows, columns=["id", "name", "address", "synthetic", "source", "row", "lon", "lat"]
        )
        for col in _SOURCE_PLACE_COLUMNS:
            frame[col] = frame["source"].map(lambda src, c=col: src.get(c))
        frame["kota"] = frame["kota_code"].map(lambda c: KOTA_NAMES.get(c) if c else None)
        hs = gpd.GeoDataFrame(
            frame.drop(columns=["source", "row", "lon", "lat"]),
            geometry=gpd.points_from_xy(frame["lon"], frame["lat"]),
            crs="EPSG:4326",
        )
        keep = ("read", "valid", "quarantined", "quarantine_entries", "columns", "seed")
        summary = {k: v for k, v in prev["summary"].items() if k in keep}
        summary.update(resnapped_from=prev["id"], tolerance_m=tolerance_m)
        stored = _store_hotspots(
            conn,
            hs,
            source_rows=frame["row"].fillna(0).to_numpy(dtype=int),
            source_file=prev["source_file"],
            synthetic=prev["synthetic"],
            snapper=snapper_for(conn, tolerance_m),
            summary=summary,
            quarantine=None,
            raw={},
            report_head=(
                f"JakWifi hotspots of import #{prev['id']} ({prev['source_file']}) snapped again "
                "to the current boundaries"
            ),
        )
    return _timed(stored, started)


def _store_hotspots(
    conn: psycopg.Connection,
    hotspots: gpd.GeoDataFrame,
    *,
    source_rows: np.ndarray,
    source_file: str,
    synthetic: bool,
    snapper: Snapper,
    summary: dict[str, Any],
    quarantine: pd.DataFrame | None,
    raw: Mapping[int, dict[str, Any]],
    report_head: str,
) -> LayerImport:
    """Snap, then replace ``layer_jakwifi`` and refresh the coverage in one transaction."""
    hs = hotspots.to_crs("EPSG:4326").reset_index(drop=True)
    lon, lat = shapely.get_x(hs.geometry.values), shapely.get_y(hs.geometry.values)
    snapped = snapper.snap(lon, lat)
    rows = _hotspot_rows(hs, snapped, np.asarray(source_rows), source_file)
    summary = {
        **summary,
        "stored": len(rows),
        "synthetic": bool(synthetic),
        "per_kota": {
            str(k): int(v) for k, v in rows["kota_code"].value_counts().sort_index().items()
        },
        "snap": _snap_counts(snapped),
        "differs_from_file": _differences(rows),
    }
    report = {"quarantine": _records(quarantine), "snap_outside": _outside(rows)}
    text = _jakwifi_report_text(report_head, summary, report["snap_outside"])
    with conn.transaction():
        _q(conn, "SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _q(conn, "LOCK TABLE layer_jakwifi IN EXCLUSIVE MODE")
        summary["boundary_set_id"] = _boundary_set_id(conn)
        import_id = _new_import(conn, "jakwifi", source_file, synthetic, summary, report, text)
        _store_quarantine(conn, import_id, "jakwifi", quarantine, raw)
        _q(conn, "DELETE FROM layer_jakwifi")
        _copy_hotspots(conn, rows, lon, lat, import_id)
        coverage = refresh_coverage(conn, import_id=import_id)
    _q(conn, "ANALYZE layer_jakwifi")
    return LayerImport(import_id, "jakwifi", summary, text, extra={"coverage": coverage})


def _hotspot_rows(
    hs: gpd.GeoDataFrame, snapped: pd.DataFrame, source_rows: np.ndarray, source_file: str
) -> pd.DataFrame:
    """The stored attribute rows: snapped codes and names, the file's kept in ``source``."""
    if len(source_rows) != len(hs):
        raise DataError(f"{source_file}: {len(hs)} valid rows but {len(source_rows)} row numbers")
    out = pd.DataFrame(hs.drop(columns=hs.geometry.name)).astype(object)
    out = out.where(out.notna(), None)
    source = [
        {k: v for k, v in rec.items() if v is not None}
        for rec in out[list(_SOURCE_PLACE_COLUMNS)].to_dict("records")
    ]
    snapped_place = snapped["kelurahan_code"].notna().to_numpy()
    for col in HOTSPOT_PLACE_COLUMNS:
        # snapped points take the boundaries' codes and names (rw empty on kelurahan-only snaps)
        out[col] = np.where(
            snapped_place, snapped[col].to_numpy(dtype=object), out[col].to_numpy(dtype=object)
        )
    missing = out["id"].isna().to_numpy()
    stem = Path(source_file).stem
    out.loc[missing, "id"] = [f"{stem}:{r}" for r in source_rows[missing]]
    dup = out["id"].duplicated(keep="first")
    if dup.any():
        first = out.loc[dup, "id"].iloc[0]
        raise DataError(f"{source_file}: duplicate hotspot id {first!r} after filling empty ids")
    out["synthetic"] = out["synthetic"].astype(bool)
    out["source_row"] = source_rows.astype(int)
    out["source"] = source
    for col in ("snap_level", "snap_method", "snap_distance_m"):
        out[col] = snapped[col].to_numpy()
    return out


def _copy_hotspots(
    conn: psycopg.Connection, rows: pd.DataFrame, lon: np.ndarray, lat: np.ndarray, import_id: int
) -> None:
    """COPY the rows, geometries as hex EWKB in EPSG:4326 and UTM 48S."""
    x, y = Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True).transform(lon, lat)
    geom = _ewkb(lon, lat, 4326)
    geom_m = _ewkb(np.asarray(x), np.asarray(y), 32748)
    cols = [*_HOTSPOT_COLUMNS, "snap_level", "snap_method", "snap_distance_m", "source_row"]
    with conn.cursor() as cur:
        with cur.copy(
            "COPY layer_jakwifi ({}, source, geom, geom_m, import_id) FROM STDIN".format(
                ", ".join(cols)
            )
        ) as copy:
            for rec, src, g, gm in zip(
                rows[cols].itertuples(index=False, name=None),
                rows["source"],
                geom,
                geom_m,
                strict=True,
            ):
                copy.write_row([_plain(v) for v in rec] + [json.dumps(src), g, gm, import_id])


def _ewkb(x: np.ndarray, y: np.ndarray, srid: int) -> list[str]:
    """Hex EWKB of points with an SRID."""
    if len(x) == 0:
        return []
    pts = shapely.set_srid(shapely.points(np.asarray(x, float), np.asarray(y, float)), srid)
    return list(shapely.to_wkb(pts, hex=True, include_srid=True))


def _snap_counts(snapped: pd.DataFrame) -> dict[str, int]:
    """``rw_inside``, ``rw_nearest``, ``kelurahan_inside``, ... and ``outside``."""
    key = np.where(
        snapped["snap_level"].isna(),
        "outside",
        snapped["snap_level"].astype(str) + "_" + snapped["snap_method"].astype(str),
    )
    return {str(k): int(v) for k, v in pd.Series(key).value_counts().sort_index().items()}


def _differences(rows: pd.DataFrame) -> dict[str, int]:
    """How many stored codes differ from codes the file gave (only where it gave one)."""
    out = {}
    for col in ("kota_code", "kelurahan_code", "rw_code"):
        given = rows["source"].map(lambda s, c=col: s.get(c))
        has = given.notna()
        out[col] = int((has & (given != rows[col])).sum())
    return out


def _outside(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Hotspots no RW or kelurahan took (kept, flagged)."""
    sel = rows[rows["snap_level"].isna()]
    return [
        {"id": r.id, "row": int(r.source_row), "distance_m": round(float(r.snap_distance_m), 1)}
        for r in sel.itertuples(index=False)
    ]


def _jakwifi_report_text(
    head: str, summary: Mapping[str, Any], outside: list[dict[str, Any]]
) -> str:
    from layers.jakwifi import KOTA_NAMES

    lines = [head, "Stored (codes from snapping to the current boundaries):"]
    for code, n in summary["per_kota"].items():
        lines.append(f"  {KOTA_NAMES.get(code, code):<20} {n:>6}")
    lines.append("  snapping: " + ", ".join(f"{k} {v}" for k, v in summary["snap"].items()))
    diff = summary["differs_from_file"]
    lines.append(
        "  codes differing from the file's: " + ", ".join(f"{k} {v}" for k, v in diff.items())
    )
    if outside:
        lines.append(f"Outside every RW and kelurahan ({len(outside)}, kept and flagged):")
        lines.extend(f"  {o['id']} (row {o['row']}): {o['distance_m']} m away" for o in outside)
    return "\n".join(lines)


# --------------------------------------------------------------------------- coverage


def refresh_coverage(conn: psycopg.Connection, *, import_id: int | None = None) -> dict[str, int]:
    """Recompute ``jakwifi_coverage`` for every RW and kelurahan from the stored hotspots.

    Runs in the caller's transaction (a savepoint when one is open).  See the
    SQL function ``petalapor_jakwifi_coverage`` for the definitions.

    Returns
    -------
    dict
        Units written per level.
    """
    counts = {}
    with conn.transaction():
        if import_id is None:
            row = _q(
                conn, "SELECT id FROM layer_imports WHERE layer = 'jakwifi' AND is_current"
            ).fetchone()
            import_id = None if row is None else row[0]
        # A top-level SELECT (not INSERT ... SELECT) may run the per-unit shares in
        # parallel workers; the boundaries heap is small, so allow a parallel scan of it.
        for name, value in _COVERAGE_SETTINGS.items():
            _q(conn, "SELECT set_config(%s, %s, true)", (name, value))
        _q(conn, "DELETE FROM jakwifi_coverage")
        for unit in COVERAGE_UNITS:
            rows = _q(
                conn, "SELECT * FROM petalapor_jakwifi_coverage(%s)", (unit,), prepare=False
            ).fetchall()
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY jakwifi_coverage (unit, code, name, kelurahan_code, kecamatan_code, "
                    "kota_code, area_km2, n_hotspots, per_km2, nearest_m, nearest_id, share_100m, "
                    "share_300m, import_id) FROM STDIN"
                ) as copy:
                    for rec in rows:
                        copy.write_row([unit, *rec, import_id])
            counts[unit] = len(rows)
    return counts


def coverage_rows(
    conn: psycopg.Connection, unit: str, *, code: str | None = None
) -> list[dict[str, Any]]:
    """Stored coverage rows of one unit (``rw`` or ``kelurahan``), sorted by code."""
    _check_unit(unit)
    query = (
        "SELECT unit, code, name, kelurahan_code, kecamatan_code, kota_code, area_km2, n_hotspots, "
        "per_km2, nearest_m, nearest_id, share_100m, share_300m, import_id, computed_at "
        "FROM jakwifi_coverage WHERE unit = %(unit)s"
        + (" AND code = %(code)s" if code else "")
        + " ORDER BY code"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"unit": unit, "code": code}).fetchall()


def coverage_geojson(
    conn: psycopg.Connection, unit: str, *, code: str | None = None, simplify_m: float | None = None
) -> str:
    """Coverage of one unit as a GeoJSON FeatureCollection (unit polygons, EPSG:4326)."""
    _check_unit(unit)
    geom = (
        "ST_Transform(ST_SimplifyPreserveTopology(b.geom_m, %(tol)s), 4326)"
        if simplify_m
        else "b.geom"
    )
    query = f"""
        SELECT json_build_object('type', 'FeatureCollection', 'features',
               coalesce(json_agg(json_build_object(
                   'type', 'Feature', 'id', c.code,
                   'geometry', ST_AsGeoJSON({geom}, 6)::json,
                   'properties', json_build_object(
                       'unit', c.unit, 'code', c.code, 'name', c.name,
                       'kelurahan_code', c.kelurahan_code, 'kecamatan_code', c.kecamatan_code,
                       'kota_code', c.kota_code, 'area_km2', c.area_km2,
                       'n_hotspots', c.n_hotspots, 'per_km2', c.per_km2,
                       'nearest_m', c.nearest_m, 'nearest_id', c.nearest_id,
                       'share_100m', c.share_100m, 'share_300m', c.share_300m)
               ) ORDER BY c.code), '[]'::json))::text
        FROM jakwifi_coverage c
        JOIN boundaries b ON b.level = c.unit AND b.code = c.code
        WHERE c.unit = %(unit)s {"AND c.code = %(code)s" if code else ""}
    """
    return _q(conn, query, {"unit": unit, "code": code, "tol": simplify_m}).fetchone()[0]


def _check_unit(unit: str) -> None:
    if unit not in COVERAGE_UNITS:
        raise InvalidParameterError(f"unit must be one of {COVERAGE_UNITS}, got {unit!r}")


# --------------------------------------------------------------------------- ISPU


def import_ispu(
    dsn: str, path: str | Path | None = None, *, stations: str | Path | None = None
) -> LayerImport:
    """Import the SPKU stations and the daily ISPU readings, replacing the stored ones.

    Parameters
    ----------
    dsn
        Database URL (migrated).
    path
        ISPU CSV (``ispu_dki_all.csv`` shape); default ``<shared data>/ispu/ispu_dki_all.csv``.
    stations
        Station list; default ``<shared data>/ispu/stations.csv``.

    Returns
    -------
    LayerImport
        Its ``report_text`` lists every quarantined row and every disagreement
        between derived and published values; the same lists are stored in
        ``layer_imports.report`` (``quarantine``, ``disagreements``).

    Raises
    ------
    DataError
        Missing file or column, a bad station list; nothing is stored.

    See Also
    --------
    layers.ispu.read_ispu_csv, compute_report_ispu
    """
    from layers.ispu import default_data_dir, load_stations, read_ispu_csv

    started = time.perf_counter()
    path = Path(path) if path is not None else default_data_dir() / "ispu_dki_all.csv"
    stations_path = Path(stations) if stations is not None else default_data_dir() / "stations.csv"
    st = load_stations(stations_path)
    result = read_ispu_csv(path, stations=st["station_id"])
    raw = raw_records(path)
    summary = {
        **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.summary.items()},
        "category_agreement": round(result.category_agreement, 6),
        "stations": len(st),
        "stations_file": str(stations_path),
        "first_date": _iso(result.readings["date"].min()),
        "last_date": _iso(result.readings["date"].max()),
    }
    report = {
        "quarantine": _records(result.quarantine),
        "disagreements": _records(result.disagreements),
    }
    text = result.render()
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            _q(conn, "SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            _q(conn, "LOCK TABLE ispu_readings, layer_ispu_stations IN EXCLUSIVE MODE")
            import_id = _new_import(conn, "ispu", str(path), False, summary, report, text)
            _store_quarantine(conn, import_id, "ispu", result.quarantine, raw)
            _q(conn, "DELETE FROM ispu_readings")
            _q(conn, "DELETE FROM layer_ispu_stations")
            _copy_stations(conn, st, import_id)
            _copy_readings(conn, result.readings, import_id)
        _q(conn, "ANALYZE ispu_readings")
    return _timed(LayerImport(import_id, "ispu", summary, text), started)


def _copy_stations(conn: psycopg.Connection, st: gpd.GeoDataFrame, import_id: int) -> None:
    geoms = _ewkb(st.geometry.x.to_numpy(), st.geometry.y.to_numpy(), 4326)
    kel = st["kelurahan_id"] if "kelurahan_id" in st else pd.Series([None] * len(st))
    with conn.cursor() as cur:
        with cur.copy(
            "COPY layer_ispu_stations (station_id, name, location_method, kelurahan_id, geom, "
            "import_id) FROM STDIN"
        ) as copy:
            for sid, name, method, kid, g in zip(
                st["station_id"], st["name"], st["location_method"], kel, geoms, strict=True
            ):
                copy.write_row([sid, name, method, _none(kid), g, import_id])


def _copy_readings(conn: psycopg.Connection, readings: pd.DataFrame, import_id: int) -> None:
    r = readings.rename(columns={"row": "source_row"}).copy()
    r["date"] = r["date"].dt.date
    values = r[list(_READING_COLUMNS)].astype(object).where(r[list(_READING_COLUMNS)].notna(), None)
    with conn.cursor() as cur:
        with cur.copy(
            "COPY ispu_readings ({}, import_id) FROM STDIN".format(", ".join(_READING_COLUMNS))
        ) as copy:
            for rec in values.itertuples(index=False, name=None):
                copy.write_row([_plain(v) for v in rec] + [import_id])


def read_stations(conn: psycopg.Connection) -> gpd.GeoDataFrame:
    """The stored stations as :func:`layers.ispu.load_stations` returns them."""
    rows = _q(
        conn,
        "SELECT station_id, name, location_method, kelurahan_id, ST_X(geom), ST_Y(geom) "
        "FROM layer_ispu_stations ORDER BY station_id",
    ).fetchall()
    frame = pd.DataFrame(
        rows, columns=["station_id", "name", "location_method", "kelurahan_id", "lon", "lat"]
    )
    return gpd.GeoDataFrame(
        frame, geometry=gpd.points_from_xy(frame["lon"], frame["lat"]), crs="EPSG:4326"
    )


def read_readings(
    conn: psycopg.Connection,
    *,
    station: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> pd.DataFrame:
    """Stored readings (``date`` as datetime64), by station and date range (inclusive)."""
    where, params = ["true"], {}
    if station:
        where.append("station_id = %(station)s")
        params["station"] = station.strip().upper()
    if start:
        where.append("date >= %(start)s")
        params["start"] = start
    if end:
        where.append("date <= %(end)s")
        params["end"] = end
    cols = ", ".join(_READING_COLUMNS)
    rows = _q(
        conn,
        f"SELECT {cols} FROM ispu_readings WHERE {' AND '.join(where)} ORDER BY date, station_id",
        params,
    ).fetchall()
    frame = pd.DataFrame(rows, columns=list(_READING_COLUMNS))
    frame["date"] = pd.to_datetime(frame["date"])
    for col in ("pm25", "pm10", "so2", "co", "o3", "no2", "ispu", "published_max"):
        frame[col] = frame[col].astype(float)
    return frame


def reading_rows(
    conn: psycopg.Connection,
    *,
    station: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Stored readings as JSON-ready dicts (NULL stays None), by date then station.

    Raises
    ------
    NotFoundError
        ``station`` is not a stored station (the message lists the known ones).
    """
    if station:
        station = station.strip().upper()
        known = [r[0] for r in _q(conn, "SELECT station_id FROM layer_ispu_stations ORDER BY 1")]
        if station not in known:
            raise NotFoundError(f"no ISPU station {station!r}; stored stations: {known}")
    where, params = ["true"], {"limit": int(limit)}
    for cond, key, value in (
        ("station_id = %(station)s", "station", station),
        ("date >= %(start)s", "start", start),
        ("date <= %(end)s", "end", end),
    ):
        if value:
            where.append(cond)
            params[key] = value
    cols = ", ".join(c for c in _READING_COLUMNS if c != "source_row")
    query = (
        f"SELECT {cols} FROM ispu_readings WHERE {' AND '.join(where)} "
        "ORDER BY date, station_id LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def sync_registry(conn: psycopg.Connection) -> list[str]:
    """Make the layer registry describe what is stored; returns the layers re-registered.

    The ``jakwifi`` description (title, attribution, licence) says SYNTHETIC
    until a real export is imported.  Tile servers call this at start and when
    a layer's table changed (migration 0010), so the tile catalogue and
    TileJSON attribution follow an import made by any process.
    """
    from layers import registry
    from layers.jakwifi import jakwifi_layer

    imp = current_import(conn, "jakwifi")
    synthetic = True if imp is None else bool(imp["synthetic"])
    if registry.get("jakwifi").synthetic == synthetic:
        return []
    registry.register(jakwifi_layer(synthetic=synthetic), replace=True)
    return ["jakwifi"]


def current_import(conn: psycopg.Connection, layer: str) -> dict[str, Any] | None:
    """The current ``layer_imports`` row of a layer (``jakwifi``, ``ispu``), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, layer, source_file, synthetic, started_at, finished_at, summary, report, "
            "report_text FROM layer_imports WHERE layer = %s AND is_current",
            (layer,),
        ).fetchone()


# --------------------------------------------------------------------------- surfaces


@dataclass(frozen=True)
class SurfaceRecord:
    """One stored ISPU surface (a row of ``ispu_surfaces``)."""

    id: int
    path: Path
    value: str
    period_start: dt.date
    period_end: dt.date
    power: float
    cell_size: float
    n_stations: int
    stations: list[dict[str, Any]]
    is_current: bool

    @property
    def period(self) -> str:
        """``YYYY-MM`` for a calendar month, else ``start/end``."""
        start, end = pd.Timestamp(self.period_start), pd.Timestamp(self.period_end)
        month = start.to_period("M")
        if start == month.start_time and end == month.end_time.normalize():
            return str(month)
        return f"{self.period_start}/{self.period_end}"


def default_period(readings: pd.DataFrame) -> pd.Period:
    """The last complete calendar month of the readings (as ``layers.surface.default_surface``)."""
    if readings.empty:
        raise NotFoundError("no ISPU readings stored: run `petalapor layers import-ispu`")
    last = readings["date"].max()
    month = last.to_period("M")
    return month if last == month.end_time.normalize() else month - 1


def surface_path(
    raster_dir: Path, value: str, start: Any, end: Any, power: float, cell: float
) -> Path:
    """``ispu_<value>_<start>_<end>.tif`` (plus ``_p<power>_c<cell>`` when not 2 / 100)."""
    suffix = "" if (power, cell) == (2.0, 100.0) else f"_p{power:g}_c{cell:g}"
    return (
        Path(raster_dir)
        / f"ispu_{value}_{pd.Timestamp(start).date()}_{pd.Timestamp(end).date()}{suffix}.tif"
    )


def write_ispu_surface(
    dsn: str,
    *,
    period: Any = None,
    power: float = 2.0,
    cell_size: float = 100.0,
    value: str = "ispu",
    path: str | Path | None = None,
    raster_dir: str | Path | None = None,
    make_current: bool = True,
) -> SurfaceRecord:
    """Write the IDW surface of the stored readings as a COG and record it.

    Parameters
    ----------
    dsn
        Database URL with ISPU readings and boundaries stored.
    period
        ``"2024-12"``, ``"2024"``, a day or ``(start, end)``; default the last
        complete month of the readings.
    power, cell_size, value
        As for :func:`layers.surface.write_surface`.
    path
        Output file; default :func:`surface_path` under ``raster_dir``
        (default ``var/rasters``).
    make_current
        Serve it as the default surface of ``/layers/ispu_surface/...``.

    Returns
    -------
    SurfaceRecord
    """
    from layers.surface import period_bounds, write_surface
    from petalapor.settings import PathSettings

    with psycopg.connect(dsn) as conn:
        readings = read_readings(conn)
        stations = read_stations(conn)
        if readings.empty or stations.empty:
            raise NotFoundError("no ISPU readings stored: run `petalapor layers import-ispu` first")
        city = boundary_frames(conn, ("kelurahan",))["kelurahan"]
        period = default_period(readings) if period is None else period
        start, end = period_bounds(period)
        raster_dir = Path(raster_dir) if raster_dir is not None else PathSettings().var / "rasters"
        final = (
            Path(path)
            if path is not None
            else surface_path(raster_dir, value, start, end, power, cell_size)
        )
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.tif")
        try:
            info = write_surface(
                readings,
                stations,
                city,
                tmp,
                period=period,
                value=value,
                power=power,
                cell_size=cell_size,
            )
            st = [
                {"station_id": s, "value": round(float(v), 3), "n_days": int(n)}
                for s, v, n in zip(
                    info.stations["station_id"],
                    info.stations["value"],
                    info.stations["n_days"],
                    strict=True,
                )
            ]
            with conn.transaction():
                _q(conn, "SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                _q(conn, "DELETE FROM ispu_surfaces WHERE path = %s", (str(final.resolve()),))
                if make_current:
                    _q(conn, "UPDATE ispu_surfaces SET is_current = false WHERE is_current")
                sid = _q(
                    conn,
                    "INSERT INTO ispu_surfaces (value, period_start, period_end, power, cell_size, "
                    "path, n_stations, stations, is_current) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        value,
                        start.date(),
                        end.date(),
                        power,
                        cell_size,
                        str(final.resolve()),
                        len(st),
                        json.dumps(st),
                        make_current,
                    ),
                ).fetchone()[0]
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return SurfaceRecord(
        sid,
        final.resolve(),
        value,
        start.date(),
        end.date(),
        power,
        cell_size,
        len(st),
        st,
        make_current,
    )


def find_surface(
    conn: psycopg.Connection, period: str | None = None, *, raster_dir: Path | None = None
) -> SurfaceRecord:
    """The surface to serve: the current one, or the latest of a period (``YYYY-MM`` ...).

    A recorded file that has moved is looked up by name in ``raster_dir``.

    Raises
    ------
    NotFoundError
        No surface recorded (for that period), or its file is missing.
    InvalidParameterError
        ``period`` cannot be read.
    """
    from layers.surface import period_bounds

    cols = (
        "id, path, value, period_start, period_end, power, cell_size, n_stations, stations, "
        "is_current"
    )
    if period:
        start, end = period_bounds(period)
        row = _q(
            conn,
            f"SELECT {cols} FROM ispu_surfaces "
            "WHERE value = 'ispu' AND period_start = %s AND period_end = %s "
            "ORDER BY is_current DESC, (power = 2 AND cell_size = 100) DESC, created_at DESC "
            "LIMIT 1",
            (start.date(), end.date()),
        ).fetchone()
        what = f"for period {period}"
    else:
        row = _q(conn, f"SELECT {cols} FROM ispu_surfaces WHERE is_current").fetchone()
        what = "current"
    if row is None:
        hint = f" --period {period}" if period else ""
        raise NotFoundError(f"no ISPU surface {what}: run `petalapor layers surface{hint}`")
    rec = SurfaceRecord(row[0], Path(row[1]), *row[2:])
    if (
        not rec.path.exists()
        and raster_dir is not None
        and (Path(raster_dir) / rec.path.name).exists()
    ):
        rec = dataclasses.replace(rec, path=Path(raster_dir) / rec.path.name)
    if not rec.path.exists():
        raise NotFoundError(
            f"the ISPU surface file {rec.path} is missing: run `petalapor layers surface`"
        )
    return rec


# --------------------------------------------------------------------------- exposure


def compute_report_ispu(
    dsn: str,
    *,
    only_missing: bool = False,
    power: float = 2.0,
    freq: str = "M",
    climatology: bool = True,
) -> dict[str, Any]:
    """Store the ISPU at each report's place and day in ``report_ispu``.

    For each report: its local day (Asia/Jakarta); ``ispu`` is the IDW
    (``power``, UTM metres) of the station means over the ``freq`` period
    holding that day (a calendar month by default) at the report's point;
    ``ispu_day`` is the same for the day itself.  Where no station reported in
    the report's month (the DKI file ends in February 2025) and ``climatology``
    is on, ``ispu`` is the IDW of the stations' means over the same calendar
    month of every year, flagged by ``period = 'clim-MM'``; ``ispu_day`` stays
    NULL.  See :func:`layers.surface.idw_at_points`.

    Parameters
    ----------
    dsn
        Database URL with reports and ISPU readings stored.
    only_missing
        Only reports without a ``report_ispu`` row (what ``petalapor up`` does);
        otherwise every row is recomputed.
    climatology
        Fill months without readings from the same calendar month of all years.
    power, freq
        IDW exponent; pandas period of the main value (``"M"``, ``"W"``, ``"D"``).

    Returns
    -------
    dict
        ``reports``, ``with_value`` (non-NULL ``ispu``), ``with_day_value``, ``seconds``.
    """
    from layers.ispu import categorise
    from layers.surface import idw_at_points

    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        readings = read_readings(conn)
        stations = read_stations(conn)
        imp = current_import(conn, "ispu")
        if readings.empty or imp is None:
            raise NotFoundError("no ISPU readings stored: run `petalapor layers import-ispu` first")
        missing = (
            " AND NOT EXISTS (SELECT 1 FROM report_ispu x WHERE x.report_id = r.id)"
            if only_missing
            else ""
        )
        rows = _q(
            conn,
            "SELECT r.id, ST_X(r.geom), ST_Y(r.geom), (r.created_at AT TIME ZONE %s)::date "
            f"FROM reports r WHERE true{missing} ORDER BY r.id",
            (TIMEZONE,),
        ).fetchall()
        frame = pd.DataFrame(rows, columns=["report_id", "lon", "lat", "day"])
        day = pd.to_datetime(frame["day"])
        value = idw_at_points(
            readings, stations, frame["lon"], frame["lat"], day, freq=freq, power=power
        )
        on_day = idw_at_points(
            readings, stations, frame["lon"], frame["lat"], day, freq="D", power=power
        )
        periods = day.dt.to_period(freq)
        has = readings.dropna(subset=["ispu"])
        n_by_period = has.groupby(has["date"].dt.to_period(freq))["station_id"].nunique()
        day_station = has.groupby(has["date"].dt.date)["station_id"].agg(
            lambda s: ",".join(sorted(s))
        )
        frame["period"] = periods.astype(str)
        frame["n_stations"] = periods.map(n_by_period).fillna(0).astype(int)
        value = np.asarray(value, dtype=float)
        if climatology and freq == "M":
            _fill_climatology(frame, value, readings, stations, day, power)
        frame["ispu"] = value
        frame["category"] = categorise(value)
        frame["ispu_day"] = on_day
        frame["day_station"] = frame["day"].map(day_station)
        with conn.transaction():
            if not only_missing:
                _q(conn, "DELETE FROM report_ispu")
            _copy_report_ispu(conn, frame, power, imp["id"])
    return {
        "reports": len(frame),
        "with_value": int(np.isfinite(value).sum()),
        "with_day_value": int(np.isfinite(on_day).sum()),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _fill_climatology(
    frame: pd.DataFrame,
    value: np.ndarray,
    readings: pd.DataFrame,
    stations: Any,
    day: pd.Series,
    power: float,
) -> None:
    """Fill NaN ``value`` rows with the same-calendar-month IDW over all years (in place)."""
    from layers.surface import idw_at_points

    gap = ~np.isfinite(value)
    if not gap.any():
        return
    # Fold every year onto 2000 (a leap year, so 29 February survives): a monthly
    # period then spans that calendar month of all years.
    dates = pd.to_datetime(readings["date"])
    folded = readings.assign(
        date=pd.to_datetime({"year": 2000, "month": dates.dt.month, "day": dates.dt.day})
    )
    when = day[gap]
    when = pd.to_datetime({"year": 2000, "month": when.dt.month, "day": when.dt.day})
    value[gap] = idw_at_points(
        folded, stations, frame["lon"][gap], frame["lat"][gap], when, freq="M", power=power
    )
    has = folded.dropna(subset=["ispu"])
    n_by_month = has.groupby(has["date"].dt.month)["station_id"].nunique()
    filled = gap & np.isfinite(value)
    months = day[filled].dt.month
    frame.loc[filled, "period"] = "clim-" + months.map("{:02d}".format)
    frame.loc[filled, "n_stations"] = months.map(n_by_month).fillna(0).astype(int).to_numpy()


def _copy_report_ispu(
    conn: psycopg.Connection, frame: pd.DataFrame, power: float, import_id: int
) -> None:
    cols = [
        "report_id",
        "day",
        "period",
        "ispu",
        "category",
        "n_stations",
        "ispu_day",
        "day_station",
    ]
    with conn.cursor() as cur:
        with cur.copy(
            "COPY report_ispu (report_id, report_date, period, ispu, category, n_stations, "
            "ispu_day, day_station, power, import_id) FROM STDIN"
        ) as copy:
            for rec in frame[cols].itertuples(index=False, name=None):
                copy.write_row([_none(_plain(v)) for v in rec] + [power, import_id])


# --------------------------------------------------------------------------- status


def layer_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of the layer tables."""
    out = {}
    for table in (
        "layer_jakwifi",
        "layer_ispu_stations",
        "ispu_readings",
        "jakwifi_coverage",
        "report_ispu",
        "ispu_surfaces",
    ):
        out[table] = _q(conn, f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
    return out


# --------------------------------------------------------------------------- helpers


def raw_records(path: str | Path) -> dict[int, dict[str, Any]]:
    """Every record of a file as read, by 1-based data row (for the quarantine's ``raw``).

    CSV: cells as text (a malformed record as ``{"record": ...}``); vector
    files: attributes and the geometry as WKT.
    """
    from layers.ispu import read_csv_records

    path = Path(path)
    if path.suffix.lower() in (".csv", ".txt"):
        table = read_csv_records(path)
        out = {
            int(r): rec for r, rec in zip(table.rows, table.frame.to_dict("records"), strict=True)
        }
        for rec in table.malformed.itertuples(index=False):
            out[int(rec.row)] = {"record": rec.value}
        return out
    gdf = gpd.read_file(path, engine="pyogrio")
    attrs = pd.DataFrame(gdf.drop(columns=gdf.geometry.name)).astype(object)
    attrs = attrs.where(attrs.notna(), None)
    wkt = [None if g is None else g.wkt for g in gdf.geometry]
    return {
        i + 1: {**{k: _jsonable(v) for k, v in rec.items()}, "geometry": w}
        for i, (rec, w) in enumerate(zip(attrs.to_dict("records"), wkt, strict=True))
    }


def _valid_rows(raw: Mapping[int, Any], quarantine: pd.DataFrame, n_valid: int) -> np.ndarray:
    """Row numbers of the valid rows, in file order (every row not quarantined)."""
    bad = set(int(r) for r in quarantine["row"])
    rows = np.array(sorted(r for r in raw if r not in bad), dtype=int)
    if len(rows) != n_valid:
        raise DataError(
            f"internal: {n_valid} valid rows but {len(rows)} unquarantined rows in the file"
        )
    return rows


def _new_import(
    conn: psycopg.Connection,
    layer: str,
    source_file: str,
    synthetic: bool,
    summary: Mapping[str, Any],
    report: Mapping[str, Any],
    text: str,
) -> int:
    """Insert the ``layer_imports`` row as the layer's current import."""
    _q(
        conn,
        "UPDATE layer_imports SET is_current = false WHERE layer = %s AND is_current",
        (layer,),
    )
    return _q(
        conn,
        "INSERT INTO layer_imports (layer, source_file, synthetic, is_current, summary, report, "
        "report_text, finished_at) VALUES (%s, %s, %s, true, %s, %s, %s, now()) RETURNING id",
        (
            layer,
            source_file,
            synthetic,
            json.dumps(summary, default=_jsonable),
            json.dumps(report, default=_jsonable),
            text,
        ),
    ).fetchone()[0]


def _store_quarantine(
    conn: psycopg.Connection,
    import_id: int,
    layer: str,
    quarantine: pd.DataFrame | None,
    raw: Mapping[int, dict[str, Any]],
) -> None:
    """One ``layer_quarantine`` row per problem, with the raw record."""
    if quarantine is None or quarantine.empty:
        return
    has_line = "line" in quarantine.columns
    with conn.cursor() as cur:
        with cur.copy(
            "COPY layer_quarantine (import_id, layer, source_file, row_number, line, field, value, "
            "reason, raw) FROM STDIN"
        ) as copy:
            for q in quarantine.itertuples(index=False):
                row = int(q.row)
                copy.write_row(
                    [
                        import_id,
                        layer,
                        q.file,
                        row,
                        int(q.line) if has_line else None,
                        q.field,
                        q.value,
                        q.reason,
                        json.dumps(raw.get(row, {}), default=_jsonable),
                    ]
                )


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """A frame as JSON-ready records."""
    if frame is None or frame.empty:
        return []
    return [{k: _jsonable(v) for k, v in rec.items()} for rec in frame.to_dict("records")]


def _jsonable(value: Any) -> Any:
    """numpy / pandas scalars to JSON values (NaN to None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, dt.date):  # dates, datetimes and pandas Timestamps
        return value.isoformat()
    return value


def _iso(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).date().isoformat()


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, NaN to None, for COPY."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _none(value: Any) -> Any:
    """Empty / missing values to None."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _q(conn: psycopg.Connection, query: Any, params: Any = None, **kwargs: Any) -> psycopg.Cursor:
    """Execute on a tuple-row cursor, whatever the connection's row factory (the API's: dicts)."""
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(query, params, **kwargs)
    return cur


def _timed(result: LayerImport, started: float) -> LayerImport:
    return LayerImport(
        result.import_id,
        result.layer,
        result.summary,
        result.report_text,
        round(time.perf_counter() - started, 2),
        result.extra,
    )
