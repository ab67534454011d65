"""Shared pieces of the report-API tests: an intake client with a key, and a no-write check.

Imported by tests/test_reports_api.py, test_open311.py and test_write_auth.py; the
fixtures are module-scoped in each importing module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from api.auth import create_key
from db.reports import count_rows
from petalapor.catalog import sync_catalog


@pytest.fixture(scope="module")
def db(loaded_dsn: str) -> str:
    """The session database with boundaries and the catalog tables filled."""
    with psycopg.connect(loaded_dsn) as conn:
        sync_catalog(conn)
    return loaded_dsn


class Intake:
    """The session client as an intake app: POSTs carry an API key, GETs go as the public."""

    def __init__(self, client, token: str) -> None:
        self.client = client
        self.token = token

    def post(self, url: str, *, headers: dict | None = None, **kwargs):
        """POST with the key as X-API-Key (``headers`` may add to or override it)."""
        return self.client.post(url, headers={"X-API-Key": self.token, **(headers or {})}, **kwargs)

    def get(self, url: str, **kwargs):
        """GET without a key."""
        return self.client.get(url, **kwargs)


@pytest.fixture(scope="module")
def admin_token(db: str, request) -> str:
    """A fresh admin key (what an intake app such as JAKI holds)."""
    with psycopg.connect(db) as conn:
        _, token = create_key(conn, "admin", None, f"intake ({request.module.__name__})")
    return token


@pytest.fixture(scope="module")
def api(client, db, admin_token) -> Intake:
    """The TestClient after the catalog is synced, writing with an admin key."""
    client.cookies.clear()  # reads are public: no session left by another module
    return Intake(client, admin_token)


@contextmanager
def unchanged(dsn: str) -> Iterator[None]:
    """Assert that the block stores nothing in the report tables."""
    with psycopg.connect(dsn) as conn:
        before = count_rows(conn)
    yield
    with psycopg.connect(dsn) as conn:
        assert count_rows(conn) == before
