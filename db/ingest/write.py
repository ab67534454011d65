"""Writing: staging and upsert SQL, the writer thread, the batch loop, the quarantine rows."""

from __future__ import annotations

import json
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from db.ingest.encode import (
    _COPY_HEADER,
    _COPY_TRAILER,
    _EVENT_COLS,
    _STAGE_FIXED,
    _STAGE_VAR,
    _creation_events,
    _EventSource,
    _ids,
    encode_events,
    encode_new_events,
    encode_reports,
)
from db.ingest.place import Places, _placed_chunk
from db.ingest.read import RawTable
from db.ingest.summary import ImportSummary, _Timer
from db.ingest.text import _json_ready
from db.ingest.validate import Prepared
from gis.hexes import RESOLUTIONS

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS petalapor_stage (
    id uuid, created_at timestamptz, updated_at timestamptz, geom geometry, snap_distance_m float8,
    h3_r7 int8, h3_r8 int8, h3_r9 int8, h3_r10 int8, h3_r11 int8, public bool,
    source text, external_id text, category text, opd text, status text, title text,
    description text, media_url text, rw_code text, kelurahan_code text, kecamatan_code text,
    kota_code text, snap_method text, first_coordinated_at timestamptz, resolved_at timestamptz,
    attrs jsonb
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS petalapor_stage_events (
    seq int4, at timestamptz, source text, external_id text, from_status text, to_status text,
    actor_opd text, note text
) ON COMMIT DROP
"""

_INSERT_COLS = [
    "id",
    "source",
    "external_id",
    "category",
    "opd",
    "title",
    "description",
    "media_url",
    "created_at",
    "updated_at",
    "first_coordinated_at",
    "resolved_at",
    "status",
    "geom",
    "rw_code",
    "kelurahan_code",
    "kecamatan_code",
    "kota_code",
    "snap_method",
    "snap_distance_m",
    *[f"h3_r{r}" for r in RESOLUTIONS],
    "public",
    "attrs",
]
_KEEP_ON_UPDATE = {"id", "source", "external_id"}

_CREATION_EVENTS = """
    SELECT id, NULL::text, status, created_at, NULL::text, 'import'::text FROM up WHERE inserted
"""
_STAGED_EVENTS = """
    SELECT up.id, e.from_status, e.to_status, e.at, e.actor_opd, e.note
    FROM up JOIN petalapor_stage_events e USING (source, external_id)
    WHERE up.inserted
"""


def _upsert_sql(staged_events: bool) -> sql.Composed:
    """Step 1 per chunk: insert new reports, update those whose status is unchanged.

    Rows whose stored status differs are left alone here (``DO UPDATE ... WHERE``
    skips them, keeping them locked) and go through :func:`_status_change_sql`, so
    the common case needs no join against ``reports``.  ``xmax = 0`` marks rows
    this statement inserted.
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, _INSERT_COLS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in _INSERT_COLS
        if c not in _KEEP_ON_UPDATE
    )
    events = sql.SQL(_STAGED_EVENTS if staged_events else _CREATION_EVENTS)
    return sql.SQL(
        """
        WITH up AS (
            INSERT INTO reports AS r ({cols}) SELECT {cols} FROM petalapor_stage
            ON CONFLICT (source, external_id) DO UPDATE SET {updates}
            WHERE r.status = EXCLUDED.status
            RETURNING r.id, r.source, r.external_id, r.status, r.created_at,
                      (r.xmax = 0) AS inserted
        ), ev AS (
            INSERT INTO report_events (report_id, from_status, to_status, at, actor_opd, note)
            {events}
            RETURNING 1
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
               (SELECT count(*) FROM ev)
        FROM up
        """
    ).format(cols=cols, updates=updates, events=events)


def _status_change_sql() -> sql.Composed:
    """Step 2, only when step 1 skipped rows: update them and append ``old -> new`` events."""
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = s.{0}").format(sql.Identifier(c))
        for c in _INSERT_COLS
        if c not in _KEEP_ON_UPDATE
    )
    return sql.SQL(
        """
        WITH old AS (
            SELECT r.id, r.status FROM reports r JOIN petalapor_stage s USING (source, external_id)
            WHERE r.status <> s.status
        ), up AS (
            UPDATE reports r SET {updates} FROM petalapor_stage s
            WHERE r.source = s.source AND r.external_id = s.external_id AND r.status <> s.status
            RETURNING r.id, r.status
        ), ev AS (
            INSERT INTO report_events (report_id, from_status, to_status, at, actor_opd, note)
            SELECT up.id, old.status, up.status, now(), NULL, 'import: status changed'
            FROM up JOIN old USING (id)
            RETURNING 1
        )
        SELECT count(*), (SELECT count(*) FROM ev) FROM up
        """
    ).format(updates=updates)


