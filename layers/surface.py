"""ISPU surface: inverse-distance weighting over the city, as a COG, and its tiles.

Method
------
1. For a period (a day, a month, a year or any date range) take the mean of
   each station's daily values (``ispu`` or one sub-index) over the days it
   reported in that period (:func:`station_values`).
2. Interpolate those means over a grid by inverse-distance weighting
   (``w = 1 / d**power``; exact at a station), with distances computed in UTM
   48S (EPSG:32748, metres).
3. The grid is laid out in Web Mercator (EPSG:3857), so tiles need no
   reprojection; ``cell_size`` is in EPSG:3857 units (at Jakarta's latitude
   one unit is 0.9945 m on the ground).  Cells whose centre lies outside the
   union of the kelurahan polygons are nodata.
4. The grid is written as a Cloud-Optimised GeoTIFF (float32, nodata
   -9999, deflate, with overviews) by ``rio_cogeo.cog_translate``.

**Kepulauan Seribu is excluded by default** (``exclude_kota=("3101",)``): all
five SPKU stations are on the mainland, 30-150 km away, so a value there would
be pure extrapolation.

**Use a period, not a day.** ``ispu_dki_all.csv`` has one row per day (the
station reported that day), so a one-day surface has one station and is flat.
A month (mean per station over the month, then IDW) typically has 3-5 stations
and is the default in every example; a :class:`FlatSurfaceWarning` is issued
when fewer than two stations contribute.

Tiles are read with rio-tiler (:func:`render_tile`) and coloured by category
with the official ISPU colours (:data:`ISPU_COLORMAP`, an intervals colour map
whose edges are the category edges of :mod:`layers.ispu`); nodata is
transparent.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from rasterio.features import geometry_mask
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import Window

from layers.ispu import CATEGORIES, CATEGORY_EDGES, LICENCE_NOTE, SUBINDEX_COLUMNS
from layers.registry import Layer, register
from petalapor.errors import DataError, InvalidParameterError, NotFoundError

#: CRS the surface is written in.
SURFACE_CRS = "EPSG:3857"
#: Metric CRS in which distances are computed.
METRIC_CRS = "EPSG:32748"
#: Nodata value of the COG.
NODATA = -9999.0
#: Kota left out of the mainland surface by default (Kepulauan Seribu).
EXCLUDE_KOTA: tuple[str, ...] = ("3101",)

#: rio-tiler intervals colour map: ``[((low, high), (r, g, b, a)), ...]``, low inclusive.
ISPU_COLORMAP: list[tuple[tuple[float, float], tuple[int, int, int, int]]] = [
    ((lo, hi), cat.rgba)
    for lo, hi, cat in zip(
        (0.0, *CATEGORY_EDGES), (*CATEGORY_EDGES, 1.0e6), CATEGORIES, strict=True
    )
]

PeriodLike = str | dt.date | pd.Timestamp | pd.Period | tuple[Any, Any]


class FlatSurfaceWarning(UserWarning):
    """Fewer than two stations contribute, so the surface is flat."""


@dataclass(frozen=True)
class SurfaceInfo:
    """What :func:`write_surface` wrote."""

    path: Path
    start: pd.Timestamp
    end: pd.Timestamp
    value: str
    power: float
    cell_size: float
    stations: pd.DataFrame
    width: int
    height: int

    @property
    def n_stations(self) -> int:
        """Stations that contributed a value."""
        return len(self.stations)


# --------------------------------------------------------------------------- inputs


def period_bounds(period: PeriodLike) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last day (inclusive) of a period.

    Parameters
    ----------
    period
        ``"2024-12"`` (a month), ``"2024"`` (a year), ``"2024-12-05"`` or a
        date (a day), a :class:`pandas.Period`, or a ``(start, end)`` pair of
        dates (inclusive).

    Examples
    --------
    >>> [str(t.date()) for t in period_bounds("2024-02")]
    ['2024-02-01', '2024-02-29']
    """
    try:
        if isinstance(period, tuple):
            start, end = (pd.Timestamp(p).normalize() for p in period)
        else:
            p = period if isinstance(period, pd.Period) else pd.Period(period)
            start, end = p.start_time.normalize(), p.end_time.normalize()
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(f"cannot read {period!r} as a period ({exc})") from exc
    if end < start:
        raise InvalidParameterError(f"period ends ({end.date()}) before it starts ({start.date()})")
    return start, end


