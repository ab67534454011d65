"""The application's one psycopg 3 connection pool."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from petalapor.settings import DatabaseSettings


def create_pool(
    dsn: str, settings: DatabaseSettings | None = None, *, open: bool = True
) -> ConnectionPool:
    """A pool of dict-row connections; waits until it holds its minimum when opened."""
    settings = settings or DatabaseSettings()
    pool = ConnectionPool(
        dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout,
        kwargs={"row_factory": dict_row, "application_name": "petalapor"},
        open=False,
        name="petalapor",
    )
    if open:
        pool.open(wait=True, timeout=settings.pool_timeout)
    return pool
