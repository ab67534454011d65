"""A few thousand synthetic reports on the real RW polygons, for the auth, page and browser tests.

Points are drawn inside RW polygons by PostGIS (``ST_GeneratePoints``, seeded),
so every report has its RW, kelurahan, kecamatan and kota; H3 cells come from
h3-py.  Idempotent: reports have ``source = 'synthetic'`` and fixed external ids.
A few hidden reports (``public = false``) carry :data:`SECRET_TEXT` and a reporter
hash :data:`SECRET_REPORTER`, which no public response may ever contain.
"""

from __future__ import annotations

import datetime as dt
import random

import h3
import psycopg

from petalapor.catalog import get_catalog, sync_catalog

SOURCE = "synthetic"
SECRET_TEXT = "RAHASIA-PELAPOR-7f3a"
SECRET_REPORTER = "reporterhash-5be1c0de-identity"
#: Categories used, with weights (banjir: DSDA, jalan_rusak: DBM, sampah: DLH, ...).
CATEGORIES = {
    "banjir": 5,
    "jalan_rusak": 4,
    "sampah": 4,
    "pohon_tumbang": 1,
    "penerangan_jalan": 2,
    "kesehatan": 1,
}
STATUSES = [("menunggu", 2), ("koordinasi", 1), ("proses", 2), ("selesai", 6), ("ditolak", 1)]


def _points(conn: psycopg.Connection, n: int, seed: int) -> list[tuple]:
    """``n`` points inside RW polygons of a seeded sample of RWs, with their codes."""
    rows = conn.execute(
        """
        WITH rw AS (
            SELECT code, kelurahan_code, kecamatan_code, kota_code, geom
            FROM boundaries WHERE level = 'rw' AND kota_code <> '3101'
            ORDER BY md5(code || %(seed)s::text) LIMIT %(n_rw)s
        ), pts AS (
            SELECT rw.code, rw.kelurahan_code, rw.kecamatan_code, rw.kota_code,
                   (ST_Dump(ST_GeneratePoints(rw.geom, %(per)s, %(seed)s))).geom AS g
            FROM rw
        )
        SELECT code, kelurahan_code, kecamatan_code, kota_code, ST_X(g), ST_Y(g)
        FROM pts ORDER BY code, ST_X(g)
        """,
        # dense enough that most hexes pass the public k-anonymity threshold
        {"seed": seed, "n_rw": max(1, n // 20), "per": 20},
    ).fetchall()
    return rows[:n]


def ensure_synthetic_reports(dsn: str, n: int = 3000, seed: int = 7) -> int:
    """Insert the synthetic reports once; returns how many exist."""
    with psycopg.connect(dsn) as conn:
        sync_catalog(conn)
        have = conn.execute("SELECT count(*) FROM reports WHERE source = %s", (SOURCE,)).fetchone()[
            0
        ]
        if have >= n:
            return have
        catalog = get_catalog()
        rnd = random.Random(seed)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        cats, cat_w = zip(*CATEGORIES.items(), strict=True)
        sts, st_w = zip(*STATUSES, strict=True)
        rows = []
        for i, (rw, kel, kec, kota, lon, lat) in enumerate(_points(conn, n, seed)):
            cat = rnd.choices(cats, cat_w)[0]
            status = rnd.choices(sts, st_w)[0]
            created = now - dt.timedelta(days=rnd.uniform(2, 300), minutes=rnd.randint(0, 1440))
            coordinated = (
                created + dt.timedelta(hours=rnd.uniform(0.5, 30)) if status != "menunggu" else None
            )
            resolved = (
                created + dt.timedelta(days=rnd.lognormvariate(1.3, 0.9))
                if status == "selesai"
                else None
            )
            if resolved and resolved > now:
                resolved = now
            cells = [h3.str_to_int(h3.latlng_to_cell(lat, lon, r)) for r in (7, 8, 9, 10, 11)]
            hidden = i % 97 == 0
            rows.append(
                (
                    SOURCE,
                    f"syn-{seed}-{i:06d}",
                    cat,
                    catalog.categories[cat].opd,
                    f"{SECRET_TEXT} laporan tersembunyi" if hidden else f"Laporan {cat} #{i}",
                    f"{SECRET_TEXT} isi rahasia" if hidden else "Laporan sintetis untuk uji",
                    created,
                    resolved or coordinated or created,
                    coordinated,
                    resolved,
                    status,
                    lon,
                    lat,
                    rw,
                    kel,
                    kec,
                    kota,
                    *cells,
                    not hidden,
                )
            )
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO reports (source, external_id, category, opd, title, description,
                    created_at, updated_at, first_coordinated_at, resolved_at, status, geom,
                    rw_code, kelurahan_code, kecamatan_code, kota_code, snap_method,
                    snap_distance_m, h3_r7, h3_r8, h3_r9, h3_r10,
                    h3_r11, public)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s, %s, 'inside', 0,
                    %s, %s, %s, %s, %s, %s)
                ON CONFLICT (source, external_id) DO NOTHING
                """,
                rows,
            )
            # every report has a reporter identity (a salted hash) that must never leak
            cur.execute(
                "INSERT INTO reporter_identities (report_id, reporter_hash) "
                "SELECT id, %s || '-' || external_id FROM reports WHERE source = %s "
                "ON CONFLICT DO NOTHING",
                (SECRET_REPORTER, SOURCE),
            )
        conn.commit()
        return conn.execute("SELECT count(*) FROM reports WHERE source = %s", (SOURCE,)).fetchone()[
            0
        ]
