"""``/analysis/*``: resolution metrics, hot spots, overlays and the multi-resolution view.

Every parameter is read by a typed dependency object and checked there; a bad
value raises :class:`~petalapor.errors.InvalidParameterError`, which the app
turns into a 400 with the reason.  A context layer that is not loaded yet is a
409 (:class:`db.analysis.LayerNotLoadedError`).  Definitions of every number
are in :mod:`gis.metrics`, :mod:`gis.hotspots` and :mod:`gis.overlay`.

Privacy (as for tiles): public callers get aggregates of public reports only
(``public = false`` left out), and rows or units with fewer than
``k_anonymity`` reports (``PETALAPOR_TILES_K_ANONYMITY``, default 5) keep their
keys but lose every figure (``suppressed = true``).  OPD and admin keys see
all reports without suppression.

Formats (``format=``): ``json`` (rows plus the parameters and definitions),
``geojson`` (one feature per row, unit polygons or H3 hexagons), ``csv`` and
``parquet`` (GeoParquet when the rows have a unit).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

import geopandas as gpd
import pandas as pd
import psycopg
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import HTMLResponse

from api.auth import Viewer
from api.auth import viewer as auth_viewer
from api.deps import get_conn
from api.middleware import security_headers
from db import analysis
from gis import hotspots as hs
from gis import metrics as gm
from gis import overlay as ov
from petalapor.catalog import (
    COORDINATION_TARGET_HOURS,
    RESOLUTION_TARGET_DAYS,
    get_catalog,
)
from petalapor.errors import InvalidParameterError
from web_map import area_report
from web_map.i18n import check_lang

FORMATS: tuple[str, ...] = ("json", "geojson", "csv", "parquet")
MEDIA_TYPES: Mapping[str, str] = {
    "json": "application/json",
    "geojson": "application/geo+json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
DEFINITIONS: Mapping[str, str] = {
    "as_of": "figures as known at this time; reports created later are left out",
    "rejected": "counted (rejected, rejected_share) but excluded from every performance figure",
    "median_days, p90_days": (
        "Kaplan-Meier over non-rejected reports; open reports censored at as_of; "
        "missing when the curve never falls to 0.5 / 0.1"
    ),
    "resolved_7d_share": (
        f"of non-rejected reports created at least {RESOLUTION_TARGET_DAYS} days before as_of, "
        f"share resolved within {RESOLUTION_TARGET_DAYS} days (inclusive: exactly 7 d 0 s counts)"
    ),
    "coordinated_6h_share": (
        f"same rule with first coordination within {COORDINATION_TARGET_HOURS} hours"
    ),
    "backlog_*": "open reports at as_of by age in days: <=7, (7,30], (30,90], >90",
    "reliable": (
        "at least min_reports non-rejected reports; only reliable units are ranked (1 = best)"
    ),
    "periods": (
        "calendar week/month/quarter/year of creation in Asia/Jakarta, labelled by the first day"
    ),
}


# --------------------------------------------------------------------------- parameter parsing


def _int(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= number <= hi:
        raise InvalidParameterError(f"{name} must be in {lo}..{hi}, got {number}")
    return number


def _float(value: str | None, name: str, default: float, lo: float, hi: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise InvalidParameterError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(number) and lo <= number <= hi):
        raise InvalidParameterError(f"{name} must be in {lo}..{hi}, got {value!r}")
    return number


def _choice(value: str | None, name: str, default: str, choices: tuple[str, ...]) -> str:
    if value is None or value == "":
        return default
    if value not in choices:
        raise InvalidParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _unit(value: str | None, default: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return default
    if value in ("none", "city"):
        return None
    return _choice(value, "unit", "", allowed)


def _map_url(code: str, filters: FilterParams, lang: str) -> str:
    """The planner map zoomed to the kelurahan, with the filters the map has (single codes)."""
    params = {"kelurahan": code}
    if filters.start and len(filters.start) == 10:
        params["from"] = filters.start
    if filters.end and len(filters.end) == 10:  # back from the exclusive bound to the last day
        last = dt.date.fromisoformat(filters.end) - dt.timedelta(days=1)
        params["to"] = last.isoformat()
    for name, values in (("category", filters.categories), ("opd", filters.opds)):
        if len(values) == 1:
            params[name] = values[0]
    if lang != "id":
        params["lang"] = lang
    return "/map?" + urlencode(params)


def _end_of_day(value: str | None) -> str | None:
    """``to`` as a bound: a plain date means up to the end of that day (the next midnight)."""
    if value is None or len(value) != 10 or value.count("-") != 2:
        return value
    try:
        return (dt.date.fromisoformat(value) + dt.timedelta(days=1)).isoformat()
    except ValueError:
        raise InvalidParameterError(f"to: cannot read {value!r} as a date (YYYY-MM-DD)") from None


@dataclass
class FilterParams:
    """Which reports: creation window, categories, OPDs and the ``as_of`` time."""

    start: Annotated[
        str | None,
        Query(
            alias="from",
            description="Created at or after (ISO date/time; no offset = Asia/Jakarta).",
        ),
    ] = None
    end: Annotated[
        str | None,
        Query(
            alias="to",
            description="Created before this time (exclusive); a date (YYYY-MM-DD) includes "
            "that whole day, as in /reports and the tiles.",
        ),
    ] = None
    category: Annotated[
        str | None,
        Query(description="Comma-separated category codes (e.g. an OPD's own categories)."),
    ] = None
    opd: Annotated[str | None, Query(description="Comma-separated OPD codes.")] = None
    as_of: Annotated[
        str | None,
        Query(description="Figures as of this time (default: now), for reproducible results."),
    ] = None

    def __post_init__(self) -> None:
        catalog = get_catalog()
        self.end = _end_of_day(self.end)
        self.categories = _list(self.category)
        self.opds = _list(self.opd)
        unknown = [c for c in self.categories if c not in catalog.categories]
        if unknown:
            raise InvalidParameterError(
                f"unknown category {unknown}; known: {', '.join(sorted(catalog.categories))}"
            )
        unknown = [o for o in self.opds if o not in catalog.opds]
        if unknown:
            raise InvalidParameterError(
                f"unknown OPD {unknown}; known: {', '.join(sorted(catalog.opds))}"
            )
        for name, value in (("from", self.start), ("to", self.end), ("as_of", self.as_of)):
            gm.aware(value, name)  # raises with the reason

    def spec(self, **grouping: Any) -> gm.MetricSpec:
        """A checked :class:`gis.metrics.MetricSpec` with these filters."""
        return gm.MetricSpec(
            as_of=self.as_of,
            start=self.start,
            end=self.end,
            categories=self.categories,
            opds=self.opds,
            **grouping,
        )


@dataclass
class GroupParams:
    """How to group the metrics table."""

    unit: Annotated[
        str | None,
        Query(description="rw, kelurahan, kecamatan, kota, h3_7 ... h3_11, or none (city-wide)."),
    ] = None
    period: Annotated[
        str | None, Query(description="week, month, quarter or year (default: none).")
    ] = None
    by: Annotated[
        str | None, Query(description="Also group by: category, opd or category,opd.")
    ] = None
    within: Annotated[
        str | None,
        Query(description="Only reports in one area: LEVEL:CODE, e.g. kelurahan:3171010001."),
    ] = None
    min_reports: Annotated[
        str | None,
        Query(description="Rows with fewer non-rejected reports are unreliable (default 20)."),
    ] = None
    rank_by: Annotated[str | None, Query(description=f"One of {', '.join(gm.RANK_METRICS)}.")] = (
        None
    )

    def __post_init__(self) -> None:
        self.unit_value = _unit(self.unit, "rw", tuple(gm.UNITS))
        by = set(_list(self.by))
        if by - {"category", "opd"}:
            raise InvalidParameterError(f"by must list category and/or opd, got {self.by!r}")
        self.grouping: dict[str, Any] = {
            "unit": self.unit_value,
            "period": None
            if self.period in (None, "", "none")
            else _choice(self.period, "period", "", gm.PERIODS),
            "by_category": "category" in by,
            "by_opd": "opd" in by,
            "min_reports": _int(self.min_reports, "min_reports", 20, 1, 1_000_000),
            "rank_by": _choice(
                self.rank_by, "rank_by", "resolved_7d_share", tuple(gm.RANK_METRICS)
            ),
        }
        if self.within:
            level, _, code = self.within.partition(":")
            if level not in gm.ADMIN_UNITS or not code:
                raise InvalidParameterError(
                    f"within must be LEVEL:CODE with LEVEL in {gm.ADMIN_UNITS}, got {self.within!r}"
                )
            self.grouping["within"] = (level, code)


@dataclass
class OutputParams:
    """Output format and geometry simplification."""

    format: Annotated[
        str | None, Query(description="json, geojson, csv or parquet (GeoParquet).")
    ] = None
    simplify: Annotated[
        str | None, Query(description="Simplify polygons by this many metres (admin units).")
    ] = None

    def __post_init__(self) -> None:
        self.kind = _choice(self.format, "format", "json", FORMATS)
        self.simplify_m = _float(self.simplify, "simplify", 0.0, 0.0, 1000.0) or None


@dataclass
class HotspotParams:
    """Hot-spot analysis options."""

    unit: Annotated[
        str | None, Query(description=f"One of {', '.join(hs.HOTSPOT_UNITS)} (default h3_9).")
    ] = None
    metric: Annotated[
        str | None, Query(description="count, rate (per km²) or backlog (open reports).")
    ] = None
    method: Annotated[
        str | None, Query(description="gistar (Getis-Ord Gi*) or moran (Local Moran's I).")
    ] = None
    permutations: Annotated[
        str | None, Query(description="Conditional permutations, 99..99999 (default 9999).")
    ] = None
    seed: Annotated[str | None, Query(description="Seed of the permutations (default 0).")] = None
    inference: Annotated[str | None, Query(description="permutation (default) or normal.")] = None
    alpha: Annotated[
        str | None, Query(description="FDR level of Moran clusters (default 0.05).")
    ] = None

    def __post_init__(self) -> None:
        self.options = {
            "metric": _choice(self.metric, "metric", "count", hs.METRICS),
            "method": _choice(self.method, "method", "gistar", hs.METHODS),
            "permutations": _int(
                self.permutations, "permutations", hs.DEFAULT_PERMUTATIONS, 99, 99_999
            ),
            "seed": _int(self.seed, "seed", 0, 0, 2**31 - 1),
            "inference": _choice(self.inference, "inference", "permutation", hs.INFERENCES),
            "alpha": _float(self.alpha, "alpha", 0.05, 0.001, 0.5),
        }
        self.unit_value = _choice(self.unit, "unit", "h3_9", hs.HOTSPOT_UNITS)


@dataclass
class OverlayParams:
    """Overlay options."""

    layers: Annotated[
        str | None, Query(description="Covariate layers: wifi, ispu or wifi,ispu (default both).")
    ] = None
    ci: Annotated[
        str | None, Query(description="Confidence intervals: fisher (default) or bootstrap.")
    ] = None
    level: Annotated[str | None, Query(description="Confidence level (default 0.95).")] = None
    n_boot: Annotated[str | None, Query(description="Bootstrap resamples (default 2000).")] = None
    seed: Annotated[
        str | None, Query(description="Seed of the bootstrap and the Gi* permutations.")
    ] = None
    max_distance_m: Annotated[
        str | None,
        Query(
            description="Poorly served: no hotspot and the nearest farther than this (default 300)."
        ),
    ] = None
    min_reports: Annotated[str | None, Query(description="Reliability threshold (default 20).")] = (
        None
    )
    table: Annotated[
        str | None,
        Query(description="For csv/parquet/geojson: rw (default), correlations or priority."),
    ] = None

    def __post_init__(self) -> None:
        layers = _list(self.layers) or ("wifi", "ispu")
        if set(layers) - set(ov.COVARIATES):
            raise InvalidParameterError(
                f"layers must be among {', '.join(ov.COVARIATES)}, got {self.layers!r}"
            )
        self.options = {
            "layers": layers,
            "ci": _choice(self.ci, "ci", "fisher", ov.CI_METHODS),
            "level": _float(self.level, "level", 0.95, 0.5, 0.999),
            "n_boot": _int(self.n_boot, "n_boot", 2000, 100, 20000),
            "seed": _int(self.seed, "seed", 0, 0, 2**31 - 1),
            "max_distance_m": _float(self.max_distance_m, "max_distance_m", 300.0, 0.0, 50_000.0),
        }
        self.min_reports_value = _int(self.min_reports, "min_reports", 20, 1, 1_000_000)
        self.table_value = _choice(self.table, "table", "rw", ("rw", "correlations", "priority"))


@dataclass
class CompareParams:
    """The multi-resolution view."""

    metric: Annotated[
        str | None, Query(description="A metric column, e.g. resolved_share (default).")
    ] = None
    units: Annotated[
        str | None, Query(description="Two (up to four) units, e.g. rw,h3_8 (default).")
    ] = None
    min_reports: Annotated[str | None, Query(description="Reliability threshold (default 20).")] = (
        None
    )

    def __post_init__(self) -> None:
        self.metric_value = self.metric or "resolved_share"
        self.units_value = _list(self.units) or ("rw", "h3_8")
        bad = [u for u in self.units_value if u not in gm.UNITS]
        if bad:
            raise InvalidParameterError(f"units must be among {', '.join(gm.UNITS)}, got {bad}")
        self.min_reports_value = _int(self.min_reports, "min_reports", 20, 1, 1_000_000)


# --------------------------------------------------------------------------- output


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python), no geometry."""
    plain = pd.DataFrame(frame.drop(columns=[c for c in ("geometry",) if c in frame.columns]))
    return [{k: _clean(v) for k, v in row.items()} for row in plain.to_dict(orient="records")]


