"""Shared fixtures: a real PostGIS for the whole session, the real boundaries, the app.

The session starts its own embedded cluster under ``var/test/pg-<pid>`` (inside the
project, so the ``postgres`` user can reach it when tests run as root) on a free
port, unless ``DATABASE_URL`` is set, in which case that server is used.  A
missing PostGIS is a failure with the install hint, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from db.cluster import Cluster
from db.migrate import migrate
from petalapor.settings import PROJECT_ROOT, PathSettings, Settings
from tests.databases import throwaway_database

TEST_VAR = PROJECT_ROOT / "var" / "test"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data)."""
    path = PathSettings().shared_data
    if not (path / "boundaries").exists():
        pytest.fail(f"real data not found at {path}; set PETALAPOR_SHARED_DATA")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_clusters() -> None:
    """Clusters left by test sessions that died (their pid is gone)."""
    for root in TEST_VAR.glob("pg-*"):
        suffix = root.name.split("-", 1)[1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            stale = Cluster(root)
            if stale.initialised:
                try:
                    stale.stop()
                except Exception:  # noqa: BLE001 - best effort on leftovers
                    pass
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster | None]:
    """The session's embedded cluster (None when DATABASE_URL is used).

    One per test process (``var/test/pg-<pid>``), so parallel sessions never
    share or wipe each other's server.
    """
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    TEST_VAR.mkdir(parents=True, exist_ok=True)
    _remove_stale_clusters()
    root = TEST_VAR / f"pg-{os.getpid()}"
    clu = Cluster(root, port=0, dbname="petalapor")
    clu.start()  # raises ClusterError with the install hint when PostGIS is missing
    yield clu
    clu.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dsn(cluster: Cluster | None) -> str:
    """A migrated database for the session."""
    url = os.environ["DATABASE_URL"] if cluster is None else cluster.dsn()
    migrate(url)
    return url


@pytest.fixture()
def make_database(dsn: str) -> Iterator:
    """Factory for throw-away databases, dropped after the test: ``make_database()``."""
    with ExitStack() as stack:
        yield lambda migrated=True: stack.enter_context(throwaway_database(dsn, migrated=migrated))


@pytest.fixture(scope="session")
def boundary_set():
    """The real boundary set, built once (kelurahan + RW from ../shared/data)."""
    from gis.boundaries import build_boundary_set, load_manifest

    return build_boundary_set(load_manifest())


@pytest.fixture(scope="session")
def loaded_dsn(dsn: str, boundary_set) -> str:
    """The session database with the real boundaries stored."""
    from db.boundaries import store_boundary_set

    store_boundary_set(dsn, boundary_set)
    return dsn


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Default settings (environment as the test run has it)."""
    return Settings()


@pytest.fixture(scope="session")
def client(loaded_dsn: str, settings: Settings) -> Iterator:
    """A TestClient on the app, bound to the session database with boundaries."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings, dsn=loaded_dsn)) as test_client:
        yield test_client
