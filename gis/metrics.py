"""Resolution metrics of citizen reports, per unit x period x category x OPD.

Pure pandas/numpy code on a frame of reports (the columns of the ``reports``
table).  :mod:`db.analysis` computes the same numbers in SQL; both follow the
definitions below to the last row, and ``tests/test_metrics.py`` checks that
they agree.

Definitions
-----------
``as_of``
    Every result is "as known at ``as_of``" (default: now), so it can be
    reproduced.  Reports created after ``as_of`` do not exist yet.  A report
    counts as *resolved* when its status is ``selesai`` and its resolution time
    (``resolved_at``, or ``updated_at`` when that is missing) is at or before
    ``as_of``; as *rejected* when its status is ``ditolak`` and ``updated_at``
    (the rejection; ``ditolak`` is terminal but for re-opening) is at or before
    ``as_of``; otherwise it is *open* at ``as_of``.
Rejected reports
    **Excluded** from every performance figure (resolved share, days to
    resolve, 7-day and 6-hour shares, reliability), and counted on their own
    (``rejected``, ``rejected_share``).  A rejection is neither a resolution nor
    a report still waiting; censoring them in the Kaplan-Meier estimate would
    treat them as if they were going to be resolved like the others.
Days to resolve (``median_days``, ``p90_days``)
    Kaplan-Meier product-limit estimate over the non-rejected reports:
    resolved reports are events at ``resolution - created``; open reports
    are censored at ``as_of - created``.  At tied times events come before
    censorings (a report censored at *t* is still at risk at *t*); tied
    events are taken one at a time, which gives the same ``1 - d/n``.
    ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)``; the median is the smallest
    event time with ``S(t) <= 0.5``, p90 the smallest with ``S(t) <= 0.1``
    (compared with a 1e-9 tolerance, so an exact 0.5 counts in both
    implementations).  When ``S`` never falls that far (too many open reports)
    the value is missing, not guessed.
7-day target (``resolved_7d_share``)
    Explicit, not Kaplan-Meier: of the non-rejected reports created at least
    7 days before ``as_of`` (``resolved_7d_eligible``), the share resolved
    within 7 days of creation.  **Inclusive**: resolved after exactly
    7 days 0 s counts as within.  Younger reports are left out, so open
    reports never count for or against the target before their 7 days are up.
6-hour target (``coordinated_6h_share``)
    The same rule with 6 hours and the first coordination time
    (``first_coordinated_at``; for a resolved report without it, the
    resolution time).
Backlog by age (``backlog_0_7`` ... ``backlog_over_90``)
    Open reports by age ``as_of - created`` in days: ``<= 7``, ``(7, 30]``,
    ``(30, 90]``, ``> 90``; upper edges are inclusive, like the targets.
Reliability and rank
    ``reliable`` is true when a row has at least ``min_reports`` non-rejected
    reports (default 20).  ``rank`` (1 = best, ties share the lowest rank)
    orders the reliable rows with a value of ``rank_by`` within each
    period x category x OPD; unreliable rows and reports outside every unit
    are never ranked.
Periods
    Calendar week (Monday), month, quarter or year of ``created_at`` in
    Asia/Jakarta time, labelled by their first day (``"2025-01-01"``);
    ``"all"`` without a period.  ``start`` is inclusive, ``end`` exclusive.
Time precision
    Durations are taken from whole microseconds (PostgreSQL's precision) as
    PostgreSQL's ``date_part('epoch', a - b)`` computes them (whole days x
    86400 + the remaining microseconds / 1e6), reproduced exactly here; so a
    difference of exactly 7 days is exactly 604800 s in both implementations.

Reports whose unit is unknown (outside every RW, say) form a row whose
``code`` is null; they are counted but never ranked.

Examples
--------
>>> from gis.metrics import MetricSpec, resolution_metrics
>>> spec = MetricSpec(unit="kelurahan", period="month")
>>> table = resolution_metrics(reports, spec)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from petalapor.catalog import (
    COORDINATION_TARGET_HOURS,
    REJECTED_STATUS,
    RESOLUTION_TARGET_DAYS,
    RESOLVED_STATUS,
)
from petalapor.errors import DataError, InvalidParameterError

#: Unit name -> column of the reports table holding the unit's code.
UNITS: Mapping[str, str] = {
    "rw": "rw_code",
    "kelurahan": "kelurahan_code",
    "kecamatan": "kecamatan_code",
    "kota": "kota_code",
    **{f"h3_{r}": f"h3_r{r}" for r in range(7, 12)},
}
#: Administrative levels, usable for ``within``.
ADMIN_UNITS: tuple[str, ...] = ("rw", "kelurahan", "kecamatan", "kota")
#: Period names accepted by :class:`MetricSpec`.
PERIODS: tuple[str, ...] = ("week", "month", "quarter", "year")
#: Metrics a table can be ranked by, and whether larger is better.
RANK_METRICS: Mapping[str, bool] = {
    "resolved_7d_share": True,
    "resolved_share": True,
    "coordinated_6h_share": True,
    "median_days": False,
    "p90_days": False,
}
#: Local time zone of periods.
TIMEZONE = "Asia/Jakarta"
DAY_S = 86_400.0
TARGET_RESOLUTION_S = RESOLUTION_TARGET_DAYS * DAY_S
TARGET_COORDINATION_S = COORDINATION_TARGET_HOURS * 3_600.0
#: Open-backlog age bands: column, lower edge (exclusive) and upper edge (inclusive), days.
BACKLOG_BANDS: tuple[tuple[str, float, float], ...] = (
    ("backlog_0_7", -np.inf, 7.0),
    ("backlog_8_30", 7.0, 30.0),
    ("backlog_31_90", 30.0, 90.0),
    ("backlog_over_90", 90.0, np.inf),
)
#: Tolerance of the Kaplan-Meier quantile comparison ``S(t) <= 1 - q``.
KM_TOLERANCE = 1e-9
#: ``log(1 - q + tolerance)`` thresholds of the median and p90 (compared in log space).
KM_LOG_THRESHOLDS: Mapping[str, float] = {
    "median_days": float(np.log(0.5 + KM_TOLERANCE)),
    "p90_days": float(np.log(0.1 + KM_TOLERANCE)),
}
KEY_COLUMNS: tuple[str, ...] = ("code", "period", "category", "opd")
COUNT_COLUMNS: tuple[str, ...] = (
    "reports",
    "open",
    "resolved",
    "rejected",
    "resolved_7d_eligible",
    "resolved_7d",
    "coordinated_6h_eligible",
    "coordinated_6h",
    *(band for band, _, _ in BACKLOG_BANDS),
)
#: Columns of every metrics table, in order.
METRIC_COLUMNS: tuple[str, ...] = (
    "unit",
    *KEY_COLUMNS,
    "reports",
    "open",
    "resolved",
    "rejected",
    "resolved_share",
    "rejected_share",
    "median_days",
    "p90_days",
    "resolved_7d_eligible",
    "resolved_7d",
    "resolved_7d_share",
    "coordinated_6h_eligible",
    "coordinated_6h",
    "coordinated_6h_share",
    *(band for band, _, _ in BACKLOG_BANDS),
    "reliable",
    "rank",
)
FLOAT_COLUMNS: tuple[str, ...] = (
    "resolved_share",
    "rejected_share",
    "median_days",
    "p90_days",
    "resolved_7d_share",
    "coordinated_6h_share",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "created_at",
    "updated_at",
    "resolved_at",
    "first_coordinated_at",
    "status",
    "category",
    "opd",
)
#: State codes of a report at ``as_of``.
OPEN, RESOLVED, REJECTED = 0, 1, 2


@dataclass(frozen=True)
class MetricSpec:
    """What to compute: grouping, filters, ``as_of`` and reliability.

    Parameters
    ----------
    unit
        A key of :data:`UNITS`, or None for the whole city.
    period
        One of :data:`PERIODS`, or None for one period ``"all"``.
    by_category, by_opd
        Group by category / OPD as well.
    as_of
        Time the figures are as of (aware datetime; naive means Asia/Jakarta).
        Default: now.
    start, end
        Only reports created in ``[start, end)``.
    categories, opds
        Only these categories / OPDs (empty: all).
    within
        ``(level, code)``: only reports in this RW / kelurahan / kecamatan / kota.
    min_reports
        Rows with fewer non-rejected reports are ``reliable=False`` and unranked.
    rank_by
        Key of :data:`RANK_METRICS`.
    include_private
        Count reports their reporter hid (``public = false``); public
        viewers of the API get False.
    """

    unit: str | None = "rw"
    period: str | None = None
    by_category: bool = False
    by_opd: bool = False
    as_of: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    categories: tuple[str, ...] = ()
    opds: tuple[str, ...] = ()
    within: tuple[str, str] | None = None
    min_reports: int = 20
    rank_by: str = "resolved_7d_share"
    include_private: bool = True

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in UNITS:
            raise InvalidParameterError(
                f"unit must be one of {', '.join(UNITS)} (or none), got {self.unit!r}"
            )
        if self.period is not None and self.period not in PERIODS:
            raise InvalidParameterError(
                f"period must be one of {', '.join(PERIODS)} (or none), got {self.period!r}"
            )
        if self.rank_by not in RANK_METRICS:
            raise InvalidParameterError(
                f"rank_by must be one of {', '.join(RANK_METRICS)}, got {self.rank_by!r}"
            )
        if (
            isinstance(self.min_reports, bool)
            or not isinstance(self.min_reports, int)
            or self.min_reports < 1
        ):
            raise InvalidParameterError(
                f"min_reports must be an integer >= 1, got {self.min_reports!r}"
            )
        as_of = aware(self.as_of, "as_of") if self.as_of is not None else dt.datetime.now(dt.UTC)
        object.__setattr__(self, "as_of", as_of)
        object.__setattr__(self, "start", aware(self.start, "from"))
        object.__setattr__(self, "end", aware(self.end, "to"))
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidParameterError(
                f"from ({self.start.isoformat()}) must be before to ({self.end.isoformat()})"
            )
        object.__setattr__(self, "categories", _codes(self.categories, "categories"))
        object.__setattr__(self, "opds", _codes(self.opds, "opds"))
        if self.within is not None:
            level, code = self.within
            if level not in ADMIN_UNITS or not code:
                raise InvalidParameterError(
                    f"within must be (level, code) with level in {', '.join(ADMIN_UNITS)}, "
                    f"got {self.within!r}"
                )

    def with_(self, **changes: Any) -> MetricSpec:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


def aware(value: Any, name: str = "time") -> dt.datetime | None:
    """An aware datetime from a datetime/Timestamp/ISO string; naive means Asia/Jakarta.

    Raises
    ------
    InvalidParameterError
        The value cannot be read as a time.
    """
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(
            f"{name}: cannot read {value!r} as a date/time ({exc})"
        ) from None
    if ts is pd.NaT:
        raise InvalidParameterError(f"{name}: cannot read {value!r} as a date/time")
    if ts.tzinfo is None:
        ts = ts.tz_localize(TIMEZONE)
    return ts.tz_convert("UTC").floor("us").to_pydatetime()


def resolution_metrics(
    reports: pd.DataFrame, spec: MetricSpec | None = None, **options: Any
) -> pd.DataFrame:
    """Resolution metrics of a frame of reports, one row per group.

    Parameters
    ----------
    reports
        Reports with the ``reports`` table's columns: ``created_at``,
        ``updated_at``, ``resolved_at``, ``first_coordinated_at`` (aware
        timestamps), ``status``, ``category``, ``opd`` and the unit's column
        (:data:`UNITS`); a GeoDataFrame works as well.
    spec
        What to compute; or give its fields as keyword ``options``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`METRIC_COLUMNS`, sorted by ``code, period, category,
        opd``; shares, days and ranks are NaN when undefined.  See the module
        docstring for the definitions.

    Raises
    ------
    DataError
        A required column is missing.

    Examples
    --------
    >>> resolution_metrics(reports, unit="rw", as_of="2025-03-01T00:00:00+07:00")  # doctest: +SKIP

    See Also
    --------
    db.analysis.resolution_metrics : the same in SQL.
    """
    spec = _spec(spec, options)
    _check_columns(reports, spec)
    rows = select_reports(reports, spec)
    timing = report_timing(rows, spec.as_of)
    keys = group_keys(rows, spec)
    group, table = _factorize(keys)
    counts = _counts(group, timing, len(table))
    kept, days, event = _durations(timing)
    km = km_quantiles(group[kept], days[kept], event[kept], len(table))
    return finish_table(pd.concat([table, counts, km], axis=1), spec)


def select_reports(reports: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """Reports that exist at ``as_of`` and pass the spec's filters."""
    created = _utc(reports["created_at"], "created_at")
    keep = (created <= pd.Timestamp(spec.as_of)).to_numpy().copy()
    if spec.start is not None:
        keep &= (created >= pd.Timestamp(spec.start)).to_numpy()
    if spec.end is not None:
        keep &= (created < pd.Timestamp(spec.end)).to_numpy()
    if spec.categories:
        keep &= reports["category"].isin(spec.categories).to_numpy()
    if spec.opds:
        keep &= reports["opd"].isin(spec.opds).to_numpy()
    if spec.within is not None:
        level, code = spec.within
        keep &= (reports[UNITS[level]].astype(object) == code).to_numpy()
    if not spec.include_private and "public" in reports.columns:
        keep &= reports["public"].fillna(True).to_numpy(dtype=bool)
    return reports.loc[keep]


