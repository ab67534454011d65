"""H3 cells of point arrays, checked against the scalar h3 API."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from h3.api import basic_int as h3i

from gis.hexes import (
    RESOLUTIONS,
    cell_resolutions,
    cells_to_frame,
    cells_to_parent,
    cells_to_str,
    latlng_to_cells,
    points_to_cells,
    str_to_cells,
    zoom_to_resolution,
)


def scalar_cells(lon, lat, res):
    return np.array(
        [h3i.latlng_to_cell(y, x, res) for x, y in zip(lon, lat, strict=True)], dtype=np.int64
    )


def jakarta_points(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(106.68, 106.98, n), rng.uniform(-6.38, -6.08, n)


def world_points(n, seed=1):
    """Points everywhere, plus points around every res-7 pentagon (odd cells, face edges)."""
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    centres = np.array([h3i.cell_to_latlng(c) for c in h3i.get_pentagons(7)])
    around = np.repeat(centres, 200, axis=0) + rng.normal(scale=0.02, size=(len(centres) * 200, 2))
    return np.r_[lon, around[:, 1]], np.r_[lat, np.clip(around[:, 0], -90, 90)]


@pytest.mark.parametrize(
    "points", [jakarta_points(30_000), world_points(20_000)], ids=["jakarta", "world"]
)
def test_points_to_cells_equals_scalar_api(points):
    lon, lat = points
    cells = points_to_cells(lon, lat)
    assert list(cells) == list(RESOLUTIONS)
    for res, got in cells.items():
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, scalar_cells(lon, lat, res), err_msg=f"res {res}")


def test_direct_cells_are_not_always_parents_but_hierarchical_ones_are():
    lon, lat = jakarta_points(20_000, seed=5)
    direct = points_to_cells(lon, lat, (7, 11))
    parents = points_to_cells(lon, lat, (7, 11), hierarchical=True)
    scalar_parent = np.array([h3i.cell_to_parent(c, 7) for c in direct[11].tolist()])
    np.testing.assert_array_equal(parents[7], scalar_parent)
    differ = (direct[7] != parents[7]).mean()
    assert 0.01 < differ < 0.15  # children do not tile their parent exactly


def test_resolution_order_and_single_resolution_follow_the_request():
    lon, lat = jakarta_points(1_000, seed=3)
    cells = points_to_cells(lon, lat, (10, 8))
    assert list(cells) == [10, 8]
    np.testing.assert_array_equal(cells[8], scalar_cells(lon, lat, 8))
    np.testing.assert_array_equal(latlng_to_cells(lon, lat, 9), scalar_cells(lon, lat, 9))


def test_vectorised_parent_and_resolution_match_scalar_api():
    lon, lat = world_points(3_000, seed=9)
    for fine in (15, 11, 8):
        cells = latlng_to_cells(lon, lat, fine)
        assert (cell_resolutions(cells) == fine).all()
        for res in range(0, fine + 1, 3):
            expected = np.array(
                [h3i.cell_to_parent(c, res) for c in cells.tolist()], dtype=np.int64
            )
            np.testing.assert_array_equal(cells_to_parent(cells, res), expected)
    with pytest.raises(ValueError, match="coarser than 9"):
        cells_to_parent(latlng_to_cells(lon[:3], lat[:3], 8), 9)


def test_cells_fit_postgres_bigint_and_round_trip_through_strings():
    lon, lat = world_points(2_000, seed=4)
    cells = latlng_to_cells(lon, lat, 15)
    assert (cells > 0).all() and (cells < 2**63).all()
    as_uint = cells.astype(np.uint64)
    np.testing.assert_array_equal(cells_to_parent(as_uint, 9), cells_to_parent(cells, 9))
    strings = cells_to_str(cells)
    assert strings[0] == h3i.int_to_str(int(cells[0]))
    np.testing.assert_array_equal(str_to_cells(strings), cells)
    with pytest.raises(ValueError, match="index 1"):
        str_to_cells([strings[0], "not-a-cell"])
    with pytest.raises(ValueError, match="index 0"):
        str_to_cells(["115283473fffffff"])  # a directed edge, not a cell
    with pytest.raises(ValueError, match="not an H3 cell index at position 0"):
        cells_to_parent(np.array([12345]), 3)


def test_cells_to_frame_gives_hexagons_that_contain_their_points():
    lon, lat = jakarta_points(500, seed=8)
    cells = points_to_cells(lon, lat, (9,))[9]
    frame = cells_to_frame(cells)
    assert frame.crs == "EPSG:4326"
    assert list(frame.columns) == ["h3", "h3_str", "resolution", "geometry"]
    assert frame["h3"].is_unique and set(frame["h3"]) == set(cells.tolist())
    assert (frame["resolution"] == 9).all()
    assert (shapely.get_num_coordinates(frame.geometry.values) == 7).all()  # closed hexagons
    by_cell = frame.set_index("h3").geometry
    inside = shapely.covers(by_cell.loc[cells].values, shapely.points(lon, lat))
    assert inside.all()


@pytest.mark.parametrize(
    ("zoom", "res"),
    [(0, 7), (5, 7), (9, 7), (10, 8), (11, 9), (12, 9), (13, 10), (14, 10), (15, 11), (22, 11)],
)
def test_zoom_to_resolution(zoom, res):
    assert zoom_to_resolution(zoom) == res


@pytest.mark.parametrize("zoom", [-1, 10.5, "12", True])
def test_zoom_to_resolution_rejects_non_zooms(zoom):
    with pytest.raises(ValueError):
        zoom_to_resolution(zoom)


def test_empty_input_gives_empty_arrays():
    cells = points_to_cells(np.array([]), np.array([]))
    assert all(c.dtype == np.int64 and c.size == 0 for c in cells.values())


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="index 1"):
        points_to_cells(np.array([106.8, np.nan]), np.array([-6.2, -6.2]))
    with pytest.raises(ValueError, match="resolution must be an integer 0-15"):
        points_to_cells(np.array([106.8]), np.array([-6.2]), (7, 16))
    with pytest.raises(ValueError, match="distinct"):
        points_to_cells(np.array([106.8]), np.array([-6.2]), (7, 7))


# ------------------------------------------------------------- the vectorised path


def near_edges(seed=11, res_list=(7, 9, 11)):
    """Points within 1e-13..1e-7 degrees of hexagon vertices and edges around Jakarta."""
    rng = np.random.default_rng(seed)
    lon, lat = jakarta_points(200, seed=seed)
    out_lon, out_lat = [], []
    for res in res_list:
        for cell in latlng_to_cells(lon, lat, res).tolist():
            ring = np.asarray(h3i.cell_to_boundary(cell))  # (lat, lng)
            mids = (ring + np.roll(ring, -1, axis=0)) / 2
            for pt in np.vstack([ring, mids]):
                noise = rng.normal(size=(6, 2)) * 10.0 ** rng.uniform(-13, -7, size=(6, 1))
                out_lat.extend(pt[0] + noise[:, 0])
                out_lon.extend(pt[1] + noise[:, 1])
    return np.array(out_lon), np.array(out_lat)


def face_edges(n=3_000, seed=12):
    """Points close to the edges between icosahedron faces (equidistant face centres)."""
    from gis.hexes import _FACE_XYZ

    rng = np.random.default_rng(seed)
    dots = _FACE_XYZ @ _FACE_XYZ.T
    pairs = np.argwhere(np.triu(dots > 0.6, 1))  # neighbouring faces
    f, g = _FACE_XYZ[pairs[:, 0]], _FACE_XYZ[pairs[:, 1]]
    pick = rng.integers(0, len(pairs), n)
    t = rng.uniform(-0.4, 0.4, n)[:, None]
    bisector = (f[pick] + g[pick]) / 2 + t * np.cross(f[pick], g[pick])
    bisector += rng.normal(scale=1e-9, size=bisector.shape)
    bisector /= np.linalg.norm(bisector, axis=1, keepdims=True)
    lat = np.degrees(np.arcsin(bisector[:, 2]))
    lon = np.degrees(np.arctan2(bisector[:, 1], bisector[:, 0]))
    return lon, lat


@pytest.mark.parametrize(
    "points",
    [near_edges(), face_edges(), world_points(3_000, seed=13)],
    ids=["hexagon-edges", "face-edges", "world"],
)
def test_every_resolution_equals_scalar_api(points):
    lon, lat = points
    cells = points_to_cells(lon, lat, tuple(range(16)))
    for res, got in cells.items():
        np.testing.assert_array_equal(got, scalar_cells(lon, lat, res), err_msg=f"res {res}")


def test_face_centres_and_poles_fall_back_to_the_scalar_api():
    from gis.hexes import _FACE_GEO

    lat = np.r_[np.degrees(_FACE_GEO[:, 0]), 90.0, -90.0, 0.0]
    lon = np.r_[np.degrees(_FACE_GEO[:, 1]), 0.0, 180.0, -180.0]
    for res, got in points_to_cells(lon, lat, (0, 5, 11, 15)).items():
        np.testing.assert_array_equal(got, scalar_cells(lon, lat, res), err_msg=f"res {res}")


def test_jakarta_needs_the_scalar_api_for_almost_no_point(monkeypatch):
    import gis.hexes

    asked = []
    scalar = gis.hexes.latlng_to_cells

    def counted(lon, lat, res):
        asked.append(lon.size)
        return scalar(lon, lat, res)

    monkeypatch.setattr(gis.hexes, "latlng_to_cells", counted)
    lon, lat = jakarta_points(100_000, seed=14)
    cells = points_to_cells(lon, lat)
    assert sum(asked) < 100  # out of 500,000 point-resolutions
    some = slice(0, 5_000)
    for res in (7, 11):
        np.testing.assert_array_equal(cells[res][some], scalar_cells(lon[some], lat[some], res))


def test_hierarchical_cells_are_parents_of_the_exact_finest_cell():
    lon, lat = near_edges(seed=15, res_list=(11,))
    cells = points_to_cells(lon, lat, (8, 11), hierarchical=True)
    finest = scalar_cells(lon, lat, 11)
    np.testing.assert_array_equal(cells[11], finest)
    np.testing.assert_array_equal(
        cells[8], np.array([h3i.cell_to_parent(c, 8) for c in finest.tolist()], dtype=np.int64)
    )
