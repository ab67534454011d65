"""Vector tiles against SQL truth: hexes, areas, reports, filters, privacy, HTTP, TileJSON, GDAL."""

from __future__ import annotations

import gzip
import json
import math
import re
import statistics
import subprocess
from pathlib import Path

import jsonschema
import mapbox_vector_tile
import morecantile
import pandas as pd
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from petalapor.catalog import get_catalog
from tests.databases import key_header, tile_test_database
from tiles.footprint import hex_polygon
from tiles.tms import Tile as TileAddr
from tiles.tms import cluster_resolution, xy_bounds, zoom_to_resolution

TMS = morecantile.tms.get("WebMercatorQuad")
SCHEMA = json.loads((Path(__file__).parent / "data" / "tilejson-3.0.0.schema.json").read_text())
K = 5
EXTENT, BUFFER = 4096, 64
OPEN = {c for c, s in get_catalog().statuses.items() if s.open}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tile_db(dsn: str, boundary_set) -> str:
    with tile_test_database(dsn, boundary_set, reports=4000, seed=11) as url:
        yield url


@pytest.fixture(scope="module")
def client(tile_db: str, settings):
    with TestClient(create_app(settings, dsn=tile_db)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keys(tile_db: str) -> dict[str, dict[str, str]]:
    return {
        "public": {},
        "admin": key_header(tile_db, "admin", name="tiles test"),
        "opd": key_header(tile_db, "opd", "DSDA", name="tiles test"),
    }


@pytest.fixture(scope="module")
def reports(tile_db: str) -> pd.DataFrame:
    """Every report, read straight from the table: the truth the tiles are checked against."""
    with psycopg.connect(tile_db) as conn:
        cur = conn.execute(
            "SELECT id::text AS id, ST_X(geom) AS lon, ST_Y(geom) AS lat, h3_r7, h3_r8, h3_r9, "
            "h3_r10, h3_r11, "
            "category, opd, status, created_at, resolved_at, public, rw_code, kelurahan_code "
            "FROM reports"
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    return frame


@pytest.fixture(scope="module")
def hot(reports: pd.DataFrame) -> tuple[float, float]:
    """Centre of the busiest r9 hex: tiles around it hold both large and small hexes."""
    cell = reports["h3_r9"].value_counts().index[0]
    return tuple(reversed(_h3_centre(int(cell))))  # (lon, lat)


def _h3_centre(cell: int) -> tuple[float, float]:
    import h3

    return h3.cell_to_latlng(h3.int_to_str(cell))


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    t = TMS.tile(lon, lat, z)
    return z, t.x, t.y


def fetch(client: TestClient, layer: str, z: int, x: int, y: int, params=None, headers=None):
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", params=params, headers=headers or {})
    decoded = mapbox_vector_tile.decode(response.content) if response.status_code == 200 else {}
    return response, decoded.get(layer, {"features": [], "extent": EXTENT})


def select(
    reports: pd.DataFrame, *, public_only: bool, category=None, status=None, start=None
) -> pd.DataFrame:
    rows = reports
    if public_only:
        rows = rows[rows["public"]]
    if category:
        rows = rows[rows["category"].isin(category)]
    if status:
        rows = rows[rows["status"].isin(status)]
    if start:
        rows = rows[rows["created_at"] >= pd.Timestamp(start + "T00:00:00+07:00")]
    return rows


def expected_stats(rows: pd.DataFrame) -> dict[str, object]:
    """The statistics, computed in pandas (independently of the SQL pieces)."""
    n = len(rows)
    resolved = rows[rows["status"] == "selesai"]
    days = (
        (resolved["resolved_at"] - resolved["created_at"]).dt.total_seconds() / 86400.0
    ).dropna()
    within = int((days <= 7).sum())
    counts = rows["category"].value_counts()
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if n else None
    return {
        "count": n,
        "open": int(rows["status"].isin(OPEN).sum()),
        "resolved": len(resolved),
        "resolved_share": round(len(resolved) / n, 4) if n else None,
        "median_days": round(statistics.median(days), 2) if len(days) else None,
        "within_7d_share": round(within / len(resolved), 4) if len(resolved) else None,
        "top_category": top,
    }


def assert_stats(props: dict, expected: dict) -> None:
    for name, value in expected.items():
        got = props.get(name)
        if isinstance(value, float):
            assert got == pytest.approx(value, abs=0.006), name
        else:
            assert got == value, name


def hexes_meeting(tile: tuple[int, int, int], cells: set[int]) -> set[int]:
    box = xy_bounds(TileAddr(*tile))
    rect = shapely.box(box.left, box.bottom, box.right, box.top)
    return {c for c in cells if hex_polygon(c).intersects(rect)}


def coords(geometry: dict) -> list[tuple[float, float]]:
    def walk(value):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
            yield tuple(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from walk(item)

    return list(walk(geometry["coordinates"]))


# --------------------------------------------------------------------------- grid and HTTP basics


def test_zoom_to_resolution_table():
    assert [zoom_to_resolution(z) for z in range(0, 19)] == [7] * 10 + [
        8,
        9,
        9,
        10,
        10,
        11,
        11,
        11,
        11,
    ]


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/tiles/hexes/23/0/0.mvt", "zoom 23"),
        ("/tiles/hexes/3/8/0.mvt", "x 8"),
        ("/tiles/hexes/3/0/8.pbf", "y 8"),
        ("/tiles/hexes/a/0/0.mvt", "z must be"),
        ("/tiles/hexes/10/0/0.mvt?category=nope", "unknown category"),
        ("/tiles/hexes/10/0/0.mvt?from=2024-13-01", "from must be a date"),
        ("/tiles/hexes/10/0/0.mvt?from=2024-05-01&to=2024-01-01", "after to"),
        ("/tiles/hexes/10/0/0.mvt?status=open", "unknown status"),
        ("/tiles/hexes/10/816/529.mvt?res=12", "res must be"),
        ("/tiles/hexes/10/816/529.mvt?res=11", "too fine"),
        ("/tiles/kelurahan/10/816/529.mvt?res=9", "takes no res"),
    ],
)
def test_bad_requests_are_400_with_a_reason(client, path, reason):
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


def test_unknown_layer_and_zoom_out_of_range_are_404(client):
    assert client.get("/tiles/nope/10/816/529.mvt").status_code == 404
    assert client.get("/tiles/rw/9/408/264.mvt").status_code == 404  # rw starts at z10


def test_empty_tile_is_204_with_etag_and_cache_control(client):
    response = client.get("/tiles/hexes/10/0/0.mvt")  # far from Jakarta
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["etag"]
    assert response.headers["cache-control"] == "public, max-age=300"
    again = client.get(
        "/tiles/hexes/10/0/0.mvt", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304


def test_etag_if_none_match_and_cache_control(client, keys, hot):
    z, x, y = tile_at(*hot, 12)
    first = client.get(f"/tiles/hexes/{z}/{x}/{y}.mvt")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("public")
    assert "X-API-Key" in first.headers["vary"]
    assert (
        client.get(f"/tiles/hexes/{z}/{x}/{y}.pbf", headers={"if-none-match": etag}).status_code
        == 304
    )
    assert (
        client.get(
            f"/tiles/hexes/{z}/{x}/{y}.mvt", headers={"if-none-match": "W/" + etag}
        ).status_code
        == 304
    )
    other = client.get(f"/tiles/hexes/{z}/{x}/{y}.mvt", headers={"if-none-match": '"nope"'})
    assert other.status_code == 200 and other.headers["etag"] == etag
    private = client.get(f"/tiles/hexes/{z}/{x}/{y}.mvt", headers=keys["admin"])
    assert private.headers["cache-control"].startswith("private")
    assert private.headers["etag"] != etag  # admin tiles count hidden reports and small hexes too


def test_gzip_once_when_accepted(client, hot):
    z, x, y = tile_at(*hot, 11)
    plain = client.get(f"/tiles/hexes/{z}/{x}/{y}.mvt", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    with client.stream(
        "GET", f"/tiles/hexes/{z}/{x}/{y}.mvt", headers={"accept-encoding": "gzip"}
    ) as resp:
        raw = b"".join(resp.iter_raw())
        assert resp.headers["content-encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b"
    body = gzip.decompress(raw)
    assert body[:2] != b"\x1f\x8b"  # compressed exactly once
    assert body == plain.content
    assert int(resp.headers["content-length"]) == len(raw)


# --------------------------------------------------------------------------- hexes against SQL


@pytest.mark.parametrize("z", [10, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("role", ["public", "admin"])
def test_hex_tile_matches_sql(client, keys, reports, hot, z, role):
    tile = tile_at(*hot, z)
    response, layer = fetch(client, "hexes", *tile, headers=keys[role])
    assert response.status_code in (200, 204)
    res = zoom_to_resolution(z)
    rows = select(reports, public_only=role == "public")
    groups = {int(c): g for c, g in rows.groupby(f"h3_r{res}")}
    wanted = {c for c in hexes_meeting(tile, set(groups)) if role == "admin" or len(groups[c]) >= K}
    got = {int(f["id"]): f for f in layer["features"]}
    assert set(got) == wanted
    assert got or (role == "public" and z >= 13), "the busiest area should not give an empty tile"
    # the area: the union of the hexes in the tile; its reports counted over the same hex ids
    assert sum(f["properties"]["count"] for f in got.values()) == int(
        rows[f"h3_r{res}"].isin(list(got)).sum()
    )
    for cell, feature in got.items():
        props = feature["properties"]
        assert props["h3"] == format(cell, "x") and props["res"] == res
        assert_stats(props, expected_stats(groups[cell]))
        assert all(-BUFFER <= v <= EXTENT + BUFFER for p in coords(feature["geometry"]) for v in p)
    assert layer.get("extent", EXTENT) == EXTENT


def test_hex_counts_cover_hexes_straddling_the_tile_edge(client, keys, reports, hot):
    """A hex cut by the tile edge still counts all its reports, also those outside the tile."""
    tile = tile_at(*hot, 14)
    _, layer = fetch(client, "hexes", *tile, headers=keys["admin"])
    box = xy_bounds(TileAddr(*tile))
    rect = shapely.box(box.left, box.bottom, box.right, box.top)
    straddling = [f for f in layer["features"] if not rect.contains(hex_polygon(int(f["id"])))]
    assert straddling, "expected hexes cut by the tile edge"
    for feature in straddling:
        cell = int(feature["id"])
        assert feature["properties"]["count"] == int((reports["h3_r10"] == cell).sum())


def test_filters_change_hex_counts(client, keys, reports, hot):
    tile = tile_at(*hot, 11)
    _, everything = fetch(client, "hexes", *tile, headers=keys["admin"])
    params = {"category": ["banjir", "sampah"], "status": "selesai", "from": "2024-03-01"}
    response, layer = fetch(client, "hexes", *tile, params=params, headers=keys["admin"])
    assert response.status_code == 200
    rows = select(
        reports,
        public_only=False,
        category=["banjir", "sampah"],
        status=["selesai"],
        start="2024-03-01",
    )
    got = {int(f["id"]): f["properties"] for f in layer["features"]}
    assert got and set(got) == hexes_meeting(tile, {int(c) for c in rows["h3_r9"].unique()})
    for cell, props in got.items():
        assert_stats(props, expected_stats(rows[rows["h3_r9"] == cell]))
    total = lambda lyr: sum(f["properties"]["count"] for f in lyr["features"])  # noqa: E731
    assert 0 < total(layer) < total(everything)


def test_rollup_and_live_aggregation_agree(client, keys, hot):
    """Unfiltered tiles read the roll-up; a filter that keeps everything forces the live SQL."""
    for z in (10, 12, 14):
        tile = tile_at(*hot, z)
        for role in ("public", "admin"):
            _, rollup = fetch(client, "hexes", *tile, headers=keys[role])
            _, live = fetch(
                client, "hexes", *tile, params={"from": "2000-01-01"}, headers=keys[role]
            )
            assert rollup["features"] == live["features"]


def test_affine_hex_geometry_equals_st_asmvtgeom(tile_db, hot):
    """Hexes inside the tile skip ST_AsMVTGeom; their geometry must match in shape and winding."""
    z, x, y = tile_at(*hot, 12)
    b = TMS.xy_bounds(morecantile.Tile(x, y, z))
    scale = EXTENT / (b.right - b.left)
    env = "ST_MakeEnvelope(%(l)s, %(b)s, %(r)s, %(t)s, 3857)"
    query = (
        f"SELECT ST_Equals(m, a), ST_IsPolygonCCW(m) = ST_IsPolygonCCW(a), ST_IsValid(a) FROM ("
        f"SELECT ST_AsMVTGeom(geom, {env}, 4096, 64, true) AS m, "
        "ST_SnapToGrid(ST_Affine(geom, %(s)s, 0, 0, -%(s)s, -%(l)s * %(s)s, %(t)s * %(s)s), 1) "
        "AS a "
        f"FROM tile_hex_stats WHERE scope = 'all' AND res = 9 AND geom @ {env}) q"
    )
    with psycopg.connect(tile_db) as conn:
        rows = conn.execute(
            query, {"l": b.left, "b": b.bottom, "r": b.right, "t": b.top, "s": scale}
        ).fetchall()
    assert len(rows) > 50
    assert all(all(r) for r in rows)


def test_res_option_serves_a_coarser_grid(client, keys, reports, hot):
    tile = tile_at(*hot, 15)
    response, layer = fetch(client, "hexes", *tile, params={"res": 9}, headers=keys["admin"])
    assert response.status_code == 200
    ids = {int(f["id"]) for f in layer["features"]}
    assert ids and ids == hexes_meeting(tile, {int(c) for c in reports["h3_r9"].unique()})


def test_k_anonymity_and_hidden_reports_in_public_tiles(client, keys, reports, hot):
    public_rows = select(reports, public_only=True)
    assert (~reports["public"]).sum() > 0
    for z in (11, 13, 15):
        tile = tile_at(*hot, z)
        res = zoom_to_resolution(z)
        _, pub = fetch(client, "hexes", *tile)
        _, adm = fetch(client, "hexes", *tile, headers=keys["admin"])
        assert all(f["properties"]["count"] >= K for f in pub["features"])
        small = {int(f["id"]) for f in adm["features"] if f["properties"]["count"] < K}
        assert small, "the admin tile should show hexes below k"
        assert not small & {int(f["id"]) for f in pub["features"]}
        for feature in pub["features"]:  # hidden reports never counted
            assert feature["properties"]["count"] == int(
                (public_rows[f"h3_r{res}"] == int(feature["id"])).sum()
            )


# --------------------------------------------------------------------------- kelurahan and RW


@pytest.mark.parametrize("level, z", [("kelurahan", 11), ("rw", 13)])
def test_area_tiles_match_sql(client, keys, reports, hot, level, z, tile_db):
    tile = tile_at(*hot, z)
    code_col = f"{level}_code" if level == "rw" else "kelurahan_code"
    box = xy_bounds(TileAddr(*tile)).expand(morecantile_buffer(z))
    inner = xy_bounds(TileAddr(*tile))
    query = (
        "SELECT code, name FROM boundaries WHERE level = %s AND "
        "ST_Intersects(ST_Transform(geom, 3857), "
        "ST_MakeEnvelope(%s, %s, %s, %s, 3857))"
    )
    with psycopg.connect(tile_db) as conn:
        in_tile = dict(
            conn.execute(query, (level, box.left, box.bottom, box.right, box.top)).fetchall()
        )
        strictly = dict(
            conn.execute(
                query, (level, inner.left, inner.bottom, inner.right, inner.top)
            ).fetchall()
        )
    for role in ("public", "admin"):
        _, layer = fetch(client, level, *tile, headers=keys[role])
        got = {f["properties"]["code"]: f["properties"] for f in layer["features"]}
        assert (
            set(strictly) <= set(got) <= set(in_tile)
        )  # polygons in the tile, or only in its buffer
        rows = select(reports, public_only=role == "public")
        for code, props in got.items():
            assert props["name"] == in_tile[code]
            group = rows[rows[code_col] == code]
            if role == "public" and len(group) < K:
                assert props["suppressed"] is True
                assert not {
                    "count",
                    "open",
                    "resolved",
                    "resolved_share",
                    "median_days",
                    "top_category",
                } & set(props)
            else:
                assert props["suppressed"] is False
                assert_stats(props, expected_stats(group))
        if role == "public":
            assert any(p["suppressed"] for p in got.values()) or level == "kelurahan"


def morecantile_buffer(z: int) -> float:
    """The MVT buffer in EPSG:3857 metres at zoom z."""
    b = TMS.xy_bounds(morecantile.Tile(0, 0, z))
    return (b.right - b.left) * BUFFER / EXTENT


# --------------------------------------------------------------------------- reports layer


def test_reports_layer_needs_a_key(client, hot):
    z, x, y = tile_at(*hot, 15)
    response = client.get(f"/tiles/reports/{z}/{x}/{y}.mvt")
    assert response.status_code == 403
    assert client.get("/tiles/reports.json").status_code == 403
    assert (
        client.get(
            f"/tiles/reports/{z}/{x}/{y}.mvt", headers={"x-api-key": "plk_000000000000_" + "x" * 43}
        ).status_code
        == 401
    )


def test_report_points_match_sql(client, keys, reports, hot):
    z, x, y = tile_at(*hot, 15)
    response, layer = fetch(client, "reports", z, x, y, headers=keys["admin"])
    assert response.status_code == 200
    box = xy_bounds(TileAddr(z, x, y)).expand(morecantile_buffer(z))
    mx, my = zip(
        *(TMS.xy(lon, lat) for lon, lat in zip(reports["lon"], reports["lat"], strict=True)),
        strict=True,
    )
    inside = reports[[box.contains(a, b) for a, b in zip(mx, my, strict=True)]]
    ids = {f["properties"]["id"] for f in layer["features"]}
    assert ids == set(inside["id"])
    by_id = inside.set_index("id")
    for feature in layer["features"]:
        props = feature["properties"]
        row = by_id.loc[props["id"]]
        assert (props["category"], props["status"], props["opd"], props["public"]) == (
            row["category"],
            row["status"],
            row["opd"],
            bool(row["public"]),
        )
        assert props["created"] == row["created_at"].tz_convert("Asia/Jakarta").strftime("%Y-%m-%d")
        assert props["cluster"] is False


def test_report_clusters_below_z14(client, keys, reports, hot):
    z, x, y = tile_at(*hot, 12)
    _, layer = fetch(client, "reports", z, x, y, headers=keys["admin"])
    res = cluster_resolution(z)
    assert layer["features"]
    for feature in layer["features"]:
        props = feature["properties"]
        assert props["cluster"] is True
        assert props["count"] == int((reports[f"h3_r{res}"] == int(feature["id"])).sum())


def test_opd_key_sees_only_its_own_reports(client, keys, reports, hot):
    z, x, y = tile_at(*hot, 14)
    _, layer = fetch(client, "reports", z, x, y, headers=keys["opd"])
    assert layer["features"]
    assert {f["properties"]["opd"] for f in layer["features"]} == {"DSDA"}
    assert (
        client.get(f"/tiles/reports/{z}/{x}/{y}.mvt?opd=DBM", headers=keys["opd"]).status_code
        == 403
    )
    _, clusters = fetch(client, "reports", *tile_at(*hot, 11), headers=keys["opd"])
    res = cluster_resolution(11)
    dsda = reports[reports["opd"] == "DSDA"]
    for feature in clusters["features"]:
        assert feature["properties"]["count"] == int(
            (dsda[f"h3_r{res}"] == int(feature["id"])).sum()
        )


# --------------------------------------------------------------------------- registry layers


def test_registry_vector_layers_use_the_same_tile_code(client, tile_db):
    from layers.registry import Attribute, Layer, register, unregister

    with psycopg.connect(tile_db) as conn:
        conn.execute(
            "CREATE TABLE layer_tiles_probe (pid text PRIMARY KEY, label text, size integer, "
            "seen date, "
            "geom geometry(Point, 4326))"
        )
        conn.execute(
            "INSERT INTO layer_tiles_probe VALUES ('a', 'Monas', 3, '2024-05-01', "
            "ST_SetSRID(ST_MakePoint(106.8272, -6.1754), 4326)),"
            "('b', 'far', 1, NULL, ST_SetSRID(ST_MakePoint(10, 10), 4326))"
        )
    register(
        Layer(
            name="tiles_probe",
            title="Probe",
            attribution="test",
            licence="CC0",
            geometry_type="Point",
            load=lambda: None,
            table="layer_tiles_probe",
            id_column="pid",
            minzoom=5,
            maxzoom=18,
            attributes={
                "pid": Attribute("text", "id"),
                "label": Attribute("text", "name"),
                "size": Attribute("integer", "size"),
                "seen": Attribute("date", "day"),
            },
        ),
        replace=True,
    )
    try:
        z, x, y = tile_at(106.8272, -6.1754, 12)
        response, layer = fetch(client, "tiles_probe", z, x, y)
        assert response.status_code == 200
        assert [f["properties"] for f in layer["features"]] == [
            {"pid": "a", "label": "Monas", "size": 3, "seen": "2024-05-01"}
        ]
        assert client.get("/tiles/tiles_probe/4/12/8.mvt").status_code == 404  # below minzoom
        doc = client.get("/tiles/tiles_probe.json").json()
        jsonschema.validate(doc, SCHEMA)
        assert doc["vector_layers"][0]["fields"]["size"].startswith("Number")
        assert "tiles_probe" in {entry["id"] for entry in client.get("/tiles").json()["layers"]}
    finally:
        unregister("tiles_probe")


# --------------------------------------------------------------------------- TileJSON, style


def test_tilejson_documents_validate(client, keys):
    names = [entry["id"] for entry in client.get("/tiles", headers=keys["admin"]).json()["layers"]]
    assert {"hexes", "kelurahan", "rw", "reports", "heatmap"} <= set(names)
    for name in names:
        url = "/heatmap.json" if name == "heatmap" else f"/tiles/{name}.json"
        doc = client.get(url, params={"category": "banjir"}, headers=keys["admin"]).json()
        jsonschema.validate(doc, SCHEMA)
        assert (
            doc["tiles"][0].startswith("http://testserver/")
            and "category=banjir" in doc["tiles"][0]
        )
        left, bottom, right, top = doc["bounds"]
        assert left < doc["center"][0] < right and bottom < doc["center"][1] < top
        assert doc["minzoom"] <= doc["center"][2] <= doc["maxzoom"]
        if name != "heatmap":
            (vl,) = doc["vector_layers"]
            assert vl["id"] == name and vl["fields"]
    hexes = client.get("/tiles/hexes.json").json()
    assert set(hexes["vector_layers"][0]["fields"]) >= {
        "count",
        "open",
        "resolved",
        "resolved_share",
        "median_days",
        "within_7d_share",
        "top_category",
    }


def test_catalog_and_style_follow_the_viewer(client, keys):
    public = {e["id"] for e in client.get("/tiles").json()["layers"]}
    assert "reports" not in public and "hexes" in public
    for role in ("public", "admin"):
        style = client.get("/tiles/style.json", headers=keys[role]).json()
        assert style["version"] == 8
        assert ("reports" in style["sources"]) == (role == "admin")
        for layer in style["layers"]:
            if layer["type"] == "background":
                continue
            source = style["sources"][layer["source"]]
            path = source["url"].replace("http://testserver", "")
            doc = client.get(path, headers=keys[role]).json()
            jsonschema.validate(doc, SCHEMA)
            if source["type"] == "vector":
                assert layer["source-layer"] in {v["id"] for v in doc["vector_layers"]}


# --------------------------------------------------------------------------- GDAL reads our tiles


def test_gdal_mvt_driver_reads_a_tile(client, keys, hot, tmp_path):
    z, x, y = tile_at(*hot, 13)
    response, layer = fetch(client, "hexes", z, x, y, headers=keys["admin"])
    path = tmp_path / str(z) / str(x) / f"{y}.pbf"
    path.parent.mkdir(parents=True)
    path.write_bytes(response.content)
    out = subprocess.run(
        ["ogrinfo", "-ro", "-so", "-al", f"MVT:{path}"], capture_output=True, text=True, check=True
    ).stdout
    assert "Layer name: hexes" in out
    assert f"Feature Count: {len(layer['features'])}" in out
    extent_line = next(line for line in out.splitlines() if line.startswith("Extent:"))
    x0, y0, x1, y1 = (
        float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", extent_line)
    )
    box = xy_bounds(TileAddr(z, x, y)).expand(morecantile_buffer(z) + 1)
    assert box.left <= x0 <= x1 <= box.right and box.bottom <= y0 <= y1 <= box.top
    assert "count: Integer" in out or "count: Integer64" in out
    assert math.isfinite(x0)


def test_fast_path_and_route_give_the_same_answer(client, keys, hot):
    """The tile fast path (middleware) and the FastAPI route share one implementation."""
    service = client.app.state.tiles
    z, x, y = tile_at(*hot, 13)
    paths = [
        f"/tiles/hexes/{z}/{x}/{y}.mvt",
        f"/tiles/reports/{z}/{x}/{y}.pbf",
        f"/heatmap/{z}/{x}/{y}.png",
    ]
    answers = {}
    for fast in (True, False):
        service.fast_path = fast
        service.cache.clear()
        try:
            for path in paths:
                r = client.get(path, headers={**keys["admin"], "accept-encoding": "gzip"})
                answers[(fast, path)] = (
                    r.status_code,
                    r.headers["etag"],
                    r.content,
                    r.headers["cache-control"],
                )
        finally:
            service.fast_path = True
    for path in paths:
        assert answers[(True, path)] == answers[(False, path)]
    assert (
        client.get(f"/tiles/reports/{z}/{x}/{y}.mvt").status_code == 403
    )  # errors come from the route


def test_a_tile_service_without_the_app_auth_serves_the_public_only():
    from petalapor.errors import AuthenticationError
    from tiles.viewer import PUBLIC, public_only

    assert public_only({}) == PUBLIC
    for headers in ({"x-api-key": "pl_anything"}, {"authorization": "Bearer pl_anything"}):
        with pytest.raises(AuthenticationError, match="checks no API keys"):
            public_only(headers)
