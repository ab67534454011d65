"""Bulk import on a real PostGIS with the real boundaries: PetaBencana, bad rows, atomicity."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from db.ingest import (
    ImportSummary,
    Mapping,
    frame_table,
    import_file,
    import_frame,
    load_mapping,
    prepare,
    read_table,
)
from petalapor.catalog import get_catalog
from petalapor.errors import ConfigError
from tests.databases import throwaway_database

PETABENCANA = (
    "petabencana_jbd_reports_2017-02-20.geojson",
    "petabencana_jbd_reports_2017-02-22.geojson",
)
TABLES = ("reports", "report_events", "report_quarantine", "report_imports")


@pytest.fixture(scope="module")
def idb(dsn: str, boundary_set) -> Iterator[str]:
    """This module's database (boundaries, catalog), shared by the tests that add to it."""
    with _database(dsn, boundary_set) as url:
        yield url


@pytest.fixture()
def fresh_db(dsn: str, boundary_set) -> Iterator[str]:
    """A database of its own for one test."""
    with _database(dsn, boundary_set) as url:
        yield url


def _database(dsn: str, boundary_set):  # noqa: ANN001, ANN202 - BoundarySet, context manager
    return throwaway_database(dsn, "t_ingest", boundary_set=boundary_set, catalog=True)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
            ).fetchone()[0]
            for t in TABLES
        }


def check_invariant(summary: ImportSummary) -> None:
    assert summary.read == summary.stored + summary.updated + summary.quarantined


# --------------------------------------------------------------------------- PetaBencana


@pytest.fixture(scope="module")
def petabencana(idb: str, shared_data: Path) -> list[ImportSummary]:
    """Both real PetaBencana files imported once into the module database."""
    mapping = load_mapping("petabencana")
    out = []
    for name in PETABENCANA:
        summary = import_file(idb, shared_data / "reports" / name, mapping, progress=False)
        print("\n" + summary.render())
        out.append(summary)
    return out


def test_petabencana_both_files(petabencana: list[ImportSummary], idb: str) -> None:
    assert [s.read for s in petabencana] == [69, 78]
    for s in petabencana:
        check_invariant(s)
        assert s.updated == 0
        assert s.events == s.stored
    stored = sum(s.stored for s in petabencana)
    quarantined = sum(s.quarantined for s in petabencana)
    assert stored + quarantined == 147
    # Every point lies within 0.1 degrees of Jakarta: all are stored, none quarantined.
    assert quarantined == 0
    snap = {k: sum(s.snap[k] for s in petabencana) for k in ("inside", "nearest", "outside")}
    shares = {k: v / stored for k, v in snap.items()}
    print("PetaBencana snap shares:", {k: f"{v:.1%}" for k, v in shares.items()})
    # Jabodetabek, mostly DKI (SOURCES.md: ~92 % of the archive in DKI)
    assert 0.7 < shares["inside"] < 0.97
    assert 0.02 < shares["outside"] < 0.25
    with psycopg.connect(idb) as conn:
        rows = conn.execute(
            "SELECT source, category, opd, status, snap_method, rw_code, kelurahan_code, attrs "
            "FROM reports"
        ).fetchall()
        assert len(rows) == stored
        assert {r[0] for r in rows} == {"qlue", "grasp", "detik"}
        assert {(r[1], r[2], r[3]) for r in rows} == {("banjir", "DSDA", "menunggu")}
        outside = [r for r in rows if r[4] == "outside"]
        assert all(r[5] is None and r[6] is None for r in outside)
        assert any("flood_depth" in r[7] for r in rows)
        assert all(r[7]["snap_level"] in ("rw", "kelurahan") for r in rows)
        n_events = conn.execute(
            "SELECT count(*) FROM report_events WHERE from_status IS NULL"
        ).fetchone()[0]
        assert n_events == stored


def test_petabencana_times_and_text(petabencana, idb: str) -> None:
    """created_at is local time (UTC+7); empty titles become NULL; flood depth kept as a number."""
    with psycopg.connect(idb) as conn:
        row = conn.execute(
            "SELECT created_at, title, description, media_url, attrs FROM reports "
            "WHERE description LIKE 'Banjir di area belakang, didepan komplek%%'"
        ).fetchone()
    created, title, text, media, attrs = row
    # "2017-02-20T07:58:22.262" in Jakarta
    assert created == pd.Timestamp("2017-02-20T00:58:22.262", tz="UTC").to_pydatetime()
    assert title is None and media is None
    assert attrs["flood_depth"] == 77


