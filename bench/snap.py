"""Snapping throughput: petalapor's SnapIndex against geopandas on the real RW polygons.

One million seeded random points are used.  90 % are uniform over Jakarta's
bbox (106.68-106.98 E, -6.38 to -6.08): city, sea and the neighbouring
regencies.  10 % are uniform over a wider box, for the Java Sea and West Java.
The script times:

* the inside step: ``SnapIndex.inside`` against ``geopandas.sjoin(predicate=
  "intersects")``, where intersects equals covers for points.  Only the sjoin
  call is timed.  Building the GeoDataFrame of points and reducing the sjoin
  output to the smallest code per point are left out, which favours geopandas.
  The codes must be identical for every point.
* the full rule (inside, nearest within 100 m, outside with a distance):
  ``SnapIndex.snap`` against sjoin plus ``sjoin_nearest`` in UTM 48S for the
  uncovered points.  Codes and methods must be identical, and distances must
  agree to 1e-6 m.
* H3 cells at resolutions 7-11 for the same points.

Timings are the best of ``--repeat`` runs.  The last line is the summary.

    python bench/snap.py [--points 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from gis.boundaries import METRIC_CRS, build_boundary_set, load_manifest
from gis.hexes import RESOLUTIONS, points_to_cells
from gis.snap import DEFAULT_TOLERANCE_M, METHODS, SnapIndex

JAKARTA_BBOX = (106.68, -6.38, 106.98, -6.08)
WIDE_BBOX = (106.3, -6.7, 107.4, -5.5)


def best_of(repeat: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return best, result


def bench_points(n: int, seed: int = 20240611) -> tuple[np.ndarray, np.ndarray]:
    """Seeded points: 90 % over Jakarta's bbox, 10 % over a wider box."""
    rng = np.random.default_rng(seed)
    n_wide = n // 10
    lon = np.r_[
        rng.uniform(JAKARTA_BBOX[0], JAKARTA_BBOX[2], n - n_wide),
        rng.uniform(WIDE_BBOX[0], WIDE_BBOX[2], n_wide),
    ]
    lat = np.r_[
        rng.uniform(JAKARTA_BBOX[1], JAKARTA_BBOX[3], n - n_wide),
        rng.uniform(WIDE_BBOX[1], WIDE_BBOX[3], n_wide),
    ]
    order = rng.permutation(n)
    return lon[order], lat[order]


def smallest_code(joined: pd.DataFrame, n: int, code_col: str) -> np.ndarray:
    """Smallest matched code per left row (None where nothing matched)."""
    hits = joined[code_col].dropna()
    best = hits.astype(str).groupby(level=0).min()
    out = np.full(n, None, dtype=object)
    out[best.index.to_numpy()] = best.to_numpy()
    return out


def geopandas_full_rule(points: gpd.GeoDataFrame, rw: gpd.GeoDataFrame, tolerance_m: float):
    """The snapping rule with geopandas only: sjoin, then sjoin_nearest (UTM) on the rest."""
    n = len(points)
    joined = gpd.sjoin(points, rw, predicate="intersects", how="left")
    code = smallest_code(joined, n, "code")
    method = np.where(pd.isna(code), "outside", "inside").astype(object)
    dist = np.zeros(n)
    rest = np.flatnonzero(pd.isna(code))
    near = gpd.sjoin_nearest(
        points.iloc[rest].to_crs(METRIC_CRS), rw.to_crs(METRIC_CRS), how="left", distance_col="d"
    )
    near = (
        near.reset_index()
        .sort_values(["index", "code"])
        .groupby("index")
        .agg(c=("code", "first"), d=("d", "min"))
    )
    dist[rest] = near.loc[rest, "d"].to_numpy()
    within = rest[near.loc[rest, "d"].to_numpy() <= tolerance_m]
    code[within] = near.loc[within, "c"].to_numpy()
    method[within] = "nearest"
    return code, method, dist


def main() -> None:
    """Run the benchmark and print its lines; the last is the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, repeat = args.points, args.repeat

    started = time.perf_counter()
    rw = build_boundary_set(load_manifest()).frames["rw"][["code", "geometry"]]
    print(f"boundaries: {len(rw)} RW polygons loaded in {time.perf_counter() - started:.2f} s")
    build_s, index = best_of(1, lambda: SnapIndex.from_frame(rw, tolerance_m=DEFAULT_TOLERANCE_M))
    print(f"SnapIndex build: {build_s:.2f} s (grid cells {index.cell_m:.1f} m)")

    lon, lat = bench_points(n)
    started = time.perf_counter()
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    _ = rw.sindex  # built before timing: favours geopandas
    build_points_s = time.perf_counter() - started
    print(f"points: {n:,} ({build_points_s:.2f} s to build the GeoDataFrame for geopandas)")

    ours_s, ours = best_of(repeat, lambda: index.inside(lon, lat))
    sjoin_s, joined = best_of(
        repeat, lambda: gpd.sjoin(points, rw, predicate="intersects", how="left")
    )
    theirs = smallest_code(joined, n, "code")
    same = np.array_equal(ours, theirs)
    covered = int(pd.notna(ours).sum())
    print(
        f"inside step: petalapor {ours_s:.3f} s ({n / ours_s / 1e6:.2f}M points/s), "
        f"geopandas.sjoin {sjoin_s:.3f} s ({n / sjoin_s / 1e6:.2f}M points/s); "
        f"{covered:,} covered; identical codes: {same}"
    )
    if not same:
        raise SystemExit(f"MISMATCH on {int((ours != theirs).sum())} points")

    full_s, result = best_of(repeat, lambda: index.snap(lon, lat))
    counts = {m: int((result.method == m).sum()) for m in METHODS}
    gp_started = time.perf_counter()
    code, method, dist = geopandas_full_rule(points, rw, DEFAULT_TOLERANCE_M)
    gp_full_s = time.perf_counter() - gp_started
    full_same = (
        np.array_equal(result.code, code)
        and np.array_equal(result.method.astype(object), method)
        and np.allclose(result.distance_m, dist, rtol=1e-9, atol=1e-6)
    )
    print(
        f"full rule: petalapor {full_s:.3f} s ({n / full_s / 1e6:.2f}M points/s; {counts}), "
        f"geopandas sjoin+sjoin_nearest {gp_full_s:.2f} s ({n / gp_full_s / 1e6:.2f}M points/s); "
        f"identical: {full_same}"
    )
    if not full_same:
        raise SystemExit("MISMATCH in the full rule")

    h3_s, _ = best_of(repeat, lambda: points_to_cells(lon, lat))
    hier_s, _ = best_of(repeat, lambda: points_to_cells(lon, lat, hierarchical=True))
    print(
        f"h3: {n:,} points x {len(RESOLUTIONS)} resolutions {RESOLUTIONS} in {h3_s:.2f} s "
        f"(exact per resolution), {hier_s:.2f} s (parents of res {max(RESOLUTIONS)})"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak_mb:,.0f} MB")
    print(
        f"snap: {sjoin_s / ours_s:.1f}x geopandas.sjoin ({n / ours_s / 1e6:.1f}M vs "
        f"{n / sjoin_s / 1e6:.2f}M points/s, inside step); "
        f"full rule {n / full_s / 1e6:.2f}M points/s, "
        f"{gp_full_s / full_s:.1f}x geopandas sjoin+sjoin_nearest; index build {build_s:.1f} s"
    )


if __name__ == "__main__":
    main()
