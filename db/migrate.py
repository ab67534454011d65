"""Ordered, versioned SQL migrations, each applied once and recorded.

Files are ``db/migrations/NNNN_name.sql``.  Each runs in its own transaction
together with the row that records it, so a failing migration leaves nothing
half-applied.  An advisory lock keeps two processes from migrating at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from petalapor.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5E7A1A90  # arbitrary, constant: pg_advisory_xact_lock key for migrations


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice edits to applied migrations."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in ``folder``, ordered by version; rejects bad names and gaps."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {folder}")
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def applied(conn: psycopg.Connection) -> dict[int, str]:
    """Versions already applied, with their checksums."""
    conn.execute(_BOOKKEEPING)
    return dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())


def migrate(dsn: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations; returns those applied now (empty when up to date).

    Raises
    ------
    MigrationError
        A migration failed (its transaction was rolled back), or an applied
        migration's file was edited since.
    """
    migrations = discover(folder)
    done: list[Migration] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            have = applied(conn)
        for mig in migrations:
            if mig.version in have:
                if have[mig.version] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.path.name} was edited after it was applied; "
                        "add a new migration instead"
                    )
                continue
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    if conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = %s", (mig.version,)
                    ).fetchone():
                        continue  # another process applied it meanwhile
                    conn.execute(mig.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {mig.path.name} failed and was rolled back: {exc}"
                ) from exc
            done.append(mig)
    return done