def test_snapping_and_h3_match_the_database(petabencana, idb: str) -> None:
    """Stored codes equal the SQL rule (petalapor_snap); H3 cells equal h3.latlng_to_cell."""
    with psycopg.connect(idb) as conn:
        rows = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom), rw_code, kelurahan_code, snap_method, snap_distance_m, "
            "h3_r7, h3_r9, h3_r11, attrs->>'snap_level' FROM reports"
        ).fetchall()
        for lon, lat, rw, kel, method, dist, r7, r9, r11, level in rows:
            code, m, d = conn.execute(
                "SELECT * FROM petalapor_snap('rw', %s, %s, 100)", (lon, lat)
            ).fetchone()
            if code is not None:
                assert (rw, method, level) == (code, m, "rw")
                assert dist == pytest.approx(d, abs=1e-6)
            else:
                kcode, km, kd = conn.execute(
                    "SELECT * FROM petalapor_snap('kelurahan', %s, %s, 100)", (lon, lat)
                ).fetchone()
                assert (rw, kel, method, level) == (None, kcode, km, "kelurahan")
                assert dist == pytest.approx(kd, abs=1e-6)
            for res, cell in ((7, r7), (9, r9), (11, r11)):
                assert cell == h3.str_to_int(h3.latlng_to_cell(lat, lon, res))


def test_reimport_updates_only(petabencana, idb: str, shared_data: Path) -> None:
    before = counts(idb)
    mapping = load_mapping("petabencana")
    again = [
        import_file(idb, shared_data / "reports" / n, mapping, progress=False) for n in PETABENCANA
    ]
    for first, second in zip(petabencana, again, strict=True):
        check_invariant(second)
        assert second.stored == 0
        assert second.updated == first.stored
        assert second.events == 0
    after = counts(idb)
    assert after["reports"] == before["reports"]
    assert after["report_events"] == before["report_events"]
    assert after["report_imports"] == before["report_imports"] + 2
    with psycopg.connect(idb) as conn:
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT source, external_id FROM reports "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        assert dupes == 0
        summary = conn.execute(
            "SELECT summary FROM report_imports WHERE id = %s", (again[0].import_id,)
        ).fetchone()[0]
    assert summary["updated"] == petabencana[0].stored and summary["stored"] == 0


# --------------------------------------------------------------------------- bad rows

GOOD = {
    "id": "g",
    "lat": "-6.1754",
    "lon": "106.8272",
    "category": "sampah",
    "created_at": "2024-03-01 08:00:00",
    "description": "Tumpukan sampah",
    "status": "",
    "media_url": "",
    "public": "",
}
#: 1-based row -> (changes, expected field); other rows are good.
BAD_ROWS = {
    2: ({"lat": "abc"}, "lat"),
    4: ({"lon": ""}, "lon"),
    5: ({"category": "banjir_bandang"}, "category"),
    7: ({"created_at": "31/02/2024 25:61"}, "created_at"),
    9: ({"id": "r3"}, "external_id"),  # duplicate of row 3
    10: ({"lat": "95"}, "lat"),
    11: ({"lon": "110.5"}, "lon,lat"),  # Borneo: outside the service area
    12: ({"status": "hilang"}, "status"),
    13: ({"created_at": "2099-01-01T00:00:00+07:00"}, "created_at"),
    14: ({"media_url": "ftp://example.org/a.jpg"}, "media_url"),
    15: ({"public": "mungkin"}, "public"),
    16: ({"resolved_at": "2024-02-01 08:00:00"}, "resolved_at"),  # before created_at
    17: ({"description": "bad\x01text"}, "description"),
}


