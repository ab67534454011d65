"""The tile grid: WebMercatorQuad from morecantile, tile parsing and bounds.

Validation: ``z`` must be an integer in 0..22 and ``x``/``y`` integers in
0..2**z-1, else :class:`~petalapor.errors.InvalidParameterError` (HTTP 400)
naming the bad value.  Tiles outside Jakarta are *not* rejected: they are
valid, just empty (HTTP 204 like every other empty tile).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import h3
import morecantile

from petalapor.errors import InvalidParameterError

#: The one tile matrix set (EPSG:3857, 256 px tiles).
TMS = morecantile.tms.get("WebMercatorQuad")
#: Largest zoom served.
MAX_ZOOM = 22
#: Half the Web Mercator world width, metres.
ORIGIN_SHIFT = 20037508.342789244
#: Lon/lat box of DKI Jakarta with Kepulauan Seribu (default TileJSON bounds).
JAKARTA_BOUNDS: tuple[float, float, float, float] = (106.35, -6.40, 107.00, -5.15)
#: Default map centre (Monas) and zoom.
JAKARTA_CENTER: tuple[float, float, int] = (106.8272, -6.1754, 11)
#: H3 resolutions kept on every report (``reports.h3_r7`` .. ``h3_r11``).
H3_RESOLUTIONS: tuple[int, ...] = (7, 8, 9, 10, 11)


class Tile(NamedTuple):
    """One tile address."""

    z: int
    x: int
    y: int


class Box(NamedTuple):
    """A box ``(left, bottom, right, top)``."""

    left: float
    bottom: float
    right: float
    top: float

    def expand(self, margin: float) -> "Box":
        """The box grown by ``margin`` on every side."""
        return Box(self.left - margin, self.bottom - margin, self.right + margin, self.top + margin)

    def intersects(self, other: "Box") -> bool:
        """True when the boxes share at least a boundary point."""
        return not (
            other.left > self.right
            or other.right < self.left
            or other.bottom > self.top
            or other.top < self.bottom
        )

    def contains(self, x: float, y: float) -> bool:
        """True when the point is inside or on the edge."""
        return self.left <= x <= self.right and self.bottom <= y <= self.top


def _as_int(name: str, value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if not text.isdigit() or len(text) > 8:
        raise InvalidParameterError(f"tile {name} must be a non-negative integer, got {text!r}")
    return int(text)


def parse_tile(z: str | int, x: str | int, y: str | int) -> Tile:
    """Check a z/x/y address; InvalidParameterError (400) names what is wrong.

    Examples
    --------
    >>> parse_tile("11", "1631", "1059")
    Tile(z=11, x=1631, y=1059)
    """
    zi, xi, yi = _as_int("z", z), _as_int("x", x), _as_int("y", y)
    if zi > MAX_ZOOM:
        raise InvalidParameterError(f"zoom {zi} is out of range 0..{MAX_ZOOM}")
    limit = 2**zi - 1
    if xi > limit:
        raise InvalidParameterError(f"x {xi} is out of range 0..{limit} at zoom {zi}")
    if yi > limit:
        raise InvalidParameterError(f"y {yi} is out of range 0..{limit} at zoom {zi}")
    return Tile(zi, xi, yi)


def tile_size(z: int) -> float:
    """Width of one tile at zoom ``z`` in Web Mercator metres."""
    return 2 * ORIGIN_SHIFT / 2**z


def pixel_size(z: int, tile_px: int = 256) -> float:
    """Web Mercator metres per pixel at zoom ``z``."""
    return tile_size(z) / tile_px


@lru_cache(maxsize=65536)
def xy_bounds(tile: Tile) -> Box:
    """The tile's box in EPSG:3857 (exact arithmetic, same values as morecantile)."""
    size = tile_size(tile.z)
    left = -ORIGIN_SHIFT + tile.x * size
    top = ORIGIN_SHIFT - tile.y * size
    return Box(left, top - size, left + size, top)


def lonlat_bounds(tile: Tile) -> Box:
    """The tile's box in lon/lat."""
    b = TMS.bounds(morecantile.Tile(tile.x, tile.y, tile.z))
    return Box(b.left, b.bottom, b.right, b.top)


def to_mercator(lon: float, lat: float) -> tuple[float, float]:
    """Lon/lat to EPSG:3857 metres."""
    x = math.radians(lon) * 6378137.0
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * 6378137.0
    return x, y


def to_lonlat(x: float, y: float) -> tuple[float, float]:
    """EPSG:3857 metres to lon/lat."""
    lon = math.degrees(x / 6378137.0)
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat


def mercator_box(box: Box) -> Box:
    """A lon/lat box in EPSG:3857 (Mercator keeps axis-aligned boxes aligned)."""
    x0, y0 = to_mercator(box.left, box.bottom)
    x1, y1 = to_mercator(box.right, box.top)
    return Box(x0, y0, x1, y1)


def tile_range(box: Box, z: int) -> tuple[int, int, int, int]:
    """Inclusive ``(xmin, xmax, ymin, ymax)`` of the tiles meeting a 3857 box at zoom ``z``."""
    size = tile_size(z)
    last = 2**z - 1

    def clamp(v: float) -> int:
        return min(max(int(math.floor(v)), 0), last)

    xmin = clamp((box.left + ORIGIN_SHIFT) / size)
    xmax = clamp((box.right + ORIGIN_SHIFT) / size)
    ymin = clamp((ORIGIN_SHIFT - box.top) / size)
    ymax = clamp((ORIGIN_SHIFT - box.bottom) / size)
    return xmin, xmax, ymin, ymax


def mercator_scale(lat: float) -> float:
    """Web Mercator metres per ground metre at latitude ``lat``."""
    return 1.0 / math.cos(math.radians(lat))


def _zoom_to_resolution(z: int) -> int:
    """H3 resolution of the hexes at zoom ``z``: <=9: 7, 10: 8, 11-12: 9, 13-14: 10, >=15: 11."""
    if z <= 9:
        return 7
    if z == 10:
        return 8
    if z <= 12:
        return 9
    if z <= 14:
        return 10
    return 11


try:  # gis.hexes owns the mapping when it exists; the fallback is the same table
    from gis.hexes import zoom_to_resolution as zoom_to_resolution  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the other module being present
    zoom_to_resolution = _zoom_to_resolution


def cluster_resolution(z: int) -> int:
    """H3 resolution of report clusters below the cluster zoom: about 10-20 px per cluster cell."""
    if z <= 11:
        return 7
    if z == 12:
        return 8
    if z == 13:
        return 9
    return 10


@lru_cache(maxsize=16)
def hex_margin(res: int) -> float:
    """Web Mercator metres covering any H3 cell's diameter at ``res`` near Jakarta (slack)."""
    edge = h3.average_hexagon_edge_length(res, unit="m")
    return 3.0 * edge * mercator_scale(7.0)
