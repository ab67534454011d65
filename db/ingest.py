"""Bulk import of citizen reports: read, map, validate, place, COPY, upsert.

One import is one script over small steps::

    >>> mapping = load_mapping("data/mappings/petabencana.toml")          # doctest: +SKIP
    >>> summary = import_file(dsn, "reports.geojson", mapping)            # doctest: +SKIP
    >>> print(summary.render())                                           # doctest: +SKIP

1. **Read** CSV (pyarrow, every column as text), GeoJSON (Point features; nested
   properties flattened to dotted names such as ``report_data.flood_depth``),
   GeoParquet or Parquet.  Geometry coordinates appear as the columns ``@lon`` and
   ``@lat``.
2. **Map** source columns onto roles (:data:`ROLES`) with a :class:`Mapping`: a TOML
   file and/or CLI options.  A role without a column takes the mapping's default.
   Naive timestamps are local time in the mapping's zone (Asia/Jakarta).
3. **Validate**, vectorised, in batches (:func:`prepare_batches`) that stream into
   the next steps.  Each bad row goes to ``report_quarantine`` with the
   file, its 1-based data row number, the first bad field, the reason and the raw
   row as JSON.  Rows are never lost: ``read = stored + updated + quarantined`` is
   checked before commit.  Rules match the single-report API (``db.reports``):
   coordinates, service area, text limits and control characters, http(s) media
   URLs, known category/status/OPD, timestamps (not in the future, not before 2000,
   later stages not before creation), then duplicate ``(source, external_id)``
   within the file, across batches (the first valid row wins).
4. **Place** valid rows with :class:`gis.snap.SnapIndex` (RW, then the same rule on
   kelurahan polygons for rows with no RW) and :func:`gis.hexes.points_to_cells`
   (H3 r7-r11).
5. **Write**: binary COPY of each chunk into a temporary staging table, then one
   ``INSERT ... SELECT ... ON CONFLICT (source, external_id) DO UPDATE`` per chunk
   (``xmax = 0`` tells inserted from updated rows) with the events in the same
   statement.  A first load into an empty ``reports`` (bulk mode) skips all
   that: every row is new, so chunks are COPYed straight into ``reports`` and
   their events into ``report_events`` (see *Bulk mode*).  A writer thread does
   the database work while the main thread prepares the next chunk.

Service area
    Points inside the boundaries' extent grown by 0.1° (Jakarta and Kepulauan
    Seribu; :func:`db.reports.service_area`) are stored: in no polygon and beyond
    the snapping tolerance they are kept with ``snap_method = 'outside'`` and no
    codes.  Points beyond the box are quarantined (field ``lon,lat``).

Events
    A new report gets one creation event: ``NULL -> status`` at ``created_at``, note
    ``import`` (the history before the import is unknown; the report enters
    petalapor in the status it has).  A re-import that changes a stored report's
    status appends ``old -> new`` at the import time.  Callers with full histories
    (the demo data) pass them instead.

Transactions
    One import is one transaction: the staging, every chunk's upsert, the events,
    the quarantine rows and the ``report_imports`` record commit together or not at
    all.  A failure (bad mapping, constraint violation, lost connection) leaves the
    database as it was; re-running an import is safe since it upserts.

Bulk mode
    For large loads relative to the table (at least :data:`BULK_MIN_ROWS` rows and
    :data:`BULK_MIN_SHARE` of the stored reports; or ``bulk=True``) the import locks
    ``reports`` and ``report_events``, drops their secondary indexes and foreign
    keys, loads, and re-creates them from their catalog definitions before commit:
    a sorted index build and one anti-join per key are far cheaper than row-by-row
    maintenance (PostgreSQL manual, "Populating a Database").  Nothing is skipped:
    every index and constraint is back, and checked, when the transaction commits.
    Readers of ``reports`` wait while a bulk import runs.

    When ``reports`` is empty the load is *direct*: the primary and unique keys
    go too, with the foreign keys of other tables that point at the report
    tables (all empty), and are rebuilt, and so checked, at the end.  The empty
    tables are truncated (new files: rows COPYed ``FREEZE``, and no WAL on a
    ``wal_level = minimal`` server such as the embedded one), and chunks go
    straight into ``reports``/``report_events`` with client-side ids (UUIDv7,
    ascending, so the primary key builds from sorted input) and the events
    built in Python.  The tile queue's INSERT trigger is paused for the load:
    the TRUNCATE already queued one full roll-up rebuild.

Cost (``bench/ingest.py``, 1M rows, 2 cores shared with other work; direct
load; docs/benchmarks.md): the Python side (parse, validate, snap, H3,
encode) takes 2.5-4 s of CPU and the COPY 3-5 s of server CPU beside it in
the writer thread; re-creating the 7 report indexes, the 2 event indexes and
re-checking the 10 foreign keys takes 7-9 s (a B-tree over a text code
0.8-1.5 s, the GiST 1.3-2.2 s single-threaded).
"""

from __future__ import annotations

import hashlib
import json
import queue
import secrets
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from psycopg import sql

from db.reports import (
    CLOCK_SKEW,
    EARLIEST,
    MAX_DESCRIPTION,
    MAX_EXTERNAL_ID,
    MAX_TITLE,
    MAX_URL,
    SERVICE_AREA_MARGIN_DEG,
)
from gis.hexes import RESOLUTIONS, points_to_cells
from gis.snap import DEFAULT_TOLERANCE_M, METHODS, SnapIndex
from petalapor.catalog import INITIAL_STATUS, Catalog, get_catalog
from petalapor.errors import ConfigError, DataError

#: Roles a source column can play, and what they hold.
ROLES: dict[str, str] = {
    "external_id": "the source system's id (idempotency key within source)",
    "source": "channel: jaki, qlue, sms, web, ...",
    "category": "category code from data/categories.toml",
    "status": "workflow status (default menunggu)",
    "opd": "responsible OPD (default: the category's)",
    "title": "short title",
    "description": "free text",
    "media_url": "photo URL, http(s)",
    "created_at": "when reported",
    "updated_at": "last change (default: the latest of the other timestamps)",
    "first_coordinated_at": "first coordination",
    "resolved_at": "completion",
    "lon": "longitude, WGS 84 (default: the point geometry)",
    "lat": "latitude, WGS 84 (default: the point geometry)",
    "public": "false hides the report (default true)",
    "attrs": "a JSON object merged into attrs",
}
TEXT_ROLES = (
    "external_id",
    "source",
    "category",
    "status",
    "opd",
    "title",
    "description",
    "media_url",
)
TIME_ROLES = ("created_at", "updated_at", "first_coordinated_at", "resolved_at")
#: Mapping file folder shipped with petalapor.
MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "data" / "mappings"
#: Bulk mode (indexes and foreign keys rebuilt) from this many rows ...
BULK_MIN_ROWS = 50_000
#: ... when they are at least this share of the reports already stored.
BULK_MIN_SHARE = 0.25
#: Rows per COPY + upsert chunk.
CHUNK_ROWS = 100_000
_SOURCE_RE = r"^[a-z][a-z0-9_-]{0,31}$"
_URL_RE = r"^[hH][tT][tT][pP][sS]?://[^\s/?#]+[^\s]*$"
_CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_NUMBER_RE = r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"
_OFFSET_RE = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
#: What Arrow's ISO 8601 timestamp cast may take (it still has the last word).
_ISO_RE = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)?"
    r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)?$"
)
_FREE_TEXT = ("external_id", "title", "description", "media_url")
_LIMITS = {
    "title": MAX_TITLE,
    "description": MAX_DESCRIPTION,
    "media_url": MAX_URL,
    "external_id": MAX_EXTERNAL_ID,
}
_TRUE = {"true", "t", "1", "yes", "y", "ya"}
_FALSE = {"false", "f", "0", "no", "n", "tidak"}
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_NO_SEP = pa.scalar(b"", pa.large_binary())


# --------------------------------------------------------------------------- mapping


@dataclass(frozen=True)
class Mapping:
    """How a file's columns become report fields.

    Attributes
    ----------
    columns
        Role -> candidate source columns; the first present in the file is used.
        A role with no entry uses the column of its own name when the file has
        one (``lon``/``lat`` also ``longitude``/``latitude``/``@lon``/``@lat``).
    defaults
        Role -> constant, used where the role has no column or the cell is empty.
    attrs
        Key in ``reports.attrs`` -> source column (e.g. ``report_data.flood_depth``).
    id_hash
        Columns hashed into ``external_id`` when no id column exists (stable for
        the same values, so re-imports update instead of duplicating).
    id_prefix
        Prefix of hashed ids.
    timezone
        Zone of naive timestamps.
    time_format
        strftime format of the timestamps, when they are not ISO 8601.
    delimiter
        CSV field separator.
    name
        Label (the mapping file's stem).
    """

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    id_hash: tuple[str, ...] = ()
    id_prefix: str = ""
    timezone: str = "Asia/Jakarta"
    time_format: str | None = None
    delimiter: str = ","
    name: str = "default"

    def with_options(
        self,
        *,
        columns: dict[str, str] | None = None,
        defaults: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> Mapping:
        """A copy with CLI options applied (they win over the file)."""
        cols = dict(self.columns)
        for role, col in (columns or {}).items():
            cols[role] = (col,)
        merged = {**self.defaults, **{k: v for k, v in (defaults or {}).items() if v is not None}}
        out = replace(self, columns=cols, defaults=merged, timezone=timezone or self.timezone)
        _check_mapping(out, "options")
        return out


def load_mapping(path: str | Path) -> Mapping:
    """Read a mapping TOML file (see ``data/mappings/petabencana.toml``).

    A bare name (``petabencana``) is looked up in ``data/mappings/``.

    Raises
    ------
    ConfigError
        Unreadable file, unknown role or section, or a bad value.
    """
    path = Path(path)
    if not path.exists() and (MAPPINGS_DIR / f"{path.name}.toml").exists():
        path = MAPPINGS_DIR / f"{path.name}.toml"
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read mapping: {exc}") from exc
    known = {
        "name",
        "timezone",
        "time_format",
        "delimiter",
        "columns",
        "defaults",
        "attrs",
        "external_id",
    }
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    columns = {}
    for role, value in spec.get("columns", {}).items():
        columns[role] = (value,) if isinstance(value, str) else tuple(value)
    hashed = spec.get("external_id", {})
    mapping = Mapping(
        columns=columns,
        defaults=dict(spec.get("defaults", {})),
        attrs=dict(spec.get("attrs", {})),
        id_hash=tuple(hashed.get("hash", ())),
        id_prefix=str(hashed.get("prefix", "")),
        timezone=str(spec.get("timezone", "Asia/Jakarta")),
        time_format=spec.get("time_format"),
        delimiter=str(spec.get("delimiter", ",")),
        name=str(spec.get("name", path.stem)),
    )
    _check_mapping(mapping, str(path))
    return mapping


def _check_mapping(mapping: Mapping, where: str) -> None:
    """Roles known, candidate lists non-empty, zone valid."""
    for section in (mapping.columns, mapping.defaults):
        bad = sorted(set(section) - set(ROLES))
        if bad:
            raise ConfigError(f"{where}: unknown role(s) {bad}; roles are {sorted(ROLES)}")
    for role, cols in mapping.columns.items():
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"{where}: role {role!r} needs a column name or a list of them")
    try:
        pd.Timestamp("2020-01-01").tz_localize(mapping.timezone)
    except Exception as exc:  # noqa: BLE001 - pytz/zoneinfo raise various classes
        raise ConfigError(f"{where}: unknown timezone {mapping.timezone!r}") from exc


# --------------------------------------------------------------------------- reading


@dataclass
class RawTable:
    """A file's rows as read: flattened columns plus a way back to each raw row."""

    frame: pd.DataFrame
    path: str
    geometry_error: np.ndarray | None = None
    raw_rows: Callable[[np.ndarray], list[dict]] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def raw(self, positions: np.ndarray) -> list[dict]:
        """The raw rows at these positions, JSON-ready."""
        if self.raw_rows is not None:
            return self.raw_rows(positions)
        rows = self.frame.iloc[positions].astype(object)
        return rows.where(rows.notna(), None).to_dict("records")


def read_table(path: str | Path, mapping: Mapping | None = None) -> RawTable:
    """Read a CSV, GeoJSON, GeoParquet or Parquet file of reports.

    Raises
    ------
    DataError
        Missing, unreadable or malformed file (the file is named).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path, (mapping or Mapping()).delimiter if suffix != ".tsv" else "\t")
    if suffix in (".geojson", ".json"):
        return _read_geojson(path)
    if suffix in (".parquet", ".geoparquet", ".pq"):
        return _read_parquet(path)
    raise DataError(f"{path}: unknown format {suffix!r}; use .csv, .geojson or .parquet")


def _read_csv(path: Path, delimiter: str) -> RawTable:
    """CSV with every column as text (ids keep leading zeros, bad numbers stay visible)."""
    import csv

    import pyarrow.csv as pacsv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise DataError(f"{path}: empty file (no header row)")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) {dupes}")
    # large_string: what pandas' str dtype holds, so to_pandas copies nothing
    convert = pacsv.ConvertOptions(
        column_types={c: pa.large_string() for c in header},
        null_values=[""],
        strings_can_be_null=True,
    )
    # The table's buffers come from the C allocator: Arrow's default (mimalloc) took
    # 2x the CPU time to fault in fresh memory here (transparent huge pages).
    pool = pa.system_memory_pool()
    try:
        try:
            # Block-parallel parsing.  A block boundary inside a quoted line break
            # cannot pass unnoticed: that block's last row is then incomplete, and
            # Arrow fails ("out of sync with chunker"); the file is read again.
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
                convert_options=convert,
                memory_pool=pool,
            )
        except pa.ArrowInvalid:
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=convert,
                memory_pool=pool,
            )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from exc
    frame = table.to_pandas()
    return RawTable(
        frame=frame, path=str(path), raw_rows=lambda pos: table.take(pa.array(pos)).to_pylist()
    )


def _read_geojson(path: Path) -> RawTable:
    """GeoJSON Features; properties flattened with dots; Point coordinates as @lon/@lat."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    else:
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection")
    props = [f.get("properties") or {} if isinstance(f, dict) else {} for f in features]
    frame = pd.json_normalize(props, sep=".") if props else pd.DataFrame(index=range(0))
    lon = np.full(len(features), np.nan)
    lat = np.full(len(features), np.nan)
    error = np.full(len(features), None, dtype=object)
    for i, feat in enumerate(features):
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        if not geom:
            error[i] = "no geometry"
        elif geom.get("type") != "Point":
            error[i] = f"geometry is a {geom.get('type')}, not a Point"
        else:
            xy = geom.get("coordinates") or []
            try:
                lon[i], lat[i] = float(xy[0]), float(xy[1])
            except (TypeError, ValueError, IndexError):
                error[i] = f"bad Point coordinates {xy!r}"
    frame["@lon"], frame["@lat"] = lon, lat
    return RawTable(
        frame=frame,
        path=str(path),
        geometry_error=error,
        raw_rows=lambda pos: [features[int(i)] for i in pos],
    )


