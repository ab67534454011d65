"""JakWifi hotspots: importer for the open-data shape, and a seeded synthetic stand-in.

No real hotspot file is available offline (``shared/data/jakwifi/SOURCES.md``).
Two things live here:

* :func:`read_hotspots` imports an export in the Satu Data Jakarta shape (CSV
  or GeoJSON with latitude/longitude, wilayah, kecamatan, kelurahan, RW and
  address columns; column names matched case-insensitively, with variants such
  as ``lat``/``latitude``/``y``).  Every row that fails a check goes to a
  quarantine table with file, row, field and reason; ``read = valid +
  quarantined`` always holds.
* :func:`generate_hotspots` places the published per-city counts (beritajakarta.id,
  30 March 2022: 9,250 in all) inside RW polygons (kelurahan polygons for
  Kepulauan Seribu, which has no RW polygons), seeded and deterministic.  Every
  generated row says ``synthetic=True``; :func:`write_open_data_csv` writes
  them in the open-data shape so the importer can read them back.

The registered ``jakwifi`` layer serves the synthetic points and says so in its
attribution until a real export is imported (then register
``jakwifi_layer(synthetic=False)`` with ``replace=True``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from layers.ispu import read_csv_records
from layers.registry import Attribute, Layer, register
from petalapor.errors import DataError, InvalidParameterError

#: Published hotspot counts per kota code (beritajakarta.id, 30 March 2022).
PUBLISHED_COUNTS: Mapping[str, int] = {
    "3173": 2451,  # Jakarta Pusat
    "3171": 2222,  # Jakarta Selatan
    "3174": 1649,  # Jakarta Barat
    "3175": 1488,  # Jakarta Utara
    "3172": 1390,  # Jakarta Timur
    "3101": 50,  # Kepulauan Seribu
}
#: Kota names by code.
KOTA_NAMES: Mapping[str, str] = {
    "3101": "Kepulauan Seribu",
    "3171": "Jakarta Selatan",
    "3172": "Jakarta Timur",
    "3173": "Jakarta Pusat",
    "3174": "Jakarta Barat",
    "3175": "Jakarta Utara",
}
#: Lon/lat box of DKI Jakarta with Kepulauan Seribu: the default service area.
JAKARTA_BBOX: tuple[float, float, float, float] = (106.35, -6.40, 107.00, -5.15)
#: Metric CRS for tolerances (UTM 48S, as in ``gis.boundaries``).
METRIC_CRS = "EPSG:32748"

#: Canonical field -> accepted column names (compared after lower-casing and
#: turning any run of non-alphanumerics into ``_``), in order of preference.
COLUMN_ALIASES: Mapping[str, tuple[str, ...]] = {
    "id": ("id", "id_hotspot", "id_lokasi", "kode_lokasi", "objectid", "fid", "no", "nomor"),
    "name": ("name", "nama", "nama_lokasi", "nama_titik", "lokasi", "ssid"),
    "lat": ("lat", "latitude", "lintang", "y"),
    "lon": ("lon", "lng", "long", "longitude", "bujur", "x"),
    "wilayah": ("wilayah", "kota", "kota_administrasi", "kabupaten_kota", "kab_kota", "city"),
    "kecamatan": ("kecamatan", "kec", "district"),
    "kelurahan": ("kelurahan", "kel", "desa_kelurahan", "village"),
    "rw": ("rw",),
    "address": ("alamat", "address", "alamat_lokasi"),
    "kota_code": ("kota_code", "kode_kota", "kota_id", "kode_wilayah"),
    "kecamatan_code": ("kecamatan_code", "kode_kecamatan", "kecamatan_id"),
    "kelurahan_code": ("kelurahan_code", "kode_kelurahan", "kelurahan_id"),
    "rw_code": ("rw_code", "kode_rw", "rw_id"),
    "synthetic": ("synthetic", "sintetis"),
}
#: Where a hotspot is: city, kecamatan, kelurahan and RW, names and codes.
PLACE_COLUMNS: tuple[str, ...] = (
    "kota",
    "kota_code",
    "kecamatan",
    "kecamatan_code",
    "kelurahan",
    "kelurahan_code",
    "rw",
    "rw_code",
)
#: Columns of every hotspot frame (importer output and generator output).
COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    *PLACE_COLUMNS,
    "address",
    "synthetic",
    "geometry",
)
#: Header of the open-data CSV written by :func:`write_open_data_csv`.
OPEN_DATA_HEADER: tuple[str, ...] = (
    "no",
    "nama_lokasi",
    "alamat",
    "wilayah",
    "kecamatan",
    "kelurahan",
    "rw",
    "latitude",
    "longitude",
    "kode_kota",
    "kode_kecamatan",
    "kode_kelurahan",
    "kode_rw",
    "synthetic",
)

_WILAYAH = {
    re.sub(r"[^a-z]", "", alias): code
    for code, aliases in {
        "3101": (
            "kepulauan seribu",
            "kep seribu",
            "kab adm kepulauan seribu",
            "kabupaten administrasi kepulauan seribu",
            "kepseribu",
        ),
        "3171": (
            "jakarta selatan",
            "jaksel",
            "kota adm jakarta selatan",
            "kota administrasi jakarta selatan",
        ),
        "3172": (
            "jakarta timur",
            "jaktim",
            "kota adm jakarta timur",
            "kota administrasi jakarta timur",
        ),
        "3173": (
            "jakarta pusat",
            "jakpus",
            "kota adm jakarta pusat",
            "kota administrasi jakarta pusat",
        ),
        "3174": (
            "jakarta barat",
            "jakbar",
            "kota adm jakarta barat",
            "kota administrasi jakarta barat",
        ),
        "3175": (
            "jakarta utara",
            "jakut",
            "kota adm jakarta utara",
            "kota administrasi jakarta utara",
        ),
    }.items()
    for alias in aliases
}
_TRUE = {"true", "1", "yes", "ya", "t", "y"}
_COORD_DECIMALS = 7  # ~1 cm; generated points are checked after rounding


# --------------------------------------------------------------------------- importer


@dataclass
class HotspotImport:
    """Result of :func:`read_hotspots`: valid points, quarantine and counts."""

    path: Path
    hotspots: gpd.GeoDataFrame
    quarantine: pd.DataFrame
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def read(self) -> int:
        """Rows (features) read from the file."""
        return self.valid + self.quarantined

    @property
    def valid(self) -> int:
        """Rows that passed every check."""
        return len(self.hotspots)

    @property
    def quarantined(self) -> int:
        """Rows with at least one problem (a row may have several entries)."""
        return int(self.quarantine["row"].nunique())

    @property
    def synthetic(self) -> bool:
        """True when every valid row is marked synthetic."""
        return bool(len(self.hotspots)) and bool(self.hotspots["synthetic"].all())

    def render(self) -> str:
        """Text report: counts, the column mapping and every quarantine entry."""
        lines = [
            f"JakWifi import report: {self.path}",
            f"  rows read {self.read}: valid {self.valid}, quarantined {self.quarantined} "
            f"({len(self.quarantine)} problems); rows are 1-based data rows",
            "  columns: " + ", ".join(f"{k}<-{v}" for k, v in self.columns.items()),
        ]
        if self.synthetic:
            lines.append("  NOTE: every row is marked synthetic; this is not real JakWifi data")
        for kota, n in (
            self.hotspots["kota"].fillna("(unknown)").value_counts().sort_index().items()
        ):
            lines.append(f"  {kota:<20} {n:>6}")
        lines.append(f"Quarantine ({len(self.quarantine)}):")
        for q in self.quarantine.itertuples(index=False):
            lines.append(f"  row {q.row} [{q.field}] {q.reason}: {q.value!r}")
        return "\n".join(lines)


def read_hotspots(
    path: str | Path,
    *,
    service_area: gpd.GeoDataFrame | shapely.Geometry | None = None,
    tolerance_m: float = 0.0,
) -> HotspotImport:
    """Import a JakWifi hotspot export (CSV or GeoJSON) with validation and quarantine.

    Parameters
    ----------
    path
        ``.csv`` (``,`` or ``;`` separated) or a vector file (GeoJSON, GPKG).
        Column names are matched case-insensitively against
        :data:`COLUMN_ALIASES`; a GeoJSON's point geometry is used when it has
        no latitude/longitude columns.
    service_area
        Polygons (EPSG:4326 or any CRS for a GeoDataFrame) a hotspot must lie
        in, e.g. the kelurahan frame.  Default: the :data:`JAKARTA_BBOX` box.
    tolerance_m
        Points within this distance of the service area are still accepted
        (coastal piers, digitising error).

    Returns
    -------
    HotspotImport
        ``hotspots`` (GeoDataFrame, EPSG:4326, columns :data:`COLUMNS`),
        ``quarantine`` (``file, row, field, value, reason``; ``row`` is the
        1-based data row or feature number) and counts with
        ``read == valid + quarantined``.

    Raises
    ------
    DataError
        Unreadable file, no latitude/longitude (or point geometry) at all, or
        two columns claiming the same field.

    Examples
    --------
    >>> result = read_hotspots("jakwifi.csv", service_area=kelurahan)   # doctest: +SKIP
    >>> print(result.render())                                           # doctest: +SKIP

    See Also
    --------
    generate_hotspots, write_open_data_csv
    """
    path = Path(path)
    if tolerance_m < 0:
        raise InvalidParameterError(f"tolerance_m must be >= 0, got {tolerance_m}")
    raw, rows, geometry, malformed = _read_table(path)
    columns = _map_columns(raw, path, has_geometry=geometry is not None)
    problems: list[pd.DataFrame] = [malformed[["row", "field", "value", "reason"]]]
    lon, lat = _coordinates(raw, rows, columns, geometry, problems)
    frame = _attributes(raw, rows, columns, path, problems)
    ok = np.isfinite(lon) & np.isfinite(lat)
    area = _service_geometries(service_area)
    _check_area(lon, lat, rows, ok, area, tolerance_m, problems)
    _check_duplicate_ids(frame["id"], rows, problems)
    quarantine = _quarantine(problems, path)
    keep = ~np.isin(rows, quarantine["row"].to_numpy())
    points = gpd.points_from_xy(lon[keep], lat[keep], crs="EPSG:4326")
    hotspots = gpd.GeoDataFrame(
        frame[keep].reset_index(drop=True), geometry=points, crs="EPSG:4326"
    )
    return HotspotImport(path, hotspots[list(COLUMNS)], quarantine, columns)


def _read_table(
    path: Path,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, pd.DataFrame]:
    """Attributes as text, row numbers, the geometry of vector files, malformed records."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in (".csv", ".txt"):
        table = read_csv_records(path)
        return table.frame, table.rows, None, table.malformed
    try:
        gdf = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several unrelated classes
        raise DataError(f"{path}: cannot read as a vector file ({exc})") from exc
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    attrs = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    attrs = attrs.apply(
        lambda s: s.map(
            lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        )
    )
    no_records = pd.DataFrame(columns=["row", "field", "value", "reason"])
    return attrs, np.arange(1, len(attrs) + 1), gdf.geometry.to_numpy(), no_records


