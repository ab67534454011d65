"""Hot spots: equal to esda, planted clusters found, random patterns not over-called."""

from __future__ import annotations

import warnings

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from esda.getisord import G_Local
from esda.moran import Moran_Local

from gis.hotspots import (
    bh_qvalues,
    gi_star,
    h3_weights,
    hex_units,
    hotspot_frame,
    local_moran,
    polygon_weights,
)
from petalapor.errors import InvalidParameterError

CENTRE = h3.latlng_to_cell(-6.20, 106.82, 8)
RADIUS = 10  # 331 cells of ~0.74 km2


def disk_cells(radius: int = RADIUS) -> np.ndarray:
    return np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(CENTRE, radius)), dtype=np.int64)


def point_counts(
    cells: np.ndarray, rng: np.random.Generator, n: int, cluster: int = 0, sd_deg: float = 0.006
) -> np.ndarray:
    """Counts per cell of ``n`` CSR points over the disk plus ``cluster`` points near its centre."""
    lat0, lon0 = h3.cell_to_latlng(CENTRE)
    span = 0.09
    lon = rng.uniform(lon0 - span, lon0 + span, 4 * n)
    lat = rng.uniform(lat0 - span, lat0 + span, 4 * n)
    lon = np.concatenate([lon, rng.normal(lon0, sd_deg, cluster)])
    lat = np.concatenate([lat, rng.normal(lat0, sd_deg, cluster)])
    hit = np.array(
        [h3.str_to_int(h3.latlng_to_cell(y, x, 8)) for x, y in zip(lon, lat, strict=True)]
    )
    index = {c: i for i, c in enumerate(cells.tolist())}
    pos = np.array([index.get(int(c), -1) for c in hit])
    return np.bincount(pos[pos >= 0], minlength=len(cells)).astype(float)