def write_bad_csv(path: Path, n: int = 20) -> None:
    cols = [*GOOD, "resolved_at"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for row_number in range(1, n + 1):
            row = {**GOOD, "id": f"r{row_number}", "resolved_at": ""}
            # spread the good points a little so they land in different RWs
            row["lon"] = f"{106.80 + row_number * 0.003:.4f}"
            changes, _ = BAD_ROWS.get(row_number, ({}, None))
            row.update(changes)
            writer.writerow(row)


def test_bad_rows_quarantined_with_row_numbers(idb: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    write_bad_csv(path)
    mapping = Mapping().with_options(columns={"external_id": "id"}, defaults={"source": "csvtest"})
    before = counts(idb)
    summary = import_file(idb, path, mapping, progress=False)
    print("\n" + summary.render())
    check_invariant(summary)
    assert summary.read == 20
    assert summary.quarantined == len(BAD_ROWS)
    assert summary.stored == 20 - len(BAD_ROWS)
    with psycopg.connect(idb) as conn:
        got = conn.execute(
            "SELECT row_number, field, reason, raw, source_file FROM report_quarantine "
            "WHERE import_id = %s "
            "ORDER BY row_number",
            (summary.import_id,),
        ).fetchall()
        stored = {
            r[0] for r in conn.execute("SELECT external_id FROM reports WHERE source = 'csvtest'")
        }
    assert {r[0]: r[1] for r in got} == {k: v[1] for k, v in BAD_ROWS.items()}
    assert all(r[4] == str(path) for r in got)
    by_row = {r[0]: r for r in got}
    assert by_row[2][3]["lat"] == "abc"  # the raw row, as read
    assert by_row[9][3]["id"] == "r3"
    assert "first at row 3" in by_row[9][2]
    assert "banjir_bandang" in by_row[5][2]
    assert stored == {f"r{i}" for i in range(1, 21) if i not in BAD_ROWS}
    after = counts(idb)
    assert after["report_quarantine"] == before["report_quarantine"] + len(BAD_ROWS)


def test_small_batches_give_the_same_quarantine(idb: str, tmp_path: Path) -> None:
    """Validation streams in batches; duplicates across batches are still caught."""
    path = tmp_path / "bad.csv"
    write_bad_csv(path)
    mapping = Mapping().with_options(
        columns={"external_id": "id"}, defaults={"source": "csvbatches"}
    )
    summary = import_file(idb, path, mapping, chunk_rows=3, progress=False)
    check_invariant(summary)
    with psycopg.connect(idb) as conn:
        got = conn.execute(
            "SELECT row_number, field, reason FROM report_quarantine WHERE import_id = %s",
            (summary.import_id,),
        ).fetchall()
    assert {r[0]: r[1] for r in got} == {k: v[1] for k, v in BAD_ROWS.items()}
    assert any("first at row 3" in r[2] for r in got if r[0] == 9)


def test_quarantined_frame_rows_are_stored_as_json(idb: str) -> None:
    """NaN, timestamps and NUL characters in raw rows become valid JSON."""
    frame = pd.DataFrame(
        {
            "external_id": ["j1", "j2", "j3"],
            "lon": [106.82, np.nan, 106.83],
            "lat": [-6.18, -6.18, -6.18],
            "created_at": pd.to_datetime(["2024-01-01T10:00"] * 3).tz_localize("Asia/Jakarta"),
            "description": ["ok", "ok", "bad\x00nul"],
            "attrs": ['{"depth": 12}', None, "{}"],
        }
    )
    mapping = Mapping().with_options(defaults={"source": "jsontest", "category": "banjir"})
    summary = import_frame(idb, frame, mapping, label="mem", progress=False)
    check_invariant(summary)
    assert (summary.stored, summary.quarantined) == (1, 2)
    with psycopg.connect(idb) as conn:
        raws = dict(
            conn.execute(
                "SELECT row_number, raw FROM report_quarantine WHERE import_id = %s",
                (summary.import_id,),
            ).fetchall()
        )
        attrs = conn.execute("SELECT attrs FROM reports WHERE source = 'jsontest'").fetchone()[0]
    assert raws[2]["lon"] is None and raws[2]["created_at"].startswith("2024-01-01T10:00:00+07")
    assert raws[3]["description"] == "badnul"
    assert attrs == {"depth": 12, "snap_level": "rw"}


def test_prepare_first_failure_wins_and_duplicates_prefer_valid_rows() -> None:
    frame = pd.DataFrame(
        {
            "external_id": ["a", "a", "b", "b"],
            "source": ["web"] * 4,
            "category": ["banjir", "banjir", "nope", "banjir"],
            "created_at": ["2024-01-01T10:00:00+07:00"] * 4,
            "lon": ["106.8", "x", "106.8", "106.8"],
            "lat": ["-6.2", "-6.2", "-6.2", "-6.2"],
        }
    )
    prepared = prepare(frame_table(frame, "mem"), Mapping())
    q = prepared.quarantine.set_index("row_number")
    assert q.loc[2, "field"] == "lon"  # bad lon, not "duplicate"
    assert q.loc[3, "field"] == "category"
    assert list(prepared.valid) == [0, 3]  # row 4 is kept: row 3 (same id) was invalid
    assert prepared.rows["created_at"].iloc[0] == pd.Timestamp("2024-01-01T03:00:00", tz="UTC")


def test_timezones_and_offsets() -> None:
    frame = pd.DataFrame(
        {
            "external_id": ["1", "2", "3", "4"],
            "created_at": [
                "2024-01-01 10:00",
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:00:00+09:00",
                "2024-01-01T10:00:00.5",
            ],
            "lon": [106.8] * 4,
            "lat": [-6.2] * 4,
        }
    )
    mapping = Mapping().with_options(defaults={"source": "web", "category": "banjir"})
    got = prepare(frame_table(frame, "mem"), mapping).rows["created_at"].tolist()
    assert got == [
        pd.Timestamp("2024-01-01T03:00", tz="UTC"),
        pd.Timestamp("2024-01-01T10:00", tz="UTC"),
        pd.Timestamp("2024-01-01T01:00", tz="UTC"),
        pd.Timestamp("2024-01-01T03:00:00.5", tz="UTC"),
    ]
    utc = mapping.with_options(timezone="UTC")
    assert prepare(frame_table(frame, "mem"), utc).rows["created_at"].iloc[0] == pd.Timestamp(
        "2024-01-01T10:00", tz="UTC"
    )


def test_ids_read_as_text_keep_leading_zeros(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("external_id,lat,lon,created_at\n007,-6.2,106.8,2024-01-01 10:00\n")
    mapping = Mapping().with_options(defaults={"source": "web", "category": "banjir"})
    rows = prepare(read_table(path), mapping).rows
    assert rows["external_id"].tolist() == ["007"]


# --------------------------------------------------------------------------- atomicity


def test_bad_mapping_stores_nothing(idb: str, tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    write_bad_csv(path)
    before = counts(idb)
    with pytest.raises(ConfigError, match="not in the file"):
        import_file(
            idb,
            path,
            Mapping().with_options(columns={"external_id": "report_no"}, defaults={"source": "x"}),
            progress=False,
        )
    with pytest.raises(ConfigError, match="category"):
        import_file(
            idb,
            path,
            Mapping(columns={"external_id": ("id",)}, defaults={"source": "x"}).with_options(
                columns={"category": "kategori"}
            ),
            progress=False,
        )
    with pytest.raises(ConfigError, match="unknown role"):
        Mapping().with_options(columns={"colour": "x"})
    assert counts(idb) == before


def test_failure_mid_import_leaves_nothing(fresh_db: str, tmp_path: Path) -> None:
    """A constraint violation in a late chunk rolls back every chunk, quarantine and record."""
    n = 260
    frame = pd.DataFrame(
        {
            "external_id": [f"x{i}" for i in range(n)],
            "lat": np.linspace(-6.30, -6.12, n).round(6).astype(str),
            "lon": np.linspace(106.72, 106.95, n).round(6).astype(str),
            "created_at": ["2024-05-01T09:00:00+07:00"] * n,
            "description": ["ok"] * n,
        }
    )
    frame.loc[3, "lat"] = "not a number"  # quarantined, but must not survive the rollback
    frame.loc[230, "description"] = "boom"  # the database refuses this one, in the last chunk
    path = tmp_path / "boom.csv"
    frame.to_csv(path, index=False)
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "ALTER TABLE reports ADD CONSTRAINT test_no_boom "
            "CHECK (description IS DISTINCT FROM 'boom')"
        )
        conn.commit()
    before = counts(fresh_db)
    mapping = Mapping().with_options(defaults={"source": "web", "category": "sampah"})
    with pytest.raises(psycopg.errors.CheckViolation):
        import_file(fresh_db, path, mapping, chunk_rows=50, progress=False)
    assert counts(fresh_db) == before
    # bulk mode too: the dropped indexes and keys come back with the rollback
    with psycopg.connect(fresh_db) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'reports' ORDER BY 1"
        ).fetchall()
    with pytest.raises(psycopg.errors.CheckViolation):
        import_file(fresh_db, path, mapping, chunk_rows=50, bulk=True, progress=False)
    assert counts(fresh_db) == before
    with psycopg.connect(fresh_db) as conn:
        assert (
            conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'reports' ORDER BY 1"
            ).fetchall()
            == indexes
        )
    # without the bad row, the same file goes in
    frame.loc[230, "description"] = "fine"
    frame.to_csv(path, index=False)
    summary = import_file(fresh_db, path, mapping, chunk_rows=50, progress=False)
    check_invariant(summary)
    assert (summary.stored, summary.quarantined) == (n - 1, 1)


def test_bulk_mode_restores_indexes_and_keys(fresh_db: str) -> None:
    def schema(url: str) -> tuple[list, list]:
        with psycopg.connect(url) as conn:
            idx = conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE tablename IN ('reports', 'report_events') ORDER BY 1, 2"
            ).fetchall()
            cons = conn.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
                "FROM pg_constraint "
                "WHERE conrelid IN ('reports'::regclass, 'report_events'::regclass) "
                "OR confrelid IN ('reports'::regclass, 'report_events'::regclass) "
                "ORDER BY 1, 2"
            ).fetchall()
            triggers = conn.execute(
                "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
                "WHERE tgrelid IN ('reports'::regclass, 'report_events'::regclass) "
                "AND NOT tgisinternal ORDER BY 1, 2"
            ).fetchall()
        return idx, cons, triggers

    before = schema(fresh_db)
    from db.ingest import places_from_db
    from gis.demo import generate_demo

    with psycopg.connect(fresh_db) as conn:
        rw = places_from_db(conn).rw
        conn.execute("DELETE FROM tile_changes")
    demo = generate_demo(rw, n=3000, seed=5)
    summary = import_frame(fresh_db, demo.reports, events=demo.events, bulk=True, progress=False)
    assert summary.bulk and summary.direct and summary.stored == 3000
    assert schema(fresh_db) == before
    with psycopg.connect(fresh_db) as conn:  # the TRUNCATE's full rebuild, no per-row queue
        kinds = conn.execute("SELECT kind FROM tile_changes").fetchall()
        n, distinct, top = conn.execute(
            "SELECT count(*), count(DISTINCT id), max(id) FROM report_events"
        ).fetchone()
        after = conn.execute(
            "SELECT nextval(pg_get_serial_sequence('report_events', 'id'))"
        ).fetchone()[0]
    assert kinds == [("full",)]
    assert n == distinct == summary.events and after == top + 1  # ids from Python, sequence on
    with psycopg.connect(fresh_db) as conn:
        conn.execute("ANALYZE reports")
        query = "EXPLAIN SELECT * FROM reports WHERE rw_code = '3171010001001000'"
        plan = "\n".join(r[0] for r in conn.execute(query))
    assert "reports_rw" in plan