def json_response(payload: Any) -> Response:
    """Strict JSON (no NaN) from a payload of plain values."""
    return Response(
        json.dumps(payload, allow_nan=False, default=str), media_type=MEDIA_TYPES["json"]
    )


def table_response(frame: pd.DataFrame, kind: str, meta: dict[str, Any], name: str) -> Response:
    """A table in one of :data:`FORMATS`; geojson/parquet need a geometry column."""
    if kind == "json":
        return json_response({"meta": meta, "rows": records(frame)})
    headers = {"Content-Disposition": f'attachment; filename="{name}.{kind}"'}
    if kind == "csv":
        plain = pd.DataFrame(frame.drop(columns=[c for c in ("geometry",) if c in frame.columns]))
        return Response(plain.to_csv(index=False), media_type=MEDIA_TYPES["csv"], headers=headers)
    spatial = isinstance(frame, gpd.GeoDataFrame) and "geometry" in frame.columns
    if kind == "geojson":
        if not spatial:
            raise InvalidParameterError("geojson needs a spatial unit (not unit=none)")
        body = frame.to_json(na="null", drop_id=True)
        return Response(body, media_type=MEDIA_TYPES["geojson"], headers=headers)
    buf = io.BytesIO()
    out = frame.copy()
    for col in out.columns:
        if col != "geometry" and out[col].dtype == object:
            out[col] = _typed(out[col])
    out.attrs = {}
    out.to_parquet(buf, index=False)
    return Response(buf.getvalue(), media_type=MEDIA_TYPES["parquet"], headers=headers)


