"""Reports: checking one report, storing it with its place, and its status history.

The pieces, in the order a report goes through them::

    >>> report = parse_report({"category": "banjir", "lat": -6.1754, "lon": 106.8272})
    >>> row, created = create_report(conn, report, salt=reporter_salt())   # doctest: +SKIP
    >>> add_event(conn, row["id"], "disposisi", actor_opd="DSDA")          # doctest: +SKIP

- :class:`NewReport` / :func:`parse_report` validate and normalise one report
  without touching the database (category and OPD against the catalog, lat/lon
  ranges, text limits, http(s) media URLs, timezone-aware timestamps).  The bulk
  importer reuses them row by row; :func:`parse_report` turns pydantic's errors
  into one :class:`~petalapor.errors.DataError` naming the row and field, ready
  for ``report_quarantine``.
- :func:`service_area` and :func:`check_service_area` reject points far from
  Jakarta (the boundaries' extent, Kepulauan Seribu included, grown by 0.1°).
- :func:`locate` applies the snapping rule in SQL (``petalapor_snap``): the RW,
  the RW's kelurahan, else the rule on kelurahan polygons; kecamatan and kota
  come from the kelurahan row.
- :func:`create_report` does all of that in one transaction; re-sending the same
  ``(source, external_id)`` returns the stored report and ``created=False``.
- :func:`add_event` moves a report through the catalog's status workflow.

Reporter identity is only ever stored as a salted hash (:func:`hash_reporter`),
in ``reporter_identities``; nothing here returns it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h3
import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from petalapor.catalog import (
    COORDINATION_STATUSES,
    INITIAL_STATUS,
    RESOLVED_STATUS,
    Catalog,
    get_catalog,
)
from petalapor.errors import ConflictError, DataError, NotFoundError, PermissionDeniedError
from petalapor.secretfile import read_or_create
from petalapor.settings import PathSettings

#: Western Indonesian Time (no daylight saving): how timestamps are shown.
JAKARTA = timezone(timedelta(hours=7), "WIB")
#: Points further than this (degrees) outside the boundaries' extent are refused.
SERVICE_AREA_MARGIN_DEG = 0.1
#: Snapping tolerance (metres, UTM 48S), as in ``petalapor_snap``.
SNAP_TOLERANCE_M = 100.0
#: H3 resolutions stored with every report (columns ``h3_r7`` .. ``h3_r11``).
H3_RESOLUTIONS: tuple[int, ...] = (7, 8, 9, 10, 11)
#: Text limits (characters).  4,000 for descriptions is Open311's limit.
MAX_TITLE = 200
MAX_DESCRIPTION = 4000
MAX_URL = 2048
MAX_EXTERNAL_ID = 200
MAX_NOTE = 2000
MAX_REPORTER = 320
#: Timestamps may run this far ahead of the server clock (clock skew).
CLOCK_SKEW = timedelta(minutes=5)
#: Oldest timestamp accepted.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: Attribute counting how often a closed report was re-opened.
REOPENED_ATTR = "reopened"


# --------------------------------------------------------------------------- settings


class ReporterSettings(BaseSettings):
    """Reporter-identity hashing (prefix ``PETALAPOR_REPORTER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="PETALAPOR_REPORTER_", env_file=".env", extra="ignore"
    )

    salt: SecretStr | None = Field(
        None,
        description="Secret salt (HMAC key) for reporter hashes. When unset, a random salt is "
        "created once in var/reporter_salt and reused.",
    )


def reporter_salt(
    settings: ReporterSettings | None = None, paths: PathSettings | None = None
) -> bytes:
    """The salt for :func:`hash_reporter`: the setting, else ``var/reporter_salt`` (made once).

    The salt must stay the same for hashes to link a reporter's reports, and must stay
    secret: with it, a phone number's hash can be found by trying every number.
    """
    settings = settings or ReporterSettings()
    if settings.salt is not None and settings.salt.get_secret_value():
        return settings.salt.get_secret_value().encode()
    return _salt_file((paths or PathSettings()).var / "reporter_salt")


@lru_cache
def _salt_file(path: Path) -> bytes:
    """Read the salt file, creating it (mode 0600) with 32 random bytes when missing."""
    return read_or_create(path, lambda: secrets.token_hex(32))


