"""Text columns as Arrow arrays: the coded :class:`_Text`, stripping, byte tests, JSON values.

Shared by validation (``validate``, ``times``), the COPY encoder (``encode``)
and the quarantine (``write``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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
