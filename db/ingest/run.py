"""The import: :func:`import_file`, :func:`import_frame` and :func:`import_table`.

One transaction over the steps of the other modules (see :mod:`db.ingest`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from db.ingest.bulk import (
    _bulk_wanted,
    _ddl_name,
    _defer_indexes,
    _lock_for_bulk,
    _merge_joins,
    _pause_tile_queue,
    _truncate_empty,
)
from db.ingest.encode import _EventSource
from db.ingest.mapping import Mapping
from db.ingest.place import Places, places_from_db
from db.ingest.read import RawTable, frame_table, read_table
from db.ingest.summary import ImportSummary, _finish_summary, _Timer
from db.ingest.validate import prepare_batches
from db.ingest.write import _STAGE_DDL, _store_quarantine, _write_rows
from gis.snap import DEFAULT_TOLERANCE_M
from petalapor.catalog import Catalog, get_catalog
from petalapor.errors import ConfigError

#: Rows per COPY + upsert chunk.
CHUNK_ROWS = 100_000


def import_file(
    dsn: str,
    path: str | Path,
    mapping: Mapping | None = None,
    **options: Any,
) -> ImportSummary:
    """Import one file of reports; see :func:`import_table` for the options.

    Examples
    --------
    >>> s = import_file(dsn, "petabencana.geojson", load_mapping("petabencana"))  # doctest: +SKIP
    >>> s.read == s.stored + s.updated + s.quarantined                             # doctest: +SKIP
    True
    """
    mapping = mapping or Mapping()
    t0 = time.perf_counter()
    table = read_table(path, mapping)
    return import_table(dsn, table, mapping, _read_seconds=time.perf_counter() - t0, **options)


def import_frame(
    dsn: str,
    frame: pd.DataFrame,
    mapping: Mapping | None = None,
    *,
    label: str = "<frame>",
    **options: Any,
) -> ImportSummary:
    """Import reports from a (Geo)DataFrame whose columns are roles (the demo data)."""
    return import_table(dsn, frame_table(frame, label), mapping or Mapping(), **options)


def import_table(
    dsn: str,
    table: RawTable,
    mapping: Mapping,
    *,
    tolerance_m: float = DEFAULT_TOLERANCE_M,
    events: pd.DataFrame | None = None,
    bulk: bool | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    places: Places | None = None,
    catalog: Catalog | None = None,
    _read_seconds: float = 0.0,
) -> ImportSummary:
    """Validate, place and store a table of reports in one transaction.

    Parameters
    ----------
    dsn
        Database (migrated, boundaries loaded, catalog synced).
    table
        Rows as read (:func:`read_table`, :func:`frame_table`).
    mapping
        Column mapping.
    tolerance_m
        Snapping tolerance for the ``nearest`` step.
    events
        Full histories for new reports (columns of :attr:`gis.demo.DemoData.events`);
        None: a creation event per new report.
    bulk
        Force bulk mode on or off; None: by policy.
    progress
        Show a progress bar on stderr (only when it is a terminal).
    chunk_rows
        Rows per COPY/upsert chunk.
    places
        Polygons to snap to (default: the current boundary set in the database).
    catalog
        Category/status/OPD catalog (default: the shipped one).

    Returns
    -------
    ImportSummary

    Raises
    ------
    ConfigError
        Bad mapping, no boundaries, or the catalog was not synced.
    psycopg.Error
        The database refused the data; nothing was stored.
    """
    catalog = catalog or get_catalog()
    started = time.perf_counter() - _read_seconds
    summary = ImportSummary(import_id=uuid.uuid4(), source_file=table.path, read=len(table))
    timer = _Timer(summary.seconds)
    summary.seconds["read"] = _read_seconds
    with psycopg.connect(dsn) as conn:
        conn.execute("SET temp_buffers = '64MB'")  # before the first temp table of the session
        _check_catalog_synced(conn, catalog)
        places = places or places_from_db(conn, tolerance_m)
        with timer("snap"):
            places.expect(len(table))
        event_source = _EventSource(events, catalog) if events is not None else None
        batches = prepare_batches(
            table, mapping, chunk_rows, catalog=catalog, service_area=places.service_area
        )
        with conn.transaction():
            _session_settings(conn)
            conn.execute(
                "INSERT INTO report_imports (id, source_file) VALUES (%s, %s)",
                (summary.import_id, table.path),
            )
            conn.execute(_STAGE_DDL)
            summary.bulk = _bulk_wanted(conn, len(table), bulk)
            direct = freeze = False
            restore: list[sql.Composable] = []
            paused: list[str] = []
            if summary.bulk:
                with timer("prepare tables"):
                    direct = _lock_for_bulk(conn)
                    restore = _defer_indexes(conn, unique=direct)
                    freeze = direct and _truncate_empty(conn)
                    paused = _pause_tile_queue(conn) if freeze else []
            summary.direct = direct
            quarantine = _write_rows(
                conn, batches, places, event_source, summary, timer, progress, direct, freeze
            )
            for name in paused:
                conn.execute(
                    sql.SQL("ALTER TABLE reports ENABLE TRIGGER {}").format(sql.Identifier(name))
                )
            with timer("indexes"):
                for statement in restore:
                    text = statement.as_string(conn)
                    t0 = time.perf_counter()
                    with _merge_joins(conn, "REFERENCES reports(" in text.replace('"', "")):
                        conn.execute(statement)
                    summary.index_seconds[_ddl_name(text)] = time.perf_counter() - t0
            with timer("quarantine"):
                _store_quarantine(conn, table, quarantine, summary)
            _finish_summary(summary, quarantine)
            summary.seconds["total"] = time.perf_counter() - started
            conn.execute(
                "UPDATE report_imports SET summary = %s WHERE id = %s",
                (json.dumps(summary.as_dict()), summary.import_id),
            )
            commit_start = time.perf_counter()
        summary.seconds["commit"] = time.perf_counter() - commit_start
    summary.seconds["total"] = time.perf_counter() - started
    return summary


#: Settings raised (never lowered) for the import's transaction.
_AT_LEAST = {"maintenance_work_mem": "512MB", "work_mem": "64MB"}


def _session_settings(conn: psycopg.Connection) -> None:
    """Transaction-local settings for a large load.

    ``maintenance_work_mem``: index rebuilds sort in memory.  ``work_mem``: the
    rows of a chunk's statement, held for the statement-level triggers on
    ``reports`` (transition tables), stay in memory instead of a temp file
    (about a tenth of the COPY's server time at 100,000-row chunks).
    ``synchronous_commit`` stays as configured: the import commits once, and
    that commit took no measurable time.
    """
    for name, value in _AT_LEAST.items():
        conn.execute(
            "SELECT set_config(%s, %s, true) "
            "WHERE pg_size_bytes(current_setting(%s)) < pg_size_bytes(%s)",
            (name, value, name, value),
        )


def _check_catalog_synced(conn: psycopg.Connection, catalog: Catalog) -> None:
    """The catalog tables hold every code (else the foreign keys refuse the rows)."""
    have = {r[0] for r in conn.execute("SELECT code FROM categories").fetchall()}
    missing = sorted(set(catalog.categories) - have)
    if missing:
        raise ConfigError(
            f"categories {missing} are not in the database; run petalapor.catalog.sync_catalog "
            "(petalapor up does) before importing reports"
        )
