"""Open311 GeoReport v2 under ``/open311/v2/`` (http://wiki.open311.org/GeoReport_v2).

Every endpoint answers in JSON or XML by its extension (``.json``/``.xml``), shaped
as the specification shows, errors included (``<errors><error><code/>
<description/></error></errors>``, or a JSON list of ``{code, description}``).

Mapping onto petalapor:

- services are the catalog's categories (``service_code`` = category code);
  none has extra attributes (``metadata`` false);
- ``service_request_id`` is the report id (UUID);
- ``status`` is ``open``/``closed`` from the workflow; the Jakarta stage
  (e.g. "Koordinasi") is in ``status_notes``; ``agency_responsible`` is the OPD;
  ``expected_datetime`` is the published resolution target (requested + 7 days);
- reports created here get ``source = "open311"``.  Their ``external_id`` (the
  idempotency key) is the client's ``external_id`` field or ``Idempotency-Key``
  header when given (a re-sent request returns the stored report, HTTP 200),
  else a random token (every POST is a new report, HTTP 201);
- only ``lat``/``long`` locate a request: an ``address_string`` alone is refused
  (no geocoding).  ``email``, ``phone``, ``device_id`` or ``account_id`` become the
  reporter hash (first one given); names are not stored.
- ``POST requests`` needs an API key (``petalapor keys create``): the spec's
  ``api_key`` field (form, JSON or query string) or the ``X-API-Key`` /
  ``Authorization: Bearer`` header; the field wins when both are given.  No key is
  an Open311 401; an unknown or revoked key a 403 (the spec's "invalid api_key"),
  as is an OPD key filing a service whose category is routed to another OPD.
  Nothing is stored on refusal.  Keys in the query string end up in access logs:
  prefer the header or the body.
- ``GET requests``: public reports for everyone (rate-limited); hidden reports for
  an admin key, or an OPD key's own OPD, sent as a header (as in ``/reports``).
- ``jurisdiction_id`` is accepted and not checked (one jurisdiction).
"""

import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from api.auth import resolve as resolve_key
from api.routes.reports import Conn, Viewer, anonymous_viewer, parse_time
from db.reports import (
    JAKARTA,
    MAX_EXTERNAL_ID,
    ReportFilter,
    create_report,
    get_report,
    list_reports,
    parse_report,
    reporter_salt,
)
from petalapor.catalog import (
    CATALOG_FILE,
    COORDINATION_TARGET_HOURS,
    RESOLUTION_TARGET_DAYS,
    Catalog,
    get_catalog,
)
from petalapor.errors import (
    AuthenticationError,
    ConflictError,
    DataError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    PetalaporError,
)

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
#: The specification's limits for ``GET requests``.
MAX_REQUESTS = 1000
MAX_SPAN = timedelta(days=90)
SOURCE = "open311"


class MissingApiKeyError(AuthenticationError):
    """No ``api_key`` (nor X-API-Key header) where one is required."""


#: Domain error -> Open311 error code (HTTP status).  Subclasses first.
ERROR_CODES: dict[type[Exception], int] = {
    MissingApiKeyError: 401,
    NotFoundError: 404,
    InvalidParameterError: 400,
    DataError: 400,
    ConflictError: 409,
    AuthenticationError: 403,
    PermissionDeniedError: 403,
}

#: XML element name of one item of each list-valued field.
_ITEM_TAGS = {
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}


class UnknownFormatError(InvalidParameterError):
    """The extension is neither .json nor .xml."""


# --------------------------------------------------------------------------- rendering


def _text(value: Any) -> str | None:
    """One value as XML text (None stays empty)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")  # as the spec shows them
    return str(value)


def _fill(element: ET.Element, values: dict[str, Any]) -> ET.Element:
    """Add one child per key; lists become repeated items (``_ITEM_TAGS``)."""
    for key, value in values.items():
        child = ET.SubElement(element, key)
        if isinstance(value, list):
            for item in value:
                sub = ET.SubElement(child, _ITEM_TAGS.get(key, "item"))
                if isinstance(item, dict):
                    _fill(sub, item)
                else:
                    sub.text = _text(item)
        elif isinstance(value, dict):
            _fill(child, value)
        else:
            child.text = _text(value)
    return element


def to_xml(
    root: str, body: dict[str, Any] | list[dict[str, Any]], item: str | None = None
) -> bytes:
    """An XML document: ``<root>`` holding ``body``'s fields, or one ``<item>`` per list entry."""
    element = ET.Element(root)
    if isinstance(body, list):
        for entry in body:
            _fill(ET.SubElement(element, item or "item"), entry)
    else:
        _fill(element, body)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")  # as the spec shows them
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def render(
    fmt: str,
    body: dict[str, Any] | list[dict[str, Any]],
    root: str,
    item: str | None = None,
    status_code: int = 200,
) -> Response:
    """The response in ``fmt``: JSON as is, XML under ``<root>`` (items as ``<item>``)."""
    if fmt == "xml":
        content = to_xml(root, body, item)
    else:
        content = json.dumps(body, default=_json_default, ensure_ascii=False).encode()
    return Response(content, status_code=status_code, media_type=FORMATS.get(fmt, FORMATS["json"]))