def _typed(values: pd.Series) -> pd.Series:
    """An object column as boolean, float or string (suppression leaves None among numbers)."""
    present = values.dropna()
    if len(present) and present.map(lambda v: isinstance(v, bool)).all():
        return values.astype("boolean")
    if (
        len(present)
        and present.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool)).all()
    ):
        return pd.to_numeric(values, errors="coerce").astype(float)
    return values.astype("string")


def _meta(spec: gm.MetricSpec, **extra: Any) -> dict[str, Any]:
    return {
        "unit": spec.unit or "city",
        "as_of": spec.as_of.isoformat(),
        "from": spec.start.isoformat() if spec.start else None,
        "to": spec.end.isoformat() if spec.end else None,
        "categories": list(spec.categories),
        "opds": list(spec.opds),
        "period": spec.period,
        "min_reports": spec.min_reports,
        "private_reports_included": spec.include_private,
        "targets": {
            "resolution_days": RESOLUTION_TARGET_DAYS,
            "coordination_hours": COORDINATION_TARGET_HOURS,
        },
        **extra,
    }


# --------------------------------------------------------------------------- router factory


def _default_k() -> int:
    from tiles.settings import TileSettings

    return TileSettings().k_anonymity


@dataclass
class AnalysisFactory:
    """Registers ``/analysis/resolution``, ``/hotspots``, ``/overlay`` and ``/compare``."""

    router: APIRouter = field(default_factory=APIRouter)
    prefix: str = "/analysis"
    cache: analysis.UnitCache = field(default_factory=analysis.UnitCache)
    viewer: Callable[..., Viewer] = auth_viewer
    k_anonymity: int = field(default_factory=_default_k)

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add the four analysis endpoints."""
        self._resolution()
        self._hotspots()
        self._overlay()
        self._compare()
        self._area_page()

    def _public(self, table: pd.DataFrame, who: Viewer, keep: tuple[str, ...] = ()) -> pd.DataFrame:
        """Public callers get small rows suppressed; others the table as it is."""
        return gm.suppress_small(table, self.k_anonymity, keep=keep) if who.is_public else table

    def _resolution(self) -> None:
        @self.router.get(
            f"{self.prefix}/resolution",
            tags=["analysis"],
            summary="Resolution metrics per unit x period x category x OPD",
            response_class=Response,
        )
        def resolution(
            filters: Annotated[FilterParams, Depends()],
            group: Annotated[GroupParams, Depends()],
            output: Annotated[OutputParams, Depends()],
            who: Viewer = Depends(self.viewer),
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            spec = filters.spec(**group.grouping, include_private=not who.is_public)
            table = self._public(analysis.resolution_metrics(conn, spec), who)
            if output.kind in ("geojson", "parquet") and spec.unit is not None:
                table = analysis.with_geometry(conn, table, spec.unit, simplify_m=output.simplify_m)
            elif output.kind == "geojson":
                raise InvalidParameterError("geojson needs a spatial unit (not unit=none)")
            meta = _meta(
                spec,
                within=":".join(spec.within) if spec.within else None,
                definitions=dict(DEFINITIONS),
            )
            return table_response(table, output.kind, meta, "resolution")

    def _area_page(self) -> None:
        @self.router.get(
            f"{self.prefix}/kelurahan/{{code}}",
            tags=["analysis", "pages"],
            summary="One-page summary of a kelurahan (HTML): figures against the targets, "
            "RW map, backlog, monthly counts",
            response_class=HTMLResponse,
            responses={404: {"description": "No such kelurahan"}},
        )
        def area_page(
            code: Annotated[str, Path(pattern=r"^[0-9A-Za-z_.-]{1,32}$")],
            filters: Annotated[FilterParams, Depends()],
            lang: Annotated[
                str | None, Query(description="id (default) or en.", max_length=2)
            ] = None,
            who: Viewer = Depends(self.viewer),
            conn: psycopg.Connection = Depends(get_conn),
        ) -> HTMLResponse:
            """The page ``petalapor report`` writes; public readers see public reports only,
            and rows with fewer than k reports without their figures."""
            spec = filters.spec(include_private=not who.is_public)
            k = self.k_anonymity if who.is_public else None
            data = area_report.report_data(conn, code, spec, k_anonymity=k)
            headers = security_headers(embed=False)
            headers["Cache-Control"] = "public, max-age=300" if who.is_public else "no-store"
            lang = check_lang(lang)
            page = area_report.render_report(data, lang, map_url=_map_url(code, filters, lang))
            return HTMLResponse(page, headers=headers)

    def _hotspots(self) -> None:
        @self.router.get(
            f"{self.prefix}/hotspots",
            tags=["analysis"],
            summary="Hot spots (Gi* or Local Moran) of report counts, rates or backlog",
            response_class=Response,
        )
        def hotspots(
            filters: Annotated[FilterParams, Depends()],
            params: Annotated[HotspotParams, Depends()],
            who: Viewer = Depends(self.viewer),
            format: Annotated[
                str | None, Query(description="geojson (default), json, csv or parquet.")
            ] = None,
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            kind = _choice(format, "format", "geojson", FORMATS)
            spec = filters.spec(unit=params.unit_value, include_private=not who.is_public)
            result = analysis.hotspots(conn, spec, cache=self.cache, **params.options)
            meta = _meta(spec, **{k: v for k, v in result.attrs.items() if k != "unit"})
            result.attrs = {}
            if who.is_public:  # the class is a neighbourhood statistic; small counts are not shown
                result = gm.suppress_small(
                    result,
                    self.k_anonymity,
                    keep=tuple(c for c in result.columns if c not in ("value", "reports")),
                )
            return table_response(result, kind, meta, "hotspots")

    def _overlay(self) -> None:
        @self.router.get(
            f"{self.prefix}/overlay",
            tags=["analysis"],
            summary="RW metrics with JakWifi coverage and ISPU exposure; rank correlations",
            response_class=Response,
        )
        def overlay(
            filters: Annotated[FilterParams, Depends()],
            params: Annotated[OverlayParams, Depends()],
            who: Viewer = Depends(self.viewer),
            format: Annotated[
                str | None, Query(description="json (default), geojson, csv or parquet.")
            ] = None,
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            kind = _choice(format, "format", "json", FORMATS)
            spec = filters.spec(
                unit="rw", min_reports=params.min_reports_value, include_private=not who.is_public
            )
            out = analysis.overlay(conn, spec, cache=self.cache, **params.options)
            covariates = (
                "wifi_count",
                "wifi_per_km2",
                "wifi_nearest_m",
                "ispu_mean",
                "hot_class",
                "hot_z",
                "poorly_served",
            )
            for name in ("table", "priority"):
                out[name] = self._public(out[name], who, keep=covariates)
            meta = _meta(spec, **params.options, layers_used=list(params.options["layers"]))
            if kind == "json":
                return json_response(
                    {
                        "meta": meta,
                        "notes": ov.NOTES,
                        "rws": records(out["table"]),
                        "correlations": records(out["correlations"]),
                        "priority": records(out["priority"]),
                    }
                )
            frame = out[{"rw": "table"}.get(params.table_value, params.table_value)]
            if kind in ("geojson", "parquet") and params.table_value != "correlations":
                frame = analysis.with_geometry(conn, frame, "rw")
            return table_response(frame, kind, meta, f"overlay_{params.table_value}")

    def _compare(self) -> None:
        @self.router.get(
            f"{self.prefix}/compare",
            tags=["analysis"],
            summary="One metric at two resolutions side by side (modifiable areal unit problem)",
            response_class=Response,
        )
        def compare(
            filters: Annotated[FilterParams, Depends()],
            params: Annotated[CompareParams, Depends()],
            who: Viewer = Depends(self.viewer),
            format: Annotated[
                str | None, Query(description="json (default) or csv (long table).")
            ] = None,
            conn: psycopg.Connection = Depends(get_conn),
        ) -> Response:
            kind = _choice(format, "format", "json", ("json", "csv"))
            spec = filters.spec(
                unit=None, min_reports=params.min_reports_value, include_private=not who.is_public
            )
            out = analysis.compare(conn, spec, params.metric_value, params.units_value)
            for r in out["resolutions"]:
                r["table"] = self._public(r["table"], who)
            if kind == "csv":
                long = pd.concat(
                    [
                        r["table"][["unit", "code", params.metric_value, "reports", "reliable"]]
                        for r in out["resolutions"]
                    ],
                    ignore_index=True,
                )
                return table_response(long, "csv", {}, "compare")
            resolutions = []
            for r in out["resolutions"]:
                table = r["table"][
                    ["code", params.metric_value, "reports", "rejected", "reliable", "rank"]
                ]
                geo = analysis.with_geometry(conn, table, r["unit"], simplify_m=None)
                resolutions.append(
                    {
                        "unit": r["unit"],
                        "summary": {k: _clean(v) for k, v in r["summary"].items()},
                        "features": json.loads(geo.to_json(na="null", drop_id=True)),
                    }
                )
            return json_response(
                {
                    "meta": _meta(spec, units=list(params.units_value)),
                    "metric": out["metric"],
                    "pooled": _clean(out["pooled"]),
                    "note": out["note"],
                    "resolutions": resolutions,
                }
            )
