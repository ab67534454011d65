"""The tile cache: LRU budget, disk tier, exact invalidation from report changes, the fast path."""

from __future__ import annotations

import time

import h3
import mapbox_vector_tile
import morecantile
import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

import tiles.cache as tile_cache
from api.app import create_app
from tests.databases import key_header, tile_test_database
from tiles.cache import CachedTile, TileCache, TileKey
from tiles.footprint import hex_polygon
from tiles.synthetic import RwPolygons, copy_reports, synthetic_reports
from tiles.tms import Tile, xy_bounds

TMS = morecantile.tms.get("WebMercatorQuad")
REPORT_LAYERS = ("hexes", "kelurahan", "rw", "reports", "heatmap")


def tile(
    body: bytes = b"x" * 2000, media_type: str = "application/vnd.mapbox-vector-tile"
) -> CachedTile:
    return CachedTile.build(body, media_type)


# --------------------------------------------------------------------------- the cache alone


def test_lru_keeps_within_its_byte_budget():
    one = tile(b"a" * 5000)
    cache = TileCache(max_bytes=3 * one.nbytes + 10)
    keys = [TileKey("hexes", 12, i, 0) for i in range(5)]
    for key in keys[:3]:
        cache.put(key, one)
    assert cache.get(keys[0]) is one  # now the most recent
    cache.put(keys[3], one)
    assert cache.nbytes <= cache.max_bytes and len(cache) == 3
    assert cache.get(keys[1]) is None  # the least recently used went first
    assert cache.get(keys[0]) is one and cache.get(keys[3]) is one
    assert cache.stats()["hits"] >= 3


def test_etag_is_a_content_hash_and_gzip_only_for_larger_bodies():
    a, b = tile(b"same" * 400), tile(b"same" * 400)
    assert a.etag == b.etag and a.etag.startswith('"')
    assert tile(b"other" * 400).etag != a.etag
    assert a.gzip is not None and tile(b"small").gzip is None
    assert CachedTile.build(b"", "image/png").empty


def test_a_render_older_than_an_invalidation_is_not_stored():
    cache = TileCache()
    key = TileKey("hexes", 14, 1, 1)
    generation = cache.generation
    cache.invalidate("hexes", 14, (0, 5, 0, 5))
    assert cache.put(key, tile(), generation=generation) is False
    assert cache.get(key) is None
    assert cache.put(key, tile(), generation=cache.generation) is True


def test_invalidate_drops_every_variant_in_range_that_matches():
    cache = TileCache()
    for x in range(4):
        for query, role in [("", "public"), ("category=banjir", "public"), ("", "admin")]:
            cache.put(TileKey("hexes", 13, x, 7, query, role), tile())
    cache.put(TileKey("rw", 13, 1, 7), tile())
    dropped = cache.invalidate("hexes", 13, (1, 2, 7, 7))
    assert dropped == 6
    left = {(k.layer, k.x) for k in cache.keys()}
    assert left == {("hexes", 0), ("hexes", 3), ("rw", 1)}
    assert cache.invalidate("hexes", 13, (0, 3, 7, 7), lambda k: k.role == "admin") == 2
    assert cache.invalidate_layers(["hexes"]) == 4 and {k.layer for k in cache.keys()} == {"rw"}


def test_disk_tier_survives_a_new_process_and_is_invalidated(tmp_path):
    key = TileKey("kelurahan", 12, 3264, 2118, "status=selesai", "public")
    first = TileCache(max_bytes=0, directory=tmp_path)
    first.put(key, tile(b"disk" * 600))
    second = TileCache(max_bytes=1 << 20, directory=tmp_path)
    found = second.get(key)
    assert found is not None and found.body == b"disk" * 600 and found.gzip is not None
    assert second.invalidate("kelurahan", 12, (3264, 3264, 2118, 2118)) >= 1
    assert TileCache(max_bytes=0, directory=tmp_path).get(key) is None


# --------------------------------------------------------------------------- with the app