def _read_parquet(path: Path) -> RawTable:
    """GeoParquet (point geometry as @lon/@lat, reprojected to 4326) or plain Parquet."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        if b"geo" in meta:
            gdf = gpd.read_parquet(path)
        else:
            return RawTable(frame=pd.read_parquet(path).reset_index(drop=True), path=str(path))
    except (OSError, pa.ArrowInvalid, ValueError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from exc
    return _geo_raw(gdf, str(path))


def _geo_raw(gdf: gpd.GeoDataFrame, path: str) -> RawTable:
    """Attributes plus @lon/@lat of a point GeoDataFrame; other geometries flagged."""
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    gdf = gdf.reset_index(drop=True)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    type_id = shapely.get_type_id(geoms)
    error = np.full(len(gdf), None, dtype=object)
    error[type_id == -1] = "no geometry"
    bad_type = (type_id != 0) & (type_id != -1)
    error[bad_type] = "geometry is not a Point"
    error[(type_id == 0) & shapely.is_empty(geoms)] = "empty Point"
    frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    point = type_id == 0
    frame["@lon"] = np.where(point, shapely.get_x(geoms), np.nan)
    frame["@lat"] = np.where(point, shapely.get_y(geoms), np.nan)

    def raw_rows(pos: np.ndarray) -> list[dict]:
        rows = frame.drop(columns=["@lon", "@lat"]).iloc[pos].astype(object)
        out = rows.where(rows.notna(), None).to_dict("records")
        for row, g in zip(out, shapely.to_wkt(geoms[pos]), strict=True):
            row["geometry"] = g
        return out

    return RawTable(frame=frame, path=path, geometry_error=error, raw_rows=raw_rows)


def frame_table(frame: pd.DataFrame, label: str) -> RawTable:
    """Wrap an in-memory (Geo)DataFrame, e.g. the demo generator's output."""
    if isinstance(frame, gpd.GeoDataFrame) and not {"lon", "lat"} <= set(frame.columns):
        return _geo_raw(frame, label)
    plain = pd.DataFrame(
        frame.drop(columns=frame.geometry.name) if isinstance(frame, gpd.GeoDataFrame) else frame
    )
    return RawTable(frame=plain.reset_index(drop=True), path=label)


# --------------------------------------------------------------------------- mapping rows


@dataclass
class Prepared:
    """One batch of rows, validated: role columns, the valid rows and the quarantine."""

    frame: pd.DataFrame
    """Role columns of every row of the batch (0-based within the batch).

    Text roles are ``str`` columns, or ``category`` columns where the batch
    repeats values (category, status, ...): validation then checks each value
    once, and the COPY encoder reuses the codes."""
    valid: np.ndarray
    """Positions (within the batch) of the valid rows, ascending."""
    quarantine: pd.DataFrame
    """``position`` (0-based in the file), ``row_number`` (1-based), ``field``, ``reason``."""
    read: int
    """Rows in the batch."""
    offset: int = 0
    """Position of the batch's first row in the file."""

    @property
    def rows(self) -> pd.DataFrame:
        """The valid rows' role columns, indexed by their position in the file."""
        rows = self.frame.take(self.valid)
        rows.index = self.valid + self.offset
        return rows


@dataclass
class _Checks:
    """First failing check per row."""

    n: int
    fields: np.ndarray = field(init=False)
    reasons: np.ndarray = field(init=False)
    failed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.fields = np.full(self.n, None, dtype=object)
        self.reasons = np.full(self.n, None, dtype=object)
        self.failed = np.zeros(self.n, dtype=bool)

    @property
    def ok(self) -> np.ndarray:
        """True where no check failed yet."""
        return ~self.failed

    def fail(
        self,
        mask: np.ndarray,
        field_name: str,
        reason: str | np.ndarray | Callable[[np.ndarray], Any],
    ) -> None:
        """Record ``reason`` for rows in ``mask`` that have no failure yet.

        ``reason`` may be a function of the failing positions (only called when some fail).
        """
        mask = np.asarray(mask, dtype=bool) & ~self.failed
        if not mask.any():
            return
        pos = np.flatnonzero(mask)
        self.failed[pos] = True
        self.fields[pos] = field_name
        if callable(reason):
            self.reasons[pos] = reason(pos)
        elif isinstance(reason, np.ndarray):
            self.reasons[pos] = reason[pos]
        else:
            self.reasons[pos] = reason


@dataclass(frozen=True)
class _Text:
    """A text column: Arrow ``values`` and, when coded, each row's index into them.

    Coded (``codes`` set): ``values`` are the distinct values (missing may be one
    of them; duplicates are allowed), so checks run once per value.  Plain:
    ``values`` has one entry per row.
    """

    values: pa.Array
    codes: np.ndarray | None = None

    @classmethod
    def of(cls, values: pa.Array, coded: bool | None = None) -> _Text:
        """Wrap per-row text; ``coded`` True/False forces the form, None: when values repeat."""
        if coded is None:
            coded = _repeats(values)
        if not coded:
            return cls(values)
        enc = pc.dictionary_encode(values, null_encoding="encode")
        return cls(enc.dictionary, enc.indices.to_numpy(zero_copy_only=False))

    @classmethod
    def constant(cls, value: str | None, n: int) -> _Text:
        """The same value (None: missing) in every row."""
        return cls(pa.array([value], type=pa.large_string()), np.zeros(n, dtype=np.int32))

    def __len__(self) -> int:
        return len(self.values) if self.codes is None else len(self.codes)

    def expand(self, per_value: np.ndarray) -> np.ndarray:
        """A per-value numpy array as a per-row one."""
        return per_value if self.codes is None else per_value[self.codes]

    def isnull(self) -> np.ndarray:
        """True where the row's value is missing."""
        return self.expand(self.values.is_null().to_numpy(zero_copy_only=False))

    def value(self, row: int) -> str | None:
        """One row's value."""
        return self.values[int(row if self.codes is None else self.codes[row])].as_py()

    def rows(self) -> pa.Array:
        """One value per row."""
        return self.values if self.codes is None else self.values.take(pa.array(self.codes))

    def slice(self, lo: int, hi: int) -> _Text:
        """Rows lo..hi."""
        if self.codes is None:
            return _Text(self.values.slice(lo, hi - lo))
        return _Text(self.values, self.codes[lo:hi])

    def take(self, rows: np.ndarray) -> _Text:
        """Some rows."""
        if self.codes is None:
            return _Text(self.values.take(pa.array(rows)))
        return _Text(self.values, self.codes[rows])

    def fill_null(self, value: str) -> _Text:
        """Missing values replaced."""
        return replace(self, values=pc.fill_null(self.values, value))

    def coded(self) -> _Text:
        """The coded form."""
        return self if self.codes is not None else _Text.of(self.values, coded=True)

    def fill_from(self, other: _Text, lookup: dict[str, str]) -> _Text:
        """Missing values taken from ``lookup`` of ``other``'s value (missing if absent)."""
        mine, theirs = self.coded(), other.coded()
        own = mine.values.to_pylist()
        derived = [None if v is None else lookup.get(v) for v in theirs.values.to_pylist()]
        missing = np.array([v is None for v in own], dtype=bool)
        codes = np.where(missing[mine.codes], len(own) + theirs.codes, mine.codes)
        return _Text(pa.array(own + derived, type=pa.large_string()), codes)

    def to_series(self) -> pd.Series:
        """As pandas: ``str``, or ``category`` when coded."""
        if self.codes is None:
            return pd.Series(pd.array(self.values, dtype="str"))
        categories: dict[str, int] = {}
        remap = np.array(
            [-1 if v is None else categories.setdefault(v, len(categories))
             for v in self.values.to_pylist()],
            dtype=np.int64,
        )  # fmt: skip
        codes = remap[self.codes] if remap.size else np.full(len(self.codes), -1)
        return pd.Series(
            pd.Categorical.from_codes(codes, categories=pd.Index(list(categories), dtype="str"))
        )


def _repeats(values: pa.Array) -> bool:
    """True when a sample of the values repeats enough to check them once per value."""
    if len(values) <= 64:
        return True
    sample = values.slice(0, 2048)
    return pc.count_distinct(sample, mode="all").as_py() * 4 <= len(sample)


#: Roles whose values are few (codes, channels): always coded.
_CODED_ROLES = {"source", "category", "status", "opd"}
_NAT = np.iinfo(np.int64).min


def prepare(
    table: RawTable,
    mapping: Mapping,
    *,
    catalog: Catalog | None = None,
    service_area: tuple[float, float, float, float] | None = None,
    now: pd.Timestamp | None = None,
) -> Prepared:
    """Map the table's columns onto roles and validate every row (vectorised).

    Parameters
    ----------
    table
        As from :func:`read_table`.
    mapping
        Column mapping and defaults.
    catalog
        Categories, statuses and OPDs (default: the shipped catalog).
    service_area
        ``(minx, miny, maxx, maxy)``; points outside are quarantined.  None: no check.
    now
        Clock for the "in the future" check.

    Returns
    -------
    Prepared

    Raises
    ------
    ConfigError
        The mapping names columns the file lacks, or a required role has neither a
        column nor a default.

    See Also
    --------
    prepare_batches : the same, batch by batch (what the importer streams).
    """
    size = max(len(table), 1)
    return next(
        iter(
            prepare_batches(
                table, mapping, size, catalog=catalog, service_area=service_area, now=now
            )
        )
    )


def prepare_batches(
    table: RawTable,
    mapping: Mapping,
    batch_rows: int,
    *,
    catalog: Catalog | None = None,
    service_area: tuple[float, float, float, float] | None = None,
    now: pd.Timestamp | None = None,
) -> Iterator[Prepared]:
    """:func:`prepare` over consecutive batches of rows (at least one batch).

    Duplicates are found across batches: a key seen in a valid row of an earlier
    batch quarantines later rows.  Mapping errors raise here, before any batch.
    """
    cols = _resolve_columns(table.frame, mapping, table.path)
    return _batches(
        table,
        mapping,
        cols,
        batch_rows,
        catalog or get_catalog(),
        service_area,
        now or pd.Timestamp.now(tz="UTC"),
    )


def _batches(
    table: RawTable,
    mapping: Mapping,
    cols: dict[str, str | None],
    batch_rows: int,
    catalog: Catalog,
    service_area: tuple[float, float, float, float] | None,
    now: pd.Timestamp,
) -> Iterator[Prepared]:
    # The key roles for the whole file first: only keys that occur more than once
    # need the (slower) duplicate bookkeeping across batches.
    keys = {
        role: _text_values(table.frame, cols, mapping, role) for role in ("source", "external_id")
    }
    repeated = _repeated(keys["external_id"])
    seen = _SeenKeys()
    n = len(table)
    for lo in range(0, max(n, 1), batch_rows):
        hi = min(n, lo + batch_rows)
        frame = table.frame.iloc[lo:hi]
        geometry_error = None if table.geometry_error is None else table.geometry_error[lo:hi]
        checks = _Checks(hi - lo)
        given = {role: text.slice(lo, hi) for role, text in keys.items()}
        out = _validate(
            frame, geometry_error, cols, mapping, catalog, service_area, now, checks, given
        )
        _check_duplicates(out, checks, seen, lo, repeated[lo:hi])
        yield _assemble_prepared(out, checks, lo)


