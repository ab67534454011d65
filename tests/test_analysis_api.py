"""The /analysis endpoints in every format, bad parameters, overlays and the report command."""

from __future__ import annotations

import io
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely

from gis.metrics import MetricSpec, resolution_metrics
from tests.analysis_data import demo_database

AS_OF = "2026-11-01T00:00:00+07:00"


@pytest.fixture(scope="module")
def api_db(dsn, boundary_set):
    """A throw-away database: real boundaries and 6,000 demo-like reports."""
    with demo_database(dsn, boundary_set, 6000, seed=5, prefix="t_analysis_api") as made:
        yield made


@pytest.fixture(scope="module")
def api(api_db, settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    url, _ = api_db
    with TestClient(create_app(settings, dsn=url)) as test_client:
        yield test_client


def get(api, path: str, **params):
    return api.get(path, params={"as_of": AS_OF, **params})


# --------------------------------------------------------------------------- /analysis/resolution


def test_resolution_json_matches_the_pandas_path(api, api_db) -> None:
    _, frame = api_db
    r = get(
        api,
        "/analysis/resolution",
        unit="kelurahan",
        category="sampah,banjir",
        **{"from": "2026-01-01"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["unit"] == "kelurahan" and body["meta"]["categories"] == [
        "banjir",
        "sampah",
    ]
    assert "median_days, p90_days" in body["meta"]["definitions"]
    spec = MetricSpec(
        unit="kelurahan",
        as_of=AS_OF,
        start="2026-01-01",
        categories=("sampah", "banjir"),
        include_private=False,
    )
    expected = resolution_metrics(frame, spec)
    assert [row["code"] for row in body["rows"]] == expected["code"].tolist()
    rows = pd.DataFrame(body["rows"])
    small = (expected["reports"] < 5).to_numpy()  # public caller: small rows lose their figures
    assert (
        rows.loc[small, ["reports", "median_days"]].isna().all().all()
        and rows.loc[small, "suppressed"].all()
    )
    big = ~small
    assert rows.loc[big, "reports"].tolist() == expected.loc[big, "reports"].tolist()
    np.testing.assert_allclose(
        rows.loc[big, "resolved_share"].astype(float),
        expected.loc[big, "resolved_share"],
        rtol=1e-12,
    )


def test_resolution_csv_geojson_parquet(api) -> None:
    r = get(api, "/analysis/resolution", unit="rw", format="csv", period="month")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(r.text))
    assert {"code", "period", "reports", "median_days", "reliable", "rank"} <= set(table.columns)
    assert len(table) > 100

    r = get(api, "/analysis/resolution", unit="kelurahan", format="geojson", simplify="20")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) > 200
    for feature in fc["features"][:50]:
        geom = shapely.geometry.shape(feature["geometry"])
        assert geom.geom_type in ("Polygon", "MultiPolygon") and geom.is_valid
        assert "name" in feature["properties"] and "resolved_7d_share" in feature["properties"]

    r = get(api, "/analysis/resolution", unit="h3_8", format="parquet")
    assert r.status_code == 200
    gdf = gpd.read_parquet(io.BytesIO(r.content))
    assert gdf.crs.to_epsg() == 4326 and len(gdf) > 50
    assert set(gdf.geometry.geom_type) == {"Polygon"}
    assert gdf["code"].str.len().eq(15).all()
    assert pd.api.types.is_float_dtype(gdf["median_days"]) and pd.api.types.is_float_dtype(
        gdf["reports"]
    )


def test_resolution_city_wide_and_groupings(api) -> None:
    r = get(api, "/analysis/resolution", unit="none", by="category,opd", period="quarter")
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert all(row["code"] is None and row["category"] and row["opd"] for row in rows)
    r = get(
        api,
        "/analysis/resolution",
        unit="rw",
        within="kota:3173",
        rank_by="median_days",
        min_reports="5",
    )
    assert r.status_code == 200
    ranks = [row["rank"] for row in r.json()["rows"] if row["rank"] is not None]
    assert ranks and min(ranks) == 1


def test_a_date_as_to_includes_that_day(api, api_db) -> None:
    """``to=2026-03-10`` counts reports of 10 March (WIB), as /reports and the tiles do."""
    _, frame = api_db
    day = pd.Timestamp("2026-03-10", tz="Asia/Jakarta")
    created = pd.to_datetime(frame["created_at"], utc=True)
    in_day = (created >= day) & (created < day + pd.Timedelta(days=1)) & frame["public"]
    assert in_day.sum() > 5
    r = get(api, "/analysis/resolution", unit="none", **{"from": "2026-03-10", "to": "2026-03-10"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"][0]["reports"] == in_day.sum()
    assert pd.Timestamp(r.json()["meta"]["to"]) == day + pd.Timedelta(days=1)
    # a time stays an exclusive bound
    r = get(api, "/analysis/resolution", unit="none", **{"from": "2026-03-10", "to": "2026-03-11"})
    wide = (created >= day) & (created < day + pd.Timedelta(days=2)) & frame["public"]
    assert r.json()["rows"][0]["reports"] == wide.sum()
    r = get(
        api,
        "/analysis/resolution",
        unit="none",
        **{"from": "2026-03-10", "to": "2026-03-11T00:00:00+07:00"},
    )
    assert r.json()["rows"][0]["reports"] == in_day.sum()


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/analysis/resolution", {"unit": "desa"}, "unit must be one of"),
        ("/analysis/resolution", {"period": "day"}, "period must be one of"),
        ("/analysis/resolution", {"from": "not-a-date"}, "from"),
        ("/analysis/resolution", {"from": "2026-02-01", "to": "2026-01-01"}, "must be before"),
        ("/analysis/resolution", {"to": "2026-02-30"}, "cannot read '2026-02-30' as a date"),
        ("/analysis/resolution", {"category": "sampah,alien"}, "unknown category"),
        ("/analysis/resolution", {"opd": "NASA"}, "unknown OPD"),
        ("/analysis/resolution", {"format": "xml"}, "format must be one of"),
        ("/analysis/resolution", {"min_reports": "0"}, "min_reports"),
        ("/analysis/resolution", {"within": "rt:1"}, "within"),
        ("/analysis/resolution", {"unit": "none", "format": "geojson"}, "spatial unit"),
        ("/analysis/resolution", {"by": "status"}, "by must"),
        ("/analysis/hotspots", {"unit": "h3_11"}, "unit must be one of"),
        ("/analysis/hotspots", {"method": "kriging"}, "method must be one of"),
        ("/analysis/hotspots", {"metric": "volume"}, "metric must be one of"),
        ("/analysis/hotspots", {"permutations": "lots"}, "permutations must be an integer"),
        ("/analysis/hotspots", {"permutations": "5"}, "permutations must be in"),
        ("/analysis/hotspots", {"inference": "bayes"}, "inference must be one of"),
        ("/analysis/overlay", {"layers": "traffic"}, "layers must be among"),
        ("/analysis/overlay", {"ci": "jackknife"}, "ci must be one of"),
        ("/analysis/compare", {"metric": "happiness"}, "metric must be one of"),
        ("/analysis/compare", {"units": "rw,village"}, "units must be among"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(api, path, params, reason) -> None:
    r = get(api, path, **params)
    assert r.status_code == 400, (r.status_code, r.text)
    assert reason in r.json()["detail"]


# --------------------------------------------------------------------------- /analysis/hotspots


def test_hotspots_formats(api) -> None:
    r = get(
        api,
        "/analysis/hotspots",
        unit="h3_8",
        metric="count",
        method="gistar",
        permutations="999",
        seed="3",
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    props = pd.DataFrame([f["properties"] for f in fc["features"]])
    assert {"code", "value", "z", "p_sim", "p_value", "q_value", "class"} <= set(props.columns)
    assert set(props["class"]) <= {
        "ns",
        *(f"{d}_{lvl}" for d in ("hot", "cold") for lvl in (90, 95, 99)),
    }
    assert len(props) > 100  # every cell of the city, also the empty ones
    again = get(api, "/analysis/hotspots", unit="h3_8", permutations="999", seed="3").json()
    assert [f["properties"]["p_sim"] for f in again["features"]] == props[
        "p_sim"
    ].tolist()  # seeded

    r = get(
        api,
        "/analysis/hotspots",
        unit="rw",
        method="moran",
        metric="rate",
        format="json",
        permutations="499",
    )
    assert r.status_code == 200
    rows = pd.DataFrame(r.json()["rows"])
    assert set(rows["quadrant"].dropna()) <= {"HH", "LH", "LL", "HL"}
    assert r.json()["meta"]["method"] == "moran"

    r = get(
        api,
        "/analysis/hotspots",
        unit="kelurahan",
        metric="backlog",
        format="csv",
        permutations="199",
    )
    assert r.status_code == 200 and len(pd.read_csv(io.StringIO(r.text))) > 200
    r = get(api, "/analysis/hotspots", unit="kelurahan", format="parquet", permutations="199")
    gdf = gpd.read_parquet(io.BytesIO(r.content))
    assert len(gdf) > 200 and gdf.crs.to_epsg() == 4326


def test_hotspots_opd_filter(api) -> None:
    all_reports = get(
        api, "/analysis/hotspots", unit="h3_7", permutations="199", format="json"
    ).json()["rows"]
    dsda = get(
        api, "/analysis/hotspots", unit="h3_7", permutations="199", format="json", opd="DSDA"
    ).json()["rows"]
    assert sum(r["reports"] or 0 for r in dsda) < sum(r["reports"] or 0 for r in all_reports)


# --------------------------------------------------------------------------- /analysis/overlay


def test_overlay_needs_its_layers_then_works(api, api_db) -> None:
    from db.layers import generate_jakwifi, import_ispu

    url, _ = api_db
    r = get(api, "/analysis/overlay", permutations="199")
    assert r.status_code == 409 and "not loaded" in r.json()["detail"]
    generate_jakwifi(url, seed=1)
    r = get(api, "/analysis/overlay", layers="ispu")
    assert r.status_code == 409 and "ISPU" in r.json()["detail"]
    import_ispu(url)

    r = get(api, "/analysis/overlay", min_reports="5", ci="bootstrap", n_boot="500", seed="2")
    assert r.status_code == 200, r.text
    body = r.json()
    rws = pd.DataFrame(body["rws"])
    assert {
        "wifi_count",
        "wifi_per_km2",
        "wifi_nearest_m",
        "ispu_mean",
        "hot_class",
        "poorly_served",
    } <= set(rws.columns)
    assert rws["ispu_mean"].between(0, 500).all()
    corr = pd.DataFrame(body["correlations"])
    assert set(corr["covariate"]) == {"wifi_per_km2", "wifi_nearest_m", "ispu_mean"}
    ok = corr.dropna(subset=["rho"])
    assert len(ok) and ((ok["ci_low"] <= ok["rho"]) & (ok["rho"] <= ok["ci_high"])).all()
    priority = pd.DataFrame(body["priority"])
    if len(priority):
        assert priority["hot_class"].str.startswith("hot").all() and priority["poorly_served"].all()

    r = get(api, "/analysis/overlay", layers="wifi", format="csv", table="correlations")
    assert (
        r.status_code == 200 and len(pd.read_csv(io.StringIO(r.text))) == 8
    )  # 4 metrics x 2 covariates
    r = get(api, "/analysis/overlay", format="geojson")
    assert r.status_code == 200 and r.json()["type"] == "FeatureCollection"
    r = get(api, "/analysis/overlay", **{"from": "2026-01-01"})
    assert r.status_code == 422 and "no ISPU readings" in r.json()["detail"]


def test_python_wifi_coverage_matches_the_layer_table(api_db, boundary_set) -> None:
    """gis.overlay.wifi_coverage mirrors the layers package's jakwifi_coverage definitions."""
    from db.analysis import wifi_by_rw
    from db.layers import generate_jakwifi
    from gis.overlay import wifi_coverage

    url, _ = api_db
    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT count(*) FROM layer_jakwifi").fetchone()[0]:
            generate_jakwifi(url, seed=1)
        rows = conn.execute("SELECT rw_code, ST_X(geom), ST_Y(geom) FROM layer_jakwifi").fetchall()
        stored = wifi_by_rw(conn).set_index("code")
    points = pd.DataFrame(rows, columns=["rw_code", "lon", "lat"])
    hotspots = gpd.GeoDataFrame(
        points, geometry=gpd.points_from_xy(points.lon, points.lat), crs="EPSG:4326"
    )
    ours = wifi_coverage(boundary_set.frames["rw"], hotspots).set_index("code").loc[stored.index]
    assert ours["wifi_count"].tolist() == stored["wifi_count"].tolist()
    np.testing.assert_allclose(
        ours["wifi_nearest_m"], stored["wifi_nearest_m"], rtol=1e-6, atol=0.01
    )
    np.testing.assert_allclose(ours["wifi_per_km2"], stored["wifi_per_km2"], rtol=1e-6)


# --------------------------------------------------------------------------- /analysis/compare


def test_compare_two_resolutions(api) -> None:
    r = get(api, "/analysis/compare", metric="resolved_share", units="rw,h3_8", min_reports="5")
    assert r.status_code == 200
    body = r.json()
    assert [res["unit"] for res in body["resolutions"]] == ["rw", "h3_8"]
    assert "areal unit" in body["note"] and 0 < body["pooled"] < 1
    for res in body["resolutions"]:
        s = res["summary"]
        assert s["units"] >= s["reliable_units"] >= 1 and s["p10"] <= s["median"] <= s["p90"]
        assert res["features"]["type"] == "FeatureCollection"
    r = get(api, "/analysis/compare", metric="median_days", units="kelurahan,h3_7", format="csv")
    table = pd.read_csv(io.StringIO(r.text))
    assert set(table["unit"]) == {"kelurahan", "h3_7"}


# --------------------------------------------------------------------------- area page


def test_kelurahan_page_hides_small_public_figures(api, api_db) -> None:
    """Public readers: public reports only, and a kelurahan with < 5 shows no figures at all."""
    from tests.databases import key_header

    url, frame = api_db
    created = pd.to_datetime(frame["created_at"], utc=True).dt.tz_convert("Asia/Jakarta")
    frame = frame.assign(day=created.dt.date.astype(str))
    public = frame[frame["public"] & frame["kelurahan_code"].notna()]
    counts = public.groupby(["kelurahan_code", "day"]).size()
    (code, day) = counts[counts.between(1, 4)].index[0]
    window = {"from": day, "to": day}
    r = get(api, f"/analysis/kelurahan/{code}", **window)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Kurang dari 5 laporan publik" in r.text and "class='kpi'" not in r.text
    assert "Laporan publik saja" in r.text and r.headers["x-frame-options"] == "DENY"
    # an admin sees every report's figures for the same window
    all_reports = int(((frame["kelurahan_code"] == code) & (frame["day"] == day)).sum())
    admin = api.get(
        f"/analysis/kelurahan/{code}",
        params={"as_of": AS_OF, **window},
        headers=key_header(url, "admin"),
    )
    assert admin.status_code == 200 and "Kurang dari" not in admin.text
    # the page links back to the map, zoomed there, with the same dates
    assert f"href='/map?kelurahan={code}&amp;from={day}&amp;to={day}'" in admin.text
    assert f"<div class='value'>{all_reports} </div>" in admin.text
    assert "Laporan publik saja" not in admin.text and admin.headers["cache-control"] == "no-store"
    # a whole year of a busy kelurahan: the figures, RW map and table are there for everyone
    busy = public["kelurahan_code"].value_counts().index[0]
    r = get(api, f"/analysis/kelurahan/{busy}")
    assert "class='kpi'" in r.text and "<svg" in r.text and "Per RW" in r.text
    assert '<html lang="id">' in r.text and "Selesai &le; 7 hari" in r.text
    en = get(api, f"/analysis/kelurahan/{busy}", lang="en")
    assert '<html lang="en">' in en.text and "By RW" in en.text
    assert "Resolved within 7 days" in en.text and "hari" not in en.text
    assert get(api, f"/analysis/kelurahan/{busy}", lang="fr").status_code == 400
    assert get(api, "/analysis/kelurahan/0000").status_code == 404
    assert get(api, "/analysis/kelurahan/bad%20code").status_code == 422


def test_kelurahan_page_shows_wifi_and_air_quality(api, api_db) -> None:
    """The context cards: JakWifi points in the kelurahan (marked synthetic), mean ISPU."""
    from db.layers import current_import, generate_jakwifi, import_ispu

    url, frame = api_db
    with psycopg.connect(url) as conn:
        if current_import(conn, "jakwifi") is None:  # the overlay test loads them first
            generate_jakwifi(url, seed=1)
        if current_import(conn, "ispu") is None:
            import_ispu(url)
        busy = frame["kelurahan_code"].value_counts().index[0]
        (inside,) = conn.execute(  # hotspots are placed by the reports' snapping rule
            "SELECT count(*) FROM layer_jakwifi WHERE kelurahan_code = %s", (busy,)
        ).fetchone()
        first, last = conn.execute("SELECT min(date), max(date) FROM ispu_readings").fetchone()
    page = get(api, f"/analysis/kelurahan/{busy}").text
    assert "Konteks: JakWifi dan kualitas udara" in page
    assert f"<div class='label'>Titik JakWifi</div><div class='value'>{inside}</div>" in page
    assert "data sintetis, bukan lokasi nyata" in page
    assert f"{first} s.d. {last}" in page  # no date filter: every stored ISPU day
    value = re.search(
        r"ISPU rata-rata</div><div class='value'>(\d+) <small>(\w[\w ]*)</small>", page
    )
    assert value and 0 < int(value[1]) < 500 and value[2] in ("Baik", "Sedang", "Tidak Sehat")
    # a period without ISPU readings says so, with the days that are stored
    late = get(api, f"/analysis/kelurahan/{busy}", lang="en", **{"from": "2026-01-01"}).text
    assert f"No ISPU data for this period (stored: {first} to {last})" in late


# --------------------------------------------------------------------------- petalapor report


def test_report_command_writes_offline_html(api_db, monkeypatch, tmp_path, boundary_set) -> None:
    from petalapor.cli import main

    url, frame = api_db
    code = frame["kelurahan_code"].value_counts().index[0]
    name = boundary_set.frames["kelurahan"].set_index("code").loc[code, "name"]
    parts = psycopg.conninfo.conninfo_to_dict(url)
    monkeypatch.setenv("DATABASE_URL", "postgresql://{user}@{host}:{port}/{dbname}".format(**parts))
    out = tmp_path / "laporan.html"
    assert main(["report", "--kelurahan", code, "--out", str(out), "--as-of", AS_OF]) == 0
    page = out.read_text(encoding="utf-8")
    assert str(name) in page and "<svg" in page and page.count("<path") >= 1
    assert (
        "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        and "https://" not in page
    )
    assert "<script" not in page
    assert main(["report", "--kelurahan", "0000000000", "--out", str(tmp_path / "x.html")]) == 2


def test_published_hotspots_feed_the_tile_layer(api, api_db) -> None:
    import mapbox_vector_tile

    from db.analysis import hotspots, store_hotspots
    from layers.registry import get as get_layer

    url, _ = api_db
    with psycopg.connect(url) as conn:
        result = hotspots(conn, MetricSpec(unit="h3_8", as_of=AS_OF), permutations=199)
        assert store_hotspots(conn, result) == len(result)
        assert conn.execute("SELECT count(*) FROM analysis_hotspots").fetchone()[0] == len(result)
    layer = get_layer("hotspots")
    assert layer.table == "analysis_hotspots" and "hotspot_class" in layer.attributes
    assert api.get("/tiles/hotspots.json").status_code == 200
    r = api.get("/tiles/hotspots/10/815/529.mvt")  # central Jakarta
    assert r.status_code == 200, r.text
    features = mapbox_vector_tile.decode(r.content)["hotspots"]["features"]
    assert features and {"code", "hotspot_class", "z", "q_value"} <= set(features[0]["properties"])
