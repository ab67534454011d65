"""Snapping of points to the real Jakarta RW polygons, checked against brute force."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from gis.boundaries import METRIC_CRS, build_boundary_set, load_manifest
from gis.snap import (
    TIE_TOLERANCE_M,
    SnapIndex,
    check_lonlat,
    snap_points,
    validate_lonlat,
)

TO_UTM = Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True)
TO_LONLAT = Transformer.from_crs(METRIC_CRS, "EPSG:4326", always_xy=True)


@pytest.fixture(scope="module")
def bset():
    return build_boundary_set(load_manifest())


@pytest.fixture(scope="module")
def rw(bset) -> gpd.GeoDataFrame:
    return bset.frames["rw"]


@pytest.fixture(scope="module")
def rw_utm(rw) -> gpd.GeoDataFrame:
    return rw.to_crs(METRIC_CRS)


@pytest.fixture(scope="module")
def index(rw) -> SnapIndex:
    return SnapIndex.from_frame(rw)


def reference_snap(rw, rw_utm, lon, lat, tolerance_m=100.0):
    """Brute force, independent of gis.snap: covers, then nearest polygon in UTM."""
    codes = rw["code"].to_numpy().astype(str)
    pts = shapely.points(lon, lat)
    pt, poly = shapely.STRtree(rw.geometry.values).query(pts, predicate="intersects")
    inside = pd.Series(codes[poly]).groupby(pt).min()
    code = np.full(len(lon), None, dtype=object)
    method = np.full(len(lon), "outside", dtype=object)
    dist = np.zeros(len(lon))
    code[inside.index] = inside.to_numpy()
    method[inside.index] = "inside"
    out = np.setdiff1d(np.arange(len(lon)), inside.index)
    x, y = TO_UTM.transform(lon[out], lat[out])
    (i, j), d = shapely.STRtree(rw_utm.geometry.values).query_nearest(
        shapely.points(x, y), return_distance=True, all_matches=True
    )
    near = pd.DataFrame({"pt": out[i], "code": codes[j], "d": d})
    best = (
        near.sort_values(["pt", "code"]).groupby("pt").agg(code=("code", "first"), d=("d", "min"))
    )
    dist[best.index] = best["d"].to_numpy()
    within = best.index[best["d"].to_numpy() <= tolerance_m]
    code[within] = best.loc[within, "code"].to_numpy()
    method[within] = "nearest"
    return code, method, dist


def covering_codes(rw, lon, lat) -> list[str]:
    """All RW codes whose polygon covers the point (plain shapely, no index)."""
    return sorted(rw.loc[rw.geometry.covers(shapely.Point(lon, lat)), "code"].astype(str))


def northernmost_vertex_utm(rw_utm) -> tuple[float, float]:
    coords = shapely.get_coordinates(rw_utm.geometry.values)
    return tuple(coords[np.argmax(coords[:, 1])])


# --------------------------------------------------------------------------- inside


@pytest.mark.parametrize(
    ("name", "lon", "lat", "code", "kelurahan"),
    [
        ("Monas", 106.827153, -6.175392, "3173080003002000", "Gambir"),
        ("Bundaran HI", 106.823041, -6.194956, "3173020001005000", "Menteng"),
        ("Taman Fatahillah", 106.813301, -6.135200, "3174060008006000", "Pinangsia"),
    ],
)
def test_landmarks_land_in_their_rw(index, rw, bset, name, lon, lat, code, kelurahan):
    assert covering_codes(rw, lon, lat) == [code]  # independent check of the hard-coded code
    res = index.snap(np.array([lon]), np.array([lat]))
    assert res.code[0] == code and res.method[0] == "inside" and res.distance_m[0] == 0.0
    kel_code = rw.iloc[res.row[0]]["kelurahan_code"]
    kel = bset.frames["kelurahan"].set_index("code")
    assert kel.loc[kel_code, "name"] == kelurahan


def test_representative_points_land_in_their_rw(index, rw):
    picks = rw.iloc[np.linspace(0, len(rw) - 1, 25).astype(int)]
    pts = picks.geometry.representative_point()
    res = index.snap(pts.x.to_numpy(), pts.y.to_numpy())
    for code, p, got in zip(picks["code"], pts, res.code, strict=True):
        covering = covering_codes(rw, p.x, p.y)
        assert code in covering
        assert got == covering[0]
    assert (res.method == "inside").all()
    assert (rw["code"].to_numpy()[res.row] == res.code).all()


def test_shared_vertex_goes_to_smallest_code_deterministically(rw, index):
    coords, owner = shapely.get_coordinates(rw.geometry.values, return_index=True)
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "owner": owner}).drop_duplicates()
    shared = frame.groupby(["x", "y"])["owner"].nunique()
    shared = shared[shared == 2].index[:50]  # vertices on exactly two RW
    lon = np.array([x for x, _ in shared])
    lat = np.array([y for _, y in shared])
    res = index.snap(lon, lat)
    shuffled = SnapIndex.from_frame(rw.sample(frac=1.0, random_state=3), cell_m=23.0)
    again = shuffled.snap(lon, lat)
    for x, y, got, got_again in zip(lon, lat, res.code, again.code, strict=True):
        covering = covering_codes(rw, x, y)
        assert len(covering) >= 2
        assert got == got_again == covering[0]
    assert (res.method == "inside").all()
    assert (res.distance_m == 0.0).all()


# --------------------------------------------------------------------------- nearest / outside


def test_point_30m_off_the_coast_snaps_nearest(index, rw, rw_utm):
    vx, vy = northernmost_vertex_utm(rw_utm)
    lon, lat = TO_LONLAT.transform(vx, vy + 30.0)  # due north of the northernmost vertex: sea
    assert covering_codes(rw, lon, lat) == []
    distances = rw_utm.distance(shapely.Point(*TO_UTM.transform(lon, lat)))
    expected = str(rw_utm.loc[distances <= distances.min() + TIE_TOLERANCE_M, "code"].min())
    res = index.snap(np.array([lon]), np.array([lat]))
    assert res.method[0] == "nearest"
    assert res.code[0] == expected
    assert res.distance_m[0] == pytest.approx(30.0, abs=1e-6)
    strict = SnapIndex.from_frame(rw, tolerance_m=29.0).snap(np.array([lon]), np.array([lat]))
    assert strict.method[0] == "outside" and strict.code[0] is None
    assert strict.distance_m[0] == pytest.approx(30.0, abs=1e-6)


def test_point_5km_out_in_the_java_sea_is_outside(index, rw_utm):
    vx, vy = northernmost_vertex_utm(rw_utm)
    lon, lat = TO_LONLAT.transform(vx, vy + 5000.0)
    res = index.snap(np.array([lon]), np.array([lat]))
    assert res.method[0] == "outside"
    assert res.code[0] is None and res.row[0] == -1
    assert res.distance_m[0] == pytest.approx(5000.0, abs=1e-6)


# --------------------------------------------------------------------------- against brute force


def random_points(rw, n, seed):
    """Uniform points over (and around) Jakarta, plus points hugging RW vertices."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(106.66, 107.0, n)
    lat = rng.uniform(-6.40, -6.06, n)
    coords = shapely.get_coordinates(rw.geometry.values)
    pick = coords[rng.integers(0, len(coords), n // 5)]
    jitter = rng.normal(scale=2e-6, size=pick.shape)  # ~20 cm: lands in boundary cells
    exact = coords[rng.integers(0, len(coords), n // 20)]  # exactly on boundaries
    return (
        np.concatenate([lon, pick[:, 0] + jitter[:, 0], exact[:, 0]]),
        np.concatenate([lat, pick[:, 1] + jitter[:, 1], exact[:, 1]]),
    )


def test_random_points_equal_brute_force(index, rw, rw_utm):
    lon, lat = random_points(rw, 10_000, seed=42)
    code, method, dist = reference_snap(rw, rw_utm, lon, lat)
    res = index.snap(lon, lat)
    assert set(method) == {"inside", "nearest", "outside"}
    assert (res.method == method).all()
    assert (res.code == code).all()
    np.testing.assert_allclose(res.distance_m, dist, rtol=1e-9, atol=1e-6)
    assert (index.inside(lon, lat) == np.where(method == "inside", code, None)).all()


def test_coarse_grid_and_shuffled_frame_give_identical_results(index, rw):
    lon, lat = random_points(rw, 4_000, seed=7)
    shuffled = rw.sample(frac=1.0, random_state=1)
    other = SnapIndex.from_frame(shuffled, cell_m=60.0)
    a, b = index.snap(lon, lat), other.snap(lon, lat)
    assert (a.code == b.code).all() and (a.method == b.method).all()
    assert np.array_equal(a.distance_m, b.distance_m)
    found = b.row >= 0
    assert (shuffled["code"].to_numpy()[b.row[found]] == b.code[found]).all()


def test_nearest_by_polygons_equals_nearest_by_segments(rw, monkeypatch):
    """Few points: a tree of whole polygons; many: a tree of ring segments.  Same answers."""
    import gis.snap

    rng = np.random.default_rng(8)
    lon, lat = random_points(rw, 3_000, seed=8)
    lon = np.r_[lon, rng.uniform(106.3, 107.2, 2_000)]  # the bay and Seribu: nearest, outside
    lat = np.r_[lat, rng.uniform(-6.5, -5.2, 2_000)]
    by_polygons = SnapIndex.from_frame(rw).snap(lon, lat)
    monkeypatch.setattr(gis.snap, "_SEGMENT_TREE_MIN_POINTS", 1)
    segments = SnapIndex.from_frame(rw)
    by_segments = segments.snap(lon, lat)
    assert segments._segments is not None
    assert (by_polygons.method != "inside").sum() > 1_000
    for a, b in zip(by_polygons, by_segments, strict=True):
        np.testing.assert_array_equal(a, b)


def test_synthetic_overlaps_holes_and_grid_aligned_edges():
    # Squares on a 0.001-degree lattice, an overlap, a hole with an island in it.
    sq = lambda x, y, s=0.001: shapely.box(106.8 + x, -6.2 + y, 106.8 + x + s, -6.2 + y + s)  # noqa: E731
    geoms = [
        sq(0, 0),
        sq(0.001, 0),
        sq(0.0005, 0.0005),  # overlaps both
        shapely.Polygon(sq(0.003, 0, 0.003).exterior, [sq(0.004, 0.001).exterior.coords]),
        sq(0.0042, 0.0012, 0.0004),  # island in the hole
    ]
    frame = gpd.GeoDataFrame({"code": ["e", "d", "c", "b", "a"]}, geometry=geoms, crs=4326)
    index = SnapIndex.from_frame(frame, cell_m=37.0, tolerance_m=50.0)
    rng = np.random.default_rng(0)
    along = np.linspace(106.7995, 106.8065, 71)  # along a shared edge line
    lon = np.r_[rng.uniform(106.7995, 106.8065, 20_000), along]
    lat = np.r_[rng.uniform(-6.2005, -6.1965, 20_000), np.full(along.size, -6.2 + 0.001)]
    vx, vy = shapely.get_coordinates(frame.geometry.values).T
    lon, lat = np.r_[lon, vx], np.r_[lat, vy]
    code, method, dist = reference_snap(frame, frame.to_crs(METRIC_CRS), lon, lat, tolerance_m=50.0)
    res = index.snap(lon, lat)
    assert (res.code == code).all() and (res.method == method).all()
    np.testing.assert_allclose(res.distance_m, dist, rtol=1e-9, atol=1e-6)
    assert index.snap(np.array([106.8043]), np.array([-6.1985])).code[0] == "a"  # island wins


# --------------------------------------------------------------------------- inputs and wrapper


def test_bad_coordinates_are_reported():
    check = validate_lonlat(
        np.array([106.8, np.nan, 200.0, 106.8, np.inf]), np.array([-6.2, -6.2, -6.2, -91.0, 0.0])
    )
    assert check.ok.tolist() == [True, False, False, False, False]
    assert check.reason.tolist() == [
        None,
        "lon is not finite",
        "lon out of range [-180, 180]",
        "lat out of range [-90, 90]",
        "lon is not finite",
    ]
    with pytest.raises(ValueError, match=r"index 2: lon=200\.0"):
        check_lonlat([106.8, 106.9, 200.0], [-6.2, -6.2, -6.2])
    with pytest.raises(ValueError, match="differ in length"):
        check_lonlat([1.0, 2.0], [1.0])


def test_empty_input_gives_empty_result(index):
    res = index.snap(np.array([]), np.array([]))
    assert all(len(field) == 0 for field in res)
    assert index.inside([], []).size == 0


def test_snap_rejects_bad_coordinates(index):
    with pytest.raises(ValueError, match=r"index 1: lon=106\.8, lat=nan"):
        index.snap(np.array([106.8, 106.8]), np.array([-6.2, np.nan]))


def test_snap_points_wrapper_reprojects_and_keeps_rows(rw, index):
    lon = np.array([106.827153, 106.823041, 107.5])
    lat = np.array([-6.175392, -6.194956, -5.0])
    pts = gpd.GeoDataFrame({"id": [10, 11, 12]}, geometry=gpd.points_from_xy(lon, lat), crs=4326)
    out = snap_points(pts, rw)
    assert out["snap_code"].tolist()[:2] == ["3173080003002000", "3173020001005000"]
    assert out["snap_method"].tolist() == ["inside", "inside", "outside"]
    assert out["snap_distance_m"].iloc[2] > 100_000
    utm = pts.to_crs(METRIC_CRS)
    with pytest.warns(UserWarning, match="reprojecting"):
        again = snap_points(utm, index)
    assert again.crs == utm.crs and again["id"].tolist() == [10, 11, 12]
    assert again["snap_code"].tolist() == out["snap_code"].tolist()
    bad = pts.copy()
    bad.loc[1, "geometry"] = shapely.Point()
    with pytest.raises(ValueError, match="point row 1"):
        snap_points(bad, index)


def test_from_frame_checks_its_input(rw):
    with pytest.raises(ValueError, match="no column"):
        SnapIndex.from_frame(rw, code_col="nope")
    with pytest.raises(ValueError, match="no CRS"):
        SnapIndex.from_frame(gpd.GeoDataFrame({"code": ["a"]}, geometry=list(rw.geometry.iloc[:1])))
    lines = gpd.GeoDataFrame(
        {"code": ["a"]}, geometry=[shapely.LineString([(0, 0), (1, 1)])], crs=4326
    )
    with pytest.raises(ValueError, match="row 0 is not a non-empty Polygon"):
        SnapIndex.from_frame(lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SnapIndex.from_frame(rw.iloc[:3])  # 4326 input: no warning


def test_lone_point_just_outside_an_edge():
    """A batch whose only point sits in a border cell but outside every polygon."""
    import shapely as _shapely

    from gis.boundaries import build_boundary_set, load_manifest
    from gis.snap import SnapIndex as _SnapIndex

    rw = build_boundary_set(load_manifest()).frames["rw"]
    coords = _shapely.get_coordinates(rw.geometry.values)
    south = coords[np.argmin(coords[:, 1])]
    result = _SnapIndex.from_frame(rw).snap(np.array([south[0]]), np.array([south[1] - 2e-6]))
    assert result.method[0] == "nearest" and 0 < result.distance_m[0] < 1
