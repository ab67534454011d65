"""The data quality report: how reports were placed, and what the imports left in quarantine.

Snapping keeps every report: inside an RW (``inside``), on the nearest RW within the
tolerance (``nearest``: the coast, rivers, slivers between polygons), or flagged
``outside`` with the distance to the nearest RW.  This report counts each method,
sums up the distances, names the sources and kota the ``nearest``/``outside`` reports
come from, lists the farthest ``outside`` reports, and (for admins) the recent
imports with their quarantined rows by field.  Used by ``GET /reports/quality`` and
``petalapor reports quality``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from db.reports import ReportFilter
from gis.snap import METHODS

#: Outside reports listed, farthest first.
FARTHEST = 20
#: Recent imports listed (admins).
IMPORTS = 10


def quality_report(
    conn: psycopg.Connection, filters: ReportFilter, *, imports: bool = False
) -> dict[str, Any]:
    """The report over the reports ``filters`` lets this caller see.

    ``imports``: also the recent imports and their quarantine (file names and raw
    rows are for admins).
    """
    where, params = filters.where()
    with conn.cursor(row_factory=dict_row) as cur:
        # one pass for every count (method x source x kota, a few dozen rows) ...
        groups = cur.execute(
            f"""
            SELECT g.method, g.source, g.kota_code, b.name AS kota, g.n FROM (
                SELECT r.snap_method AS method, r.source, r.kota_code, count(*) AS n
                FROM reports r WHERE {where} GROUP BY 1, 2, 3
            ) g LEFT JOIN boundaries b ON b.level = 'kota' AND b.code = g.kota_code
            """,
            params,
        ).fetchall()
        # ... the distances of the few placed off a polygon ...
        distances = cur.execute(
            f"""
            SELECT r.snap_method AS method,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY r.snap_distance_m) AS median_m,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY r.snap_distance_m) AS p90_m,
                   max(r.snap_distance_m) AS max_m
            FROM reports r WHERE {where} AND r.snap_method <> 'inside' GROUP BY 1
            """,
            params,
        ).fetchall()
        # ... and the farthest of those left outside
        farthest = cur.execute(
            f"""
            SELECT r.id::text AS id, r.source, r.external_id, r.created_at,
                   round(ST_X(r.geom)::numeric, 6)::float8 AS lon,
                   round(ST_Y(r.geom)::numeric, 6)::float8 AS lat,
                   round(r.snap_distance_m::numeric, 1)::float8 AS distance_m
            FROM reports r WHERE {where} AND r.snap_method = 'outside'
            ORDER BY r.snap_distance_m DESC, r.id LIMIT {FARTHEST}
            """,
            params,
        ).fetchall()
    counts = {m: 0 for m in METHODS}
    sources: dict[str, dict[str, Any]] = {}
    kotas: dict[tuple, int] = {}
    for g in groups:
        counts[g["method"]] += g["n"]
        src = sources.setdefault(
            g["source"], {"source": g["source"], "reports": 0, "nearest": 0, "outside": 0}
        )
        src["reports"] += g["n"]
        if g["method"] != "inside":
            src[g["method"]] += g["n"]
        if g["method"] == "nearest":
            key = (g["kota_code"], g["kota"])
            kotas[key] = kotas.get(key, 0) + g["n"]
    by_source = sorted(sources.values(), key=lambda s: (-s["outside"], -s["nearest"], s["source"]))
    nearest_by_kota = [
        {"code": code, "name": name, "nearest": n}
        for (code, name), n in sorted(kotas.items(), key=lambda kv: (-kv[1], kv[0][0] or ""))
    ]
    found = {row["method"]: row for row in distances}
    total = sum(counts.values())
    snap = {}
    for method in METHODS:
        snap[method] = {
            "reports": counts[method],
            "share": counts[method] / total if total else None,
        }
        if method != "inside":
            row = found.get(method, {})
            snap[method]["distance_m"] = {
                k: None if row.get(k) is None else round(float(row[k]), 1)
                for k in ("median_m", "p90_m", "max_m")
            }
    out: dict[str, Any] = {
        "reports": total,
        "snap": snap,
        "by_source": by_source,
        "nearest_by_kota": nearest_by_kota,
        "farthest_outside": farthest,
    }
    if imports:
        out["imports"] = recent_imports(conn)
    return out


def recent_imports(conn: psycopg.Connection, limit: int = IMPORTS) -> list[dict[str, Any]]:
    """The latest imports: file, time, their summary, quarantined rows by field."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT i.id::text AS id, i.source_file, i.started_at,
                   i.summary->'read' AS read, i.summary->'stored' AS stored,
                   i.summary->'updated' AS updated, i.summary->'quarantined' AS quarantined,
                   i.summary->'snap' AS snap,
                   (SELECT coalesce(jsonb_object_agg(field, n), '{}'::jsonb) FROM (
                        SELECT coalesce(q.field, '(row)') AS field, count(*) AS n
                        FROM report_quarantine q WHERE q.import_id = i.id GROUP BY 1
                    ) f) AS quarantine_by_field,
                   (SELECT coalesce(jsonb_agg(e ORDER BY e.row_number), '[]'::jsonb) FROM (
                        SELECT q.row_number, q.field, q.reason
                        FROM report_quarantine q WHERE q.import_id = i.id
                        ORDER BY q.row_number LIMIT 5
                    ) e) AS first_quarantined
            FROM report_imports i
            ORDER BY i.started_at DESC, i.id
            LIMIT %s
            """,
            (limit,),
        ).fetchall()
    return rows


def render_quality(report: dict[str, Any]) -> str:
    """The report as text (``petalapor reports quality``)."""
    lines = [f"reports: {report['reports']:,}", "placement (snap method):"]
    for method, row in report["snap"].items():
        share = "" if row["share"] is None else f" ({row['share']:.2%})"
        dist = row.get("distance_m")
        extra = (
            f"; distance to the nearest RW: median {dist['median_m']} m, "
            f"p90 {dist['p90_m']} m, max {dist['max_m']} m"
            if dist and dist["median_m"] is not None
            else ""
        )
        lines.append(f"  {method:<8} {row['reports']:>10,}{share}{extra}")
    flagged = [s for s in report["by_source"] if s["nearest"] or s["outside"]]
    if flagged:
        lines.append("by source (nearest / outside):")
        lines += [
            f"  {s['source']:<12} {s['nearest']:>8,} / {s['outside']:<8,} of {s['reports']:,}"
            for s in flagged
        ]
    if report["nearest_by_kota"]:
        lines.append("nearest by kota:")
        lines += [
            f"  {k['name'] or k['code']:<24} {k['nearest']:>8,}" for k in report["nearest_by_kota"]
        ]
    if report["farthest_outside"]:
        lines.append(f"farthest outside (first {FARTHEST}):")
        lines += [
            f"  {r['distance_m']:>10,.1f} m  {r['lon']:.6f},{r['lat']:.6f}  "
            f"{r['source']}:{r['external_id']}  {r['id']}"
            for r in report["farthest_outside"]
        ]
    for imp in report.get("imports", []):
        fields = ", ".join(f"{k}: {v}" for k, v in sorted(imp["quarantine_by_field"].items()))
        lines.append(
            f"import {imp['id']} {imp['started_at']:%Y-%m-%d %H:%M} {imp['source_file']}: "
            f"read {imp['read']}, stored {imp['stored']}, updated {imp['updated']}, "
            f"quarantined {imp['quarantined']}" + (f" ({fields})" if fields else "")
        )
        lines += [
            f"    row {q['row_number']}: {q['field'] or '(row)'}: {q['reason']}"
            for q in imp["first_quarantined"]
        ]
    return "\n".join(lines)