def station_values(
    readings: pd.DataFrame, stations: gpd.GeoDataFrame, period: PeriodLike, *, value: str = "ispu"
) -> pd.DataFrame:
    """Mean value per station over a period, with the station's position.

    Parameters
    ----------
    readings
        ``IspuImport.readings`` (columns ``date``, ``station_id`` and ``value``).
    stations
        :func:`layers.ispu.load_stations`.
    period
        See :func:`period_bounds`.
    value
        ``"ispu"`` or a sub-index column (``pm25``, ``pm10``, ...).

    Returns
    -------
    pandas.DataFrame
        ``station_id, lon, lat, value, n_days``; stations without a value in
        the period are left out.
    """
    if value not in ("ispu", *SUBINDEX_COLUMNS):
        raise InvalidParameterError(
            f"value must be 'ispu' or one of {SUBINDEX_COLUMNS}, got {value!r}"
        )
    start, end = period_bounds(period)
    sel = readings[(readings["date"] >= start) & (readings["date"] <= end)].dropna(subset=[value])
    means = (
        sel.groupby("station_id")[value]
        .agg(["mean", "size"])
        .rename(columns={"mean": "value", "size": "n_days"})
    )
    pos = pd.DataFrame(
        {
            "station_id": stations["station_id"],
            "lon": stations.geometry.x,
            "lat": stations.geometry.y,
        }
    )
    unknown = sorted(set(means.index) - set(pos["station_id"]))
    if unknown:
        raise DataError(
            f"readings name station(s) {unknown} that have no position in the station list"
        )
    return pos.merge(means.reset_index(), on="station_id", how="inner").reset_index(drop=True)


# --------------------------------------------------------------------------- IDW


def idw(
    known_xy: np.ndarray, values: np.ndarray, query_xy: np.ndarray, *, power: float = 2.0
) -> np.ndarray:
    """Inverse-distance-weighted values at query points (planar coordinates).

    Parameters
    ----------
    known_xy
        ``(n, 2)`` station coordinates in a metric CRS.
    values
        ``(n,)`` station values.
    query_xy
        ``(m, 2)`` query coordinates in the same CRS.
    power
        Distance exponent (> 0); 2 is the usual choice.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` values; a query point on a station gets that station's value.

    Examples
    --------
    >>> known, query = np.array([[0, 0], [10, 0]]), np.array([[5, 0], [0, 0]])
    >>> idw(known, np.array([0.0, 100.0]), query).tolist()
    [50.0, 0.0]
    """
    known_xy, query_xy = (
        np.atleast_2d(known_xy).astype(float),
        np.atleast_2d(query_xy).astype(float),
    )
    values = np.asarray(values, dtype=float)
    if power <= 0:
        raise InvalidParameterError(f"power must be > 0, got {power}")
    if len(known_xy) == 0 or len(known_xy) != len(values):
        raise InvalidParameterError(
            f"need one value per known point, got {len(known_xy)} points, {len(values)} values"
        )
    dist = np.hypot(
        query_xy[:, None, 0] - known_xy[None, :, 0], query_xy[:, None, 1] - known_xy[None, :, 1]
    )
    on_station = dist == 0
    with np.errstate(divide="ignore"):
        weights = np.where(on_station, 0.0, dist**-power)
    total = weights.sum(axis=1)
    out = np.divide(weights @ values, total, out=np.full(len(query_xy), np.nan), where=total > 0)
    hit = on_station.any(axis=1)
    out[hit] = values[np.argmax(on_station[hit], axis=1)]
    return out