@pytest.fixture(scope="module")
def tile_db(dsn: str, boundary_set) -> str:
    with tile_test_database(dsn, boundary_set, reports=3000, seed=23) as url:
        yield url


@pytest.fixture(scope="module")
def client(tile_db: str, settings):
    with TestClient(create_app(settings, dsn=tile_db)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(tile_db: str) -> dict[str, str]:
    return key_header(tile_db, "admin", name="cache test")


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the tile listener")
        time.sleep(0.05)


def report_row(tile_db: str, where: str) -> dict:
    with psycopg.connect(tile_db) as conn:
        cur = conn.execute(
            "SELECT id::text, ST_X(geom), ST_Y(geom), status, h3_r7, h3_r8, h3_r9, h3_r10, "
            "h3_r11, rw_code, "
            f"kelurahan_code FROM reports WHERE {where} ORDER BY external_id LIMIT 1"
        )
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row, strict=True))


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    t = TMS.tile(lon, lat, z)
    return z, t.x, t.y


def url(layer: str, z: int, x: int, y: int) -> str:
    if layer == "heatmap":
        return f"/heatmap/{z}/{x}/{y}.png"
    return f"/tiles/{layer}/{z}/{x}/{y}.mvt"


def zooms(layer: str) -> range:
    return {"rw": range(10, 17), "reports": range(10, 17), "heatmap": range(10, 17)}.get(
        layer, range(9, 17)
    )


def test_status_change_invalidates_exactly_the_tiles_showing_the_report(client, admin, tile_db):
    service = client.app.state.tiles
    row = report_row(tile_db, "status = 'proses' AND public AND rw_code IS NOT NULL")
    lon, lat = row["st_x"], row["st_y"]
    far = report_row(
        tile_db,
        f"ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint({lon}, {lat}), "
        "4326)::geography) > 15000",
    )
    flon, flat = far["st_x"], far["st_y"]
    service.process_changes()  # nothing pending from earlier tests
    service.cache.clear()
    near_keys, far_keys, spared = set(), set(), set()
    for layer in REPORT_LAYERS:
        headers = admin if layer == "reports" else {}
        for z in zooms(layer):
            for point, bucket in (((lon, lat), near_keys), ((flon, flat), far_keys)):
                z_, x, y = tile_of(*point, z)
                assert client.get(url(layer, z_, x, y), headers=headers).status_code in (200, 204)
                bucket.add((layer, z_, x, y))
    # RW and kelurahan tiles show the report's numbers when the polygon it is counted in reaches
    # the tile (plus buffer), wherever the point lies; that is decided here in SQL, independently
    areas = {k for k in near_keys | far_keys if k[0] in ("rw", "kelurahan")}
    shows = {k for k in areas if _polygon_reaches(tile_db, row, k)}
    hidden = areas - shows
    near_keys -= areas
    # hexes, clusters and the heatmap reach under 3 km: tiles 5 km away cannot show the report
    far_keys = {k for k in far_keys - areas - near_keys if _distance(lon, lat, k) > 5000}
    # hexes: at z16 a neighbour tile that the report's r11 hex does not reach must be kept
    z, x, y = tile_of(lon, lat, 16)
    cell = int(row["h3_r11"])
    for dx, dy in ((-2, 0), (2, 0), (0, -2), (0, 2)):
        box = xy_bounds(Tile(z, x + dx, y + dy))
        if not hex_polygon(cell).intersects(shapely.box(*box)):
            assert client.get(url("hexes", z, x + dx, y + dy)).status_code in (200, 204)
            spared.add(("hexes", z, x + dx, y + dy))
    assert spared
    cached = {(k.layer, k.z, k.x, k.y) for k in service.cache.keys()}
    for layer, z, x, y in (
        near_keys | far_keys | spared
    ) - cached:  # a render raced an invalidation
        client.get(url(layer, z, x, y), headers=admin if layer == "reports" else {})
    cached = {(k.layer, k.z, k.x, k.y) for k in service.cache.keys()}
    assert near_keys | far_keys | spared | areas <= cached

    with psycopg.connect(tile_db) as conn:
        conn.execute(
            "UPDATE reports SET status = 'selesai', resolved_at = created_at + interval '2 days', "
            "updated_at = now() WHERE id = %s",
            (row["id"],),
        )
    first = service.cache_key("hexes", Tile(*tile_of(lon, lat, 15)), _empty(), _public_viewer())
    assert first in service.cache
    wait_until(lambda: first not in service.cache)
    # the listener drops layer after layer: wait until the batch is through
    expected = near_keys | shows
    wait_until(lambda: not expected & {(k.layer, k.z, k.x, k.y) for k in service.cache.keys()})
    time.sleep(0.2)  # anything dropped too much would be gone by now

    remaining = {(k.layer, k.z, k.x, k.y) for k in service.cache.keys()}
    dropped = cached - remaining
    assert near_keys <= dropped  # every tile containing the report ...
    assert shows <= dropped  # ... every tile its RW/kelurahan polygon reaches ...
    assert not (far_keys | spared | hidden) & dropped  # ... and never a tile that cannot show it
    assert far_keys and shows and hidden
    assert spared <= remaining

    # the re-rendered tile shows the change
    z, x, y = tile_of(lon, lat, 15)
    hexes = mapbox_vector_tile.decode(client.get(url("hexes", z, x, y), headers=admin).content)[
        "hexes"
    ]
    (feature,) = [f for f in hexes["features"] if f["id"] == int(row["h3_r11"])]
    with psycopg.connect(tile_db) as conn:
        resolved = conn.execute(
            "SELECT count(*) FROM reports WHERE h3_r11 = %s AND status = 'selesai'",
            (row["h3_r11"],),
        ).fetchone()[0]
    assert feature["properties"]["resolved"] == resolved >= 1


