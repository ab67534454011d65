"""Storing a boundary set in PostGIS, all or nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely
from psycopg.rows import dict_row, tuple_row

from gis.boundaries import COLUMNS, LEVELS, METRIC_CRS, BoundarySet


@dataclass(frozen=True)
class StoreResult:
    """What a store did: ``created``, ``replaced`` or ``unchanged``."""

    status: str
    set_id: int
    counts: dict[str, int]


def current_set(conn: psycopg.Connection) -> dict | None:
    """The boundary set in use, or None before the first import."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, fingerprint, counts, report, imported_at FROM boundary_sets "
            "WHERE is_current"
        ).fetchone()


@dataclass(frozen=True)
class AreaName:
    """A kota, kecamatan or kelurahan as people name it: for pickers and place search."""

    level: str
    code: str
    name: str
    kecamatan: str | None
    kota: str | None

    @property
    def label(self) -> str:
        """Name with its kecamatan and kota: ``Gambir, Kec. Gambir, Jakarta Pusat``.

        A kecamatan reads ``Kec. Gambir, Jakarta Pusat``, a kota just its name.
        """
        parts = [f"Kec. {self.name}" if self.level == "kecamatan" else self.name]
        if self.level == "kelurahan" and self.kecamatan:
            parts.append(f"Kec. {self.kecamatan}")
        if self.level != "kota" and self.kota:
            parts.append(self.kota)
        return ", ".join(parts)


def named_areas(
    conn: psycopg.Connection, levels: tuple[str, ...] = ("kelurahan",)
) -> list[AreaName]:
    """The named areas of these levels in the boundary set in use, kota first, then by name."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            SELECT a.level, a.code, a.name, kc.name, kt.name
            FROM boundaries a
            LEFT JOIN boundaries kc ON kc.level = 'kecamatan' AND kc.code = a.kecamatan_code
            LEFT JOIN boundaries kt ON kt.level = 'kota' AND kt.code = a.kota_code
            WHERE a.level = ANY(%s)
            ORDER BY array_position(ARRAY['kota', 'kecamatan', 'kelurahan'], a.level),
                     a.name, a.code
            """,
            (list(levels),),
        ).fetchall()
    return [AreaName(*row) for row in rows]


def store_boundary_set(dsn: str, bset: BoundarySet, *, force: bool = False) -> StoreResult:
    """Replace the stored boundaries with ``bset`` in one transaction.

    Re-importing the set in use (same files, same mapping, same importer) changes
    nothing unless ``force``.  On any error the previous set stays untouched.
    """
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("LOCK TABLE boundaries IN EXCLUSIVE MODE")
            existing = current_set(conn)
            if existing and existing["fingerprint"] == bset.fingerprint and not force:
                return StoreResult("unchanged", existing["id"], existing["counts"])
            counts = {lvl: len(bset.frames[lvl]) for lvl in LEVELS}
            set_id = conn.execute(
                "INSERT INTO boundary_sets (fingerprint, sources, report, counts) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (
                    bset.fingerprint,
                    json.dumps(
                        [
                            {"level": s.level, "path": str(s.path), "columns": s.columns}
                            for s in bset.sources
                        ]
                    ),
                    json.dumps(bset.report.as_dict()),
                    json.dumps(counts),
                ),
            ).fetchone()[0]
            conn.execute("DELETE FROM boundaries")
            _copy_frames(conn, bset, set_id)
            conn.execute("UPDATE boundary_sets SET is_current = false WHERE is_current")
            conn.execute("UPDATE boundary_sets SET is_current = true WHERE id = %s", (set_id,))
        conn.execute("ANALYZE boundaries")
    return StoreResult("replaced" if existing else "created", set_id, counts)


def _copy_frames(conn: psycopg.Connection, bset: BoundarySet, set_id: int) -> None:
    """COPY every level's rows, geometries as hex EWKB (4326 and UTM 48S)."""
    cols = [c for c in COLUMNS if c != "geometry"]
    with conn.cursor() as cur:
        with cur.copy(
            "COPY boundaries ({}, geom, geom_m, set_id) FROM STDIN".format(", ".join(cols))
        ) as copy:
            for level in LEVELS:
                frame = bset.frames[level]
                geoms = shapely.set_srid(frame.geometry.values, 4326)
                metric = shapely.set_srid(frame.to_crs(METRIC_CRS).geometry.values, 32748)
                wkb = shapely.to_wkb(geoms, hex=True, include_srid=True)
                wkb_m = shapely.to_wkb(metric, hex=True, include_srid=True)
                values = frame[cols].astype(object).where(frame[cols].notna(), None).to_numpy()
                for row, g, gm in zip(values, wkb, wkb_m, strict=True):
                    copy.write_row([_plain(v) for v in row] + [g, gm, set_id])


def _plain(value: object) -> object:
    """numpy scalars to Python ones for COPY."""
    if isinstance(value, np.generic):
        return value.item()
    return value
