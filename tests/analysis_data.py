"""Seeded synthetic reports for the analysis tests and ``bench/analysis.py``.

Numpy only, fast enough for a million rows.  Reports sit at random places
inside RW polygons (a few hundred thousand distinct places, so H3 cells are
computed once per place), with categories, OPDs and a plausible workflow
history: most are resolved after a log-normal time, some rejected, the rest
open in one of the open statuses.  Used when ``gis.demo.generate_reports`` is
not available, and for planted patterns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gis.hexes import points_to_cells
from petalapor.catalog import get_catalog

START = pd.Timestamp("2024-01-01T00:00:00+07:00")
END = pd.Timestamp("2025-03-01T00:00:00+07:00")
OPEN_STATUSES = ("menunggu", "disposisi", "koordinasi", "proses")


def random_points_in(
    polygons: gpd.GeoSeries, counts: np.ndarray, rng: np.random.Generator
) -> tuple:
    """``counts[i]`` uniform random points inside ``polygons[i]`` (lon, lat, polygon index)."""
    lons, lats, owners = [], [], []
    geoms = polygons.to_numpy()
    for i in np.flatnonzero(counts):
        geom, k = geoms[i], int(counts[i])
        x0, y0, x1, y1 = geom.bounds
        got = 0
        while got < k:
            m = max(16, int((k - got) * 3))
            x, y = rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)
            inside = shapely.contains_xy(geom, x, y)
            x, y = x[inside][: k - got], y[inside][: k - got]
            lons.append(x)
            lats.append(y)
            owners.append(np.full(len(x), i))
            got += len(x)
    return np.concatenate(lons), np.concatenate(lats), np.concatenate(owners)


def synthetic_reports(
    rw: gpd.GeoDataFrame,
    n: int,
    seed: int = 0,
    *,
    places: int | None = None,
    start: pd.Timestamp = START,
    end: pd.Timestamp = END,
    rejected_share: float = 0.05,
    open_share: float = 0.12,
) -> pd.DataFrame:
    """``n`` reports in the columns of the ``reports`` table (plus ``lon, lat``).

    Parameters
    ----------
    rw
        RW polygons with ``code, kelurahan_code, kecamatan_code, kota_code, area_m2``.
    n
        Number of reports.
    seed
        Seed of everything.
    places
        Distinct locations (default ``min(n, 200_000)``).
    start, end
        Creation times are uniform in ``[start, end)`` (whole seconds).
    rejected_share, open_share
        Shares of rejected reports and of reports never resolved.
    """
    rng = np.random.default_rng(seed)
    places = min(n, places or 200_000)
    intensity = np.asarray(rw["area_m2"], float) ** 0.5 * rng.lognormal(0, 0.8, len(rw))
    per_rw = rng.multinomial(places, intensity / intensity.sum())
    lon_p, lat_p, owner_p = random_points_in(rw.geometry.reset_index(drop=True), per_rw, rng)
    cells = points_to_cells(lon_p, lat_p)
    quality = rng.lognormal(0, 0.5, len(rw))  # slow and fast RWs
    pick = rng.integers(0, len(lon_p), n)
    owner = owner_p[pick]
    catalog = get_catalog()
    cats = np.array(sorted(catalog.categories))
    cat = cats[rng.integers(0, len(cats), n)]
    opd = np.array([catalog.categories[c].opd for c in cats])[np.searchsorted(cats, cat)]
    span = int((end - start).total_seconds())
    created_s = rng.integers(0, span, n)
    created = start.tz_convert("UTC") + pd.to_timedelta(created_s, unit="s")
    dur_s = np.round(rng.lognormal(np.log(3 * 86400), 1.0, n) * quality[owner]).astype(np.int64)
    coord_s = np.round(rng.exponential(4 * 3600, n)).astype(np.int64)
    u = rng.random(n)
    rejected = u < rejected_share
    done = (created_s + dur_s < span) & ~rejected & (u >= rejected_share + open_share)
    status = np.where(
        rejected,
        "ditolak",
        np.where(done, "selesai", np.array(OPEN_STATUSES)[rng.integers(0, 4, n)]),
    )
    coordinated = done | np.isin(status, ("koordinasi", "proses"))
    coord_s = np.minimum(coord_s, np.where(done, dur_s, span - created_s - 1))
    coord_s = np.maximum(coord_s, 0)
    reject_s = np.minimum(rng.integers(60, 3 * 86400, n), span - created_s - 1)
    resolved_at = pd.Series(created + pd.to_timedelta(dur_s, unit="s")).where(done)
    first = pd.Series(created + pd.to_timedelta(coord_s, unit="s")).where(coordinated)
    updated = pd.Series(created).copy()
    updated[done] = resolved_at[done]
    updated[rejected] = (created + pd.to_timedelta(reject_s, unit="s"))[rejected]
    updated[~done & ~rejected & coordinated] = first[~done & ~rejected & coordinated]
    codes = {
        c: np.asarray(rw[c], dtype=object)[owner]
        for c in ("code", "kelurahan_code", "kecamatan_code", "kota_code")
    }
    frame = pd.DataFrame(
        {
            "source": "synthetic",
            "external_id": np.char.add("s", np.arange(n).astype(str)),
            "category": cat,
            "opd": opd,
            "created_at": created,
            "updated_at": updated.to_numpy(),
            "first_coordinated_at": first.to_numpy(),
            "resolved_at": resolved_at.to_numpy(),
            "status": status,
            "rw_code": codes["code"],
            "kelurahan_code": codes["kelurahan_code"],
            "kecamatan_code": codes["kecamatan_code"],
            "kota_code": codes["kota_code"],
            "snap_method": "inside",
            "lon": lon_p[pick],
            "lat": lat_p[pick],
            **{f"h3_r{r}": cells[r][pick] for r in (7, 8, 9, 10, 11)},
        }
    )
    for col in ("created_at", "updated_at", "first_coordinated_at", "resolved_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def demo_reports(frames: dict[str, gpd.GeoDataFrame], n: int, seed: int) -> pd.DataFrame:
    """Demo-like reports in the columns of the ``reports`` table, snapped in Python.

    ``gis.demo.generate_reports`` when it exists, else :func:`synthetic_reports`.
    Points are snapped to RWs (and, where no RW matches, to kelurahan) with
    ``gis.snap.snap_points``; H3 cells come from ``gis.hexes.points_to_cells``.
    """
    try:
        from gis.demo import generate_reports
    except ImportError:
        return synthetic_reports(frames["rw"], n, seed)
    from gis.snap import snap_points

    rep = generate_reports(frames["rw"], n=n, seed=seed)
    rw = frames["rw"].set_index("code")
    kel = frames["kelurahan"].set_index("code")
    snapped = snap_points(rep[["geometry"]], frames["rw"])
    rw_code = snapped["snap_code"].astype(object).where(snapped["snap_code"].notna(), None)
    kel_code = rw_code.map(rw["kelurahan_code"])
    missing = kel_code.isna().to_numpy()
    if missing.any():
        by_kel = snap_points(rep.loc[missing, ["geometry"]], frames["kelurahan"])
        kel_code[missing] = by_kel["snap_code"].to_numpy()
    kel_code = kel_code.astype(object).where(kel_code.notna(), None)
    method = np.where(
        rw_code.notna() | kel_code.notna(), snapped["snap_method"].to_numpy(dtype=object), "outside"
    )
    method = np.where(method == "outside", "outside", np.where(rw_code.isna(), "nearest", method))
    cells = points_to_cells(rep["lon"].to_numpy(float), rep["lat"].to_numpy(float))
    frame = pd.DataFrame(
        {
            "source": rep["source"].to_numpy(dtype=object),
            "external_id": rep["external_id"].to_numpy(dtype=object),
            "category": rep["category"].to_numpy(dtype=object),
            "opd": rep["opd"].to_numpy(dtype=object),
            "status": rep["status"].to_numpy(dtype=object),
            "public": rep["public"].to_numpy(dtype=bool),
            "rw_code": rw_code.to_numpy(),
            "kelurahan_code": kel_code.to_numpy(),
            "kecamatan_code": kel_code.map(kel["kecamatan_code"]).to_numpy(dtype=object),
            "kota_code": kel_code.map(kel["kota_code"]).to_numpy(dtype=object),
            "snap_method": method,
            "lon": rep["lon"].to_numpy(float),
            "lat": rep["lat"].to_numpy(float),
            **{f"h3_r{r}": cells[r] for r in (7, 8, 9, 10, 11)},
        }
    )
    for col in ("created_at", "updated_at", "first_coordinated_at", "resolved_at"):
        frame[col] = pd.to_datetime(rep[col].to_numpy(), utc=True)
    for col in ("kecamatan_code", "kota_code"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


@contextmanager
def demo_database(
    dsn: str,
    boundary_set,
    n: int,
    seed: int,
    prefix: str,  # noqa: ANN001 - BoundarySet
) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(url, frame)``: a throw-away database with real boundaries and ``n`` demo-like reports."""
    import psycopg

    from db.analysis import copy_reports
    from tests.databases import throwaway_database

    with throwaway_database(dsn, prefix, boundary_set=boundary_set, catalog=True) as url:
        frame = demo_reports(boundary_set.frames, n, seed=seed)
        with psycopg.connect(url) as conn:
            copy_reports(conn, frame)
        yield url, frame
