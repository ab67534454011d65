"""Heatmap tiles, legend and the COG export against the report points."""

from __future__ import annotations

import math
import warnings

import morecantile
import numpy as np
import psycopg
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_validate

from api.app import create_app
from petalapor.cli import main as cli
from tests.databases import key_header, tile_test_database
from tiles.filters import Filters, parse_filters
from tiles.heatmap import Grid, colormap_lut, nice_ceil, png_rgba, smoothed_counts
from tiles.tms import (
    JAKARTA_BOUNDS,
    Box,
    Tile,
    mercator_box,
    pixel_size,
    tile_range,
    to_lonlat,
    xy_bounds,
)
from tiles.viewer import PUBLIC, Viewer

TMS = morecantile.tms.get("WebMercatorQuad")
ADMIN = Viewer("admin")


@pytest.fixture(scope="module")
def tile_db(dsn: str, boundary_set) -> str:
    with tile_test_database(dsn, boundary_set, reports=3000, seed=5) as url:
        yield url


@pytest.fixture(scope="module")
def isolated(tile_db: str) -> tuple[float, float]:
    """One report on Kepulauan Seribu, far from every other report."""
    with psycopg.connect(tile_db) as conn:
        code, lon, lat = conn.execute(
            "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) AS p "
            "FROM boundaries "
            "WHERE level = 'kelurahan' AND kota_code = '3101' ORDER BY code LIMIT 1) s"
        ).fetchone()
        import h3

        cells = [h3.str_to_int(h3.latlng_to_cell(lat, lon, r)) for r in (7, 8, 9, 10, 11)]
        conn.execute(
            "INSERT INTO reports (source, external_id, category, opd, created_at, updated_at, "
            "status, geom, "
            "kelurahan_code, snap_method, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11) VALUES ('test', "
            "'isolated-1', "
            "'sampah', 'DLH', '2024-06-01T10:00:00+07', '2024-06-01T10:00:00+07', 'menunggu', "
            "ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, 'inside', %s, %s, %s, %s, %s)",
            (lon, lat, code, *cells),
        )
    return lon, lat


