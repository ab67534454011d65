"""Synthetic citizen reports over the real RW polygons, for demos, tests and benchmarks.

Pure array code, deterministic for a seed::

    >>> from gis.demo import generate_demo
    >>> demo = generate_demo(bset.frames["rw"], n=200_000, seed=1)     # doctest: +SKIP
    >>> demo.reports.category.value_counts()                          # doctest: +SKIP

What makes the data look like a city's complaint stream:

- **Where.** Each RW gets an intensity from a seeded Gaussian field, smoothed over
  neighbouring RW centroids (so busy and quiet neighbourhoods come in patches),
  made lognormal, and scaled by the RW's area to a small power.  On top, a few
  dozen hot clusters (a market with illegal parking, a dump, a low street that
  floods) draw a share of the reports into a few hundred metres.  Points are
  uniform inside their RW polygon; cluster points scatter around their centre
  and may cross into neighbouring RWs.  A few tens of points fall in the sea or
  just outside the city border, as real reports do.
- **When.** Days over the period follow a weekly rhythm, a slow trend and the
  wet season (November to March); hours follow a diurnal curve (quiet at night,
  peaks in the morning and the evening).  A handful of storm days in the wet
  season bring bursts of flood, drain and fallen-tree reports, mostly in the
  north.
- **What.** The category mix shifts with the season and the kota (floods in
  Jakarta Utara, parking in Jakarta Pusat, ...).  The OPD is the category's
  default, with some reports re-routed to another OPD on the way.
- **How it went.** Disposition within minutes to hours; first coordination mostly
  within 6 hours; resolution times skewed (most within 7 days, a long tail,
  category-dependent); some rejected; recent and stuck reports still open at
  various stages at the end of the period.  :attr:`DemoData.events` holds every
  report's history (creation, ..., final status), each step allowed by the
  catalog's workflow, with times that agree with ``first_coordinated_at``,
  ``resolved_at`` and ``updated_at``.
- About 3 % of reports are not public.

All times are timezone-aware UTC; the period ends at :data:`DEMO_END` (local time)
unless another end is given, so output does not depend on the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from gis.boundaries import METRIC_CRS, STORAGE_CRS
from petalapor.catalog import Catalog, get_catalog

#: Default end of the generated period (local time, Asia/Jakarta).
DEMO_END = pd.Timestamp("2026-10-31 23:59:59", tz="Asia/Jakarta")
#: Default length of the period, days.
DEMO_DAYS = 365
#: Prefix of every demo report's external id (``demo-0000001``, ...).
DEMO_ID_PREFIX = "demo-"
#: Channels and their shares.
SOURCES: dict[str, float] = {"jaki": 0.55, "qlue": 0.15, "web": 0.14, "sms": 0.08, "open311": 0.08}

#: Relative frequency of each category over a year (catalog codes).
BASE_MIX: dict[str, float] = {
    "sampah": 16,
    "jalan_rusak": 14,
    "parkir_liar": 12,
    "banjir": 9,
    "saluran_air": 10,
    "penerangan_jalan": 7,
    "ketertiban": 6,
    "fasilitas_umum": 6,
    "bangunan_liar": 5,
    "pohon_tumbang": 4,
    "kesehatan": 3,
    "bantuan_sosial": 3,
    "perdagangan": 2,
    "tenaga_kerja": 1,
    "kebakaran": 1,
}
#: Multipliers in the wet season (November-March) and the dry season (July-September).
WET_SEASON: dict[str, float] = {
    "banjir": 3.5,
    "saluran_air": 1.8,
    "pohon_tumbang": 2.0,
    "jalan_rusak": 1.4,
}
DRY_SEASON: dict[str, float] = {"banjir": 0.25, "saluran_air": 0.7, "kebakaran": 2.5}
#: Multipliers per kota code (3171 Selatan, 3172 Timur, 3173 Pusat, 3174 Barat, 3175 Utara).
KOTA_MIX: dict[str, dict[str, float]] = {
    "3175": {"banjir": 2.5, "saluran_air": 1.5, "kebakaran": 1.3},
    "3174": {"banjir": 1.4, "bangunan_liar": 1.3},
    "3173": {"parkir_liar": 1.7, "ketertiban": 1.4, "perdagangan": 1.5},
    "3172": {"sampah": 1.25, "banjir": 1.3},
    "3171": {"pohon_tumbang": 1.6, "jalan_rusak": 1.1},
}
#: Median days to resolution per category (default :data:`_MEDIAN_DAYS`).
MEDIAN_DAYS: dict[str, float] = {
    "kebakaran": 0.15,
    "pohon_tumbang": 0.6,
    "banjir": 0.9,
    "saluran_air": 2.0,
    "parkir_liar": 0.8,
    "ketertiban": 1.0,
    "bangunan_liar": 9.0,
    "jalan_rusak": 3.5,
    "bantuan_sosial": 5.0,
    "tenaga_kerja": 6.0,
}
#: OPDs a report may be re-routed to, per default OPD (default: the kelurahan office).
REROUTES: dict[str, tuple[str, ...]] = {
    "DSDA": ("KELURAHAN", "DBM"),
    "DBM": ("KELURAHAN", "DSDA"),
    "DLH": ("KELURAHAN",),
    "DISHUB": ("SATPOLPP",),
    "SATPOLPP": ("KELURAHAN", "DISHUB"),
    "DCKTRP": ("SATPOLPP",),
    "DPHK": ("GULKARMAT", "KELURAHAN"),
    "KELURAHAN": ("DBM", "DLH"),
}
#: Descriptions, per category (a few phrasings each).
TEXTS: dict[str, tuple[str, ...]] = {
    "banjir": (
        "Banjir setinggi lutut di jalan depan rumah",
        "Genangan air tidak surut sejak pagi",
        "Air masuk ke rumah warga, mohon bantuan",
        "Jalan tergenang, motor banyak yang mogok",
    ),
    "saluran_air": (
        "Saluran air tersumbat sampah",
        "Got mampet dan berbau",
        "Gorong-gorong tertutup lumpur",
    ),
    "sampah": (
        "Tumpukan sampah belum diangkut",
        "Pembuangan sampah liar di pinggir kali",
        "Sampah menumpuk di depan pasar",
        "Truk sampah tidak datang tiga hari",
    ),
    "jalan_rusak": (
        "Jalan berlubang besar, berbahaya untuk motor",
        "Aspal mengelupas setelah hujan",
        "Trotoar rusak dan amblas",
    ),
    "parkir_liar": (
        "Parkir liar di bahu jalan menyebabkan macet",
        "Mobil parkir di trotoar",
        "Juru parkir liar memungut tarif",
    ),
    "penerangan_jalan": (
        "Lampu jalan mati",
        "PJU berkedip sejak seminggu",
        "Jalan gelap, lampu tidak menyala",
    ),
    "ketertiban": (
        "Pengamen dan keributan malam hari",
        "Balap liar tiap malam minggu",
        "Pedagang menutup jalan",
    ),
    "fasilitas_umum": ("Halte rusak", "Bangku taman patah", "Toilet umum tidak berfungsi"),
    "bangunan_liar": ("Bangunan liar di atas saluran", "Bangunan tanpa izin di bantaran kali"),
    "pohon_tumbang": ("Pohon tumbang menutup jalan", "Dahan besar patah, rawan jatuh"),
    "kesehatan": ("Banyak nyamuk, khawatir DBD", "Puskesmas penuh, antrean panjang"),
    "bantuan_sosial": ("Warga lansia belum menerima bantuan", "Data penerima bansos tidak tepat"),
    "perdagangan": ("Harga minyak goreng di pasar tidak wajar", "Pedagang kaki lima di trotoar"),
    "tenaga_kerja": ("Upah pekerja tidak dibayar", "Pengaduan PHK sepihak"),
    "kebakaran": (
        "Kebakaran rumah warga",
        "Asap tebal dari gudang",
        "Korsleting listrik, api kecil",
    ),
}

# Diurnal weights per local hour 0-23 and weekly weights Monday..Sunday.
# fmt: off
_HOURS = np.array([0.25, 0.15, 0.1, 0.1, 0.2, 0.5, 1.1, 1.8, 2.3, 2.4, 2.1, 1.9,
                   1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.0, 2.2, 2.3, 1.8, 1.1, 0.5])
# fmt: on
_WEEKDAYS = np.array([1.15, 1.08, 1.05, 1.05, 1.0, 0.8, 0.66])
_MEDIAN_DAYS = 2.0
_SMOOTH_M = 1500.0  # bandwidth of the intensity field's smoothing
_CLUSTER_SHARE = 0.12  # reports drawn into hot clusters
_STORM_SHARE = 0.05  # reports on storm days
_REJECT_SHARE = 0.055
_REROUTE_SHARE = 0.07
_STUCK_SHARE = 0.04  # stall at some stage, never resolved
_PRIVATE_SHARE = 0.03
_MEDIA_SHARE = 0.65
_US_PER_H = 3_600_000_000


@dataclass(frozen=True)
class DemoData:
    """Generated reports and their status histories."""

    reports: gpd.GeoDataFrame
    """One row per report: the importer's roles as columns, point geometry (EPSG:4326)."""
    events: pd.DataFrame
    """One row per status change: ``source``, ``external_id``, ``seq``, ``from_status``,
    ``to_status``, ``at``, ``actor_opd``, ``note``; ordered by report, then ``seq``."""


