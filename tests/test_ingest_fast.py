"""The importer's vectorised parts, without a database: COPY encoding, reading, validation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from db.ingest import (
    Mapping,
    encode_events,
    encode_new_events,
    encode_reports,
    frame_table,
    prepare,
    read_table,
)
from db.ingest import encode as ingest_encode
from db.ingest import place as ingest_place
from db.ingest import text as ingest_text
from db.ingest import validate as ingest_validate

# ------------------------------------------------------------------ binary COPY


def psycopg_rows(rows: list[tuple], types: list[str]) -> bytes:
    """psycopg's own binary COPY rows (no header, no trailer) for values of these types."""
    from psycopg import adapt, pq
    from psycopg.postgres import types as builtin

    try:
        from psycopg._copy_base import BinaryFormatter
    except ImportError:  # pragma: no cover - psycopg moved its internals
        pytest.skip("psycopg's binary COPY formatter is not where this test expects it")
    transformer = adapt.Transformer()
    transformer.set_dumper_types([builtin.get(t).oid for t in types], pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    data = b"".join(bytes(formatter.write_row(row)) for row in rows) + bytes(formatter.end())
    return data[len(ingest_encode._COPY_HEADER) : -len(ingest_encode._COPY_TRAILER)]


def jsonb(text: str):  # noqa: ANN201 - psycopg Jsonb
    """jsonb sent as the given compact text."""
    from psycopg.types.json import Jsonb

    return Jsonb(json.loads(text), dumps=lambda v: json.dumps(v, separators=(",", ":")))


def category(values: list) -> pd.Series:
    return pd.Series(values, dtype="category")


def text(values: list) -> pd.Series:
    return pd.Series(values, dtype="str")


def placed_chunk(n: int = 7) -> pd.DataFrame:
    """Rows as ``_placed_chunk`` gives them: coded and plain text, NULLs, unicode."""
    rng = np.random.default_rng(1)
    times = pd.Series(pd.to_datetime(rng.integers(1.6e15, 1.7e15, n), unit="us", utc=True)).astype(
        "datetime64[us, UTC]"
    )
    some_nat = times.where(rng.random(n) < 0.6)
    chunk = {
        "lon": rng.uniform(106.7, 106.9, n),
        "lat": rng.uniform(-6.3, -6.1, n),
        "external_id": text([f"id-{i}" for i in range(n)]),
        "source": category(rng.choice(["web", "jaki"], n).tolist()),
        "category": category(rng.choice(["banjir", "sampah"], n).tolist()),
        "opd": category(["DSDA"] * n),
        "status": category(rng.choice(["menunggu", "selesai"], n).tolist()),
        "title": text(rng.choice(["Banjir", "Jalan rusak — parah", None], n).tolist()),
        "description": category(rng.choice(["ok", "ünïcödé\ttab", None], n).tolist()),
        "media_url": text(rng.choice(["https://x.id/a.jpg", None], n).tolist()),
        "created_at": times,
        "updated_at": times + pd.Timedelta(hours=1),
        "first_coordinated_at": some_nat,
        "resolved_at": some_nat.where(rng.random(n) < 0.5),
        "public": rng.random(n) < 0.5,
        "attrs": category(rng.choice(['{"snap_level":"rw"}', '{"a":1,"snap_level":"rw"}'], n)),
        "rw_code": category(rng.choice(["3171010001001", None], n).tolist()),
        "kelurahan_code": category(rng.choice(["3171010001", None], n).tolist()),
        "kecamatan_code": category(["317101"] * n),
        "kota_code": category(["3171"] * n),
        "snap_method": category(rng.choice(["inside", "nearest", "outside"], n).tolist()),
        "snap_distance_m": rng.uniform(0, 100, n),
        **{f"h3_r{r}": rng.integers(1, 2**62, n) for r in (7, 8, 9, 10, 11)},
    }
    return pd.DataFrame(chunk)


def reference_reports(chunk: pd.DataFrame, ids: np.ndarray) -> bytes:
    def ts(value):  # noqa: ANN001, ANN202
        return None if pd.isna(value) else value.to_pydatetime()

    def plain(value):  # noqa: ANN001, ANN202
        return None if pd.isna(value) else value

    rows = []
    for i, row in enumerate(chunk.itertuples(index=False)):
        geom = np.zeros(
            1, dtype=[("o", "u1"), ("t", "<u4"), ("s", "<u4"), ("x", "<f8"), ("y", "<f8")]
        )
        geom["o"], geom["t"], geom["s"], geom["x"], geom["y"] = (
            1,
            0x20000001,
            4326,
            row.lon,
            row.lat,
        )
        rows.append(
            (
                uuid.UUID(bytes=ids[i].tobytes()),
                ts(row.created_at),
                ts(row.updated_at),
                geom.tobytes(),
                float(row.snap_distance_m),
                *[int(getattr(row, f"h3_r{r}")) for r in (7, 8, 9, 10, 11)],
                bool(row.public),
                *[plain(getattr(row, c)) for c in ingest_encode._STAGE_VAR[:13]],
                ts(row.first_coordinated_at),
                ts(row.resolved_at),
                jsonb(row.attrs),
            )
        )
    types = ["uuid", "timestamptz", "timestamptz", "bytea", "float8", *["int8"] * 5, "bool"]
    types += ["text"] * 13 + ["timestamptz", "timestamptz", "jsonb"]
    return psycopg_rows(rows, types)


def test_reports_encode_as_psycopg_does():
    chunk = placed_chunk()
    ids = ingest_encode._ids(len(chunk), 5, (1_700_000_000_000, 17, 99))
    expected = reference_reports(chunk, ids)
    assert bytes(encode_reports(chunk, ids)) == expected
    # plain (str) and coded (category) text encode alike
    plain = chunk.assign(
        **{
            c: chunk[c].astype("str").where(chunk[c].notna())
            for c in ("source", "description", "attrs", "rw_code")
        }
    )
    assert bytes(encode_reports(plain, ids)) == expected
    coded = chunk.assign(
        **{c: chunk[c].astype("category") for c in ("external_id", "title", "media_url")}
    )
    assert bytes(encode_reports(coded, ids)) == expected


def test_events_encode_as_psycopg_does():
    chunk = placed_chunk(5)
    ids = ingest_encode._ids(len(chunk), 0, (1_700_000_000_000, 1, 2))
    events = ingest_encode._creation_events(chunk)
    rows = [
        (41 + i, uuid.UUID(bytes=ids[i].tobytes()), t.to_pydatetime(), None, s, None, "import")
        for i, (t, s) in enumerate(zip(chunk["created_at"], chunk["status"], strict=True))
    ]
    types = ["int8", "uuid", "timestamptz", "text", "text", "text", "text"]
    assert bytes(encode_new_events(ids, events, 41)) == psycopg_rows(rows, types)
    staged = pd.DataFrame(
        {
            "seq": np.arange(5, dtype=np.int32),
            "at": chunk["created_at"],
            "source": category(["web"] * 5),
            "external_id": text([f"e{i}" for i in range(5)]),
            "from_status": category([None, "menunggu", None, "selesai", None]),
            "to_status": chunk["status"],
            "actor_opd": text([None, "DSDA", None, None, None]),
            "note": category(["import", None, "x", None, "import"]),
        }
    )
    rows = [
        tuple(
            None if pd.isna(v) else v.to_pydatetime() if isinstance(v, pd.Timestamp) else v
            for v in row
        )
        for row in staged.itertuples(index=False)
    ]
    types = ["int4", "timestamptz", *["text"] * 6]
    assert bytes(encode_events(staged)) == psycopg_rows(rows, types)


def test_empty_chunks_encode_to_nothing():
    chunk = placed_chunk(0)
    assert bytes(encode_reports(chunk, ingest_encode._ids(0, 0, (1, 1, 1)))) == b""
    assert (
        bytes(
            encode_new_events(
                ingest_encode._ids(0, 0, (1, 1, 1)), ingest_encode._creation_events(chunk), 1
            )
        )
        == b""
    )


def test_snap_level_joins_attrs_alike_for_coded_and_plain_attrs():
    attrs = ["{}", '{"depth":12}', "{}", '{"a":"ü"}']
    level = pd.Series(pd.Categorical.from_codes([0, 1, 1, 0], ["rw", "kelurahan"]))
    expected = [
        '{"snap_level":"rw"}',
        '{"depth":12,"snap_level":"kelurahan"}',
        '{"snap_level":"kelurahan"}',
        '{"a":"ü","snap_level":"rw"}',
    ]
    assert ingest_place._with_snap_level(category(attrs), level).tolist() == expected
    assert ingest_place._with_snap_level(text(attrs), level).tolist() == expected


# ------------------------------------------------------------------ reading


def test_csv_with_line_breaks_across_blocks_reads_as_a_careful_parse(tmp_path: Path, monkeypatch):
    """Block-parallel parsing fails on a quoted line break at a block edge; the retry is exact."""
    path = tmp_path / "breaks.csv"
    with open(path, "w", newline="") as fh:
        fh.write("external_id,description,lat\n")
        for i in range(2_000):  # ~4 MB, 1 MB blocks: block edges fall in the long second lines
            fh.write(f'r{i},"line one\r\nline ""two"" {"y" * 2_000}",-6.{i}\n')
    parses = []
    read_csv = pacsv.read_csv

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        careful = kwargs["parse_options"].newlines_in_values
        try:
            table = read_csv(*args, **kwargs)
        except pa.ArrowInvalid:
            parses.append((careful, "failed"))
            raise
        parses.append((careful, "read"))
        return table

    monkeypatch.setattr(pacsv, "read_csv", spy)
    table = read_table(path)
    assert parses == [(False, "failed"), (True, "read")]
    assert len(table) == 2_000
    descriptions = table.frame["description"].tolist()
    assert all(d == f'line one\r\nline "two" {"y" * 2_000}' for d in descriptions)
    assert table.frame["external_id"].tolist()[-1] == "r1999"
    assert table.frame["lat"].tolist()[-1] == "-6.1999"


# ------------------------------------------------------------------ validation


def test_text_is_stripped_as_pandas_strips_it():
    values = [
        " a ",
        "\u00a0nbsp\u00a0",
        "\u3000wide\u3000",
        "\tt\n",
        "plain",
        "",
        "   ",
        None,
        "x\u200by",
    ]
    arr = pa.array(values, type=pa.large_string())
    expected = pd.Series(values, dtype="str").str.strip()
    expected = expected.mask(expected == "").tolist()
    got = ingest_text._stripped(arr).to_pylist()
    assert [None if v is None or v != v else v for v in expected] == got
    coded = ingest_text._Text.of(arr, coded=True)
    assert (
        ingest_text._Text(ingest_text._stripped(coded.values), coded.codes).rows().to_pylist()
        == got
    )


def test_duplicates_found_whatever_the_fingerprints_say():
    """Ids equal in length, head, middle and tail (a fingerprint collision) are still distinct."""
    # 41 characters: the fingerprint reads bytes 0-7, 16-23 and 33-40, not byte 10
    a, b = "x" * 10 + "A" + "x" * 30, "x" * 10 + "B" + "x" * 30
    ids = [a, b, a, "short", "short", None, None]
    text_ids = ingest_text._Text(pa.array(ids, type=pa.large_string()))
    repeated = ingest_validate._repeated(text_ids)
    assert repeated.tolist() == [True, True, True, True, True, True, True]  # a superset
    frame = pd.DataFrame(
        {
            "external_id": ids,
            "source": "web",
            "category": "banjir",
            "created_at": "2024-01-01T10:00:00+07:00",
            "lon": 106.8,
            "lat": -6.2,
        }
    )
    prepared = prepare(frame_table(frame, "mem"), Mapping())
    q = prepared.quarantine.set_index("row_number")["reason"].to_dict()
    assert q[3].startswith("duplicate external_id") and "first at row 1" in q[3]
    assert q[5].startswith("duplicate external_id") and "first at row 4" in q[5]
    assert q[6] == q[7] == "missing external_id"
    assert list(prepared.valid) == [0, 1, 3]


def test_prepared_text_columns_hold_the_values_coded_or_not():
    n = 300
    frame = pd.DataFrame(
        {
            "external_id": [f"id{i}" for i in range(n)],
            "source": ["web", " jaki "] * (n // 2),
            "category": ["banjir"] * n,
            "title": [f"title {i}" for i in range(n)],
            "description": ["same", None, ""] * (n // 3),
            "created_at": ["2024-01-01 10:00"] * n,
            "lon": 106.8,
            "lat": -6.2,
        }
    )
    rows = prepare(frame_table(frame, "mem"), Mapping()).rows
    assert isinstance(rows["source"].dtype, pd.CategoricalDtype)
    assert rows["source"].tolist()[:2] == ["web", "jaki"]
    assert rows["external_id"].tolist() == [f"id{i}" for i in range(n)]
    assert rows["description"].isna().tolist()[:3] == [False, True, True]  # "" is missing
    assert rows["description"].iloc[0] == "same"
    assert rows["opd"].tolist() == ["DSDA"] * n  # the category's OPD
    assert rows["status"].tolist() == ["menunggu"] * n
    assert rows["created_at"].iloc[0] == pd.Timestamp(datetime(2024, 1, 1, 3, tzinfo=UTC))
