"""Kernel density heatmap: raster tiles, legend and a Cloud-Optimised GeoTIFF export.

The surface is one fixed-bandwidth Gaussian kernel density estimate of the
report points that pass the filters: ``density(p) = sum_i K_h(p - p_i)`` in
reports per km² (ground units), ``h`` = ``PETALAPOR_TILES_HEATMAP_BANDWIDTH_M``
(default 400 m) at every zoom, so tiles of every zoom, the legend and the COG
show the same surface.

Per tile the points within 4h (plus a cell) of the tile are binned onto a grid
aligned with the global pixel grid of that zoom (cells of 2^m pixels, at most
h/4 wide, so neighbouring tiles agree at their edges), smoothed with
``scipy.ndimage.gaussian_filter`` and sampled bilinearly at pixel centres.

Colours: a perceptually uniform ramp (``magma`` from rio-tiler's colour-map
tables, no matplotlib) over ``[0, vmax]`` with a square-root scale; ``vmax`` is
the 99.5th percentile of the city-wide surface for the same filters and
scope, rounded up to 1/2/2.5/5 x 10^n and kept until the next full refresh
(single report changes do not re-colour the map).  Pixels below the
visibility threshold are fully transparent; an all-transparent tile is a 204.

Privacy: public viewers get public reports only, and a pixel shows only when
the density there is at least what k reports stacked in one place would
give (``k / (2 pi h^2)``): a handful of isolated reports never shows.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from scipy import ndimage

from tiles.filters import Filters
from tiles.footprint import Footprint
from tiles.layers import TileContext, scope_conditions, where
from tiles.tms import (
    ORIGIN_SHIFT,
    Box,
    Tile,
    mercator_scale,
    pixel_size,
    tile_range,
    to_lonlat,
    xy_bounds,
)
from tiles.viewer import ViewerLike, is_privileged, scope_of

PNG_MEDIA_TYPE = "image/png"
TILE_PX = 256
#: The kernel is cut at this many sigmas.
TRUNCATE = 4.0
#: Legend stops.
LEGEND_STOPS = 11
#: The colour ramp reaches full opacity at this fraction of the scale.
ALPHA_RAMP = 0.2
MAX_ALPHA = 230


@lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """256 x 3 uint8 RGB ramp from rio-tiler's colour-map tables (viridis, magma, ...)."""
    from rio_tiler.colormap import cmap

    table = cmap.get(name)
    return np.array([table[i][:3] for i in range(256)], dtype=np.uint8)


def png_rgba(rgba: np.ndarray, level: int = 6) -> bytes:
    """Encode an (h, w, 4) uint8 array as PNG (no imaging library needed)."""
    height, width, _ = rgba.shape
    raw = np.zeros((height, width * 4 + 1), dtype=np.uint8)
    raw[:, 1:] = rgba.reshape(height, width * 4)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + chunk(b"IEND", b"")
    )


