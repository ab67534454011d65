"""Migrations: ordered, applied once, all or nothing."""

from __future__ import annotations

import psycopg
import pytest

from db.migrate import discover, migrate
from petalapor.errors import MigrationError


def test_rerunning_is_a_noop(make_database):
    url = make_database(migrated=False)
    first = migrate(url)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert migrate(url) == []
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == sorted(m.version for m in discover())
        assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3.")


def test_failed_migration_leaves_nothing_half_applied(make_database, tmp_path):
    url = make_database(migrated=False)
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (x int);")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nSELECT * FROM no_such_table;"
    )
    with pytest.raises(MigrationError, match="0002_bad.sql failed and was rolled back"):
        migrate(url, tmp_path)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('good')").fetchone()[0] == "good"
        assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]
    # fixing the file lets it apply
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int);")
    assert [m.version for m in migrate(url, tmp_path)] == [2]


def test_edited_migration_is_refused(make_database, tmp_path):
    url = make_database(migrated=False)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    migrate(url, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int, y int);")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(url, tmp_path)


def test_badly_named_file_is_refused(tmp_path):
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        discover(tmp_path)