def generate_reports(
    rw_frame: gpd.GeoDataFrame, n: int = 200_000, seed: int = 1, **kwargs
) -> gpd.GeoDataFrame:
    """Demo reports only; see :func:`generate_demo` for parameters and the events."""
    return generate_demo(rw_frame, n=n, seed=seed, **kwargs).reports


def generate_demo(
    rw_frame: gpd.GeoDataFrame,
    n: int = 200_000,
    seed: int = 1,
    *,
    end: pd.Timestamp | str = DEMO_END,
    days: int = DEMO_DAYS,
    n_outside: int | None = None,
    catalog: Catalog | None = None,
) -> DemoData:
    """Generate ``n`` realistic reports over the RW polygons, with their histories.

    Parameters
    ----------
    rw_frame
        RW polygons with ``code`` and ``kota_code`` (as ``build_boundary_set``'s
        ``frames["rw"]``); row order does not matter.
    n
        Number of reports (>= 1).
    seed
        Seed; the same seed, frame and arguments give the same output.
    end
        End of the period (a local time in Asia/Jakarta when naive).
    days
        Length of the period in days, ending at ``end``.
    n_outside
        Points in the sea or just outside the border; default ``n / 5000`` clipped to
        10-80 (never more than ``n``).
    catalog
        Category/OPD/status catalog (default: ``data/categories.toml``).

    Returns
    -------
    DemoData
        ``reports`` (GeoDataFrame, EPSG:4326, columns ``external_id``, ``source``,
        ``category``, ``opd``, ``status``, ``title``, ``description``, ``media_url``,
        ``created_at``, ``first_coordinated_at``, ``resolved_at``, ``updated_at``,
        ``public``, ``attrs``, ``lon``, ``lat``, ``geometry``) and ``events``.

    Examples
    --------
    >>> demo = generate_demo(rw, n=1000, seed=7)                        # doctest: +SKIP
    >>> (demo.reports.status == "selesai").mean()                        # doctest: +SKIP
    0.83

    See Also
    --------
    db.ingest.import_frame : stores the output (``petalapor demo-data``).
    """
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if int(days) < 1:
        raise ValueError(f"days must be at least 1, got {days!r}")
    n = int(n)
    catalog = catalog or get_catalog()
    rng = np.random.default_rng(seed)
    rw = _rw_table(rw_frame)
    end_utc = _as_utc(end)
    start_utc = end_utc - pd.Timedelta(days=int(days))
    n_out = min(n, int(np.clip(round(n / 5000), 10, 80)) if n_outside is None else int(n_outside))
    n_storm = int(round((n - n_out) * _STORM_SHARE))
    n_cluster = int(round((n - n_out) * _CLUSTER_SHARE))
    n_base = n - n_out - n_storm - n_cluster

    intensity = _intensity(rw, rng)
    created = _base_times(n_base + n_cluster + n_out, start_utc, end_utc, rng)
    storm_times, storm_days = _storm_times(n_storm, start_utc, end_utc, rng)
    base_rw = rng.choice(len(rw), size=n_base, p=intensity / intensity.sum())
    lon_b, lat_b = _points_in_polygons(rw, base_rw, rng)
    lon_c, lat_c, cluster_cat = _cluster_points(rw, intensity, n_cluster, rng)
    flood_w = intensity * rw["flood_prone"].to_numpy()
    storm_rw = rng.choice(len(rw), size=n_storm, p=flood_w / flood_w.sum())
    lon_s, lat_s = _points_in_polygons(rw, storm_rw, rng)
    lon_o, lat_o = _outside_points(rw, n_out, rng)

    lon = np.concatenate([lon_b, lon_c, lon_o, lon_s])
    lat = np.concatenate([lat_b, lat_c, lat_o, lat_s])
    created_us = np.concatenate([created, storm_times])
    kota = _nearest_kota(rw, lon, lat)
    category = _categories(created_us, kota, rng, catalog)
    category[n_base : n_base + n_cluster] = np.where(
        rng.random(n_cluster) < 0.7, cluster_cat, category[n_base : n_base + n_cluster]
    )
    category[n - n_storm :] = rng.choice(
        np.array(["banjir", "saluran_air", "pohon_tumbang"]), size=n_storm, p=[0.72, 0.16, 0.12]
    )
    # Report order follows time, as a live stream's ids would.
    order = np.argsort(created_us, kind="stable")
    lon, lat, created_us, category = lon[order], lat[order], created_us[order], category[order]
    flow = _workflow(category, created_us, int(end_utc.value // 1000), rng, catalog)
    reports = _assemble(lon, lat, created_us, category, flow, rng, catalog)
    events = _events(reports, flow, catalog)
    reports.attrs = {"seed": seed, "storm_days": storm_days}
    return DemoData(reports=reports, events=events)


# --------------------------------------------------------------------------- where


def _rw_table(rw_frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """RW polygons sorted by code, with metric centroid, area and flood proneness."""
    for col in ("code", "kota_code"):
        if col not in rw_frame.columns:
            raise ValueError(f"rw_frame has no column {col!r}")
    if rw_frame.crs is None:
        raise ValueError("rw_frame has no CRS")
    rw = rw_frame.to_crs(STORAGE_CRS).sort_values("code", kind="stable").reset_index(drop=True)
    rw = rw[~rw.geometry.is_empty & rw.geometry.notna()].reset_index(drop=True)
    if len(rw) == 0:
        raise ValueError("rw_frame has no polygons")
    metric = rw.geometry.to_crs(METRIC_CRS)
    cent = metric.centroid
    rw["cx"], rw["cy"] = cent.x.to_numpy(), cent.y.to_numpy()
    rw["area_km2"] = metric.area.to_numpy() / 1e6
    # Low-lying north floods most: proneness grows towards the coast and in Utara/Barat.
    north = (rw["cy"] - rw["cy"].min()) / max(float(np.ptp(rw["cy"])), 1.0)
    kota_w = rw["kota_code"].astype(str).map({"3175": 2.5, "3174": 1.4, "3172": 1.3}).fillna(1.0)
    rw["flood_prone"] = np.exp(1.6 * north.to_numpy()) * kota_w.to_numpy()
    shapely.prepare(rw.geometry.values)
    return rw


def _intensity(rw: gpd.GeoDataFrame, rng: np.random.Generator) -> np.ndarray:
    """Per-RW report intensity: a smoothed lognormal field times area**0.4."""
    z = rng.standard_normal(len(rw))
    xy = np.c_[rw["cx"].to_numpy(), rw["cy"].to_numpy()]
    smooth = np.empty(len(rw))
    for lo in range(0, len(rw), 1024):  # blocks keep the distance matrix small
        d2 = ((xy[lo : lo + 1024, None, :] - xy[None, :, :]) ** 2).sum(-1)
        w = np.exp(-d2 / (2 * _SMOOTH_M**2))
        smooth[lo : lo + 1024] = (w @ z) / w.sum(1)
    smooth = (smooth - smooth.mean()) / (smooth.std() or 1.0)
    noise = rng.standard_normal(len(rw))
    return np.exp(0.9 * smooth + 0.35 * noise) * np.maximum(rw["area_km2"].to_numpy(), 0.01) ** 0.4


def _points_in_polygons(
    rw: gpd.GeoDataFrame, which: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One uniform point inside polygon ``which[i]`` for each i (rejection sampling)."""
    geoms = rw.geometry.values
    bounds = shapely.bounds(np.asarray(geoms))
    lon = np.full(which.size, np.nan)
    lat = np.full(which.size, np.nan)
    todo = np.arange(which.size)
    for _ in range(60):
        if todo.size == 0:
            break
        b = bounds[which[todo]]
        x = b[:, 0] + rng.random(todo.size) * (b[:, 2] - b[:, 0])
        y = b[:, 1] + rng.random(todo.size) * (b[:, 3] - b[:, 1])
        hit = shapely.contains_xy(np.asarray(geoms)[which[todo]], x, y)
        lon[todo[hit]], lat[todo[hit]] = x[hit], y[hit]
        todo = todo[~hit]
    if todo.size:  # slivers: a point surely inside
        pts = shapely.point_on_surface(np.asarray(geoms)[which[todo]])
        lon[todo], lat[todo] = shapely.get_x(pts), shapely.get_y(pts)
    return lon, lat


def _cluster_points(
    rw: gpd.GeoDataFrame, intensity: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points around a few dozen hot spots, each with its dominant category.

    Points scatter across RW borders but stay on RW land: draws falling in no RW
    (sea, rivers, gaps) are drawn again, so the only points outside are the
    deliberate ones of :func:`_outside_points`.
    """
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0, dtype=object)
    k = int(np.clip(n // 600, 5, 40))
    centres = rng.choice(len(rw), size=k, replace=k > len(rw), p=intensity / intensity.sum())
    kinds = np.array(
        ["sampah", "parkir_liar", "banjir", "jalan_rusak", "ketertiban", "saluran_air"]
    )
    centre_cat = rng.choice(kinds, size=k)
    radius = rng.uniform(120, 450, k)
    weight = rng.lognormal(0, 0.6, k)
    which = rng.choice(k, size=n, p=weight / weight.sum())
    to_lonlat = Transformer.from_crs(METRIC_CRS, STORAGE_CRS, always_xy=True)
    tree = shapely.STRtree(rw.geometry.values)
    lon, lat = np.full(n, np.nan), np.full(n, np.nan)
    todo = np.arange(n)
    for _ in range(30):
        if todo.size == 0:
            break
        w = which[todo]
        cx = rw["cx"].to_numpy()[centres][w] + rng.standard_normal(todo.size) * radius[w]
        cy = rw["cy"].to_numpy()[centres][w] + rng.standard_normal(todo.size) * radius[w]
        x, y = to_lonlat.transform(cx, cy)
        x, y = np.asarray(x), np.asarray(y)
        on_land = np.zeros(todo.size, dtype=bool)
        on_land[tree.query(shapely.points(x, y), predicate="intersects")[0]] = True
        lon[todo[on_land]], lat[todo[on_land]] = x[on_land], y[on_land]
        todo = todo[~on_land]
    if todo.size:  # a centre ringed by water: its own RW
        lon[todo], lat[todo] = _points_in_polygons(rw, centres[which[todo]], rng)
    return lon, lat, centre_cat[which]


def _outside_points(
    rw: gpd.GeoDataFrame, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points in the sea or just outside the border: in no RW, within ~2 km of one."""
    if n == 0:
        return np.empty(0), np.empty(0)
    tree = shapely.STRtree(rw.geometry.values)
    minx, miny, maxx, maxy = rw.total_bounds
    lon_out: list[np.ndarray] = []
    lat_out: list[np.ndarray] = []
    got = 0
    while got < n:
        x = rng.uniform(minx - 0.02, maxx + 0.02, 4 * n + 64)
        y = rng.uniform(miny - 0.02, maxy + 0.02, 4 * n + 64)
        pts = shapely.points(x, y)
        covered = np.zeros(x.size, dtype=bool)
        covered[tree.query(pts, predicate="intersects")[0]] = True
        near = np.zeros(x.size, dtype=bool)
        near[tree.query(pts, predicate="dwithin", distance=0.018)[0]] = True
        keep = near & ~covered
        lon_out.append(x[keep])
        lat_out.append(y[keep])
        got += int(keep.sum())
    return np.concatenate(lon_out)[:n], np.concatenate(lat_out)[:n]


def _nearest_kota(rw: gpd.GeoDataFrame, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Kota code of the RW nearest each point (centroid distance, good enough for the mix)."""
    to_m = Transformer.from_crs(STORAGE_CRS, METRIC_CRS, always_xy=True)
    x, y = to_m.transform(lon, lat)
    tree = shapely.STRtree(shapely.points(rw["cx"].to_numpy(), rw["cy"].to_numpy()))
    idx = tree.query_nearest(shapely.points(x, y), all_matches=False)[1]
    return rw["kota_code"].astype(str).to_numpy()[idx]


# --------------------------------------------------------------------------- when


def _as_utc(value: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp in UTC; naive values are local Jakarta time."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("Asia/Jakarta")
    return ts.tz_convert("UTC")


def _day_weights(
    start_utc: pd.Timestamp, days: int, rng: np.random.Generator
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Local calendar days of the period and their weights (week, season, trend, noise)."""
    local_days = pd.date_range(
        start_utc.tz_convert("Asia/Jakarta").normalize(), periods=days + 1, freq="D"
    )
    month = local_days.month.to_numpy()
    wet = np.isin(month, [11, 12, 1, 2, 3])
    weights = (
        _WEEKDAYS[local_days.day_of_week.to_numpy()]
        * np.where(wet, 1.15, 1.0)
        * np.linspace(0.9, 1.1, len(local_days))
        * rng.lognormal(0, 0.12, len(local_days))
    )
    return local_days, weights


def _times_on_days(
    day_idx: np.ndarray, local_days: pd.DatetimeIndex, hour_w: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """UTC microseconds: the given local days plus a diurnal hour and uniform minutes."""
    hours = rng.choice(24, size=day_idx.size, p=hour_w / hour_w.sum())
    day_us = local_days.tz_convert("UTC").as_unit("us").asi8[day_idx]
    return day_us + hours * _US_PER_H + rng.integers(0, _US_PER_H, day_idx.size)


def _clip_period(
    us: np.ndarray, start_us: int, end_us: int, rng: np.random.Generator
) -> np.ndarray:
    """Times outside the period (first/last partial days) redrawn uniformly inside it."""
    bad = (us < start_us) | (us > end_us)
    us[bad] = rng.integers(start_us, end_us, int(bad.sum()))
    return us


def _base_times(
    n: int, start_utc: pd.Timestamp, end_utc: pd.Timestamp, rng: np.random.Generator
) -> np.ndarray:
    """Creation times (UTC µs) with the weekly, seasonal and diurnal rhythm."""
    days = int((end_utc - start_utc) / pd.Timedelta(days=1))
    local_days, weights = _day_weights(start_utc, days, rng)
    day_idx = rng.choice(len(local_days), size=n, p=weights / weights.sum())
    us = _times_on_days(day_idx, local_days, _HOURS, rng)
    return _clip_period(us, start_utc.value // 1000, end_utc.value // 1000, rng)


def _storm_times(
    n: int, start_utc: pd.Timestamp, end_utc: pd.Timestamp, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Times of storm-burst reports: a few wet-season days, afternoon and evening heavy."""
    days = int((end_utc - start_utc) / pd.Timedelta(days=1))
    local_days, _ = _day_weights(start_utc, days, rng)
    wet = np.flatnonzero(np.isin(local_days.month.to_numpy(), [11, 12, 1, 2, 3]))
    pool = wet if wet.size else np.arange(len(local_days))
    storms = np.sort(rng.choice(pool, size=min(8, pool.size), replace=False))
    if n == 0:
        return np.empty(0, dtype=np.int64), [str(d.date()) for d in local_days[storms]]
    strength = rng.lognormal(0, 0.5, storms.size)
    day_idx = storms[rng.choice(storms.size, size=n, p=strength / strength.sum())]
    hour_w = _HOURS * np.r_[np.ones(13), np.full(8, 2.2), np.ones(3)]
    # Bursts last into the next day, as water recedes slowly.
    day_idx = np.minimum(day_idx + (rng.random(n) < 0.3), len(local_days) - 1)
    us = _times_on_days(day_idx, local_days, hour_w, rng)
    return _clip_period(us, start_utc.value // 1000, end_utc.value // 1000, rng), [
        str(d.date()) for d in local_days[storms]
    ]


# --------------------------------------------------------------------------- what


def _categories(
    created_us: np.ndarray, kota: np.ndarray, rng: np.random.Generator, catalog: Catalog
) -> np.ndarray:
    """Category per report from the base mix, season and kota multipliers."""
    codes = [c for c in BASE_MIX if c in catalog.categories]
    base = np.array([BASE_MIX[c] for c in codes], dtype=float)
    month = (
        pd.to_datetime(created_us, unit="us", utc=True).tz_convert("Asia/Jakarta").month.to_numpy()
    )
    season = np.ones((3, len(codes)))
    for j, code in enumerate(codes):
        season[1, j] = WET_SEASON.get(code, 1.0)
        season[2, j] = DRY_SEASON.get(code, 1.0)
    season_idx = np.where(
        np.isin(month, [11, 12, 1, 2, 3]), 1, np.where(np.isin(month, [7, 8, 9]), 2, 0)
    )
    kota_codes = sorted(set(KOTA_MIX) | set(np.unique(kota)))
    region = np.ones((len(kota_codes), len(codes)))
    for i, k in enumerate(kota_codes):
        for j, code in enumerate(codes):
            region[i, j] = KOTA_MIX.get(k, {}).get(code, 1.0)
    kota_idx = np.searchsorted(np.array(kota_codes), kota)
    w = base[None, :] * season[season_idx] * region[kota_idx]
    cum = np.cumsum(w, axis=1)
    pick = (cum < rng.random(len(w))[:, None] * cum[:, -1:]).sum(axis=1)
    return np.asarray(codes, dtype=object)[np.minimum(pick, len(codes) - 1)]


# --------------------------------------------------------------------------- how it went


@dataclass
class _Flow:
    """Stage times per report (UTC µs, -1 = never happens) and routing."""

    disp: np.ndarray
    coord: np.ndarray
    reroute: np.ndarray
    coord2: np.ndarray
    proses: np.ndarray
    done: np.ndarray
    reject: np.ndarray
    reject_from_disp: np.ndarray
    opd0: np.ndarray
    opd: np.ndarray
    end_us: int


def _lognormal_us(
    rng: np.random.Generator, median_h: float | np.ndarray, sigma: float, n: int
) -> np.ndarray:
    """Durations in µs, lognormal with the given median (hours)."""
    return (rng.lognormal(0.0, sigma, n) * np.asarray(median_h) * _US_PER_H).astype(np.int64)


def _workflow(
    category: np.ndarray,
    created: np.ndarray,
    end_us: int,
    rng: np.random.Generator,
    catalog: Catalog,
) -> _Flow:
    """Stage times: disposition, coordination (re-routing), progress, completion or rejection."""
    n = category.size
    opd0 = (
        pd.Series(category)
        .map({c: cat.opd for c, cat in catalog.categories.items()})
        .to_numpy(dtype=object)
    )
    disp = created + (rng.exponential(0.45, n) * _US_PER_H).astype(np.int64) + 60_000_000
    coord = disp + _lognormal_us(rng, 1.3, 1.0, n)
    rerouted = rng.random(n) < _REROUTE_SHARE
    reroute = np.where(rerouted, coord + _lognormal_us(rng, 4.0, 0.9, n), -1)
    coord2 = np.where(rerouted, reroute + _lognormal_us(rng, 1.5, 0.9, n), -1)
    last_coord = np.where(rerouted, coord2, coord)
    proses = last_coord + _lognormal_us(rng, 4.0, 1.0, n)
    median_d = np.array([MEDIAN_DAYS.get(c, _MEDIAN_DAYS) for c in category])
    done = created + _lognormal_us(rng, median_d * 24.0, 1.15, n)
    done = np.maximum(done, proses + 600_000_000)
    rejected = rng.random(n) < _REJECT_SHARE
    reject_from_disp = rejected & (rng.random(n) < 0.45)
    reject = np.where(
        rejected,
        np.where(reject_from_disp, disp, created) + _lognormal_us(rng, 8.0, 1.0, n),
        -1,
    )
    for stage in (coord, reroute, coord2, proses, done):
        stage[rejected] = -1
    disp[rejected & ~reject_from_disp] = -1
    # Stuck reports stall at some stage for good (backlogs exist at every stage).
    stuck = (rng.random(n) < _STUCK_SHARE) & ~rejected
    stall = rng.choice(4, size=n, p=[0.15, 0.2, 0.25, 0.4])  # last stage reached
    for k, stage in enumerate((disp, coord, proses, done)):
        cut = stuck & (stall < k + 1) if k < 3 else stuck
        stage[cut] = -1
    reroute[stuck & (stall < 3)] = -1
    coord2[stuck & (stall < 3)] = -1
    opd = opd0.copy()
    moved = rerouted & ~rejected
    for code in sorted(set(opd0[moved])):
        rows = np.flatnonzero(moved & (opd0 == code))
        choices = [o for o in REROUTES.get(code, ("KELURAHAN",)) if o in catalog.opds and o != code]
        if choices:
            opd[rows] = np.asarray(choices, dtype=object)[rng.integers(0, len(choices), rows.size)]
    return _Flow(
        disp, coord, reroute, coord2, proses, done, reject, reject_from_disp, opd0, opd, end_us
    )


def _happened(t: np.ndarray, end_us: int) -> np.ndarray:
    """True where a stage happened by the end of the period."""
    return (t >= 0) & (t <= end_us)


def _assemble(
    lon: np.ndarray,
    lat: np.ndarray,
    created: np.ndarray,
    category: np.ndarray,
    flow: _Flow,
    rng: np.random.Generator,
    catalog: Catalog,
) -> gpd.GeoDataFrame:
    """The reports frame: status and timestamps as of the end of the period."""
    n = lon.size
    end = flow.end_us
    status = np.full(n, "menunggu", dtype=object)
    last = created.copy()
    # Later stages overwrite earlier ones; each only where it happened by the end.
    for stage, code in (
        (flow.disp, "disposisi"),
        (flow.coord, "koordinasi"),
        (flow.reroute, "disposisi"),
        (flow.coord2, "koordinasi"),
        (flow.proses, "proses"),
        (flow.done, "selesai"),
        (flow.reject, "ditolak"),
    ):
        ok = _happened(stage, end)
        status[ok] = code
        last[ok] = stage[ok]
    rerouted_yet = _happened(flow.reroute, end)
    opd = np.where(rerouted_yet, flow.opd, flow.opd0)
    first_coord = np.where(_happened(flow.coord, end), flow.coord, -1)
    resolved = np.where(_happened(flow.done, end), flow.done, -1)
    ids = pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(7)
    external_id = (DEMO_ID_PREFIX + ids).to_numpy()
    names = np.array(list(SOURCES))
    source = rng.choice(names, size=n, p=np.array(list(SOURCES.values())) / sum(SOURCES.values()))
    description = np.empty(n, dtype=object)
    for code in np.unique(category):
        rows = np.flatnonzero(category == code)
        texts = np.array(TEXTS.get(code, (catalog.categories[code].name_id,)), dtype=object)
        description[rows] = texts[rng.integers(0, texts.size, rows.size)]
    title = np.array([catalog.categories[c].name_id for c in np.unique(category)], dtype=object)[
        np.searchsorted(np.unique(category), category)
    ]
    has_media = rng.random(n) < _MEDIA_SHARE
    media = pd.Series(external_id).radd("https://demo.petalapor.invalid/media/").add(".jpg")
    public = rng.random(n) >= _PRIVATE_SHARE
    frame = pd.DataFrame(
        {
            "external_id": external_id,
            "source": source,
            "category": category.astype(object),
            "opd": opd,
            "status": status,
            "title": title,
            "description": description,
            "media_url": media.where(has_media, None).to_numpy(dtype=object),
            "created_at": _ts(created),
            "first_coordinated_at": _ts(first_coord),
            "resolved_at": _ts(resolved),
            "updated_at": _ts(last),
            "public": public,
            "attrs": '{"demo": true}',
            "lon": lon,
            "lat": lat,
        }
    )
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(lon, lat), crs=STORAGE_CRS)


def _ts(us: np.ndarray) -> pd.Series:
    """UTC µs (-1 = missing) as a timezone-aware Series."""
    out = pd.Series(pd.to_datetime(np.where(us >= 0, us, 0), unit="us", utc=True))
    return out.where(us >= 0, pd.NaT)


def _events(reports: gpd.GeoDataFrame, flow: _Flow, catalog: Catalog) -> pd.DataFrame:
    """Every report's history: creation, then each stage reached by the end, in order."""
    end = flow.end_us
    n = len(reports)
    created = reports["created_at"].array.as_unit("us").asi8
    steps = [  # (time, to_status, actor OPD)
        (created, "menunggu", None),
        (flow.disp, "disposisi", None),
        (flow.coord, "koordinasi", flow.opd0),
        (flow.reroute, "disposisi", flow.opd0),
        (flow.coord2, "koordinasi", flow.opd),
        (flow.proses, "proses", flow.opd),
        (flow.done, "selesai", flow.opd),
        (flow.reject, "ditolak", np.where(flow.reject_from_disp, flow.opd0, None)),
    ]
    rows, at, to, actor, step_no = [], [], [], [], []
    for k, (t, code, who) in enumerate(steps):
        ok = _happened(t, end) if k else np.ones(n, dtype=bool)
        idx = np.flatnonzero(ok)
        rows.append(idx)
        at.append(t[idx])
        to.append(np.full(idx.size, code, dtype=object))
        actor.append(
            np.full(idx.size, None, dtype=object)
            if who is None
            else np.asarray(who, dtype=object)[idx]
        )
        step_no.append(np.full(idx.size, k))
    row = np.concatenate(rows)
    order = np.lexsort((np.concatenate(step_no), row))
    row = row[order]
    to_status = np.concatenate(to)[order]
    first = np.r_[True, row[1:] != row[:-1]]
    from_status = np.where(first, None, np.concatenate([[None], to_status[:-1]]))
    seq = np.arange(row.size) - np.maximum.accumulate(np.where(first, np.arange(row.size), 0))
    rerouted_here = np.concatenate(to)[order] == "disposisi"
    note = np.where(
        rerouted_here & (from_status == "koordinasi"),
        "dialihkan ke " + pd.Series(reports["opd"].to_numpy()[row]).astype(str).to_numpy(),
        None,
    )
    return pd.DataFrame(
        {
            "source": reports["source"].to_numpy()[row],
            "external_id": reports["external_id"].to_numpy()[row],
            "seq": seq.astype(np.int32),
            "from_status": from_status,
            "to_status": to_status,
            "at": _ts(np.concatenate(at)[order]),
            "actor_opd": np.concatenate(actor)[order],
            "note": note,
        }
    )