def _repeated(external_id: _Text) -> np.ndarray:
    """True where the external_id may occur more than once in the file (missing ids alike).

    A superset is enough: the duplicate bookkeeping is exact and only skipped for
    rows not flagged here.  Plain ids are compared by a 64-bit fingerprint of
    their length and their first, middle and last 8 bytes: equal ids always
    collide, and the rare unequal ones that do only cost time.
    """
    if external_id.codes is not None:
        counts = np.bincount(external_id.codes, minlength=len(external_id.values))
        return counts[external_id.codes] > 1
    values = external_id.values
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    offsets, data = _string_buffers(values)
    # every 8-byte window of the (zero-padded) data as an unaligned little-endian word
    padded = np.zeros(data.size + 8, dtype=np.uint8)
    padded[: data.size] = data
    words = np.ndarray((data.size + 1,), dtype="<u8", buffer=padded, strides=(1,))
    start, length = offsets[:-1], np.diff(offsets)
    short = length < 8
    head = words[start]
    head[short] &= (np.uint64(1) << (8 * length[short]).astype(np.uint64)) - np.uint64(1)
    tail = np.where(short, 0, words[np.maximum(start + length - 8, 0)])
    middle = np.where(short, 0, words[np.maximum(start + length // 2 - 4, 0)])
    with np.errstate(over="ignore"):
        fingerprint = (
            length.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            ^ head * np.uint64(0xC2B2AE3D27D4EB4F)
            ^ middle * np.uint64(0x165667B19E3779F9)
            ^ tail * np.uint64(0x27D4EB2F165667C5)
        )
    return pd.Series(fingerprint).duplicated(keep=False).to_numpy()


def _validate(
    frame: pd.DataFrame,
    geometry_error: np.ndarray | None,
    cols: dict[str, str | None],
    mapping: Mapping,
    catalog: Catalog,
    service_area: tuple[float, float, float, float] | None,
    now: pd.Timestamp,
    checks: _Checks,
    given: dict[str, _Text] | None = None,
) -> dict[str, Any]:
    """Every role of these rows, checked; failures recorded in ``checks``.

    ``given`` holds text roles already computed for these rows (the key roles).
    Text roles come back as :class:`_Text`, times as int64 UTC µs (NaT: int64 min).
    """
    if geometry_error is not None and "lon" not in mapping.columns:
        checks.fail(pd.notna(geometry_error), "geometry", geometry_error)
    out: dict[str, Any] = {}
    out["lon"] = _coordinate(frame, cols, "lon", 180.0, checks)
    out["lat"] = _coordinate(frame, cols, "lat", 90.0, checks)
    if service_area is not None:
        minx, miny, maxx, maxy = service_area
        lon, lat = out["lon"], out["lat"]
        with np.errstate(invalid="ignore"):
            outside = (lon < minx) | (lon > maxx) | (lat < miny) | (lat > maxy)
        checks.fail(
            outside,
            "lon,lat",
            f"outside the service area (lon {minx:.3f}..{maxx:.3f}, lat {miny:.3f}..{maxy:.3f}: "
            "Jakarta and Kepulauan Seribu)",
        )
    for role in TEXT_ROLES:
        text = (given or {}).get(role)
        if text is None:
            text = _text_values(frame, cols, mapping, role)
        out[role] = _check_text(text, role, checks)
    _check_codes(out, catalog, checks)
    for role in TIME_ROLES:
        out[role] = _time_role(frame, cols, mapping, role, checks, now)
    _check_time_order(out, checks)
    out["public"] = _bool_role(frame, cols, mapping, "public", checks)
    out["attrs"] = _attrs(frame, cols, mapping, checks)
    return out


def _resolve_columns(frame: pd.DataFrame, mapping: Mapping, path: str) -> dict[str, str | None]:
    """Role -> the source column used (None: default/absent); checks required roles."""
    have = set(frame.columns)
    aliases = {"lon": ("lon", "lng", "longitude", "@lon"), "lat": ("lat", "latitude", "@lat")}
    cols: dict[str, str | None] = {}
    for role in ROLES:
        if role in mapping.columns:
            found = [c for c in mapping.columns[role] if c in have]
            if (
                not found
                and role not in mapping.defaults
                and not (role == "external_id" and mapping.id_hash)
            ):
                raise ConfigError(
                    f"{path}: mapping column(s) {list(mapping.columns[role])} for {role!r} "
                    "not in the file; "
                    f"the file has {sorted(c for c in have if not c.startswith('@'))}"
                )
            cols[role] = found[0] if found else None
        else:
            cols[role] = next((c for c in aliases.get(role, (role,)) if c in have), None)
    missing = [c for c in mapping.id_hash if c not in have]
    if mapping.id_hash and cols["external_id"] is None and missing:
        raise ConfigError(f"{path}: external_id hash column(s) {missing} not in the file")
    for col in mapping.attrs.values():
        if col not in have and not any(c.startswith(col + ".") for c in have):
            # Nested GeoJSON keys that never occur are simply absent: warn by error only
            # when the top-level object is missing too.
            if col.split(".")[0] not in have:
                raise ConfigError(f"{path}: attrs column {col!r} not in the file")
    needs = {
        "external_id": cols["external_id"] is not None or bool(mapping.id_hash),
        "source": cols["source"] is not None or "source" in mapping.defaults,
        "category": cols["category"] is not None or "category" in mapping.defaults,
        "created_at": cols["created_at"] is not None,
        "lon": cols["lon"] is not None,
        "lat": cols["lat"] is not None,
    }
    lacking = [role for role, ok in needs.items() if not ok]
    if lacking:
        hint = {"source": "--source", "category": "--category"}
        tips = ", ".join(f"{r} ({hint[r]} or a column)" if r in hint else r for r in lacking)
        raise ConfigError(
            f"{path}: no column for {tips}; map them with --mapping/--column ROLE=COLUMN; "
            f"the file has {sorted(c for c in have if not c.startswith('@'))}"
        )
    return cols


def _as_text(series: pd.Series) -> pa.Array:
    """Any column as stripped text (Arrow ``large_string``); empty cells become missing."""
    values = _arrow_text(series)
    if values is None:
        if pd.api.types.is_float_dtype(series.dtype):
            numbers = series.to_numpy(dtype=float, na_value=np.nan)
            finite = numbers[np.isfinite(numbers)]
            if finite.size == 0 or np.all(finite == np.round(finite)):
                series = series.astype("Int64")  # 12.0 -> "12": ids read as numbers
        elif series.dtype == object:
            series = series.map(
                lambda v: v if v is None or isinstance(v, str) else _json_text(v),
                na_action="ignore",
            )
        series = series.astype("str")
        values = _arrow_text(series)
        if values is None:  # pandas without pyarrow string storage
            values = pa.array(series, type=pa.large_string(), from_pandas=True)
    return _stripped(values)


def _column_text(series: pd.Series, coded: bool | None) -> _Text:
    """:func:`_as_text` of a column as :class:`_Text` (``coded`` as in :meth:`_Text.of`).

    Text columns are coded first, so that only distinct values are stripped.
    """
    raw = _arrow_text(series)
    if raw is None:
        return _Text.of(_as_text(series), coded)
    text = _Text.of(raw, coded)
    return _Text(_stripped(text.values), text.codes)


def _arrow_text(series: pd.Series) -> pa.Array | None:
    """The Arrow array behind a pyarrow-backed text column (one chunk), else None."""
    if not isinstance(series.array, pd.arrays.ArrowStringArray):
        return None
    values = series.array.__arrow_array__()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values.cast(pa.large_string()) if values.type != pa.large_string() else values


def _text_array(values: pd.Series | pd.Index) -> pa.Array:
    """Text values as one Arrow ``large_string`` array (missing: null)."""
    arrow = _arrow_text(pd.Series(values)) if isinstance(values, pd.Index) else _arrow_text(values)
    if arrow is not None:
        return arrow
    arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, length + 1) and data bytes of a large_string/large_binary array."""
    if values.type not in (pa.large_string(), pa.large_binary()):
        values = values.cast(pa.large_string())
    buffers = values.buffers()
    offsets = np.frombuffer(
        buffers[1], dtype=np.int64, count=len(values) + 1, offset=values.offset * 8
    )
    data = buffers[2]
    return offsets, (np.zeros(0, dtype=np.uint8) if data is None else np.frombuffer(data, np.uint8))


def _stripped(values: pa.Array) -> pa.Array:
    """Leading/trailing whitespace removed (Unicode, as ``str.strip`` in pandas); "" -> missing.

    The trim only runs when some value starts or ends with a byte that can
    belong to whitespace (ASCII <= 0x20, or any non-ASCII byte).
    """
    offsets, data = _string_buffers(values)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    if filled.any():
        first, last = data[starts[filled]], data[ends[filled] - 1]
        if ((first <= 0x20) | (first >= 0x7F) | (last <= 0x20) | (last >= 0x7F)).any():
            values = pc.utf8_trim_whitespace(values)
            offsets, _ = _string_buffers(values)
    empty = offsets[1:] == offsets[:-1]
    if values.null_count:
        empty &= values.is_valid().to_numpy(zero_copy_only=False)
    if empty.any():
        values = pc.if_else(pa.array(empty), pa.scalar(None, pa.large_string()), values)
    return values


def _json_text(value: Any) -> str:
    """Non-text cell values as text (numbers as written, objects as JSON)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _coordinate(
    frame: pd.DataFrame, cols: dict, role: str, limit: float, checks: _Checks
) -> np.ndarray:
    """lon or lat as float64; missing, non-numeric and out-of-range rows fail."""
    series = frame[cols[role]]
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(values)
        bad = np.zeros(len(values), dtype=bool)
    else:
        text = _as_text(series)
        missing = text.is_null().to_numpy(zero_copy_only=False)
        values = _to_float(text)
        bad = ~missing & np.isnan(values)
    checks.fail(missing, role, f"missing {role}")
    if bad.any():
        checks.fail(
            bad,
            role,
            lambda pos: [f"{role} is not a number: {text[int(p)].as_py()!r}" for p in pos],
        )
    with np.errstate(invalid="ignore"):
        out_of_range = ~missing & ~bad & ~(np.abs(values) <= limit)
    checks.fail(
        out_of_range,
        role,
        lambda pos: [f"{role} {values[p]!r} out of range [-{limit:g}, {limit:g}]" for p in pos],
    )
    return values


def _to_float(text: pa.Array) -> np.ndarray:
    """Text to float64 (NaN where not a number), with Arrow's parser.

    A dirty column (one bad value fails Arrow's cast) has its non-numbers nulled
    by a regex first.
    """
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        number = pc.fill_null(pc.match_substring_regex(text, _NUMBER_RE), False)
        clean = pc.if_else(number, text, pa.scalar(None, pa.large_string()))
        try:
            return pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            strings = pd.Series(text.to_pandas().to_numpy(dtype=object))
            return pd.to_numeric(strings, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _text_values(frame: pd.DataFrame, cols: dict, mapping: Mapping, role: str) -> _Text:
    """A text role's values: column (or hash for external_id), default where empty."""
    default = mapping.defaults.get(role)
    default = None if default in (None, "") else str(default)
    if role == "status" and default is None:
        default = INITIAL_STATUS
    coded = True if role in _CODED_ROLES else None
    if cols[role] is not None:
        text = _column_text(frame[cols[role]], coded)
    elif role == "external_id" and mapping.id_hash:
        text = _Text.of(_hashed_ids(frame, mapping), coded)
    else:
        return _Text.constant(default, len(frame))
    return text if default is None else text.fill_null(default)


def _check_text(text: _Text, role: str, checks: _Checks) -> _Text:
    """Missing keys, patterns (source, media URL), control characters and lengths.

    Patterns and lengths are checked per value (:class:`_Text`), then spread to rows.
    """
    values = text.values
    if role in ("external_id", "source"):
        checks.fail(text.isnull(), role, f"missing {role}")
    if role == "source":
        bad = text.expand(~_matches(values, _SOURCE_RE))
        checks.fail(
            bad,
            role,
            lambda pos: [f"source {text.value(p)!r} must match {_SOURCE_RE}" for p in pos],
        )
    if role == "media_url":
        bad = text.expand(~_matches(values, _URL_RE))
        checks.fail(
            bad,
            role,
            lambda pos: [
                f"media_url must be an absolute http(s) URL: {text.value(p)[:80]!r}" for p in pos
            ],
        )
    if role in _FREE_TEXT and _may_match(values, _CONTROL_BYTES):
        # coded roles are checked against the catalog or a pattern
        control = text.expand(_matches(values, _CONTROL_RE, null=False))
        checks.fail(control, role, f"{role} contains a control character")
    if role in _LIMITS:
        length = pc.utf8_length(values).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            long = np.nan_to_num(length.astype(float), nan=0) > _LIMITS[role]
        checks.fail(text.expand(long), role, f"{role} longer than {_LIMITS[role]} characters")
    return text


def _matches(arr: pa.Array, pattern: str, null: bool = True) -> np.ndarray:
    """Regex match per value; ``null`` for missing values."""
    hit = pc.match_substring_regex(arr, pattern)
    return pc.fill_null(hit, null).to_numpy(zero_copy_only=False)


def _is_in(values: pa.Array, known: Iterable[str]) -> np.ndarray:
    """Per value: one of ``known`` (missing values are not)."""
    value_set = pa.array(list(known), type=pa.large_string())
    return pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)


def _byte_table(*ranges: tuple[int, int]) -> np.ndarray:
    """A 256-entry lookup table, True for the bytes in the inclusive ranges."""
    table = np.zeros(256, dtype=bool)
    for lo, hi in ranges:
        table[lo : hi + 1] = True
    return table


#: The bytes _CONTROL_RE matches (in UTF-8 no other byte can be one of these characters).
_CONTROL_BYTES = _byte_table((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x7F))
#: Bytes an offset (_OFFSET_RE) must contain.
_OFFSET_BYTES = _byte_table((ord("+"), ord("+")), (ord("-"), ord("-")), (ord("Z"), ord("Z")))
_OFFSET_BYTES[ord("z")] = True


def _may_match(arr: pa.Array | pa.ChunkedArray, table: np.ndarray, tail: int = 0) -> bool:
    """False only when no value holds a byte of ``table`` (in its last ``tail`` bytes, if set).

    A cheap, conservative test on the raw buffers before a regex: most columns
    have no control characters and most times no offset.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        return False
    offsets, data = _string_buffers(arr)
    if data.size == 0:
        return False
    if tail:  # the last bytes of each value; a short value also shows its neighbour's
        ends = offsets[1:]
        return any(table[data[np.maximum(ends - k, 0)]].any() for k in range(1, tail + 1))
    data = data[offsets[0] : offsets[-1]]
    # a comparison per byte range costs far less than a table lookup per byte
    edges = np.flatnonzero(np.diff(np.r_[False, table, False].astype(np.int8))).tolist()
    return any(
        ((data >= lo) & (data < hi)).any() for lo, hi in zip(edges[::2], edges[1::2], strict=True)
    )


def _hashed_ids(frame: pd.DataFrame, mapping: Mapping) -> pa.Array:
    """Stable ids from the values of the hash columns (blake2b, 80 bits, hex)."""
    parts = [_as_text(frame[c]).to_pylist() for c in mapping.id_hash]
    joined = ["\x1f".join(v or "" for v in row) for row in zip(*parts, strict=True)]
    digests = [hashlib.blake2b(s.encode(), digest_size=10).hexdigest() for s in joined]
    return pa.array([mapping.id_prefix + d for d in digests], type=pa.large_string())


def _check_codes(out: dict, catalog: Catalog, checks: _Checks) -> None:
    """Category, status and OPD against the catalog; OPD defaults to the category's."""
    category = out["category"]
    missing = category.isnull()
    checks.fail(missing, "category", "missing category")
    known = category.expand(_is_in(category.values, catalog.categories))
    checks.fail(
        ~missing & ~known,
        "category",
        lambda pos: [f"unknown category {category.value(p)!r}" for p in pos],
    )
    status = out["status"]
    checks.fail(
        ~status.expand(_is_in(status.values, catalog.statuses)),
        "status",
        lambda pos: [
            f"unknown status {status.value(p)!r}; known: {', '.join(catalog.statuses)}" for p in pos
        ],
    )
    opd = out["opd"]
    checks.fail(
        ~opd.isnull() & ~opd.expand(_is_in(opd.values, catalog.opds)),
        "opd",
        lambda pos: [f"unknown OPD {opd.value(p)!r}" for p in pos],
    )
    out["opd"] = opd.fill_from(category, {c: cat.opd for c, cat in catalog.categories.items()})


def _time_role(
    frame: pd.DataFrame, cols: dict, mapping: Mapping, role: str, checks: _Checks, now: pd.Timestamp
) -> np.ndarray:
    """A timestamp role as UTC µs (NaT: int64 min); unparseable, future, pre-2000 values fail."""
    n = len(frame)
    if cols[role] is None:
        return np.full(n, _NAT, dtype=np.int64)
    raw = frame[cols[role]].reset_index(drop=True)
    micros, given = _parse_times(raw, mapping)
    bad = given & (micros == _NAT)
    if role == "created_at":
        checks.fail(~given, role, "missing created_at")
    checks.fail(
        bad,
        role,
        lambda pos: [f"{role}: cannot parse {str(raw.iloc[p])[:40]!r} as a time" for p in pos],
    )
    latest = (pd.Timestamp(now).as_unit("ns").value + pd.Timedelta(CLOCK_SKEW).value) // 1000
    checks.fail(
        micros > latest,
        role,
        lambda pos: [f"{role} {t.isoformat()} is in the future" for t in _timestamps(micros[pos])],
    )
    earliest = -(-pd.Timestamp(EARLIEST).as_unit("ns").value // 1000)  # ceil: µs below it fail
    early = (micros != _NAT) & (micros < earliest)
    checks.fail(early, role, f"{role} is before {EARLIEST.date()}")
    return micros


def _timestamps(micros: np.ndarray) -> pd.Series:
    """UTC µs (int64) as a datetime64[us, UTC] Series."""
    return pd.Series(micros.view("datetime64[us]")).dt.tz_localize("UTC")


def _parse_times(raw: pd.Series, mapping: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as UTC µs (NaT: int64 min) and a mask of non-empty input."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        values = raw.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        return values.array.asi8.copy(), raw.notna().to_numpy()
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        local = raw.dt.tz_localize(mapping.timezone, ambiguous="NaT", nonexistent="NaT")
        values = local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        return values.array.asi8.copy(), raw.notna().to_numpy()
    arr = _as_text(raw)
    given = arr.is_valid().to_numpy(zero_copy_only=False)
    micros = np.full(len(arr), _NAT, dtype=np.int64)
    aware = (  # an offset is at most 6 characters ("+07:00"), all ASCII
        _matches(arr, _OFFSET_RE, null=False)
        if _may_match(arr, _OFFSET_BYTES, tail=6)
        else np.zeros(len(arr), dtype=bool)
    )
    if mapping.time_format:
        aware[:] = "%z" in mapping.time_format
    for is_aware in (False, True):
        kind = aware == is_aware
        if kind.all():  # one kind only: parse the column as it is (missing values: NaT)
            micros[:] = _parse_time_text(arr, is_aware, mapping)
            continue
        rows = np.flatnonzero(given & kind)
        if rows.size:
            micros[rows] = _parse_time_text(arr.take(pa.array(rows)), is_aware, mapping)
    return micros, given


def _parse_time_text(text: pa.Array, aware: bool, mapping: Mapping) -> np.ndarray:
    """Timestamp text of one kind (all naive, or all with offset) to UTC µs; NaT as int64 min.

    ISO 8601 goes through Arrow's parser (fast, and strict enough); anything else,
    or a ``time_format``, through pandas.  When a few values fail Arrow, the
    values shaped like ISO dates are tried on their own first, then the values
    that do not look like ISO 8601 take the slow path.
    """
    if not mapping.time_format:
        try:
            return _arrow_times(text, aware, mapping)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            shaped = _iso_shaped(text)
            if shaped.any() and not shaped.all():
                try:
                    head = _arrow_times(text.filter(pa.array(shaped)), aware, mapping)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
                else:
                    out = np.empty(len(text), dtype=np.int64)
                    out[shaped] = head
                    rest = text.filter(pa.array(~shaped))
                    out[~shaped] = _parse_time_text(rest, aware, mapping)
                    return out
            iso = _matches(text, _ISO_RE, null=False)
            if iso.any() and not iso.all():
                out = np.empty(len(text), dtype=np.int64)
                for part in (iso, ~iso):
                    out[part] = _parse_time_text(text.filter(pa.array(part)), aware, mapping)
                return out
    strings = pd.Series(text.to_pandas().to_numpy(dtype=object))
    fmt = mapping.time_format or "ISO8601"
    return _as_utc_micros(
        pd.to_datetime(strings, format=fmt, errors="coerce", utc=aware), aware, mapping
    )


def _iso_shaped(text: pa.Array) -> np.ndarray:
    """True where a value starts like an ISO date (``dddd-dd-dd``), judged on the raw bytes."""
    offsets, data = _string_buffers(text)
    start, length = offsets[:-1], np.diff(offsets)
    shaped = length >= 10
    if data.size < 10:
        return np.zeros(len(text), dtype=bool)
    at = np.minimum(start, data.size - 10)
    for k in range(10):
        byte = data[at + k]
        shaped &= (byte == ord("-")) if k in (4, 7) else ((byte >= ord("0")) & (byte <= ord("9")))
    return shaped


def _arrow_times(text: pa.Array, aware: bool, mapping: Mapping) -> np.ndarray:
    """Arrow's ISO 8601 cast; raises ArrowInvalid when a value does not parse."""
    target = pa.timestamp("us", tz="UTC") if aware else pa.timestamp("us")
    parsed = pc.cast(text, target).cast(pa.int64())
    if parsed.null_count:
        parsed = pc.fill_null(parsed, _NAT)
    parsed = parsed.to_numpy(zero_copy_only=False)
    values = pd.Series(parsed.view("datetime64[us]"))
    return _as_utc_micros(values.dt.tz_localize("UTC") if aware else values, aware, mapping)


def _as_utc_micros(values: pd.Series, aware: bool, mapping: Mapping) -> np.ndarray:
    """Parsed times (naive ones are local, in the mapping's zone) as UTC µs; NaT as int64 min."""
    if not aware:
        values = values.dt.tz_localize(mapping.timezone, ambiguous="NaT", nonexistent="NaT")
    return values.dt.tz_convert("UTC").astype("datetime64[us, UTC]").array.asi8


def _check_time_order(out: dict, checks: _Checks) -> None:
    """Later stages not before creation (the table checks resolved_at, too)."""
    created = out["created_at"]
    for role in ("first_coordinated_at", "resolved_at", "updated_at"):
        later = out[role]
        early = (later != _NAT) & (created != _NAT) & (later < created)
        checks.fail(early, role, f"{role} is before created_at")
    # NaT is int64's minimum, so a plain maximum skips it
    latest = np.maximum.reduce([out[r] for r in TIME_ROLES])
    out["updated_at"] = np.where(out["updated_at"] == _NAT, latest, out["updated_at"])


def _bool_role(
    frame: pd.DataFrame, cols: dict, mapping: Mapping, role: str, checks: _Checks
) -> np.ndarray:
    """true/false/1/0/yes/no/ya/tidak; default true."""
    default = mapping.defaults.get(role, True)
    default = default if isinstance(default, bool) else str(default).strip().lower() in _TRUE
    n = len(frame)
    if cols[role] is None:
        return np.full(n, default)
    series = frame[cols[role]].reset_index(drop=True)
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.fillna(default).to_numpy(dtype=bool)
    text = _column_text(series, coded=True)
    lower = pc.utf8_lower(text.values)
    true = text.expand(_is_in(lower, _TRUE))
    false = text.expand(_is_in(lower, _FALSE))
    given = ~text.isnull()
    checks.fail(
        given & ~true & ~false,
        role,
        lambda pos: [
            f"{role} must be true or false, got {lower[int(text.codes[p])].as_py()!r}" for p in pos
        ],
    )
    return np.where(given, true, default)


def _attrs(frame: pd.DataFrame, cols: dict, mapping: Mapping, checks: _Checks) -> _Text:
    """attrs as compact JSON object text, from the attrs column and mapped columns."""
    n = len(frame)
    base = None
    if cols["attrs"] is not None:
        base = frame[cols["attrs"]].reset_index(drop=True)
        if (
            base.nunique(dropna=False) == 1 and not mapping.attrs
        ):  # one value (the demo): parse once
            value = base.iloc[0]
            parsed = _json_object(value)
            if parsed is None:
                checks.fail(np.ones(n, dtype=bool), "attrs", "attrs must be a JSON object")
                return _Text.constant("{}", n)
            text = json.dumps(_json_ready(parsed), separators=(",", ":"), ensure_ascii=False)
            return _Text.constant(text, n)
    extra = {key: _attr_values(frame, col) for key, col in mapping.attrs.items()}
    if base is None and not extra:
        return _Text.constant("{}", n)
    objects: list[str] = []
    bad = np.zeros(n, dtype=bool)
    base_values = base.tolist() if base is not None else [None] * n
    extra_values = extra
    for i in range(n):
        obj = _json_object(base_values[i]) if base_values[i] is not None else {}
        if obj is None:
            bad[i] = True
            obj = {}
        for key, values in extra_values.items():
            if values[i] is not None:
                obj[key] = values[i]
        objects.append(json.dumps(_json_ready(obj), separators=(",", ":"), ensure_ascii=False))
    checks.fail(bad, "attrs", "attrs must be a JSON object")
    return _Text.of(pa.array(objects, type=pa.large_string()))


def _json_object(value: Any) -> dict | None:
    """A dict from a dict or JSON object text; None when it is something else."""
    if isinstance(value, dict):
        return dict(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _attr_values(frame: pd.DataFrame, col: str) -> list[Any]:
    """One attrs column as Python values: numbers stay numbers, missing is None."""
    if col not in frame.columns:
        return [None] * len(frame)
    series = frame[col].reset_index(drop=True)
    if not (series.dtype == object or pd.api.types.is_numeric_dtype(series.dtype)):
        text = pd.Series(pd.array(_as_text(series), dtype="str"))
        numbers = pd.to_numeric(text, errors="coerce")
        if numbers.notna().sum() == text.notna().sum():  # every value numeric: keep numbers
            series = numbers
        else:
            series = text
    return [_plain_value(v) for v in series.tolist()]


def _plain_value(value: Any) -> Any:
    """JSON-ready scalar: NaN/NA to None, integral floats to int, numpy to Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _SeenKeys:
    """Keys of valid rows from earlier batches, with their 1-based row numbers."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def first_rows(self, keys: pd.Series) -> np.ndarray:
        """Row number of an earlier valid row per key, 0 where none."""
        if not self.rows:
            return np.zeros(len(keys), dtype=np.int64)
        get = self.rows.get
        return np.fromiter((get(k, 0) for k in keys.tolist()), dtype=np.int64, count=len(keys))

    def add(self, keys: pd.Series, row_numbers: np.ndarray) -> None:
        """Remember these keys (unique, not seen before)."""
        self.rows.update(zip(keys.tolist(), row_numbers.tolist(), strict=True))


def _check_duplicates(
    out: dict, checks: _Checks, seen: _SeenKeys, offset: int, repeated: np.ndarray
) -> None:
    """Repeated (source, external_id) among otherwise valid rows: the first one wins.

    ``offset`` is the batch's first row (0-based) in the file; ``seen`` holds the
    keys of earlier batches and learns this batch's.  Only rows whose key may
    occur more than once in the file (``repeated``) can be duplicates.
    """
    ok = np.flatnonzero(checks.ok & repeated)
    if ok.size == 0:
        return
    source = out["source"].take(ok).rows().to_pylist()
    external_id = out["external_id"].take(ok).rows().to_pylist()
    keys = pd.Series(
        [s + "\x1f" + e for s, e in zip(source, external_id, strict=True)], dtype="str"
    )
    earlier = seen.first_rows(keys)
    codes, uniques = pd.factorize(keys)
    first_idx = np.full(len(uniques), len(keys), dtype=np.int64)
    np.minimum.at(first_idx, codes, np.arange(len(keys)))
    first_here = first_idx[codes]
    first_row = np.where(earlier > 0, earlier, ok[first_here] + offset + 1)
    dup = (earlier > 0) | (first_here != np.arange(len(keys)))
    fresh = ~dup
    seen.add(keys[fresh], ok[fresh] + offset + 1)
    if not dup.any():
        return
    mask = np.zeros(checks.n, dtype=bool)
    mask[ok[dup]] = True
    first_of = np.zeros(checks.n, dtype=np.int64)
    first_of[ok] = first_row
    checks.fail(
        mask,
        "external_id",
        lambda pos: [
            f"duplicate external_id {out['external_id'].value(p)!r} (first at row {first_of[p]})"
            for p in pos
        ],
    )


def _assemble_prepared(out: dict, checks: _Checks, offset: int) -> Prepared:
    """Role columns plus the valid positions and the quarantine list."""
    ok = checks.ok
    quarantine = pd.DataFrame(
        {
            "position": np.flatnonzero(~ok) + offset,
            "field": checks.fields[~ok],
            "reason": checks.reasons[~ok],
        }
    )
    quarantine["row_number"] = quarantine["position"] + 1
    columns = {}
    for role, values in out.items():
        if isinstance(values, _Text):
            columns[role] = values.to_series()
        elif role in TIME_ROLES:
            columns[role] = _timestamps(values)
        else:
            columns[role] = values
    return Prepared(
        frame=pd.DataFrame(columns),
        valid=np.flatnonzero(ok),
        quarantine=quarantine,
        read=checks.n,
        offset=offset,
    )


# --------------------------------------------------------------------------- placing


@dataclass
class Places:
    """RW and kelurahan polygons prepared for snapping, and the service area."""

    rw: gpd.GeoDataFrame
    kelurahan: gpd.GeoDataFrame
    tolerance_m: float = DEFAULT_TOLERANCE_M
    _rw_index: SnapIndex | None = None
    _kel_index: SnapIndex | None = None
    _code_tables: dict[str, tuple[np.ndarray, pd.Index]] | None = None

    @property
    def service_area(self) -> tuple[float, float, float, float]:
        """Kelurahan extent grown by :data:`SERVICE_AREA_MARGIN_DEG` (as ``db.reports``)."""
        minx, miny, maxx, maxy = self.kelurahan.total_bounds
        m = SERVICE_AREA_MARGIN_DEG
        return (float(minx - m), float(miny - m), float(maxx + m), float(maxy + m))

    def expect(self, rows: int) -> None:
        """Size the RW lookup grid for an import of ``rows`` points.

        The grid only trades build time for query time (results are identical):
        fine cells pay off for large imports, coarse cells for small ones.
        """
        cell_m = _cell_size(rows)
        if self._rw_index is None or self._rw_index.cell_m > 2 * cell_m:
            self._rw_index = SnapIndex.from_frame(
                self.rw, tolerance_m=self.tolerance_m, cell_m=cell_m
            )

    def place(self, lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
        """Codes, snap method and distance per point, by the snapping rule.

        The four codes, ``snap_method`` and ``snap_level`` (``"rw"`` or
        ``"kelurahan"``: the rule that placed the point) come as categorical
        Series (codes missing where no polygon matched); ``snap_distance_m`` as
        float64.
        """
        if self._rw_index is None:
            self.expect(lon.size)
        res = self._rw_index.snap(lon, lat)
        rw_row, kel_row = res.row, np.full(lon.size, -1, dtype=np.int64)
        method, distance = _method_codes(res.method), res.distance_m.copy()
        miss = np.flatnonzero(rw_row < 0)
        if miss.size:
            if self._kel_index is None:  # coarse grid: few points go here, build fast
                self._kel_index = SnapIndex.from_frame(
                    self.kelurahan, tolerance_m=self.tolerance_m, cell_m=80.0
                )
            kel = self._kel_index.snap(lon[miss], lat[miss])
            method[miss], distance[miss], kel_row[miss] = (
                _method_codes(kel.method),
                kel.distance_m,
                kel.row,
            )
        # one lookup per code over the RW rows, then the kelurahan rows
        n_rw = len(self.rw)
        pick = np.where(rw_row >= 0, rw_row, np.where(kel_row >= 0, n_rw + kel_row, -1))
        out: dict[str, Any] = {"rw_code": self._categorical("code", rw_row)}
        for col in ("kelurahan_code", "kecamatan_code", "kota_code"):
            out[col] = self._categorical(col, pick)
        out["snap_method"] = pd.Series(pd.Categorical.from_codes(method, _METHODS))
        out["snap_distance_m"] = distance
        level = (rw_row < 0).astype(np.int8)
        out["snap_level"] = pd.Series(pd.Categorical.from_codes(level, _LEVELS))
        return out

    def _categorical(self, col: str, pick: np.ndarray) -> pd.Series:
        """A code column at ``pick`` (RW rows, then kelurahan rows; -1 missing)."""
        if self._code_tables is None:
            tables = {}
            for name in ("code", "kelurahan_code", "kecamatan_code", "kota_code"):
                values = [*self.rw[name], *(self.kelurahan[name] if name != "code" else [])]
                codes, categories = pd.factorize(pd.Series(values, dtype="str"))
                tables[name] = (np.append(codes, -1), pd.Index(categories, dtype="str"))
            self._code_tables = tables
        codes, categories = self._code_tables[col]
        return pd.Series(pd.Categorical.from_codes(codes[pick], categories))


#: Snap methods and levels as categories (codes 0, 1, 2 as in gis.snap.METHODS).
_METHODS = pd.Index(list(METHODS), dtype="str")
_LEVELS = pd.Index(["rw", "kelurahan"], dtype="str")


def _method_codes(methods: np.ndarray) -> np.ndarray:
    """gis.snap method names as codes into :data:`_METHODS`."""
    codes = np.full(methods.shape, 2, dtype=np.int8)
    codes[methods == METHODS[0]] = 0
    codes[methods == METHODS[1]] = 1
    return codes


def _cell_size(rows: int) -> float:
    """Lookup-grid cell (metres) for snapping this many points.

    Build time falls with the cell size, lookups per point rise slowly (RW
    polygons, 1M points, s build + lookup: 40 m ~0.1 + 0.25; 25 m and 50 m
    cost 10-20 % more in all, 80 m ~0.1 + 0.45).
    """
    return 40.0 if rows >= 500_000 else 80.0


_PLACES_CACHE: dict[tuple[str, str, float], Places] = {}


def places_from_db(conn: psycopg.Connection, tolerance_m: float = DEFAULT_TOLERANCE_M) -> Places:
    """The current boundary set's RW and kelurahan polygons (cached per set).

    Raises
    ------
    ConfigError
        No boundaries are loaded.
    """
    row = conn.execute("SELECT fingerprint FROM boundary_sets WHERE is_current").fetchone()
    if row is None:
        raise ConfigError("no boundaries loaded; run `petalapor boundaries import` first")
    key = (conn.info.dsn, row[0], float(tolerance_m))
    if key not in _PLACES_CACHE:
        frames = {}
        for level in ("rw", "kelurahan"):
            cur = conn.execute(
                "SELECT code, kelurahan_code, kecamatan_code, kota_code, ST_AsBinary(geom) "
                "FROM boundaries WHERE level = %s ORDER BY code",
                (level,),
            )
            data = cur.fetchall()
            names = ["code", "kelurahan_code", "kecamatan_code", "kota_code"]
            frame = pd.DataFrame([r[:4] for r in data], columns=names, dtype=object)
            geoms = shapely.from_wkb([bytes(r[4]) for r in data])
            frames[level] = gpd.GeoDataFrame(frame, geometry=geoms, crs="EPSG:4326")
        if len(frames["kelurahan"]) == 0:
            raise ConfigError(
                "no kelurahan boundaries loaded; run `petalapor boundaries import` first"
            )
        _PLACES_CACHE.clear()  # one set in use at a time
        _PLACES_CACHE[key] = Places(frames["rw"], frames["kelurahan"], float(tolerance_m))
    return _PLACES_CACHE[key]


# --------------------------------------------------------------------------- binary COPY


class _CopyRows:
    """Rows of a binary COPY body, built field by field, joined once at the end.

    Each row is a field count, then per field a big-endian int32 length (-1:
    NULL) and the value's bytes.  The rows are assembled from a few *pieces*,
    each one binary value per row, concatenated row by row in a single Arrow
    call (the per-value cost of that call is what matters, so pieces are few):

    * numpy blocks: consecutive fixed-width fields (NULL-able ones too) and the
      length words of text fields, one record per row;
    * coded runs: consecutive text fields with few distinct values (pandas
      categoricals), as one dictionary of their joined bytes per distinct
      combination, taken per row;
    * plain text: the column's own bytes (its length word goes before it).
    """

    def __init__(self, n: int, ncols: int):
        self.n = n
        self.pieces: list[pa.Array] = []
        self._block: list[tuple[np.ndarray, np.ndarray | None, np.dtype]] = []
        self._coded: list[tuple[np.ndarray, pa.Array]] = []
        self._add_block(np.full(n, ncols, dtype=">i2"))

    # ------------------------------------------------------------------ fields

    def fixed(
        self, values: np.ndarray, valid: np.ndarray | None = None, dtype: str | None = None
    ) -> None:
        """A fixed-width field in PostgreSQL's binary form: ``values`` as ``dtype``
        (big-endian; default: their own dtype).  ``valid``: False for NULL."""
        dtype = np.dtype(dtype or values.dtype)
        length = np.full(self.n, dtype.itemsize, dtype=">i4")
        if valid is not None and not valid.all():
            length[~valid] = -1
        else:
            valid = None
        self._add_block(length)
        self._add_block(values, valid, dtype)

    def text(self, values: pd.Series | pa.Array, version: bytes = b"") -> None:
        """A text field (missing: NULL).

        ``version``: bytes sent before each value and counted in its length
        (jsonb's format version); the field must then have no NULLs.
        """
        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            self._add_coded(values.cat.codes.to_numpy(), values.cat.categories, version)
            return
        if isinstance(values, pd.Series):
            values = _text_array(values)
        values = values.cast(pa.large_binary())
        offsets, _ = _string_buffers(values)
        word = offsets[1:] - offsets[:-1] + len(version)
        if values.null_count:
            if version:
                raise ValueError("a field with a version byte cannot hold NULLs")
            word[~values.is_valid().to_numpy(zero_copy_only=False)] = -1
        if self._coded:  # the length word joins the coded run before it
            self._add_coded(word + 1, None, b"", lengths=True)
        else:
            self._add_block(word.astype(">i4"))
        if version:
            self._add_block(np.full(self.n, version, dtype=f"S{len(version)}"))
        self._flush()
        self.pieces.append(values)

    def body(self) -> pa.Buffer:
        """The COPY rows (no header or trailer), without copying them again."""
        self._flush()
        if len(self.pieces) == 1:
            rows = self.pieces[0]
        else:  # a NULL piece (plain text) adds nothing
            rows = pc.binary_join_element_wise(
                *self.pieces, _NO_SEP, null_handling="replace", null_replacement=""
            )
        offsets, _ = _string_buffers(rows)
        data = rows.buffers()[2]
        if data is None or offsets[-1] == offsets[0]:
            return pa.py_buffer(b"")
        return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))

    # ------------------------------------------------------------------ pieces

    def _add_block(
        self, values: np.ndarray, valid: np.ndarray | None = None, dtype: np.dtype | None = None
    ) -> None:
        self._flush_coded()
        self._block.append((values, valid, values.dtype if dtype is None else dtype))

    def _add_coded(
        self,
        codes: np.ndarray,
        categories: pd.Index | None,
        version: bytes,
        lengths: bool = False,
    ) -> None:
        """A coded field: codes (-1: NULL) into categories, or, with ``lengths``,
        length words coded as word + 1 (0: NULL)."""
        if lengths:
            top = int(codes.max(initial=0))
            words = (np.arange(top + 1, dtype=np.int64) - 1).astype(">i4")
            entries = _fixed_binary(words)
        else:
            text = _text_array(categories).cast(pa.large_binary())
            offsets, _ = _string_buffers(text)
            length = (offsets[1:] - offsets[:-1] + len(version)).astype(">i4")
            parts = [_fixed_binary(length)]
            if version:
                parts.append(pa.array([version] * len(text), type=pa.large_binary()))
            entries = pc.binary_join_element_wise(*parts, text, _NO_SEP)
            null = pa.array([b"\xff\xff\xff\xff"], pa.large_binary())
            entries = pa.concat_arrays([entries, null])
            codes = np.where(codes < 0, len(text), codes)
        self._flush_block()
        self._coded.append((codes.astype(np.int64, copy=False), entries))

    def _flush(self) -> None:
        self._flush_block()
        self._flush_coded()

    def _flush_block(self) -> None:
        """The open numpy block as one piece."""
        if not self._block:
            return
        block, self._block = self._block, []
        records = np.empty(
            self.n, dtype=[(f"f{i}", dtype) for i, (_, _, dtype) in enumerate(block)]
        )
        for i, (values, _, _) in enumerate(block):
            records[f"f{i}"] = values
        width = records.dtype.itemsize
        data = records.view(np.uint8).reshape(self.n, width)
        if all(valid is None for _, valid, _ in block):
            offsets = np.arange(self.n + 1, dtype=np.int64) * width
            data = data.reshape(-1)
        else:  # NULL values: their bytes are left out
            keep = np.ones((self.n, width), dtype=bool)
            row_width = np.full(self.n, width, dtype=np.int64)
            for i, (_, valid, dtype) in enumerate(block):
                if valid is not None:
                    start = records.dtype.fields[f"f{i}"][1]
                    keep[~valid, start : start + dtype.itemsize] = False
                    row_width -= dtype.itemsize * ~valid
            data = data[keep]
            offsets = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(row_width, out=offsets[1:])
        self.pieces.append(_binary(offsets, data))

    def _flush_coded(self) -> None:
        """The open coded run as one piece: a dictionary per distinct combination."""
        if not self._coded:
            return
        run, self._coded = self._coded, []
        if len(run) == 1:
            codes, entries = run[0]
            self.pieces.append(entries.take(pa.array(codes)))
            return
        key, size = np.zeros(self.n, dtype=np.int64), 1
        for codes, entries in run:
            if size * len(entries) >= 1 << 62:
                key, _ = _densify(key, size)
                size = int(key.max(initial=0)) + 1
            key, size = key * len(entries) + codes, size * len(entries)
        ids, some_row = _densify(key, size)
        joined = pc.binary_join_element_wise(
            *[entries.take(pa.array(codes[some_row])) for codes, entries in run], _NO_SEP
        )
        self.pieces.append(joined.take(pa.array(ids)))


def _densify(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys as 0..m-1, and a row holding each."""
    if size <= 4 * key.size + 4096:
        present = np.zeros(size, dtype=bool)
        present[key] = True
        ids = (np.cumsum(present) - 1)[key]
        m = int(present.sum())
    else:
        ids, uniques = pd.factorize(key)
        m = len(uniques)
    some_row = np.empty(m, dtype=np.int64)
    some_row[ids] = np.arange(key.size)
    return ids, some_row


def _binary(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A large_binary array from int64 offsets and a byte array."""
    return pa.Array.from_buffers(
        pa.large_binary(),
        offsets.size - 1,
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))],
    )


def _fixed_binary(values: np.ndarray) -> pa.Array:
    """One binary value per element of a fixed-width numpy array (its raw bytes)."""
    width = values.dtype.itemsize
    return _binary(np.arange(values.size + 1, dtype=np.int64) * width, values.view(np.uint8))


def _ts_micros(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """PostgreSQL timestamptz binary values (µs since 2000-01-01) and a validity mask."""
    micros = values.astype("datetime64[us, UTC]").array.asi8
    valid = micros != _NAT
    return np.where(valid, micros - _PG_EPOCH_US, 0), valid


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"

#: Staging columns, in COPY order: the fixed-width non-null block, then the rest.
_STAGE_FIXED = [
    "id",
    "created_at",
    "updated_at",
    "geom",
    "snap_distance_m",
    *[f"h3_r{r}" for r in RESOLUTIONS],
    "public",
]
_STAGE_VAR = [
    "source",
    "external_id",
    "category",
    "opd",
    "status",
    "title",
    "description",
    "media_url",
    "rw_code",
    "kelurahan_code",
    "kecamatan_code",
    "kota_code",
    "snap_method",
    "first_coordinated_at",
    "resolved_at",
    "attrs",
]
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS petalapor_stage (
    id uuid, created_at timestamptz, updated_at timestamptz, geom geometry, snap_distance_m float8,
    h3_r7 int8, h3_r8 int8, h3_r9 int8, h3_r10 int8, h3_r11 int8, public bool,
    source text, external_id text, category text, opd text, status text, title text,
    description text, media_url text, rw_code text, kelurahan_code text, kecamatan_code text,
    kota_code text, snap_method text, first_coordinated_at timestamptz, resolved_at timestamptz,
    attrs jsonb
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS petalapor_stage_events (
    seq int4, at timestamptz, source text, external_id text, from_status text, to_status text,
    actor_opd text, note text
) ON COMMIT DROP
"""


_NO_TEXT = pd.Index([], dtype="str")
_IMPORT_NOTE = pd.Index(["import"], dtype="str")


def _ids(n: int, start: int, base: tuple[int, int, int]) -> np.ndarray:
    """Time-ordered UUIDv7-style ids: ms timestamp, version 7, per-import random bits, counter.

    Consecutive within an import (appends at the right edge of the primary key).
    """
    ms, rand_a, rand_b = base
    counter = np.arange(start, start + n, dtype=np.uint64)
    hi = np.uint64((ms << 16) | 0x7000 | rand_a)
    lo = (np.uint64(0x8000000000000000 | (rand_b << 40))) | counter
    out = np.empty(n, dtype=[("hi", ">u8"), ("lo", ">u8")])
    out["hi"], out["lo"] = hi, lo
    return out.view("V16")


def encode_reports(chunk: pd.DataFrame, ids: np.ndarray) -> pa.Buffer:
    """One chunk of placed rows as a binary COPY stream for ``petalapor_stage``.

    The stream is a bytes-like Arrow buffer (``bytes(...)`` copies it out).
    """
    n = len(chunk)
    rows = _CopyRows(n, len(_STAGE_FIXED) + len(_STAGE_VAR))
    geom = np.empty(n, dtype=[("o", "u1"), ("t", "<u4"), ("s", "<u4"), ("x", "<f8"), ("y", "<f8")])
    geom["o"], geom["t"], geom["s"] = 1, 0x20000001, 4326  # little-endian EWKB Point, SRID 4326
    geom["x"], geom["y"] = chunk["lon"].to_numpy(), chunk["lat"].to_numpy()
    rows.fixed(ids)
    rows.fixed(_ts_micros(chunk["created_at"])[0], dtype=">i8")
    rows.fixed(_ts_micros(chunk["updated_at"])[0], dtype=">i8")
    rows.fixed(geom.view("V25"))
    rows.fixed(chunk["snap_distance_m"].to_numpy(dtype=float), dtype=">f8")
    for r in RESOLUTIONS:
        rows.fixed(chunk[f"h3_r{r}"].to_numpy(), dtype=">i8")
    rows.fixed(chunk["public"].to_numpy(dtype=bool))
    for col in _STAGE_VAR:
        if col in ("first_coordinated_at", "resolved_at"):
            micros, valid = _ts_micros(chunk[col])
            rows.fixed(micros, valid, dtype=">i8")
        elif col == "attrs":  # jsonb: format version 1, then the JSON text
            rows.text(chunk["attrs"], version=b"\x01")
        else:
            rows.text(chunk[col])
    return rows.body()


def encode_events(events: pd.DataFrame) -> pa.Buffer:
    """Events as a binary COPY stream for ``petalapor_stage_events``."""
    rows = _CopyRows(len(events), 8)
    rows.fixed(events["seq"].to_numpy(), dtype=">i4")
    rows.fixed(_ts_micros(events["at"])[0], dtype=">i8")
    for col in ("source", "external_id", "from_status", "to_status", "actor_opd", "note"):
        rows.text(events[col])
    return rows.body()


#: ``report_events`` columns of :func:`encode_new_events`, in COPY order.
_EVENT_COLS = ["id", "report_id", "at", "from_status", "to_status", "actor_opd", "note"]


def encode_new_events(report_ids: np.ndarray, events: pd.DataFrame, first_id: int) -> pa.Buffer:
    """Events of new reports as a binary COPY stream straight into ``report_events``.

    ``report_ids`` (V16 UUIDs) line up with the rows of ``events``; the event ids
    are ``first_id``, ``first_id + 1``, ... in row order (reserved from the
    table's sequence by the caller: a million ``nextval`` calls cost the server
    about 0.3 s).
    """
    rows = _CopyRows(len(events), len(_EVENT_COLS))
    rows.fixed(np.arange(first_id, first_id + len(events), dtype=np.int64), dtype=">i8")
    rows.fixed(report_ids)
    rows.fixed(_ts_micros(events["at"])[0], dtype=">i8")
    for col in _EVENT_COLS[3:]:
        rows.text(events[col])
    return rows.body()


def _creation_events(chunk: pd.DataFrame) -> pd.DataFrame:
    """One ``NULL -> status`` event at ``created_at`` per report, note ``import``."""
    n = len(chunk)
    none = pd.Series(pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), _NO_TEXT))
    return pd.DataFrame(
        {
            "at": chunk["created_at"].reset_index(drop=True),
            "from_status": none,
            "to_status": chunk["status"].reset_index(drop=True),
            "actor_opd": none,
            "note": pd.Series(pd.Categorical.from_codes(np.zeros(n, np.int8), _IMPORT_NOTE)),
        }
    )


# --------------------------------------------------------------------------- writing

_INSERT_COLS = [
    "id",
    "source",
    "external_id",
    "category",
    "opd",
    "title",
    "description",
    "media_url",
    "created_at",
    "updated_at",
    "first_coordinated_at",
    "resolved_at",
    "status",
    "geom",
    "rw_code",
    "kelurahan_code",
    "kecamatan_code",
    "kota_code",
    "snap_method",
    "snap_distance_m",
    *[f"h3_r{r}" for r in RESOLUTIONS],
    "public",
    "attrs",
]
_KEEP_ON_UPDATE = {"id", "source", "external_id"}

_CREATION_EVENTS = """
    SELECT id, NULL::text, status, created_at, NULL::text, 'import'::text FROM up WHERE inserted
"""
_STAGED_EVENTS = """
    SELECT up.id, e.from_status, e.to_status, e.at, e.actor_opd, e.note
    FROM up JOIN petalapor_stage_events e USING (source, external_id)
    WHERE up.inserted
"""


def _upsert_sql(staged_events: bool) -> sql.Composed:
    """Step 1 per chunk: insert new reports, update those whose status is unchanged.

    Rows whose stored status differs are left alone here (``DO UPDATE ... WHERE``
    skips them, keeping them locked) and go through :func:`_status_change_sql`, so
    the common case needs no join against ``reports``.  ``xmax = 0`` marks rows
    this statement inserted.
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, _INSERT_COLS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in _INSERT_COLS
        if c not in _KEEP_ON_UPDATE
    )
    events = sql.SQL(_STAGED_EVENTS if staged_events else _CREATION_EVENTS)
    return sql.SQL(
        """
        WITH up AS (
            INSERT INTO reports AS r ({cols}) SELECT {cols} FROM petalapor_stage
            ON CONFLICT (source, external_id) DO UPDATE SET {updates}
            WHERE r.status = EXCLUDED.status
            RETURNING r.id, r.source, r.external_id, r.status, r.created_at,
                      (r.xmax = 0) AS inserted
        ), ev AS (
            INSERT INTO report_events (report_id, from_status, to_status, at, actor_opd, note)
            {events}
            RETURNING 1
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
               (SELECT count(*) FROM ev)
        FROM up
        """
    ).format(cols=cols, updates=updates, events=events)


def _status_change_sql() -> sql.Composed:
    """Step 2, only when step 1 skipped rows: update them and append ``old -> new`` events."""
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = s.{0}").format(sql.Identifier(c))
        for c in _INSERT_COLS
        if c not in _KEEP_ON_UPDATE
    )
    return sql.SQL(
        """
        WITH old AS (
            SELECT r.id, r.status FROM reports r JOIN petalapor_stage s USING (source, external_id)
            WHERE r.status <> s.status
        ), up AS (
            UPDATE reports r SET {updates} FROM petalapor_stage s
            WHERE r.source = s.source AND r.external_id = s.external_id AND r.status <> s.status
            RETURNING r.id, r.status
        ), ev AS (
            INSERT INTO report_events (report_id, from_status, to_status, at, actor_opd, note)
            SELECT up.id, old.status, up.status, now(), NULL, 'import: status changed'
            FROM up JOIN old USING (id)
            RETURNING 1
        )
        SELECT count(*), (SELECT count(*) FROM ev) FROM up
        """
    ).format(updates=updates)


@dataclass
class _Chunk:
    """One encoded chunk for the writer thread.

    ``reports``/``events`` are binary COPY bodies (bytes-like): for ``petalapor_stage``
    and ``petalapor_stage_events`` (upsert), or for ``reports`` and ``report_events``
    themselves (direct load, ``events`` then holds every event of the chunk).
    """

    rows: int
    read: int
    reports: bytes | pa.Buffer
    events: bytes | pa.Buffer | None
    n_events: int = 0


class _Writer(threading.Thread):
    """Streams encoded chunks into the database on the import's connection.

    Two ways, chosen per import:

    * upsert (default): binary COPY into staging, then one upsert per chunk;
    * direct (``direct=True``, bulk mode into an empty ``reports``): binary COPY
      straight into ``reports`` and ``report_events`` -- no staging, no upsert,
      no per-row conflict check (the unique key is rebuilt, and so checked, at
      the end); ``freeze`` adds COPY's FREEZE (the tables were truncated in this
      transaction).

    Runs while the main thread prepares the next chunk; the first error stops it
    and is re-raised by :meth:`finish`.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        staged_events: bool,
        on_chunk: Callable[[int], None],
        *,
        direct: bool = False,
        freeze: bool = False,
    ):
        super().__init__(name="petalapor-ingest-writer", daemon=True)
        self.conn = conn
        self.queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=2)
        self.statement = _upsert_sql(staged_events)
        self.direct = direct
        self.options = ", FREEZE" if freeze else ""
        self.on_chunk = on_chunk
        self.error: BaseException | None = None
        self.inserted = self.updated = self.events = 0
        self.seconds = {"copy": 0.0, "events": 0.0, "upsert": 0.0}

    def run(self) -> None:
        """Consume chunks until the sentinel."""
        while True:
            chunk = self.queue.get()
            if chunk is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                if self.direct:
                    self._write_direct(chunk)
                else:
                    self._write(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc

    def _write_direct(self, chunk: _Chunk) -> None:
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            self._copy(cur, "reports", _STAGE_FIXED + _STAGE_VAR, chunk.reports, self.options)
            t1 = time.perf_counter()
            if chunk.events is not None and chunk.n_events:
                self._copy(cur, "report_events", _EVENT_COLS, chunk.events, self.options)
        self.seconds["copy"] += t1 - t0
        self.seconds["events"] += time.perf_counter() - t1
        self.inserted += chunk.rows
        self.events += chunk.n_events
        self.on_chunk(chunk.read)

    def _write(self, chunk: _Chunk) -> None:
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute("TRUNCATE petalapor_stage, petalapor_stage_events")
            self._copy(cur, "petalapor_stage", _STAGE_FIXED + _STAGE_VAR, chunk.reports)
            if chunk.events is not None:
                self._copy(
                    cur,
                    "petalapor_stage_events",
                    [
                        "seq",
                        "at",
                        "source",
                        "external_id",
                        "from_status",
                        "to_status",
                        "actor_opd",
                        "note",
                    ],
                    chunk.events,
                )
            t1 = time.perf_counter()
            ins, upd, ev = cur.execute(self.statement).fetchone()
            if ins + upd < chunk.rows:  # re-imported rows whose status changed
                changed, ev2 = cur.execute(_status_change_sql()).fetchone()
                upd, ev = upd + changed, ev + ev2
        self.seconds["copy"] += t1 - t0
        self.seconds["upsert"] += time.perf_counter() - t1
        self.inserted += ins
        self.updated += upd
        self.events += ev
        if ins + upd != chunk.rows:
            raise RuntimeError(f"chunk of {chunk.rows} rows stored {ins} + updated {upd}")
        self.on_chunk(chunk.read)

    @staticmethod
    def _copy(
        cur: psycopg.Cursor, table: str, columns: list[str], body: bytes, options: str = ""
    ) -> None:
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(options),
        )
        with cur.copy(stmt) as copy:
            copy.write(_COPY_HEADER)
            view = memoryview(body)
            for lo in range(0, len(body), 1 << 22):
                copy.write(view[lo : lo + (1 << 22)])
            copy.write(_COPY_TRAILER)

    def put(self, chunk: _Chunk) -> None:
        """Queue a chunk (blocks while two are waiting); raises the writer's error."""
        self._raise()
        self.queue.put(chunk)

    def finish(self) -> None:
        """Wait for the queued chunks; raise the writer's error if any."""
        self.queue.put(None)
        self.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- bulk mode


def _bulk_wanted(conn: psycopg.Connection, rows: int, bulk: bool | None) -> bool:
    """Bulk mode by policy (see the module docstring) unless forced either way."""
    if bulk is not None:
        return bulk
    if rows < BULK_MIN_ROWS:
        return False
    stored = conn.execute(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'reports'::regclass"
    ).fetchone()[0]
    if stored < 0:  # never analysed
        stored = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
    return rows >= BULK_MIN_SHARE * stored


def _lock_for_bulk(conn: psycopg.Connection) -> bool:
    """Lock ``reports`` and ``report_events`` for a bulk load; True when ``reports`` is empty."""
    conn.execute("SET LOCAL lock_timeout = '30s'")
    conn.execute("LOCK TABLE reports, report_events IN ACCESS EXCLUSIVE MODE")
    return not conn.execute("SELECT EXISTS (SELECT 1 FROM reports)").fetchone()[0]


def _defer_indexes(conn: psycopg.Connection, unique: bool = False) -> list[sql.Composable]:
    """Drop secondary indexes and foreign keys of the report tables; return the re-create DDL.

    With ``unique`` (a direct load into an empty ``reports``, which needs no
    conflict arbiter) the primary keys and unique constraints go too, and with
    them the foreign keys of other tables that point at the report tables
    (those tables are empty, as ``reports`` is: re-checking them at the end
    costs nothing).  A primary key rebuilt from sorted ids takes a third of the
    time that maintaining it row by row during the COPY does.  Definitions come
    from the catalog, so indexes and constraints added by later migrations are
    re-created exactly too.  Must run inside the import's transaction, after
    :func:`_lock_for_bulk`.
    """
    tables = "('reports'::regclass, 'report_events'::regclass)"
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        f"WHERE i.indrelid IN {tables} AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1"
    ).fetchall()
    referencing = f" OR confrelid IN {tables}" if unique else ""
    fkeys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE contype = 'f' AND (conrelid IN {tables}{referencing}) ORDER BY 1, 2"
    ).fetchall()
    uniques = []
    if unique:
        uniques = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            f"FROM pg_constraint WHERE contype IN ('p', 'u') AND conrelid IN {tables} "
            "ORDER BY 1, 2"
        ).fetchall()
    restore: list[sql.Composable] = []
    for table, name, definition in [*fkeys, *uniques]:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
        restore.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(table), sql.Identifier(name)
            )
            + sql.SQL(definition)  # from pg_get_constraintdef: the catalog's own text
        )
    # unique keys before the foreign keys, plain indexes first (the key checks use them)
    restore = restore[len(fkeys) :] + restore[: len(fkeys)]
    for name, definition in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        restore.insert(0, sql.SQL(definition))
    return restore


