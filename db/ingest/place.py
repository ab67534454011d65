"""Placing valid rows: RW/kelurahan codes by the snapping rule, and H3 cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely

from db.boundaries import current_set
from db.ingest.encode import _densify
from db.ingest.summary import ImportSummary, _Timer
from db.ingest.validate import Prepared
from db.reports import SERVICE_AREA_MARGIN_DEG
from gis.hexes import RESOLUTIONS, points_to_cells
from gis.snap import DEFAULT_TOLERANCE_M, METHODS, SnapIndex
from petalapor.errors import ConfigError


@dataclass
class Places:
    """RW and kelurahan polygons prepared for snapping, and the service area."""

    rw: gpd.GeoDataFrame
    kelurahan: gpd.GeoDataFrame
    tolerance_m: float = DEFAULT_TOLERANCE_M
    _rw_index: SnapIndex | None = None
    _kel_index: SnapIndex | None = None
    _code_tables: dict[str, tuple[np.ndarray, pd.Index]] | None = None

    @property
    def service_area(self) -> tuple[float, float, float, float]:
        """Kelurahan extent grown by :data:`SERVICE_AREA_MARGIN_DEG` (as ``db.reports``)."""
        minx, miny, maxx, maxy = self.kelurahan.total_bounds
        m = SERVICE_AREA_MARGIN_DEG
        return (float(minx - m), float(miny - m), float(maxx + m), float(maxy + m))

    def expect(self, rows: int) -> None:
        """Size the RW lookup grid for an import of ``rows`` points.

        The grid only trades build time for query time (results are identical):
        fine cells pay off for large imports, coarse cells for small ones.
        """
        cell_m = _cell_size(rows)
        if self._rw_index is None or self._rw_index.cell_m > 2 * cell_m:
            self._rw_index = SnapIndex.from_frame(
                self.rw, tolerance_m=self.tolerance_m, cell_m=cell_m
            )

    def place(self, lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
        """Codes, snap method and distance per point, by the snapping rule.

        The four codes, ``snap_method`` and ``snap_level`` (``"rw"`` or
        ``"kelurahan"``: the rule that placed the point) come as categorical
        Series (codes missing where no polygon matched); ``snap_distance_m`` as
        float64.
        """
        if self._rw_index is None:
            self.expect(lon.size)
        res = self._rw_index.snap(lon, lat)
        rw_row, kel_row = res.row, np.full(lon.size, -1, dtype=np.int64)
        method, distance = _method_codes(res.method), res.distance_m.copy()
        miss = np.flatnonzero(rw_row < 0)
        if miss.size:
            if self._kel_index is None:  # coarse grid: few points go here, build fast
                self._kel_index = SnapIndex.from_frame(
                    self.kelurahan, tolerance_m=self.tolerance_m, cell_m=80.0
                )
            kel = self._kel_index.snap(lon[miss], lat[miss])
            method[miss], distance[miss], kel_row[miss] = (
                _method_codes(kel.method),
                kel.distance_m,
                kel.row,
            )
        # one lookup per code over the RW rows, then the kelurahan rows
        n_rw = len(self.rw)
        pick = np.where(rw_row >= 0, rw_row, np.where(kel_row >= 0, n_rw + kel_row, -1))
        out: dict[str, Any] = {"rw_code": self._categorical("code", rw_row)}
        for col in ("kelurahan_code", "kecamatan_code", "kota_code"):
            out[col] = self._categorical(col, pick)
        out["snap_method"] = pd.Series(pd.Categorical.from_codes(method, _METHODS))
        out["snap_distance_m"] = distance
        level = (rw_row < 0).astype(np.int8)
        out["snap_level"] = pd.Series(pd.Categorical.from_codes(level, _LEVELS))
        return out

    def _categorical(self, col: str, pick: np.ndarray) -> pd.Series:
        """A code column at ``pick`` (RW rows, then kelurahan rows; -1 missing)."""
        if self._code_tables is None:
            tables = {}
            for name in ("code", "kelurahan_code", "kecamatan_code", "kota_code"):
                values = [*self.rw[name], *(self.kelurahan[name] if name != "code" else [])]
                codes, categories = pd.factorize(pd.Series(values, dtype="str"))
                tables[name] = (np.append(codes, -1), pd.Index(categories, dtype="str"))
            self._code_tables = tables
        codes, categories = self._code_tables[col]
        return pd.Series(pd.Categorical.from_codes(codes[pick], categories))


#: Snap methods and levels as categories (codes 0, 1, 2 as in gis.snap.METHODS).
_METHODS = pd.Index(list(METHODS), dtype="str")
_LEVELS = pd.Index(["rw", "kelurahan"], dtype="str")


def _method_codes(methods: np.ndarray) -> np.ndarray:
    """gis.snap method names as codes into :data:`_METHODS`."""
    codes = np.full(methods.shape, 2, dtype=np.int8)
    codes[methods == METHODS[0]] = 0
    codes[methods == METHODS[1]] = 1
    return codes


def _cell_size(rows: int) -> float:
    """Lookup-grid cell (metres) for snapping this many points.

    Build time falls with the cell size, lookups per point rise slowly (RW
    polygons, 1M points, s build + lookup: 40 m ~0.1 + 0.25; 25 m and 50 m
    cost 10-20 % more in all, 80 m ~0.1 + 0.45).
    """
    return 40.0 if rows >= 500_000 else 80.0


_PLACES_CACHE: dict[tuple[str, str, float], Places] = {}


def places_from_db(conn: psycopg.Connection, tolerance_m: float = DEFAULT_TOLERANCE_M) -> Places:
    """The current boundary set's RW and kelurahan polygons (cached per set).

    Raises
    ------
    ConfigError
        No boundaries are loaded.
    """
    bset = current_set(conn)
    if bset is None:
        raise ConfigError("no boundaries loaded; run `petalapor boundaries import` first")
    key = (conn.info.dsn, bset["fingerprint"], float(tolerance_m))
    if key not in _PLACES_CACHE:
        frames = {}
        for level in ("rw", "kelurahan"):
            cur = conn.execute(
                "SELECT code, kelurahan_code, kecamatan_code, kota_code, ST_AsBinary(geom) "
                "FROM boundaries WHERE level = %s ORDER BY code",
                (level,),
            )
            data = cur.fetchall()
            names = ["code", "kelurahan_code", "kecamatan_code", "kota_code"]
            frame = pd.DataFrame([r[:4] for r in data], columns=names, dtype=object)
            geoms = shapely.from_wkb([bytes(r[4]) for r in data])
            frames[level] = gpd.GeoDataFrame(frame, geometry=geoms, crs="EPSG:4326")
        if len(frames["kelurahan"]) == 0:
            raise ConfigError(
                "no kelurahan boundaries loaded; run `petalapor boundaries import` first"
            )
        _PLACES_CACHE.clear()  # one set in use at a time
        _PLACES_CACHE[key] = Places(frames["rw"], frames["kelurahan"], float(tolerance_m))
    return _PLACES_CACHE[key]


def _placed_chunk(
    prepared: Prepared, places: Places, summary: ImportSummary, timer: _Timer
) -> pd.DataFrame:
    """The batch's valid rows with codes, snap method/distance and H3 cells."""
    chunk = prepared.frame
    if prepared.valid.size != len(chunk):
        chunk = chunk.take(prepared.valid).reset_index(drop=True)
    lon, lat = chunk["lon"].to_numpy(), chunk["lat"].to_numpy()
    with timer("snap"):
        placed = places.place(lon, lat)
    with timer("h3"):
        cells = points_to_cells(lon, lat, RESOLUTIONS)
    with timer("encode"):
        columns = {col: chunk[col] for col in chunk.columns}
        columns.update((k, v) for k, v in placed.items() if k != "snap_level")
        columns.update((f"h3_r{r}", c) for r, c in cells.items())
        columns["attrs"] = _with_snap_level(chunk["attrs"], placed["snap_level"])
        chunk = pd.DataFrame(columns)
    counts = np.bincount(placed["snap_method"].cat.codes, minlength=len(METHODS))
    for method, count in zip(METHODS, counts.tolist(), strict=True):
        summary.snap[method] += count
    return chunk


