"""Roll-ups behind unfiltered tiles, and the change queue that keeps them current.

Triggers on ``reports`` (migration 0005) queue every changed report version
in ``tile_changes`` and ``NOTIFY petalapor_reports``; a statement touching
more than 10,000 rows (a bulk import) queues one ``full`` row instead, and a
change to a context layer's table one ``layer`` row (migration 0010).
:func:`process_changes` drains the queue under an advisory lock (so two
processes never refresh the same roll-up from different snapshots):

1. fills ``tile_hex_cells`` with the polygons of new H3 cells (h3 in Python),
2. recomputes ``tile_hex_stats`` / ``tile_area_stats`` for the touched cells
   and codes (everything for a ``full`` row),
3. in the same transaction, ``NOTIFY petalapor_tiles`` with the footprints of
   the changed reports, so every tile server drops exactly the tiles that
   show them (or, for ``full``, every report-derived tile).

The statistics come from :func:`tiles.layers.stats_aggregates`, the same SQL
piece the live (filtered) tiles use.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import h3
import numpy as np
import psycopg
import shapely
from psycopg import sql
from psycopg.rows import tuple_row

from tiles.footprint import Footprint
from tiles.layers import (
    STATS_COLUMNS,
    TileContext,
    mean_position,
    stats_aggregates,
    stats_output,
    stats_params,
)
from tiles.tms import H3_RESOLUTIONS, Box, mercator_box

log = logging.getLogger("petalapor.tiles")

#: pg_advisory_xact_lock key of roll-up refreshes.
LOCK_KEY = 0x7E1E5_0005
#: Channel the triggers notify (wake-up, no payload).
CHANGES_CHANNEL = "petalapor_reports"
#: Channel carrying invalidation messages to every tile server.
INVALIDATE_CHANNEL = "petalapor_tiles"
#: Above this many footprints a batch invalidates every report-derived tile.
MAX_FOOTPRINTS = 2000
#: NOTIFY payloads must stay below 8000 bytes.
MAX_PAYLOAD = 7000
SCOPES: tuple[str, ...] = ("public", "all")
AREA_LEVELS: dict[str, str] = {"kelurahan": "kelurahan_code", "rw": "rw_code"}
STATS_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in STATS_COLUMNS)


@dataclass
class ChangeBatch:
    """What one :func:`process_changes` call found and refreshed."""

    rows: int = 0
    full: bool = False
    boundaries: bool = False
    footprints: list[Footprint] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # context layers whose table changed
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        """True when the queue was empty."""
        return self.rows == 0

    def messages(self, source: str) -> list[str]:
        """NOTIFY payloads (JSON, each under :data:`MAX_PAYLOAD` bytes)."""
        base = {
            "src": source,
            "full": self.full or len(self.footprints) > MAX_FOOTPRINTS,
            "b": self.boundaries,
            "l": self.layers,
        }
        if base["full"] or not self.footprints:
            return [json.dumps(base | {"fp": []}, separators=(",", ":"))]
        out: list[str] = []
        chunk: list[list] = []
        for fp in self.footprints:
            chunk.append(fp.as_json())
            text = json.dumps(base | {"fp": chunk}, separators=(",", ":"))
            if len(text) > MAX_PAYLOAD and len(chunk) > 1:
                chunk.pop()
                out.append(json.dumps(base | {"fp": chunk}, separators=(",", ":")))
                chunk = [fp.as_json()]
        out.append(json.dumps(base | {"fp": chunk}, separators=(",", ":")))
        return out


def parse_message(payload: str) -> ChangeBatch:
    """Inverse of :meth:`ChangeBatch.messages` (one payload)."""
    data = json.loads(payload)
    return ChangeBatch(
        rows=len(data.get("fp", ())) or 1,
        full=bool(data.get("full")),
        boundaries=bool(data.get("b")),
        footprints=[Footprint.from_json(item) for item in data.get("fp", ())],
        layers=[str(name) for name in data.get("l", ())],
    )


# --------------------------------------------------------------------------- cells


def hex_cell_rows(res: int, cells: Iterable[int]) -> Iterable[tuple[int, int, str]]:
    """``(res, h3, EWKB hex)`` rows of cell polygons in EPSG:3857."""
    cells = [int(c) for c in cells if c is not None and h3.is_valid_cell(h3.int_to_str(int(c)))]
    if not cells:
        return []
    rings = []
    for cell in cells:
        boundary = np.asarray(
            h3.cell_to_boundary(h3.int_to_str(int(cell))), dtype="float64"
        )  # (lat, lng)
        lon, lat = boundary[:, 1], boundary[:, 0]
        x = np.radians(lon) * 6378137.0
        y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * 6378137.0
        rings.append(np.column_stack([x, y]))
    polys = shapely.orient_polygons(np.array([shapely.Polygon(r) for r in rings]), exterior_cw=True)
    polys = shapely.set_srid(polys, 3857)
    wkb = shapely.to_wkb(polys, hex=True, include_srid=True)
    return [(res, int(c), w) for c, w in zip(cells, wkb, strict=True)]


def ensure_cells(conn: psycopg.Connection, cells: Mapping[int, Iterable[int]] | None = None) -> int:
    """Store polygons of cells missing from ``tile_hex_cells`` (None: every report's cells)."""
    added = 0
    cur = conn.cursor(row_factory=tuple_row)
    for res in H3_RESOLUTIONS:
        col = sql.Identifier(f"h3_r{res}")
        if cells is None:
            query = sql.SQL(
                "SELECT DISTINCT r.{col} FROM reports r WHERE NOT EXISTS "
                "(SELECT 1 FROM tile_hex_cells c WHERE c.res = {res} AND c.h3 = r.{col})"
            ).format(col=col, res=sql.Literal(res))
            missing = [row[0] for row in cur.execute(query)]
        else:
            wanted = sorted({int(c) for c in cells.get(res, ()) if c is not None})
            if not wanted:
                continue
            missing = [
                row[0]
                for row in cur.execute(
                    "SELECT w.h3 FROM unnest(%s::bigint[]) AS w(h3) WHERE NOT EXISTS "
                    "(SELECT 1 FROM tile_hex_cells c WHERE c.res = %s AND c.h3 = w.h3)",
                    (wanted, res),
                )
            ]
        rows = hex_cell_rows(res, missing)  # invalid indexes (0, garbage) get no polygon
        if not rows:
            continue
        with cur.copy("COPY tile_hex_cells (res, h3, geom) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        added += len(rows)
    return added


# --------------------------------------------------------------------------- statistics


#: Degrees added around a cell's vertex envelope: its edges are great-circle
#: arcs, which bow out of the straight lines between vertices by millimetres.
_ENVELOPE_PAD = 1e-5


def cell_envelopes(cells: Iterable[int]) -> dict[str, list]:
    """``cells`` and their lon/lat envelopes (``x0``, ``y0``, ``x1``, ``y1``), padded.

    A report stored in a cell lies inside the cell (``gis.hexes`` stores the
    cell that contains the point), so inside this envelope: the incremental
    refresh finds a cell's reports through the ``geom`` GiST index and checks
    the cell column, with no index on the H3 columns (migration 0009).
    """
    out: dict[str, list] = {"cells": [], "x0": [], "y0": [], "x1": [], "y1": []}
    for cell in cells:
        text = h3.int_to_str(int(cell))
        if not h3.is_valid_cell(text):  # no report holds it (cf. hex_cell_rows)
            continue
        ring = np.asarray(h3.cell_to_boundary(text), dtype="float64")
        out["cells"].append(int(cell))
        out["x0"].append(float(ring[:, 1].min()) - _ENVELOPE_PAD)
        out["y0"].append(float(ring[:, 0].min()) - _ENVELOPE_PAD)
        out["x1"].append(float(ring[:, 1].max()) + _ENVELOPE_PAD)
        out["y1"].append(float(ring[:, 0].max()) + _ENVELOPE_PAD)
    return out


def _hex_insert(res: int, scope: str, subset: bool) -> sql.Composed:
    col = sql.Identifier(f"h3_r{res}")
    conds = [sql.SQL("r.public")] if scope == "public" else []
    source = sql.SQL("reports r")
    if subset:  # each report joins its own cell's envelope only: no double counting
        source = sql.SQL(
            "unnest(%(cells)s::bigint[], %(x0)s::float8[], %(y0)s::float8[], %(x1)s::float8[], "
            "%(y1)s::float8[]) AS e(h3, x0, y0, x1, y1) JOIN reports r "
            "ON r.geom && ST_MakeEnvelope(e.x0, e.y0, e.x1, e.y1, 4326) AND r.{col} = e.h3"
        ).format(col=col)
    cond = sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")
    return sql.SQL(
        "INSERT INTO tile_hex_stats (scope, res, h3, h3_hex, {cols}, cx, cy, geom) "
        "SELECT {scope}, {res}, g.h3, lower(to_hex(g.h3)), {stats}, ST_X(g.p), ST_Y(g.p), c.geom "
        "FROM (SELECT r.{col} AS h3, {aggs}, {mean} AS p FROM {source} WHERE {cond} GROUP BY "
        "r.{col}) g "
        "JOIN tile_hex_cells c ON c.res = {res} AND c.h3 = g.h3"
    ).format(
        cols=STATS_COLUMN_LIST,
        scope=sql.Literal(scope),
        res=sql.Literal(res),
        stats=stats_output("g"),
        col=col,
        aggs=stats_aggregates("r"),
        mean=mean_position("r"),
        source=source,
        cond=cond,
    )


def refresh_hex_stats(
    conn: psycopg.Connection, ctx: TileContext, cells: Mapping[int, Iterable[int]] | None = None
) -> None:
    """Recompute hex statistics for the given cells per resolution (None = all)."""
    for res in H3_RESOLUTIONS:
        subset = (
            None if cells is None else sorted({int(c) for c in cells.get(res, ()) if c is not None})
        )
        if subset is not None and not subset:
            continue
        params: dict[str, object] = {**stats_params(ctx)}
        if subset is not None:
            params.update(cell_envelopes(subset))
        if subset is None:
            conn.execute("DELETE FROM tile_hex_stats WHERE res = %s", (res,))
        else:
            conn.execute(
                "DELETE FROM tile_hex_stats WHERE res = %s AND h3 = ANY(%s)", (res, subset)
            )
        for scope in SCOPES:
            conn.execute(_hex_insert(res, scope, subset is not None), params)


def refresh_area_stats(
    conn: psycopg.Connection, ctx: TileContext, codes: Mapping[str, Iterable[str]] | None = None
) -> None:
    """Recompute kelurahan/RW statistics for the given codes per level (None = all)."""
    for level, column in AREA_LEVELS.items():
        subset = None if codes is None else sorted({c for c in codes.get(level, ()) if c})
        if subset is not None and not subset:
            continue
        if subset is None:
            conn.execute("DELETE FROM tile_area_stats WHERE level = %s", (level,))
        else:
            conn.execute(
                "DELETE FROM tile_area_stats WHERE level = %s AND code = ANY(%s)", (level, subset)
            )
        for scope in SCOPES:
            conds = [sql.SQL("r.{} IS NOT NULL").format(sql.Identifier(column))]
            if scope == "public":
                conds.append(sql.SQL("r.public"))
            if subset is not None:
                conds.append(sql.SQL("r.{} = ANY(%(codes)s)").format(sql.Identifier(column)))
            query = sql.SQL(
                "INSERT INTO tile_area_stats (scope, level, code, {cols}) SELECT {scope}, "
                "{level}, g.code, {stats} "
                "FROM (SELECT r.{col} AS code, {aggs} FROM reports r WHERE {cond} GROUP BY "
                "r.{col}) g"
            ).format(
                cols=STATS_COLUMN_LIST,
                scope=sql.Literal(scope),
                level=sql.Literal(level),
                stats=stats_output("g"),
                col=sql.Identifier(column),
                aggs=stats_aggregates("r"),
                cond=sql.SQL(" AND ").join(conds),
            )
            conn.execute(query, {**stats_params(ctx), "codes": subset})


def rebuild(conn: psycopg.Connection, ctx: TileContext) -> None:
    """Recompute every roll-up from ``reports`` (bulk imports; ``tiles refresh --full``)."""
    started = time.perf_counter()
    added = ensure_cells(conn)
    refresh_hex_stats(conn, ctx)
    refresh_area_stats(conn, ctx)
    log.info("tile roll-ups rebuilt (%d new cells) in %.1f s", added, time.perf_counter() - started)


def area_boxes(
    conn: psycopg.Connection, codes: Mapping[str, Iterable[str]]
) -> dict[tuple[str, str], Box]:
    """EPSG:3857 boxes of the RW/kelurahan polygons with these codes."""
    out: dict[tuple[str, str], Box] = {}
    cur = conn.cursor(row_factory=tuple_row)
    for level in AREA_LEVELS:
        wanted = sorted({c for c in codes.get(level, ()) if c})
        if not wanted:
            continue
        for code, x0, y0, x1, y1 in cur.execute(
            "SELECT code, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            "(SELECT code, ST_Envelope(geom) AS e FROM boundaries WHERE level = %s AND code = "
            "ANY(%s)) s",
            (level, wanted),
        ):
            out[(level, code)] = mercator_box(Box(x0, y0, x1, y1))
    return out


# --------------------------------------------------------------------------- the queue


_DRAIN = (
    "DELETE FROM tile_changes RETURNING kind, lon, lat, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, "
    "rw_code, kelurahan_code, layer"
)


def process_changes(conn: psycopg.Connection, ctx: TileContext, *, source: str = "") -> ChangeBatch:
    """Drain the change queue, refresh the roll-ups and NOTIFY the invalidation, in one transaction.

    Parameters
    ----------
    conn
        A connection not inside a transaction.
    ctx
        Tile context (status codes of the statistics).
    source
        Id of the calling tile service, echoed in the NOTIFY payload.

    Returns
    -------
    ChangeBatch
        The footprints to invalidate (empty when the queue was empty).
    """
    started = time.perf_counter()
    batch = ChangeBatch()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        rows = conn.cursor(row_factory=tuple_row).execute(_DRAIN).fetchall()
        if not rows:
            return batch
        batch.rows = len(rows)
        kinds = {r[0] for r in rows}
        batch.boundaries = "boundaries" in kinds
        batch.layers = sorted({r[10] for r in rows if r[0] == "layer"})
        if "full" in kinds:
            batch.full = True
            rebuild(conn, ctx)
        else:
            reports = [r for r in rows if r[0] == "report"]
            cells = {res: {r[3 + i] for r in reports} for i, res in enumerate(H3_RESOLUTIONS)}
            codes = {"rw": {r[8] for r in reports}, "kelurahan": {r[9] for r in reports}}
            ensure_cells(conn, cells)
            refresh_hex_stats(conn, ctx, cells)
            refresh_area_stats(conn, ctx, codes)
            boxes = area_boxes(conn, codes)
            for r in dict.fromkeys(tuple(r[1:]) for r in reports):
                r = ("report", *r)
                areas = {
                    lvl: ((code, boxes[(lvl, code)]),)
                    for lvl, code in (("rw", r[8]), ("kelurahan", r[9]))
                    if (lvl, code) in boxes
                }
                batch.footprints.append(
                    Footprint(
                        r[1], r[2], {res: r[3 + i] for i, res in enumerate(H3_RESOLUTIONS)}, areas
                    )
                )
        for payload in batch.messages(source):
            conn.execute("SELECT pg_notify(%s, %s)", (INVALIDATE_CHANNEL, payload))
    batch.seconds = time.perf_counter() - started
    return batch


def pending_changes(conn: psycopg.Connection) -> int:
    """Rows waiting in the change queue."""
    return int(
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT count(*) FROM tile_changes")
        .fetchone()[0]
    )
