"""Hot spots of citizen reports: Getis-Ord Gi* and Local Moran's I.

Pure code on arrays and GeoDataFrames (esda + libpysal); the service feeds it
per-unit values from :func:`db.analysis.unit_values`.

Units and weights
-----------------
* **H3 cells** (``h3_7`` ... ``h3_10``): every cell of the study area (zeros
  included), neighbours are the grid ring 1 (:func:`h3_weights`).
* **RW polygons** (or any polygons): Queen contiguity, i.e. polygons sharing
  at least a point, found with a small snapping tolerance in UTM 48S
  (default 1 m; boundary files have slivers and hairline gaps;
  ``tolerance_m=0`` is strict Queen) (:func:`polygon_weights`).
* **Islands** (units with no neighbour) are joined to their nearest unit
  (centroid distance in UTM 48S), so every unit has at least one neighbour;
  the number joined is reported in the result's ``attrs["islands"]``.

Statistics
----------
* **Gi*** (:func:`gi_star`): :class:`esda.G_Local` with ``star=True`` on
  binary weights with self-weight 1, the classical Getis-Ord Gi*; ``z`` is
  the Gi* z-score.  Permutation pseudo p-values are esda's (conditional
  randomisation, seeded; esda reports the one-sided "directed" value
  ``p_sim``); the p-value used here is **two-sided**,
  ``p = min(1, 2 * p_sim)``.
* **Local Moran's I** (:func:`local_moran`): :class:`esda.Moran_Local` on
  row-standardised weights; quadrants HH, LH, LL, HL (value / spatial lag
  above or below the mean), two-sided permutation p-values as above.
* **Multiple testing**: Benjamini-Hochberg over all units
  (:func:`bh_qvalues`; q-values, i.e. BH-adjusted p-values, so a unit is
  significant at FDR level *a* when ``q <= a``).  Gi* classes are
  ``hot_99 / hot_95 / hot_90`` (``q <= 0.01 / 0.05 / 0.10`` and ``z > 0``),
  ``cold_*`` likewise with ``z < 0``, else ``ns``.  Moran clusters are the
  quadrant when ``q <= alpha`` (default 0.05), else ``ns``.
* **Inference**: ``"permutation"`` (default) or ``"normal"`` (two-sided
  normal p-value of the z-score: Gi*'s analytical z, Moran's conditional
  z).  With ``P`` permutations no p-value is below ``2 / (P + 1)``, and BH
  needs ``p <= k q / n`` for the k-th smallest of n p-values, so on fine
  grids (thousands of units) a permutation test can only flag large
  clusters at 99 %: raise ``permutations`` or use ``inference="normal"``.
  The result's ``attrs["min_p"]`` says where that floor is.  The default is
  9,999 permutations (1.4 s for 6,000 r9 cells on a laptop core).

Examples
--------
>>> w = h3_weights(cells)                                        # doctest: +SKIP
>>> gi_star(counts, w, seed=1)["class"].value_counts()           # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import stats

from gis.metrics import UNITS, MetricSpec, report_timing, select_reports
from petalapor.errors import DataError, InvalidParameterError

METHODS: tuple[str, ...] = ("gistar", "moran")
METRICS: tuple[str, ...] = ("count", "rate", "backlog")
INFERENCES: tuple[str, ...] = ("permutation", "normal")
#: Units a hot-spot analysis may use (finer H3 grids have too many cells for permutations).
HOTSPOT_UNITS: tuple[str, ...] = ("rw", "kelurahan", "kecamatan", "h3_7", "h3_8", "h3_9", "h3_10")
#: Default number of conditional permutations: the smallest two-sided p-value is
#: 2 / 10000, so BH at 1 % can flag a cluster of ~0.02 x n_units cells (999 would need 0.2 x n).
DEFAULT_PERMUTATIONS = 9999
#: Confidence levels of the Gi* classes, strongest first.
LEVELS: tuple[tuple[int, float], ...] = ((99, 0.01), (95, 0.05), (90, 0.10))
QUADRANTS: dict[int, str] = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}
METRIC_CRS = "EPSG:32748"


# --------------------------------------------------------------------------- weights


def h3_weights(cells: Sequence[int] | np.ndarray, ids: Sequence[str] | None = None):
    """Grid-ring-1 adjacency of H3 cells (libpysal ``W``; islands joined to their nearest cell).

    Parameters
    ----------
    cells
        int64 H3 cells, one per unit, all of one resolution.
    ids
        Unit ids in the same order (default: the cells' hex strings).

    Returns
    -------
    libpysal.weights.W
        Binary weights with ``id_order`` equal to ``ids``; ``w.islands_joined``
        counts the islands that were joined.

    Examples
    --------
    >>> import h3
    >>> c = h3.str_to_int(h3.latlng_to_cell(-6.2, 106.8, 9))
    >>> ring = [h3.str_to_int(x) for x in h3.grid_disk(h3.int_to_str(c), 1)]
    >>> h3_weights(ring).cardinalities[h3.int_to_str(c)]
    6
    """
    from h3.api import basic_int as h3i

    cells = np.asarray(cells, dtype=np.int64)
    if len(np.unique(cells)) != len(cells):
        raise DataError("h3_weights: cells repeat")
    if ids is None:
        from gis.hexes import cells_to_str

        ids = list(cells_to_str(cells))
    position = {int(c): i for i, c in enumerate(cells.tolist())}
    neighbours = [
        sorted(position[n] for n in h3i.grid_ring(c, 1) if n in position) for c in cells.tolist()
    ]
    lonlat = (
        np.array([h3i.cell_to_latlng(c)[::-1] for c in cells.tolist()])
        if len(cells)
        else np.zeros((0, 2))
    )
    return _weights(neighbours, list(ids), _metric_xy(lonlat))


def polygon_weights(frame: gpd.GeoDataFrame, id_column: str = "code", *, tolerance_m: float = 1.0):
    """Queen contiguity of polygons (libpysal ``W``; islands joined to their nearest polygon).

    Parameters
    ----------
    frame
        Polygons in any CRS (distances are taken in UTM 48S).
    id_column
        Unit id column (unique).
    tolerance_m
        Polygons closer than this are neighbours (0: strictly touching).

    Returns
    -------
    libpysal.weights.W
        Binary weights with ``id_order`` equal to the ids in frame order.
    """
    if tolerance_m < 0:
        raise InvalidParameterError(f"tolerance_m must be >= 0, got {tolerance_m}")
    ids = frame[id_column].astype(str).tolist()
    if len(set(ids)) != len(ids):
        raise DataError(f"polygon_weights: {id_column} repeats")
    metric = (
        frame.to_crs(METRIC_CRS).geometry.to_numpy()
        if frame.crs is not None
        else frame.geometry.to_numpy()
    )
    tree = shapely.STRtree(metric)
    if tolerance_m > 0:
        left, right = tree.query(metric, predicate="dwithin", distance=tolerance_m)
    else:
        left, right = tree.query(metric, predicate="intersects")
    keep = left != right
    neighbours: list[list[int]] = [[] for _ in ids]
    for a, b in zip(left[keep].tolist(), right[keep].tolist(), strict=True):
        neighbours[a].append(b)
    centroids = (
        shapely.get_coordinates(shapely.centroid(metric)) if len(metric) else np.zeros((0, 2))
    )
    return _weights([sorted(set(n)) for n in neighbours], ids, centroids)


def _weights(neighbours: list[list[int]], ids: list[str], xy: np.ndarray):
    """A binary libpysal W from neighbour positions; islands get their nearest unit."""
    from libpysal.weights import W

    islands = [i for i, n in enumerate(neighbours) if not n]
    if islands and len(ids) > 1:
        for i in islands:
            dist = np.hypot(xy[:, 0] - xy[i, 0], xy[:, 1] - xy[i, 1])
            dist[i] = np.inf
            j = int(np.argmin(dist))
            neighbours[i] = [j]
            if i not in neighbours[j]:
                neighbours[j] = sorted([*neighbours[j], i])
    mapping = {ids[i]: [ids[j] for j in n] for i, n in enumerate(neighbours)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = W(mapping, id_order=ids, silence_warnings=True)
    w.islands_joined = len(islands)
    return w


def _metric_xy(lonlat: np.ndarray) -> np.ndarray:
    from pyproj import Transformer

    if len(lonlat) == 0:
        return lonlat
    x, y = Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True).transform(
        lonlat[:, 0], lonlat[:, 1]
    )
    return np.column_stack([x, y])


# --------------------------------------------------------------------------- statistics


def bh_qvalues(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN.

    ``q_(i) = min_{j >= i} n p_(j) / j`` over the sorted p-values, capped at 1;
    rejecting every ``q <= a`` is the BH step-up procedure at FDR level *a*.

    Examples
    --------
    >>> bh_qvalues([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
    [0.04, 0.053, 0.053, 0.5]
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    n = int(ok.sum())
    if n == 0:
        return out
    order = np.argsort(p[ok], kind="stable")
    ranked = p[ok][order] * n / np.arange(1, n + 1)
    q = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    values = np.empty(n)
    values[order] = q
    out[ok] = values
    return out


def gi_star(
    y: Sequence[float] | np.ndarray,
    w: Any,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    inference: str = "permutation",
) -> pd.DataFrame:
    """Getis-Ord Gi* with permutation p-values, BH correction and hot/cold classes.

    Parameters
    ----------
    y
        One value per unit, in ``w.id_order``.
    w
        Binary libpysal weights (see :func:`h3_weights`, :func:`polygon_weights`).
    permutations
        Conditional permutations (0 allowed with ``inference="normal"``).
    seed
        Seed of the permutations (esda's ``seed``).
    inference
        ``"permutation"`` or ``"normal"`` (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id: ``gi`` (statistic), ``z`` (z-score), ``p_norm``
        (two-sided normal), ``p_sim`` (esda's directed pseudo p-value),
        ``p_value`` (the one used), ``q_value`` (BH) and ``class``.

    Examples
    --------
    >>> gi_star(counts, w, seed=7)["class"].value_counts()        # doctest: +SKIP

    See Also
    --------
    esda.G_Local, local_moran, bh_qvalues
    """
    y = _check_values(y, w)
    _check_inference(inference, permutations)
    from esda.getisord import G_Local

    out = pd.DataFrame(index=pd.Index(w.id_order, name="code"))
    if _constant(y):
        return _flat(out, ("gi", "z", "p_norm", "p_sim"), "class")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = G_Local(
            y,
            w,
            transform="B",
            star=True,
            permutations=permutations,
            seed=seed,
            n_jobs=1,
            keep_simulations=False,
        )
    out["gi"] = g.Gs
    out["z"] = g.Zs
    out["p_norm"] = np.minimum(1.0, 2.0 * stats.norm.sf(np.abs(g.Zs)))
    out["p_sim"] = _exact_p(g.p_sim, permutations) if permutations else np.nan
    out["p_value"] = (
        _two_sided(out["p_sim"].to_numpy()) if inference == "permutation" else out["p_norm"]
    )
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy())
    out["class"] = classify_gi(out["z"].to_numpy(), out["q_value"].to_numpy())
    return out


def local_moran(
    y: Sequence[float] | np.ndarray,
    w: Any,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    inference: str = "permutation",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Local Moran's I with quadrants, permutation p-values and BH correction.

    Parameters
    ----------
    y, w, permutations, seed, inference
        As for :func:`gi_star`; ``w`` is row-standardised inside esda.
    alpha
        FDR level at which a unit's quadrant becomes its cluster.

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id: ``i`` (local I), ``z`` (conditional-randomisation
        z), ``p_norm``, ``p_sim``, ``p_value``, ``q_value``, ``quadrant``
        (HH/LH/LL/HL) and ``cluster`` (the quadrant or ``ns``).

    See Also
    --------
    esda.Moran_Local, gi_star
    """
    y = _check_values(y, w)
    _check_inference(inference, permutations)
    if not 0 < alpha < 1:
        raise InvalidParameterError(f"alpha must be in (0, 1), got {alpha}")
    from esda.moran import Moran_Local

    out = pd.DataFrame(index=pd.Index(w.id_order, name="code"))
    if _constant(y):
        out = _flat(out, ("i", "z", "p_norm", "p_sim"), "cluster")
        out["quadrant"] = None
        return out[["i", "z", "p_norm", "p_sim", "p_value", "q_value", "quadrant", "cluster"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = Moran_Local(
            y,
            _copy_w(w),
            transformation="r",
            permutations=permutations,
            seed=seed,
            n_jobs=1,
            keep_simulations=False,
        )
        z = (m.Is - m.EIc) / np.sqrt(m.VIc)
    out["i"] = m.Is
    out["z"] = z
    out["p_norm"] = np.minimum(1.0, 2.0 * stats.norm.sf(np.abs(z)))
    out["p_sim"] = _exact_p(m.p_sim, permutations) if permutations else np.nan
    out["p_value"] = (
        _two_sided(out["p_sim"].to_numpy()) if inference == "permutation" else out["p_norm"]
    )
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy())
    out["quadrant"] = [QUADRANTS.get(int(q)) for q in m.q]
    out["cluster"] = np.where(
        out["q_value"].to_numpy() <= alpha, out["quadrant"].to_numpy(dtype=object), "ns"
    )
    return out


def classify_gi(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``hot_99 ... cold_90`` or ``ns`` from z-scores and q-values.

    Examples
    --------
    >>> classify_gi(np.array([3.0, -2.0, 1.0]), np.array([0.004, 0.03, 0.2])).tolist()
    ['hot_99', 'cold_95', 'ns']
    """
    out = np.full(len(z), "ns", dtype=object)
    with np.errstate(invalid="ignore"):
        for level, cut in reversed(LEVELS):
            sig = np.asarray(q) <= cut
            out[sig & (np.asarray(z) > 0)] = f"hot_{level}"
            out[sig & (np.asarray(z) < 0)] = f"cold_{level}"
    return out


def min_attainable_p(permutations: int) -> float:
    """Smallest two-sided permutation p-value with ``permutations`` draws: ``2 / (P + 1)``."""
    return min(1.0, 2.0 / (permutations + 1))


# --------------------------------------------------------------------------- values and frames


def unit_values(reports: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """Reports and open backlog per unit from a frame (as :func:`db.analysis.unit_values`).

    Returns
    -------
    pandas.DataFrame
        ``code`` (str; H3 as hex), ``reports``, ``open``; units with reports only.
    """
    if spec.unit is None:
        raise InvalidParameterError("a hot-spot analysis needs a unit")
    rows = select_reports(reports, spec)
    state = report_timing(rows, spec.as_of)["state"].to_numpy()
    column = rows[UNITS[spec.unit]]
    ok = column.notna().to_numpy()
    frame = pd.DataFrame({"code": column.to_numpy()[ok], "open": (state[ok] == 0).astype(np.int64)})
    out = (
        frame.groupby("code", sort=True)
        .agg(reports=("open", "size"), open=("open", "sum"))
        .reset_index()
    )
    if spec.unit.startswith("h3_"):
        from gis.hexes import cells_to_str

        out["code"] = cells_to_str(out["code"].to_numpy(dtype=np.int64))
    return out.astype({"code": object, "reports": np.int64, "open": np.int64})


def metric_values(units: pd.DataFrame, values: pd.DataFrame, metric: str) -> np.ndarray:
    """The analysed variable per unit (units order): ``count``, ``rate`` (per km²) or ``backlog``.

    Units without reports get 0.
    """
    if metric not in METRICS:
        raise InvalidParameterError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    merged = units[["code"]].merge(values, on="code", how="left")
    reports = merged["reports"].fillna(0).to_numpy(dtype=float)
    if metric == "count":
        return reports
    if metric == "backlog":
        return merged["open"].fillna(0).to_numpy(dtype=float)
    area = units["area_km2"].to_numpy(dtype=float)
    if (area <= 0).any():
        raise DataError("rate per km² needs a positive area for every unit")
    return reports / area


def hex_units(cells: np.ndarray) -> gpd.GeoDataFrame:
    """H3 cells as units: ``code`` (hex string), ``h3``, ``area_km2``, hexagon ``geometry``."""
    import h3

    from gis.hexes import cells_to_frame

    frame = cells_to_frame(np.asarray(cells, dtype=np.int64))
    frame["code"] = frame["h3_str"].astype(object)
    frame["area_km2"] = [h3.cell_area(c, unit="km^2") for c in frame["code"]]
    return frame[["code", "h3", "area_km2", "geometry"]]


def hotspot_frame(
    units: gpd.GeoDataFrame,
    values: pd.DataFrame,
    *,
    metric: str = "count",
    method: str = "gistar",
    weights: Any = None,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    inference: str = "permutation",
    alpha: float = 0.05,
) -> gpd.GeoDataFrame:
    """Hot spots of one metric over a set of units, as a GeoDataFrame.

    Parameters
    ----------
    units
        ``code`` (str), ``area_km2`` and geometry: every unit of the study
        area (H3: :func:`hex_units`; RW: ``db.analysis.unit_frame``).
    values
        ``code, reports, open`` per unit with reports (:func:`unit_values`).
    metric, method, permutations, seed, inference, alpha
        See :func:`gi_star`, :func:`local_moran` and :data:`METRICS`.
    weights
        Prebuilt weights aligned with ``units.code`` (default: H3 ring or
        polygon contiguity, chosen by whether ``units`` has an ``h3`` column).

    Returns
    -------
    geopandas.GeoDataFrame
        The units with ``value``, ``reports`` and the statistic's columns;
        ``attrs`` holds ``method, metric, permutations, seed, inference,
        n_units, islands, min_p``.
    """
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    units = units.reset_index(drop=True)
    if weights is None:
        weights = (
            h3_weights(units["h3"].to_numpy(), list(units["code"]))
            if "h3" in units
            else polygon_weights(units)
        )
    if list(weights.id_order) != list(units["code"]):
        raise DataError("weights are not aligned with the units")
    y = metric_values(units, values, metric)
    run = gi_star if method == "gistar" else local_moran
    options: dict[str, Any] = {"permutations": permutations, "seed": seed, "inference": inference}
    if method == "moran":
        options["alpha"] = alpha
    stats_frame = run(y, weights, **options).reset_index(drop=True)
    reports = (
        units[["code"]].merge(values, on="code", how="left")["reports"].fillna(0).astype(np.int64)
    )
    out = gpd.GeoDataFrame(
        pd.concat(
            [units.drop(columns=[c for c in ("h3",) if c in units]), stats_frame], axis=1
        ).assign(value=y, reports=reports.to_numpy()),
        geometry="geometry",
        crs=units.crs,
    )
    if method == "moran":
        out["class"] = out["cluster"]
    out.attrs.update(
        unit="h3_" + str(_h3_resolution(units)) if "h3" in units else None,
        method=method,
        metric=metric,
        permutations=permutations,
        seed=seed,
        inference=inference,
        n_units=len(out),
        islands=int(getattr(weights, "islands_joined", 0)),
        min_p=min_attainable_p(permutations) if inference == "permutation" else None,
    )
    return out


# --------------------------------------------------------------------------- helpers


def _h3_resolution(units: pd.DataFrame) -> int:
    from gis.hexes import cell_resolutions

    res = np.unique(cell_resolutions(units["h3"].to_numpy(dtype=np.int64)))
    if len(res) != 1:
        raise DataError(f"H3 units mix resolutions {res.tolist()}")
    return int(res[0])


def _check_values(y: Any, w: Any) -> np.ndarray:
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != w.n:
        raise DataError(f"{len(y)} values for {w.n} units")
    if not np.isfinite(y).all():
        raise DataError("values must be finite")
    return y


def _check_inference(inference: str, permutations: int) -> None:
    if inference not in INFERENCES:
        raise InvalidParameterError(
            f"inference must be one of {', '.join(INFERENCES)}, got {inference!r}"
        )
    if not isinstance(permutations, int | np.integer) or permutations < 0 or permutations > 99_999:
        raise InvalidParameterError(
            f"permutations must be an integer in 0..99999, got {permutations!r}"
        )
    if inference == "permutation" and permutations < 99:
        raise InvalidParameterError("permutation inference needs at least 99 permutations")


def _constant(y: np.ndarray) -> bool:
    return len(y) < 3 or float(np.ptp(y)) == 0.0


def _flat(out: pd.DataFrame, numeric: Sequence[str], label: str) -> pd.DataFrame:
    """Result for a constant variable: nothing to test, every unit ``ns``."""
    for col in (*numeric, "p_value", "q_value"):
        out[col] = np.nan
    out[label] = "ns"
    return out


def _exact_p(p_sim: np.ndarray, permutations: int) -> np.ndarray:
    """esda's pseudo p-values, ``(k + 1) / (P + 1)``, back in float64 (esda keeps float32)."""
    return np.round(np.asarray(p_sim, dtype=float) * (permutations + 1)) / (permutations + 1)


def _two_sided(p_directed: np.ndarray) -> np.ndarray:
    return np.minimum(1.0, 2.0 * np.asarray(p_directed, dtype=float))


def _copy_w(w: Any) -> Any:
    """A copy of ``w``: esda changes the transform of the weights it is given."""
    from libpysal.weights import W

    return W(dict(w.neighbors), dict(w.weights), id_order=list(w.id_order), silence_warnings=True)