def _normalise_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _map_columns(raw: pd.DataFrame, path: Path, has_geometry: bool) -> dict[str, str]:
    """Canonical field -> column of the file; ambiguity and missing coordinates raise."""
    by_norm: dict[str, str] = {}
    for col in raw.columns:
        by_norm.setdefault(_normalise_name(col), col)
    mapping: dict[str, str] = {}
    for fld, aliases in COLUMN_ALIASES.items():
        found = [by_norm[a] for a in aliases if a in by_norm]
        if len(found) > 1 and fld in ("lat", "lon"):
            raise DataError(f"{path}: columns {found} all look like {fld}; keep one")
        if found:
            mapping[fld] = found[0]
    if not has_geometry and not {"lat", "lon"} <= set(mapping):
        raise DataError(
            f"{path}: no latitude/longitude columns (accepted: {COLUMN_ALIASES['lat']} and "
            f"{COLUMN_ALIASES['lon']}); found {list(raw.columns)}"
        )
    return mapping


def _coordinates(
    raw: pd.DataFrame,
    rows: np.ndarray,
    columns: dict[str, str],
    geometry: np.ndarray | None,
    problems: list[pd.DataFrame],
) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat arrays (NaN where bad), recording each bad value."""
    if "lat" not in columns or "lon" not in columns:
        return _geometry_coordinates(geometry, rows, problems)
    num = {
        fld: pd.to_numeric(
            raw[columns[fld]].str.replace(",", ".", regex=False), errors="coerce"
        ).to_numpy(dtype=float)
        for fld in ("lon", "lat")
    }
    swapped = _in_box(num["lat"], num["lon"])  # the latitude column holds a Jakarta longitude
    _add(
        problems,
        rows,
        swapped,
        columns["lat"],
        raw[columns["lat"]],
        "latitude and longitude look swapped",
    )
    for fld, lo, hi in (("lon", -180.0, 180.0), ("lat", -90.0, 90.0)):
        text, name, x = raw[columns[fld]], columns[fld], num[fld]
        empty = (text == "").to_numpy()
        _add(problems, rows, empty, name, text, "missing coordinate")
        _add(problems, rows, ~empty & np.isnan(x), name, text, "not a number")
        _add(problems, rows, np.isinf(x), name, text, "not finite")
        _add(
            problems,
            rows,
            ~swapped & np.isfinite(x) & ((x < lo) | (x > hi)),
            name,
            text,
            f"out of range [{lo:g}, {hi:g}]",
        )
    lon, lat = num["lon"], num["lat"]
    zero = (lon == 0) & (lat == 0)
    _add(problems, rows, zero, columns["lat"], raw[columns["lat"]], "coordinates are (0, 0)")
    bad = (
        swapped
        | zero
        | ~np.isfinite(lon)
        | ~np.isfinite(lat)
        | (np.abs(lon) > 180)
        | (np.abs(lat) > 90)
    )
    return np.where(bad, np.nan, lon), np.where(bad, np.nan, lat)


def _geometry_coordinates(
    geometry: np.ndarray | None, rows: np.ndarray, problems: list[pd.DataFrame]
) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of point features; other or empty geometries are quarantined."""
    geoms = np.asarray(geometry, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    types = np.array(["" if m else g.geom_type for g, m in zip(geoms, missing, strict=True)])
    text = pd.Series(types)
    _add(problems, rows, missing, "geometry", text, "missing geometry")
    not_point = ~missing & (types != "Point")
    _add(problems, rows, not_point, "geometry", text, "not a point")
    point = ~missing & ~not_point
    lon = np.full(len(geoms), np.nan)
    lat = np.full(len(geoms), np.nan)
    lon[point] = shapely.get_x(geoms[point])
    lat[point] = shapely.get_y(geoms[point])
    finite = np.isfinite(lon) & np.isfinite(lat)
    _add(problems, rows, point & ~finite, "geometry", text, "not finite")
    return lon, lat


def _attributes(
    raw: pd.DataFrame,
    rows: np.ndarray,
    columns: dict[str, str],
    path: Path,
    problems: list[pd.DataFrame],
) -> pd.DataFrame:
    """The canonical attribute columns; unknown wilayah names are quarantined."""
    n = len(raw)

    def text(fld: str) -> pd.Series:
        col = columns.get(fld)
        values = raw[col] if col else pd.Series([""] * n, index=raw.index)
        return values.astype(object).where(values != "", None)

    out = pd.DataFrame(
        {
            fld: text(fld).to_numpy()
            for fld in (
                "id",
                "name",
                "wilayah",
                "kecamatan",
                "kecamatan_code",
                "kelurahan",
                "kelurahan_code",
                "rw",
                "rw_code",
                "address",
                "kota_code",
            )
        }
    )
    if "id" not in columns:
        out["id"] = [f"{path.stem}:{r}" for r in rows]
    codes = out["wilayah"].map(
        lambda w: _WILAYAH.get(re.sub(r"[^a-z]", "", w.lower())) if w else None
    )
    unknown = out["wilayah"].notna() & codes.isna()
    _add(
        problems,
        rows,
        unknown.to_numpy(),
        columns.get("wilayah", "wilayah"),
        out["wilayah"],
        "unknown wilayah",
    )
    out["kota_code"] = out["kota_code"].where(out["kota_code"].notna(), codes)
    out["kota"] = out["kota_code"].map(lambda c: KOTA_NAMES.get(c) if c else None)
    flag = text("synthetic")
    out["synthetic"] = (
        flag.map(lambda v: v is not None and v.lower() in _TRUE).astype(bool).to_numpy()
    )
    return out.drop(columns="wilayah")


def _service_geometries(area: gpd.GeoDataFrame | shapely.Geometry | None) -> gpd.GeoSeries:
    """The service area as a GeoSeries in EPSG:4326."""
    if area is None:
        return gpd.GeoSeries([shapely.box(*JAKARTA_BBOX)], crs="EPSG:4326")
    if isinstance(area, gpd.GeoDataFrame | gpd.GeoSeries):
        series = area.geometry if isinstance(area, gpd.GeoDataFrame) else area
        return series.to_crs("EPSG:4326") if series.crs is not None else series.set_crs("EPSG:4326")
    if isinstance(area, shapely.Geometry):
        return gpd.GeoSeries([area], crs="EPSG:4326")
    raise InvalidParameterError(
        f"service_area must be a GeoDataFrame, GeoSeries or geometry, got {type(area).__name__}"
    )


def _check_area(
    lon: np.ndarray,
    lat: np.ndarray,
    rows: np.ndarray,
    ok: np.ndarray,
    area: gpd.GeoSeries,
    tolerance_m: float,
    problems: list[pd.DataFrame],
) -> None:
    """Quarantine valid coordinates outside the service area (beyond the tolerance)."""
    idx = np.flatnonzero(ok)
    points = gpd.GeoSeries(gpd.points_from_xy(lon[idx], lat[idx]), crs="EPSG:4326")
    if tolerance_m > 0:
        points_m, area_m = points.to_crs(METRIC_CRS), area.to_crs(METRIC_CRS)
        hit, _ = area_m.sindex.query(points_m.values, predicate="dwithin", distance=tolerance_m)
    else:
        hit, _ = area.sindex.query(points.values, predicate="intersects")
    outside = idx[np.setdiff1d(np.arange(len(idx)), hit)]
    values = [f"{lon[i]:.6f},{lat[i]:.6f}" for i in outside]
    if len(outside):
        problems.append(
            pd.DataFrame(
                {
                    "row": rows[outside],
                    "field": "geometry",
                    "value": values,
                    "reason": "outside the service area",
                }
            )
        )


def _check_duplicate_ids(ids: pd.Series, rows: np.ndarray, problems: list[pd.DataFrame]) -> None:
    """Second and later rows with an id already seen."""
    dup = (ids.notna() & ids.duplicated(keep="first")).to_numpy()
    if dup.any():
        first_row = {v: r for r, v in reversed(list(zip(rows, ids, strict=True))) if v is not None}
        problems.append(
            pd.DataFrame(
                {
                    "row": rows[dup],
                    "field": "id",
                    "value": ids[dup].to_numpy(),
                    "reason": [f"duplicate id, first at row {first_row[v]}" for v in ids[dup]],
                }
            )
        )


def _add(
    problems: list[pd.DataFrame],
    rows: np.ndarray,
    mask: np.ndarray,
    fld: str,
    values: pd.Series,
    reason: str,
) -> None:
    """Record one problem per row where ``mask`` holds."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        problems.append(
            pd.DataFrame(
                {
                    "row": rows[mask],
                    "field": fld,
                    "value": np.asarray(values, dtype=object)[mask],
                    "reason": reason,
                }
            )
        )


def _quarantine(problems: list[pd.DataFrame], path: Path) -> pd.DataFrame:
    """Problems as one frame sorted by row: ``file, row, field, value, reason``."""
    problems = [p for p in problems if len(p)]
    if not problems:
        return pd.DataFrame(
            {
                "file": pd.Series(dtype=str),
                "row": pd.Series(dtype=int),
                "field": pd.Series(dtype=str),
                "value": pd.Series(dtype=str),
                "reason": pd.Series(dtype=str),
            }
        )
    q = pd.concat(problems, ignore_index=True).sort_values(["row", "field"], kind="stable")
    q.insert(0, "file", str(path))
    q["row"] = q["row"].astype(int)
    q["value"] = q["value"].map(lambda v: "" if v is None else str(v))
    return q.reset_index(drop=True)[["file", "row", "field", "value", "reason"]]


def _in_box(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True where (lon, lat) falls in :data:`JAKARTA_BBOX`."""
    x0, y0, x1, y1 = JAKARTA_BBOX
    with np.errstate(invalid="ignore"):
        return (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)


# --------------------------------------------------------------------------- generator


def generate_hotspots(
    rw: gpd.GeoDataFrame,
    kelurahan: gpd.GeoDataFrame,
    *,
    kecamatan: gpd.GeoDataFrame | None = None,
    counts: Mapping[str, int] | None = None,
    seed: int = 1,
    spread: float = 0.6,
) -> gpd.GeoDataFrame:
    """Synthetic JakWifi hotspots: the published per-city counts, placed in RW polygons.

    Mainland cities use RW polygons; Kepulauan Seribu (no RW polygons) uses
    kelurahan polygons.  Each polygon is first clipped to its city (the union
    of the city's kelurahan), so every point is strictly inside both its
    polygon and its city.  Where a city has at least as many hotspots as
    polygons, every polygon gets one (JakWifi was rolled out per RW) and the
    rest are drawn with weights ``sqrt(area) * lognormal(0, spread)``: larger
    RWs get more, sub-linearly, and a seeded random intensity stands in for
    density and centrality, which are not available.  Fewer hotspots than
    polygons: polygons are drawn without replacement with the same weights.

    Parameters
    ----------
    rw, kelurahan
        ``bset.frames["rw"]`` and ``bset.frames["kelurahan"]`` of
        :func:`gis.boundaries.build_boundary_set`.
    kecamatan
        Optional ``bset.frames["kecamatan"]``, for kecamatan names.
    counts
        Hotspots per kota code; default :data:`PUBLISHED_COUNTS` (9,250).
    seed
        Seed of :func:`numpy.random.default_rng`; same seed, same points.
    spread
        Sigma of the lognormal intensity (0 gives weights by area only).

    Returns
    -------
    geopandas.GeoDataFrame
        Columns :data:`COLUMNS`, EPSG:4326, ``synthetic=True``, ids
        ``JW-SYN-00001`` ... in kota, polygon order.

    Raises
    ------
    InvalidParameterError
        A count is negative or names a kota with no usable polygon.

    Examples
    --------
    >>> bset = build_boundary_set(load_manifest())                      # doctest: +SKIP
    >>> pts = generate_hotspots(bset.frames["rw"], bset.frames["kelurahan"])  # doctest: +SKIP
    >>> pts["kota"].value_counts()["Jakarta Pusat"]                     # doctest: +SKIP
    2451
    """
    counts = dict(PUBLISHED_COUNTS if counts is None else counts)
    bad = {k: v for k, v in counts.items() if int(v) < 0 or k not in KOTA_NAMES}
    if bad:
        raise InvalidParameterError(
            f"counts must be >= 0 per known kota code {sorted(KOTA_NAMES)}; got {bad}"
        )
    rng = np.random.default_rng(seed)
    cities = _city_geometries(kelurahan)
    units = _placement_units(rw, kelurahan, cities)
    frames = []
    for kota in sorted(counts):
        pool = units[units["kota_code"] == kota].reset_index(drop=True)
        n = int(counts[kota])
        if n and pool.empty:
            raise InvalidParameterError(f"kota {kota} has {n} hotspots to place but no polygon")
        per_unit = _allocate(pool["area_m2"].to_numpy(), n, rng, spread)
        frames.append(_place(pool, per_unit, cities[kota], rng))
    out = pd.concat(frames, ignore_index=True)
    return _finish(out, kelurahan, kecamatan)


def _placement_units(
    rw: gpd.GeoDataFrame, kelurahan: gpd.GeoDataFrame, cities: dict[str, shapely.Geometry]
) -> gpd.GeoDataFrame:
    """RW polygons, plus kelurahan polygons of kota without RW, clipped to their city."""
    with_rw = set(rw["kota_code"].dropna().astype(str))
    kel_only = kelurahan[~kelurahan["kota_code"].astype(str).isin(with_rw)]
    parts = [
        pd.DataFrame(
            {
                "unit_code": rw["code"].astype(str),
                "rw_code": rw["code"].astype(str),
                "rw": rw["name"].astype(str),
                "kelurahan_code": rw["kelurahan_code"].astype(str),
                "kota_code": rw["kota_code"].astype(str),
                "geometry": rw.geometry.to_numpy(),
            }
        ),
        pd.DataFrame(
            {
                "unit_code": kel_only["code"].astype(str),
                "rw_code": None,
                "rw": None,
                "kelurahan_code": kel_only["code"].astype(str),
                "kota_code": kel_only["kota_code"].astype(str),
                "geometry": kel_only.geometry.to_numpy(),
            }
        ),
    ]
    units = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=rw.crs)
    units = units.to_crs("EPSG:4326").sort_values("unit_code", kind="stable").reset_index(drop=True)
    geoms = units.geometry.to_numpy().copy()
    for kota, city in cities.items():
        sel = np.flatnonzero((units["kota_code"] == kota).to_numpy())
        spill = sel[~shapely.contains_properly(city, geoms[sel])]  # only these need clipping
        geoms[spill] = shapely.intersection(geoms[spill], city)
    units["geometry"] = geoms
    units["area_m2"] = units.to_crs(METRIC_CRS).area.to_numpy()
    return units[units["area_m2"] > 1.0].reset_index(drop=True)