# --------------------------------------------------------------------------- direct load

REPORT_COLUMNS = (
    "source, external_id, category, opd, title, description, media_url, created_at, "
    "updated_at, first_coordinated_at, resolved_at, status, ST_AsEWKB(geom), rw_code, "
    "kelurahan_code, kecamatan_code, kota_code, snap_method, snap_distance_m, h3_r7, h3_r8, "
    "h3_r9, h3_r10, h3_r11, public, attrs"
)


def stored_rows(url: str) -> tuple[list, list]:
    """Reports (without their generated id) and events (by report key), sorted."""
    with psycopg.connect(url) as conn:
        reports = conn.execute(
            f"SELECT {REPORT_COLUMNS} FROM reports ORDER BY source, external_id"
        ).fetchall()
        events = conn.execute(
            "SELECT r.source, r.external_id, e.from_status, e.to_status, e.at, e.actor_opd, "
            "e.note FROM report_events e JOIN reports r ON r.id = e.report_id "
            "ORDER BY 1, 2, 5, 3 NULLS FIRST, 4"
        ).fetchall()
    return reports, events


@pytest.mark.parametrize("histories", [True, False], ids=["histories", "creation-events"])
def test_direct_load_stores_what_the_upsert_stores(
    dsn: str, boundary_set, tmp_path: Path, histories: bool
) -> None:
    """Bulk mode into an empty table COPYs straight into reports; same rows as the upsert."""
    from gis.demo import generate_demo

    demo = generate_demo(boundary_set.frames["rw"], n=2500, seed=7)
    events = demo.events if histories else None
    with _database(dsn, boundary_set) as direct, _database(dsn, boundary_set) as upsert:
        a = import_frame(direct, demo.reports, events=events, bulk=True, chunk_rows=700)
        b = import_frame(upsert, demo.reports, events=events, bulk=False, chunk_rows=700)
        assert a.direct and a.bulk and not b.direct
        for s in (a, b):
            check_invariant(s)
        assert (a.stored, a.updated, a.events, a.snap) == (b.stored, b.updated, b.events, b.snap)
        assert a.stored == 2500
        assert a.events == (len(demo.events) if histories else 2500)
        assert stored_rows(direct) == stored_rows(upsert)
        with psycopg.connect(direct) as conn:
            # event ids follow each report's history
            ordered = conn.execute(
                "SELECT bool_and(ok) FROM (SELECT lag(at) OVER w <= at AS ok FROM report_events "
                "WINDOW w AS (PARTITION BY report_id ORDER BY id)) s"
            ).fetchone()[0]
            assert ordered is not False


