"""Bulk import of citizen reports: read, map, validate, place, COPY, upsert.

One import is one script over small steps::

    >>> mapping = load_mapping("data/mappings/petabencana.toml")          # doctest: +SKIP
    >>> summary = import_file(dsn, "reports.geojson", mapping)            # doctest: +SKIP
    >>> print(summary.render())                                           # doctest: +SKIP

1. **Read** CSV (pyarrow, every column as text), GeoJSON (Point features; nested
   properties flattened to dotted names such as ``report_data.flood_depth``),
   GeoParquet or Parquet.  Geometry coordinates appear as the columns ``@lon`` and
   ``@lat``.
2. **Map** source columns onto roles (:data:`ROLES`) with a :class:`Mapping`: a TOML
   file and/or CLI options.  A role without a column takes the mapping's default.
   Naive timestamps are local time in the mapping's zone (Asia/Jakarta).
3. **Validate**, vectorised, in batches (:func:`prepare_batches`) that stream into
   the next steps.  Each bad row goes to ``report_quarantine`` with the
   file, its 1-based data row number, the first bad field, the reason and the raw
   row as JSON.  Rows are never lost: ``read = stored + updated + quarantined`` is
   checked before commit.  Rules match the single-report API (``db.reports``):
   coordinates, service area, text limits and control characters, http(s) media
   URLs, known category/status/OPD, timestamps (not in the future, not before 2000,
   later stages not before creation), then duplicate ``(source, external_id)``
   within the file, across batches (the first valid row wins).
4. **Place** valid rows with :class:`gis.snap.SnapIndex` (RW, then the same rule on
   kelurahan polygons for rows with no RW) and :func:`gis.hexes.points_to_cells`
   (H3 r7-r11).
5. **Write**: binary COPY of each chunk into a temporary staging table, then one
   ``INSERT ... SELECT ... ON CONFLICT (source, external_id) DO UPDATE`` per chunk
   (``xmax = 0`` tells inserted from updated rows) with the events in the same
   statement.  A first load into an empty ``reports`` (bulk mode) skips all
   that: every row is new, so chunks are COPYed straight into ``reports`` and
   their events into ``report_events`` (see *Bulk mode*).  A writer thread does
   the database work while the main thread prepares the next chunk.

Service area
    Points inside the boundaries' extent grown by 0.1° (Jakarta and Kepulauan
    Seribu; :func:`db.reports.service_area`) are stored: in no polygon and beyond
    the snapping tolerance they are kept with ``snap_method = 'outside'`` and no
    codes.  Points beyond the box are quarantined (field ``lon,lat``).

Events
    A new report gets one creation event: ``NULL -> status`` at ``created_at``, note
    ``import`` (the history before the import is unknown; the report enters
    petalapor in the status it has).  A re-import that changes a stored report's
    status appends ``old -> new`` at the import time.  Callers with full histories
    (the demo data) pass them instead.

Transactions
    One import is one transaction: the staging, every chunk's upsert, the events,
    the quarantine rows and the ``report_imports`` record commit together or not at
    all.  A failure (bad mapping, constraint violation, lost connection) leaves the
    database as it was; re-running an import is safe since it upserts.

Bulk mode
    For large loads relative to the table (at least :data:`BULK_MIN_ROWS` rows and
    :data:`BULK_MIN_SHARE` of the stored reports; or ``bulk=True``) the import locks
    ``reports`` and ``report_events``, drops their secondary indexes and foreign
    keys, loads, and re-creates them from their catalog definitions before commit:
    a sorted index build and one anti-join per key are far cheaper than row-by-row
    maintenance (PostgreSQL manual, "Populating a Database").  Nothing is skipped:
    every index and constraint is back, and checked, when the transaction commits.
    Readers of ``reports`` wait while a bulk import runs.

    When ``reports`` is empty the load is *direct*: the primary and unique keys
    go too, with the foreign keys of other tables that point at the report
    tables (all empty), and are rebuilt, and so checked, at the end.  The empty
    tables are truncated (new files: rows COPYed ``FREEZE``, and no WAL on a
    ``wal_level = minimal`` server such as the embedded one), and chunks go
    straight into ``reports``/``report_events`` with client-side ids (UUIDv7,
    ascending, so the primary key builds from sorted input) and the events
    built in Python.  The tile queue's INSERT trigger is paused for the load:
    the TRUNCATE already queued one full roll-up rebuild.

Cost (``bench/ingest.py``, 1M rows, 2 cores shared with other work; direct
load; docs/benchmarks.md): the Python side (parse, validate, snap, H3,
encode) takes 2.5-4 s of CPU and the COPY 3-5 s of server CPU beside it in
the writer thread; re-creating the 7 report indexes, the 2 event indexes and
re-checking the 10 foreign keys takes 7-9 s (a B-tree over a text code
0.8-1.5 s, the GiST 1.3-2.2 s single-threaded).

Modules, in the order of the steps: ``mapping`` (roles, :class:`Mapping`,
mapping files), ``read`` (files and frames as a :class:`RawTable`), ``validate``
(:func:`prepare_batches` and every check; with ``text``, Arrow text columns, and
``times``, timestamp parsing), ``place`` (:class:`Places`, snapping and H3),
``encode`` (binary COPY bodies, ids, events), ``write`` (staging, upsert, the
writer thread, the quarantine), ``bulk`` (bulk mode), ``summary``
(:class:`ImportSummary`) and ``run`` (:func:`import_file`, :func:`import_frame`,
:func:`import_table`).  The names below are the public API; the others belong
to their module.
"""

from __future__ import annotations

from db.ingest.bulk import BULK_MIN_ROWS, BULK_MIN_SHARE
from db.ingest.encode import encode_events, encode_new_events, encode_reports
from db.ingest.mapping import MAPPINGS_DIR, ROLES, TEXT_ROLES, TIME_ROLES, Mapping, load_mapping
from db.ingest.place import Places, places_from_db
from db.ingest.read import RawTable, frame_table, read_table
from db.ingest.run import CHUNK_ROWS, import_file, import_frame, import_table
from db.ingest.summary import ImportSummary
from db.ingest.validate import Prepared, prepare, prepare_batches
from gis.snap import DEFAULT_TOLERANCE_M

__all__ = [
    "Mapping",
    "load_mapping",
    "read_table",
    "frame_table",
    "prepare",
    "prepare_batches",
    "Places",
    "places_from_db",
    "import_file",
    "import_frame",
    "import_table",
    "ImportSummary",
    "ROLES",
    "RawTable",
    "Prepared",
    "encode_reports",
    "encode_events",
    "encode_new_events",
    "BULK_MIN_ROWS",
    "BULK_MIN_SHARE",
    "CHUNK_ROWS",
    "DEFAULT_TOLERANCE_M",
    "MAPPINGS_DIR",
    "TEXT_ROLES",
    "TIME_ROLES",
]
