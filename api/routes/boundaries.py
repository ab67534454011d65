"""``/boundaries/{level}``: administrative polygons as GeoJSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Response

from api.deps import BBoxParams, get_conn
from petalapor.errors import InvalidParameterError, NotFoundError


class Level(str, Enum):
    """Boundary levels, coarse to fine."""

    kota = "kota"
    kecamatan = "kecamatan"
    kelurahan = "kelurahan"
    rw = "rw"


GEOJSON = "application/geo+json"

_FEATURE = """
json_build_object(
    'type', 'Feature',
    'id', code,
    'geometry', ST_AsGeoJSON({geom}, 6)::json,
    'properties', json_build_object(
        'level', level, 'code', code, 'name', name, 'parent_code', parent_code,
        'kelurahan_code', kelurahan_code, 'kecamatan_code', kecamatan_code,
        'kota_code', kota_code, 'area_km2', round((area_m2 / 1e6)::numeric, 4), 'n_parts', n_parts
    )
)
"""


def _geom_expr(simplify: float | None) -> str:
    """Geometry expression; simplification is done in metres (UTM 48S)."""
    if simplify:
        return "ST_Transform(ST_SimplifyPreserveTopology(geom_m, %(tol)s), 4326)"
    return "geom"


@dataclass
class BoundaryFactory:
    """Registers ``/boundaries/{level}`` and ``/boundaries/{level}/{code}``."""

    router: APIRouter = field(default_factory=APIRouter)
    max_features: int = 5000

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add the two boundary endpoints."""

        @self.router.get(
            "/boundaries/{level}",
            tags=["boundaries"],
            summary="Boundaries of one level as a GeoJSON FeatureCollection",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}}},
        )
        def boundaries(
            level: Level,
            bbox: Annotated[BBoxParams, Depends()],
            simplify: Annotated[
                float | None,
                Query(ge=0, le=1000, description="Simplification tolerance in metres (0 = none)."),
            ] = None,
            parent: Annotated[
                str | None, Query(description="Only children of this parent code.")
            ] = None,
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            where = ["level = %(level)s"]
            params: dict[str, object] = {
                "level": level.value,
                "tol": simplify,
                "limit": self.max_features,
            }
            if bbox.box:
                where.append("geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)")
                params.update(dict(zip(("x0", "y0", "x1", "y1"), bbox.box, strict=True)))
            if parent:
                where.append("parent_code = %(parent)s")
                params["parent"] = parent
            query = (
                "SELECT json_build_object('type', 'FeatureCollection', 'features', "
                "coalesce(json_agg(f ORDER BY code), '[]'::json))::text AS body FROM ("
                f"SELECT code, {_FEATURE.format(geom=_geom_expr(simplify))} AS f FROM boundaries "
                f"WHERE {' AND '.join(where)} ORDER BY code LIMIT %(limit)s) s"
            )
            body = conn.execute(query, params).fetchone()["body"]
            return Response(body, media_type=GEOJSON)

        @self.router.get(
            "/boundaries/{level}/{code}",
            tags=["boundaries"],
            summary="One boundary as a GeoJSON Feature",
            response_class=Response,
            responses={200: {"content": {GEOJSON: {}}}, 404: {"description": "No such code"}},
        )
        def boundary(
            level: Level,
            code: Annotated[str, Path(max_length=32, pattern=r"^[0-9A-Za-z_.-]+$")],
            simplify: Annotated[float | None, Query(ge=0, le=1000)] = None,
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            query = (
                f"SELECT {_FEATURE.format(geom=_geom_expr(simplify))}::text AS body "
                "FROM boundaries WHERE level = %(level)s AND code = %(code)s"
            )
            row = conn.execute(
                query, {"level": level.value, "code": code, "tol": simplify}
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no {level.value} with code {code!r}")
            return Response(row["body"], media_type=GEOJSON)

        _ = InvalidParameterError  # raised by the bbox dependency