def report_timing(rows: pd.DataFrame, as_of: dt.datetime) -> pd.DataFrame:
    """State at ``as_of`` and the durations (seconds) every metric is built from.

    Returns
    -------
    pandas.DataFrame
        ``state`` (:data:`OPEN`, :data:`RESOLVED`, :data:`REJECTED`),
        ``age_s`` (as_of - created), ``res_s`` (resolution - created, NaN
        unless resolved) and ``coord_s`` (first coordination - created, NaN
        when never coordinated), indexed like ``rows``.
    """
    as_us = _epoch_us(pd.Series([pd.Timestamp(as_of)]))[0]
    created = _epoch_us(rows["created_at"])
    updated = _epoch_us(rows["updated_at"])
    resolved_at = _epoch_us(rows["resolved_at"])
    status = rows["status"].to_numpy(dtype=object)
    is_resolved = status == RESOLVED_STATUS
    res_time = np.where(np.isnan(resolved_at), updated, resolved_at)
    state = np.full(len(rows), OPEN, dtype=np.int8)
    state[is_resolved & (res_time <= as_us)] = RESOLVED
    state[(status == REJECTED_STATUS) & (updated <= as_us)] = REJECTED
    first = _epoch_us(rows["first_coordinated_at"])
    coord_time = np.where(np.isnan(first), np.where(is_resolved, res_time, np.nan), first)
    return pd.DataFrame(
        {
            "state": state,
            "age_s": _seconds(as_us - created),
            "res_s": np.where(state == RESOLVED, _seconds(res_time - created), np.nan),
            "coord_s": _seconds(coord_time - created),
        },
        index=rows.index,
    )


