"""``/layers``: the context-layer catalogue, the ISPU raster tiles, coverage and readings.

* ``GET /layers``, ``GET /layers/{name}``: every registered layer with its
  attribution, licence, ``synthetic`` flag, kind and tile URL template (vector
  layers: ``/tiles/{name}/{z}/{x}/{y}.mvt``, served by the tiles router;
  ``ispu_surface``: the PNG endpoint below) and what is stored for it.  The
  ``jakwifi`` entry follows the stored data: synthetic (and saying so in its
  attribution) until a real export has been imported.
* ``GET /layers/ispu_surface/{z}/{x}/{y}.png[?period=YYYY-MM]``: a 256 x 256
  RGBA PNG of the ISPU surface in the official category colours, transparent
  outside the city.  Without ``period`` the current surface is served (see
  ``petalapor layers surface``); with it, the surface built for that month.
  Status codes, consistently: **200** PNG when the tile intersects the
  surface's raster (pixels outside the city are transparent); **204** (no
  body) when it does not intersect it, e.g. out at sea or outside Jakarta;
  **404** when no surface exists (for that period) or its file is missing;
  **400** for a tile index outside the zoom's matrix.
* ``GET /layers/ispu_surface/legend``: categories, ranges and colours.
* ``GET /layers/jakwifi/coverage``: hotspots per RW / kelurahan, density,
  nearest-hotspot distance and share of area within 100 m / 300 m, as JSON rows
  or GeoJSON.
* ``GET /layers/ispu/readings``: the stored daily readings, derived next to
  published values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path as FilePath
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse

from api.deps import get_conn
from db import layers as store
from petalapor.errors import InvalidParameterError, NotFoundError

GEOJSON = "application/geo+json"
#: A pooled connection for the request.
Conn = Annotated[psycopg.Connection, Depends(get_conn)]
SURFACE = "ispu_surface"


class Unit(str, Enum):
    """Coverage units."""

    rw = "rw"
    kelurahan = "kelurahan"


class Format(str, Enum):
    """Coverage output formats."""

    json = "json"
    geojson = "geojson"


#: What each coverage field means (returned with the JSON rows).
COVERAGE_FIELDS: dict[str, str] = {
    "n_hotspots": "hotspots snapped to the unit (RW first, kelurahan rule where no RW)",
    "per_km2": "n_hotspots per km2 of the unit's area",
    "nearest_m": "metres (UTM 48S) from the unit's centroid to the nearest hotspot anywhere",
    "share_100m": "share of the unit's area within 100 m of a hotspot",
    "share_300m": "share of the unit's area within 300 m of a hotspot",
}


@dataclass
class LayerFactory:
    """Registers the ``/layers`` endpoints.

    Attributes
    ----------
    raster_dir
        Where surface files are looked up by name when their recorded path
        has moved (``var/rasters``).
    vector_tiles, raster_tiles
        URL templates advertised in the catalogue.
    tile_cache, current_tile_cache
        ``Cache-Control`` of a tile of a given period / of the current surface.
    """

    router: APIRouter = field(default_factory=APIRouter)
    raster_dir: FilePath | None = None
    vector_tiles: str = "/tiles/{name}/{{z}}/{{x}}/{{y}}.mvt"
    raster_tiles: str = "/layers/{name}/{{z}}/{{x}}/{{y}}.png"
    tile_cache: str = "public, max-age=86400"
    current_tile_cache: str = "public, max-age=600"
    max_readings: int = 20_000

    def __post_init__(self) -> None:
        self.register_routes()

    # ------------------------------------------------------------------ catalogue

    def describe(self, conn: psycopg.Connection, name: str) -> dict[str, Any]:
        """A layer's public description with its tile URL and what is stored for it."""
        from layers import registry

        store.sync_registry(conn)  # JakWifi described as stored (real export or synthetic)
        layer = registry.get(name)
        info = layer.as_dict()
        info["extra"] = {k: v for k, v in info["extra"].items() if k not in ("colormap", "render")}
        if layer.kind == "vector":
            info["tiles"] = [self.vector_tiles.format(name=name)]
        else:
            info["tiles"] = [self.raster_tiles.format(name=name)]
            info["legend"] = f"/layers/{name}/legend"
        info["stored"] = self._stored(conn, name, layer.table)
        return info

    def _stored(self, conn: psycopg.Connection, name: str, table: str | None) -> dict[str, Any]:
        """Row count and current import (vector), or the current surface (raster)."""
        if name == SURFACE:
            try:
                rec = store.find_surface(conn, raster_dir=self.raster_dir)
            except NotFoundError:
                return {"loaded": False}
            return {
                "loaded": True,
                "period": rec.period,
                "start": rec.period_start.isoformat(),
                "end": rec.period_end.isoformat(),
                "power": rec.power,
                "cell_size": rec.cell_size,
                "stations": rec.stations,
            }
        out: dict[str, Any] = {"loaded": False}
        if table in ("layer_jakwifi", "layer_ispu_stations"):
            n = conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()  # noqa: S608 - fixed names
            out = {"loaded": n["n"] > 0, "features": n["n"]}
        source = {"jakwifi": "jakwifi", "ispu_stations": "ispu"}.get(name)
        imp = store.current_import(conn, source) if source else None
        if imp is not None:
            keep = (
                "read",
                "valid",
                "quarantined",
                "disagreements",
                "category_agreement",
                "first_date",
                "last_date",
                "per_kota",
                "snap",
                "seed",
            )
            out["import"] = {
                "id": imp["id"],
                "source_file": FilePath(imp["source_file"] or "").name,
                "imported_at": imp["finished_at"],
                "synthetic": imp["synthetic"],
                "summary": {k: v for k, v in imp["summary"].items() if k in keep},
            }
        return out

    # ------------------------------------------------------------------ routes

    def register_routes(self) -> None:
        """Add the catalogue, raster tile, legend, coverage and readings endpoints."""
        self._catalogue()
        self._surface()
        self._coverage()
        self._readings()

    def _catalogue(self) -> None:
        @self.router.get(
            "/layers", tags=["layers"], summary="Every context layer, with attribution"
        )
        def list_layers(conn: Conn) -> dict:
            from layers import registry

            return {"layers": [self.describe(conn, layer.name) for layer in registry.all_layers()]}

        @self.router.get(
            "/layers/{name}",
            tags=["layers"],
            summary="One context layer",
            responses={404: {"description": "No such layer"}},
        )
        def get_layer(
            name: Annotated[str, Path(max_length=63, pattern=r"^[a-z_][a-z0-9_]*$")],
            conn: Conn,
        ) -> dict:
            return self.describe(conn, name)

    def _surface(self) -> None:
        @self.router.get(
            "/layers/ispu_surface/legend",
            tags=["layers"],
            summary="ISPU categories, ranges and colours of the surface tiles",
        )
        def legend(conn: Conn) -> dict:
            from layers.ispu import CATEGORIES, CATEGORY_EDGES

            return {
                "layer": SURFACE,
                "title": "ISPU (P.14/MENLHK/SETJEN/KUM.1/7/2020)",
                "categories": [
                    {
                        "category": c.code,
                        "label": c.label,
                        "range": [c.low, c.high],
                        "colour": c.hex,
                        "colour_name": c.colour_name,
                    }
                    for c in CATEGORIES
                ],
                "edges": list(CATEGORY_EDGES),
                "rounding": "values are rounded half-up to integers before the category is chosen",
                "nodata": "transparent (outside mainland Jakarta; Kepulauan Seribu is excluded)",
                "surface": self._stored(conn, SURFACE, None),
            }

        @self.router.get(
            "/layers/ispu_surface/{z}/{x}/{y}.png",
            tags=["layers"],
            summary="ISPU surface tile (PNG, category colours, transparent outside the city)",
            response_class=Response,
            responses={
                200: {"content": {"image/png": {}}},
                204: {"description": "The tile does not intersect the surface"},
                404: {"description": "No surface (for that period)"},
            },
        )
        def ispu_tile(
            conn: Conn,
            z: Annotated[int, Path(ge=0, le=24)],
            x: Annotated[int, Path(ge=0)],
            y: Annotated[int, Path(ge=0)],
            period: Annotated[
                str | None,
                Query(
                    pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                    description="Month of the surface (YYYY-MM); default the current surface.",
                    examples=["2025-02"],
                ),
            ] = None,
        ) -> Response:
            from layers.surface import render_tile

            if x >= 2**z or y >= 2**z:
                raise InvalidParameterError(
                    f"tile {z}/{x}/{y}: x and y must be below {2**z} at zoom {z}"
                )
            rec = store.find_surface(conn, period, raster_dir=self.raster_dir)
            headers = {
                "Cache-Control": self.tile_cache if period else self.current_tile_cache,
                "X-ISPU-Period": rec.period,
            }
            try:
                png = render_tile(rec.path, z, x, y)
            except NotFoundError:
                return Response(status_code=204, headers=headers)
            return Response(png, media_type="image/png", headers=headers)

    def _coverage(self) -> None:
        @self.router.get(
            "/layers/jakwifi/coverage",
            tags=["layers"],
            summary="JakWifi coverage per RW or kelurahan",
            responses={200: {"content": {"application/json": {}, GEOJSON: {}}}},
        )
        def coverage(
            conn: Conn,
            unit: Unit = Unit.rw,
            format: Format = Format.json,  # noqa: A002 - the public parameter name
            code: Annotated[str | None, Query(max_length=32, pattern=r"^[0-9A-Za-z_.-]+$")] = None,
            simplify: Annotated[
                float | None, Query(ge=0, le=1000, description="GeoJSON simplification, metres.")
            ] = None,
        ) -> Response:
            imp = store.current_import(conn, "jakwifi")
            if imp is None:
                raise NotFoundError(
                    "no JakWifi hotspots loaded: run `petalapor layers generate-jakwifi`"
                )
            rows = store.coverage_rows(conn, unit.value, code=code)
            if code and not rows:
                raise NotFoundError(f"no {unit.value} with code {code!r}")
            if format is Format.geojson:
                body = store.coverage_geojson(conn, unit.value, code=code, simplify_m=simplify)
                return Response(body, media_type=GEOJSON)
            return JSONResponse(
                _jsonable(
                    {
                        "unit": unit.value,
                        "synthetic": imp["synthetic"],
                        "import_id": imp["id"],
                        "fields": COVERAGE_FIELDS,
                        "count": len(rows),
                        "units": rows,
                    }
                )
            )

    def _readings(self) -> None:
        @self.router.get(
            "/layers/ispu/readings",
            tags=["layers"],
            summary="Daily ISPU readings: sub-indices, derived and published ISPU and category",
        )
        def readings(
            conn: Conn,
            station: Annotated[
                str | None, Query(max_length=16, pattern=r"^[A-Za-z]{3}\d{1,3}$", examples=["DKI3"])
            ] = None,
            start: Annotated[
                dt.date | None, Query(alias="from", description="First day (inclusive).")
            ] = None,
            end: Annotated[
                dt.date | None, Query(alias="to", description="Last day (inclusive).")
            ] = None,
            limit: Annotated[int | None, Query(ge=1)] = None,
        ) -> Response:
            if start and end and end < start:
                raise InvalidParameterError(f"'to' ({end}) is before 'from' ({start})")
            limit = min(limit or self.max_readings, self.max_readings)
            rows = store.reading_rows(conn, station=station, start=start, end=end, limit=limit)
            return JSONResponse(
                _jsonable(
                    {
                        "station": station.upper() if station else None,
                        "from": start,
                        "to": end,
                        "count": len(rows),
                        "truncated": len(rows) == limit,
                        "readings": rows,
                    }
                )
            )


def _jsonable(value: Any) -> Any:
    """Dates to ISO strings, NaN to None, recursively."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value
