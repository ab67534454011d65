"""Resolution analysis in SQL: the metrics of :mod:`gis.metrics`, unit values, overlays.

:func:`resolution_metrics` computes in one query exactly what
:func:`gis.metrics.resolution_metrics` computes from a frame (same
definitions, same rounding: durations as ``date_part('epoch', a - b)``, the
Kaplan-Meier curve as a running sum of ``ln(1 - 1/n)`` compared in log space;
target and age limits compared as instants, which is exactly equivalent).
Read the definitions in :mod:`gis.metrics`.

Also here the services the API composes: hot spots over every unit of the
city (:func:`hotspots`, with a :class:`UnitCache` of weights), the RW
overlay (:func:`overlay`) and the multi-resolution view (:func:`compare`).

And the pieces: per-unit values for hot-spot analysis (:func:`unit_values`), unit
geometries (:func:`unit_frame`), the H3 cells of the study area
(:func:`study_cells`), JakWifi coverage and ISPU exposure per RW (overlay
inputs), bulk loading of already-snapped reports (:func:`copy_reports`, for
tests, benchmarks and demo data) and storage of hot-spot results for the
``hotspots`` tile layer (:func:`store_hotspots`).

Identifiers come only from :data:`gis.metrics.UNITS` (composed with
``psycopg.sql``); every value is bound.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql
from psycopg.rows import tuple_row

from db.boundaries import current_set
from gis.hotspots import DEFAULT_PERMUTATIONS
from gis.metrics import (
    BACKLOG_BANDS,
    DAY_S,
    FLOAT_COLUMNS,
    KM_LOG_THRESHOLDS,
    METRIC_COLUMNS,
    RANK_METRICS,
    TARGET_COORDINATION_S,
    TARGET_RESOLUTION_S,
    TIMEZONE,
    UNITS,
    MetricSpec,
)
from petalapor.catalog import REJECTED_STATUS, RESOLVED_STATUS
from petalapor.errors import ConflictError, DataError, InvalidParameterError

#: Session settings of the analysis queries: sorts in memory, no JIT start-up cost, and a
#: parallel scan + sort (Gather Merge) under the window functions, which cannot run in parallel.
SESSION_SETTINGS = {
    "work_mem": "256MB",
    "jit": "off",
    "parallel_setup_cost": "10",
    "parallel_tuple_cost": "0.0001",
}
#: Columns :func:`copy_reports` writes (``id`` and the rest take their defaults).
COPY_COLUMNS: tuple[str, ...] = (
    "source",
    "external_id",
    "category",
    "opd",
    "created_at",
    "updated_at",
    "first_coordinated_at",
    "resolved_at",
    "status",
    "rw_code",
    "kelurahan_code",
    "kecamatan_code",
    "kota_code",
    "snap_method",
    "h3_r7",
    "h3_r8",
    "h3_r9",
    "h3_r10",
    "h3_r11",
)


class LayerNotLoadedError(ConflictError):
    """An overlay needs a context layer (JakWifi, ISPU) that is not loaded yet (HTTP 409)."""


# --------------------------------------------------------------------------- metrics


def resolution_metrics(conn: psycopg.Connection, spec: MetricSpec) -> pd.DataFrame:
    """Resolution metrics from the ``reports`` table, as :func:`gis.metrics.resolution_metrics`.

    Parameters
    ----------
    conn
        Open connection (any row factory).
    spec
        Grouping, filters, ``as_of``, reliability threshold and rank metric.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`gis.metrics.METRIC_COLUMNS`, in the same order and
        with the same values as the pandas path.

    Examples
    --------
    >>> with psycopg.connect(dsn) as conn:                              # doctest: +SKIP
    ...     table = resolution_metrics(conn, MetricSpec(unit="kelurahan"))
    """
    query, params = metrics_query(spec)
    rows = _fetch(conn, query, params)
    if any(row[-1] for row in rows):  # 64-bit hash collision: group on the text itself
        query, params = metrics_query(spec, hashed=False)
        rows = _fetch(conn, query, params)
    return _metrics_frame([row[:-1] for row in rows], spec)


def metrics_query(spec: MetricSpec, *, hashed: bool = True) -> tuple[sql.Composed, dict[str, Any]]:
    """The metrics query and its parameters (built apart from running it).

    Two aggregates of the reports: the counts per group (parallel hash
    aggregate), and the Kaplan-Meier quantiles, where the non-rejected
    reports are sorted by group, time and event-first (parallel scan and
    sort, Gather Merge), numbered and counted in one window pass, and the
    running sum of ``ln(1 - 1/n)`` over events gives ``log S``.  Text keys are grouped by
    their 64-bit hash (``hashed``; ~3x faster to sort); the query flags a
    group whose hash two texts share in its ``collision`` column, and
    :func:`resolution_metrics` then runs it again on the text itself.
    """
    base, params = _base_select(spec, hashed=hashed)
    keys = _active_keys(spec, hashed=hashed)
    key_list = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    bands = sql.SQL(",\n").join(
        sql.SQL(
            "count(*) FILTER (WHERE NOT is_res AND NOT is_rej AND {older} AND {younger}) AS {name}"
        ).format(
            older=sql.SQL("created < %({})s".format(f"age_{lo:g}"))
            if np.isfinite(lo)
            else sql.SQL("true"),
            younger=sql.SQL("created >= %({})s".format(f"age_{hi:g}"))
            if np.isfinite(hi)
            else sql.SQL("true"),
            name=sql.Identifier(name),
        )
        for name, lo, hi in BACKLOG_BANDS
    )
    query = sql.SQL(_METRICS_SQL).format(
        base=base,
        keys=key_list,
        key_outputs=_key_outputs(spec, keys),
        collision=_collision(spec, hashed),
        bands=bands,
        band_names=sql.SQL(", ").join(sql.Identifier(name) for name, _, _ in BACKLOG_BANDS),
        rank_metric=sql.Identifier(spec.rank_by),
        rank_order=sql.SQL("DESC" if RANK_METRICS[spec.rank_by] else "ASC"),
        ranked=sql.Literal(spec.unit is not None),
    )
    # Age limits as instants: "age >= 7 d" is "created <= as_of - 7 d", exactly (microseconds).
    edges = {
        f"age_{d:g}": spec.as_of - dt.timedelta(days=d)
        for _, lo, hi in BACKLOG_BANDS
        for d in (lo, hi)
        if np.isfinite(d)
    }
    params.update(
        edges,
        as_of_7d=spec.as_of - dt.timedelta(seconds=TARGET_RESOLUTION_S),
        as_of_6h=spec.as_of - dt.timedelta(seconds=TARGET_COORDINATION_S),
        # seconds, not days: an interval of days would follow the session's time zone rules
        t7=f"{TARGET_RESOLUTION_S:.0f} seconds",
        t6=f"{TARGET_COORDINATION_S:.0f} seconds",
        s50=KM_LOG_THRESHOLDS["median_days"],
        s10=KM_LOG_THRESHOLDS["p90_days"],
        min_reports=spec.min_reports,
        unit_name=spec.unit if spec.unit is not None else "city",
    )
    return query, params


_METRICS_SQL = """
WITH base AS NOT MATERIALIZED ({base}),
counts AS NOT MATERIALIZED (
    SELECT {keys}, {key_outputs}, {collision} AS collision,
           count(*) AS reports,
           count(*) FILTER (WHERE NOT is_res AND NOT is_rej) AS open,
           count(*) FILTER (WHERE is_res) AS resolved,
           count(*) FILTER (WHERE is_rej) AS rejected,
           count(*) FILTER (WHERE NOT is_rej AND created <= %(as_of_7d)s)
               AS resolved_7d_eligible,
           count(*) FILTER (WHERE is_res AND created <= %(as_of_7d)s
                                   AND res_at <= created + %(t7)s::interval) AS resolved_7d,
           count(*) FILTER (WHERE NOT is_rej AND created <= %(as_of_6h)s)
               AS coordinated_6h_eligible,
           count(*) FILTER (WHERE NOT is_rej AND created <= %(as_of_6h)s
                                   AND coord_at <= created + %(t6)s::interval) AS coordinated_6h,
           {bands}
    FROM base
    GROUP BY {keys}
),
km AS (
    SELECT {keys},
           min(dur) FILTER (WHERE ev AND (rn = total OR logs <= %(s50)s)) AS median_days,
           min(dur) FILTER (WHERE ev AND (rn = total OR logs <= %(s10)s)) AS p90_days
    FROM (
        SELECT o.*,
               sum(CASE WHEN ev AND rn < total
                        THEN ln(1.0::float8 - 1.0::float8 / (total - rn + 1)::float8)
                        ELSE 0.0::float8 END) OVER w AS logs
        FROM (
            -- one window for both: row_number ignores the frame, count sees the whole group
            SELECT {keys}, dur, is_res AS ev, row_number() OVER w AS rn, count(*) OVER w AS total
            FROM base
            WHERE NOT is_rej
            WINDOW w AS (PARTITION BY {keys} ORDER BY dur, is_res DESC
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ) o
        WINDOW w AS (PARTITION BY {keys} ORDER BY dur, ev DESC ROWS UNBOUNDED PRECEDING)
    ) x
    GROUP BY {keys}
),
shares AS (
    SELECT c.*, km.median_days, km.p90_days,
           resolved::float8 / NULLIF(reports - rejected, 0) AS resolved_share,
           rejected::float8 / NULLIF(reports, 0) AS rejected_share,
           resolved_7d::float8 / NULLIF(resolved_7d_eligible, 0) AS resolved_7d_share,
           coordinated_6h::float8 / NULLIF(coordinated_6h_eligible, 0) AS coordinated_6h_share,
           (reports - rejected) >= %(min_reports)s AS reliable
    FROM counts c LEFT JOIN km USING ({keys})
),
flagged AS (
    SELECT shares.*,
           ({ranked} AND reliable AND {rank_metric} IS NOT NULL AND code_out IS NOT NULL)
               AS rankable
    FROM shares
)
SELECT %(unit_name)s AS unit, code_out, period_out, category_out, opd_out,
       reports, open, resolved, rejected, resolved_share, rejected_share, median_days, p90_days,
       resolved_7d_eligible, resolved_7d, resolved_7d_share,
       coordinated_6h_eligible, coordinated_6h, coordinated_6h_share,
       {band_names}, reliable,
       CASE WHEN rankable THEN rank() OVER (
           PARTITION BY period_out, category_out, opd_out, rankable
           ORDER BY {rank_metric} {rank_order}) END,
       collision
FROM flagged
ORDER BY code_out COLLATE "C" NULLS LAST, period_out COLLATE "C",
         category_out COLLATE "C" NULLS LAST, opd_out COLLATE "C" NULLS LAST
"""


def _key_outputs(spec: MetricSpec, keys: list[str]) -> sql.Composed:
    """``code_out, period_out, category_out, opd_out`` of a group (text; NULL when not grouped)."""

    def text(name: str) -> sql.Composable:
        if name in _key_columns(spec) and name not in keys:  # grouped by its hash
            return sql.SQL('min({} COLLATE "C")').format(sql.Identifier(name))
        if name in keys:
            return sql.SQL("NULLIF({}, {})").format(sql.Identifier(name), sql.Literal(_NONE))
        return sql.SQL("NULL::text")

    code = text("code")
    if spec.unit is not None and spec.unit.startswith("h3_"):
        code = sql.SQL("to_hex(code)")
    period = (
        sql.SQL("to_char(period, 'YYYY-MM-DD')") if "period" in keys else sql.SQL("'all'::text")
    )
    return sql.SQL("{} AS code_out, {} AS period_out, {} AS category_out, {} AS opd_out").format(
        code, period, text("category"), text("opd")
    )


def _collision(spec: MetricSpec, hashed: bool) -> sql.Composable:
    """True in a group whose hash is shared by two different texts (or by a text and NULL)."""
    checks = [
        sql.SQL(
            'min({0} COLLATE "C") IS DISTINCT FROM max({0} COLLATE "C") '
            "OR count({0}) NOT IN (0, count(*))"
        ).format(sql.Identifier(name))
        for name, on in (
            ("code", spec.unit is not None and not spec.unit.startswith("h3_")),
            ("category", spec.by_category),
            ("opd", spec.by_opd),
        )
        if on and hashed
    ]
    return sql.SQL(" OR ").join(checks) if checks else sql.SQL("false")


#: Stands for a missing text key in the unhashed fallback (joins need non-NULL keys).
_NONE = "\x01"


def _active_keys(spec: MetricSpec, *, hashed: bool = True) -> list[str]:
    """Grouping keys: 64-bit hashes of text keys when ``hashed``; ``g0`` (a constant) when none.

    The constant is left out otherwise: as a subquery column it would break the
    planner's knowledge that the window input is already sorted.
    """
    h = "_h" if hashed else "_t"
    keys = []
    if spec.unit is not None:
        keys.append("code" if spec.unit.startswith("h3_") else f"code{h}")
    if spec.period is not None:
        keys.append("period")
    if spec.by_category:
        keys.append(f"category{h}")
    if spec.by_opd:
        keys.append(f"opd{h}")
    return keys or ["g0"]


def _key_columns(spec: MetricSpec) -> list[str]:
    """Text key columns of the base select (grouped by a hash or a NULL-free copy)."""
    cols = []
    if spec.unit is not None and not spec.unit.startswith("h3_"):
        cols.append("code")
    if spec.by_category:
        cols.append("category")
    if spec.by_opd:
        cols.append("opd")
    return cols


def _base_select(
    spec: MetricSpec, *, timing: bool = True, hashed: bool = True
) -> tuple[sql.Composed, dict[str, Any]]:
    """``SELECT`` of one row per report: group keys, state flags, times and the KM duration.

    ``is_res`` / ``is_rej``: resolved / rejected at ``as_of``; ``created``,
    ``res_at``, ``coord_at``: the times the counts compare (as instants, cheap
    and exact); ``dur``: days to resolution, or to ``as_of`` for open
    reports.  Not fenced: PostgreSQL inlines it and can scan and sort in
    parallel workers.
    """
    where, params = _where(spec)
    params.update(
        as_of=spec.as_of,
        resolved_status=RESOLVED_STATUS,
        rejected_status=REJECTED_STATUS,
        day=DAY_S,
    )
    fields = [sql.SQL("0 AS g0")]
    text_columns = {
        "code": UNITS[spec.unit] if spec.unit else None,
        "category": "category",
        "opd": "opd",
    }
    for name in _key_columns(spec):
        column = sql.SQL("r.{}").format(sql.Identifier(text_columns[name]))
        fields.append(sql.SQL("{} AS {}").format(column, sql.Identifier(name)))
        if hashed:  # 0 stands for NULL; a real text hashing to 0 is caught by the collision check
            fields.append(
                sql.SQL("coalesce(hashtextextended({}, 0), 0) AS {}").format(
                    column, sql.Identifier(f"{name}_h")
                )
            )
        else:
            fields.append(
                sql.SQL('coalesce({}, {}) COLLATE "C" AS {}').format(
                    column, sql.Literal(_NONE), sql.Identifier(f"{name}_t")
                )
            )
    if spec.unit is not None and spec.unit.startswith("h3_"):
        fields.append(sql.SQL("r.{} AS code").format(sql.Identifier(UNITS[spec.unit])))
    if spec.period is not None:
        fields.append(
            sql.SQL("date_trunc({field}, r.created_at AT TIME ZONE {tz}) AS period").format(
                field=sql.Literal(spec.period), tz=sql.Literal(TIMEZONE)
            )
        )
    fields += [
        sql.SQL(_RESOLVED_SQL + " AS is_res"),
        sql.SQL(_REJECTED_SQL + " AS is_rej"),
        sql.SQL("r.created_at AS created"),
    ]
    if timing:
        fields += [
            sql.SQL("coalesce(r.resolved_at, r.updated_at) AS res_at"),
            sql.SQL(
                "coalesce(r.first_coordinated_at, CASE WHEN r.status = %(resolved_status)s "
                "THEN coalesce(r.resolved_at, r.updated_at) END) AS coord_at"
            ),
            sql.SQL(
                "date_part('epoch', (CASE WHEN "
                + _RESOLVED_SQL
                + " THEN coalesce(r.resolved_at, r.updated_at) "
                "ELSE %(as_of)s::timestamptz END) - r.created_at) / %(day)s AS dur"
            ),
        ]
    query = sql.SQL("SELECT {fields} FROM reports r WHERE {where}").format(
        fields=sql.SQL(", ").join(fields), where=where
    )
    return query, params


#: Resolved / rejected at ``as_of`` (see :mod:`gis.metrics`).  Durations are
#: ``date_part('epoch', a - b)``: whole days x 86400 plus the remaining microseconds / 1e6,
#: reproduced by ``gis.metrics._seconds``.
_RESOLVED_SQL = (
    "(r.status = %(resolved_status)s AND coalesce(r.resolved_at, r.updated_at) <= %(as_of)s)"
)
_REJECTED_SQL = "(r.status = %(rejected_status)s AND r.updated_at <= %(as_of)s)"


def _where(spec: MetricSpec) -> tuple[sql.Composed, dict[str, Any]]:
    """Filter of :func:`gis.metrics.select_reports`, as SQL with bound values."""
    conds = [sql.SQL("r.created_at <= %(as_of)s")]
    params: dict[str, Any] = {}
    if spec.start is not None:
        conds.append(sql.SQL("r.created_at >= %(start)s"))
        params["start"] = spec.start
    if spec.end is not None:
        conds.append(sql.SQL("r.created_at < %(end)s"))
        params["end"] = spec.end
    if spec.categories:
        conds.append(sql.SQL("r.category = ANY(%(categories)s)"))
        params["categories"] = list(spec.categories)
    if spec.opds:
        conds.append(sql.SQL("r.opd = ANY(%(opds)s)"))
        params["opds"] = list(spec.opds)
    if spec.within is not None:
        level, code = spec.within
        conds.append(sql.SQL("r.{} = %(within)s").format(sql.Identifier(UNITS[level])))
        params["within"] = code
    if not spec.include_private:
        conds.append(sql.SQL("r.public"))
    return sql.SQL(" AND ").join(conds), params


def _fetch(conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any]) -> list[tuple]:
    """Run an analysis query with :data:`SESSION_SETTINGS` in its own transaction."""
    with conn.transaction():
        with conn.cursor(row_factory=tuple_row) as cur:
            for name, value in SESSION_SETTINGS.items():
                cur.execute("SELECT set_config(%s, %s, true)", (name, value))
            return cur.execute(query, params).fetchall()


def _metrics_frame(rows: list[tuple], spec: MetricSpec) -> pd.DataFrame:
    """Rows of the metrics query as the pandas path's frame (same dtypes)."""
    frame = pd.DataFrame.from_records(rows, columns=list(METRIC_COLUMNS))
    for col in METRIC_COLUMNS:
        if col in FLOAT_COLUMNS or col == "rank":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        elif col == "reliable":
            frame[col] = frame[col].astype(bool)
        elif col in ("unit", "code", "period", "category", "opd"):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        else:
            frame[col] = frame[col].astype(np.int64)
    return frame


# --------------------------------------------------------------------------- unit values


def unit_values(conn: psycopg.Connection, spec: MetricSpec) -> pd.DataFrame:
    """Reports and open backlog per unit (no period/category/OPD grouping).

    Parameters
    ----------
    conn
        Open connection.
    spec
        Filters, ``as_of`` and ``unit`` (required); the grouping flags are ignored.

    Returns
    -------
    pandas.DataFrame
        ``code`` (str; H3 cells as hex strings), ``reports``, ``open``; only
        units with reports, unknown units left out.

    See Also
    --------
    gis.hotspots.unit_values : the same from a frame.
    """
    if spec.unit is None:
        raise DataError("unit_values needs a unit")
    spec = spec.with_(period=None, by_category=False, by_opd=False)
    base, params = _base_select(spec, timing=False)
    code = sql.SQL("to_hex(code)" if spec.unit.startswith("h3_") else "code")
    query = sql.SQL(
        "SELECT {code} AS code, count(*) AS reports, "
        "count(*) FILTER (WHERE NOT is_res AND NOT is_rej) AS open "
        "FROM ({base}) b WHERE code IS NOT NULL GROUP BY b.code ORDER BY b.code"
    ).format(base=base, code=code)
    rows = _fetch(conn, query, params)
    frame = pd.DataFrame.from_records(rows, columns=["code", "reports", "open"])
    return frame.astype({"code": object, "reports": np.int64, "open": np.int64})


# --------------------------------------------------------------------------- geometry


def current_set_id(conn: psycopg.Connection) -> int:
    """Id of the boundary set in use.

    Raises
    ------
    LayerNotLoadedError
        No boundaries imported yet.
    """
    bset = current_set(conn)
    if bset is None:
        raise LayerNotLoadedError("no boundaries loaded: run `petalapor boundaries import` first")
    return int(bset["id"])


def unit_frame(
    conn: psycopg.Connection,
    level: str,
    *,
    codes: Sequence[str] | None = None,
    parent: tuple[str, str] | None = None,
    simplify_m: float | None = None,
) -> gpd.GeoDataFrame:
    """Administrative units of one level: ``code, name, kelurahan_code, area_km2, geometry``.

    Parameters
    ----------
    conn
        Open connection.
    level
        ``rw``, ``kelurahan``, ``kecamatan`` or ``kota``.
    codes
        Only these codes.
    parent
        ``(level, code)``: only units inside this kelurahan/kecamatan/kota.
    simplify_m
        Simplify in metres (UTM 48S), preserving topology.
    """
    if level not in ("rw", "kelurahan", "kecamatan", "kota"):
        raise DataError(f"no boundaries for unit {level!r}")
    geom = (
        "ST_Transform(ST_SimplifyPreserveTopology(geom_m, %(tol)s), 4326)" if simplify_m else "geom"
    )
    conds = ["level = %(level)s"]
    params: dict[str, Any] = {"level": level, "tol": simplify_m}
    if codes is not None:
        conds.append("code = ANY(%(codes)s)")
        params["codes"] = list(codes)
    if parent is not None:
        plevel, pcode = parent
        column = {
            "kelurahan": "kelurahan_code",
            "kecamatan": "kecamatan_code",
            "kota": "kota_code",
            "rw": "code",
        }
        conds.append(
            sql.SQL("{} = %(parent)s").format(sql.Identifier(column[plevel])).as_string(conn)
        )
        params["parent"] = pcode
    query = (
        f"SELECT code, name, kelurahan_code, area_m2 / 1e6 AS area_km2, ST_AsBinary({geom}) AS wkb "
        f"FROM boundaries WHERE {' AND '.join(conds)} ORDER BY code"
    )
    rows = _fetch(conn, sql.SQL(query), params)
    frame = pd.DataFrame.from_records(
        rows, columns=["code", "name", "kelurahan_code", "area_km2", "wkb"]
    )
    geometry = shapely.from_wkb([bytes(w) for w in frame.pop("wkb")]) if len(frame) else []
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def area_names(conn: psycopg.Connection, level: str, code: str) -> dict[str, str | None] | None:
    """``{level: name, "kecamatan": ..., "kota": ...}`` of one boundary, or None when unknown."""
    rows = _fetch(
        conn,
        sql.SQL(
            "SELECT b.name, k.name, t.name FROM boundaries b "
            "LEFT JOIN boundaries k ON k.level = 'kecamatan' AND k.code = b.kecamatan_code "
            "LEFT JOIN boundaries t ON t.level = 'kota' AND t.code = b.kota_code "
            "WHERE b.level = %(level)s AND b.code = %(code)s"
        ),
        {"level": level, "code": code},
    )
    if not rows:
        return None
    name, kecamatan, kota = rows[0]
    return {level: name, "kecamatan": kecamatan, "kota": kota}


def study_cells(conn: psycopg.Connection, res: int) -> np.ndarray:
    """int64 H3 cells (resolution ``res``) whose centre lies in a kelurahan polygon.

    These are the units of an H3 hot-spot analysis: every cell of the city,
    with or without reports, so empty cells count as zeros.
    """
    import h3

    rows = _fetch(
        conn, sql.SQL("SELECT ST_AsBinary(geom) FROM boundaries WHERE level = 'kelurahan'"), {}
    )
    if not rows:
        raise LayerNotLoadedError("no boundaries loaded: run `petalapor boundaries import` first")
    geoms = shapely.from_wkb([bytes(r[0]) for r in rows])
    cells: set[int] = set()
    for geom in geoms:
        for poly in getattr(geom, "geoms", [geom]):
            shape = h3.LatLngPoly(
                [(y, x) for x, y in poly.exterior.coords],
                *[[(y, x) for x, y in ring.coords] for ring in poly.interiors],
            )
            cells.update(h3.str_to_int(c) for c in h3.polygon_to_cells(shape, res))
    return np.array(sorted(cells), dtype=np.int64)


# --------------------------------------------------------------------------- overlays


def wifi_by_rw(conn: psycopg.Connection) -> pd.DataFrame:
    """JakWifi coverage per RW from the layers package's ``jakwifi_coverage`` table.

    Returns
    -------
    pandas.DataFrame
        ``code, wifi_count, wifi_per_km2, wifi_nearest_m`` (see
        :mod:`gis.overlay` for the definitions).

    Raises
    ------
    LayerNotLoadedError
        The table is missing or holds no RW rows (no hotspots imported).
    """
    hint = "petalapor layers import-jakwifi FILE (or generate-jakwifi)"
    _require_table(conn, "jakwifi_coverage", "JakWifi coverage", hint)
    rows = _fetch(
        conn,
        sql.SQL(
            "SELECT code, n_hotspots, per_km2, nearest_m FROM jakwifi_coverage "
            "WHERE unit = 'rw' ORDER BY code"
        ),
        {},
    )
    if not rows:
        raise LayerNotLoadedError(f"JakWifi coverage has no RW rows: run `{hint}`")
    frame = pd.DataFrame.from_records(
        rows, columns=["code", "wifi_count", "wifi_per_km2", "wifi_nearest_m"]
    )
    return frame.astype({"wifi_count": np.int64, "wifi_per_km2": float, "wifi_nearest_m": float})


def rw_centroids(conn: psycopg.Connection, codes: list[str] | None = None) -> pd.DataFrame:
    """``code, lon, lat`` of every RW's centroid (UTM 48S centroid, back in lon/lat).

    ``codes``: only these RWs.
    """
    rows = _fetch(
        conn,
        sql.SQL(
            "SELECT code, ST_X(p), ST_Y(p) FROM ("
            "SELECT code, ST_Transform(ST_Centroid(geom_m), 4326) AS p "
            "FROM boundaries WHERE level = 'rw' "
            "AND (%(codes)s::text[] IS NULL OR code = ANY(%(codes)s))) s ORDER BY code"
        ),
        {"codes": codes},
    )
    return pd.DataFrame.from_records(rows, columns=["code", "lon", "lat"])


def ispu_by_rw(
    conn: psycopg.Connection,
    start: dt.datetime | None,
    end: dt.datetime | None,
    codes: list[str] | None = None,
) -> pd.DataFrame:
    """Period-mean ISPU at each RW centroid (``codes``: these RWs only): ``code, ispu_mean``.

    ``attrs["days"]`` holds the first and last day of the readings used.

    The period is ``[start, end)`` in Asia/Jakarta days (default: everything
    stored).  Each station's mean over the period
    (``layers.surface.station_values``) is interpolated by inverse-distance
    weighting in UTM metres (``layers.surface.idw``, power 2), the ISPU
    surface's method.

    Raises
    ------
    LayerNotLoadedError
        No ISPU readings are stored (``petalapor layers import-ispu``).
    DataError
        No station reported in the period.
    """
    from db.layers import read_readings, read_stations
    from layers.surface import idw, station_values

    _require_table(conn, "ispu_readings", "ISPU readings", "petalapor layers import-ispu")
    lo = _local_day(start) if start else None
    hi = _local_day(end - dt.timedelta(microseconds=1)) if end else None
    readings = read_readings(conn, start=lo, end=hi)
    if readings.empty:
        span = _fetch(conn, sql.SQL("SELECT min(date), max(date) FROM ispu_readings"), {})[0]
        raise DataError(
            f"no ISPU readings between {lo or 'the start'} and {hi or 'the end'}; "
            f"stored: {span[0]} .. {span[1]}"
        )
    first, last = readings["date"].min(), readings["date"].max()
    means = station_values(readings, read_stations(conn), (first, last))
    points = rw_centroids(conn, codes)
    to_m = _to_metric()
    sx, sy = to_m.transform(means["lon"].to_numpy(), means["lat"].to_numpy())
    qx, qy = to_m.transform(points["lon"].to_numpy(), points["lat"].to_numpy())
    values = idw(np.column_stack([sx, sy]), means["value"].to_numpy(), np.column_stack([qx, qy]))
    out = pd.DataFrame({"code": points["code"], "ispu_mean": values})
    out.attrs["days"] = (first, last)
    return out


def _local_day(value: dt.datetime) -> dt.date:
    return pd.Timestamp(value).tz_convert(TIMEZONE).date()


def _to_metric() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", "EPSG:32748", always_xy=True)


def _require_table(conn: psycopg.Connection, table: str, what: str, hint: str) -> None:
    rows = _fetch(conn, sql.SQL("SELECT to_regclass(%(t)s) IS NOT NULL"), {"t": table})
    if not rows[0][0]:
        raise LayerNotLoadedError(f"{what} not loaded (table {table} missing): run `{hint}`")
    rows = _fetch(
        conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)), {}
    )
    if not rows[0][0]:
        raise LayerNotLoadedError(f"{what} not loaded (table {table} is empty): run `{hint}`")