def _truncate_empty(conn: psycopg.Connection) -> bool:
    """TRUNCATE the (empty) report tables, and the tables referencing them, if all are empty.

    Only called with ``reports`` empty and locked.  Emptying empty tables changes
    no data; it gives them new files, so the rows loaded next may be written
    frozen (COPY FREEZE) and, on a server with ``wal_level = minimal`` (the
    embedded cluster, see ``db.cluster``), skip the WAL along with the index
    builds on them (the files are synced at commit instead).  An ON TRUNCATE
    trigger fires as for any TRUNCATE (the tile queue gets one 'full' entry,
    as it does for every large load).  Returns False, touching nothing, when
    one of the tables holds rows, is busy, or may not be truncated by this role.
    """
    rows = conn.execute(
        """
        WITH RECURSIVE t(rel) AS (
            SELECT unnest(ARRAY['reports'::regclass, 'report_events'::regclass])
            UNION
            SELECT c.conrelid::regclass FROM pg_constraint c JOIN t ON c.confrelid = t.rel
            WHERE c.contype = 'f'
        )
        SELECT n.nspname, c.relname FROM t JOIN pg_class c ON c.oid = t.rel
        JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2
        """
    ).fetchall()
    names = sql.SQL(", ").join(sql.Identifier(nsp, rel) for nsp, rel in rows)
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the import going
            # SHARE: nobody writes into the referencing tables between check and TRUNCATE
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE NOWAIT").format(names))
            for nsp, rel in rows:
                exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                    sql.Identifier(nsp, rel)
                )
                if conn.execute(exists).fetchone()[0]:
                    return False
            conn.execute(sql.SQL("TRUNCATE {}").format(names))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.InsufficientPrivilege):
        return False
    return True


