"""Timestamp parsing: text or datetime columns to UTC microseconds (NaT: :data:`_NAT`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from db.ingest.mapping import Mapping
from db.ingest.text import _as_text, _byte_table, _matches, _may_match, _string_buffers

_OFFSET_RE = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
#: What Arrow's ISO 8601 timestamp cast may take (it still has the last word).
_ISO_RE = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)?"
    r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)?$"
)

_NAT = np.iinfo(np.int64).min

#: Bytes an offset (_OFFSET_RE) must contain.
_OFFSET_BYTES = _byte_table((ord("+"), ord("+")), (ord("-"), ord("-")), (ord("Z"), ord("Z")))
_OFFSET_BYTES[ord("z")] = True


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