def error_response(fmt: str, code: int, description: str) -> Response:
    """The specification's error list, with ``code`` as the HTTP status too."""
    response = render(
        fmt, [{"code": code, "description": description}], "errors", "error", status_code=code
    )
    if code == 401:
        response.headers["WWW-Authenticate"] = "ApiKey"
    return response


def _format_of(request: Request) -> str:
    """The extension of the request's path (json when unknown)."""
    fmt = str(request.path_params.get("fmt", "json")).lower()
    return fmt if fmt in FORMATS else "json"


def check_format(fmt: str) -> str:
    """``json`` or ``xml``, else UnknownFormatError."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UnknownFormatError(f"unknown format {fmt!r}; use .json or .xml")
    return fmt


class Open311Route(APIRoute):
    """A route whose errors come out in Open311 form instead of the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """Wrap the handler: domain and validation errors become Open311 errors."""
        handler = super().get_route_handler()

        async def open311_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error_response(_format_of(request), 400, _validation_text(exc.errors()))
            except PetalaporError as exc:
                code = next((c for cls, c in ERROR_CODES.items() if isinstance(exc, cls)), None)
                if code is None:
                    raise
                return error_response(_format_of(request), code, str(exc))

        return open311_handler


def _validation_text(errors: Iterable[dict]) -> str:
    """Pydantic/FastAPI errors as ``where: what; ...``."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


# --------------------------------------------------------------------------- mapping


def service(code: str, catalog: Catalog) -> dict[str, Any]:
    """One category as an Open311 service."""
    cat = catalog.categories[code]
    return {
        "service_code": cat.code,
        "service_name": cat.name_id,
        "description": f"{cat.name_en}. Ditangani oleh {catalog.opds[cat.opd]}.",
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join([cat.name_id, cat.name_en]),
        "group": "JakLapor" if cat.jaklapor else "Layanan Kota",
    }


def service_notice() -> str:
    """The published service targets."""
    return (
        f"Target: dikoordinasikan dalam {COORDINATION_TARGET_HOURS} jam, "
        f"diselesaikan dalam {RESOLUTION_TARGET_DAYS} hari."
    )


def _address(row: dict[str, Any]) -> str | None:
    """RW, kelurahan, kecamatan and kota names, as far as known."""
    parts = [
        row.get("rw_name"),
        row.get("kelurahan_name") and f"Kel. {row['kelurahan_name']}",
        row.get("kecamatan_name") and f"Kec. {row['kecamatan_name']}",
        row.get("kota_name"),
    ]
    return ", ".join(p for p in parts if p) or None


def service_request(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A stored report as an Open311 service request."""
    cat = catalog.categories.get(row["category"])
    st = catalog.statuses.get(row["status"])
    requested = row["created_at"].astimezone(JAKARTA)
    return {
        "service_request_id": str(row["id"]),
        "status": "open" if (st is None or st.open) else "closed",
        "status_notes": st.name_id if st else row["status"],
        "service_name": cat.name_id if cat else row["category"],
        "service_code": row["category"],
        "description": row["description"],
        "agency_responsible": catalog.opds.get(row["opd"], row["opd"]),
        "service_notice": service_notice(),
        "requested_datetime": requested,
        "updated_datetime": row["updated_at"].astimezone(JAKARTA),
        "expected_datetime": requested + timedelta(days=RESOLUTION_TARGET_DAYS),
        "address": _address(row),
        "address_id": row["rw_code"] or row["kelurahan_code"],
        "zipcode": None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": row["media_url"],
    }


