"""Resolution metrics per RW next to JakWifi coverage and ISPU exposure.

Pure pandas/numpy/scipy code; :mod:`db.analysis` reads the inputs from the
database (``jakwifi_coverage`` and the ISPU readings of the layers package).

Inputs, one row per RW ``code``
-------------------------------
metrics
    :func:`gis.metrics.resolution_metrics` at ``unit="rw"`` (no period or
    category grouping).
wifi
    ``wifi_count`` (hotspots snapped to the RW), ``wifi_per_km2`` and
    ``wifi_nearest_m`` (UTM 48S distance from the RW centroid to the nearest
    hotspot): the definitions of the layers package's ``jakwifi_coverage``,
    mirrored by :func:`wifi_coverage` for frames.
ispu
    ``ispu_mean``: the period mean ISPU at the RW centroid (each station's
    mean over the period, interpolated by inverse-distance weighting).
hot
    ``hot_class``: the RW's Gi* class for report counts (:mod:`gis.hotspots`).

Correlations
------------
Spearman's rank correlation between each resolution metric and each
covariate over the **reliable** RWs (``reliable`` is true) with both values
present.  Confidence intervals: ``"fisher"`` (default), ``tanh(atanh(rho) +-
z * sqrt(1.06 / (n - 3)))`` (Fieller, Hartley and Pearson 1957, the
variance of Fisher's z for Spearman's rho); or ``"bootstrap"``: percentile
interval of ``n_boot`` resamples of RWs (seeded).  ``p_value`` is scipy's
(t approximation).  Correlation across areas is ecological: it describes
RWs, not people, and is not a causal estimate.

Poorly served RWs
-----------------
A RW is *poorly served by wifi* when it has no hotspot of its own **and** its
centroid is more than ``max_distance_m`` (default 300 m) from the nearest
hotspot.  :func:`priority_rws` lists the RWs that are report hot spots
(Gi* ``hot_*``) and poorly served, hottest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import stats

from petalapor.errors import DataError, InvalidParameterError

#: Resolution metrics correlated by default.
METRICS: tuple[str, ...] = (
    "resolved_share",
    "median_days",
    "resolved_7d_share",
    "coordinated_6h_share",
)
#: Covariates, by the layer that provides them.
COVARIATES: dict[str, tuple[str, ...]] = {
    "wifi": ("wifi_per_km2", "wifi_nearest_m"),
    "ispu": ("ispu_mean",),
}
CI_METHODS: tuple[str, ...] = ("fisher", "bootstrap")
#: Short statement of the method, served with every overlay.
NOTES = (
    "Spearman rank correlations over reliable RWs (>= min_reports non-rejected reports); "
    "Fisher-z intervals use var = 1.06/(n-3), bootstrap intervals are percentile intervals of "
    "resampled RWs (seeded). Correlations between areas are ecological, not causal. Poorly served: "
    "no JakWifi hotspot in the RW and the nearest more than max_distance_m from its centroid. "
    "Priority RWs: Gi* report hot spots (hot_*) that are poorly served, hottest first."
)
METRIC_CRS = "EPSG:32748"


def wifi_coverage(rw: gpd.GeoDataFrame, hotspots: gpd.GeoDataFrame) -> pd.DataFrame:
    """JakWifi coverage per RW from frames (the ``jakwifi_coverage`` definitions).

    Parameters
    ----------
    rw
        RW polygons with ``code`` (any CRS).
    hotspots
        Hotspot points with ``rw_code`` (any CRS).

    Returns
    -------
    pandas.DataFrame
        ``code, wifi_count, wifi_per_km2, wifi_nearest_m`` in ``rw`` order.

    Examples
    --------
    >>> wifi_coverage(rw, hotspots).head()                       # doctest: +SKIP
    """
    if len(hotspots) == 0:
        raise DataError("no hotspots given")
    polys = rw.to_crs(METRIC_CRS)
    pts = hotspots.to_crs(METRIC_CRS).geometry.to_numpy()
    centres = shapely.centroid(polys.geometry.to_numpy())
    tree = shapely.STRtree(pts)
    idx = tree.query_nearest(centres, all_matches=False, return_distance=False)
    nearest = np.full(len(centres), np.nan)
    nearest[idx[0]] = shapely.distance(centres[idx[0]], pts[idx[1]])
    counts = hotspots["rw_code"].value_counts()
    code = rw["code"].astype(object)
    count = code.map(counts).fillna(0).astype(np.int64).to_numpy()
    area = shapely.area(polys.geometry.to_numpy()) / 1e6
    return pd.DataFrame(
        {
            "code": code.to_numpy(),
            "wifi_count": count,
            "wifi_per_km2": count / area,
            "wifi_nearest_m": nearest,
        }
    )


def overlay_table(
    metrics: pd.DataFrame,
    *,
    wifi: pd.DataFrame | None = None,
    ispu: pd.DataFrame | None = None,
    hot: pd.DataFrame | None = None,
    max_distance_m: float = 300.0,
) -> pd.DataFrame:
    """One row per RW: resolution metrics with the covariates that are given.

    Parameters
    ----------
    metrics
        RW metrics (:func:`gis.metrics.resolution_metrics`, ``unit="rw"``).
    wifi, ispu, hot
        Frames keyed by ``code`` (see the module docstring); None leaves
        their columns out.
    max_distance_m
        Threshold of ``poorly_served`` (only with ``wifi``).

    Returns
    -------
    pandas.DataFrame
        ``metrics`` (rows with a code) left-joined with the covariates, plus
        ``poorly_served`` when ``wifi`` is given.
    """
    if "code" not in metrics or metrics["unit"].ne("rw").any():
        raise DataError("overlay_table needs RW metrics (unit='rw')")
    if metrics.duplicated("code").any():
        raise DataError("overlay_table needs one metrics row per RW (no period/category grouping)")
    table = metrics[metrics["code"].notna()].reset_index(drop=True)
    for extra, cols in (
        (wifi, ["wifi_count", "wifi_per_km2", "wifi_nearest_m"]),
        (ispu, ["ispu_mean"]),
        (hot, ["hot_class", "hot_z"]),
    ):
        if extra is not None:
            present = [c for c in cols if c in extra.columns]
            table = table.merge(extra[["code", *present]], on="code", how="left")
    if wifi is not None:
        table["poorly_served"] = poorly_served(table, max_distance_m=max_distance_m)
    return table


def poorly_served(table: pd.DataFrame, *, max_distance_m: float = 300.0) -> np.ndarray:
    """True where a RW has no hotspot and the nearest is farther than ``max_distance_m``."""
    if max_distance_m < 0:
        raise InvalidParameterError(f"max_distance_m must be >= 0, got {max_distance_m}")
    count = table["wifi_count"].fillna(0).to_numpy()
    nearest = table["wifi_nearest_m"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return (count == 0) & ~(nearest <= max_distance_m)


def spearman_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    method: str = "fisher",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman's rho with a confidence interval.

    Parameters
    ----------
    x, y
        Paired values (pairs with a NaN are dropped).
    method
        ``"fisher"`` or ``"bootstrap"`` (see the module docstring).
    level
        Confidence level.
    n_boot, seed
        Bootstrap resamples and their seed.

    Returns
    -------
    dict
        ``n, rho, ci_low, ci_high, p_value, method`` (NaN when n < 4 or a
        variable is constant).

    Examples
    --------
    >>> r = spearman_ci([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    >>> round(r["rho"], 3), r["n"]
    (0.829, 6)
    """
    if method not in CI_METHODS:
        raise InvalidParameterError(f"ci must be one of {', '.join(CI_METHODS)}, got {method!r}")
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got {level}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {
        "n": int(len(x)),
        "rho": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p_value": np.nan,
        "method": method,
    }
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    res = stats.spearmanr(x, y)
    rho = float(res.statistic)
    out.update(rho=rho, p_value=float(res.pvalue))
    if method == "fisher":
        out["ci_low"], out["ci_high"] = _fisher_ci(rho, len(x), level)
    else:
        out["ci_low"], out["ci_high"] = _bootstrap_ci(x, y, level, n_boot, seed)
    return out


