"""Context layers in PostGIS: JakWifi import and generator, coverage, ISPU, surface, API, CLI.

One module database (boundaries stored) holds the synthetic hotspots, the ISPU
data and a surface; the app under test is bound to it.  The importer tests use
their own throw-away databases.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings

import geopandas as gpd
import morecantile
import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_validate

from db import layers as store
from layers.ispu import CATEGORIES, load_stations, read_ispu_csv
from layers.jakwifi import PUBLISHED_COUNTS
from layers.surface import idw_at_points
from tests.databases import throwaway_database

TMS = morecantile.tms.get("WebMercatorQuad")
PALETTE = {c.rgba for c in CATEGORIES}
COAST_TILE = TMS.tile(106.85, -6.11, 12)  # Jakarta Utara shore and the bay
FAR_TILE = TMS.tile(110.0, -7.5, 12)  # Central Java: outside the surface
#: The hand-checked RW: RW 01 of Kelurahan Gambir (Jakarta Pusat), the first RW in code order
#: of the kelurahan holding Monas (picked in the fixture below, checked by hand in shapely).
MONAS = (106.8272, -6.1754)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def layer_db(dsn, boundary_set):
    """This module's database: migrated, the real boundaries stored (URL form, for the CLI)."""
    with throwaway_database(dsn, "t_layers", boundary_set=boundary_set) as url:
        yield url


@pytest.fixture()
def fresh_db(dsn, boundary_set):
    with throwaway_database(dsn, "t_layers", boundary_set=boundary_set) as url:
        yield url


@pytest.fixture(scope="module")
def generated(layer_db):
    return store.generate_jakwifi(layer_db, seed=1)


@pytest.fixture(scope="module")
def ispu(layer_db, shared_data):
    return store.import_ispu(
        layer_db,
        shared_data / "ispu" / "ispu_dki_all.csv",
        stations=shared_data / "ispu" / "stations.csv",
    )


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    return tmp_path_factory.mktemp("rasters")


@pytest.fixture(scope="module")
def surface(layer_db, ispu, rasters):
    return store.write_ispu_surface(layer_db, period="2025-02", raster_dir=rasters)


@pytest.fixture(scope="module")
def app_client(layer_db, generated, ispu, surface, rasters, settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings, dsn=layer_db)) as client:
        yield client


@pytest.fixture(scope="module")
def hotspots_m(layer_db, generated):
    """The stored hotspots, projected to UTM 48S by geopandas (not by PostGIS)."""
    with psycopg.connect(layer_db) as conn:
        rows = conn.execute(
            "SELECT id, ST_X(geom), ST_Y(geom) FROM layer_jakwifi ORDER BY id"
        ).fetchall()
    ids, lon, lat = map(np.array, zip(*rows, strict=True))
    return gpd.GeoDataFrame(
        {"id": ids}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326"
    ).to_crs("EPSG:32748")