def test_direct_load_only_into_an_empty_table(fresh_db: str, boundary_set) -> None:
    """A second bulk import finds rows stored: it upserts (re-imported rows update)."""
    from gis.demo import generate_demo

    demo = generate_demo(boundary_set.frames["rw"], n=1200, seed=8).reports
    first = import_frame(fresh_db, demo.iloc[:800], bulk=True, progress=False)
    assert first.direct and first.stored == 800
    second = import_frame(fresh_db, demo.iloc[400:], bulk=True, progress=False)
    assert second.bulk and not second.direct
    assert (second.stored, second.updated, second.events) == (400, 400, 400)
    counted = counts(fresh_db)
    assert counted["reports"] == 1200 and counted["report_events"] == 1200


def test_direct_load_never_truncates_rows(fresh_db: str, boundary_set) -> None:
    """A table referencing reports that holds rows (an unchecked key) keeps them."""
    from gis.demo import generate_demo

    with psycopg.connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t_ref (report_id uuid)")
        conn.execute("INSERT INTO t_ref VALUES (gen_random_uuid())")
        conn.execute(
            "ALTER TABLE t_ref ADD CONSTRAINT t_ref_report FOREIGN KEY (report_id) "
            "REFERENCES reports (id) NOT VALID"
        )
    demo = generate_demo(boundary_set.frames["rw"], n=600, seed=9).reports
    summary = import_frame(fresh_db, demo, bulk=True, progress=False)
    assert summary.direct and summary.stored == 600
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM t_ref").fetchone()[0] == 1


