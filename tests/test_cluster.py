"""The embedded cluster: start/stop/restart keeps data, DATABASE_URL bypasses it."""

from __future__ import annotations

import os
import shutil

import psycopg
import pytest

import db
import db.cluster as cluster_mod
from db.cluster import Cluster
from petalapor.errors import ClusterError
from petalapor.settings import PROJECT_ROOT, Settings

TEST_VAR = PROJECT_ROOT / "var" / "test"


@pytest.fixture()
def own_cluster():
    """A second cluster of this test's own, removed afterwards."""
    root = TEST_VAR / f"restart-{os.getpid()}"
    if root.exists():
        Cluster(root).stop() if Cluster(root).initialised else None
        shutil.rmtree(root)
    clu = Cluster(root, port=0, dbname="petalapor")
    yield clu
    clu.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded cluster")
def test_start_stop_restart_keeps_data(own_cluster: Cluster):
    own_cluster.start()
    assert own_cluster.running()
    with psycopg.connect(own_cluster.dsn()) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    assert own_cluster.stop() is True
    assert not own_cluster.running()
    assert own_cluster.stop() is False  # stopping twice is harmless
    own_cluster.start()
    with psycopg.connect(own_cluster.dsn()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    status = own_cluster.status()
    assert status["running"] and status["initialised"]
    with psycopg.connect(own_cluster.dsn()) as conn:  # text sorts by bytes, classes stay UTF-8
        assert conn.execute(
            "SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()"
        ).fetchone() == ("C", "C.UTF-8")
        words = ["b", "A", "é", "a", "Z", "_", "1", "中"]
        ordered = conn.execute("SELECT array_agg(w ORDER BY w) FROM unnest(%s::text[]) w", (words,))
        assert ordered.fetchone()[0] == sorted(words)  # Python: code point order
        assert conn.execute("SELECT upper('é')").fetchone()[0] == "É"
    other = Cluster(own_cluster.root, port=0, dbname="petalapor_other")
    other.start()  # the cluster runs already: only the database is made
    with psycopg.connect(other.dsn()) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "petalapor_other"


def test_made_databases_sort_text_by_bytes(make_database):
    with psycopg.connect(make_database(migrated=False)) as conn:
        row = conn.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert row == ("C",)


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when tests run as root")
def test_server_does_not_run_as_root(cluster):
    if cluster is None:
        pytest.skip("external DATABASE_URL")
    pid = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_database_url_bypasses_embedded_cluster(dsn, tmp_path, monkeypatch):
    never = tmp_path / "never-created"
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("PETALAPOR_DB_DIR", str(never))
    settings = Settings()
    assert settings.db.url == dsn and not settings.db.embedded
    assert db.database_url(settings) == dsn
    assert not never.exists()


def test_bad_database_url_is_rejected(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    with pytest.raises(ValueError, match="postgresql://"):
        Settings()


def test_missing_binaries_name_the_package(monkeypatch):
    monkeypatch.setattr(cluster_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(cluster_mod.glob, "glob", lambda pattern: [])
    with pytest.raises(ClusterError, match="postgresql-15-postgis-3") as info:
        cluster_mod.find_binaries()
    assert "conda-forge" in str(info.value)


def test_missing_postgis_is_named(monkeypatch, tmp_path):
    bindir = tmp_path / "99" / "bin"  # no /usr/share/postgresql/99 to fall back on
    bindir.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (bindir / tool).write_text("#!/bin/sh\n")
    monkeypatch.setattr(cluster_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(cluster_mod.glob, "glob", lambda pattern: [str(bindir)])
    with pytest.raises(ClusterError, match="PostGIS is not"):
        cluster_mod.find_binaries()
