"""Demo data generator: deterministic, clustered, with rhythms and consistent histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from gis.demo import DEMO_END, DemoData, generate_demo, generate_reports
from petalapor.catalog import COORDINATION_STATUSES, get_catalog

N = 30_000


@pytest.fixture(scope="module")
def rw(boundary_set):
    return boundary_set.frames["rw"]


@pytest.fixture(scope="module")
def demo(rw) -> DemoData:
    return generate_demo(rw, n=N, seed=1)


def test_deterministic_for_a_seed(rw, demo: DemoData) -> None:
    again = generate_demo(rw, n=N, seed=1)
    pd.testing.assert_frame_equal(pd.DataFrame(again.reports), pd.DataFrame(demo.reports))
    pd.testing.assert_frame_equal(again.events, demo.events)
    other = generate_reports(rw, n=N, seed=2)
    assert not np.array_equal(other["lon"].to_numpy(), demo.reports["lon"].to_numpy())
    # row order of the input frame does not matter
    shuffled = rw.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        pd.DataFrame(generate_reports(shuffled, n=2000, seed=4)),
        pd.DataFrame(generate_reports(rw, n=2000, seed=4)),
    )


def test_counts_and_columns(demo: DemoData) -> None:
    r = demo.reports
    assert len(r) == N
    assert r["external_id"].is_unique and r["external_id"].str.startswith("demo-").all()
    assert r.crs.to_epsg() == 4326
    catalog = get_catalog()
    assert set(r["category"]) <= set(catalog.categories)
    assert set(r["opd"]) <= set(catalog.opds)
    assert set(r["status"]) <= set(catalog.statuses)
    assert r["created_at"].max() <= DEMO_END
    assert r["created_at"].min() >= DEMO_END - pd.Timedelta(days=365)
    assert 0.02 < (~r["public"]).mean() < 0.04
    # OPD is the category default, with some re-routing
    default = r["category"].map({c: cat.opd for c, cat in catalog.categories.items()})
    rerouted = (r["opd"] != default).mean()
    assert 0.02 < rerouted < 0.12


def test_spatially_clustered(rw, demo: DemoData) -> None:
    r = demo.reports
    tree = shapely.STRtree(rw.geometry.values)
    pts = shapely.points(r["lon"].to_numpy(), r["lat"].to_numpy())
    pt, poly = tree.query(pts, predicate="covered_by")
    counts = np.bincount(poly, minlength=len(rw))
    ratio = counts.var() / counts.mean()
    print(f"variance/mean of reports per RW: {ratio:.1f}")
    assert ratio > 5
    # the busiest 10 % of RWs hold well over 10 % of reports
    top = np.sort(counts)[::-1][: len(rw) // 10].sum() / counts.sum()
    assert top > 0.25
    # tens of points in no RW: in the sea or just over the border
    outside = N - np.unique(pt).size
    assert 10 <= outside <= 80
    far = shapely.distance(
        shapely.union_all(rw.geometry.values), pts[np.setdiff1d(np.arange(N), pt)]
    )
    assert far.max() < 0.05  # near Jakarta, not anywhere


def test_rhythms(demo: DemoData) -> None:
    local = demo.reports["created_at"].dt.tz_convert("Asia/Jakarta")
    hours = local.dt.hour.value_counts()
    assert hours.loc[[1, 2, 3, 4]].sum() * 6 < hours.loc[[8, 9, 10, 11]].sum()
    days = local.dt.day_of_week.value_counts()
    assert days.loc[6] < days.loc[0]  # Sunday quieter than Monday
    flood = demo.reports["category"] == "banjir"
    wet = local.dt.month.isin([12, 1, 2])
    dry = local.dt.month.isin([7, 8, 9])
    assert flood[wet].mean() > 3 * flood[dry].mean()


def test_flood_heavy_north(rw, demo: DemoData) -> None:
    r = demo.reports
    north = r["lat"] > -6.15
    flood = r["category"] == "banjir"
    assert flood[north].mean() > 1.3 * flood[~north].mean()


def test_resolution_times(demo: DemoData) -> None:
    r = demo.reports
    resolved = r["status"] == "selesai"
    days = (r["resolved_at"] - r["created_at"]).dt.total_seconds() / 86400
    assert (days[resolved] >= 0).all()
    assert (
        r.loc[~resolved, "resolved_at"].isna().all()
        and r.loc[resolved, "resolved_at"].notna().all()
    )
    within = (days[resolved] <= 7).mean()
    print(
        f"resolved {resolved.mean():.1%}, within 7 days {within:.1%}, "
        f"p99 {days[resolved].quantile(0.99):.0f} d"
    )
    assert 0.75 < within < 0.97
    assert days[resolved].max() > 30  # a long tail
    open_ = r["status"].map({c: s.open for c, s in get_catalog().statuses.items()})
    assert 0.01 < open_.mean() < 0.15
    assert set(r.loc[open_, "status"]) == {"menunggu", "disposisi", "koordinasi", "proses"}
    assert 0.02 < (r["status"] == "ditolak").mean() < 0.1
    coord = (r["first_coordinated_at"] - r["created_at"]).dt.total_seconds() / 3600
    assert (coord.dropna() >= 0).all()
    assert (coord.dropna() <= 6).mean() > 0.75
    reached = r["status"].isin(COORDINATION_STATUSES)
    assert r.loc[reached, "first_coordinated_at"].notna().all()


def test_histories_consistent(demo: DemoData) -> None:
    r = demo.reports.set_index("external_id")
    e = demo.events
    catalog = get_catalog()
    first = e.groupby("external_id").head(1).set_index("external_id")
    last = e.groupby("external_id").tail(1).set_index("external_id")
    assert len(first) == len(r)
    assert first["from_status"].isna().all() and (first["to_status"] == "menunggu").all()
    assert (first["at"] == r.loc[first.index, "created_at"]).all()
    assert (last["to_status"] == r.loc[last.index, "status"]).all()
    assert (last["at"] == r.loc[last.index, "updated_at"]).all()
    steps = e[e["from_status"].notna()]
    allowed = [
        t in catalog.statuses[f].next
        for f, t in zip(steps["from_status"], steps["to_status"], strict=True)
    ]
    assert all(allowed)
    assert (e.groupby("external_id")["at"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert (e.groupby("external_id")["seq"].apply(lambda s: list(s) == list(range(len(s))))).all()
    # first coordination and resolution agree with the events
    coord = e[e["to_status"] == "koordinasi"].groupby("external_id")["at"].min()
    assert (coord == r.loc[coord.index, "first_coordinated_at"]).all()
    done = e[e["to_status"] == "selesai"].set_index("external_id")["at"]
    assert (done == r.loc[done.index, "resolved_at"]).all()
    reroutes = e[(e["from_status"] == "koordinasi") & (e["to_status"] == "disposisi")]
    assert len(reroutes) > 0 and reroutes["note"].str.startswith("dialihkan ke ").all()


def test_arguments_checked(rw) -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_demo(rw, n=0)
    with pytest.raises(ValueError, match="code"):
        generate_demo(rw.drop(columns="code"), n=10)
    small = generate_demo(rw, n=5, seed=1)
    assert len(small.reports) == 5
