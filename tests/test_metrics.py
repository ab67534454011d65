"""Resolution metrics: hand-worked numbers, and the SQL and pandas paths agreeing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest

from db.analysis import copy_reports
from db.analysis import resolution_metrics as sql_metrics
from gis.metrics import (
    FLOAT_COLUMNS,
    METRIC_COLUMNS,
    MetricSpec,
    km_quantiles,
    period_labels,
    resolution_metrics,
)
from petalapor.catalog import sync_catalog
from petalapor.errors import InvalidParameterError
from tests.analysis_data import demo_database

AS_OF = pd.Timestamp("2025-03-01T00:00:00+07:00")
DAY = pd.Timedelta(days=1)
H = pd.Timedelta(hours=1)
S = pd.Timedelta(seconds=1)
H3_COLUMNS = [f"h3_r{r}" for r in (7, 8, 9, 10, 11)]
CELL = 0x89283082837FFFF  # one cell for every hand-made report (not used by these tests)


def _report(rw, created, status="menunggu", resolved=None, coord=None, updated=None, cat="sampah"):
    return {
        "rw_code": rw,
        "kelurahan_code": None if rw is None else "K1",
        "kecamatan_code": "C1",
        "kota_code": "3171",
        "category": cat,
        "opd": "DLH",
        "status": status,
        "created_at": created,
        "resolved_at": resolved,
        "first_coordinated_at": coord,
        "updated_at": updated
        if updated is not None
        else (resolved if resolved is not None else coord or created),
    }


def hand_reports() -> pd.DataFrame:
    """The hand-worked set (see test_hand_worked_numbers for the arithmetic)."""
    t = AS_OF
    rows = [
        # RW A
        _report(
            "A", t - 30 * DAY, "selesai", t - 23 * DAY, coord=t - 30 * DAY + 6 * H
        ),  # a1: 7 d 0 s
        _report(
            "A", t - 30 * DAY, "selesai", t - 23 * DAY + S, coord=t - 30 * DAY + 6 * H + S
        ),  # a2: 7 d 1 s
        _report("A", t - 20 * DAY, "selesai", t - 18 * DAY, coord=t - 20 * DAY + H),  # a3: 2 d
        _report("A", t - 10 * DAY),  # a4: open 10 d
        _report("A", t - 40 * DAY, "proses", coord=t - 40 * DAY + 2 * H),  # a5: open 40 d
        _report("A", t - 3 * DAY),  # a6: open 3 d
        _report("A", t - 15 * DAY, "ditolak", updated=t - 14 * DAY),  # a7: rejected
        _report("A", t - 5 * DAY, "selesai", t + DAY, coord=t - 5 * DAY + H),  # a8: resolved later
        _report("A", t + H),  # a9: not yet made
        _report("A", t - 100 * DAY, "ditolak", updated=t + 2 * DAY),  # a10: rejected later
        _report("A", t - 50 * DAY, "selesai", t - 42 * DAY),  # a11: 8 d, no coord
        # RW B
        _report("B", t - 7 * DAY),  # b1: open 7 d 0 s
        _report("B", t - 8 * DAY, "selesai", t - 7 * DAY, coord=t - 8 * DAY + H),  # b2: 1 d
        # no RW
        _report(None, t - 2 * DAY),  # c1
    ]
    frame = pd.DataFrame(rows)
    for col in ("created_at", "resolved_at", "first_coordinated_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["source"] = "hand"
    frame["external_id"] = [f"h{i}" for i in range(len(frame))]
    frame["snap_method"] = "inside"
    frame["lon"], frame["lat"] = 106.8, -6.2
    for col in H3_COLUMNS:
        frame[col] = CELL
    return frame


def both(spec: MetricSpec, url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    py = resolution_metrics(hand_reports(), spec)
    with psycopg.connect(url) as conn:
        sq = sql_metrics(conn, spec)
    return py, sq


def by_code(table: pd.DataFrame) -> dict:
    return {row["code"]: row for row in table.to_dict(orient="records")}


def test_hand_worked_numbers(make_database) -> None:
    url = make_database()
    with psycopg.connect(url) as conn:
        sync_catalog(conn)
        copy_reports(conn, hand_reports())
    for table in both(MetricSpec(unit="rw", as_of=AS_OF, min_reports=2), url):
        rows = by_code(table)
        a, b, none = rows["A"], rows["B"], rows[None]
        # a9 does not exist yet; a8 (resolved after as_of) and a10 (rejected after as_of) are open.
        assert (a["reports"], a["resolved"], a["rejected"], a["open"]) == (10, 4, 1, 5)
        assert a["resolved_share"] == pytest.approx(4 / 9)  # rejected left out of the base
        assert a["rejected_share"] == pytest.approx(1 / 10)
        # KM over 9 non-rejected: events 2, 7, 7+1s, 8 d; censored 3, 5, 10, 40, 100 d.
        # S(2) = 8/9; S(7) = 8/9*5/6; S(7+1s) = *4/5 = 0.5926; S(8) = *3/4 = 0.4444 -> median 8 d.
        assert a["median_days"] == pytest.approx(8.0)
        assert math.isnan(a["p90_days"])  # S never reaches 0.1
        # 7-day rule: 7 eligible (age >= 7 d, not rejected); a1 (exactly 7 d 0 s) and a3 within.
        assert (a["resolved_7d_eligible"], a["resolved_7d"]) == (7, 2)
        assert a["resolved_7d_share"] == pytest.approx(2 / 7)
        # 6-hour rule: a1 at exactly 6 h counts, a2 at 6 h 1 s does not; a3, a5, a8 within.
        assert (a["coordinated_6h_eligible"], a["coordinated_6h"]) == (9, 4)
        assert [
            a[k] for k in ("backlog_0_7", "backlog_8_30", "backlog_31_90", "backlog_over_90")
        ] == [2, 1, 1, 1]
        # B: S(1 d) = 1/2 exactly -> the median is 1 d (S <= 0.5 with tolerance, in both paths).
        assert b["median_days"] == pytest.approx(1.0)
        assert b["backlog_0_7"] == 1  # open for exactly 7 d: upper edge inclusive
        assert (b["resolved_7d_eligible"], b["resolved_7d"]) == (2, 1)
        # reliability and rank (resolved_7d_share, higher is better); no-RW row never ranked
        assert a["reliable"] and b["reliable"] and not none["reliable"]
        assert (b["rank"], a["rank"]) == (1, 2)
        assert math.isnan(none["rank"])
    for table in both(MetricSpec(unit="rw", as_of=AS_OF, min_reports=3), url):
        rows = by_code(table)
        assert not rows["B"]["reliable"] and math.isnan(rows["B"]["rank"])
        assert rows["A"]["rank"] == 1


def test_as_of_makes_results_reproducible(make_database) -> None:
    url = make_database()
    with psycopg.connect(url) as conn:
        sync_catalog(conn)
        copy_reports(conn, hand_reports())
    early = AS_OF - 25 * DAY
    for table in both(MetricSpec(unit="rw", as_of=early, min_reports=1), url):
        a = by_code(table)["A"]
        # created by then: a1, a2 (open: resolved later), a5, a10 (open), a11 (resolved T-42 d)
        assert (a["reports"], a["open"], a["resolved"], a["rejected"]) == (5, 4, 1, 0)
        # KM: censored 5, 5 d; event 8 d with 3 at risk -> S = 2/3; censored 15, 75 d: no median
        assert math.isnan(a["median_days"])
        assert (a["resolved_7d_eligible"], a["resolved_7d"]) == (3, 0)
        assert [
            a[k] for k in ("backlog_0_7", "backlog_8_30", "backlog_31_90", "backlog_over_90")
        ] == [2, 1, 1, 0]
    # the same as_of twice gives the same table, whenever it is run
    first, again = (
        both(MetricSpec(unit="rw", as_of=early), url)[1],
        both(MetricSpec(unit="rw", as_of=early), url)[1],
    )
    pd.testing.assert_frame_equal(first, again)


def test_km_by_hand() -> None:
    # Resolved after 1 and 3 days, open for 2 and 4 days: S(1) = 3/4, S(3) = 3/4 * 1/2 -> median 3.
    km = km_quantiles(
        np.zeros(4, int), np.array([1.0, 2, 3, 4]), np.array([True, False, True, False]), 1
    )
    assert km["median_days"].tolist() == [3.0]
    # Ties: two events and a censoring at 2 (events first): S(2) = 1 - 2/4 = 0.5 -> median 2.
    km = km_quantiles(
        np.zeros(4, int), np.array([2.0, 2, 2, 5]), np.array([True, True, False, True]), 1
    )
    assert km["median_days"].tolist() == [2.0]
    # All resolved: the 90th percentile is reached.
    km = km_quantiles(np.zeros(10, int), np.arange(1.0, 11), np.ones(10, bool), 1)
    assert km["median_days"].tolist() == [5.0] and km["p90_days"].tolist() == [9.0]


def test_periods_are_local_calendar_units() -> None:
    created = pd.Series(
        pd.to_datetime(["2025-01-31T18:00:00Z", "2025-03-30T10:00:00Z", "2024-12-31T16:59:59Z"])
    )
    assert period_labels(created, "month").tolist() == ["2025-02-01", "2025-03-01", "2024-12-01"]
    assert period_labels(created, "week").tolist() == ["2025-01-27", "2025-03-24", "2024-12-30"]
    assert period_labels(created, "quarter").tolist() == ["2025-01-01", "2025-01-01", "2024-10-01"]
    assert period_labels(created, "year").tolist() == ["2025-01-01", "2025-01-01", "2024-01-01"]


def test_bad_specs_raise() -> None:
    for bad in (
        dict(unit="desa"),
        dict(period="day"),
        dict(min_reports=0),
        dict(rank_by="x"),
        dict(start="2025-02-01", end="2025-01-01"),
        dict(as_of="yesterday-ish"),
        dict(within=("rt", "1")),
    ):
        with pytest.raises(InvalidParameterError):
            MetricSpec(**bad)


# --------------------------------------------------------------------------- SQL == pandas


@pytest.fixture(scope="module")
def demo_db(dsn, boundary_set) -> Iterator[tuple[str, pd.DataFrame]]:
    """Demo-like reports in a throw-away database with real boundaries."""
    with demo_database(dsn, boundary_set, 20_000, seed=11, prefix="t_metrics") as made:
        yield made


def assert_same(py: pd.DataFrame, sq: pd.DataFrame) -> None:
    assert list(py.columns) == list(sq.columns) == list(METRIC_COLUMNS)
    assert len(py) == len(sq) > 0
    for col in METRIC_COLUMNS:
        a, b = py[col].to_numpy(), sq[col].to_numpy()
        if col in FLOAT_COLUMNS or col == "rank":
            np.testing.assert_allclose(
                a.astype(float), b.astype(float), rtol=1e-12, atol=0, equal_nan=True, err_msg=col
            )
        else:
            assert a.tolist() == b.tolist(), col


SPECS = [
    dict(unit="rw"),
    dict(unit="kelurahan", period="month", by_category=True),
    dict(unit="h3_9", by_opd=True),
    dict(unit="h3_7", period="week"),
    dict(unit="kota", period="quarter", by_category=True, by_opd=True),
    dict(unit=None, period="month"),
    dict(unit="kecamatan", categories=("banjir", "sampah"), start="2026-01-01", end="2026-06-01"),
    dict(unit="rw", within=("kota", "3173"), rank_by="median_days", min_reports=5),
    dict(unit="kelurahan", include_private=False, rank_by="coordinated_6h_share"),
]


@pytest.mark.parametrize("options", SPECS, ids=[str(i) for i in range(len(SPECS))])
@pytest.mark.parametrize("as_of", ["2026-11-01T00:00:00+07:00", "2026-06-15T12:34:56.789012+07:00"])
def test_sql_and_pandas_agree(demo_db, options, as_of) -> None:
    url, frame = demo_db
    spec = MetricSpec(as_of=as_of, **options)
    py = resolution_metrics(frame, spec)
    with psycopg.connect(url) as conn:
        sq = sql_metrics(conn, spec)
    assert_same(py, sq)


def test_text_key_fallback_gives_the_same_table(demo_db) -> None:
    """Groups are formed on 64-bit hashes of text keys; on a collision the query reruns on the
    texts themselves (metrics_query(hashed=False)).  Both must give the same table."""
    from db.analysis import _fetch, _metrics_frame, metrics_query

    url, _ = demo_db
    spec = MetricSpec(unit="rw", by_category=True, by_opd=True, as_of="2026-11-01T00:00:00+07:00")
    with psycopg.connect(url) as conn:
        hashed = _fetch(conn, *metrics_query(spec, hashed=True))
        plain = _fetch(conn, *metrics_query(spec, hashed=False))
    assert not any(row[-1] for row in hashed)  # no collision in practice
    assert_same(
        _metrics_frame([r[:-1] for r in hashed], spec),
        _metrics_frame([r[:-1] for r in plain], spec),
    )