def test_odd_timestamps_parse_as_on_their_own() -> None:
    """A batch mixing ISO 8601 and other text parses each value as it parses alone."""
    values = [
        "2024-01-01 10:00",
        "31/02/2024 25:61",
        "2024-01-01T10:00:00.5",
        "2024-01-01T10:00:00+09:00",
        "2024/01/02 10:00",
        "2024-01-01T10:00:00Z",
        "2024-13-01T10:00",
        "1 Jan 2024 10:00",
    ]
    frame = pd.DataFrame(
        {"external_id": [str(i) for i in range(len(values))], "created_at": values}
    )
    frame["lon"], frame["lat"] = 106.8, -6.2
    mapping = Mapping().with_options(defaults={"source": "web", "category": "banjir"})
    together = prepare(frame_table(frame, "mem"), mapping)
    for i in range(len(values)):
        alone = prepare(frame_table(frame.iloc[[i]].reset_index(drop=True), "mem"), mapping)
        if alone.valid.size:
            assert i in together.valid
            got = together.rows.loc[i, "created_at"]
            assert got == alone.rows["created_at"].iloc[0], values[i]
        else:
            assert i not in together.valid, values[i]
    assert together.rows.loc[0, "created_at"] == pd.Timestamp("2024-01-01T03:00", tz="UTC")