@pytest.fixture(scope="module")
def client(tile_db: str, isolated, settings):
    with TestClient(create_app(settings, dsn=tile_db)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(tile_db: str) -> dict[str, str]:
    return key_header(tile_db, "admin", name="heatmap test")


def read_png(body: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with MemoryFile(body) as mem, mem.open() as src:
            assert src.driver == "PNG"
            return src.read()


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    t = TMS.tile(lon, lat, z)
    return z, t.x, t.y


def busiest(tile_db: str) -> tuple[float, float]:
    with psycopg.connect(tile_db) as conn:
        return conn.execute(
            "SELECT avg(ST_X(geom)), avg(ST_Y(geom)) FROM reports WHERE h3_r8 = "
            "(SELECT h3_r8 FROM reports GROUP BY 1 ORDER BY count(*) DESC LIMIT 1)"
        ).fetchone()


# --------------------------------------------------------------------------- pure pieces


def test_png_encoder_round_trips():
    rgba = np.random.default_rng(1).integers(0, 256, size=(256, 256, 4), dtype=np.uint8)
    assert np.array_equal(read_png(png_rgba(rgba)), rgba.transpose(2, 0, 1))


def test_kernel_keeps_the_mass_away_from_edges():
    rng = np.random.default_rng(2)
    grid = Grid(cell=10.0, col0=0, row0=0, ncols=200, nrows=200)
    x = -20037508.342789244 + rng.uniform(800, 1200, 500)
    y = 20037508.342789244 - rng.uniform(800, 1200, 500)
    counts = smoothed_counts(x, y, grid, sigma_cells=8.0)
    assert counts.sum() == pytest.approx(500, rel=1e-6)


def test_colour_ramp_is_the_perceptual_table():
    lut = colormap_lut("magma")
    assert (
        lut.shape == (256, 3) and tuple(lut[0]) == (0, 0, 3) and tuple(lut[-1]) == (251, 252, 191)
    )
    luminance = lut @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > -1.0)  # monotone brightness
    assert [nice_ceil(v) for v in (0.7, 3.1, 24, 250, 251)] == [1.0, 5.0, 25.0, 250.0, 500.0]


# --------------------------------------------------------------------------- tiles


def test_heatmap_tile_is_a_256_rgba_png_with_transparent_background(client, tile_db):
    z, x, y = tile_of(*busiest(tile_db), 12)
    response = client.get(f"/heatmap/{z}/{x}/{y}.png")
    assert response.status_code == 200
    assert (
        response.headers["content-type"] == "image/png"
        and "content-encoding" not in response.headers
    )
    assert response.headers["etag"] and response.headers["cache-control"].startswith("public")
    bands = read_png(response.content)
    assert bands.shape == (4, 256, 256) and bands.dtype == np.uint8
    alpha = bands[3]
    assert alpha.max() > 0 and (alpha == 0).any()
    assert not bands[:3, alpha == 0].any()
    assert (
        client.get(
            f"/heatmap/{z}/{x}/{y}.png", headers={"if-none-match": response.headers["etag"]}
        ).status_code
        == 304
    )


def test_tiles_without_reports_are_204(client):
    assert client.get("/heatmap/12/0/0.png").status_code == 204
    assert client.get("/heatmap/3/0/0.png").status_code == 404  # below the heatmap's zooms
    assert client.get("/heatmap/12/0/0.png?category=nope").status_code == 400


def test_density_integrates_to_the_number_of_reports(client, tile_db):
    """Summed over the tiles covering Jakarta, density x ground pixel area = reports counted."""
    service = client.app.state.tiles
    z = 10
    box = mercator_box(Box(*JAKARTA_BOUNDS)).expand(5000)
    x0, x1, y0, y1 = tile_range(box, z)
    total = 0.0
    with service.pool.connection() as conn:
        for tx in range(x0, x1 + 1):
            for ty in range(y0, y1 + 1):
                density = service.heatmap.density(conn, Tile(z, tx, ty), Filters(), ADMIN)
                b = xy_bounds(Tile(z, tx, ty))
                lat = to_lonlat(0.0, (b.bottom + b.top) / 2)[1]
                ground_px = pixel_size(z) * math.cos(math.radians(lat))
                total += density.sum() * (ground_px / 1000) ** 2
    with psycopg.connect(tile_db) as conn:
        count = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
    assert total == pytest.approx(count, rel=0.02)


def test_neighbouring_tiles_meet_without_a_seam(client, tile_db):
    service = client.app.state.tiles
    z, x, y = tile_of(*busiest(tile_db), 13)
    with service.pool.connection() as conn:
        left = service.heatmap.density(conn, Tile(z, x, y), Filters(), ADMIN)
        right = service.heatmap.density(conn, Tile(z, x + 1, y), Filters(), ADMIN)
    seam = np.abs(left[:, -1] - right[:, 0])
    inside = np.maximum(np.abs(left[:, -1] - left[:, -2]), np.abs(right[:, 1] - right[:, 0]))
    assert left.max() > 0
    assert np.all(seam <= 2 * inside + 1e-9 + 1e-3 * left.max())


def test_filters_change_the_heatmap(client, tile_db):
    service = client.app.state.tiles
    z, x, y = tile_of(*busiest(tile_db), 12)
    everything = client.get(f"/heatmap/{z}/{x}/{y}.png")
    banjir = client.get(f"/heatmap/{z}/{x}/{y}.png", params={"category": "banjir"})
    assert banjir.status_code in (200, 204) and banjir.headers["etag"] != everything.headers["etag"]
    with service.pool.connection() as conn:
        d_all = service.heatmap.density(conn, Tile(z, x, y), Filters(), PUBLIC)
        d_one = service.heatmap.density(
            conn, Tile(z, x, y), parse_filters({"category": ["banjir"]}), PUBLIC
        )
    assert 0 < d_one.sum() < d_all.sum()


def test_public_heatmap_hides_an_isolated_report(client, admin, isolated):
    z, x, y = tile_of(*isolated, 13)
    assert client.get(f"/heatmap/{z}/{x}/{y}.png").status_code == 204
    private = client.get(f"/heatmap/{z}/{x}/{y}.png", headers=admin)
    assert private.status_code == 200
    assert private.headers["cache-control"].startswith("private")
    assert read_png(private.content)[3].max() > 0


# --------------------------------------------------------------------------- legend and TileJSON


def test_legend_json_and_png(client):
    legend = client.get("/heatmap/legend").json()
    assert legend["unit"] == "reports per km²" and legend["colormap"] == "magma"
    values = [s["value"] for s in legend["stops"]]
    assert values[0] == 0 and values[-1] == legend["domain"][1] and values == sorted(values)
    assert all(len(s["color"]) == 7 and s["color"].startswith("#") for s in legend["stops"])
    assert legend["transparent_below"] > 0 and legend["scope"] == "public"
    bar = client.get("/heatmap/legend.png")
    assert bar.headers["content-type"] == "image/png"
    assert read_png(bar.content).shape == (4, 16, 256)
    doc = client.get("/heatmap.json").json()
    assert doc["tiles"][0].endswith("/heatmap/{z}/{x}/{y}.png") and doc["legend"].endswith(
        "/heatmap/legend"
    )


# --------------------------------------------------------------------------- COG export


def test_export_heatmap_writes_a_valid_cog(tile_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", tile_db)
    out = tmp_path / "heat.tif"
    assert cli(["export", "heatmap", "--out", str(out), "--all", "--resolution", "100"]) == 0
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    with psycopg.connect(tile_db) as conn:
        total = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        banjir = conn.execute(
            "SELECT count(*) FROM reports WHERE category = 'banjir' AND public"
        ).fetchone()[0]
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32748 and src.dtypes == ("float32",) and src.overviews(1)
        assert src.tags()["UNITS"] == "reports per km2"
        data = src.read(1)
        mass = data.sum() * (src.res[0] * src.res[1] / 1e6)
    assert mass == pytest.approx(total, rel=0.01)
    filtered = tmp_path / "banjir.tif"
    assert (
        cli(
            [
                "export",
                "heatmap",
                "--out",
                str(filtered),
                "--category",
                "banjir",
                "--resolution",
                "100",
            ]
        )
        == 0
    )
    with rasterio.open(filtered) as src:
        fmass = src.read(1).sum() * (src.res[0] * src.res[1] / 1e6)
    assert 0 < fmass <= banjir * 1.01  # public scope: hidden reports out, sparse areas masked
    assert cli(["export", "heatmap", "--out", str(filtered), "--category", "nope"]) == 2
    capsys.readouterr()
