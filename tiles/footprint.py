"""Where one report shows up in tiles: the input of cache invalidation.

A :class:`Footprint` is one version of a report (before or after a change):
its point, its H3 cells at resolutions 7-11 and the boxes of the RW and
kelurahan polygons it is counted in.  Each report-derived layer turns a
footprint into the exact tiles whose content depends on it
(``MVTLayer.touches``); the cache drops those and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import h3
import shapely

from tiles.tms import H3_RESOLUTIONS, Box, to_mercator


@lru_cache(maxsize=65536)
def hex_polygon(cell: int) -> shapely.Polygon:
    """The H3 cell's polygon in EPSG:3857."""
    ring = [to_mercator(lng, lat) for lat, lng in h3.cell_to_boundary(h3.int_to_str(cell))]
    return shapely.Polygon(ring)


def hex_box(cell: int) -> Box:
    """Bounding box of the H3 cell in EPSG:3857."""
    return Box(*hex_polygon(cell).bounds)


@dataclass(frozen=True)
class Footprint:
    """One report version: point, H3 cells, and the (code, EPSG:3857 box) of its RW/kelurahan."""

    lon: float
    lat: float
    cells: Mapping[int, int] = field(default_factory=dict)
    areas: Mapping[str, tuple[tuple[str, Box], ...]] = field(default_factory=dict)

    @property
    def xy(self) -> tuple[float, float]:
        """The point in EPSG:3857."""
        return to_mercator(self.lon, self.lat)

    def cell(self, res: int) -> int:
        """The H3 cell at ``res`` (the stored one when valid, else computed from the point)."""
        known = self.cells.get(res)
        if known is not None and h3.is_valid_cell(h3.int_to_str(int(known))):
            return int(known)
        return h3.str_to_int(h3.latlng_to_cell(self.lat, self.lon, res))  # none or invalid stored

    @classmethod
    def from_point(
        cls, lon: float, lat: float, areas: Mapping[str, tuple[tuple[str, Box], ...]] | None = None
    ) -> "Footprint":
        """A footprint computed from the point alone (cells with h3)."""
        cells = {r: h3.str_to_int(h3.latlng_to_cell(lat, lon, r)) for r in H3_RESOLUTIONS}
        return cls(lon, lat, cells, dict(areas or {}))

    def as_json(self) -> list:
        """Compact JSON form for NOTIFY payloads."""
        return [
            round(self.lon, 7),
            round(self.lat, 7),
            [self.cells.get(r) for r in H3_RESOLUTIONS],
            {lvl: [[code, *box] for code, box in found] for lvl, found in self.areas.items()},
        ]

    @classmethod
    def from_json(cls, item: list) -> "Footprint":
        """Inverse of :meth:`as_json`."""
        lon, lat, cells, areas = item
        return cls(
            float(lon),
            float(lat),
            {r: int(c) for r, c in zip(H3_RESOLUTIONS, cells, strict=True) if c is not None},
            {lvl: tuple((str(a[0]), Box(*a[1:])) for a in found) for lvl, found in areas.items()},
        )