def _pause_tile_queue(conn: psycopg.Connection) -> list[str]:
    """Disable, for this transaction, the tile queue's INSERT trigger on ``reports``.

    Only called after :func:`_truncate_empty` emptied the report tables in this
    transaction: its TRUNCATE already queued one ``'full'`` tile rebuild, which
    is all the INSERT trigger would add for a large load -- after keeping every
    COPYed row in a transition table for it (about a tenth of the COPY's
    server time).  The caller enables the returned triggers again before
    commit; a rollback restores them anyway.
    """
    names = [
        row[0]
        for row in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'reports'::regclass "
            "AND NOT tgisinternal AND tgenabled <> 'D' AND (tgtype & 4) <> 0 "  # 4: INSERT
            "AND tgfoid = 'petalapor_tiles_reports_changed'::regproc ORDER BY 1"
        )
    ]
    for name in names:
        conn.execute(sql.SQL("ALTER TABLE reports DISABLE TRIGGER {}").format(sql.Identifier(name)))
    return names


# --------------------------------------------------------------------------- the import


@dataclass
class ImportSummary:
    """What one import did; ``read = stored + updated + quarantined`` always holds."""

    import_id: uuid.UUID
    source_file: str
    read: int = 0
    stored: int = 0
    updated: int = 0
    quarantined: int = 0
    events: int = 0
    snap: dict[str, int] = field(default_factory=lambda: {"inside": 0, "nearest": 0, "outside": 0})
    quarantine_fields: dict[str, int] = field(default_factory=dict)
    bulk: bool = False
    direct: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    index_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (stored in ``report_imports.summary``)."""
        return {
            "source_file": self.source_file,
            "read": self.read,
            "stored": self.stored,
            "updated": self.updated,
            "quarantined": self.quarantined,
            "events": self.events,
            "snap": self.snap,
            "quarantine_fields": self.quarantine_fields,
            "bulk": self.bulk,
            "direct": self.direct,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "index_seconds": {k: round(v, 3) for k, v in self.index_seconds.items()},
        }

    def render(self) -> str:
        """Human-readable summary."""
        placed = sum(self.snap.values())
        share = (lambda k: self.snap[k] / placed) if placed else (lambda k: 0.0)
        total = self.seconds.get("total", 0.0)
        rate = f", {self.read / total:,.0f} rows/s" if total > 0 else ""
        lines = [
            f"import {self.import_id} ({self.source_file})"
            + (" [bulk mode, direct load]" if self.direct else " [bulk mode]" if self.bulk else ""),
            f"  read         {self.read:>10,}",
            f"  stored (new) {self.stored:>10,}",
            f"  updated      {self.updated:>10,}",
            f"  quarantined  {self.quarantined:>10,}"
            + (
                f"  ({', '.join(f'{k}: {v}' for k, v in sorted(self.quarantine_fields.items()))})"
                if self.quarantine_fields
                else ""
            ),
            "  snapped      "
            + ", ".join(
                f"{k} {self.snap[k]:,} ({share(k):.1%})" for k in ("inside", "nearest", "outside")
            ),
            f"  events       {self.events:>10,}",
            f"  took {total:.2f} s{rate}",
        ]
        return "\n".join(lines)


def import_file(
    dsn: str,
    path: str | Path,
    mapping: Mapping | None = None,
    **options: Any,
) -> ImportSummary:
    """Import one file of reports; see :func:`import_table` for the options.

    Examples
    --------
    >>> s = import_file(dsn, "petabencana.geojson", load_mapping("petabencana"))  # doctest: +SKIP
    >>> s.read == s.stored + s.updated + s.quarantined                             # doctest: +SKIP
    True
    """
    mapping = mapping or Mapping()
    t0 = time.perf_counter()
    table = read_table(path, mapping)
    return import_table(dsn, table, mapping, _read_seconds=time.perf_counter() - t0, **options)


def import_frame(
    dsn: str,
    frame: pd.DataFrame,
    mapping: Mapping | None = None,
    *,
    label: str = "<frame>",
    **options: Any,
) -> ImportSummary:
    """Import reports from a (Geo)DataFrame whose columns are roles (the demo data)."""
    return import_table(dsn, frame_table(frame, label), mapping or Mapping(), **options)


def import_table(
    dsn: str,
    table: RawTable,
    mapping: Mapping,
    *,
    tolerance_m: float = DEFAULT_TOLERANCE_M,
    events: pd.DataFrame | None = None,
    bulk: bool | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    places: Places | None = None,
    catalog: Catalog | None = None,
    _read_seconds: float = 0.0,
) -> ImportSummary:
    """Validate, place and store a table of reports in one transaction.

    Parameters
    ----------
    dsn
        Database (migrated, boundaries loaded, catalog synced).
    table
        Rows as read (:func:`read_table`, :func:`frame_table`).
    mapping
        Column mapping.
    tolerance_m
        Snapping tolerance for the ``nearest`` step.
    events
        Full histories for new reports (columns of :attr:`gis.demo.DemoData.events`);
        None: a creation event per new report.
    bulk
        Force bulk mode on or off; None: by policy.
    progress
        Show a progress bar on stderr (only when it is a terminal).
    chunk_rows
        Rows per COPY/upsert chunk.
    places
        Polygons to snap to (default: the current boundary set in the database).
    catalog
        Category/status/OPD catalog (default: the shipped one).

    Returns
    -------
    ImportSummary

    Raises
    ------
    ConfigError
        Bad mapping, no boundaries, or the catalog was not synced.
    psycopg.Error
        The database refused the data; nothing was stored.
    """
    catalog = catalog or get_catalog()
    started = time.perf_counter() - _read_seconds
    summary = ImportSummary(import_id=uuid.uuid4(), source_file=table.path, read=len(table))
    timer = _Timer(summary.seconds)
    summary.seconds["read"] = _read_seconds
    with psycopg.connect(dsn) as conn:
        conn.execute("SET temp_buffers = '64MB'")  # before the first temp table of the session
        _check_catalog_synced(conn, catalog)
        places = places or places_from_db(conn, tolerance_m)
        with timer("snap"):
            places.expect(len(table))
        event_source = _EventSource(events, catalog) if events is not None else None
        batches = prepare_batches(
            table, mapping, chunk_rows, catalog=catalog, service_area=places.service_area
        )
        with conn.transaction():
            _session_settings(conn)
            conn.execute(
                "INSERT INTO report_imports (id, source_file) VALUES (%s, %s)",
                (summary.import_id, table.path),
            )
            conn.execute(_STAGE_DDL)
            summary.bulk = _bulk_wanted(conn, len(table), bulk)
            direct = freeze = False
            restore: list[sql.Composable] = []
            paused: list[str] = []
            if summary.bulk:
                with timer("prepare tables"):
                    direct = _lock_for_bulk(conn)
                    restore = _defer_indexes(conn, unique=direct)
                    freeze = direct and _truncate_empty(conn)
                    paused = _pause_tile_queue(conn) if freeze else []
            summary.direct = direct
            quarantine = _write_rows(
                conn, batches, places, event_source, summary, timer, progress, direct, freeze
            )
            for name in paused:
                conn.execute(
                    sql.SQL("ALTER TABLE reports ENABLE TRIGGER {}").format(sql.Identifier(name))
                )
            with timer("indexes"):
                for statement in restore:
                    text = statement.as_string(conn)
                    t0 = time.perf_counter()
                    with _merge_joins(conn, "REFERENCES reports(" in text.replace('"', "")):
                        conn.execute(statement)
                    summary.index_seconds[_ddl_name(text)] = time.perf_counter() - t0
            with timer("quarantine"):
                _store_quarantine(conn, table, quarantine, summary)
            _finish_summary(summary, quarantine)
            summary.seconds["total"] = time.perf_counter() - started
            conn.execute(
                "UPDATE report_imports SET summary = %s WHERE id = %s",
                (json.dumps(summary.as_dict()), summary.import_id),
            )
            commit_start = time.perf_counter()
        summary.seconds["commit"] = time.perf_counter() - commit_start
    summary.seconds["total"] = time.perf_counter() - started
    return summary


#: Settings raised (never lowered) for the import's transaction.
_AT_LEAST = {"maintenance_work_mem": "512MB", "work_mem": "64MB"}


def _session_settings(conn: psycopg.Connection) -> None:
    """Transaction-local settings for a large load.

    ``maintenance_work_mem``: index rebuilds sort in memory.  ``work_mem``: the
    rows of a chunk's statement, held for the statement-level triggers on
    ``reports`` (transition tables), stay in memory instead of a temp file
    (about a tenth of the COPY's server time at 100,000-row chunks).
    ``synchronous_commit`` stays as configured: the import commits once, and
    that commit took no measurable time.
    """
    for name, value in _AT_LEAST.items():
        conn.execute(
            "SELECT set_config(%s, %s, true) "
            "WHERE pg_size_bytes(current_setting(%s)) < pg_size_bytes(%s)",
            (name, value, name, value),
        )


@contextmanager
def _merge_joins(conn: psycopg.Connection, wanted: bool = True) -> Iterator[None]:
    """No hash joins inside (transaction-local), when ``wanted``.

    Re-adding a foreign key checks every row with one anti-join.  For a key
    onto ``reports`` on tables just loaded (no statistics yet) the planner
    hashes the million report ids; a merge join over the two freshly built,
    sorted indexes does the same check in a quarter of the time (0.14 s
    instead of 0.55 s for 1M events).  Keys onto the small catalog tables keep
    their hash joins (a merge join would sort the million rows).
    """
    if not wanted:
        yield
        return
    before = conn.execute("SELECT current_setting('enable_hashjoin')").fetchone()[0]
    conn.execute("SELECT set_config('enable_hashjoin', 'off', true)")
    try:
        yield
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('enable_hashjoin', %s, true)", (before,))


def _ddl_name(statement: str) -> str:
    """``reports_rw`` from ``CREATE INDEX reports_rw ON ...``; the constraint name for keys."""
    words = statement.replace('"', "").split()
    if words[:2] == ["CREATE", "INDEX"] or words[:3] == ["CREATE", "UNIQUE", "INDEX"]:
        return words[words.index("INDEX") + 1]
    if "CONSTRAINT" in words:
        return words[words.index("CONSTRAINT") + 1]
    return statement[:40]


def _check_catalog_synced(conn: psycopg.Connection, catalog: Catalog) -> None:
    """The catalog tables hold every code (else the foreign keys refuse the rows)."""
    have = {r[0] for r in conn.execute("SELECT code FROM categories").fetchall()}
    missing = sorted(set(catalog.categories) - have)
    if missing:
        raise ConfigError(
            f"categories {missing} are not in the database; run petalapor.catalog.sync_catalog "
            "(petalapor up does) before importing reports"
        )


class _Timer:
    """Accumulates wall-clock seconds per named stage."""

    def __init__(self, into: dict[str, float]):
        self.into = into

    def __call__(self, name: str) -> _Timer._Span:
        return _Timer._Span(self.into, name)

    class _Span:
        def __init__(self, into: dict[str, float], name: str):
            self.into, self.name = into, name

        def __enter__(self) -> None:
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            self.into[self.name] = self.into.get(self.name, 0.0) + time.perf_counter() - self.t0


def _write_rows(
    conn: psycopg.Connection,
    batches: Iterator[Prepared],
    places: Places,
    event_source: _EventSource | None,
    summary: ImportSummary,
    timer: _Timer,
    progress: bool,
    direct: bool = False,
    freeze: bool = False,
) -> pd.DataFrame:
    """Validate, place and encode batch by batch; the writer thread stores each.

    ``direct``: COPY straight into ``reports``/``report_events`` (see
    :class:`_Writer`).  Returns the quarantine of every batch.
    """
    from tqdm import tqdm

    bar = tqdm(
        total=summary.read,
        unit="rows",
        unit_scale=True,
        file=sys.stderr,
        desc="import",
        disable=not (progress and sys.stderr.isatty()),
    )
    lock = threading.Lock()

    def advance(k: int) -> None:
        with lock:
            bar.update(k)

    writer = _Writer(conn, event_source is not None, advance, direct=direct, freeze=freeze)
    base = (int(time.time() * 1000), secrets.randbits(12), secrets.randbits(22))
    if direct:  # event ids in Python (report_events is locked; sequence values may have gaps)
        event_seq = conn.execute("SELECT pg_get_serial_sequence('report_events', 'id')").fetchone()
        next_event = conn.execute("SELECT nextval(%s)", event_seq).fetchone()[0]
    quarantines = []
    written = 0
    writer.start()
    try:
        while True:
            with timer("validate"):
                prepared = next(batches, None)
            if prepared is None:
                break
            quarantines.append(prepared.quarantine)
            if prepared.valid.size == 0:
                advance(prepared.read)
                continue
            chunk = _placed_chunk(prepared, places, summary, timer)
            with timer("encode"):
                ids = _ids(len(chunk), written, base)
                body = encode_reports(chunk, ids)
                n_events = 0
                if direct:
                    if event_source is None:
                        events, event_ids = _creation_events(chunk), ids
                    else:
                        events, event_ids = event_source.for_reports(chunk, ids)
                    n_events = len(events)
                    ev_body = encode_new_events(event_ids, events, next_event)
                    next_event += n_events
                elif event_source is not None:
                    ev_body = encode_events(event_source.select(chunk))
                else:
                    ev_body = None
            written += len(chunk)
            with timer("queue wait"):
                writer.put(_Chunk(len(chunk), prepared.read, body, ev_body, n_events))
        with timer("db drain"):
            writer.finish()
        if direct:  # the next event id after the ones used
            conn.execute("SELECT setval(%s, %s, false)", (event_seq[0], next_event))
    finally:
        if writer.is_alive():
            writer.queue.put(None)
            writer.join()
        bar.close()
    summary.stored, summary.updated, summary.events = writer.inserted, writer.updated, writer.events
    summary.seconds.update(writer.seconds)
    return pd.concat(quarantines, ignore_index=True)


def _placed_chunk(
    prepared: Prepared, places: Places, summary: ImportSummary, timer: _Timer
) -> pd.DataFrame:
    """The batch's valid rows with codes, snap method/distance and H3 cells."""
    chunk = prepared.frame
    if prepared.valid.size != len(chunk):
        chunk = chunk.take(prepared.valid).reset_index(drop=True)
    lon, lat = chunk["lon"].to_numpy(), chunk["lat"].to_numpy()
    with timer("snap"):
        placed = places.place(lon, lat)
    with timer("h3"):
        cells = points_to_cells(lon, lat, RESOLUTIONS)
    with timer("encode"):
        columns = {col: chunk[col] for col in chunk.columns}
        columns.update((k, v) for k, v in placed.items() if k != "snap_level")
        columns.update((f"h3_r{r}", c) for r, c in cells.items())
        columns["attrs"] = _with_snap_level(chunk["attrs"], placed["snap_level"])
        chunk = pd.DataFrame(columns)
    counts = np.bincount(placed["snap_method"].cat.codes, minlength=len(METHODS))
    for method, count in zip(METHODS, counts.tolist(), strict=True):
        summary.snap[method] += count
    return chunk


def _with_snap_level(attrs: pd.Series, level: pd.Series) -> pd.Series:
    """attrs JSON text with ``snap_level`` added (as the single-report API stores it).

    ``level`` is categorical; categorical attrs give categorical output, computed
    once per (attrs, level) pair.
    """
    codes = attrs.cat.codes.to_numpy() if isinstance(attrs.dtype, pd.CategoricalDtype) else None
    if codes is not None and (codes >= 0).all():
        levels, level_codes = level.cat.categories, level.cat.codes.to_numpy()
        key = codes.astype(np.int64) * len(levels) + level_codes
        ids, some_row = _densify(key, len(attrs.cat.categories) * len(levels))
        texts = attrs.cat.categories[codes[some_row]]
        lvls = levels[level_codes[some_row]]
        tail = [f'"snap_level":"{lvl}"}}' for lvl in lvls]
        values = [
            "{" + t if a == "{}" else a[:-1] + "," + t for a, t in zip(texts, tail, strict=True)
        ]
        codes, categories = pd.factorize(pd.Series(values, dtype="str"))
        return pd.Series(pd.Categorical.from_codes(codes[ids], pd.Index(categories, dtype="str")))
    text = attrs.astype("str")
    lvl = level.astype("str")
    empty = text == "{}"
    tail = '"snap_level":"' + lvl + '"}'
    return ("{" + tail).where(empty, text.str.slice(0, -1) + "," + tail)


class _EventSource:
    """Caller-supplied histories, picked per chunk by (source, external_id)."""

    REQUIRED = ("source", "external_id", "seq", "from_status", "to_status", "at")

    def __init__(self, events: pd.DataFrame, catalog: Catalog):
        missing = sorted(set(self.REQUIRED) - set(events.columns))
        if missing:
            raise ConfigError(f"events lack column(s) {missing}")
        ev = events.reset_index(drop=True)
        for col in ("actor_opd", "note"):
            if col not in ev:
                ev[col] = None
        for col in ("source", "external_id", "from_status", "to_status", "actor_opd", "note"):
            ev[col] = ev[col].astype("str")  # Arrow-backed once, not per chunk
        for col in ("source", "from_status", "to_status", "actor_opd", "note"):
            ev[col] = ev[col].astype("category")  # few values: coded in the COPY encoder
        codes = {str(v) for col in ("from_status", "to_status") for v in ev[col].dropna().unique()}
        unknown = sorted(codes - set(catalog.statuses))
        unknown += sorted({str(v) for v in ev["actor_opd"].dropna().unique()} - set(catalog.opds))
        if unknown or ev["to_status"].isna().any() or ev["at"].isna().any():
            raise DataError(f"events: unknown codes {unknown} or missing to_status/at")
        ev["at"] = pd.to_datetime(ev["at"], utc=True).astype("datetime64[us, UTC]")
        self.events = ev
        self.keys = _keys(ev)

    def select(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Events of the chunk's reports."""
        hit = pc.is_in(self.keys, value_set=_keys(chunk))
        return self.events[hit.to_numpy(zero_copy_only=False)]

    def for_reports(self, chunk: pd.DataFrame, ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """Events of the chunk's reports and, per event, its report's id (``ids`` per row).

        Ordered by report (chunk order), then ``seq``: event ids follow each history.
        """
        pos = pc.index_in(self.keys, value_set=_keys(chunk)).to_numpy(zero_copy_only=False)
        hit = np.flatnonzero(~np.isnan(pos))  # null (NaN here) where the key is not in the chunk
        row = pos[hit].astype(np.int64)
        order = np.lexsort((self.events["seq"].to_numpy()[hit], row))
        events = self.events.iloc[hit[order]].reset_index(drop=True)
        return events, ids[row[order]]


def _keys(frame: pd.DataFrame) -> pa.Array:
    """``source \\x1f external_id`` per row, as an Arrow array."""
    source = pa.array(frame["source"].astype("str"), type=pa.large_string())
    ext = pa.array(frame["external_id"].astype("str"), type=pa.large_string())
    return pc.binary_join_element_wise(source, ext, pa.scalar("\x1f", pa.large_string()))


def _store_quarantine(
    conn: psycopg.Connection, table: RawTable, q: pd.DataFrame, summary: ImportSummary
) -> None:
    """COPY the quarantined rows with their reasons and raw values."""
    if len(q) == 0:
        return
    raws = table.raw(q["position"].to_numpy())
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY report_quarantine (import_id, source_file, row_number, field, reason, raw) "
            "FROM STDIN"
        ) as copy,
    ):
        for row_number, fld, reason, raw in zip(
            q["row_number"], q["field"], q["reason"], raws, strict=True
        ):
            copy.write_row(
                (
                    summary.import_id,
                    table.path,
                    int(row_number),
                    fld,
                    str(reason),
                    json.dumps(_json_ready(raw), ensure_ascii=False, allow_nan=False),
                )
            )


def _json_ready(value: Any) -> Any:
    """A raw row as plain JSON: NaN/NaT/NA to null, numpy and timestamps to Python/ISO text."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "")  # jsonb cannot hold NUL
    if isinstance(value, (int, bool)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _finish_summary(summary: ImportSummary, quarantine: pd.DataFrame) -> None:
    """Counts of the quarantine, and the invariant (else the import is rolled back)."""
    summary.quarantined = len(quarantine)
    summary.quarantine_fields = {
        str(k): int(v) for k, v in quarantine["field"].value_counts().items()
    }
    if summary.read != summary.stored + summary.updated + summary.quarantined:
        raise RuntimeError(
            f"row accounting failed: read {summary.read} != stored {summary.stored} + updated "
            f"{summary.updated} + quarantined {summary.quarantined}; nothing was stored"
        )


__all__ = [
    "Mapping",
    "load_mapping",
    "read_table",
    "frame_table",
    "prepare",
    "prepare_batches",
    "Places",
    "places_from_db",
    "import_file",
    "import_frame",
    "import_table",
    "ImportSummary",
    "ROLES",
    "RawTable",
]