def group_keys(rows: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """The ``code, period, category, opd`` of each report (None where not grouped)."""
    n = len(rows)
    none = np.full(n, None, dtype=object)
    if spec.unit is None:
        code = none
    elif spec.unit.startswith("h3_"):
        code = rows[UNITS[spec.unit]].to_numpy(dtype=np.int64)
    else:
        code = (
            rows[UNITS[spec.unit]]
            .astype(object)
            .where(rows[UNITS[spec.unit]].notna(), None)
            .to_numpy()
        )
    return pd.DataFrame(
        {
            "code": code,
            "period": period_labels(rows["created_at"], spec.period),
            "category": rows["category"].to_numpy(dtype=object) if spec.by_category else none,
            "opd": rows["opd"].to_numpy(dtype=object) if spec.by_opd else none,
        }
    )


def period_labels(created: pd.Series, period: str | None) -> np.ndarray:
    """First day (Asia/Jakarta) of each timestamp's week/month/quarter/year, as text.

    Examples
    --------
    >>> period_labels(pd.Series(pd.to_datetime(["2025-03-31T18:00Z"])), "month").tolist()
    ['2025-04-01']
    """
    if period is None:
        return np.full(len(created), "all", dtype=object)
    local = (
        _utc(created, "created_at")
        .dt.tz_convert(TIMEZONE)
        .dt.tz_localize(None)
        .to_numpy()
        .astype("datetime64[D]")
    )
    if period == "week":  # 1970-01-01 was a Thursday: shift to Mondays
        days = local.astype(np.int64)
        start = ((days + 3) // 7 * 7 - 3).astype("datetime64[D]")
    elif period == "month":
        start = local.astype("datetime64[M]").astype("datetime64[D]")
    elif period == "quarter":
        months = local.astype("datetime64[M]").astype(np.int64)
        start = (months // 3 * 3).astype("datetime64[M]").astype("datetime64[D]")
    else:
        start = local.astype("datetime64[Y]").astype("datetime64[D]")
    uniq, inverse = np.unique(start, return_inverse=True)
    return np.datetime_as_string(uniq, unit="D").astype(object)[inverse]


def km_quantiles(
    group: np.ndarray, duration: np.ndarray, event: np.ndarray, n_groups: int
) -> pd.DataFrame:
    """Kaplan-Meier median and p90 of durations per group.

    Parameters
    ----------
    group
        Group number (0 .. ``n_groups - 1``) of each observation.
    duration
        Time (days) of the event or the censoring.
    event
        True for an event (resolved), False for a censored observation.
    n_groups
        Number of groups (groups without observations get NaN).

    Returns
    -------
    pandas.DataFrame
        ``median_days`` and ``p90_days``, one row per group; NaN where
        ``S(t)`` never falls to 0.5 (0.1).

    Examples
    --------
    Four reports: resolved after 1 and 3 days, open for 2 and 4 days.
    ``S(1) = 3/4``, ``S(3) = 3/4 * 1/2 = 3/8``, so the median is 3:

    >>> km_quantiles(np.zeros(4, int), np.array([1.0, 2, 3, 4]),
    ...              np.array([True, False, True, False]), 1)["median_days"].tolist()
    [3.0]
    """
    out = pd.DataFrame({name: np.full(n_groups, np.nan) for name in KM_LOG_THRESHOLDS})
    if len(group) == 0:
        return out
    g, t, e, n = _risk_rows(
        np.asarray(group, np.int64), np.asarray(duration, float), np.asarray(event, bool)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(e & (n > 1), np.log(1.0 - 1.0 / n), 0.0)
    logs = pd.Series(term).groupby(g, sort=False).cumsum().to_numpy()
    for name, threshold in KM_LOG_THRESHOLDS.items():
        hit = e & ((n == 1) | (logs <= threshold))
        first_groups, first_idx = np.unique(g[hit], return_index=True)
        out.loc[first_groups, name] = t[hit][first_idx]
    return out


def finish_table(table: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """Shares, reliability and rank from the counts and quantiles; columns in order."""
    t = table.copy()
    for col in COUNT_COLUMNS:
        t[col] = t[col].astype(np.int64)
    assessed = (t["reports"] - t["rejected"]).to_numpy()
    t["resolved_share"] = _share(t["resolved"], assessed)
    t["rejected_share"] = _share(t["rejected"], t["reports"].to_numpy())
    t["resolved_7d_share"] = _share(t["resolved_7d"], t["resolved_7d_eligible"].to_numpy())
    t["coordinated_6h_share"] = _share(t["coordinated_6h"], t["coordinated_6h_eligible"].to_numpy())
    t["reliable"] = assessed >= spec.min_reports
    t["unit"] = spec.unit if spec.unit is not None else "city"
    if spec.unit is not None and spec.unit.startswith("h3_"):
        from gis.hexes import cells_to_str

        t["code"] = cells_to_str(t["code"].to_numpy(dtype=np.int64))
    t["rank"] = _rank(t, spec)
    t = t.sort_values(list(KEY_COLUMNS), na_position="last", kind="stable").reset_index(drop=True)
    for col in KEY_COLUMNS:
        t[col] = t[col].astype(object).where(t[col].notna(), None)
    return t[list(METRIC_COLUMNS)]


# --------------------------------------------------------------------------- helpers


def _spec(spec: MetricSpec | None, options: Mapping[str, Any]) -> MetricSpec:
    if spec is None:
        return MetricSpec(**options)
    if options:
        return spec.with_(**options)
    return spec


def _codes(values: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.split(",")
    out = tuple(sorted({str(v).strip() for v in values if str(v).strip()}))
    return out


def _check_columns(reports: pd.DataFrame, spec: MetricSpec) -> None:
    need = set(REQUIRED_COLUMNS)
    if spec.unit is not None:
        need.add(UNITS[spec.unit])
    if spec.within is not None:
        need.add(UNITS[spec.within[0]])
    missing = sorted(need - set(reports.columns))
    if missing:
        raise DataError(f"reports frame lacks column(s) {missing}")


def _utc(values: pd.Series, name: str) -> pd.Series:
    """Aware UTC timestamps; naive input is an error (it would silently shift)."""
    s = pd.to_datetime(values)
    if getattr(s.dt, "tz", None) is None:
        if s.notna().any():
            raise DataError(f"column {name} holds naive timestamps; give them a time zone")
        s = s.dt.tz_localize("UTC")
    return s.dt.tz_convert("UTC")


def _epoch_us(values: pd.Series) -> np.ndarray:
    """Microseconds since the epoch as float (exact below 2**53 us, ~285 years); NaN for missing."""
    s = _utc(values, str(values.name))
    ns = s.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    us = np.floor_divide(ns, 1000).astype(np.float64)
    us[s.isna().to_numpy()] = np.nan
    return us


def _seconds(us: np.ndarray) -> np.ndarray:
    """Microsecond differences to seconds exactly as PostgreSQL's ``date_part('epoch', a - b)``.

    ``a - b`` is justified into whole days (truncated toward zero) and the
    remaining microseconds; the epoch is ``rest / 1e6 + 86400 * days``.  So a
    difference of exactly 7 days is exactly 604800.0 in both implementations.
    """
    days = np.trunc(us / 86_400e6)
    rest = us - days * 86_400e6
    return rest / 1e6 + DAY_S * days


def _factorize(keys: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Group number per row, and one row of keys per group."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), pd.DataFrame(
            {c: pd.Series(dtype=object) for c in KEY_COLUMNS}
        )
    codes = []
    uniques = []
    for col in KEY_COLUMNS:
        c, u = pd.factorize(keys[col], use_na_sentinel=False)
        codes.append(c.astype(np.int64))
        uniques.append(np.asarray(u, dtype=object))
    combined = codes[0]
    for c, u in zip(codes[1:], uniques[1:], strict=True):
        combined = combined * max(len(u), 1) + c
    groups, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    table = pd.DataFrame(
        {col: u[c[first]] for col, c, u in zip(KEY_COLUMNS, codes, uniques, strict=True)}
    )
    return inverse.astype(np.int64), table


def _counts(group: np.ndarray, timing: pd.DataFrame, n_groups: int) -> pd.DataFrame:
    """Every count column per group (see the module docstring)."""
    state = timing["state"].to_numpy()
    age, res, coord = (timing[c].to_numpy() for c in ("age_s", "res_s", "coord_s"))
    kept = state != REJECTED
    with np.errstate(invalid="ignore"):
        masks = {
            "reports": np.ones(len(state), bool),
            "open": state == OPEN,
            "resolved": state == RESOLVED,
            "rejected": state == REJECTED,
            "resolved_7d_eligible": kept & (age >= TARGET_RESOLUTION_S),
            "resolved_7d": (state == RESOLVED)
            & (age >= TARGET_RESOLUTION_S)
            & (res <= TARGET_RESOLUTION_S),
            "coordinated_6h_eligible": kept & (age >= TARGET_COORDINATION_S),
            "coordinated_6h": kept
            & (age >= TARGET_COORDINATION_S)
            & (coord <= TARGET_COORDINATION_S),
        }
        for band, low, high in BACKLOG_BANDS:
            masks[band] = (state == OPEN) & (age > low * DAY_S) & (age <= high * DAY_S)
    return pd.DataFrame(
        {
            name: np.bincount(group, weights=mask, minlength=n_groups).astype(np.int64)
            for name, mask in masks.items()
        }
    )


def _risk_rows(
    group: np.ndarray, duration: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observations ordered by group, time, events first; ``n`` = number still at risk.

    Tied events are taken one at a time: ``prod_k (1 - 1/(n - k))`` over the
    ``d`` events at a time equals ``1 - d/n``, so the curve is the usual one.
    """
    order = np.lexsort((~event, duration, group))
    g, t, e = group[order], duration[order], event[order]
    starts = np.ones(len(g), bool)
    starts[1:] = g[1:] != g[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(g)), 0))
    position = np.arange(len(g)) - first
    total = np.bincount(g)[g]
    return g, t, e, (total - position).astype(float)


def _share(numerator: pd.Series, denominator: np.ndarray) -> np.ndarray:
    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _rank(t: pd.DataFrame, spec: MetricSpec) -> np.ndarray:
    """Competition rank (1 = best) of reliable, located rows within period x category x OPD."""
    out = np.full(len(t), np.nan)
    if spec.unit is None:
        return out
    value = t[spec.rank_by]
    ok = (t["reliable"] & value.notna() & t["code"].notna()).to_numpy()
    if not ok.any():
        return out
    sub = t.loc[ok, ["period", "category", "opd"]].astype(object).fillna("")
    sub["value"] = value[ok]
    ranks = sub.groupby(["period", "category", "opd"], sort=False)["value"].rank(
        method="min", ascending=not RANK_METRICS[spec.rank_by]
    )
    out[ok] = ranks.to_numpy()
    return out


def _durations(timing: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask of non-rejected reports, their KM duration (days) and event flag."""
    state = timing["state"].to_numpy()
    kept = state != REJECTED
    resolved = state == RESOLVED
    seconds = np.where(resolved, timing["res_s"].to_numpy(), timing["age_s"].to_numpy())
    return kept, seconds / DAY_S, resolved


__all__: Sequence[str] = (
    "MetricSpec",
    "UNITS",
    "PERIODS",
    "METRIC_COLUMNS",
    "resolution_metrics",
    "km_quantiles",
    "period_labels",
    "report_timing",
    "select_reports",
    "group_keys",
    "finish_table",
    "aware",
)


def suppress_small(frame: pd.DataFrame, k: int, *, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Blank every figure of rows with fewer than ``k`` reports (``suppressed = true``).

    Key columns (unit, code, name, period, category, opd, geometry) and
    ``keep`` stay; rows with no reports at all (hot-spot units) are not
    suppressed, there is nothing to hide.
    """
    out = frame.copy()
    small = ((out["reports"] > 0) & (out["reports"] < k)).to_numpy()
    fixed = {
        "unit",
        "code",
        "name",
        "kelurahan_code",
        "period",
        "category",
        "opd",
        "geometry",
        "area_km2",
        *keep,
    }
    for col in out.columns:
        if col not in fixed and small.any():
            out[col] = out[col].astype(object).where(~small, None)
    out["suppressed"] = small
    return out
