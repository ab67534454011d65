"""Shared request dependencies: the pool, a connection, typed query parameters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import Query, Request
from psycopg_pool import ConnectionPool

from petalapor.errors import InvalidParameterError


def get_pool(request: Request) -> ConnectionPool:
    """The app's connection pool (opened by the lifespan)."""
    return request.app.state.pool


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    """One pooled connection for the duration of a request."""
    with request.app.state.pool.connection() as conn:
        yield conn


BBox = tuple[float, float, float, float]


def parse_bbox(value: str | None) -> BBox | None:
    """``minx,miny,maxx,maxy`` in lon/lat, checked; None passes through."""
    if value is None or value == "":
        return None
    parts = value.split(",")
    if len(parts) != 4:
        raise InvalidParameterError(f"bbox must be minx,miny,maxx,maxy (got {value!r})")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError as exc:
        raise InvalidParameterError(f"bbox values must be numbers (got {value!r})") from exc
    if not (
        -180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90
    ):
        raise InvalidParameterError(f"bbox out of lon/lat range (got {value!r})")
    if minx >= maxx or miny >= maxy:
        raise InvalidParameterError(f"bbox minimum must be below maximum (got {value!r})")
    return (minx, miny, maxx, maxy)


@dataclass
class BBoxParams:
    """Optional bounding-box filter."""

    bbox: Annotated[
        str | None,
        Query(
            description="Filter by lon/lat box: minx,miny,maxx,maxy (EPSG:4326).",
            examples=["106.8,-6.2,106.85,-6.15"],
        ),
    ] = None

    def __post_init__(self) -> None:
        self.box = parse_bbox(self.bbox)