# --------------------------------------------------------------------------- services


@dataclass
class UnitCache:
    """Study units and their weights per (boundary set, unit), built once per process.

    RW Queen weights take ~0.5 s and the H3 study area ~0.5 s at r9; both only
    change with the boundary set.  H3 study areas grown by cells that hold
    reports outside every kelurahan are kept too (a few variants at most).
    """

    entries: dict[tuple, tuple[gpd.GeoDataFrame, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_entries: int = 32

    def get(
        self, conn: psycopg.Connection, unit: str, extra: tuple[str, ...] = ()
    ) -> tuple[gpd.GeoDataFrame, Any]:
        """``(units, weights)`` of the whole city for ``unit``, plus the H3 cells ``extra``."""
        key = (current_set_id(conn), unit, extra)
        with self.lock:
            if key not in self.entries:
                if len(self.entries) >= self.max_entries:
                    self.entries.pop(next(iter(self.entries)))
                self.entries[key] = (
                    _study_units(conn, unit)
                    if not extra
                    else _grown(self.get_base(conn, unit), extra)
                )
            return self.entries[key]

    def get_base(self, conn: psycopg.Connection, unit: str) -> tuple[gpd.GeoDataFrame, Any]:
        """The study units without extra cells (caller holds the lock)."""
        key = (current_set_id(conn), unit, ())
        if key not in self.entries:
            self.entries[key] = _study_units(conn, unit)
        return self.entries[key]


def _grown(
    base: tuple[gpd.GeoDataFrame, Any], extra: tuple[str, ...]
) -> tuple[gpd.GeoDataFrame, Any]:
    from gis.hexes import str_to_cells
    from gis.hotspots import h3_weights, hex_units

    units = pd.concat([base[0], hex_units(str_to_cells(extra))], ignore_index=True)
    return units, h3_weights(units["h3"].to_numpy(), list(units["code"]))


def _study_units(conn: psycopg.Connection, unit: str) -> tuple[gpd.GeoDataFrame, Any]:
    from gis.hotspots import h3_weights, hex_units, polygon_weights

    if unit.startswith("h3_"):
        units = hex_units(study_cells(conn, int(unit[3:])))
        return units, h3_weights(units["h3"].to_numpy(), list(units["code"]))
    units = unit_frame(conn, unit)
    return units, polygon_weights(units)


def hotspots(
    conn: psycopg.Connection,
    spec: MetricSpec,
    *,
    metric: str = "count",
    method: str = "gistar",
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    inference: str = "permutation",
    alpha: float = 0.05,
    cache: UnitCache | None = None,
) -> gpd.GeoDataFrame:
    """Hot spots of reports over every unit of the city (see :mod:`gis.hotspots`).

    Per-unit values come from SQL (:func:`unit_values`, with the spec's
    filters and ``as_of``); the statistics from :func:`gis.hotspots.hotspot_frame`.
    H3 cells that hold reports but whose centre is outside every kelurahan
    are added to the study area.
    """
    from gis.hotspots import HOTSPOT_UNITS, hotspot_frame

    if spec.unit not in HOTSPOT_UNITS:
        raise InvalidParameterError(
            f"hot spots need unit in {', '.join(HOTSPOT_UNITS)}, got {spec.unit!r}"
        )
    cache = cache or UnitCache()
    units, weights = cache.get(conn, spec.unit)
    values = unit_values(conn, spec)
    if spec.unit.startswith("h3_"):
        extra = tuple(sorted(set(values["code"]) - set(units["code"])))
        if extra:
            units, weights = cache.get(conn, spec.unit, extra)
    else:
        values = values[values["code"].isin(units["code"])]
    result = hotspot_frame(
        units,
        values,
        metric=metric,
        method=method,
        weights=weights,
        permutations=permutations,
        seed=seed,
        inference=inference,
        alpha=alpha,
    )
    result.attrs.update(unit=spec.unit, as_of=spec.as_of.isoformat())
    return result


def with_geometry(
    conn: psycopg.Connection, table: pd.DataFrame, unit: str, *, simplify_m: float | None = None
) -> gpd.GeoDataFrame:
    """A table keyed by ``code`` with the units' ``name`` (admin units) and geometry added."""
    from gis.hotspots import hex_units

    codes = sorted({c for c in table["code"] if c is not None})
    if unit.startswith("h3_"):
        from gis.hexes import str_to_cells

        geo = hex_units(str_to_cells(codes))[["code", "geometry"]] if codes else _empty_geo()
    else:
        geo = unit_frame(conn, unit, codes=codes, simplify_m=simplify_m)[
            ["code", "name", "geometry"]
        ]
    merged = table.merge(geo, on="code", how="left")
    return gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")


def _empty_geo() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": pd.Series(dtype=object)}, geometry=gpd.GeoSeries([], crs="EPSG:4326")
    )


def overlay(
    conn: psycopg.Connection,
    spec: MetricSpec,
    *,
    layers: Sequence[str] = ("wifi", "ispu"),
    ci: str = "fisher",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    max_distance_m: float = 300.0,
    permutations: int = DEFAULT_PERMUTATIONS,
    cache: UnitCache | None = None,
) -> dict[str, pd.DataFrame]:
    """RW metrics joined with JakWifi coverage, ISPU exposure and Gi* hot spots.

    Returns
    -------
    dict
        ``table`` (one row per RW, :func:`gis.overlay.overlay_table`),
        ``correlations`` (:func:`gis.overlay.correlations`) and ``priority``
        (:func:`gis.overlay.priority_rws`; empty without the wifi layer).

    Raises
    ------
    LayerNotLoadedError
        A requested layer is not loaded (HTTP 409).
    """
    from gis import overlay as ov

    unknown = sorted(set(layers) - set(ov.COVARIATES))
    if unknown or not layers:
        raise InvalidParameterError(
            f"layers must be a non-empty subset of {', '.join(ov.COVARIATES)}, got {list(layers)}"
        )
    spec = spec.with_(unit="rw", period=None, by_category=False, by_opd=False, within=None)
    wifi = wifi_by_rw(conn) if "wifi" in layers else None
    ispu = ispu_by_rw(conn, spec.start, spec.end) if "ispu" in layers else None
    metrics = resolution_metrics(conn, spec)
    hot = hotspots(conn, spec, metric="count", permutations=permutations, seed=seed, cache=cache)
    hot = pd.DataFrame({"code": hot["code"], "hot_class": hot["class"], "hot_z": hot["z"]})
    table = ov.overlay_table(metrics, wifi=wifi, ispu=ispu, hot=hot, max_distance_m=max_distance_m)
    covariates = [c for name in layers for c in ov.COVARIATES[name]]
    corr = ov.correlations(
        table, covariates=covariates, method=ci, level=level, n_boot=n_boot, seed=seed
    )
    priority = ov.priority_rws(table) if wifi is not None else table.iloc[0:0]
    return {"table": table, "correlations": corr, "priority": priority}


#: Text of the multi-resolution view's note on the modifiable areal unit problem.
MAUP_NOTE = (
    "Modifiable areal unit problem: the same reports give different maps at different units. "
    "Small units (RW, fine H3 cells) have few reports each, so their values spread widely and "
    "their extremes are mostly small-number noise; large units average that away but also hide "
    "real local differences. Unit boundaries matter too: an RW and an H3 cell of similar size "
    "cut the city differently. Compare the distributions below (spread, share of reliable units), "
    "not single units across resolutions; the pooled city value is the same at every resolution."
)


def compare(
    conn: psycopg.Connection, spec: MetricSpec, metric: str, units: Sequence[str]
) -> dict[str, Any]:
    """One metric at several resolutions, with distribution summaries (the MAUP view).

    Returns
    -------
    dict
        ``metric, pooled`` (the city-wide value), ``note`` and per unit
        ``{"unit", "summary", "table"}`` where ``table`` is the metrics table
        and ``summary`` describes the metric over reliable units (n, mean,
        sd, cv, min, p10, median, p90, max, iqr, share reliable).
    """
    from gis.metrics import METRIC_COLUMNS

    numeric = [
        c
        for c in METRIC_COLUMNS
        if c not in ("unit", "code", "period", "category", "opd", "reliable", "rank")
    ]
    if metric not in numeric:
        raise InvalidParameterError(f"metric must be one of {', '.join(numeric)}, got {metric!r}")
    if not 1 <= len(units) <= 4 or len(set(units)) != len(units):
        raise InvalidParameterError(f"units must be 1 to 4 distinct units, got {list(units)}")
    base = spec.with_(period=None, by_category=False, by_opd=False)
    pooled = resolution_metrics(conn, base.with_(unit=None))
    out = []
    for unit in units:
        table = resolution_metrics(conn, base.with_(unit=unit))
        out.append({"unit": unit, "summary": distribution_summary(table, metric), "table": table})
    value = pooled[metric].iloc[0] if len(pooled) else None
    return {"metric": metric, "pooled": _num(value), "note": MAUP_NOTE, "resolutions": out}


def distribution_summary(table: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Spread of ``metric`` over the reliable, located units of a metrics table."""
    located = table[table["code"].notna()]
    values = located.loc[located["reliable"], metric].astype(float).dropna().to_numpy()
    summary: dict[str, Any] = {
        "units": int(len(located)),
        "reliable_units": int(located["reliable"].sum()),
        "reliable_share": float(located["reliable"].mean()) if len(located) else None,
        "n": int(len(values)),
    }
    if len(values):
        q = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
        mean, sd = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.update(
            mean=mean,
            sd=sd,
            cv=sd / mean if mean else None,
            min=float(values.min()),
            p10=float(q[0]),
            median=float(q[2]),
            p90=float(q[4]),
            max=float(values.max()),
            iqr=float(q[3] - q[1]),
        )
    return summary


# --------------------------------------------------------------------------- loading and storing


def copy_reports(conn: psycopg.Connection, frame: pd.DataFrame, *, source: str = "analysis") -> int:
    """COPY already-snapped reports into ``reports`` (tests, benchmarks, demo data).

    Parameters
    ----------
    conn
        Open connection; the catalog must be synced (foreign keys).
    frame
        Columns ``lon, lat`` (EPSG:4326) or a point ``geometry``, and the
        :data:`COPY_COLUMNS` (``source``, ``external_id`` and
        ``snap_method`` are filled in when missing; ``public`` is optional).
        Timestamps must be time-zone aware.
    source
        Source name when the frame has none.

    Returns
    -------
    int
        Rows written.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    f = pd.DataFrame(frame).copy()
    if "lon" not in f.columns:
        geoms = gpd.GeoSeries(frame.geometry)
        f["lon"], f["lat"] = geoms.x.to_numpy(), geoms.y.to_numpy()
    f["source"] = f["source"] if "source" in f.columns else source
    f["external_id"] = (
        f["external_id"] if "external_id" in f.columns else np.arange(len(f)).astype(str)
    )
    f["snap_method"] = f["snap_method"] if "snap_method" in f.columns else "inside"
    missing = sorted(set(COPY_COLUMNS) - set(f.columns))
    if missing:
        raise DataError(f"reports frame lacks column(s) {missing}")
    columns = [*COPY_COLUMNS, *(["public"] if "public" in f.columns else [])]
    arrays = {c: _arrow_column(f[c]) for c in columns}
    points = shapely.points(f["lon"].to_numpy(float), f["lat"].to_numpy(float))
    arrays["geom"] = pa.array(
        shapely.to_wkb(shapely.set_srid(points, 4326), hex=True, include_srid=True)
    )
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(arrays), buf, pacsv.WriteOptions(include_header=False))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*columns, "geom"))
    with conn.cursor() as cur:
        with cur.copy(
            sql.SQL("COPY reports ({}) FROM STDIN WITH (FORMAT csv)").format(cols)
        ) as copy:
            copy.write(buf.getvalue())
    return len(f)


