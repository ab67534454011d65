"""Validation: role columns from a :class:`RawTable`, every check, and the quarantine list.

:func:`prepare_batches` maps and checks a table batch by batch (vectorised);
each :class:`Prepared` batch holds the role columns, the valid rows and the
first failure of every bad row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from db.ingest.mapping import ROLES, TEXT_ROLES, TIME_ROLES, Mapping
from db.ingest.read import RawTable
from db.ingest.text import (
    _as_text,
    _byte_table,
    _column_text,
    _is_in,
    _json_ready,
    _matches,
    _may_match,
    _string_buffers,
    _Text,
)
from db.ingest.times import _NAT, _parse_times, _timestamps
from db.reports import (
    CLOCK_SKEW,
    EARLIEST,
    MAX_DESCRIPTION,
    MAX_EXTERNAL_ID,
    MAX_TITLE,
    MAX_URL,
)
from petalapor.catalog import INITIAL_STATUS, Catalog, get_catalog
from petalapor.errors import ConfigError

_SOURCE_RE = r"^[a-z][a-z0-9_-]{0,31}$"
_URL_RE = r"^[hH][tT][tT][pP][sS]?://[^\s/?#]+[^\s]*$"
_CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_NUMBER_RE = r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"

_FREE_TEXT = ("external_id", "title", "description", "media_url")
_LIMITS = {
    "title": MAX_TITLE,
    "description": MAX_DESCRIPTION,
    "media_url": MAX_URL,
    "external_id": MAX_EXTERNAL_ID,
}
_TRUE = {"true", "t", "1", "yes", "y", "ya"}
_FALSE = {"false", "f", "0", "no", "n", "tidak"}


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


#: Roles whose values are few (codes, channels): always coded.
_CODED_ROLES = {"source", "category", "status", "opd"}


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


#: The bytes _CONTROL_RE matches (in UTF-8 no other byte can be one of these characters).
_CONTROL_BYTES = _byte_table((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x7F))


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