def hash_reporter(identity: str, salt: bytes) -> str:
    """Salted SHA-256 (HMAC-SHA256) of a normalised identity, as hex.

    Normalising (NFKC, trimmed, case-folded, inner spaces removed) makes
    ``" Ani@Example.com"`` and ``"ani@example.com"`` the same reporter.
    """
    norm = "".join(unicodedata.normalize("NFKC", identity).casefold().split())
    return hmac.new(salt, norm.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- validation


def _check_text(value: str | None) -> str | None:
    """Refuse NUL and other control characters (PostgreSQL text cannot hold NUL)."""
    if value is None:
        return None
    bad = [c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\r\t"]
    if bad:
        raise ValueError(f"control character {bad[0]!r} not allowed")
    return value


def check_media_url(value: str | None) -> str | None:
    """An absolute http(s) URL with a host, or None."""
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"media_url must be an absolute http(s) URL (got {value[:80]!r})")
    if any(c.isspace() for c in value):
        raise ValueError("media_url must not contain spaces")
    return value


def check_timestamp(value: datetime | None, info: ValidationInfo | None = None) -> datetime | None:
    """A timezone-aware time, not in the future, converted to UTC.

    Naive times are refused unless the validation context names a zone to assume:
    ``NewReport.model_validate(raw, context={"assume_tz": JAKARTA})`` (the importer's
    CSV files carry local times).
    """
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        assume = (info.context or {}).get("assume_tz") if info is not None else None
        if assume is None:
            raise ValueError("timestamp needs a timezone, e.g. 2024-01-31T08:00:00+07:00")
        value = value.replace(tzinfo=assume)
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError(f"timestamp {value.isoformat()} is in the future")
    if value < EARLIEST:
        raise ValueError(f"timestamp {value.isoformat()} is before {EARLIEST.date()}")
    return value.astimezone(UTC)


class NewReport(BaseModel):
    """One incoming report, validated and normalised (no database needed).

    Unknown fields are refused.  ``external_id`` is the idempotency key within
    ``source``; without one, a random id is generated and no de-duplication is
    possible.  ``reporter`` (phone, e-mail, account) is only ever stored hashed.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    category: str = Field(
        description="Category code from the catalog (`GET /open311/v2/services.json`)."
    )
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude, WGS 84.")
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude, WGS 84.")
    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    media_url: str | None = Field(None, max_length=MAX_URL, description="Photo URL, http(s) only.")
    source: str = Field(
        "web", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Channel: jaki, qlue, sms, web, ..."
    )
    external_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_EXTERNAL_ID,
        description="The source's id (idempotency key).",
    )
    opd: str | None = Field(None, description="Responsible OPD; defaults to the category's.")
    created_at: datetime | None = Field(
        None, description="When reported (with timezone); default now."
    )
    public: bool = Field(True, description="False hides the report from public listings.")
    reporter: str | None = Field(
        None,
        max_length=MAX_REPORTER,
        description="Reporter identity; stored only as a salted hash.",
    )

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        catalog = get_catalog()
        if value not in catalog.categories:
            raise ValueError(f"unknown category {value!r}; known: {', '.join(catalog.categories)}")
        return value

    @field_validator("opd")
    @classmethod
    def _known_opd(cls, value: str | None) -> str | None:
        catalog = get_catalog()
        if value is not None and value not in catalog.opds:
            raise ValueError(f"unknown OPD {value!r}; known: {', '.join(catalog.opds)}")
        return value

    @field_validator("title", "description", "external_id", "reporter")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        return _check_text(value) or None

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str | None) -> str | None:
        return check_media_url(_check_text(value))

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return check_timestamp(value, info)

    def routed_opd(self, catalog: Catalog | None = None) -> str:
        """The OPD given, else the category's default."""
        return self.opd or (catalog or get_catalog()).categories[self.category].opd


def parse_report(
    raw: Mapping[str, Any], *, where: str = "", assume_tz: timezone | None = None
) -> NewReport:
    """Validate one report from plain values, raising :class:`DataError` on bad input.

    Parameters
    ----------
    raw
        Field values as :class:`NewReport` names them.
    where
        Prefix for the error message, e.g. ``"reports.csv row 12"``.
    assume_tz
        Zone for naive timestamps (None: naive timestamps are an error).

    Returns
    -------
    NewReport

    Raises
    ------
    DataError
        Every problem as ``field: message``; the first bad field is in ``.field``.
    """
    try:
        return NewReport.model_validate(dict(raw), context={"assume_tz": assume_tz})
    except ValidationError as exc:
        raise report_data_error(exc, where) from None


def report_data_error(exc: ValidationError, where: str = "") -> DataError:
    """A DataError listing ``field: problem`` for each error; ``.field`` names the first."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}" if loc else msg)
    error = DataError(f"{where}: " * bool(where) + "; ".join(problems))
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    error.field = str(first[0]) if first else None  # type: ignore[attr-defined]
    return error


# --------------------------------------------------------------------------- place


@dataclass(frozen=True)
class ServiceArea:
    """Lon/lat box of accepted points: the boundaries' extent grown by a margin."""

    minx: float
    miny: float
    maxx: float
    maxy: float

    def contains(self, lon: float, lat: float) -> bool:
        """True when the point is inside the box (edges included)."""
        return self.minx <= lon <= self.maxx and self.miny <= lat <= self.maxy


_AREA_CACHE: dict[tuple[str, int], ServiceArea] = {}


def service_area(
    conn: psycopg.Connection, margin_deg: float = SERVICE_AREA_MARGIN_DEG
) -> ServiceArea:
    """The service area of the current boundary set (cached per set).

    Raises
    ------
    ConflictError
        No boundaries are loaded, so no report can be placed.
    """
    row = _one(conn, "SELECT id FROM boundary_sets WHERE is_current")
    if row is None:
        raise ConflictError("no boundaries loaded; run `petalapor boundaries import` first")
    key = (conn.info.dsn, row[0])
    if key not in _AREA_CACHE:
        ext = _one(
            conn,
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
            "FROM (SELECT ST_Extent(geom) AS e FROM boundaries WHERE level = 'kelurahan') s",
        )
        if ext is None or ext[0] is None:
            raise ConflictError(
                "no kelurahan boundaries loaded; run `petalapor boundaries import` first"
            )
        _AREA_CACHE[key] = ServiceArea(ext[0], ext[1], ext[2], ext[3])
    area = _AREA_CACHE[key]
    return ServiceArea(
        area.minx - margin_deg,
        area.miny - margin_deg,
        area.maxx + margin_deg,
        area.maxy + margin_deg,
    )


def check_service_area(conn: psycopg.Connection, lon: float, lat: float) -> None:
    """Raise DataError when the point is outside :func:`service_area`."""
    area = service_area(conn)
    if not area.contains(lon, lat):
        raise DataError(
            f"location ({lon}, {lat}) is outside the service area "
            f"(lon {area.minx:.3f}..{area.maxx:.3f}, lat {area.miny:.3f}..{area.maxy:.3f}: "
            "Jakarta and Kepulauan Seribu)"
        )


@dataclass(frozen=True)
class Placement:
    """Where a point falls: codes per level and how it was matched.

    ``method``/``distance_m`` come from the RW match when there is one, else from
    the kelurahan rule (``level`` says which).
    """

    rw_code: str | None
    kelurahan_code: str | None
    kecamatan_code: str | None
    kota_code: str | None
    method: str
    distance_m: float
    level: str


def snap(
    conn: psycopg.Connection,
    level: str,
    lon: float,
    lat: float,
    tolerance_m: float = SNAP_TOLERANCE_M,
) -> tuple[str | None, str, float] | None:
    """``petalapor_snap`` for one point: ``(code, method, distance_m)`` or None without polygons."""
    return _one(
        conn,
        "SELECT code, method, distance_m FROM petalapor_snap(%s, %s, %s, %s)",
        (level, lon, lat, tolerance_m),
    )


def locate(
    conn: psycopg.Connection, lon: float, lat: float, tolerance_m: float = SNAP_TOLERANCE_M
) -> Placement:
    """Place a point with the snapping rule (RW first, then kelurahan polygons)."""
    rw = snap(conn, "rw", lon, lat, tolerance_m)
    if rw is not None and rw[0] is not None:
        parent = _one(
            conn,
            "SELECT kelurahan_code, kecamatan_code, kota_code FROM boundaries "
            "WHERE level = 'rw' AND code = %s",
            (rw[0],),
        )
        kel = _kelurahan_row(conn, parent[0]) or parent
        return Placement(rw[0], parent[0], kel[1], kel[2], rw[1], float(rw[2]), "rw")
    kel_snap = snap(conn, "kelurahan", lon, lat, tolerance_m)
    if kel_snap is None:
        raise ConflictError(
            "no kelurahan boundaries loaded; run `petalapor boundaries import` first"
        )
    code, method, distance = kel_snap
    kel = _kelurahan_row(conn, code) if code else None
    return Placement(
        None,
        code,
        kel[1] if kel else None,
        kel[2] if kel else None,
        method,
        float(distance),
        "kelurahan",
    )


def _kelurahan_row(conn: psycopg.Connection, code: str | None) -> tuple | None:
    """``(code, kecamatan_code, kota_code)`` of a kelurahan, or None."""
    if code is None:
        return None
    return _one(
        conn,
        "SELECT code, kecamatan_code, kota_code FROM boundaries "
        "WHERE level = 'kelurahan' AND code = %s",
        (code,),
    )


def h3_cells(lat: float, lon: float) -> dict[int, int]:
    """H3 v4 cells of a point as int64, per resolution in :data:`H3_RESOLUTIONS`."""
    return {res: h3.str_to_int(h3.latlng_to_cell(lat, lon, res)) for res in H3_RESOLUTIONS}


# --------------------------------------------------------------------------- reading

#: Columns of a report as returned by :func:`get_report` / :func:`list_reports`.
#: No reporter identity: that table is never joined here.
_SELECT = """
SELECT r.id, r.source, r.external_id, r.category, r.opd, r.title, r.description, r.media_url,
       r.created_at, r.updated_at, r.first_coordinated_at, r.resolved_at, r.status,
       ST_X(r.geom) AS lon, ST_Y(r.geom) AS lat,
       r.rw_code, r.kelurahan_code, r.kecamatan_code, r.kota_code,
       brw.name AS rw_name, bkel.name AS kelurahan_name,
       bkec.name AS kecamatan_name, bkota.name AS kota_name,
       r.snap_method, r.snap_distance_m, r.h3_r7, r.h3_r8, r.h3_r9, r.h3_r10, r.h3_r11,
       r.public, r.attrs
FROM reports r
LEFT JOIN boundaries brw ON brw.level = 'rw' AND brw.code = r.rw_code
LEFT JOIN boundaries bkel ON bkel.level = 'kelurahan' AND bkel.code = r.kelurahan_code
LEFT JOIN boundaries bkec ON bkec.level = 'kecamatan' AND bkec.code = r.kecamatan_code
LEFT JOIN boundaries bkota ON bkota.level = 'kota' AND bkota.code = r.kota_code
"""


def parse_report_id(value: str) -> uuid.UUID | None:
    """The UUID in ``value``, or None when it is not one."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


#: Which reports a caller sees: public ones, all hidden ones when ``private``, and
#: the hidden ones of ``private_opd`` (NULL matches nothing).
_VISIBLE = "(r.public OR %(private)s OR coalesce(r.opd = %(private_opd)s, false))"


def get_report(
    conn: psycopg.Connection,
    report_id: str | uuid.UUID,
    *,
    include_private: bool = False,
    private_opd: str | None = None,
) -> dict:
    """One report as a dict; NotFoundError also for a hidden one the caller may not see.

    Hidden reports (``public = false``) are found with ``include_private`` (all of
    them) or when routed to ``private_opd`` (an OPD key's own).
    """
    rid = parse_report_id(str(report_id))
    row = None
    if rid is not None:
        row = _dict(
            conn,
            _SELECT + f" WHERE r.id = %(id)s AND {_VISIBLE}",
            {"id": rid, "private": include_private, "private_opd": private_opd},
        )
    if row is None:
        raise NotFoundError(f"no report {report_id}")
    return row


def list_events(conn: psycopg.Connection, report_id: str | uuid.UUID) -> list[dict]:
    """The report's status history, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT from_status, to_status, at, actor_opd, note FROM report_events "
        "WHERE report_id = %s ORDER BY at, id",
        (report_id,),
    ).fetchall()


@dataclass
class ReportFilter:
    """Filters of :func:`list_reports`; None means no filter.

    ``created_from`` is inclusive, ``created_before`` exclusive.  ``ids`` that are
    not UUIDs match nothing.  Hidden reports match with ``include_private`` (all)
    or when routed to ``private_opd`` (an OPD key's own); public ones always do.
    """

    ids: Sequence[str] | None = None
    bbox: tuple[float, float, float, float] | None = None
    kelurahan: str | None = None
    rw: str | None = None
    categories: Sequence[str] | None = None
    opd: str | None = None
    statuses: Sequence[str] | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    include_private: bool = False
    private_opd: str | None = None
    snap_method: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL condition (bound values only) and its parameters."""
        conds = [_VISIBLE]
        params: dict[str, Any] = {
            "private": self.include_private,
            "private_opd": self.private_opd,
        }
        if self.ids is not None:
            conds.append("r.id = ANY(%(ids)s)")
            params["ids"] = [u for u in (parse_report_id(i) for i in self.ids) if u is not None]
        if self.bbox is not None:
            conds.append("r.geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)")
            params.update(dict(zip(("x0", "y0", "x1", "y1"), self.bbox, strict=True)))
        for column, value in (
            ("kelurahan_code", self.kelurahan),
            ("rw_code", self.rw),
            ("opd", self.opd),
            ("snap_method", self.snap_method),
        ):
            if value is not None:
                conds.append(f"r.{column} = %({column})s")
                params[column] = value
        if self.categories:
            conds.append("r.category = ANY(%(categories)s)")
            params["categories"] = list(self.categories)
        if self.statuses:
            conds.append("r.status = ANY(%(statuses)s)")
            params["statuses"] = list(self.statuses)
        if self.created_from is not None:
            conds.append("r.created_at >= %(created_from)s")
            params["created_from"] = self.created_from
        if self.created_before is not None:
            conds.append("r.created_at < %(created_before)s")
            params["created_before"] = self.created_before
        return " AND ".join(conds), params


def list_reports(
    conn: psycopg.Connection,
    filters: ReportFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    count: bool = True,
) -> tuple[list[dict], int | None]:
    """Reports matching ``filters``, newest first, and their total (None unless ``count``)."""
    where, params = filters.where()
    params.update(limit=int(limit), offset=int(offset))
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        _SELECT
        + f" WHERE {where} ORDER BY r.created_at DESC, r.id LIMIT %(limit)s OFFSET %(offset)s",
        params,
    ).fetchall()
    total = None
    if count:
        total = _one(conn, f"SELECT count(*) FROM reports r WHERE {where}", params)[0]
    return rows, total


def iter_reports(
    conn: psycopg.Connection, filters: ReportFilter, *, batch: int = 5000
) -> Iterator[list[dict]]:
    """Every report matching ``filters``, newest first, in batches (a server-side cursor).

    Must run inside a transaction of ``conn``.
    """
    where, params = filters.where()
    with conn.cursor(name="petalapor_export", row_factory=dict_row) as cur:
        cur.itersize = batch
        cur.execute(_SELECT + f" WHERE {where} ORDER BY r.created_at DESC, r.id", params)
        while rows := cur.fetchmany(batch):
            yield rows


# --------------------------------------------------------------------------- writing


def create_report(
    conn: psycopg.Connection,
    report: NewReport,
    *,
    salt: bytes | None = None,
    catalog: Catalog | None = None,
    tolerance_m: float = SNAP_TOLERANCE_M,
) -> tuple[dict, bool]:
    """Store one report, its creation event and its reporter hash, in one transaction.

    Parameters
    ----------
    conn
        Connection (its transaction is used; nothing is stored on error).
    report
        A validated report (:func:`parse_report`).
    salt
        Salt for the reporter hash; :func:`reporter_salt` when omitted.

    Returns
    -------
    (dict, bool)
        The stored report (as :func:`get_report`, hidden ones included) and True when
        it was created, False when ``(source, external_id)`` was already stored.

    Raises
    ------
    DataError
        The point is outside the service area.
    """
    catalog = catalog or get_catalog()
    external_id = report.external_id or uuid.uuid4().hex
    with conn.transaction():
        existing = _one(
            conn,
            "SELECT id FROM reports WHERE source = %s AND external_id = %s",
            (report.source, external_id),
        )
        if existing is not None:
            return get_report(conn, existing[0], include_private=True), False
        check_service_area(conn, report.lon, report.lat)
        place = locate(conn, report.lon, report.lat, tolerance_m)
        created_at = report.created_at or datetime.now(UTC)
        report_id = _insert(conn, report, external_id, place, created_at, catalog)
        if report_id is None:  # a concurrent request stored the same key first
            existing = _one(
                conn,
                "SELECT id FROM reports WHERE source = %s AND external_id = %s",
                (report.source, external_id),
            )
            return get_report(conn, existing[0], include_private=True), False
        conn.execute(
            "INSERT INTO report_events (report_id, from_status, to_status, at) "
            "VALUES (%s, NULL, %s, %s)",
            (report_id, INITIAL_STATUS, created_at),
        )
        if report.reporter:
            conn.execute(
                "INSERT INTO reporter_identities (report_id, reporter_hash) VALUES (%s, %s)",
                (
                    report_id,
                    hash_reporter(report.reporter, salt if salt is not None else reporter_salt()),
                ),
            )
        return get_report(conn, report_id, include_private=True), True


def _insert(
    conn: psycopg.Connection,
    report: NewReport,
    external_id: str,
    place: Placement,
    created_at: datetime,
    catalog: Catalog,
) -> uuid.UUID | None:
    """INSERT the report row; None when its key already exists."""
    cells = h3_cells(report.lat, report.lon)
    row = _one(
        conn,
        "INSERT INTO reports (source, external_id, category, opd, title, description, media_url, "
        "created_at, updated_at, status, geom, rw_code, kelurahan_code, kecamatan_code, kota_code, "
        "snap_method, snap_distance_m, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, public, attrs) "
        "VALUES (%(source)s, %(external_id)s, %(category)s, %(opd)s, %(title)s, %(description)s, "
        "%(media_url)s, %(created_at)s, %(created_at)s, %(status)s, "
        "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), %(rw)s, %(kel)s, %(kec)s, %(kota)s, "
        "%(method)s, %(distance)s, %(r7)s, %(r8)s, %(r9)s, %(r10)s, %(r11)s, "
        "%(public)s, %(attrs)s) "
        "ON CONFLICT ON CONSTRAINT reports_source_external DO NOTHING RETURNING id",
        {
            "source": report.source,
            "external_id": external_id,
            "category": report.category,
            "opd": report.routed_opd(catalog),
            "title": report.title,
            "description": report.description,
            "media_url": report.media_url,
            "created_at": created_at,
            "status": INITIAL_STATUS,
            "lon": report.lon,
            "lat": report.lat,
            "rw": place.rw_code,
            "kel": place.kelurahan_code,
            "kec": place.kecamatan_code,
            "kota": place.kota_code,
            "method": place.method,
            "distance": place.distance_m,
            **{f"r{res}": cell for res, cell in cells.items()},
            "public": report.public,
            "attrs": Jsonb({"snap_level": place.level}),
        },
    )
    return None if row is None else row[0]


def add_event(
    conn: psycopg.Connection,
    report_id: str | uuid.UUID,
    to_status: str,
    *,
    at: datetime | None = None,
    actor_opd: str | None = None,
    note: str | None = None,
    include_private: bool = True,
    private_opd: str | None = None,
    only_opd: str | None = None,
    catalog: Catalog | None = None,
) -> dict:
    """Move a report to ``to_status`` and append the event, in one transaction.

    Keeps ``first_coordinated_at`` (first entry into koordinasi/proses/selesai),
    sets ``resolved_at`` on entering selesai and clears it on re-opening, counts
    re-openings (leaving a closed status) in ``attrs.reopened``, sets ``updated_at``.

    ``include_private`` and ``private_opd`` say which hidden reports exist for the
    caller (as in :func:`get_report`); ``only_opd`` restricts the change to
    reports routed to that OPD (an OPD key's own).

    Raises
    ------
    NotFoundError
        No such report (or hidden and not visible to the caller).
    PermissionDeniedError
        The report is routed to another OPD than ``only_opd``.
    ConflictError
        The workflow does not allow the change, or ``at`` precedes the last event.
    DataError
        Unknown status or OPD, or a bad ``at``.
    """
    catalog = catalog or get_catalog()
    if actor_opd is not None:
        catalog.check_opd(actor_opd)
    try:
        at = check_timestamp(at) or datetime.now(UTC)
        note = _check_text(note)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    with conn.transaction():
        current = _locked(conn, report_id, include_private, private_opd)
        if only_opd is not None and current["opd"] != only_opd:
            raise PermissionDeniedError(
                f"report {report_id} belongs to OPD {current['opd']}; "
                f"a key of {only_opd} cannot change it"
            )
        catalog.check_transition(current["status"], to_status)
        if current["last_at"] is not None and at < current["last_at"]:
            raise ConflictError(
                f"event time {at.isoformat()} is before the report's last event "
                f"({current['last_at'].isoformat()})"
            )
        changes = _status_changes(current, to_status, at, catalog)
        conn.execute(
            "UPDATE reports SET status = %(status)s, updated_at = %(at)s, "
            "first_coordinated_at = %(first)s, resolved_at = %(resolved)s, attrs = %(attrs)s "
            "WHERE id = %(id)s",
            {"id": current["id"], "status": to_status, "at": at, **changes},
        )
        conn.execute(
            "INSERT INTO report_events (report_id, from_status, to_status, at, actor_opd, note) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (current["id"], current["status"], to_status, at, actor_opd, note),
        )
        return get_report(conn, current["id"], include_private=True)


def _locked(
    conn: psycopg.Connection,
    report_id: str | uuid.UUID,
    include_private: bool,
    private_opd: str | None = None,
) -> dict:
    """The report's workflow columns, row-locked, plus the time of its last event."""
    rid = parse_report_id(str(report_id))
    row = None
    if rid is not None:
        row = _dict(
            conn,
            "SELECT id, opd, status, created_at, first_coordinated_at, resolved_at, attrs, "
            "public, (SELECT max(at) FROM report_events e WHERE e.report_id = r.id) AS last_at "
            "FROM reports r WHERE id = %s FOR UPDATE",
            (rid,),
        )
    visible = row is not None and (
        row["public"] or include_private or (private_opd is not None and row["opd"] == private_opd)
    )
    if not visible:
        raise NotFoundError(f"no report {report_id}")
    return row


def _status_changes(
    current: dict, to_status: str, at: datetime, catalog: Catalog
) -> dict[str, Any]:
    """New ``first_coordinated_at``, ``resolved_at`` and ``attrs`` for a status change."""
    first = current["first_coordinated_at"]
    if first is None and to_status in COORDINATION_STATUSES:
        first = at
    resolved = current["resolved_at"]
    if to_status == RESOLVED_STATUS:
        resolved = at
    elif current["status"] == RESOLVED_STATUS:
        resolved = None
    attrs = dict(current["attrs"] or {})
    if not catalog.statuses[current["status"]].open and catalog.statuses[to_status].open:
        attrs[REOPENED_ATTR] = int(attrs.get(REOPENED_ATTR, 0)) + 1
    return {"first": first, "resolved": resolved, "attrs": Jsonb(attrs)}


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of the report tables (used by tests and health checks)."""
    tables = ("reports", "report_events", "reporter_identities")
    counts = ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)  # fixed names only
    row = _one(conn, f"SELECT {counts}")
    return dict(zip(tables, row, strict=True))


# --------------------------------------------------------------------------- helpers


def _one(conn: psycopg.Connection, query: str, params: Any = None) -> tuple | None:
    """First row as a tuple (whatever the connection's row factory)."""
    cur = conn.cursor(row_factory=tuple_row)
    return cur.execute(query, params).fetchone()


def _dict(conn: psycopg.Connection, query: str, params: Any = None) -> dict | None:
    """First row as a dict."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(query, params).fetchone()
