"""Resolution metrics and Gi* hot spots over 1,000,000 reports, at RW and H3 r9.

Generates 1M seeded synthetic reports with numpy (``tests/analysis_data.py``:
places inside the real RW polygons, categories, workflow times), times the
pandas path in memory, then COPYs them into ``petalapor_bench_analysis`` on the
dev cluster (``db.database_url(Settings())``) and times the SQL path.

Goals on this machine: metrics under 2 s, hot spots under 5 s (per unit
level).  The metrics time is the worst of the pandas and SQL paths; the Gi*
time is the service path (per-unit counts in SQL + Gi* with 9,999
permutations on every unit of the city; the weights are built once per
boundary set and cached, their build time is printed apart).  The last line
is ``analysis: <ratio>x goal (...)`` with ratio = the worst of goal / actual.

    python bench/analysis.py [--n 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from db.cluster import create_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import db  # noqa: E402
from db import analysis  # noqa: E402
from db.boundaries import store_boundary_set  # noqa: E402
from db.migrate import migrate  # noqa: E402
from gis.boundaries import build_boundary_set, load_manifest  # noqa: E402
from gis.hotspots import DEFAULT_PERMUTATIONS, hotspot_frame, unit_values  # noqa: E402
from gis.metrics import MetricSpec, resolution_metrics  # noqa: E402
from petalapor.catalog import sync_catalog  # noqa: E402
from petalapor.settings import Settings  # noqa: E402
from tests.analysis_data import END, synthetic_reports  # noqa: E402

BENCH_DB = "petalapor_bench_analysis"
GOAL_METRICS_S = 2.0
GOAL_HOTSPOTS_S = 5.0
UNITS = ("rw", "h3_9")


def best(fn, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_database(bset, frame) -> tuple[str, float]:
    """Fresh bench database with the boundaries and the reports (indexes rebuilt after COPY)."""
    base = db.database_url(Settings(), migrate=False)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
        create_database(conn, BENCH_DB)
    url = psycopg.conninfo.make_conninfo(base, dbname=BENCH_DB)
    migrate(url)
    store_boundary_set(url, bset)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        sync_catalog(conn)
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'reports' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        for (
            name,
            _,
        ) in indexes:  # bulk load first, index after: the usual way to load a million rows
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        analysis.copy_reports(conn, frame)
        for _, definition in indexes:
            conn.execute(definition)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE reports")
    return url, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    bset = build_boundary_set(load_manifest())
    t0 = time.perf_counter()
    frame = synthetic_reports(bset.frames["rw"], args.n, seed=2024)
    print(
        f"generated {len(frame):,} synthetic reports in {time.perf_counter() - t0:.1f} s "
        "(seed 2024)"
    )
    as_of = END

    metrics: dict[tuple[str, str], float] = {}
    for unit in UNITS:
        spec = MetricSpec(unit=unit, as_of=as_of)
        metrics[("pandas", unit)], table = best(
            lambda spec=spec: resolution_metrics(frame, spec), args.repeat
        )
        print(
            f"metrics pandas  {unit:<5} {metrics[('pandas', unit)]:6.2f} s  ({len(table):,} units)"
        )

    url, load_s = bench_database(bset, frame)
    print(f"COPY into {BENCH_DB} with index rebuild: {load_s:.1f} s")
    hot: dict[tuple[str, str], float] = {}
    cache = analysis.UnitCache()
    with psycopg.connect(url) as conn:
        for unit in UNITS:
            spec = MetricSpec(unit=unit, as_of=as_of)
            metrics[("sql", unit)], table = best(
                lambda spec=spec: analysis.resolution_metrics(conn, spec), args.repeat
            )
            print(
                f"metrics SQL     {unit:<5} {metrics[('sql', unit)]:6.2f} s  ({len(table):,} units)"
            )
        for unit in UNITS:
            spec = MetricSpec(unit=unit, as_of=as_of)
            t0 = time.perf_counter()
            units, weights = cache.get(conn, unit)
            print(
                f"weights         {unit:<5} {time.perf_counter() - t0:6.2f} s  "
                f"({len(units):,} units, once per boundary set)"
            )
            hot[("service", unit)], result = best(
                lambda spec=spec: analysis.hotspots(conn, spec, cache=cache), args.repeat
            )
            classes = result["class"].value_counts().to_dict()
            print(
                f"Gi* service     {unit:<5} {hot[('service', unit)]:6.2f} s  "
                f"({DEFAULT_PERMUTATIONS} permutations; {classes})"
            )
            hot[("pandas", unit)], _ = best(
                lambda spec=spec, units=units, weights=weights: hotspot_frame(
                    units,
                    unit_values(frame, spec)[lambda v: v["code"].isin(units["code"])],
                    weights=weights,
                ),
                1,
            )
            print(
                f"Gi* pandas      {unit:<5} {hot[('pandas', unit)]:6.2f} s  (counts from the frame)"
            )

    worst_metrics = max(metrics.values())
    worst_hot = max(v for (path, _), v in hot.items() if path == "service")
    ratio = min(GOAL_METRICS_S / worst_metrics, GOAL_HOTSPOTS_S / worst_hot)
    print(
        f"analysis: {ratio:.1f}x goal (metrics {worst_metrics:.1f} s vs {GOAL_METRICS_S:.0f} s, "
        f"Gi* {worst_hot:.1f} s vs {GOAL_HOTSPOTS_S:.0f} s)"
    )


if __name__ == "__main__":
    main()
