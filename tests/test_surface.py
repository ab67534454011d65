"""ISPU surface: IDW maths, the COG (validated), point sampling and rio-tiler tiles."""

from __future__ import annotations

import struct
import warnings

import morecantile
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_validate

from layers import registry
from layers.ispu import CATEGORIES, load_stations, read_ispu_csv
from layers.surface import (
    ISPU_COLORMAP,
    NODATA,
    FlatSurfaceWarning,
    idw,
    idw_at_points,
    period_bounds,
    render_tile,
    sample,
    station_values,
    write_surface,
)
from petalapor.errors import DataError, InvalidParameterError, NotFoundError

TMS = morecantile.tms.get("WebMercatorQuad")
PALETTE = {c.rgba for c in CATEGORIES}
COAST_TILE = TMS.tile(106.85, -6.11, 12)  # Jakarta Utara shore and the bay


@pytest.fixture(scope="module")
def readings(shared_data):
    return read_ispu_csv(shared_data / "ispu" / "ispu_dki_all.csv").readings


@pytest.fixture(scope="module")
def stations(shared_data):
    return load_stations(shared_data / "ispu" / "stations.csv")


@pytest.fixture(scope="module")
def city(boundary_set):
    return boundary_set.frames["kelurahan"]


@pytest.fixture(scope="module")
def month(readings, stations, city, tmp_path_factory):
    """The February 2025 surface: the default usage, a monthly mean per station."""
    path = tmp_path_factory.mktemp("surface") / "ispu_2025-02.tif"
    return write_surface(readings, stations, city, path, period="2025-02")


@pytest.fixture(scope="module")
def spread(stations, city, tmp_path_factory):
    """A surface from made-up station values spanning four categories."""
    days = pd.to_datetime(["2024-01-01"] * 4)
    fake = pd.DataFrame(
        {
            "date": days,
            "station_id": ["DKI1", "DKI2", "DKI3", "DKI5"],
            "ispu": [30.0, 150.0, 250.0, 400.0],
        }
    )
    path = tmp_path_factory.mktemp("surface") / "spread.tif"
    return write_surface(fake, stations, city, path, period="2024-01-01", cell_size=200)


def _decode(png: bytes) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(width, height, bit depth, colour type) from the IHDR chunk, and the pixels."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as mem, mem.open() as ds:
            return (width, height, depth, colour), ds.read()


# --------------------------------------------------------------------------- IDW


def test_idw_exact_at_stations_and_between():
    known = np.array([[0.0, 0.0], [100.0, 0.0]])
    values = np.array([10.0, 30.0])
    query = np.array([[0.0, 0.0], [100.0, 0.0], [50.0, 0.0], [25.0, 0.0]])
    got = idw(known, values, query, power=2)
    assert got[:3].tolist() == [10.0, 30.0, 20.0]
    assert got[3] == pytest.approx((10 / 25**2 + 30 / 75**2) / (1 / 25**2 + 1 / 75**2))
    assert idw(known, values, query[3:], power=1)[0] == pytest.approx(
        (10 / 25 + 30 / 75) / (1 / 25 + 1 / 75)
    )
    assert idw(known[:1], values[:1], query).tolist() == [10.0] * 4  # one station: flat
    with pytest.raises(InvalidParameterError):
        idw(known, values, query, power=0)


def test_period_bounds():
    assert [str(t.date()) for t in period_bounds("2024-02")] == ["2024-02-01", "2024-02-29"]
    assert [str(t.date()) for t in period_bounds("2024-02-05")] == ["2024-02-05", "2024-02-05"]
    assert [str(t.date()) for t in period_bounds(("2024-01-30", "2024-02-02"))] == [
        "2024-01-30",
        "2024-02-02",
    ]
    with pytest.raises(InvalidParameterError):
        period_bounds(("2024-02-02", "2024-01-30"))


def test_station_values_are_period_means(readings, stations):
    st = station_values(readings, stations, "2025-02")
    sel = readings[(readings["date"] >= "2025-02-01") & (readings["date"] <= "2025-02-28")]
    expected = sel.groupby("station_id")["ispu"].mean()
    assert st.set_index("station_id")["value"].to_dict() == pytest.approx(expected.to_dict())
    assert st["n_days"].sum() == len(sel)


# --------------------------------------------------------------------------- the COG


def test_cog_is_valid_and_described(month):
    valid, errors, _ = cog_validate(str(month.path))
    assert valid, errors
    with rasterio.open(month.path) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.nodata == NODATA and ds.dtypes[0] == "float32"
        assert ds.res == (100.0, 100.0)
        tags = ds.tags()
        assert tags["PERIOD_START"] == "2025-02-01" and tags["PERIOD_END"] == "2025-02-28"
        data = ds.read(1, masked=True)
    assert month.n_stations >= 2
    lo, hi = month.stations["value"].min(), month.stations["value"].max()
    assert lo - 1e-3 <= data.min() and data.max() <= hi + 1e-3  # IDW stays within the station range
    assert 0.2 < data.mask.mean() < 0.8  # the bay and the land outside DKI are nodata