class Open311Post(BaseModel):
    """The fields of ``POST requests`` (spec fields petalapor does not use are ignored)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    api_key: str | None = None
    jurisdiction_id: str | None = None
    service_code: str = Field(min_length=1, max_length=64)
    lat: float | None = None
    long: float | None = None
    address_string: str | None = None
    address_id: str | None = None
    email: str | None = None
    device_id: str | None = None
    account_id: str | None = None
    phone: str | None = None
    description: str | None = None
    media_url: str | None = None
    external_id: str | None = Field(None, max_length=MAX_EXTERNAL_ID)

    def report_fields(self, idempotency_key: str | None) -> dict[str, Any]:
        """Field values for :func:`db.reports.parse_report`."""
        if self.lat is None or self.long is None:
            where = " (address_string alone is not geocoded)" if self.address_string else ""
            raise InvalidParameterError(f"lat and long are required{where}")
        identity = next(
            (
                f"{kind}:{v}"
                for kind, v in (
                    ("email", self.email),
                    ("phone", self.phone),
                    ("device", self.device_id),
                    ("account", self.account_id),
                )
                if v
            ),
            None,
        )
        fields: dict[str, Any] = {
            "category": self.service_code,
            "lat": self.lat,
            "lon": self.long,
            "description": self.description,
            "media_url": self.media_url,
            "source": SOURCE,
            "external_id": self.external_id or idempotency_key,
            "reporter": identity,
        }
        return {k: v for k, v in fields.items() if v is not None}


async def open311_body(request: Request) -> dict[str, Any]:
    """The POST fields: query string, then the form-encoded or JSON body over it."""
    fields: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameterError(f"malformed JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidParameterError("the JSON body must be an object")
        fields.update(body)
    else:
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                raise InvalidParameterError(f"{key}: file uploads are not accepted; send media_url")
            fields[key] = value
    return fields


# --------------------------------------------------------------------------- router


@dataclass
class Open311Factory:
    """Registers the GeoReport v2 endpoints under ``prefix``."""

    router: APIRouter = field(default_factory=lambda: APIRouter(route_class=Open311Route))
    prefix: str = "/open311/v2"
    viewer: Callable[..., Viewer] = anonymous_viewer
    #: ``(request, api_key) -> Viewer`` for the ``api_key`` field (AuthenticationError if bad).
    resolve: Callable[[Request, str], Viewer] = resolve_key
    salt: Callable[[], bytes] = reporter_salt
    contact: str = "Pemprov DKI Jakarta, https://jakarta.go.id"
    key_service: str = (
        "POST requests need an API key (api_key or the X-API-Key header), issued by the "
        "petalapor administrators; reading is open"
    )
    jurisdiction: str = "jakarta.go.id"
    tags: list[str] = field(default_factory=lambda: ["open311"])

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add discovery, services, service definitions and requests."""
        get = self._route("GET")
        post = self._route("POST")

        @get("/discovery.{fmt}", summary="Discovery: where and how to call this endpoint")
        def discovery(fmt: str, request: Request) -> Response:
            fmt = check_format(fmt)
            changeset = datetime.fromtimestamp(CATALOG_FILE.stat().st_mtime, UTC).astimezone(
                JAKARTA
            )
            url = str(request.base_url).rstrip("/") + self.prefix + "/"
            body = {
                "changeset": changeset,
                "contact": self.contact,
                "key_service": self.key_service,
                "endpoints": [
                    {
                        "specification": SPECIFICATION,
                        "url": url,
                        "changeset": changeset,
                        "type": "production",
                        "formats": ["text/xml", "application/json"],
                    }
                ],
            }
            return render(fmt, body, "discovery")

        @get("/services.{fmt}", summary="Service list (the report categories)")
        def services(fmt: str, jurisdiction_id: str | None = None) -> Response:
            fmt = check_format(fmt)
            catalog = get_catalog()
            return render(
                fmt, [service(c, catalog) for c in catalog.categories], "services", "service"
            )

        @get("/services/{service_code}.{fmt}", summary="Service definition (no extra attributes)")
        def service_definition(
            service_code: str, fmt: str, jurisdiction_id: str | None = None
        ) -> Response:
            fmt = check_format(fmt)
            catalog = get_catalog()
            if service_code not in catalog.categories:
                raise NotFoundError(
                    f"unknown service_code {service_code!r}; known: {', '.join(catalog.categories)}"
                )
            return render(
                fmt, {"service_code": service_code, "attributes": []}, "service_definition"
            )

        @post(
            "/requests.{fmt}",
            summary="Create a service request (form-encoded or JSON; needs an api_key)",
        )
        def create_request(
            fmt: str,
            request: Request,
            conn: Conn,
            header_viewer: Annotated[Viewer, Depends(self.viewer)],
            fields: Annotated[dict[str, Any], Depends(open311_body)],
            idempotency_key: Annotated[str | None, Header(max_length=MAX_EXTERNAL_ID)] = None,
        ) -> Response:
            fmt = check_format(fmt)
            viewer = self._poster(request, header_viewer, fields.get("api_key"))
            try:
                post = Open311Post.model_validate(fields)
            except ValidationError as exc:
                raise InvalidParameterError(_validation_text(exc.errors())) from None
            report = parse_report(post.report_fields(idempotency_key))
            viewer.check_acts_for(report.routed_opd())
            row, created = create_report(conn, report, salt=self.salt() if report.reporter else b"")
            body = [
                {
                    "service_request_id": str(row["id"]),
                    "service_notice": service_notice(),
                    "account_id": None,
                }
            ]
            return render(
                fmt, body, "service_requests", "request", status_code=201 if created else 200
            )

        @get("/requests.{fmt}", summary="Search service requests (90 days at most, 1,000 results)")
        def requests(
            fmt: str,
            conn: Conn,
            viewer: Annotated[Viewer, Depends(self.viewer)],
            service_request_id: Annotated[
                str | None, Query(description="Comma-separated ids; overrides the rest.")
            ] = None,
            service_code: Annotated[
                str | None, Query(description="Comma-separated service codes.")
            ] = None,
            start_date: Annotated[
                str | None, Query(description="Earliest requested_datetime (W3C).")
            ] = None,
            end_date: Annotated[
                str | None, Query(description="Latest requested_datetime (W3C).")
            ] = None,
            status: Annotated[str | None, Query(description="open, closed or open,closed.")] = None,
            jurisdiction_id: str | None = None,
        ) -> Response:
            fmt = check_format(fmt)
            catalog = get_catalog()
            if service_request_id:
                ids = [i.strip() for i in service_request_id.split(",") if i.strip()]
                filters = ReportFilter(
                    ids=ids[:MAX_REQUESTS],
                    include_private=viewer.can_see_private,
                    private_opd=viewer.private_opd,
                )
            else:
                filters = self._search(catalog, viewer, service_code, start_date, end_date, status)
            rows, _ = list_reports(conn, filters, limit=MAX_REQUESTS, count=False)
            body = [service_request(r, catalog) for r in rows]
            return render(fmt, body, "service_requests", "request")

        @get("/requests/{service_request_id}.{fmt}", summary="One service request")
        def request_one(
            service_request_id: str,
            fmt: str,
            conn: Conn,
            viewer: Annotated[Viewer, Depends(self.viewer)],
            jurisdiction_id: str | None = None,
        ) -> Response:
            fmt = check_format(fmt)
            row = get_report(
                conn,
                service_request_id,
                include_private=viewer.can_see_private,
                private_opd=viewer.private_opd,
            )
            return render(fmt, [service_request(row, get_catalog())], "service_requests", "request")

        _ = (discovery, services, service_definition, create_request, requests, request_one)

    def _poster(self, request: Request, header_viewer: Viewer, api_key: Any) -> Viewer:
        """The key holder behind a POST: the ``api_key`` field, else the header's viewer."""
        if api_key is not None and not isinstance(api_key, str):
            raise InvalidParameterError("api_key must be a string")
        if api_key and api_key.strip():
            return self.resolve(request, api_key.strip())
        if header_viewer.is_public:
            raise MissingApiKeyError(
                "an api_key is required to create a service request "
                "(api_key field or X-API-Key header)"
            )
        return header_viewer

    def _route(self, method: str) -> Callable:
        """Decorator adding one route under the prefix (raw responses, Open311 errors)."""

        def decorate(path: str, **kwargs: Any) -> Callable:
            return self.router.api_route(
                self.prefix + path,
                methods=[method],
                tags=self.tags,
                response_class=Response,
                responses={200: {"content": {"application/json": {}, "text/xml": {}}}},
                **kwargs,
            )

        return decorate

    @staticmethod
    def _search(
        catalog: Catalog,
        viewer: Viewer,
        service_code: str | None,
        start_date: str | None,
        end_date: str | None,
        status: str | None,
    ) -> ReportFilter:
        """The filter for a search; the spec's 90-day window and span limit."""
        codes = [c.strip() for c in (service_code or "").split(",") if c.strip()]
        unknown = [c for c in codes if c not in catalog.categories]
        if unknown:
            raise InvalidParameterError(
                f"unknown service_code {unknown}; known: {', '.join(catalog.categories)}"
            )
        wanted = {s.strip().lower() for s in (status or "").split(",") if s.strip()}
        if wanted - {"open", "closed"}:
            raise InvalidParameterError(f"status must be open, closed or both (got {status!r})")
        statuses = [
            s.code for s in catalog.statuses.values() if ("open" if s.open else "closed") in wanted
        ]
        start = parse_time(start_date, "start_date")
        end = parse_time(end_date, "end_date")  # the span is checked on the values as given
        if start is None and end is None:
            end = datetime.now(UTC)
        if start is None:
            start = end - MAX_SPAN
        elif end is None:
            end = start + MAX_SPAN
        if start > end:
            raise InvalidParameterError(
                f"start_date ({start_date}) must not be after end_date ({end_date})"
            )
        if end - start > MAX_SPAN:
            raise InvalidParameterError(
                f"start_date to end_date spans {(end - start).days} days; "
                f"at most {MAX_SPAN.days} allowed"
            )
        # a date-only end_date includes that whole day
        before = (
            parse_time(end_date, "end_date", end=True)
            if end_date
            else end + timedelta(microseconds=1)
        )
        return ReportFilter(
            categories=codes or None,
            statuses=statuses or None,
            created_from=start,
            created_before=before,
            include_private=viewer.can_see_private,
            private_opd=viewer.private_opd,
        )