def _coverage(dsn: str, unit: str, code: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = store.coverage_rows(conn, unit, code=code)
    assert len(rows) == 1
    return rows[0]


# --------------------------------------------------------------------------- JakWifi import


GOOD_AND_BAD = [
    "1,Taman A,Jl. A,Jakarta Pusat,,,,-6.1754,106.8272",  # Monas: ok
    "2,Taman B,Jl. B,Jakarta Barat,,,,,106.80",  # missing lat
    "3,Taman C,Jl. C,Jakarta Barat,,,,abc,106.80",  # not a number
    "4,Taman D,Jl. D,Jakarta Selatan,,,,-6.9175,107.6191",  # Bandung: outside the service area
    "1,Taman E,Jl. E,Jakarta Pusat,,,,-6.18,106.83",  # duplicate id
    "6,Taman F,Jl. F,Jakarta Timur,,,,106.85,-6.20",  # swapped
    "7,Taman G,Jl. G,Jakarta Tengah,,,,-6.20,106.85",  # unknown wilayah
    "8,Taman H,Jl. H,JAKSEL,,,,-6.26,106.81",  # ok (alias)
    "9,Taman I,Jl. I,Kepulauan Seribu,,,,-5.70026,106.53886",  # ok: Pulau Panggang, no RW
    "10,Taman J,Jl. J,Jakarta Utara,,,,-6.12,106.88,extra",  # malformed record
    ",Taman K,,Jakarta Utara,,,,-6.1200,106.8800",  # ok, no id: filled from the row
]


def test_import_count_is_valid_plus_quarantined_and_rows_are_snapped(fresh_db, tmp_path):
    path = tmp_path / "jakwifi_export.csv"
    path.write_text(
        "no,nama_lokasi,alamat,wilayah,kecamatan,kelurahan,rw,latitude,longitude\n"
        + "\n".join(GOOD_AND_BAD)
        + "\n"
    )
    result = store.import_jakwifi(fresh_db, path)
    s = result.summary
    assert s["read"] == len(GOOD_AND_BAD) == s["valid"] + s["quarantined"]
    assert (s["valid"], s["quarantined"]) == (4, 7)
    with psycopg.connect(fresh_db) as conn:
        stored = conn.execute(
            "SELECT id, source_row, rw_code, kelurahan_code, kota_code, snap_level, snap_method, "
            "ST_X(geom), ST_Y(geom), synthetic FROM layer_jakwifi ORDER BY source_row"
        ).fetchall()
        q = conn.execute(
            "SELECT row_number, field, reason, raw FROM layer_quarantine WHERE import_id = %s "
            "ORDER BY row_number, field",
            (result.import_id,),
        ).fetchall()
        imp = conn.execute(
            "SELECT summary, report, is_current FROM layer_imports WHERE id = %s",
            (result.import_id,),
        ).fetchone()
        # the SQL snapping rule agrees with every stored placement
        for _id, _row, rw, kel, _kota, level, method, lon, lat, _syn in stored:
            sql_rw = conn.execute(
                "SELECT code, method FROM petalapor_snap('rw', %s, %s)", (lon, lat)
            ).fetchone()
            if level == "rw":
                assert (rw, method) == sql_rw
            else:
                assert rw is None and sql_rw[0] is None
                sql_kel = conn.execute(
                    "SELECT code, method FROM petalapor_snap('kelurahan', %s, %s)", (lon, lat)
                ).fetchone()
                assert (kel, method) == sql_kel
    # count in the database = valid + quarantined = rows of the file
    assert len(stored) == s["valid"]
    assert len({r[0] for r in q}) == s["quarantined"]
    assert len(stored) + len({r[0] for r in q}) == len(GOOD_AND_BAD)
    assert {r[1] for r in stored}.isdisjoint({r[0] for r in q})
    reasons = {row: reason for row, _f, reason, _raw in q}
    assert reasons[2] == "missing coordinate" and reasons[4] == "outside the service area"
    assert reasons[5] == "duplicate id, first at row 1" and reasons[10].startswith(
        "expected 9 fields"
    )
    raw = {row: r for row, _f, _reason, r in q}
    assert raw[3]["latitude"] == "abc" and raw[7]["wilayah"] == "Jakarta Tengah"
    assert "extra" in raw[10]["record"]
    # stored rows are snapped: Monas in Gambir (Jakarta Pusat), the empty id filled from the row
    by_row = {r[1]: r for r in stored}
    assert by_row[1][3].startswith("3173") and by_row[1][4] == "3173" and by_row[1][5] == "rw"
    assert by_row[11][0] == "jakwifi_export:11"
    assert by_row[9][2] is None and by_row[9][3] == "3101020001" and by_row[9][5] == "kelurahan"
    assert all(r[6] in ("inside", "nearest") and r[3] for r in stored)
    assert not any(r[9] for r in stored)
    summary, report, current = imp
    assert current and summary["read"] == s["read"] and summary["synthetic"] is False
    assert len(report["quarantine"]) == len(q)
    assert (
        "Quarantine" in result.report_text
        and "row 2 [latitude] missing coordinate" in result.report_text
    )


def test_reimport_replaces_the_set_and_keeps_the_quarantine(fresh_db, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text("id,latitude,longitude\nA,-6.1754,106.8272\nB,abc,106.8\nC,-6.20,106.85\n")
    second = tmp_path / "second.geojson"
    gpd.GeoDataFrame(
        {"id": ["X", "Y"]}, geometry=[shapely.Point(106.90, -6.30), None], crs="EPSG:4326"
    ).to_file(second, driver="GeoJSON")
    one = store.import_jakwifi(fresh_db, first)
    two = store.import_jakwifi(fresh_db, second)
    with psycopg.connect(fresh_db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM layer_jakwifi ORDER BY id")]
        per_import = dict(
            conn.execute("SELECT import_id, count(*) FROM layer_quarantine GROUP BY 1").fetchall()
        )
        current = conn.execute(
            "SELECT id FROM layer_imports WHERE layer = 'jakwifi' AND is_current"
        ).fetchall()
        geometry_raw = conn.execute(
            "SELECT raw FROM layer_quarantine WHERE import_id = %s", (two.import_id,)
        ).fetchone()[0]
        coverage_import = conn.execute("SELECT DISTINCT import_id FROM jakwifi_coverage").fetchall()
    assert ids == ["X"]  # the set was replaced
    assert per_import == {one.import_id: 1, two.import_id: 1}  # quarantine of both imports kept
    assert current == [(two.import_id,)] and coverage_import == [(two.import_id,)]
    assert geometry_raw["id"] == "Y" and geometry_raw["geometry"] is None
    # after a boundary import, the stored points are snapped again as a new import
    again = store.resnap_jakwifi(fresh_db)
    assert again.summary["resnapped_from"] == two.import_id and again.summary["valid"] == 1
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "SELECT id, rw_code, source_row, import_id FROM layer_jakwifi"
        ).fetchall()
    assert rows[0][0] == "X" and rows[0][1] and rows[0][2] == 1 and rows[0][3] == again.import_id


def test_failed_import_changes_nothing(fresh_db, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id,latitude,longitude\nA,-6.1754,106.8272\n")
    store.import_jakwifi(fresh_db, good)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,alamat\n1,Jl. A\n")
    from petalapor.errors import DataError

    with pytest.raises(DataError, match="no latitude/longitude"):
        store.import_jakwifi(fresh_db, bad)
    with psycopg.connect(fresh_db) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM layer_jakwifi")] == ["A"]
        assert conn.execute("SELECT count(*) FROM layer_imports").fetchone()[0] == 1


# --------------------------------------------------------------------------- generator


def test_generator_reproduces_published_counts_in_the_database(layer_db, generated):
    assert generated.summary["read"] == 9250 == generated.summary["valid"]
    with psycopg.connect(layer_db) as conn:
        per_kota = dict(
            conn.execute("SELECT kota_code, count(*) FROM layer_jakwifi GROUP BY 1").fetchall()
        )
        flags = conn.execute(
            "SELECT bool_and(synthetic), count(*) FILTER (WHERE kelurahan_code IS NULL), "
            "count(*) FILTER (WHERE snap_method <> 'inside') FROM layer_jakwifi"
        ).fetchone()
        levels = dict(
            conn.execute(
                "SELECT kota_code = '3101', array_agg(DISTINCT snap_level) "
                "FROM layer_jakwifi GROUP BY 1"
            ).fetchall()
        )
        imp = conn.execute(
            "SELECT synthetic, source_file FROM layer_imports WHERE id = %s", (generated.import_id,)
        ).fetchone()
    assert per_kota == dict(PUBLISHED_COUNTS)
    assert flags == (True, 0, 0)  # all synthetic, all placed, all inside a polygon
    assert levels == {False: ["rw"], True: ["kelurahan"]}  # Kepulauan Seribu has no RW polygons
    assert imp == (True, "generated:seed=1")
    assert "NOT real" in generated.report_text


# --------------------------------------------------------------------------- coverage


@pytest.fixture(scope="module")
def checked_rw(boundary_set):
    """RW 01-ish of the kelurahan holding Monas: the first RW (by code) of that kelurahan."""
    rw = boundary_set.frames["rw"]
    kel = boundary_set.frames["kelurahan"]
    monas = shapely.Point(*MONAS)
    kel_code = kel[kel.geometry.covers(monas)]["code"].min()
    return rw[rw["kelurahan_code"] == kel_code].sort_values("code").iloc[0]


def test_hand_checked_rw_nearest_hotspot_distance(layer_db, generated, checked_rw, hotspots_m):
    # by hand, in shapely: the RW centroid in UTM 48S, then the nearest hotspot
    poly = gpd.GeoSeries([checked_rw.geometry], crs="EPSG:4326").to_crs("EPSG:32748").iloc[0]
    centre = poly.centroid
    dist = hotspots_m.distance(centre)
    nearest = hotspots_m.loc[dist.idxmin()]
    got = _coverage(layer_db, "rw", checked_rw["code"])
    assert abs(got["nearest_m"] - dist.min()) < 1.0, (got, dist.min())
    assert got["nearest_id"] == nearest["id"]
    # the same from PostGIS without the KNN index
    with psycopg.connect(layer_db) as conn:
        brute = conn.execute(
            "SELECT min(ST_Distance(ST_Transform(h.geom, 32748), ST_Centroid(b.geom_m))) "
            "FROM layer_jakwifi h, boundaries b WHERE b.level = 'rw' AND b.code = %s",
            (checked_rw["code"],),
        ).fetchone()[0]
    assert abs(got["nearest_m"] - brute) < 1e-6
    print(
        f"\nRW {checked_rw['code']} ({checked_rw['name']}): n={got['n_hotspots']}, "
        f"per_km2={got['per_km2']:.2f}, nearest {got['nearest_m']:.2f} m "
        f"(shapely {dist.min():.2f} m, {nearest['id']}), "
        f"share_100m={got['share_100m']:.4f}, share_300m={got['share_300m']:.4f}"
    )


def test_rw_shares_and_counts_match_shapely(
    layer_db, generated, checked_rw, hotspots_m, boundary_set
):
    rw = boundary_set.frames["rw"]
    rng = np.random.default_rng(5)
    picks = [checked_rw["code"], *rng.choice(rw["code"].to_numpy(), 6, replace=False)]
    with psycopg.connect(layer_db) as conn:
        counts = dict(
            conn.execute("SELECT rw_code, count(*) FROM layer_jakwifi GROUP BY 1").fetchall()
        )
    pts = hotspots_m.geometry.to_numpy()
    for code in picks:
        poly = rw[rw["code"] == code].to_crs("EPSG:32748").geometry.iloc[0]
        got = _coverage(layer_db, "rw", code)
        for radius in (100, 300):
            near = pts[shapely.dwithin(pts, poly, radius)]
            covered = shapely.union_all(shapely.buffer(near, radius, quad_segs=8))
            share = (
                shapely.area(shapely.intersection(poly, covered)) / poly.area if len(near) else 0.0
            )
            assert abs(got[f"share_{radius}m"] - share) < 1e-6, (code, radius, got, share)
        assert got["n_hotspots"] == counts.get(code, 0)
        assert got["per_km2"] == pytest.approx(got["n_hotspots"] / (poly.area / 1e6), rel=1e-6)
        assert abs(got["nearest_m"] - hotspots_m.distance(poly.centroid).min()) < 1.0
        assert 0 <= got["share_100m"] <= got["share_300m"] <= 1


def test_coverage_covers_every_unit(layer_db, generated, boundary_set):
    with psycopg.connect(layer_db) as conn:
        per_unit = dict(
            conn.execute("SELECT unit, count(*) FROM jakwifi_coverage GROUP BY 1").fetchall()
        )
        total = dict(
            conn.execute("SELECT unit, sum(n_hotspots) FROM jakwifi_coverage GROUP BY 1").fetchall()
        )
        seribu = conn.execute(
            "SELECT min(n_hotspots), max(nearest_m) FROM jakwifi_coverage "
            "WHERE unit = 'kelurahan' AND kota_code = '3101'"
        ).fetchone()
    assert per_unit == {
        "rw": len(boundary_set.frames["rw"]),
        "kelurahan": len(boundary_set.frames["kelurahan"]),
    }
    assert total == {"rw": 9200, "kelurahan": 9250}  # the 50 of Kepulauan Seribu have no RW
    assert seribu[0] >= 0 and seribu[1] is not None


# --------------------------------------------------------------------------- ISPU


def test_ispu_import_stored_with_every_disagreement(layer_db, ispu, shared_data):
    expected = read_ispu_csv(shared_data / "ispu" / "ispu_dki_all.csv")
    s = ispu.summary
    assert s["read"] == s["valid"] + s["quarantined"] == 5538
    assert s["category_agreement"] >= 0.99
    with psycopg.connect(layer_db) as conn:
        n = conn.execute("SELECT count(*) FROM ispu_readings").fetchone()[0]
        stations = conn.execute(
            "SELECT station_id, location_method FROM layer_ispu_stations ORDER BY 1"
        ).fetchall()
        report, text = conn.execute(
            "SELECT report, report_text FROM layer_imports WHERE id = %s", (ispu.import_id,)
        ).fetchone()
        q = conn.execute(
            "SELECT count(*), count(DISTINCT row_number) FROM layer_quarantine "
            "WHERE import_id = %s",
            (ispu.import_id,),
        ).fetchone()
        row = conn.execute(
            "SELECT ispu, category, published_category FROM ispu_readings WHERE date = '2010-01-01'"
        ).fetchone()
    assert n == len(expected.readings) == s["valid"]
    assert [sid for sid, _ in stations] == ["DKI1", "DKI2", "DKI3", "DKI4", "DKI5"]
    assert all(method for _, method in stations)
    assert q == (len(expected.quarantine), s["quarantined"])
    assert row == (73.0, "SEDANG", "SEDANG")
    # every disagreement is in the stored report, and printed
    d = expected.disagreements
    assert len(report["disagreements"]) == len(d) == s["disagreements"] > 0
    stored = {(x["row"], x["field"]) for x in report["disagreements"]}
    assert stored == set(zip(d["row"], d["field"], strict=True))
    for x in d.itertuples(index=False):
        assert f"row {x.row} {x.date} {x.station} {x.field}:" in text


def test_report_ispu_at_place_and_day(layer_db, ispu, shared_data):
    from db.reports import h3_cells
    from petalapor.catalog import sync_catalog

    with psycopg.connect(layer_db) as conn:
        sync_catalog(conn)
        cat, opd = conn.execute(
            "SELECT code, default_opd FROM categories ORDER BY code LIMIT 1"
        ).fetchone()
        reports = [  # (lon, lat, created_at in UTC)
            (106.8272, -6.1754, "2025-02-10 03:00:00+00"),
            (106.90, -6.30, "2025-02-20 23:30:00+00"),  # 21 Feb in Jakarta
            (106.80, -6.20, "2030-01-01 03:00:00+00"),  # no ISPU data then
        ]
        for i, (lon, lat, at) in enumerate(reports):
            conn.execute(
                "INSERT INTO reports (source, external_id, category, opd, created_at, updated_at, "
                "geom, snap_method, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11) VALUES ('test', %s, %s, "
                "%s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), 'inside', %s, %s, %s, %s, %s)",
                (f"layers-{i}", cat, opd, at, at, lon, lat, *h3_cells(lat, lon).values()),
            )
    out = store.compute_report_ispu(layer_db, climatology=False)
    assert out["reports"] == 3 and out["with_value"] == 2
    with psycopg.connect(layer_db) as conn:
        got = conn.execute(
            "SELECT r.external_id, x.report_date::text, x.period, x.ispu, x.category, x.ispu_day, "
            "x.day_station, x.n_stations FROM report_ispu x JOIN reports r ON r.id = x.report_id "
            "ORDER BY r.external_id"
        ).fetchall()
    readings = read_ispu_csv(shared_data / "ispu" / "ispu_dki_all.csv").readings
    stations = load_stations(shared_data / "ispu" / "stations.csv")
    lon, lat = [r[0] for r in reports[:2]], [r[1] for r in reports[:2]]
    want = idw_at_points(readings, stations, lon, lat, ["2025-02-10", "2025-02-21"])
    assert [g[1] for g in got] == ["2025-02-10", "2025-02-21", "2030-01-01"]
    assert [g[2] for g in got] == ["2025-02", "2025-02", "2030-01"]
    np.testing.assert_allclose([got[0][3], got[1][3]], want, rtol=1e-9)
    assert got[0][4] in {c.code for c in CATEGORIES} and got[0][7] == 4
    day = readings.set_index("date").loc[pd.Timestamp("2025-02-21")]
    assert got[1][5] == pytest.approx(day["ispu"]) and got[1][6] == day["station_id"]
    assert got[2][3] is None and got[2][4] is None and got[2][5] is None
    # only-missing runs do nothing more
    assert store.compute_report_ispu(layer_db, only_missing=True)["reports"] == 0
    # by default, a month without readings takes that calendar month of every year
    assert store.compute_report_ispu(layer_db)["with_value"] == 3
    with psycopg.connect(layer_db) as conn:
        period, value, day_value, n = conn.execute(
            "SELECT x.period, x.ispu, x.ispu_day, x.n_stations FROM report_ispu x "
            "JOIN reports r ON r.id = x.report_id WHERE r.external_id = 'layers-2'"
        ).fetchone()
    january = readings[readings["date"].dt.month == 1].dropna(subset=["ispu"])
    folded = january.assign(
        date=pd.to_datetime({"year": 2000, "month": 1, "day": january["date"].dt.day})
    )
    want_clim = idw_at_points(folded, stations, [106.80], [-6.20], ["2000-01-01"])
    assert period == "clim-01" and day_value is None
    assert n == january["station_id"].nunique()
    assert value == pytest.approx(float(want_clim[0]), rel=1e-9)


# --------------------------------------------------------------------------- surface and API


def _decode(png: bytes) -> tuple[tuple[int, int, int, int], np.ndarray]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    header = struct.unpack(">IIBB", png[16:26])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as mem, mem.open() as ds:
            return header, ds.read()


def test_surface_cog_is_valid(surface):
    assert surface.path.exists() and surface.period == "2025-02" and surface.n_stations >= 3
    ok, errors, _ = cog_validate(str(surface.path), quiet=True)
    assert ok, errors
    rio = shutil.which("rio")
    if rio:  # the command line named by the acceptance criteria
        done = subprocess.run(
            [rio, "cogeo", "validate", str(surface.path)], capture_output=True, text=True
        )
        assert done.returncode == 0 and "is a valid cloud optimized GeoTIFF" in done.stdout, done


def test_layers_lists_the_three_layers_with_attribution(app_client):
    body = app_client.get("/layers").json()
    layers = {entry["name"]: entry for entry in body["layers"]}
    assert {"jakwifi", "ispu_stations", "ispu_surface"} <= set(layers)
    for entry in layers.values():
        assert entry["attribution"].strip() and entry["licence"].strip()
    jw = layers["jakwifi"]
    assert jw["synthetic"] is True and "SYNTHETIC" in jw["attribution"]
    assert jw["kind"] == "vector" and jw["tiles"] == ["/tiles/jakwifi/{z}/{x}/{y}.mvt"]
    assert jw["stored"]["features"] == 9250 and jw["stored"]["import"]["synthetic"] is True
    st = layers["ispu_stations"]
    assert st["synthetic"] is False and "APPROXIMATE" in st["attribution"]
    assert st["stored"]["features"] == 5 and st["stored"]["import"]["summary"]["disagreements"] > 0
    surf = layers["ispu_surface"]
    assert surf["kind"] == "raster" and surf["tiles"] == ["/layers/ispu_surface/{z}/{x}/{y}.png"]
    assert surf["stored"]["period"] == "2025-02" and surf["legend"] == "/layers/ispu_surface/legend"
    one = app_client.get("/layers/jakwifi")
    assert one.status_code == 200 and one.json()["name"] == "jakwifi"
    assert app_client.get("/layers/no_such_layer").status_code == 404


def test_raster_tile_is_a_256_png_transparent_outside_the_city(app_client, boundary_set):
    t = COAST_TILE
    res = app_client.get(f"/layers/ispu_surface/{t.z}/{t.x}/{t.y}.png")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.headers["x-ispu-period"] == "2025-02"
    (width, height, depth, colour), pixels = _decode(res.content)
    assert (width, height, depth, colour) == (256, 256, 8, 6)
    alpha = pixels[3]
    assert alpha[0, 0] == 0  # the bay, north-west corner
    assert (alpha == 0).sum() > 1000 and (alpha == 255).sum() > 1000
    assert {tuple(int(v) for v in px) for px in pixels[:, alpha == 255].T} <= PALETTE
    # a kelurahan point on land in the tile is opaque
    city = boundary_set.frames["kelurahan"]
    bbox = TMS.xy_bounds(t)
    land = city[city["kota_code"] == "3175"].to_crs(3857).representative_point()
    land = land[shapely.contains_xy(shapely.box(*bbox), land.x, land.y)]
    cols = ((land.x - bbox.left) / (bbox.right - bbox.left) * 256).astype(int)
    rows = ((bbox.top - land.y) / (bbox.top - bbox.bottom) * 256).astype(int)
    assert len(land) and (alpha[rows, cols] == 255).all()
    # the same month asked for explicitly; outside the surface; no such month; bad requests
    assert (
        app_client.get(f"/layers/ispu_surface/{t.z}/{t.x}/{t.y}.png?period=2025-02").content
        == res.content
    )
    far = app_client.get(f"/layers/ispu_surface/{FAR_TILE.z}/{FAR_TILE.x}/{FAR_TILE.y}.png")
    assert far.status_code == 204 and far.content == b""
    assert (
        app_client.get(f"/layers/ispu_surface/{t.z}/{t.x}/{t.y}.png?period=1999-01").status_code
        == 404
    )
    assert (
        app_client.get(f"/layers/ispu_surface/{t.z}/{t.x}/{t.y}.png?period=2025-13").status_code
        == 422
    )
    assert app_client.get("/layers/ispu_surface/2/4/0.png").status_code == 400


def test_legend(app_client):
    body = app_client.get("/layers/ispu_surface/legend").json()
    assert [c["colour"] for c in body["categories"]] == [
        "#00cc00",
        "#0000cc",
        "#cccc00",
        "#cc0000",
        "#000000",
    ]
    assert body["edges"] == [50.5, 100.5, 200.5, 300.5] and body["surface"]["period"] == "2025-02"


def test_coverage_endpoint(app_client, checked_rw):
    body = app_client.get("/layers/jakwifi/coverage?unit=rw").json()
    assert body["count"] == len(body["units"]) > 2000 and body["synthetic"] is True
    assert set(body["fields"]) == {"n_hotspots", "per_km2", "nearest_m", "share_100m", "share_300m"}
    kel = app_client.get("/layers/jakwifi/coverage?unit=kelurahan").json()
    assert sum(u["n_hotspots"] for u in kel["units"]) == 9250
    one = app_client.get(
        f"/layers/jakwifi/coverage?unit=rw&format=geojson&code={checked_rw['code']}"
    )
    assert one.status_code == 200 and one.headers["content-type"].startswith("application/geo+json")
    feature = one.json()["features"][0]
    assert feature["properties"]["code"] == checked_rw["code"]
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert app_client.get("/layers/jakwifi/coverage?unit=rw&code=000").status_code == 404
    assert app_client.get("/layers/jakwifi/coverage?unit=kota").status_code == 422


def test_readings_endpoint(app_client):
    res = app_client.get("/layers/ispu/readings?station=dki3&from=2025-02-01&to=2025-02-28")
    body = res.json()
    assert res.status_code == 200 and body["count"] == 18 and body["station"] == "DKI3"
    assert {r["station_id"] for r in body["readings"]} == {"DKI3"}
    first = body["readings"][0]
    assert {"date", "pm25", "ispu", "category", "published_category", "published_max"} <= set(first)
    assert app_client.get("/layers/ispu/readings?station=DKI9").status_code == 404
    assert app_client.get("/layers/ispu/readings?from=2025-02-02&to=2025-02-01").status_code == 400
    everything = app_client.get("/layers/ispu/readings").json()
    assert everything["count"] == 5533


# --------------------------------------------------------------------------- CLI and petalapor up


def test_cli_list_surface_and_import_report(
    layer_db, generated, ispu, monkeypatch, capsys, tmp_path
):
    from petalapor.cli import main

    monkeypatch.setenv("DATABASE_URL", layer_db)
    assert main(["layers", "list"]) == 0
    out = capsys.readouterr().out
    assert "jakwifi" in out and "[SYNTHETIC]" in out and "9250 hotspots" in out
    path = tmp_path / "cli.tif"
    assert (
        main(
            [
                "layers",
                "surface",
                "--period",
                "2024-12",
                "--cell",
                "250",
                "--out",
                str(path),
                "--no-current",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert str(path) in out and "valid cloud-optimized GeoTIFF" in out
    with psycopg.connect(layer_db) as conn:
        current = conn.execute(
            "SELECT period_start::text FROM ispu_surfaces WHERE is_current"
        ).fetchone()
    assert current == ("2025-02-01",)  # --no-current left the served surface alone


def test_load_default_layers_is_idempotent_and_fast(fresh_db, tmp_path):
    from petalapor.commands.layers import load_default_layers

    first = load_default_layers(fresh_db, raster_dir=tmp_path, verbose=False)
    assert first["total"] < 30, first
    assert {"jakwifi (synthetic, seed 1)", "ispu import", "ispu surface"} <= set(first)
    again = load_default_layers(fresh_db, raster_dir=tmp_path, verbose=False)
    assert set(again) == {"total"} and again["total"] < 3, again
    with psycopg.connect(fresh_db) as conn:
        counts = store.layer_counts(conn)
    assert counts["layer_jakwifi"] == 9250 and counts["ispu_readings"] == 5533
    assert counts["jakwifi_coverage"] > 2000 and counts["ispu_surfaces"] == 1
    print(f"\nload_default_layers: first {first}, again {again}")


def test_jakwifi_and_station_vector_tiles_decode(app_client, layer_db):
    import mapbox_vector_tile

    tile = TMS.tile(*MONAS, 14)
    res = app_client.get(f"/tiles/jakwifi/{tile.z}/{tile.x}/{tile.y}.mvt")
    assert res.status_code == 200, res.text
    decoded = mapbox_vector_tile.decode(res.content)
    features = decoded["jakwifi"]["features"]
    b = TMS.bounds(tile)
    with psycopg.connect(layer_db) as conn:
        inside = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM layer_jakwifi WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
                (b.left, b.bottom, b.right, b.top),
            )
        }
    got = {f["properties"]["id"] for f in features}
    assert inside and inside <= got  # the tile buffer may add a few from next door
    props = features[0]["properties"]
    assert props["synthetic"] is True and props["kota_code"] == "3173"
    assert features[0]["geometry"]["type"] == "Point"
    st_tile = TMS.tile(106.82302, -6.19495, 12)  # DKI1, Bundaran HI
    stations = mapbox_vector_tile.decode(
        app_client.get(f"/tiles/ispu_stations/{st_tile.z}/{st_tile.x}/{st_tile.y}.mvt").content
    )
    names = {f["properties"]["station_id"] for f in stations["ispu_stations"]["features"]}
    assert "DKI1" in names
    method = stations["ispu_stations"]["features"][0]["properties"]["location_method"]
    assert method
