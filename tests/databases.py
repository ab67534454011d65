"""Throw-away databases on the test server: made, migrated, filled, dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from db.cluster import create_database
from db.migrate import migrate


def same_server(dsn: str, name: str) -> str:
    """Database ``name`` on the server of ``dsn``; a URL stays a URL (usable as DATABASE_URL)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


@contextmanager
def throwaway_database(
    dsn: str,
    prefix: str = "t",
    *,
    migrated: bool = True,
    boundary_set=None,  # noqa: ANN001 - gis.boundaries.BoundarySet
    catalog: bool = False,
) -> Iterator[str]:
    """A new database (migrated; with ``boundary_set`` stored, the catalog synced), then dropped."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_database(conn, name)
    url = same_server(dsn, name)
    try:
        if migrated:
            migrate(url)
        if boundary_set is not None:
            from db.boundaries import store_boundary_set

            store_boundary_set(url, boundary_set)
        if catalog:
            from petalapor.catalog import sync_catalog

            with psycopg.connect(url) as conn:
                sync_catalog(conn)
        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def tile_test_database(
    dsn: str,
    boundary_set,  # noqa: ANN001 - gis.boundaries.BoundarySet
    *,
    reports: int = 4000,
    seed: int = 11,
) -> Iterator[str]:
    """A throw-away database with ``reports`` seeded synthetic reports (:mod:`tiles.synthetic`).

    The tile queue is left as the triggers filled it (one ``full`` row for a
    large batch), so a starting tile service refreshes first.
    """
    from tiles.synthetic import RwPolygons, copy_reports, synthetic_reports

    with throwaway_database(dsn, "t_tiles", boundary_set=boundary_set, catalog=True) as url:
        if reports:
            with psycopg.connect(url) as conn:
                copy_reports(conn, synthetic_reports(RwPolygons.load(conn), reports, seed))
        yield url


def key_header(dsn: str, role: str, opd: str | None = None, name: str = "test") -> dict[str, str]:
    """A new API key of ``role`` (for ``opd``), as the request header that carries it."""
    from api.auth import create_key

    with psycopg.connect(dsn) as conn:
        _, token = create_key(conn, role, opd, name)
    return {"x-api-key": token}