def nice_ceil(value: float) -> float:
    """Smallest 1, 2, 2.5 or 5 x 10^n that is >= value."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10**exp
        if candidate >= value * (1 - 1e-12):
            return candidate
    return 10.0 ** (exp + 1)


def fetch_xy(
    conn: psycopg.Connection, query: sql.Composable, params: Mapping[str, object]
) -> tuple[np.ndarray, np.ndarray]:
    """Run a two-float8-column query through binary COPY into two numpy arrays."""
    buf = io.BytesIO()
    with conn.cursor().copy(
        sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query), params
    ) as copy:
        for data in copy:
            buf.write(data)
    raw = buf.getvalue()
    body = raw[19:-2]  # signature + flags + extension length; trailer -1
    rows = np.frombuffer(
        body,
        dtype=np.dtype([("n", ">i2"), ("l1", ">i4"), ("x", ">f8"), ("l2", ">i4"), ("y", ">f8")]),
    )
    return rows["x"].astype("float64"), rows["y"].astype("float64")


@dataclass(frozen=True)
class Grid:
    """A KDE grid aligned with the global Web Mercator pixel grid: cell size and index window."""

    cell: float
    col0: int
    row0: int
    ncols: int
    nrows: int

    @property
    def left(self) -> float:
        """West edge, EPSG:3857."""
        return -ORIGIN_SHIFT + self.col0 * self.cell

    @property
    def top(self) -> float:
        """North edge, EPSG:3857."""
        return ORIGIN_SHIFT - self.row0 * self.cell


def grid_for(box: Box, cell: float, pad_cells: int) -> Grid:
    """The aligned grid covering ``box`` plus ``pad_cells`` on every side."""
    col0 = math.floor((box.left + ORIGIN_SHIFT) / cell) - pad_cells
    col1 = math.ceil((box.right + ORIGIN_SHIFT) / cell) + pad_cells
    row0 = math.floor((ORIGIN_SHIFT - box.top) / cell) - pad_cells
    row1 = math.ceil((ORIGIN_SHIFT - box.bottom) / cell) + pad_cells
    return Grid(cell, col0, row0, col1 - col0, row1 - row0)


def smoothed_counts(x: np.ndarray, y: np.ndarray, grid: Grid, sigma_cells: float) -> np.ndarray:
    """Points binned on the grid, smoothed by a Gaussian of ``sigma_cells``: counts per cell."""
    cols = np.floor((x - grid.left) / grid.cell).astype(np.int64)
    rows = np.floor((grid.top - y) / grid.cell).astype(np.int64)
    keep = (cols >= 0) & (cols < grid.ncols) & (rows >= 0) & (rows < grid.nrows)
    flat = np.bincount(rows[keep] * grid.ncols + cols[keep], minlength=grid.ncols * grid.nrows)
    counts = flat.reshape(grid.nrows, grid.ncols).astype("float64")
    if sigma_cells > 0:
        counts = ndimage.gaussian_filter(counts, sigma_cells, mode="constant", truncate=TRUNCATE)
    return counts


@dataclass(frozen=True)
class HeatmapStyle:
    """Colour scale of one filter/scope selection."""

    vmax: float
    threshold: float
    scale: str
    colormap: str

    def value(self, density: np.ndarray) -> np.ndarray:
        """Scaled 0..1 position on the ramp."""
        t = np.clip(density / self.vmax, 0.0, 1.0)
        return np.sqrt(t) if self.scale == "sqrt" else t

    def colorize(self, density: np.ndarray) -> np.ndarray:
        """RGBA image: ramp colour, alpha fading in, transparent below the threshold."""
        t = self.value(density)
        lut = colormap_lut(self.colormap)
        rgba = np.zeros(density.shape + (4,), dtype=np.uint8)
        rgba[..., :3] = lut[np.round(t * 255).astype(np.int64)]
        alpha = np.clip(t / ALPHA_RAMP, 0.0, 1.0) * MAX_ALPHA
        alpha[density < self.threshold] = 0
        rgba[..., 3] = alpha.astype(np.uint8)
        rgba[rgba[..., 3] == 0] = 0
        return rgba


class Heatmap:
    """Renders heatmap tiles, the legend and the COG for one bandwidth and colour ramp."""

    name = "heatmap"
    minzoom = 8
    report_derived = True

    def __init__(
        self,
        ctx: TileContext,
        bandwidth_m: float = 400.0,
        colormap: str = "magma",
        scale: str = "sqrt",
        maxzoom: int = 17,
    ) -> None:
        self.ctx = ctx
        self.bandwidth_m = float(bandwidth_m)
        self.colormap = colormap
        self.scale = scale
        self.maxzoom = maxzoom
        colormap_lut(colormap)  # fail early on an unknown ramp
        self._styles: dict[tuple[str, str], HeatmapStyle] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ thresholds and scale
    @property
    def single_peak(self) -> float:
        """Peak density of one isolated report, per km²."""
        return 1e6 / (2 * math.pi * self.bandwidth_m**2)

    def threshold(self, viewer: ViewerLike) -> float:
        """Density below which pixels stay transparent."""
        if is_privileged(viewer):
            return 0.25 * self.single_peak
        return self.ctx.k * self.single_peak

    def reset(self) -> None:
        """Forget computed colour scales (after a full refresh)."""
        with self._lock:
            self._styles.clear()

    def style(self, conn: psycopg.Connection, filters: Filters, viewer: ViewerLike) -> HeatmapStyle:
        """The colour scale of this selection (computed once per filters and scope)."""
        memo = (filters.key, scope_of(viewer))
        with self._lock:
            found = self._styles.get(memo)
        if found is not None:
            return found
        x, y = fetch_xy(conn, *self._points_sql(None, filters, viewer))
        vmax = self._domain_max(x, y, viewer)
        style = HeatmapStyle(vmax, self.threshold(viewer), self.scale, self.colormap)
        with self._lock:
            self._styles[memo] = style
        return style

    def _domain_max(self, x: np.ndarray, y: np.ndarray, viewer: ViewerLike) -> float:
        floor = 4 * self.threshold(viewer)
        if len(x) == 0:
            return nice_ceil(floor)
        lat = to_lonlat(0.0, float(np.median(y)))[1]
        scale = mercator_scale(lat)
        sigma = self.bandwidth_m * scale
        cell = sigma / 4
        box = Box(float(x.min()), float(y.min()), float(x.max()), float(y.max()))
        grid = grid_for(box, cell, int(math.ceil(TRUNCATE * 4)) + 1)
        counts = smoothed_counts(x, y, grid, sigma / cell)
        density = counts / ((cell / scale) ** 2 / 1e6)
        seen = density[density >= self.threshold(viewer)]
        if seen.size == 0:
            return nice_ceil(floor)
        return nice_ceil(max(float(np.quantile(seen, 0.995)), floor))

    # ------------------------------------------------------------------ SQL
    def _points_sql(
        self, box: Box | None, filters: Filters, viewer: ViewerLike, srid: int = 3857
    ) -> tuple[sql.Composed, dict[str, object]]:
        conds, params = filters.where("r")
        if box is not None:
            conds.insert(
                0,
                sql.SQL(
                    "r.geom && ST_Transform(ST_MakeEnvelope(%(bx0)s, %(by0)s, %(bx1)s, "
                    "%(by1)s, 3857), 4326)"
                ),
            )
            params.update({"bx0": box.left, "by0": box.bottom, "bx1": box.right, "by1": box.top})
        conds += scope_conditions(viewer)
        query = sql.SQL(
            "SELECT ST_X(p)::float8, ST_Y(p)::float8 FROM (SELECT ST_Transform(r.geom, {srid}) "
            "AS p "
            "FROM reports r WHERE {where}) s"
        ).format(srid=sql.Literal(int(srid)), where=where(conds))
        return query, params

    # ------------------------------------------------------------------ tiles
    def geometry(self, tile: Tile) -> tuple[Box, float, float, float]:
        """Tile box, sigma (3857 m), cell size (3857 m) and ground scale factor of a tile."""
        box = xy_bounds(tile)
        lat = to_lonlat(0.0, (box.bottom + box.top) / 2)[1]
        scale = mercator_scale(lat)
        sigma = self.bandwidth_m * scale
        px = pixel_size(tile.z, TILE_PX)
        m = max(0, math.floor(math.log2(max(sigma / 4 / px, 1.0))))
        return box, sigma, px * 2**m, scale

    def reach(self, tile: Tile) -> float:
        """How far (3857 m) from a tile a report still changes its pixels."""
        _, sigma, cell, _ = self.geometry(tile)
        return TRUNCATE * sigma + 2 * cell

    def density(
        self, conn: psycopg.Connection, tile: Tile, filters: Filters, viewer: ViewerLike
    ) -> np.ndarray:
        """256 x 256 density (reports per km²) at the tile's pixel centres."""
        box, sigma, cell, scale = self.geometry(tile)
        x, y = fetch_xy(conn, *self._points_sql(box.expand(self.reach(tile)), filters, viewer))
        grid = grid_for(box, cell, int(math.ceil(TRUNCATE * sigma / cell)) + 2)
        counts = smoothed_counts(x, y, grid, sigma / cell)
        per_km2 = counts / ((cell / scale) ** 2 / 1e6)
        px = pixel_size(tile.z, TILE_PX)
        centres = (np.arange(TILE_PX) + 0.5) * px
        cols = (box.left + centres - grid.left) / cell - 0.5
        rows = (grid.top - (box.top - centres)) / cell - 0.5
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return ndimage.map_coordinates(per_km2, [rr, cc], order=1, mode="nearest")

    def render(
        self, conn: psycopg.Connection, tile: Tile, filters: Filters, viewer: ViewerLike
    ) -> bytes:
        """PNG bytes of the tile, or ``b""`` when every pixel is transparent."""
        style = self.style(conn, filters, viewer)
        rgba = style.colorize(self.density(conn, tile, filters, viewer))
        if not rgba[..., 3].any():
            return b""
        return png_rgba(rgba)

    # ------------------------------------------------------------------ invalidation
    def tile_box(self, fp: Footprint, z: int, res: int | None, ctx: TileContext) -> Box | None:
        """The report's point grown by the kernel's reach at this zoom."""
        x, y = fp.xy
        probe = Tile(z, *_tile_of(x, y, z))
        return Box(x, y, x, y).expand(self.reach(probe))

    def touches(self, fp: Footprint, tile: Tile, res: int | None, ctx: TileContext) -> bool:
        """The point lies within the kernel's reach of the tile."""
        x, y = fp.xy
        b = xy_bounds(tile)
        dx = max(b.left - x, 0.0, x - b.right)
        dy = max(b.bottom - y, 0.0, y - b.top)
        return math.hypot(dx, dy) <= self.reach(tile)

    # ------------------------------------------------------------------ legend
    def legend(
        self, conn: psycopg.Connection, filters: Filters, viewer: ViewerLike
    ) -> dict[str, object]:
        """JSON legend: unit, bandwidth, domain, scale and colour stops."""
        style = self.style(conn, filters, viewer)
        lut = colormap_lut(self.colormap)
        stops = []
        for i in range(LEGEND_STOPS):
            t = i / (LEGEND_STOPS - 1)
            value = style.vmax * (t * t if self.scale == "sqrt" else t)
            r, g, b = (int(v) for v in lut[round(t * 255)])
            stops.append({"value": round(value, 3), "color": f"#{r:02x}{g:02x}{b:02x}"})
        return {
            "title": "Report density",
            "unit": "reports per km²",
            "method": "Gaussian kernel density estimate",
            "bandwidth_m": self.bandwidth_m,
            "colormap": self.colormap,
            "scale": self.scale,
            "domain": [0.0, style.vmax],
            "transparent_below": round(style.threshold, 3),
            "scope": scope_of(viewer),
            "filters": dict(filters.items()),
            "stops": stops,
        }

    def legend_png(self, width: int = 256, height: int = 16) -> bytes:
        """A horizontal colour bar (opaque), low values on the left."""
        lut = colormap_lut(self.colormap)
        idx = np.round(np.linspace(0, 255, width)).astype(np.int64)
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = lut[idx][None, :, :]
        rgba[..., 3] = 255
        return png_rgba(rgba)

    # ------------------------------------------------------------------ COG export
    def export_cog(
        self,
        conn: psycopg.Connection,
        out: Path | str,
        filters: Filters,
        viewer: ViewerLike,
        *,
        resolution_m: float = 50.0,
    ) -> dict[str, object]:
        """Write the density surface (reports/km², float32, EPSG:32748) as a validated COG.

        Returns a summary (path, size, points, vmax, validation warnings).

        Raises
        ------
        petalapor.errors.DataError
            rio-cogeo finds the output invalid.
        """
        import rasterio
        from affine import Affine
        from rasterio.io import MemoryFile
        from rio_cogeo.cogeo import cog_translate, cog_validate
        from rio_cogeo.profiles import cog_profiles

        from petalapor.errors import DataError

        x, y = fetch_xy(conn, *self._points_sql(None, filters, viewer, srid=32748))
        extent = conn.execute(
            "SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1 "
            "FROM (SELECT ST_Extent(geom_m) AS e FROM boundaries) s"
        ).fetchone()
        values = list(extent.values()) if isinstance(extent, dict) else list(extent or ())
        if values and values[0] is not None:
            x0, y0, x1, y1 = values
        elif len(x):
            x0, y0, x1, y1 = float(x.min()), float(y.min()), float(x.max()), float(y.max())
        else:
            raise DataError("nothing to export: no boundaries and no reports match the filters")
        res = float(resolution_m)
        pad = TRUNCATE * self.bandwidth_m
        left = math.floor((x0 - pad) / res) * res
        top = math.ceil((y1 + pad) / res) * res
        ncols = int(math.ceil((x1 + pad - left) / res))
        nrows = int(math.ceil((top - (y0 - pad)) / res))
        cols = np.floor((x - left) / res).astype(np.int64)
        rows = np.floor((top - y) / res).astype(np.int64)
        keep = (cols >= 0) & (cols < ncols) & (rows >= 0) & (rows < nrows)
        counts = np.bincount(rows[keep] * ncols + cols[keep], minlength=nrows * ncols).reshape(
            nrows, ncols
        )
        smooth = ndimage.gaussian_filter(
            counts.astype("float64"), self.bandwidth_m / res, mode="constant", truncate=TRUNCATE
        )
        density = (smooth / (res * res / 1e6)).astype("float32")
        if not is_privileged(viewer):
            density[density < self.threshold(viewer)] = 0.0  # same k rule as the tiles
        profile = {
            "driver": "GTiff",
            "width": ncols,
            "height": nrows,
            "count": 1,
            "dtype": "float32",
            "crs": "EPSG:32748",
            "transform": Affine.translation(left, top) @ Affine.scale(res, -res),
        }
        tags = {
            "UNITS": "reports per km2",
            "METHOD": "Gaussian kernel density estimate",
            "BANDWIDTH_M": str(self.bandwidth_m),
            "SCOPE": scope_of(viewer),
            "FILTERS": filters.key or "(none)",
            "POINTS": str(int(keep.sum())),
            "CREATED": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(density, 1)
                dst.update_tags(**tags)
                dst.set_band_description(1, "report density (reports per km2)")
            with mem.open() as src:
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                    cog_translate(
                        src,
                        str(out),
                        cog_profiles.get("deflate"),
                        in_memory=True,
                        quiet=True,
                        overview_resampling="average",
                        forward_band_tags=True,
                        additional_cog_metadata=tags,
                    )
        valid, errors, warnings = cog_validate(str(out), quiet=True)
        if not valid:
            raise DataError(f"{out}: not a valid COG: {'; '.join(errors)}")
        return {
            "path": str(out),
            "width": ncols,
            "height": nrows,
            "resolution_m": res,
            "crs": "EPSG:32748",
            "points": int(keep.sum()),
            "max_density": float(density.max()) if density.size else 0.0,
            "warnings": warnings,
        }


def _tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    x0, _, y0, _ = tile_range(Box(x, y, x, y), z)
    return x0, y0


__all__ = ["Heatmap", "HeatmapStyle", "PNG_MEDIA_TYPE", "png_rgba"]