def test_a_new_report_in_a_new_hex_appears_after_the_notification(client, admin, tile_db):
    service = client.app.state.tiles
    lon, lat = 106.84567, -6.17123  # a fixed point in central Jakarta
    cells = {r: h3.str_to_int(h3.latlng_to_cell(lat, lon, r)) for r in (7, 8, 9, 10, 11)}
    z, x, y = tile_of(lon, lat, 16)
    before = client.get(url("hexes", z, x, y), headers=admin)
    count_before = _hex_count(before.content, cells[11])
    with psycopg.connect(tile_db) as conn:
        conn.execute(
            "INSERT INTO reports (source, external_id, category, opd, created_at, updated_at, "
            "status, geom, "
            "rw_code, kelurahan_code, snap_method, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11) "
            "VALUES ('test', 'cache-new-1', 'sampah', 'DLH', now(), now(), 'menunggu', "
            "ST_SetSRID(ST_MakePoint(%s, %s), 4326), NULL, NULL, 'outside', %s, %s, %s, %s, %s)",
            (lon, lat, *cells.values()),
        )
    key = service.cache_key("hexes", Tile(z, x, y), _empty(), _admin_viewer())
    wait_until(lambda: key not in service.cache)
    after = client.get(url("hexes", z, x, y), headers=admin)
    assert _hex_count(after.content, cells[11]) == count_before + 1


def _distance(lon: float, lat: float, key: tuple) -> float:
    """EPSG:3857 metres from the point to the tile."""
    _, z, x, y = key
    px, py = TMS.xy(lon, lat)
    box = xy_bounds(Tile(z, x, y))
    return max(box.left - px, 0, px - box.right) + max(box.bottom - py, 0, py - box.top)