def _city_geometries(kelurahan: gpd.GeoDataFrame) -> dict[str, shapely.Geometry]:
    """Union of kelurahan per kota code (EPSG:4326), prepared for fast tests."""
    kel = kelurahan.to_crs("EPSG:4326")
    out = {}
    for code, group in kel.groupby(kel["kota_code"].astype(str)):
        geom = shapely.union_all(group.geometry.to_numpy())
        shapely.prepare(geom)
        out[str(code)] = geom
    return out


def _allocate(area: np.ndarray, n: int, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Hotspots per polygon summing to exactly ``n``."""
    k = len(area)
    if n == 0 or k == 0:
        return np.zeros(k, dtype=int)
    weights = np.sqrt(area) * rng.lognormal(0.0, spread, size=k)
    p = weights / weights.sum()
    if n < k:
        out = np.zeros(k, dtype=int)
        out[rng.choice(k, size=n, replace=False, p=p)] = 1
        return out
    return 1 + rng.multinomial(n - k, p)


def _place(
    pool: gpd.GeoDataFrame, per_unit: np.ndarray, city: shapely.Geometry, rng: np.random.Generator
) -> pd.DataFrame:
    """Uniform random points strictly inside each polygon and the city."""
    xs, ys = [], []
    geoms, codes = pool.geometry.to_numpy(), pool["unit_code"].to_numpy()
    for i in np.flatnonzero(per_unit):
        x, y = _sample_in(geoms[i], city, int(per_unit[i]), rng, str(codes[i]))
        xs.append(x)
        ys.append(y)
    take = np.repeat(np.arange(len(pool)), per_unit)
    attrs = (
        pd.DataFrame(pool.drop(columns=["geometry", "area_m2"])).iloc[take].reset_index(drop=True)
    )
    attrs["lon"] = np.concatenate(xs) if xs else np.array([], dtype=float)
    attrs["lat"] = np.concatenate(ys) if ys else np.array([], dtype=float)
    return attrs


def _sample_in(
    geom: shapely.Geometry,
    city: shapely.Geometry,
    k: int,
    rng: np.random.Generator,
    code: str,
    max_rounds: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample ``k`` points in the interior of ``geom`` and ``city``."""
    shapely.prepare(geom)
    x0, y0, x1, y1 = geom.bounds
    fill = max(shapely.area(geom) / max((x1 - x0) * (y1 - y0), 1e-18), 0.01)
    xs, ys = [], []
    got = 0
    for _ in range(max_rounds):
        m = int(np.ceil((k - got) / fill * 1.5)) + 4
        x = np.round(rng.uniform(x0, x1, m), _COORD_DECIMALS)
        y = np.round(rng.uniform(y0, y1, m), _COORD_DECIMALS)
        inside = shapely.contains_xy(geom, x, y) & shapely.contains_xy(city, x, y)
        xs.append(x[inside])
        ys.append(y[inside])
        got += int(inside.sum())
        if got >= k:
            return np.concatenate(xs)[:k], np.concatenate(ys)[:k]
    raise DataError(f"polygon {code}: could not place {k} points inside it in {max_rounds} rounds")


def _finish(
    points: pd.DataFrame, kelurahan: gpd.GeoDataFrame, kecamatan: gpd.GeoDataFrame | None
) -> gpd.GeoDataFrame:
    """Names, ids, placeholders and the ``synthetic`` flag."""
    kel = kelurahan.set_index(kelurahan["code"].astype(str))
    p = points.copy()
    p["kelurahan"] = p["kelurahan_code"].map(kel["name"].astype(str))
    p["kecamatan_code"] = p["kelurahan_code"].map(kel["kecamatan_code"].astype(str))
    if kecamatan is not None:
        names = kecamatan.set_index(kecamatan["code"].astype(str))["name"].astype(str)
        p["kecamatan"] = p["kecamatan_code"].map(names)
    else:
        p["kecamatan"] = None
    p["kota"] = p["kota_code"].map(dict(KOTA_NAMES))
    p["id"] = [f"JW-SYN-{i:05d}" for i in range(1, len(p) + 1)]
    place = [
        f"{rw}, Kel. {kel_name}" if rw else f"Kel. {kel_name}"
        for rw, kel_name in zip(p["rw"], p["kelurahan"], strict=True)
    ]
    p["name"] = [f"JakWifi {pl} (synthetic {i[-5:]})" for pl, i in zip(place, p["id"], strict=True)]
    p["address"] = [
        f"[SINTETIS / SYNTHETIC] {pl}, {k}" for pl, k in zip(place, p["kota"], strict=True)
    ]
    p["synthetic"] = True
    geometry = gpd.points_from_xy(p["lon"], p["lat"], crs="EPSG:4326")
    return gpd.GeoDataFrame(
        p.drop(columns=["lon", "lat", "unit_code"]), geometry=geometry, crs="EPSG:4326"
    )[list(COLUMNS)]


def write_open_data_csv(hotspots: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write hotspots as a CSV in the open-data shape (:data:`OPEN_DATA_HEADER`).

    Coordinates are written with 7 decimals (about 1 cm), the precision the
    generator already rounds to, so a round trip through :func:`read_hotspots`
    gives the same points.
    """
    path = Path(path)
    gdf = hotspots.to_crs("EPSG:4326")
    frame = pd.DataFrame(
        {
            "no": gdf["id"],
            "nama_lokasi": gdf["name"],
            "alamat": gdf["address"],
            "wilayah": gdf["kota"],
            "kecamatan": gdf["kecamatan"],
            "kelurahan": gdf["kelurahan"],
            "rw": gdf["rw"],
            "latitude": [f"{v:.{_COORD_DECIMALS}f}" for v in gdf.geometry.y],
            "longitude": [f"{v:.{_COORD_DECIMALS}f}" for v in gdf.geometry.x],
            "kode_kota": gdf["kota_code"],
            "kode_kecamatan": gdf["kecamatan_code"],
            "kode_kelurahan": gdf["kelurahan_code"],
            "kode_rw": gdf["rw_code"],
            "synthetic": gdf["synthetic"].map(lambda v: "true" if v else "false"),
        }
    )
    frame[list(OPEN_DATA_HEADER)].to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- layer


def load_synthetic(seed: int = 1) -> gpd.GeoDataFrame:
    """The synthetic hotspots over the project's boundary set (the layer's ``load``)."""
    from gis.boundaries import build_boundary_set, load_manifest

    bset = build_boundary_set(load_manifest())
    return generate_hotspots(
        bset.frames["rw"], bset.frames["kelurahan"], kecamatan=bset.frames["kecamatan"], seed=seed
    )


def jakwifi_layer(*, synthetic: bool = True, load: Any = None) -> Layer:
    """The ``jakwifi`` layer description (synthetic by default).

    After a real export is imported, register
    ``jakwifi_layer(synthetic=False, load=...)`` with ``replace=True``.
    """
    attribution = (
        "SYNTHETIC JakWifi hotspots: generated by petalapor from the published per-city counts "
        "(beritajakarta.id, 30 March 2022), NOT real locations, until a real export is imported"
        if synthetic
        else "JakWifi hotspots: Pemprov DKI Jakarta (Satu Data Jakarta / JakartaSatu)"
    )
    text = "text"
    return Layer(
        name="jakwifi",
        title="JakWifi hotspots" + (" (synthetic)" if synthetic else ""),
        attribution=attribution,
        licence="synthetic data, no licence restriction"
        if synthetic
        else "see Satu Data Jakarta terms",
        geometry_type="Point",
        table="layer_jakwifi",
        load=load or load_synthetic,
        minzoom=10,
        maxzoom=18,
        synthetic=synthetic,
        attributes={
            "id": Attribute(text, "Hotspot id (JW-SYN-nnnnn for synthetic points)"),
            "name": Attribute(text, "Location name"),
            "kota": Attribute(text, "Kota / kabupaten administrasi name"),
            "kota_code": Attribute(text, "Kota code (4 digits)"),
            "kecamatan": Attribute(text, "Kecamatan name"),
            "kecamatan_code": Attribute(text, "Kecamatan code (7 digits)"),
            "kelurahan": Attribute(text, "Kelurahan name"),
            "kelurahan_code": Attribute(text, "Kelurahan code (10 digits)"),
            "rw": Attribute(text, "RW label, e.g. 'RW 05' (empty in Kepulauan Seribu)"),
            "rw_code": Attribute(text, "RW code (16 digits; empty in Kepulauan Seribu)"),
            "address": Attribute(text, "Street address (placeholder for synthetic points)"),
            "synthetic": Attribute("boolean", "True for generated points"),
        },
        description=(
            "Synthetic stand-in: the published per-city counts placed uniformly at random in RW "
            "polygons (kelurahan on Kepulauan Seribu), one per RW plus sqrt(area) x lognormal "
            "weights, seed 1."
            if synthetic
            else "Imported JakWifi export."
        ),
        extra={"published_counts": dict(PUBLISHED_COUNTS)},
    )


register(jakwifi_layer(), replace=True)
