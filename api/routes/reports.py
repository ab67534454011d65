"""``/reports``: create, read and list reports, and move them through the workflow.

The caller comes from the factory's ``viewer`` dependency (an :class:`api.auth.Viewer`);
the app passes ``api.auth.viewer``.  The default, :func:`anonymous_viewer`, is the
public: it reads public reports and cannot write.

Writes need a key (401 without one):

- ``POST /reports``: any key.  An intake app (JAKI, Qlue, the web form's backend)
  gets an admin key, or an OPD key when it only files for that OPD: an OPD key may
  only file reports routed to its own OPD (the category's default OPD, or an explicit
  ``opd`` equal to its own), else 403.
- ``POST /reports/{id}/events``: an admin key for any report; an OPD key for its own
  OPD's reports only (403 for another OPD's).  ``actor_opd`` defaults to an OPD
  key's OPD and must equal it (403 otherwise); for admin keys it is taken as given.

Reads are public (rate-limited by :class:`api.auth.RateLimitMiddleware`) for public
reports.  Hidden reports (``public = false``): an admin key sees all of them; an OPD
key sees its own OPD's (``GET /reports`` lists every public report plus those,
``?opd=`` still filters), another OPD's hidden report does not exist for it (404,
not listed); the public sees none.  Refusals happen before anything is stored.
Reporter identity is never part of any response model here.
"""

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

import h3
import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from api.auth import PUBLIC, Viewer
from api.deps import get_conn, parse_bbox
from db.quality import quality_report
from db.reports import (
    JAKARTA,
    MAX_NOTE,
    REOPENED_ATTR,
    NewReport,
    ReportFilter,
    add_event,
    create_report,
    get_report,
    iter_reports,
    list_events,
    list_reports,
    reporter_salt,
)
from gis.snap import METHODS
from petalapor.catalog import Catalog, get_catalog
from petalapor.errors import InvalidParameterError

#: Page size of ``GET /reports`` when none is asked for, and the most allowed.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


# --------------------------------------------------------------------------- who asks


def anonymous_viewer() -> Viewer:
    """The public, whatever the request carries: reads public reports, cannot write."""
    return PUBLIC