def _with_snap_level(attrs: pd.Series, level: pd.Series) -> pd.Series:
    """attrs JSON text with ``snap_level`` added (as the single-report API stores it).

    ``level`` is categorical; categorical attrs give categorical output, computed
    once per (attrs, level) pair.
    """
    codes = attrs.cat.codes.to_numpy() if isinstance(attrs.dtype, pd.CategoricalDtype) else None
    if codes is not None and (codes >= 0).all():
        levels, level_codes = level.cat.categories, level.cat.codes.to_numpy()
        key = codes.astype(np.int64) * len(levels) + level_codes
        ids, some_row = _densify(key, len(attrs.cat.categories) * len(levels))
        texts = attrs.cat.categories[codes[some_row]]
        lvls = levels[level_codes[some_row]]
        tail = [f'"snap_level":"{lvl}"}}' for lvl in lvls]
        values = [
            "{" + t if a == "{}" else a[:-1] + "," + t for a, t in zip(texts, tail, strict=True)
        ]
        codes, categories = pd.factorize(pd.Series(values, dtype="str"))
        return pd.Series(pd.Categorical.from_codes(codes[ids], pd.Index(categories, dtype="str")))
    text = attrs.astype("str")
    lvl = level.astype("str")
    empty = text == "{}"
    tail = '"snap_level":"' + lvl + '"}'
    return ("{" + tail).where(empty, text.str.slice(0, -1) + "," + tail)