# --------------------------------------------------------------------------- formats


def test_geoparquet_and_csv_round_trips(fresh_db: str, tmp_path: Path) -> None:
    """Reports written to GeoParquet and CSV and read back store the same values."""
    from db.ingest import places_from_db
    from gis.demo import generate_demo

    with psycopg.connect(fresh_db) as conn:
        rw = places_from_db(conn).rw
    reports = generate_demo(rw, n=400, seed=11).reports
    gpq = tmp_path / "reports.parquet"
    reports.drop(columns=["lon", "lat"]).to_parquet(gpq)
    first = import_file(fresh_db, gpq, progress=False)
    check_invariant(first)
    assert (first.stored, first.quarantined) == (400, 0)

    query = (
        "SELECT external_id, source, category, opd, status, title, description, media_url, "
        "created_at, first_coordinated_at, resolved_at, updated_at, public, "
        "ST_X(geom) AS lon, ST_Y(geom) AS lat, "
        "rw_code, snap_method, h3_r11 FROM reports ORDER BY external_id"
    )
    with psycopg.connect(fresh_db) as conn:
        stored = pd.DataFrame(
            conn.execute(query).fetchall(),
            columns=[c.name for c in conn.execute(query).description],
        )
    expect = reports.sort_values("external_id").reset_index(drop=True)
    assert stored["external_id"].tolist() == expect["external_id"].tolist()
    assert np.allclose(stored["lon"], expect["lon"], rtol=0, atol=1e-12)
    assert np.allclose(stored["lat"], expect["lat"], rtol=0, atol=1e-12)
    for col in ("source", "category", "opd", "status", "description"):
        assert stored[col].tolist() == expect[col].tolist()
    for col in ("created_at", "resolved_at", "updated_at"):
        got = pd.to_datetime(stored[col], utc=True)
        assert (
            got.equals(expect[col].astype("datetime64[us, UTC]").rename(col))
            or (
                got.fillna(pd.Timestamp(0, tz="UTC"))
                == expect[col].fillna(pd.Timestamp(0, tz="UTC"))
            ).all()
        )

    # CSV with ISO times (offset +07:00) and lat/lon columns: the same rows again
    out = stored.drop(columns=["rw_code", "snap_method", "h3_r11"]).copy()
    for col in ("created_at", "first_coordinated_at", "resolved_at", "updated_at"):
        local = pd.to_datetime(out[col], utc=True).dt.tz_convert("Asia/Jakarta")
        out[col] = local.map(lambda t: t.isoformat() if pd.notna(t) else "")
    out["lon"] = out["lon"].map(repr)
    out["lat"] = out["lat"].map(repr)
    path = tmp_path / "reports.csv"
    out.to_csv(path, index=False)
    second = import_file(fresh_db, path, progress=False)
    check_invariant(second)
    assert (second.stored, second.updated, second.quarantined) == (0, 400, 0)
    with psycopg.connect(fresh_db) as conn:
        again = pd.DataFrame(conn.execute(query).fetchall(), columns=stored.columns)
    pd.testing.assert_frame_equal(again, stored)


def test_geojson_geometry_problems(idb: str, tmp_path: Path) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.83, -6.18]},
            "properties": {"id": 1, "t": "2024-01-01T10:00:00"},
        },
        {"type": "Feature", "geometry": None, "properties": {"id": 2, "t": "2024-01-01T10:00:00"}},
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[106.8, -6.2], [106.9, -6.2]]},
            "properties": {"id": 3, "t": "2024-01-01T10:00:00"},
        },
    ]
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    mapping = Mapping().with_options(
        columns={"external_id": "id", "created_at": "t"},
        defaults={"source": "geo", "category": "banjir"},
    )
    summary = import_file(idb, path, mapping, progress=False)
    check_invariant(summary)
    assert (summary.stored, summary.quarantined) == (1, 2)
    assert summary.quarantine_fields == {"geometry": 2}
    with psycopg.connect(idb) as conn:
        assert conn.execute("SELECT external_id FROM reports WHERE source = 'geo'").fetchall() == [
            ("1",)
        ]
        raw = conn.execute(
            "SELECT raw FROM report_quarantine WHERE import_id = %s AND row_number = 3",
            (summary.import_id,),
        ).fetchone()[0]
    assert raw["geometry"]["type"] == "LineString"