def _polygon_reaches(tile_db: str, row: dict, key: tuple) -> bool:
    """Does the report's RW/kelurahan polygon meet the tile grown by the MVT buffer?"""
    layer, z, x, y = key
    box = xy_bounds(Tile(z, x, y))
    grow = (box.right - box.left) * 64 / 4096
    code = row["rw_code"] if layer == "rw" else row["kelurahan_code"]
    with psycopg.connect(tile_db) as conn:
        return conn.execute(
            "SELECT ST_Intersects(ST_Transform(geom, 3857), ST_MakeEnvelope(%s, %s, %s, %s, 3857)) "
            "FROM boundaries WHERE level = %s AND code = %s",
            (box.left - grow, box.bottom - grow, box.right + grow, box.top + grow, layer, code),
        ).fetchone()[0]


def _hex_count(body: bytes, cell: int) -> int:
    if not body:
        return 0
    features = mapbox_vector_tile.decode(body).get("hexes", {"features": []})["features"]
    return sum(f["properties"]["count"] for f in features if f["id"] == cell)


def _empty():
    from tiles.filters import Filters

    return Filters()


def _admin_viewer():
    from tiles.viewer import Viewer

    return Viewer("admin")


def _public_viewer():
    from tiles.viewer import PUBLIC

    return PUBLIC


def test_invalidate_point_hook_drops_the_tiles_at_that_point(client, tile_db):
    service = client.app.state.tiles
    row = report_row(tile_db, "public")
    z, x, y = tile_of(row["st_x"], row["st_y"], 13)
    client.get(url("hexes", z, x, y))
    client.get(url("kelurahan", z, x, y))
    keys = [k for k in service.cache.keys() if (k.z, k.x, k.y) == (z, x, y)]
    assert {k.layer for k in keys} >= {"hexes", "kelurahan"}
    tile_cache.invalidate_point(row["st_x"], row["st_y"])
    assert not any(k in service.cache for k in keys)