def correlations(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] = METRICS,
    covariates: Sequence[str] | None = None,
    method: str = "fisher",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    reliable_only: bool = True,
) -> pd.DataFrame:
    """Spearman correlations of each metric with each covariate present in ``table``.

    Returns
    -------
    pandas.DataFrame
        ``metric, covariate, n, rho, ci_low, ci_high, p_value, method``.
    """
    if covariates is None:
        covariates = [c for cols in COVARIATES.values() for c in cols if c in table.columns]
    missing = [c for c in (*metrics, *covariates) if c not in table.columns]
    if missing:
        raise DataError(f"overlay table lacks column(s) {missing}")
    rows = table[table["reliable"].astype(bool)] if reliable_only else table
    out = [
        {
            "metric": m,
            "covariate": c,
            **spearman_ci(
                rows[m].to_numpy(float),
                rows[c].to_numpy(float),
                method=method,
                level=level,
                n_boot=n_boot,
                seed=seed,
            ),
        }
        for m in metrics
        for c in covariates
    ]
    return pd.DataFrame(
        out, columns=["metric", "covariate", "n", "rho", "ci_low", "ci_high", "p_value", "method"]
    )


def priority_rws(table: pd.DataFrame) -> pd.DataFrame:
    """RWs that are report hot spots (Gi* ``hot_*``) and poorly served by wifi, hottest first."""
    need = ["hot_class", "hot_z", "poorly_served"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"overlay table lacks column(s) {missing}")
    hot = table["hot_class"].fillna("").str.startswith("hot").to_numpy()
    rows = table[hot & table["poorly_served"].fillna(False).to_numpy(dtype=bool)]
    return rows.sort_values(["hot_z", "code"], ascending=[False, True]).reset_index(drop=True)


def _fisher_ci(rho: float, n: int, level: float) -> tuple[float, float]:
    if n <= 3 or abs(rho) >= 1:
        return (rho, rho) if abs(rho) >= 1 else (np.nan, np.nan)
    z = np.arctanh(rho)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(1.06 / (n - 3))
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def _bootstrap_ci(
    x: np.ndarray, y: np.ndarray, level: float, n_boot: int, seed: int
) -> tuple[float, float]:
    if not 100 <= n_boot <= 100_000:
        raise InvalidParameterError(f"n_boot must be in 100..100000, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx = stats.rankdata(x[idx], axis=1)
    ry = stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    rho = rho[np.isfinite(rho)]
    alpha = (1 - level) / 2
    return float(np.quantile(rho, alpha)), float(np.quantile(rho, 1 - alpha))
