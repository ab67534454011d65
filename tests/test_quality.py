"""The data quality report (placement counts and distances, the farthest outside reports,
recent imports with their quarantine), ``/reports?snap_method=``, the CLI command, and
``/reports/export`` (CSV, GeoJSON).

A database of its own (real boundaries), so every count is known exactly.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from test_reports_api import KNOWN, north_of, northern_vertex

from tests.databases import key_header, throwaway_database


@pytest.fixture(scope="module")
def quality_db(dsn, boundary_set):
    with throwaway_database(dsn, "t_quality", boundary_set=boundary_set, catalog=True) as url:
        yield url


@pytest.fixture(scope="module")
def app(quality_db, settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings, dsn=quality_db)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(quality_db) -> dict[str, str]:
    return key_header(quality_db, "admin", name="quality test")


@pytest.fixture(scope="module")
def placed(app, admin, boundary_set) -> dict[str, dict]:
    """Three reports inside, one 30 m off the coast, two out at sea (one of them hidden)."""
    top = northern_vertex(boundary_set.frames["rw"])
    points = {name: KNOWN[name][:2] for name in ("monas", "kota_tua", "blok_m")}
    points["coast_30m"] = north_of(*top, 30)
    points["sea_2km"] = north_of(*top, 2000)
    points["sea_5km_hidden"] = north_of(*top, 5000)
    out = {}
    for name, (lon, lat) in points.items():
        body = {
            "category": "banjir",
            "lon": lon,
            "lat": lat,
            "external_id": f"q-{name}-{uuid.uuid4().hex[:6]}",
            "public": not name.endswith("hidden"),
        }
        r = app.post("/reports", json=body, headers=admin)
        assert r.status_code == 201, r.text
        out[name] = r.json()
    return out


def test_public_quality_report_counts_public_reports(app, placed):
    r = app.get("/reports/quality")
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["reports"] == 5
    assert {m: v["reports"] for m, v in q["snap"].items()} == {
        "inside": 3,
        "nearest": 1,
        "outside": 1,
    }
    assert q["snap"]["inside"]["share"] == pytest.approx(3 / 5)
    assert q["snap"]["nearest"]["distance_m"]["max_m"] == pytest.approx(30, abs=0.2)
    assert q["snap"]["outside"]["distance_m"]["median_m"] == pytest.approx(
        placed["sea_2km"]["snap_distance_m"], abs=0.1
    )
    assert [f["id"] for f in q["farthest_outside"]] == [placed["sea_2km"]["id"]]
    assert q["nearest_by_kota"][0]["nearest"] == 1 and q["nearest_by_kota"][0]["name"]
    assert "imports" not in q  # file names and quarantined rows are for admins
    listed = app.get("/reports", params={"snap_method": "outside"}).json()
    assert [item["id"] for item in listed["items"]] == [placed["sea_2km"]["id"]]


def test_admin_sees_hidden_reports_and_the_imports(app, admin, placed, quality_db, tmp_path):
    from db.ingest import Mapping, import_file

    csv = tmp_path / "export.csv"
    csv.write_text(
        "external_id,source,category,lat,lon,created_at\n"
        "x-1,qlue,banjir,-6.1754,106.8272,2026-05-01T08:00:00\n"
        "x-2,qlue,banjir,-6.2x,106.8272,2026-05-01T09:00:00\n",
        encoding="utf-8",
    )
    summary = import_file(quality_db, csv, Mapping(name="test"), progress=False)
    assert (summary.stored, summary.quarantined) == (1, 1)
    q = app.get("/reports/quality", headers=admin).json()
    assert q["reports"] == 7 and q["snap"]["outside"]["reports"] == 2
    farthest = [f["id"] for f in q["farthest_outside"]]
    at_sea = sorted(
        (placed[n] for n in ("sea_2km", "sea_5km_hidden")), key=lambda r: -r["snap_distance_m"]
    )
    assert farthest == [r["id"] for r in at_sea]
    assert [f["distance_m"] for f in q["farthest_outside"]] == [
        pytest.approx(r["snap_distance_m"], abs=0.05) for r in at_sea
    ]
    (latest,) = [i for i in q["imports"] if i["id"] == str(summary.import_id)]
    assert (latest["read"], latest["stored"], latest["quarantined"]) == (2, 1, 1)
    assert latest["quarantine_by_field"] == {"lat": 1}
    assert latest["first_quarantined"][0]["row_number"] == 2
    outside = app.get("/reports", params={"snap_method": "outside"}, headers=admin).json()
    assert {i["id"] for i in outside["items"]} == set(farthest)


def test_quality_filters_and_bad_parameters(app, placed):
    q = app.get("/reports/quality", params={"category": "sampah"}).json()
    assert q["reports"] == 0 and q["snap"]["inside"]["share"] is None
    assert app.get("/reports/quality", params={"category": "alien"}).status_code == 400
    assert app.get("/reports/quality", params={"from": "soon"}).status_code == 400
    r = app.get("/reports", params={"snap_method": "far"})
    assert r.status_code == 400 and "inside, nearest, outside" in r.json()["detail"]


def test_quality_command(placed, quality_db, monkeypatch, capsys):
    from petalapor.cli import main

    parts = psycopg.conninfo.conninfo_to_dict(quality_db)
    monkeypatch.setenv("DATABASE_URL", "postgresql://{user}@{host}:{port}/{dbname}".format(**parts))
    assert main(["reports", "quality"]) == 0
    text = capsys.readouterr().out
    assert "outside" in text and placed["sea_5km_hidden"]["id"] in text  # the CLI sees all
    assert "distance to the nearest RW" in text


# --------------------------------------------------------------------------- export


def read_csv(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_export_csv_has_every_visible_report(app, admin, placed, quality_db):
    from api.routes.reports import EXPORT_COLUMNS

    with psycopg.connect(quality_db) as conn:
        public, everything = conn.execute(
            "SELECT count(*) FILTER (WHERE public), count(*) FROM reports"
        ).fetchone()
    r = app.get("/reports/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="petalapor_reports_')
    assert r.text.splitlines()[0].split(",") == list(EXPORT_COLUMNS)
    rows = read_csv(r.text)
    assert len(rows) == public < everything
    assert placed["sea_5km_hidden"]["id"] not in {row["id"] for row in rows}
    assert all(row["created_at"].endswith("+07:00") for row in rows)
    assert [row["created_at"] for row in rows] == sorted((row["created_at"] for row in rows))[::-1]
    monas = next(row for row in rows if row["id"] == placed["monas"]["id"])
    assert (monas["rw_code"], monas["snap_method"]) == (placed["monas"]["rw_code"], "inside")
    assert monas["h3_r9"] == placed["monas"]["h3_r9"] and monas["category_name"]
    hidden_too = read_csv(app.get("/reports/export", headers=admin).text)
    assert len(hidden_too) == everything
    outside = read_csv(app.get("/reports/export", params={"snap_method": "outside"}).text)
    assert [row["id"] for row in outside] == [placed["sea_2km"]["id"]]


def test_export_geojson_and_bad_format(app, placed):
    r = app.get("/reports/export", params={"format": "geojson", "category": "banjir"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    features = r.json()["features"]
    assert features and all(f["properties"]["category"] == "banjir" for f in features)
    sea = next(f for f in features if f["id"] == placed["sea_2km"]["id"])
    assert sea["geometry"]["coordinates"] == pytest.approx(
        [placed["sea_2km"]["lon"], placed["sea_2km"]["lat"]]
    )
    empty = app.get("/reports/export", params={"format": "geojson", "category": "sampah"})
    assert empty.json() == {"type": "FeatureCollection", "features": []}
    bad = app.get("/reports/export", params={"format": "xml"})
    assert bad.status_code == 400 and "csv or geojson" in bad.json()["detail"]
    assert app.get("/reports/export", params={"bbox": "1,2,3"}).status_code == 400