def idw_at_points(
    readings: pd.DataFrame,
    stations: gpd.GeoDataFrame,
    lon: Any,
    lat: Any,
    when: Any,
    *,
    freq: str = "M",
    power: float = 2.0,
    value: str = "ispu",
) -> np.ndarray:
    """ISPU at each point for its own date, by IDW of the station means of that date's period.

    This is how a report gets "the ISPU at its place and day": each point's
    date is widened to its ``freq`` period (``"M"`` calendar month by default;
    ``"D"`` for the day itself, which with one station a day is that station's
    value everywhere), the station means of that period are interpolated to
    the point.  Points whose period has no reading get NaN.

    Parameters
    ----------
    readings, stations
        As for :func:`station_values`.
    lon, lat
        Point coordinates (EPSG:4326), scalars or arrays.
    when
        One date for all points, or one date per point.
    freq
        Pandas period frequency: ``"D"``, ``"W"``, ``"M"``, ``"Y"``.
    power, value
        As for :func:`write_surface`.

    Returns
    -------
    numpy.ndarray
        One value per point.

    See Also
    --------
    sample : the value of a written surface at points.
    """
    lon, lat = (
        np.atleast_1d(np.asarray(lon, dtype=float)),
        np.atleast_1d(np.asarray(lat, dtype=float)),
    )
    if lon.shape != lat.shape:
        raise InvalidParameterError(f"lon and lat differ in shape: {lon.shape} vs {lat.shape}")
    dates = pd.to_datetime(
        pd.Series(np.broadcast_to(np.asarray(when, dtype=object), lon.shape)), errors="coerce"
    )
    periods = dates.dt.to_period(freq)
    to_metric = _to_metric()
    qx, qy = to_metric.transform(lon, lat)
    out = np.full(lon.shape, np.nan)
    for period in periods.dropna().unique():
        st = station_values(readings, stations, period, value=value)
        if st.empty:
            continue
        sx, sy = to_metric.transform(st["lon"].to_numpy(), st["lat"].to_numpy())
        idx = np.flatnonzero((periods == period).to_numpy())
        out[idx] = idw(
            np.column_stack([sx, sy]),
            st["value"].to_numpy(),
            np.column_stack([qx[idx], qy[idx]]),
            power=power,
        )
    return out


# --------------------------------------------------------------------------- COG


def write_surface(
    readings: pd.DataFrame,
    stations: gpd.GeoDataFrame,
    city: gpd.GeoDataFrame,
    path: str | Path,
    *,
    period: PeriodLike,
    value: str = "ispu",
    power: float = 2.0,
    cell_size: float = 100.0,
    exclude_kota: Sequence[str] = EXCLUDE_KOTA,
) -> SurfaceInfo:
    """Interpolate station means over the city and write a Cloud-Optimised GeoTIFF.

    Parameters
    ----------
    readings
        ``read_ispu_csv().readings``.
    stations
        ``load_stations()``.
    city
        Kelurahan polygons (``bset.frames["kelurahan"]``, with ``kota_code``);
        cells outside their union are nodata.
    path
        Output ``.tif``.
    period
        Day, month, year or ``(start, end)`` (:func:`period_bounds`).  Prefer
        a month: one station reports per day.
    value
        ``"ispu"`` or a sub-index column.
    power
        IDW distance exponent.
    cell_size
        Cell size in EPSG:3857 units (about metres).
    exclude_kota
        Kota codes left out (default Kepulauan Seribu).

    Returns
    -------
    SurfaceInfo

    Raises
    ------
    DataError
        No station has a value in the period, or the city is empty.

    Examples
    --------
    >>> result = read_ispu_csv()                                         # doctest: +SKIP
    >>> info = write_surface(result.readings, load_stations(), bset.frames["kelurahan"],
    ...                      "ispu_2025-02.tif", period="2025-02")       # doctest: +SKIP

    See Also
    --------
    render_tile, sample, idw_at_points
    """
    if cell_size <= 0:
        raise InvalidParameterError(f"cell_size must be > 0, got {cell_size}")
    st = station_values(readings, stations, period, value=value)
    start, end = period_bounds(period)
    if st.empty:
        raise DataError(f"no station has a {value} value between {start.date()} and {end.date()}")
    if len(st) < 2:
        warnings.warn(
            f"only {len(st)} station in {start.date()}..{end.date()}: the surface is flat",
            FlatSurfaceWarning,
            stacklevel=2,
        )
    area = _city_area(city, exclude_kota)
    transform, width, height = _grid(area.total_bounds, cell_size)
    grid = _interpolate(st, transform, width, height, power)
    inside = geometry_mask(
        area.geometry, out_shape=(height, width), transform=transform, invert=True
    )
    grid = np.where(inside, grid, NODATA).astype("float32")
    tags = {
        "VALUE": value,
        "PERIOD_START": str(start.date()),
        "PERIOD_END": str(end.date()),
        "IDW_POWER": str(power),
        "METRIC_CRS": METRIC_CRS,
        "STATIONS": ",".join(
            f"{s}:{v:.1f}" for s, v in zip(st["station_id"], st["value"], strict=True)
        ),
        "SOURCE": "ISPU DKI Jakarta (Satu Data Jakarta / DLH); station positions approximate",
    }
    _write_cog(grid, transform, Path(path), tags)
    return SurfaceInfo(Path(path), start, end, value, power, cell_size, st, width, height)


