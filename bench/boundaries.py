"""Import time for the real kelurahan + RW boundary set.

Times petalapor's full import (read, repair, dissolve, derive levels, hierarchy
and overlap checks, store in one transaction) against a plain load of the same
two files (read with geopandas, COPY the raw geometries, no checks) into the
same server.  Uses its own database ``petalapor_bench_boundaries``.

    python bench/boundaries.py
"""

from __future__ import annotations

import time

import geopandas as gpd
import psycopg
import shapely
from psycopg import sql

import db
from db.boundaries import current_set, store_boundary_set
from db.cluster import create_database
from db.migrate import migrate
from gis.boundaries import build_boundary_set, load_manifest, sources_fingerprint
from petalapor.settings import Settings

BENCH_DB = "petalapor_bench_boundaries"


def bench_database() -> str:
    """A fresh, migrated bench database on the configured server."""
    base = db.database_url(Settings(), migrate=False)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
        create_database(conn, BENCH_DB)
    url = psycopg.conninfo.make_conninfo(base, dbname=BENCH_DB)
    migrate(url)
    return url


def plain_load(url: str, sources) -> float:
    """Read both files and COPY their geometries as they are: the floor."""
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE plain (code text, geom geometry)")
        with conn.cursor().copy("COPY plain (code, geom) FROM STDIN") as copy:
            for src in sources:
                frame = gpd.read_file(src.path)
                wkb = shapely.to_wkb(
                    shapely.set_srid(frame.geometry.values, 4326), hex=True, include_srid=True
                )
                for code, geom in zip(frame[src.columns["code"]], wkb, strict=True):
                    copy.write_row((code, geom))
    return time.perf_counter() - started


def main() -> None:
    url = bench_database()
    sources = load_manifest()
    plain = min(plain_load(url, sources) for _ in range(3))

    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        bset = build_boundary_set(sources)
        t1 = time.perf_counter()
        store_boundary_set(url, bset, force=True)
        t2 = time.perf_counter()
        runs.append((t2 - t0, t1 - t0, t2 - t1))
    total, build, store = min(runs)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        status = (
            "unchanged"
            if current_set(conn)["fingerprint"] == sources_fingerprint(sources)
            else "changed"
        )
    noop = time.perf_counter() - t0

    counts = bset.report.counts
    print(f"sources: {', '.join(str(s.path) for s in sources)}")
    print(f"build (read, repair, dissolve, derive, checks): {build:.2f} s")
    print(f"store (one transaction, COPY, ANALYZE):        {store:.2f} s")
    print(f"full import:                                   {total:.2f} s (best of 3)")
    print(f"re-import check, same files ({status}):      {noop:.2f} s")
    print(f"plain load, no checks (anchor):                {plain:.2f} s")
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
    print(
        f"boundaries: {plain / total:.2f}x plain load ({total:.2f} s vs {plain:.2f} s for "
        f"{counts['kelurahan']} kelurahan + {counts['rw']:,} RW, all four levels)"
    )


if __name__ == "__main__":
    main()
