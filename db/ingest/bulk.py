"""Bulk mode: when to use it, locking, deferring indexes and keys, the direct load's tables.

See *Bulk mode* in the :mod:`db.ingest` docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

#: Bulk mode (indexes and foreign keys rebuilt) from this many rows ...
BULK_MIN_ROWS = 50_000
#: ... when they are at least this share of the reports already stored.
BULK_MIN_SHARE = 0.25


def _bulk_wanted(conn: psycopg.Connection, rows: int, bulk: bool | None) -> bool:
    """Bulk mode by policy (see the :mod:`db.ingest` docstring) unless forced either way."""
    if bulk is not None:
        return bulk
    if rows < BULK_MIN_ROWS:
        return False
    stored = conn.execute(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'reports'::regclass"
    ).fetchone()[0]
    if stored < 0:  # never analysed
        stored = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
    return rows >= BULK_MIN_SHARE * stored


def _lock_for_bulk(conn: psycopg.Connection) -> bool:
    """Lock ``reports`` and ``report_events`` for a bulk load; True when ``reports`` is empty."""
    conn.execute("SET LOCAL lock_timeout = '30s'")
    conn.execute("LOCK TABLE reports, report_events IN ACCESS EXCLUSIVE MODE")
    return not conn.execute("SELECT EXISTS (SELECT 1 FROM reports)").fetchone()[0]


def _defer_indexes(conn: psycopg.Connection, unique: bool = False) -> list[sql.Composable]:
    """Drop secondary indexes and foreign keys of the report tables; return the re-create DDL.

    With ``unique`` (a direct load into an empty ``reports``, which needs no
    conflict arbiter) the primary keys and unique constraints go too, and with
    them the foreign keys of other tables that point at the report tables
    (those tables are empty, as ``reports`` is: re-checking them at the end
    costs nothing).  A primary key rebuilt from sorted ids takes a third of the
    time that maintaining it row by row during the COPY does.  Definitions come
    from the catalog, so indexes and constraints added by later migrations are
    re-created exactly too.  Must run inside the import's transaction, after
    :func:`_lock_for_bulk`.
    """
    tables = "('reports'::regclass, 'report_events'::regclass)"
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        f"WHERE i.indrelid IN {tables} AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1"
    ).fetchall()
    referencing = f" OR confrelid IN {tables}" if unique else ""
    fkeys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE contype = 'f' AND (conrelid IN {tables}{referencing}) ORDER BY 1, 2"
    ).fetchall()
    uniques = []
    if unique:
        uniques = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            f"FROM pg_constraint WHERE contype IN ('p', 'u') AND conrelid IN {tables} "
            "ORDER BY 1, 2"
        ).fetchall()
    restore: list[sql.Composable] = []
    for table, name, definition in [*fkeys, *uniques]:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
        restore.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(table), sql.Identifier(name)
            )
            + sql.SQL(definition)  # from pg_get_constraintdef: the catalog's own text
        )
    # unique keys before the foreign keys, plain indexes first (the key checks use them)
    restore = restore[len(fkeys) :] + restore[: len(fkeys)]
    for name, definition in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        restore.insert(0, sql.SQL(definition))
    return restore


def _truncate_empty(conn: psycopg.Connection) -> bool:
    """TRUNCATE the (empty) report tables, and the tables referencing them, if all are empty.

    Only called with ``reports`` empty and locked.  Emptying empty tables changes
    no data; it gives them new files, so the rows loaded next may be written
    frozen (COPY FREEZE) and, on a server with ``wal_level = minimal`` (the
    embedded cluster, see ``db.cluster``), skip the WAL along with the index
    builds on them (the files are synced at commit instead).  An ON TRUNCATE
    trigger fires as for any TRUNCATE (the tile queue gets one 'full' entry,
    as it does for every large load).  Returns False, touching nothing, when
    one of the tables holds rows, is busy, or may not be truncated by this role.
    """
    rows = conn.execute(
        """
        WITH RECURSIVE t(rel) AS (
            SELECT unnest(ARRAY['reports'::regclass, 'report_events'::regclass])
            UNION
            SELECT c.conrelid::regclass FROM pg_constraint c JOIN t ON c.confrelid = t.rel
            WHERE c.contype = 'f'
        )
        SELECT n.nspname, c.relname FROM t JOIN pg_class c ON c.oid = t.rel
        JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2
        """
    ).fetchall()
    names = sql.SQL(", ").join(sql.Identifier(nsp, rel) for nsp, rel in rows)
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the import going
            # SHARE: nobody writes into the referencing tables between check and TRUNCATE
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE NOWAIT").format(names))
            for nsp, rel in rows:
                exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                    sql.Identifier(nsp, rel)
                )
                if conn.execute(exists).fetchone()[0]:
                    return False
            conn.execute(sql.SQL("TRUNCATE {}").format(names))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.InsufficientPrivilege):
        return False
    return True


def _pause_tile_queue(conn: psycopg.Connection) -> list[str]:
    """Disable, for this transaction, the tile queue's INSERT trigger on ``reports``.

    Only called after :func:`_truncate_empty` emptied the report tables in this
    transaction: its TRUNCATE already queued one ``'full'`` tile rebuild, which
    is all the INSERT trigger would add for a large load -- after keeping every
    COPYed row in a transition table for it (about a tenth of the COPY's
    server time).  The caller enables the returned triggers again before
    commit; a rollback restores them anyway.
    """
    names = [
        row[0]
        for row in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'reports'::regclass "
            "AND NOT tgisinternal AND tgenabled <> 'D' AND (tgtype & 4) <> 0 "  # 4: INSERT
            "AND tgfoid = 'petalapor_tiles_reports_changed'::regproc ORDER BY 1"
        )
    ]
    for name in names:
        conn.execute(sql.SQL("ALTER TABLE reports DISABLE TRIGGER {}").format(sql.Identifier(name)))
    return names


@contextmanager
def _merge_joins(conn: psycopg.Connection, wanted: bool = True) -> Iterator[None]:
    """No hash joins inside (transaction-local), when ``wanted``.

    Re-adding a foreign key checks every row with one anti-join.  For a key
    onto ``reports`` on tables just loaded (no statistics yet) the planner
    hashes the million report ids; a merge join over the two freshly built,
    sorted indexes does the same check in a quarter of the time (0.14 s
    instead of 0.55 s for 1M events).  Keys onto the small catalog tables keep
    their hash joins (a merge join would sort the million rows).
    """
    if not wanted:
        yield
        return
    before = conn.execute("SELECT current_setting('enable_hashjoin')").fetchone()[0]
    conn.execute("SELECT set_config('enable_hashjoin', 'off', true)")
    try:
        yield
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('enable_hashjoin', %s, true)", (before,))


def _ddl_name(statement: str) -> str:
    """``reports_rw`` from ``CREATE INDEX reports_rw ON ...``; the constraint name for keys."""
    words = statement.replace('"', "").split()
    if words[:2] == ["CREATE", "INDEX"] or words[:3] == ["CREATE", "UNIQUE", "INDEX"]:
        return words[words.index("INDEX") + 1]
    if "CONSTRAINT" in words:
        return words[words.index("CONSTRAINT") + 1]
    return statement[:40]