def test_bulk_import_drops_report_tiles_but_not_context_layers(client, tile_db):
    service = client.app.state.tiles
    with psycopg.connect(tile_db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS layer_cache_probe (id text PRIMARY KEY, geom "
            "geometry(Point, 4326))"
        )
    from layers.registry import Attribute, Layer, register, unregister

    register(
        Layer(
            name="cache_probe",
            title="probe",
            attribution="test",
            licence="CC0",
            geometry_type="Point",
            load=lambda: None,
            table="layer_cache_probe",
            attributes={"id": Attribute("text")},
        ),
        replace=True,
    )
    try:
        z, x, y = tile_of(106.8272, -6.1754, 12)
        client.get(url("hexes", z, x, y))
        client.get(url("cache_probe", z, x, y))
        assert {"hexes", "cache_probe"} <= {k.layer for k in service.cache.keys()}
        with psycopg.connect(tile_db) as conn:
            frame = synthetic_reports(RwPolygons.load(conn), 10_050, seed=99)
            frame["external_id"] = "bulk-" + frame["external_id"]
            copy_reports(conn, frame)
            assert (
                conn.execute("SELECT count(*) FROM tile_changes WHERE kind = 'full'").fetchone()[0]
                == 1
            )
        wait_until(lambda: not any(k.layer == "hexes" for k in service.cache.keys()), timeout=60)
        assert any(k.layer == "cache_probe" for k in service.cache.keys())
        with psycopg.connect(tile_db) as conn:
            total = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
            rolled = conn.execute(
                "SELECT sum(count) FROM tile_hex_stats WHERE scope = 'all' AND res = 9"
            ).fetchone()[0]
        assert rolled == total
    finally:
        unregister("cache_probe")


def test_middleware_answers_hits_without_the_route(client, monkeypatch):
    service = client.app.state.tiles
    z, x, y = tile_of(106.8272, -6.1754, 13)
    first = client.get(url("hexes", z, x, y), headers={"accept-encoding": "gzip"})
    assert first.status_code in (200, 204)

    def broken(*args, **kwargs):
        raise AssertionError("the route should not run on a cache hit")

    monkeypatch.setattr(service, "vector_tile", broken)
    again = client.get(url("hexes", z, x, y), headers={"accept-encoding": "gzip"})
    assert again.status_code == first.status_code and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["cache-control"] == first.headers["cache-control"]
    assert (
        client.get(
            url("hexes", z, x, y), headers={"if-none-match": first.headers["etag"]}
        ).status_code
        == 304
    )
    head = client.head(url("hexes", z, x, y))
    assert head.status_code == first.status_code and head.content == b""
    # a bad parameter still reaches the route and its 400
    assert client.get(url("hexes", z, x, y) + "?category=nope").status_code == 400


@pytest.mark.parametrize("layer", ["hexes", "kelurahan"])
def test_changes_leave_filtered_and_role_variants_consistent(client, admin, tile_db, layer):
    """Every variant of a touched tile (filters, roles) goes; an untouched zoom bucket stays."""
    service = client.app.state.tiles
    row = report_row(tile_db, "status = 'menunggu' AND public")
    z, x, y = tile_of(row["st_x"], row["st_y"], 14)
    for params, headers in (({}, {}), ({"status": "menunggu"}, {}), ({}, admin)):
        client.get(url(layer, z, x, y), params=params, headers=headers)
    variants = [k for k in service.cache.keys() if (k.layer, k.z, k.x, k.y) == (layer, z, x, y)]
    assert len(variants) == 3
    with psycopg.connect(tile_db) as conn:
        conn.execute("UPDATE reports SET status = 'disposisi' WHERE id = %s", (row["id"],))
    wait_until(lambda: not any(k in service.cache for k in variants))


def test_reports_with_invalid_h3_cells_do_not_break_the_refresh(client, tile_db):
    service = client.app.state.tiles
    with psycopg.connect(tile_db) as conn:
        conn.execute(
            "INSERT INTO reports (source, external_id, category, opd, created_at, updated_at, "
            "status, geom, "
            "snap_method, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11) VALUES ('test', 'bad-h3', "
            "'sampah', 'DLH', "
            "now(), now(), 'menunggu', ST_SetSRID(ST_MakePoint(106.8, -6.2), 4326), 'outside', "
            "0, 0, 0, 0, 0)"
        )
    batch = service.process_changes()  # the listener may have been first: either way no error
    assert batch.full is False
    with psycopg.connect(tile_db) as conn:
        assert conn.execute("SELECT count(*) FROM tile_hex_cells WHERE h3 = 0").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM tile_changes").fetchone()[0] == 0


def test_incremental_hex_refresh_equals_a_full_rebuild(client, tile_db):
    """Changed cells find their reports through the cell envelope (no H3 index, 0009)."""
    from gis.hexes import RESOLUTIONS, points_to_cells
    from tiles.rollup import LOCK_KEY, ensure_cells, refresh_hex_stats

    ctx = client.app.state.tiles.ctx
    snapshot = (  # the mean position sums in scan order: equal to the millimetre
        "SELECT scope, res, h3, h3_hex, count, open, resolved, resolved_share, median_days, "
        "within_7d_share, top_category, round(cx::numeric, 3), round(cy::numeric, 3), "
        "ST_AsEWKB(geom) FROM tile_hex_stats ORDER BY scope, res, h3"
    )
    with psycopg.connect(tile_db) as conn, conn.transaction(force_rollback=True):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("ALTER TABLE reports DISABLE TRIGGER USER")  # this test refreshes itself
        picked = conn.execute(
            "SELECT id, ST_X(geom), ST_Y(geom), h3_r7, h3_r8, h3_r9, h3_r10, h3_r11 "
            "FROM reports ORDER BY id LIMIT 40"
        ).fetchall()
        touched: dict[int, set[int]] = {r: set() for r in RESOLUTIONS}
        for row in picked:
            for i, res in enumerate(RESOLUTIONS):
                touched[res].add(row[3 + i])
        # half change status, half move about 1.5 km east (other cells at every resolution)
        ids = [r[0] for r in picked]
        conn.execute(
            "UPDATE reports SET status = 'selesai', resolved_at = created_at + interval '2 days' "
            "WHERE id = ANY(%s)",
            (ids[:20],),
        )
        for row in picked[20:]:
            lon, lat = row[1] + 0.0135, row[2]
            cells = points_to_cells(np.array([lon]), np.array([lat]))
            for res in RESOLUTIONS:
                touched[res].add(int(cells[res][0]))
            conn.execute(
                "UPDATE reports SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4326), h3_r7 = %s, "
                "h3_r8 = %s, h3_r9 = %s, h3_r10 = %s, h3_r11 = %s WHERE id = %s",
                (lon, lat, *(int(cells[r][0]) for r in RESOLUTIONS), row[0]),
            )
        ensure_cells(conn, touched)
        refresh_hex_stats(conn, ctx, touched)
        incremental = conn.execute(snapshot).fetchall()
        refresh_hex_stats(conn, ctx)
        assert conn.execute(snapshot).fetchall() == incremental
        assert len(incremental) > 100


def test_change_messages_carry_the_changed_layers():
    from tiles.rollup import ChangeBatch, parse_message

    (payload,) = ChangeBatch(rows=1, layers=["hotspots", "jakwifi"]).messages("srv")
    assert parse_message(payload).layers == ["hotspots", "jakwifi"]
    assert parse_message('{"src":"old","full":false,"b":false,"fp":[]}').layers == []


@pytest.mark.parametrize(
    ("layer", "change"),
    [
        ("jakwifi", "UPDATE layer_jakwifi SET name = name WHERE false"),
        ("hotspots", "DELETE FROM analysis_hotspots"),
        ("ispu_stations", "UPDATE layer_ispu_stations SET name = name"),
    ],
)
def test_a_changed_context_layer_drops_its_cached_tiles(client, tile_db, layer, change):
    """Any statement on the layer's table (import, hotspots --store, psql) reaches the cache."""
    service = client.app.state.tiles
    z, x, y = tile_of(106.8272, -6.1754, 12)
    assert client.get(url(layer, z, x, y)).status_code in (200, 204)
    assert client.get(url("hexes", z, x, y)).status_code in (200, 204)
    assert {layer, "hexes"} <= {k.layer for k in service.cache.keys()}
    with psycopg.connect(tile_db) as conn:
        conn.execute(change)
    wait_until(lambda: not any(k.layer == layer for k in service.cache.keys()))
    assert any(k.layer == "hexes" for k in service.cache.keys())  # reports did not change


def test_the_served_jakwifi_attribution_follows_the_stored_import(client, tile_db):
    """A real export imported by another process: TileJSON stops saying SYNTHETIC."""
    from layers import registry
    from layers.jakwifi import jakwifi_layer

    def attribution() -> str:
        return client.get("/tiles/jakwifi.json").json()["attribution"]

    assert "SYNTHETIC" in attribution()
    with psycopg.connect(tile_db) as conn:
        before = conn.execute(
            "SELECT id FROM layer_imports WHERE layer = 'jakwifi' AND is_current"
        ).fetchone()
    try:
        with psycopg.connect(tile_db) as conn:  # what db.layers.import_jakwifi writes
            conn.execute("UPDATE layer_imports SET is_current = false WHERE layer = 'jakwifi'")
            conn.execute(
                "INSERT INTO layer_imports (layer, source_file, synthetic, is_current) "
                "VALUES ('jakwifi', 'jakwifi_export.csv', false, true)"
            )
            conn.execute("DELETE FROM layer_jakwifi")
        wait_until(lambda: "Satu Data Jakarta" in attribution())
        assert "Satu Data Jakarta" in client.get("/layers/jakwifi").json()["attribution"]
    finally:
        with psycopg.connect(tile_db) as conn:
            conn.execute("DELETE FROM layer_imports WHERE source_file = 'jakwifi_export.csv'")
            if before:
                conn.execute("UPDATE layer_imports SET is_current = true WHERE id = %s", before)
        registry.register(jakwifi_layer(), replace=True)