def test_surface_is_clipped_to_the_mainland(month, city):
    bay, seribu, bogor = (106.80, -6.05), (106.57, -5.80), (106.80, -6.45)
    lon, lat = zip(bay, seribu, bogor, strict=True)
    assert np.isnan(sample(month.path, lon, lat)).all()
    inside = city[city["kota_code"] != "3101"].representative_point()
    values = sample(month.path, inside.x.to_numpy(), inside.y.to_numpy())
    assert np.isfinite(values).mean() > 0.95  # a few slivers have no cell centre inside


def test_sample_matches_idw_at_points(month, readings, stations, city):
    pts = city[city["kota_code"] != "3101"].representative_point().iloc[::10]
    from_cog = sample(month.path, pts.x.to_numpy(), pts.y.to_numpy())
    direct = idw_at_points(readings, stations, pts.x.to_numpy(), pts.y.to_numpy(), "2025-02-14")
    ok = np.isfinite(from_cog)
    assert ok.sum() > 10
    np.testing.assert_allclose(from_cog[ok], direct[ok], atol=2.0)  # 100 m cells
    at_station = sample(month.path, stations.geometry.x, stations.geometry.y)
    expected = month.stations.set_index("station_id")["value"]
    got = pd.Series(at_station, index=stations["station_id"]).reindex(expected.index)
    np.testing.assert_allclose(got, expected, atol=1.5)


def test_idw_at_points_uses_each_points_own_period(readings, stations):
    lon, lat = [106.82, 106.82, 106.82], [-6.20, -6.20, -6.20]
    day = idw_at_points(
        readings, stations, lon, lat, ["2025-02-14", "2010-01-01", "1990-01-01"], freq="D"
    )
    for value, date in zip(day[:2], ["2025-02-14", "2010-01-01"], strict=True):
        assert (
            value == readings.loc[readings["date"] == date, "ispu"].iloc[0]
        )  # one station a day: flat
    assert np.isnan(day[2])


def test_one_day_surface_is_flat_and_warns(readings, stations, city, tmp_path):
    with pytest.warns(FlatSurfaceWarning):
        info = write_surface(
            readings, stations, city, tmp_path / "day.tif", period="2025-02-14", cell_size=400
        )
    with rasterio.open(info.path) as ds:
        data = ds.read(1, masked=True)
    assert data.max() == pytest.approx(data.min())
    with pytest.raises(DataError, match="no station"):
        write_surface(readings, stations, city, tmp_path / "none.tif", period="1990-01")


# --------------------------------------------------------------------------- tiles


def test_coast_tile_is_rgba_png_transparent_at_sea_opaque_on_land(month, city):
    png = render_tile(month.path, COAST_TILE.z, COAST_TILE.x, COAST_TILE.y)
    (width, height, depth, colour), pixels = _decode(png)
    assert (width, height, depth, colour) == (256, 256, 8, 6)  # colour type 6 = RGBA
    assert pixels.shape == (4, 256, 256)
    alpha = pixels[3]
    assert set(np.unique(alpha)) == {0, 255}
    assert (alpha == 0).sum() > 1000 and (alpha == 255).sum() > 1000
    opaque = {tuple(int(v) for v in px) for px in pixels[:, alpha == 255].T}
    assert opaque <= PALETTE
    # the north-west corner is the bay; a kelurahan point in the tile is on land
    assert alpha[0, 0] == 0
    bbox = TMS.xy_bounds(COAST_TILE)
    land = city[city["kota_code"] == "3175"].to_crs(3857).representative_point()
    in_tile = land[shapely.contains_xy(shapely.box(*bbox), land.x, land.y)]
    cols = ((in_tile.x - bbox.left) / (bbox.right - bbox.left) * 256).astype(int)
    rows = ((bbox.top - in_tile.y) / (bbox.top - bbox.bottom) * 256).astype(int)
    assert len(in_tile) and (alpha[rows, cols] == 255).all()


def test_tile_colours_follow_the_categories(spread):
    tile = TMS.tile(106.83, -6.22, 10)
    _, pixels = _decode(render_tile(spread.path, tile.z, tile.x, tile.y))
    opaque = {tuple(int(v) for v in px) for px in pixels[:, pixels[3] == 255].T}
    assert opaque <= PALETTE and len(opaque) >= 3
    with rasterio.open(spread.path) as ds:
        data = ds.read(1, masked=True).compressed()
    assert data.min() < 50.5 < 300.5 < data.max()
    edges = [lo for (lo, _), _ in ISPU_COLORMAP]
    assert edges == [0.0, 50.5, 100.5, 200.5, 300.5]


def test_tile_outside_the_surface_is_not_found(month):
    far = TMS.tile(110.0, -7.5, 12)
    with pytest.raises(NotFoundError):
        render_tile(month.path, far.z, far.x, far.y)


def test_ispu_surface_layer_is_registered():
    layer = registry.get("ispu_surface")
    assert layer.kind == "raster" and layer.table is None
    assert layer.extra["colormap"] == ISPU_COLORMAP
    assert [entry["colour"] for entry in layer.extra["legend"]] == [c.hex for c in CATEGORIES]