def _arrow_column(values: pd.Series) -> Any:
    """A column for the CSV COPY: timestamps in UTC to the microsecond, NULL for missing."""
    import pyarrow as pa

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return pa.array(values.dt.tz_convert("UTC").astype("datetime64[us, UTC]"))
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
        return pa.array(values.to_numpy())
    return pa.array(values.astype(object).where(values.notna(), None).tolist(), type=pa.string())


def store_hotspots(conn: psycopg.Connection, result: gpd.GeoDataFrame) -> int:
    """Replace the published hot-spot result (table ``analysis_hotspots``, tile layer ``hotspots``).

    Parameters
    ----------
    conn
        Open connection.
    result
        A frame of :func:`hotspots` / :func:`gis.hotspots.hotspot_frame`
        (its ``attrs`` say unit, method and metric).

    Returns
    -------
    int
        Rows written.
    """
    attrs = dict(result.attrs)
    unit = attrs.get("unit") or "unit"
    missing = [
        c
        for c in ("code", "value", "reports", "z", "p_value", "q_value", "class")
        if c not in result
    ]
    if missing:
        raise DataError(f"hot-spot frame lacks column(s) {missing}")
    geoms = shapely.to_wkb(
        shapely.set_srid(_multi(result.geometry.to_numpy()), 4326), hex=True, include_srid=True
    )
    params = json.dumps(attrs, default=str)
    with conn.transaction():
        conn.execute("DELETE FROM analysis_hotspots")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY analysis_hotspots (id, unit, code, method, metric, value, reports, z, "
                "p_value, "
                "q_value, hotspot_class, geom, params) FROM STDIN"
            ) as copy:
                for i, code in enumerate(result["code"].tolist()):
                    copy.write_row(
                        (
                            f"{unit}:{code}",
                            unit,
                            code,
                            attrs.get("method"),
                            attrs.get("metric"),
                            _num(result["value"].iat[i]),
                            int(result["reports"].iat[i]),
                            _num(result["z"].iat[i]),
                            _num(result["p_value"].iat[i]),
                            _num(result["q_value"].iat[i]),
                            result["class"].iat[i],
                            geoms[i],
                            params,
                        )
                    )
    return len(result)


def _multi(geoms: np.ndarray) -> np.ndarray:
    return np.array(
        [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geoms],
        dtype=object,
    )


def load_published_hotspots() -> gpd.GeoDataFrame:
    """The stored result as a GeoDataFrame (the layer's ``load``)."""
    import db
    from petalapor.settings import Settings

    with psycopg.connect(db.database_url(Settings())) as conn:
        rows = _fetch(
            conn,
            sql.SQL(
                "SELECT id, unit, code, method, metric, value, reports, z, p_value, q_value, "
                "hotspot_class, "
                "ST_AsBinary(geom) FROM analysis_hotspots ORDER BY id"
            ),
            {},
        )
    cols = [
        "id",
        "unit",
        "code",
        "method",
        "metric",
        "value",
        "reports",
        "z",
        "p_value",
        "q_value",
        "hotspot_class",
    ]
    frame = pd.DataFrame.from_records([r[:-1] for r in rows], columns=cols)
    return gpd.GeoDataFrame(
        frame, geometry=shapely.from_wkb([bytes(r[-1]) for r in rows]), crs="EPSG:4326"
    )


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
