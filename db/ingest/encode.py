"""Binary COPY bodies of placed chunks and their events, report ids, creation events.

Also :class:`_EventSource`: caller-supplied histories (the demo data), picked per chunk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from db.ingest.text import _string_buffers, _text_array
from db.ingest.times import _NAT
from gis.hexes import RESOLUTIONS
from petalapor.catalog import Catalog
from petalapor.errors import ConfigError, DataError

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_NO_SEP = pa.scalar(b"", pa.large_binary())


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