@dataclass
class _Chunk:
    """One encoded chunk for the writer thread.

    ``reports``/``events`` are binary COPY bodies (bytes-like): for ``petalapor_stage``
    and ``petalapor_stage_events`` (upsert), or for ``reports`` and ``report_events``
    themselves (direct load, ``events`` then holds every event of the chunk).
    """

    rows: int
    read: int
    reports: bytes | pa.Buffer
    events: bytes | pa.Buffer | None
    n_events: int = 0


class _Writer(threading.Thread):
    """Streams encoded chunks into the database on the import's connection.

    Two ways, chosen per import:

    * upsert (default): binary COPY into staging, then one upsert per chunk;
    * direct (``direct=True``, bulk mode into an empty ``reports``): binary COPY
      straight into ``reports`` and ``report_events`` -- no staging, no upsert,
      no per-row conflict check (the unique key is rebuilt, and so checked, at
      the end); ``freeze`` adds COPY's FREEZE (the tables were truncated in this
      transaction).

    Runs while the main thread prepares the next chunk; the first error stops it
    and is re-raised by :meth:`finish`.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        staged_events: bool,
        on_chunk: Callable[[int], None],
        *,
        direct: bool = False,
        freeze: bool = False,
    ):
        super().__init__(name="petalapor-ingest-writer", daemon=True)
        self.conn = conn
        self.queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=2)
        self.statement = _upsert_sql(staged_events)
        self.direct = direct
        self.options = ", FREEZE" if freeze else ""
        self.on_chunk = on_chunk
        self.error: BaseException | None = None
        self.inserted = self.updated = self.events = 0
        self.seconds = {"copy": 0.0, "events": 0.0, "upsert": 0.0}

    def run(self) -> None:
        """Consume chunks until the sentinel."""
        while True:
            chunk = self.queue.get()
            if chunk is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                if self.direct:
                    self._write_direct(chunk)
                else:
                    self._write(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc

    def _write_direct(self, chunk: _Chunk) -> None:
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            self._copy(cur, "reports", _STAGE_FIXED + _STAGE_VAR, chunk.reports, self.options)
            t1 = time.perf_counter()
            if chunk.events is not None and chunk.n_events:
                self._copy(cur, "report_events", _EVENT_COLS, chunk.events, self.options)
        self.seconds["copy"] += t1 - t0
        self.seconds["events"] += time.perf_counter() - t1
        self.inserted += chunk.rows
        self.events += chunk.n_events
        self.on_chunk(chunk.read)

    def _write(self, chunk: _Chunk) -> None:
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute("TRUNCATE petalapor_stage, petalapor_stage_events")
            self._copy(cur, "petalapor_stage", _STAGE_FIXED + _STAGE_VAR, chunk.reports)
            if chunk.events is not None:
                self._copy(
                    cur,
                    "petalapor_stage_events",
                    [
                        "seq",
                        "at",
                        "source",
                        "external_id",
                        "from_status",
                        "to_status",
                        "actor_opd",
                        "note",
                    ],
                    chunk.events,
                )
            t1 = time.perf_counter()
            ins, upd, ev = cur.execute(self.statement).fetchone()
            if ins + upd < chunk.rows:  # re-imported rows whose status changed
                changed, ev2 = cur.execute(_status_change_sql()).fetchone()
                upd, ev = upd + changed, ev + ev2
        self.seconds["copy"] += t1 - t0
        self.seconds["upsert"] += time.perf_counter() - t1
        self.inserted += ins
        self.updated += upd
        self.events += ev
        if ins + upd != chunk.rows:
            raise RuntimeError(f"chunk of {chunk.rows} rows stored {ins} + updated {upd}")
        self.on_chunk(chunk.read)

    @staticmethod
    def _copy(
        cur: psycopg.Cursor, table: str, columns: list[str], body: bytes, options: str = ""
    ) -> None:
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(options),
        )
        with cur.copy(stmt) as copy:
            copy.write(_COPY_HEADER)
            view = memoryview(body)
            for lo in range(0, len(body), 1 << 22):
                copy.write(view[lo : lo + (1 << 22)])
            copy.write(_COPY_TRAILER)

    def put(self, chunk: _Chunk) -> None:
        """Queue a chunk (blocks while two are waiting); raises the writer's error."""
        self._raise()
        self.queue.put(chunk)

    def finish(self) -> None:
        """Wait for the queued chunks; raise the writer's error if any."""
        self.queue.put(None)
        self.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def _write_rows(
    conn: psycopg.Connection,
    batches: Iterator[Prepared],
    places: Places,
    event_source: _EventSource | None,
    summary: ImportSummary,
    timer: _Timer,
    progress: bool,
    direct: bool = False,
    freeze: bool = False,
) -> pd.DataFrame:
    """Validate, place and encode batch by batch; the writer thread stores each.

    ``direct``: COPY straight into ``reports``/``report_events`` (see
    :class:`_Writer`).  Returns the quarantine of every batch.
    """
    from tqdm import tqdm

    bar = tqdm(
        total=summary.read,
        unit="rows",
        unit_scale=True,
        file=sys.stderr,
        desc="import",
        disable=not (progress and sys.stderr.isatty()),
    )
    lock = threading.Lock()

    def advance(k: int) -> None:
        with lock:
            bar.update(k)

    writer = _Writer(conn, event_source is not None, advance, direct=direct, freeze=freeze)
    base = (int(time.time() * 1000), secrets.randbits(12), secrets.randbits(22))
    if direct:  # event ids in Python (report_events is locked; sequence values may have gaps)
        event_seq = conn.execute("SELECT pg_get_serial_sequence('report_events', 'id')").fetchone()
        next_event = conn.execute("SELECT nextval(%s)", event_seq).fetchone()[0]
    quarantines = []
    written = 0
    writer.start()
    try:
        while True:
            with timer("validate"):
                prepared = next(batches, None)
            if prepared is None:
                break
            quarantines.append(prepared.quarantine)
            if prepared.valid.size == 0:
                advance(prepared.read)
                continue
            chunk = _placed_chunk(prepared, places, summary, timer)
            with timer("encode"):
                ids = _ids(len(chunk), written, base)
                body = encode_reports(chunk, ids)
                n_events = 0
                if direct:
                    if event_source is None:
                        events, event_ids = _creation_events(chunk), ids
                    else:
                        events, event_ids = event_source.for_reports(chunk, ids)
                    n_events = len(events)
                    ev_body = encode_new_events(event_ids, events, next_event)
                    next_event += n_events
                elif event_source is not None:
                    ev_body = encode_events(event_source.select(chunk))
                else:
                    ev_body = None
            written += len(chunk)
            with timer("queue wait"):
                writer.put(_Chunk(len(chunk), prepared.read, body, ev_body, n_events))
        with timer("db drain"):
            writer.finish()
        if direct:  # the next event id after the ones used
            conn.execute("SELECT setval(%s, %s, false)", (event_seq[0], next_event))
    finally:
        if writer.is_alive():
            writer.queue.put(None)
            writer.join()
        bar.close()
    summary.stored, summary.updated, summary.events = writer.inserted, writer.updated, writer.events
    summary.seconds.update(writer.seconds)
    return pd.concat(quarantines, ignore_index=True)


def _store_quarantine(
    conn: psycopg.Connection, table: RawTable, q: pd.DataFrame, summary: ImportSummary
) -> None:
    """COPY the quarantined rows with their reasons and raw values."""
    if len(q) == 0:
        return
    raws = table.raw(q["position"].to_numpy())
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY report_quarantine (import_id, source_file, row_number, field, reason, raw) "
            "FROM STDIN"
        ) as copy,
    ):
        for row_number, fld, reason, raw in zip(
            q["row_number"], q["field"], q["reason"], raws, strict=True
        ):
            copy.write_row(
                (
                    summary.import_id,
                    table.path,
                    int(row_number),
                    fld,
                    str(reason),
                    json.dumps(_json_ready(raw), ensure_ascii=False, allow_nan=False),
                )
            )
