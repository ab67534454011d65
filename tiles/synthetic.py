"""Seeded synthetic reports for the tile tests and ``bench/tiles.py`` (not demo data).

The tests' throw-away database holding them is ``tests.databases.tile_test_database``.

Points fall inside the stored RW polygons: half uniformly in random RWs, half
around a few hundred hotspots (Gaussian, 150-600 m), so hexes range from
single reports to thousands.  Every row gets real RW/kelurahan codes, H3 cells
from :func:`gis.hexes.points_to_cells` (the same rule as the importer), a
catalog category with its OPD, a status with consistent timestamps, and
``public = false`` for about 7 %.  Rows are written with one COPY, so the
tile triggers queue a single ``full`` refresh for large batches.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import shapely

from gis.hexes import points_to_cells
from petalapor.catalog import get_catalog

SOURCE = "tiles-synthetic"
STATUS_WEIGHTS: dict[str, float] = {
    "menunggu": 0.12,
    "disposisi": 0.08,
    "koordinasi": 0.08,
    "proses": 0.12,
    "selesai": 0.50,
    "ditolak": 0.10,
}
PERIOD_START = pd.Timestamp("2024-01-01T00:00:00+07:00")
PERIOD_DAYS = 366


@dataclass(frozen=True)
class RwPolygons:
    """RW polygons with their codes (from the ``boundaries`` table)."""

    codes: np.ndarray
    kelurahan: np.ndarray
    kecamatan: np.ndarray
    kota: np.ndarray
    geoms: np.ndarray

    @classmethod
    def load(cls, conn: psycopg.Connection) -> "RwPolygons":
        """Every stored RW polygon."""
        rows = conn.execute(
            "SELECT code, kelurahan_code, kecamatan_code, kota_code, ST_AsBinary(geom) FROM "
            "boundaries "
            "WHERE level = 'rw' ORDER BY code"
        ).fetchall()
        rows = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]
        if not rows:
            raise ValueError("no RW polygons stored: import boundaries first")
        cols = list(zip(*rows, strict=True))
        return cls(
            *(np.array(c, dtype=object) for c in cols[:4]),
            shapely.from_wkb(np.array(cols[4], dtype=object)),
        )


def _points(
    rw: RwPolygons, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points inside RW polygons and the index of the RW holding each."""
    tree = shapely.STRtree(rw.geoms)
    bounds = shapely.bounds(rw.geoms)
    centroids = shapely.get_coordinates(shapely.centroid(rw.geoms))
    hot = rng.choice(len(rw.geoms), size=max(1, min(300, n // 200)), replace=False)
    hot_sigma = rng.uniform(150, 600, size=len(hot)) / 111_000.0
    xs, ys, idx = [], [], []
    have = 0
    while have < n:
        m = int((n - have) * 1.3) + 16
        which = rng.integers(0, len(rw.geoms), size=m)
        x = rng.uniform(bounds[which, 0], bounds[which, 2])
        y = rng.uniform(bounds[which, 1], bounds[which, 3])
        from_hot = rng.random(m) < 0.5
        h = rng.integers(0, len(hot), size=m)
        x = np.where(from_hot, centroids[hot[h], 0] + rng.normal(0, 1, m) * hot_sigma[h], x)
        y = np.where(from_hot, centroids[hot[h], 1] + rng.normal(0, 1, m) * hot_sigma[h], y)
        pts = shapely.points(x, y)
        pairs = tree.query(pts, predicate="within")
        first = np.full(m, -1)
        first[pairs[0][::-1]] = pairs[1][::-1]
        ok = first >= 0
        xs.append(x[ok])
        ys.append(y[ok])
        idx.append(first[ok])
        have += int(ok.sum())
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.concatenate(idx)[:n]


def synthetic_reports(rw: RwPolygons, n: int, seed: int = 1) -> pd.DataFrame:
    """A frame of ``n`` report rows ready for :func:`copy_reports`."""
    rng = np.random.default_rng(seed)
    catalog = get_catalog()
    lon, lat, which = _points(rw, n, rng)
    cats = np.array(sorted(catalog.categories))
    weights = np.linspace(2.0, 0.5, len(cats))
    category = rng.choice(cats, size=n, p=weights / weights.sum())
    opd = np.array([catalog.categories[c].opd for c in category], dtype=object)
    statuses = np.array(list(STATUS_WEIGHTS))
    status = rng.choice(statuses, size=n, p=np.array(list(STATUS_WEIGHTS.values())))
    created = PERIOD_START + pd.to_timedelta(
        rng.uniform(0, PERIOD_DAYS * 86400, n).round(), unit="s"
    )
    coordinated = created + pd.to_timedelta(
        rng.lognormal(np.log(4 * 3600), 1.0, n).round(), unit="s"
    )
    resolved = created + pd.to_timedelta(rng.lognormal(np.log(5 * 86400), 0.9, n).round(), unit="s")
    is_resolved = status == "selesai"
    was_coordinated = np.isin(status, ["koordinasi", "proses", "selesai"])
    cells = points_to_cells(lon, lat)
    frame = pd.DataFrame(
        {
            "source": SOURCE,
            "external_id": [f"{seed}-{i}" for i in range(n)],
            "category": category,
            "opd": opd,
            "created_at": created,
            "updated_at": created,
            "first_coordinated_at": pd.Series(coordinated).where(was_coordinated),
            "resolved_at": pd.Series(resolved).where(is_resolved),
            "status": status,
            "geom": [f"SRID=4326;POINT({x:.7f} {y:.7f})" for x, y in zip(lon, lat, strict=True)],
            "rw_code": rw.codes[which],
            "kelurahan_code": rw.kelurahan[which],
            "kecamatan_code": rw.kecamatan[which],
            "kota_code": rw.kota[which],
            "snap_method": "inside",
            **{f"h3_r{r}": cells[r] for r in (7, 8, 9, 10, 11)},
            "public": rng.random(n) >= 0.07,
        }
    )
    return frame


def copy_reports(conn: psycopg.Connection, frame: pd.DataFrame, chunk: int = 200_000) -> int:
    """COPY the frame into ``reports`` (CSV, in chunks); returns the rows written."""
    columns = list(frame.columns)
    stmt = f"COPY reports ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for start in range(0, len(frame), chunk):
            buf = io.StringIO()
            part = frame.iloc[start : start + chunk]
            part.to_csv(buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S%z")
            copy.write(buf.getvalue())
    return len(frame)