def test_status_change_on_reimport_appends_event(idb: str, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    row = (
        "external_id,lat,lon,created_at,status,category\n"
        "st1,-6.2,106.85,2024-02-01 08:00,{}, jalan_rusak\n"
    )
    path.write_text(row.format("menunggu"))
    mapping = Mapping().with_options(defaults={"source": "statustest"})
    assert import_file(idb, path, mapping, progress=False).stored == 1
    path.write_text(row.format("proses"))
    second = import_file(idb, path, mapping, progress=False)
    assert (second.stored, second.updated, second.events) == (0, 1, 1)
    with psycopg.connect(idb) as conn:
        events = conn.execute(
            "SELECT from_status, to_status FROM report_events e "
            "JOIN reports r ON r.id = e.report_id "
            "WHERE r.source = 'statustest' ORDER BY e.id"
        ).fetchall()
        status = conn.execute("SELECT status FROM reports WHERE source = 'statustest'").fetchone()[
            0
        ]
    assert events == [(None, "menunggu"), ("menunggu", "proses")]
    assert status == "proses"


def test_catalog_must_be_synced(dsn: str, boundary_set, tmp_path: Path) -> None:
    with _database(dsn, boundary_set) as url:
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM categories WHERE code = 'kebakaran'")
            conn.commit()
        path = tmp_path / "a.csv"
        path.write_text("external_id,lat,lon,created_at\n1,-6.2,106.8,2024-01-01 10:00\n")
        with pytest.raises(ConfigError, match="sync_catalog"):
            import_file(
                url,
                path,
                Mapping().with_options(defaults={"source": "w", "category": "banjir"}),
                progress=False,
            )


# --------------------------------------------------------------------------- CLI


def test_cli_import_and_demo_data(idb: str, shared_data: Path, monkeypatch, capsys) -> None:
    from petalapor.cli import main
    from petalapor.commands.reports import demo_count, load_demo

    monkeypatch.setenv("DATABASE_URL", idb)
    path = shared_data / "reports" / PETABENCANA[0]
    assert main(["reports", "import", str(path), "--mapping", "petabencana", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["read"] == 69 and out["read"] == out["stored"] + out["updated"] + out["quarantined"]

    assert main(["demo-data", "--n", "1500", "--seed", "2"]) == 0
    with psycopg.connect(idb) as conn:
        assert demo_count(conn) == 1500
    capsys.readouterr()
    load_demo(idb, n=1500, seed=2)  # present already: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert main(["demo-data", "--n", "1000", "--seed", "3", "--replace"]) == 0
    with psycopg.connect(idb) as conn:
        assert demo_count(conn) == 1000
        events = conn.execute(
            "SELECT count(*) FROM report_events e JOIN reports r ON r.id = e.report_id "
            "WHERE r.external_id LIKE 'demo-%%'"
        ).fetchone()[0]
    assert events > 3000  # full histories, not just creation events


def test_frame_table_accepts_geodataframe_without_lonlat() -> None:
    gdf = gpd.GeoDataFrame(
        {
            "external_id": ["a"],
            "source": ["web"],
            "category": ["banjir"],
            "created_at": [pd.Timestamp("2024-01-01T10:00", tz="Asia/Jakarta")],
        },
        geometry=gpd.points_from_xy([106.8], [-6.2]),
        crs="EPSG:4326",
    )
    rows = prepare(frame_table(gdf, "mem"), Mapping()).rows
    assert rows[["lon", "lat"]].to_numpy().tolist() == [[106.8, -6.2]]
    assert get_catalog().categories["banjir"].opd == rows["opd"].iloc[0]