def _city_area(city: gpd.GeoDataFrame, exclude_kota: Sequence[str]) -> gpd.GeoSeries:
    """City polygons in the surface CRS, without the excluded kota."""
    keep = (
        ~city["kota_code"].astype(str).isin([str(k) for k in exclude_kota])
        if "kota_code" in city
        else slice(None)
    )
    area = city.loc[keep].to_crs(SURFACE_CRS).geometry
    if area.empty:
        raise DataError(
            "the city has no polygon left after excluding kota " + ", ".join(exclude_kota)
        )
    return area


def _grid(bounds: np.ndarray, cell: float) -> tuple[Any, int, int]:
    """Transform and size of a grid snapped to multiples of ``cell`` covering ``bounds``."""
    minx, miny, maxx, maxy = bounds
    x0, y1 = np.floor(minx / cell) * cell, np.ceil(maxy / cell) * cell
    width = int(np.ceil((maxx - x0) / cell))
    height = int(np.ceil((y1 - miny) / cell))
    return from_origin(x0, y1, cell, cell), width, height


def _interpolate(
    st: pd.DataFrame, transform: Any, width: int, height: int, power: float
) -> np.ndarray:
    """IDW of the station values at every cell centre, distances in metres."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform @ (cols.ravel(), rows.ravel())
    to_metric = Transformer.from_crs(SURFACE_CRS, METRIC_CRS, always_xy=True)
    qx, qy = to_metric.transform(xs, ys)
    sx, sy = _to_metric().transform(st["lon"].to_numpy(), st["lat"].to_numpy())
    values = idw(
        np.column_stack([sx, sy]), st["value"].to_numpy(), np.column_stack([qx, qy]), power=power
    )
    return values.reshape(height, width)


def _write_cog(grid: np.ndarray, transform: Any, path: Path, tags: dict[str, str]) -> None:
    """Write one float32 band as a deflate COG with overviews."""
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": grid.shape[1],
        "height": grid.shape[0],
        "crs": SURFACE_CRS,
        "transform": transform,
        "nodata": NODATA,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(grid, 1)
            dst.set_band_description(1, tags["VALUE"])
            dst.update_tags(**tags)
        with mem.open() as src:
            profile = {**cog_profiles.get("deflate"), "blockxsize": 256, "blockysize": 256}
            cog_translate(
                src,
                str(path),
                profile,
                nodata=NODATA,
                overview_resampling="average",
                in_memory=True,
                quiet=True,
            )


def _to_metric() -> Transformer:
    """Lon/lat -> UTM 48S transformer (built per call, never shared between threads)."""
    return Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True)


# --------------------------------------------------------------------------- reading


def sample(cog_path: str | Path, lon: Any, lat: Any) -> np.ndarray:
    """Surface values at points (EPSG:4326); NaN outside the raster or on nodata.

    Reads only the window covering the points, once, then indexes it.

    Examples
    --------
    >>> sample("ispu_2025-02.tif", [106.82, 106.0], [-6.19, -6.0])     # doctest: +SKIP
    array([87.3,  nan])
    """
    lon, lat = (
        np.atleast_1d(np.asarray(lon, dtype=float)),
        np.atleast_1d(np.asarray(lat, dtype=float)),
    )
    if lon.shape != lat.shape:
        raise InvalidParameterError(f"lon and lat differ in shape: {lon.shape} vs {lat.shape}")
    out = np.full(lon.shape, np.nan)
    with rasterio.open(cog_path) as ds:
        xs, ys = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
        cols, rows = ~ds.transform @ (np.asarray(xs), np.asarray(ys))
        cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
        inside = (
            (cols >= 0) & (cols < ds.width) & (rows >= 0) & (rows < ds.height) & np.isfinite(xs)
        )
        if not inside.any():
            return out
        r0, r1, c0, c1 = (
            rows[inside].min(),
            rows[inside].max(),
            cols[inside].min(),
            cols[inside].max(),
        )
        block = ds.read(1, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1), masked=True)
        picked = block[rows[inside] - r0, cols[inside] - c0]
        out[inside] = np.ma.filled(picked.astype(float), np.nan)
    return out


def render_tile(cog_path: str | Path, z: int, x: int, y: int, *, tilesize: int = 256) -> bytes:
    """A WebMercatorQuad tile of the surface as a PNG coloured by ISPU category.

    Read with :class:`rio_tiler.io.Reader`; colours are
    :data:`ISPU_COLORMAP` (green, blue, yellow, red, black); nodata and the
    area outside the raster are transparent.

    Parameters
    ----------
    cog_path
        A COG from :func:`write_surface`.
    z, x, y
        Tile index in the WebMercatorQuad matrix set.
    tilesize
        Output size in pixels (256).

    Returns
    -------
    bytes
        A ``tilesize`` x ``tilesize`` RGBA PNG.

    Raises
    ------
    NotFoundError
        The tile does not intersect the raster.
    """
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    try:
        with Reader(str(cog_path)) as src:
            img = src.tile(x, y, z, tilesize=tilesize, resampling_method="nearest")
    except TileOutsideBounds as exc:
        raise NotFoundError(f"tile {z}/{x}/{y} is outside the ISPU surface") from exc
    return img.render(img_format="PNG", colormap=ISPU_COLORMAP)


# --------------------------------------------------------------------------- layer


def default_surface(
    period: PeriodLike | None = None, path: str | Path | None = None, **options: Any
) -> Path:
    """Build the surface from the shared data (the layer's ``load``) and return its path.

    ``period`` defaults to the last complete month in the data; the file goes
    to ``var/rasters/ispu_<value>_<start>_<end>.tif`` unless ``path`` is given.
    """
    from gis.boundaries import build_boundary_set, load_manifest
    from layers.ispu import load_stations, read_ispu_csv
    from petalapor.settings import PathSettings

    readings = read_ispu_csv().readings
    if period is None:
        last = readings["date"].max()
        month = last.to_period("M")
        period = month if last == month.end_time.normalize() else month - 1
    start, end = period_bounds(period)
    value = options.get("value", "ispu")
    if path is None:
        path = PathSettings().var / "rasters" / f"ispu_{value}_{start.date()}_{end.date()}.tif"
    city = build_boundary_set(load_manifest()).frames["kelurahan"]
    return write_surface(readings, load_stations(), city, path, period=period, **options).path


register(
    Layer(
        name="ispu_surface",
        title="ISPU surface (IDW of station means)",
        attribution=(
            "ISPU: Dinas Lingkungan Hidup DKI Jakarta via Satu Data Jakarta (compiled copy "
            "yumairai/UTS_SoftCom); IDW surface by petalapor from 5 approximately placed stations"
        ),
        licence=LICENCE_NOTE,
        geometry_type="Raster",
        load=default_surface,
        minzoom=9,
        maxzoom=16,
        description=(
            "Monthly mean ISPU per station interpolated by inverse-distance weighting (power 2) "
            "on a 100 m EPSG:3857 grid, clipped to mainland Jakarta (Kepulauan Seribu excluded). "
            "Coloured by ISPU category (P.14/2020)."
        ),
        extra={
            "colormap": ISPU_COLORMAP,
            "legend": [
                {"category": c.code, "range": [c.low, c.high], "colour": c.hex} for c in CATEGORIES
            ],
            "render": "layers.surface:render_tile",
        },
    ),
    replace=True,
)