def key_holder(viewer: Callable[..., Viewer]) -> Callable[..., Viewer]:
    """A dependency giving ``viewer``'s caller, or 401 without a key.

    As a dependency it runs before the body is validated, so a caller without a key
    learns nothing from validation errors.
    """

    def holder(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
        return who.require_key()

    return holder


# --------------------------------------------------------------------------- models


def _jakarta(value: datetime) -> datetime:
    """Show a time in Western Indonesian Time (+07:00)."""
    return value.astimezone(JAKARTA)


JakartaTime = Annotated[datetime, AfterValidator(_jakarta)]


class ReportIn(NewReport):
    """A new report (``POST /reports``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "category": "banjir",
                    "lat": -6.1754,
                    "lon": 106.8272,
                    "description": "Genangan 30 cm di depan halte",
                    "source": "web",
                    "external_id": "web-2024-000123",
                    "created_at": "2024-01-31T08:15:00+07:00",
                }
            ]
        }
    )


class EventIn(BaseModel):
    """A status change (``POST /reports/{id}/events``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    status: str = Field(description="New status code (the workflow decides which are allowed).")
    at: datetime | None = Field(None, description="When it happened (with timezone); default now.")
    actor_opd: str | None = Field(None, description="OPD that made the change.")
    note: str | None = Field(None, max_length=MAX_NOTE)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        statuses = get_catalog().statuses
        if value not in statuses:
            raise ValueError(f"unknown status {value!r}; known: {', '.join(statuses)}")
        return value


class EventOut(BaseModel):
    """One entry of a report's status history."""

    from_status: str | None
    to_status: str
    at: JakartaTime
    actor_opd: str | None
    note: str | None


class ReportOut(BaseModel):
    """A report as the public sees it (never the reporter's identity)."""

    id: uuid.UUID
    source: str
    external_id: str
    category: str
    category_name: str
    opd: str
    opd_name: str
    title: str | None
    description: str | None
    media_url: str | None
    status: str
    status_name: str
    is_open: bool
    created_at: JakartaTime
    updated_at: JakartaTime
    first_coordinated_at: JakartaTime | None
    resolved_at: JakartaTime | None
    lon: float
    lat: float
    rw_code: str | None
    rw_name: str | None
    kelurahan_code: str | None
    kelurahan_name: str | None
    kecamatan_code: str | None
    kecamatan_name: str | None
    kota_code: str | None
    kota_name: str | None
    snap_method: str = Field(description="inside, nearest (within 100 m) or outside (no unit).")
    snap_distance_m: float
    h3_r7: str = Field(description="H3 cell (hex), resolution 7; likewise r8..r11.")
    h3_r8: str
    h3_r9: str
    h3_r10: str
    h3_r11: str
    public: bool
    reopened: int = Field(0, description="How often the report was re-opened after closing.")

    @classmethod
    def from_row(
        cls, row: dict[str, Any], catalog: Catalog | None = None, **extra: Any
    ) -> "ReportOut":
        """Build from a :func:`db.reports.get_report` row, adding catalog names."""
        values = {k: v for k, v in row.items() if k in cls.model_fields}
        values.update(derived_fields(row, catalog or get_catalog()))
        values.update(extra)
        return cls(**values)


def derived_fields(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """What a stored report row gains for output: catalog names, open or not, H3 cells as hex.

    Shared by :class:`ReportOut` and the export (which skips pydantic per row).
    """
    cat = catalog.categories.get(row["category"])
    st = catalog.statuses.get(row["status"])
    return {
        "category_name": cat.name_id if cat else row["category"],
        "opd_name": catalog.opds.get(row["opd"], row["opd"]),
        "status_name": st.name_id if st else row["status"],
        "is_open": st.open if st else True,
        "reopened": int((row.get("attrs") or {}).get(REOPENED_ATTR, 0)),
        **{f"h3_r{r}": h3.int_to_str(row[f"h3_r{r}"]) for r in (7, 8, 9, 10, 11)},
    }


class ReportDetail(ReportOut):
    """A report with its status history."""

    events: list[EventOut]


class ReportPage(BaseModel):
    """One page of ``GET /reports``, newest first."""

    items: list[ReportOut]
    total: int = Field(description="Reports matching the filters, all pages.")
    limit: int
    offset: int


# --------------------------------------------------------------------------- parameters


def parse_time(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    """A date (``2024-01-31``) or datetime; naive values are Jakarta time.

    A date as an ``end`` bound means the end of that day (the next midnight).
    """
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), JAKARTA)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameterError(
            f"{name} must be a date (2024-01-31) or datetime (2024-01-31T08:00:00+07:00), "
            f"got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=JAKARTA)
    return moment + timedelta(microseconds=1) if end else moment


@dataclass
class ReportFilterParams:
    """Filters of ``GET /reports`` and its export and quality report."""

    bbox: Annotated[
        str | None,
        Query(description="lon/lat box minx,miny,maxx,maxy.", examples=["106.8,-6.2,106.85,-6.15"]),
    ] = None
    kelurahan: Annotated[str | None, Query(max_length=32, description="Kelurahan code.")] = None
    rw: Annotated[str | None, Query(max_length=32, description="RW code.")] = None
    category: Annotated[
        list[str] | None,
        Query(description="Category code; repeat for several (category=a&category=b)."),
    ] = None
    opd: Annotated[str | None, Query(max_length=32, description="OPD code.")] = None
    status: Annotated[str | None, Query(max_length=32, description="Status code.")] = None
    snap_method: Annotated[
        str | None,
        Query(
            max_length=16,
            description="How the report was placed: inside, nearest (within the tolerance) or "
            "outside (no RW near; kept and flagged).",
        ),
    ] = None
    from_: Annotated[
        str | None,
        Query(alias="from", description="Created at or after (date or datetime; naive = WIB)."),
    ] = None
    to: Annotated[
        str | None, Query(description="Created at or before (a date includes the whole day).")
    ] = None

    def __post_init__(self) -> None:
        self.box = parse_bbox(self.bbox)
        self.created_from = parse_time(self.from_, "from")
        self.created_before = parse_time(self.to, "to", end=True)
        if self.created_from and self.created_before and self.created_from >= self.created_before:
            raise InvalidParameterError(f"from ({self.from_}) must be before to ({self.to})")
        catalog = get_catalog()
        unknown = [c for c in self.category or [] if c not in catalog.categories]
        if unknown:
            raise InvalidParameterError(
                f"unknown category {unknown}; known: {', '.join(catalog.categories)}"
            )
        if self.snap_method is not None and self.snap_method not in METHODS:
            raise InvalidParameterError(
                f"unknown snap_method {self.snap_method!r}; known: {', '.join(METHODS)}"
            )
        if self.status is not None and self.status not in catalog.statuses:
            raise InvalidParameterError(
                f"unknown status {self.status!r}; known: {', '.join(catalog.statuses)}"
            )

    def filters(self, viewer: Viewer) -> ReportFilter:
        """The storage-level filter for this query and caller."""
        return ReportFilter(
            bbox=self.box,
            kelurahan=self.kelurahan,
            rw=self.rw,
            categories=self.category,
            opd=self.opd,
            statuses=[self.status] if self.status else None,
            created_from=self.created_from,
            created_before=self.created_before,
            include_private=viewer.can_see_private,
            private_opd=viewer.private_opd,
            snap_method=self.snap_method,
        )


@dataclass
class ReportQueryParams(ReportFilterParams):
    """Filters and paging of ``GET /reports``."""

    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (max {MAX_LIMIT}).")
    ] = DEFAULT_LIMIT
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0


#: Columns of ``GET /reports/export`` (CSV header, GeoJSON properties), in order.
EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
    "external_id",
    "category",
    "category_name",
    "opd",
    "status",
    "status_name",
    "is_open",
    "created_at",
    "updated_at",
    "first_coordinated_at",
    "resolved_at",
    "lon",
    "lat",
    "rw_code",
    "rw_name",
    "kelurahan_code",
    "kelurahan_name",
    "kecamatan_code",
    "kecamatan_name",
    "kota_code",
    "kota_name",
    "snap_method",
    "snap_distance_m",
    "h3_r7",
    "h3_r8",
    "h3_r9",
    "h3_r10",
    "h3_r11",
    "public",
    "title",
    "description",
    "media_url",
)
_EXPORT_TIMES = ("created_at", "updated_at", "first_coordinated_at", "resolved_at")


def export_record(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A stored report as one flat export record (times in WIB, H3 cells as hex)."""
    extra = derived_fields(row, catalog)
    out = {k: extra[k] if k in extra else row.get(k) for k in EXPORT_COLUMNS}
    out.update(
        id=str(row["id"]),
        lon=round(row["lon"], 7),
        lat=round(row["lat"], 7),
        snap_distance_m=round(row["snap_distance_m"], 2),
    )
    for key in _EXPORT_TIMES:
        value = row[key]
        out[key] = value.astimezone(JAKARTA).isoformat() if value is not None else None
    return out


def _csv_chunks(batches: Iterator[list[dict]], catalog: Catalog) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rows in batches:
        writer.writerows(export_record(r, catalog) for r in rows)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def _geojson_chunks(batches: Iterator[list[dict]], catalog: Catalog) -> Iterator[str]:
    yield '{"type": "FeatureCollection", "features": ['
    first = True
    for rows in batches:
        features = []
        for row in rows:
            props = export_record(row, catalog)
            geometry = {"type": "Point", "coordinates": [props["lon"], props["lat"]]}
            features.append(
                json.dumps(
                    {
                        "type": "Feature",
                        "id": props["id"],
                        "geometry": geometry,
                        "properties": props,
                    },
                    ensure_ascii=False,
                )
            )
        if features:
            yield ("" if first else ",") + ",".join(features)
            first = False
    yield "]}"


@dataclass
class ExportParams:
    """The file format of ``GET /reports/export``."""

    format: Annotated[
        str, Query(description="csv (default) or geojson; every matching report, newest first.")
    ] = "csv"

    def __post_init__(self) -> None:
        if self.format not in ("csv", "geojson"):
            raise InvalidParameterError(f"format must be csv or geojson, got {self.format!r}")


ReportId = Annotated[str, Path(max_length=64, description="Report id (UUID).")]
Conn = Annotated[psycopg.Connection, Depends(get_conn)]


# --------------------------------------------------------------------------- router


def report_detail(conn: psycopg.Connection, row: dict, **extra: Any) -> ReportDetail:
    """A stored report with its events, for output."""
    events = [EventOut(**e) for e in list_events(conn, row["id"])]
    return ReportDetail.from_row(row, events=events, **extra)


@dataclass
class ReportFactory:
    """Registers ``/reports`` (POST, GET), ``/reports/{id}`` and ``/reports/{id}/events``."""

    router: APIRouter = field(default_factory=APIRouter)
    #: Who is asking (the app passes ``api.auth.viewer``); writes need a key.
    viewer: Callable[..., Viewer] = anonymous_viewer
    #: Salt for reporter hashes.
    salt: Callable[[], bytes] = reporter_salt
    prefix: str = "/reports"
    tags: list[str] = field(default_factory=lambda: ["reports"])

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add the four report endpoints."""
        writer = key_holder(self.viewer)

        @self.router.post(
            self.prefix,
            tags=self.tags,
            summary="Submit a report (needs an API key; idempotent on source + external_id)",
            status_code=status.HTTP_201_CREATED,
            response_model=ReportDetail,
            responses={
                200: {
                    "description": "Already stored (same source and external_id): the stored report"
                },
                401: {"description": "No API key, or an unknown or revoked one"},
                403: {"description": "An OPD key filing a report routed to another OPD"},
                413: {"description": "Body too large"},
                422: {"description": "Invalid report or outside the service area"},
            },
        )
        def create(
            report: ReportIn,
            request: Request,
            response: Response,
            viewer: Annotated[Viewer, Depends(writer)],
            conn: Conn,
        ) -> ReportDetail:
            viewer.check_acts_for(report.routed_opd())
            row, created = create_report(conn, report, salt=self.salt() if report.reporter else b"")
            response.headers["Location"] = str(
                request.url_for("get_report", report_id=str(row["id"]))
            )
            if created:
                return report_detail(conn, row)
            response.status_code = status.HTTP_200_OK
            if not viewer.can_see_report(row["opd"], row["public"]):
                # a re-send of a hidden report the key may not read: confirm it, no text
                return report_detail(conn, row, title=None, description=None, media_url=None)
            return report_detail(conn, row)

        @self.router.get(
            self.prefix,
            tags=self.tags,
            summary="List reports, newest first",
            response_model=ReportPage,
        )
        def reports(
            params: Annotated[ReportQueryParams, Depends()],
            viewer: Annotated[Viewer, Depends(self.viewer)],
            conn: Conn,
        ) -> ReportPage:
            rows, total = list_reports(
                conn, params.filters(viewer), limit=params.limit, offset=params.offset
            )
            catalog = get_catalog()
            return ReportPage(
                items=[ReportOut.from_row(r, catalog) for r in rows],
                total=total or 0,
                limit=params.limit,
                offset=params.offset,
            )

        @self.router.get(
            self.prefix + "/export",
            tags=self.tags,
            summary="Download the reports matching the filters (CSV or GeoJSON), newest first",
            response_class=StreamingResponse,
            responses={
                200: {
                    "content": {"text/csv": {}, "application/geo+json": {}},
                    "description": "Every matching report the caller may see (streamed)",
                },
                400: {"description": "Unknown or invalid parameter"},
            },
        )
        def export(
            params: Annotated[ReportFilterParams, Depends()],
            output: Annotated[ExportParams, Depends()],
            viewer: Annotated[Viewer, Depends(self.viewer)],
            request: Request,
        ) -> StreamingResponse:
            filters = params.filters(viewer)
            catalog = get_catalog()
            pool = request.app.state.pool

            def batches() -> Iterator[list[dict]]:
                # its own connection: the response streams after the request's is returned
                with pool.connection() as conn, conn.transaction():
                    yield from iter_reports(conn, filters)

            encode = _csv_chunks if output.format == "csv" else _geojson_chunks
            kind = "text/csv" if output.format == "csv" else "application/geo+json"
            stamp = datetime.now(JAKARTA).strftime("%Y%m%d")
            name = f"petalapor_reports_{stamp}.{output.format}"
            return StreamingResponse(
                encode(batches(), catalog),
                media_type=f"{kind}; charset=utf-8",
                headers={
                    "Content-Disposition": f'attachment; filename="{name}"',
                    "Cache-Control": "no-store" if not viewer.is_public else "public, max-age=60",
                },
            )

        @self.router.get(
            self.prefix + "/quality",
            tags=self.tags,
            summary="Data quality: how reports were placed (inside, nearest, outside), the "
            "farthest outside ones; for admins also the recent imports and their quarantine",
        )
        def quality(
            params: Annotated[ReportFilterParams, Depends()],
            viewer: Annotated[Viewer, Depends(self.viewer)],
            conn: Conn,
        ) -> dict[str, Any]:
            """Over the reports the caller may see (the same filters as ``GET /reports``):

            - ``reports``: how many;
            - ``snap``: per method (``inside``, ``nearest``, ``outside``) the ``reports``,
              their ``share`` and, for the last two, ``distance_m`` to the nearest RW
              (``median_m``, ``p90_m``, ``max_m``);
            - ``by_source``: reports, ``nearest`` and ``outside`` per source channel;
            - ``nearest_by_kota``: where the ``nearest`` ones were placed;
            - ``farthest_outside``: the 20 farthest ``outside`` reports (id, source,
              external_id, created_at, lon, lat, distance_m);
            - ``imports`` (admin keys only): the 10 latest imports with read, stored,
              updated, quarantined, snap counts, quarantined rows by field and the
              first five of them (row number, field, reason).
            """
            return quality_report(conn, params.filters(viewer), imports=viewer.is_admin)

        @self.router.get(
            self.prefix + "/{report_id}",
            name="get_report",
            tags=self.tags,
            summary="One report with its status history",
            response_model=ReportDetail,
            responses={404: {"description": "No such report (or hidden)"}},
        )
        def report(
            report_id: ReportId,
            viewer: Annotated[Viewer, Depends(self.viewer)],
            conn: Conn,
        ) -> ReportDetail:
            row = get_report(
                conn,
                report_id,
                include_private=viewer.can_see_private,
                private_opd=viewer.private_opd,
            )
            return report_detail(conn, row)

        @self.router.post(
            self.prefix + "/{report_id}/events",
            tags=self.tags,
            summary="Change a report's status (appends an event; needs an OPD or admin key)",
            status_code=status.HTTP_201_CREATED,
            response_model=ReportDetail,
            responses={
                401: {"description": "No API key, or an unknown or revoked one"},
                403: {"description": "An OPD key on another OPD's report, or as another OPD"},
                404: {"description": "No such report (or hidden from this key)"},
                409: {"description": "The workflow does not allow this change"},
            },
        )
        def event(
            report_id: ReportId,
            body: EventIn,
            viewer: Annotated[Viewer, Depends(writer)],
            conn: Conn,
        ) -> ReportDetail:
            # an OPD key acts as its own OPD; an admin key names the actor (or not)
            actor = viewer.scope_opd(body.actor_opd) if viewer.role == "opd" else body.actor_opd
            row = add_event(
                conn,
                report_id,
                body.status,
                at=body.at,
                actor_opd=actor,
                note=body.note,
                include_private=viewer.can_see_private,
                private_opd=viewer.private_opd,
                only_opd=None if viewer.is_admin else viewer.opd,
            )
            return report_detail(conn, row)