def esda_gi(y, w, permutations, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return G_Local(
            y, w, transform="B", star=True, permutations=permutations, seed=seed, n_jobs=1
        )


# --------------------------------------------------------------------------- equal to esda


@pytest.mark.parametrize("seed", [3, 12345])
def test_gi_star_equals_esda_on_h3_weights(seed) -> None:
    cells = disk_cells()
    w = h3_weights(cells)
    y = np.random.default_rng(seed).poisson(6, len(cells)).astype(float)
    ours = gi_star(y, w, permutations=999, seed=seed)
    ref = esda_gi(y, h3_weights(cells), 999, seed)
    assert list(ours.index) == list(w.id_order)
    np.testing.assert_allclose(ours["z"], ref.Zs, rtol=1e-12)
    # esda keeps pseudo p-values, (k + 1) / (P + 1), in float32; ours are the same counts in float64
    np.testing.assert_array_equal(np.round(ours["p_sim"] * 1000), np.round(ref.p_sim * 1000))
    np.testing.assert_allclose(ours["p_sim"], ref.p_sim, rtol=1e-6)
    np.testing.assert_allclose(ours["p_value"], np.minimum(1, 2 * ref.p_sim), rtol=1e-6)
    np.testing.assert_allclose(ours["gi"], ref.Gs, rtol=1e-12)


def test_gi_star_equals_esda_on_rw_contiguity(boundary_set) -> None:
    rw = boundary_set.frames["rw"][["code", "area_m2", "geometry"]].reset_index(drop=True)
    w = polygon_weights(rw)
    assert all(card >= 1 for card in w.cardinalities.values())  # islands joined
    y = np.random.default_rng(5).poisson(40, len(rw)).astype(float)
    ours = gi_star(y, w, permutations=499, seed=77)
    ref = esda_gi(y, polygon_weights(rw), 499, 77)
    np.testing.assert_allclose(ours["z"], ref.Zs, rtol=1e-12)
    np.testing.assert_array_equal(np.round(ours["p_sim"] * 500), np.round(ref.p_sim * 500))


def test_local_moran_equals_esda() -> None:
    cells = disk_cells(6)
    w = h3_weights(cells)
    y = np.random.default_rng(8).poisson(6, len(cells)).astype(float)
    ours = local_moran(y, w, permutations=499, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Moran_Local(
            y, h3_weights(cells), transformation="r", permutations=499, seed=9, n_jobs=1
        )
    np.testing.assert_allclose(ours["i"], ref.Is, rtol=1e-12)
    np.testing.assert_allclose(ours["p_sim"], ref.p_sim, rtol=1e-6)
    assert ours["quadrant"].tolist() == [{1: "HH", 2: "LH", 3: "LL", 4: "HL"}[q] for q in ref.q]


# --------------------------------------------------------------------------- planted cluster


@pytest.mark.parametrize(("inference", "permutations"), [("permutation", 9999), ("normal", 999)])
def test_planted_cluster_is_a_99_percent_hot_spot(inference, permutations) -> None:
    """A cluster of ~1,500 extra points (sd 1.3 km) over 8,000 CSR points on 331 r8 cells."""
    cells = disk_cells()
    y = point_counts(cells, np.random.default_rng(21), n=8000, cluster=1500, sd_deg=0.012)
    w = h3_weights(cells)
    out = gi_star(y, w, permutations=permutations, seed=4, inference=inference)
    centre = h3.int_to_str(h3.str_to_int(CENTRE))
    assert out.loc[centre, "class"] == "hot_99"
    hot99 = out.index[out["class"] == "hot_99"]
    # the hot area is around the planted centre (within 3 rings), not elsewhere
    assert all(h3.grid_distance(CENTRE, c) <= 3 for c in hot99)
    assert not out["class"].str.startswith("cold_99").any()


def test_planted_cluster_moran_hh() -> None:
    cells = disk_cells()
    y = point_counts(cells, np.random.default_rng(22), n=8000, cluster=1500, sd_deg=0.012)
    out = local_moran(y, h3_weights(cells), permutations=9999, seed=4)
    centre = h3.int_to_str(h3.str_to_int(CENTRE))
    assert out.loc[centre, "quadrant"] == "HH" and out.loc[centre, "cluster"] == "HH"


def test_hotspot_frame_on_hex_units() -> None:
    cells = disk_cells()
    units = hex_units(cells)
    y = point_counts(cells, np.random.default_rng(23), n=8000, cluster=1500, sd_deg=0.012)
    values = pd.DataFrame({"code": units["code"], "reports": y.astype(int), "open": 0})
    values = values[values["reports"] > 0]
    out = hotspot_frame(units, values, metric="rate", permutations=9999, seed=1)
    assert isinstance(out, gpd.GeoDataFrame) and len(out) == len(cells)
    assert out.set_index("code").loc[h3.int_to_str(h3.str_to_int(CENTRE)), "class"] == "hot_99"
    assert out.attrs["unit"] == "h3_8" and out.attrs["min_p"] == pytest.approx(2 / 10000)
    np.testing.assert_allclose(out["value"], y / units["area_km2"])


# --------------------------------------------------------------------------- spatial randomness


@pytest.mark.parametrize(("inference", "permutations"), [("permutation", 9999), ("normal", 999)])
def test_random_pattern_false_discoveries_within_fdr(inference, permutations) -> None:
    """Under CSR every discovery is false.  BH at level a keeps them rare (under the global
    null it rejects anything at all with probability <= a); uncorrected tests at level a
    flag about a * n cells per pattern.  Over 10 patterns of n = 331 cells we allow a * n
    false discoveries in total (that is a tenth of one uncorrected pattern's share) and
    check that the uncorrected count would have failed the same bound many times over."""
    cells = disk_cells()
    w = h3_weights(cells)
    level = 0.10  # every non-"ns" class (hot/cold at 90, 95 or 99 %) is a discovery at q <= 0.10
    bound = level * len(cells)
    corrected = uncorrected = 0
    for seed in range(10):
        y = point_counts(cells, np.random.default_rng(1000 + seed), n=8000)
        out = gi_star(y, w, permutations=permutations, seed=seed, inference=inference)
        corrected += int((out["class"] != "ns").sum())
        uncorrected += int((out["p_value"] <= level).sum())
    assert corrected <= bound, (corrected, bound)
    assert uncorrected > 5 * bound, (uncorrected, bound)


# --------------------------------------------------------------------------- pieces


def test_bh_qvalues_match_the_step_up_rule() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.002, 20), rng.uniform(0, 1, 200)])
    q = bh_qvalues(p)
    for alpha in (0.01, 0.05, 0.1):
        order = np.sort(p)
        k = np.flatnonzero(order <= alpha * np.arange(1, len(p) + 1) / len(p))
        cutoff = order[k[-1]] if len(k) else -1
        np.testing.assert_array_equal(q <= alpha, p <= cutoff)
    assert np.isnan(bh_qvalues([np.nan, 0.01])[0])


def test_islands_are_joined_to_their_nearest_polygon() -> None:
    squares = [shapely.box(106.80 + i * 0.01, -6.2, 106.81 + i * 0.01, -6.19) for i in range(3)]
    squares.append(shapely.box(106.90, -6.2, 106.91, -6.19))  # far from the others
    frame = gpd.GeoDataFrame({"code": list("abcd")}, geometry=squares, crs="EPSG:4326")
    w = polygon_weights(frame)
    assert w.neighbors["d"] == ["c"] and "d" in w.neighbors["c"]
    assert w.islands_joined == 1
    assert sorted(w.neighbors["b"]) == ["a", "c"]


def test_constant_values_are_not_tested() -> None:
    w = h3_weights(disk_cells(3))
    out = gi_star(np.zeros(w.n), w)
    assert (out["class"] == "ns").all() and out["z"].isna().all()


def test_bad_options() -> None:
    w = h3_weights(disk_cells(2))
    with pytest.raises(InvalidParameterError):
        gi_star(np.arange(w.n, dtype=float), w, inference="bayes")
    with pytest.raises(InvalidParameterError):
        gi_star(np.arange(w.n, dtype=float), w, permutations=10)
