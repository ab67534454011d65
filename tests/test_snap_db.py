"""SQL ``petalapor_snap`` against shapely and against ``gis.snap`` on the real boundaries."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely
from pyproj import Transformer

TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32748", always_xy=True)
FROM_UTM = Transformer.from_crs("EPSG:32748", "EPSG:4326", always_xy=True)

#: One query for many points: no round trip per point.
SNAP_MANY = """
SELECT s.code, s.method, s.distance_m
FROM unnest(%(lon)s::float8[], %(lat)s::float8[]) WITH ORDINALITY AS p(lon, lat, i)
LEFT JOIN LATERAL petalapor_snap(%(level)s, p.lon, p.lat, %(tol)s) s ON true
ORDER BY p.i
"""


def sql_snap(
    dsn: str, level: str, lon, lat, tol: float = 100.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``petalapor_snap`` for arrays of points, in one statement."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            SNAP_MANY,
            {
                "lon": list(map(float, lon)),
                "lat": list(map(float, lat)),
                "level": level,
                "tol": tol,
            },
        ).fetchall()
    assert len(rows) == len(lon)
    code, method, dist = zip(*rows, strict=True)
    return np.array(code, dtype=object), np.array(method, dtype=object), np.array(dist, dtype=float)


def random_points(frame, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half uniform over the polygons' extent (+ 0.01°), half within ~50 m of a random vertex."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = frame.total_bounds
    n_uniform = n // 2
    lon = rng.uniform(minx - 0.01, maxx + 0.01, n_uniform)
    lat = rng.uniform(miny - 0.01, maxy + 0.01, n_uniform)
    coords = shapely.get_coordinates(frame.geometry.values)
    picked = coords[rng.integers(0, len(coords), n - n_uniform)]
    jitter = rng.normal(0, 0.0003, picked.shape)  # ~33 m
    return np.r_[lon, picked[:, 0] + jitter[:, 0]], np.r_[lat, picked[:, 1] + jitter[:, 1]]


def test_sql_and_library_agree_on_10000_random_points(loaded_dsn, boundary_set):
    from gis.snap import SnapIndex

    rw = boundary_set.frames["rw"]
    lon, lat = random_points(rw, 10_000, seed=311)
    lib = SnapIndex.from_frame(rw, code_col="code", tolerance_m=100.0).snap(lon, lat)
    code, method, dist = sql_snap(loaded_dsn, "rw", lon, lat)
    # the sample exercises every branch of the rule
    assert {"inside", "nearest", "outside"} <= set(method)
    assert (method == "nearest").sum() > 100
    lib_code = np.array([c if c is not None else None for c in lib.code], dtype=object)
    bad_code = np.flatnonzero(lib_code != code)
    bad_method = np.flatnonzero(np.asarray(lib.method, dtype=object) != method)
    bad_dist = np.flatnonzero(np.abs(np.asarray(lib.distance_m) - dist) > 0.01)
    assert bad_code.size == 0, [(lon[i], lat[i], lib_code[i], code[i]) for i in bad_code[:5]]
    assert bad_method.size == 0, [
        (lon[i], lat[i], lib.method[i], method[i]) for i in bad_method[:5]
    ]
    assert bad_dist.size == 0, [(lon[i], lat[i], lib.distance_m[i], dist[i]) for i in bad_dist[:5]]


def test_sql_and_library_agree_on_kelurahan(loaded_dsn, boundary_set):
    from gis.snap import SnapIndex

    kel = boundary_set.frames["kelurahan"]
    lon, lat = random_points(kel, 2_000, seed=7)
    lib = SnapIndex.from_frame(kel).snap(lon, lat)
    code, method, dist = sql_snap(loaded_dsn, "kelurahan", lon, lat)
    assert list(lib.code) == list(code)
    assert list(lib.method) == list(method)
    np.testing.assert_allclose(lib.distance_m, dist, atol=0.01, rtol=0)


def test_sql_matches_shapely_on_random_points(loaded_dsn, boundary_set):
    """Independent of gis.snap: inside points get the smallest covering code, others none."""
    rw = boundary_set.frames["rw"]
    lon, lat = random_points(rw, 1_000, seed=42)
    code, method, dist = sql_snap(loaded_dsn, "rw", lon, lat)
    tree = shapely.STRtree(rw.geometry.values)
    pt, poly = tree.query(shapely.points(lon, lat), predicate="covered_by")
    expected = np.full(len(lon), None, dtype=object)
    for i, j in sorted(
        zip(pt, poly, strict=True), key=lambda p: (p[0], rw.code.iloc[p[1]]), reverse=True
    ):
        expected[i] = rw.code.iloc[j]  # the last written is the smallest code
    inside = method == "inside"
    assert list(code[inside]) == list(expected[inside])
    assert all(e is None for e in expected[~inside])
    assert (dist[inside] == 0).all()
    near = method == "nearest"
    assert (
        (dist[near] > 0).all()
        and (dist[near] <= 100).all()
        and (dist[method == "outside"] > 100).all()
    )


def test_distances_are_utm_metres(loaded_dsn, boundary_set):
    rw = boundary_set.frames["rw"]
    coords = shapely.get_coordinates(rw.geometry.values)
    top = coords[np.argmax(coords[:, 1])]  # northernmost vertex: only sea north of it
    x, y = TO_UTM.transform(*top)
    for metres, method in ((30, "nearest"), (99, "nearest"), (101, "outside"), (5000, "outside")):
        lon, lat = FROM_UTM.transform(x, y + metres)
        code, got, dist = sql_snap(loaded_dsn, "rw", [lon], [lat])
        assert got[0] == method
        assert dist[0] == pytest.approx(metres, abs=0.01)
        assert (code[0] is None) == (method == "outside")


def test_shared_vertex_is_deterministic(loaded_dsn, boundary_set):
    rw = boundary_set.frames["rw"]
    coords, which = shapely.get_coordinates(rw.geometry.values, return_index=True)
    uniq, inverse, counts = np.unique(coords, axis=0, return_inverse=True, return_counts=True)
    picked = []
    for k in np.flatnonzero(counts >= 3)[:200]:
        owners = {rw.code.iloc[j] for j in which[inverse.reshape(-1) == k]}
        if len(owners) >= 2:  # a vertex of two or more RW: on all their edges
            x, y = float(uniq[k, 0]), float(uniq[k, 1])
            covering = sorted(rw.code[rw.covers(shapely.Point(x, y))])
            assert owners <= set(covering)
            picked.append((x, y, covering[0]))
    assert len(picked) >= 20
    lon, lat, expected = (list(v) for v in zip(*picked, strict=True))
    for _ in range(3):
        code, method, _ = sql_snap(loaded_dsn, "rw", lon * 2, lat * 2)
        assert list(code) == expected * 2
        assert set(method) == {"inside"}


def test_empty_level_returns_no_row(loaded_dsn):
    with psycopg.connect(loaded_dsn) as conn:
        assert (
            conn.execute("SELECT * FROM petalapor_snap('nonsense', 106.8, -6.2)").fetchall() == []
        )
