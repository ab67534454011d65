"""ISPU (Indeks Standar Pencemar Udara): maths, categories and the DKI Jakarta data.

Pure code (numpy/pandas), no database.

Regulation
----------
Peraturan Menteri LHK No. P.14/MENLHK/SETJEN/KUM.1/7/2020 tentang Indeks Standar
Pencemar Udara (peraturan.bpk.go.id/Details/163466), Lampiran: the conversion
table of ISPU levels 0, 50, 100, 200, 300, 500 to concentration breakpoints
(:data:`BREAKPOINTS`, µg/m³; PM10, PM2.5 and SO2 as 24-h means, CO as 8-h,
O3 and NO2 as 1-h, HC as 3-h), the sub-index formula

    I = (Ia - Ib) / (Xa - Xb) * (Xx - Xb) + Ib

and the categories 1-50 BAIK (green), 51-100 SEDANG (blue), 101-200 TIDAK SEHAT
(yellow), 201-300 SANGAT TIDAK SEHAT (red), >=301 BERBAHAYA (black).

The regulation's PDF could not be fetched offline.  The table was cross-checked
against several independent public ISPU implementations that cite P.14/2020
(Python and TypeScript calculators, a unit checker, and a dashboard note that
quotes the Lampiran table); all agree with every value here, and no
discrepancy with the table given in the issue was found.  One dashboard gauge
uses NO2 160/400 for ISPU 50/100; it disagrees with all the others and was not
followed.  The colour *names* are the regulation's; the hex values are those
served by the KLH ISPU portal (``kategori.color``: #00cc00, #0000cc, #cccc00,
#cc0000, #000000) as transcribed in public notes.

Decisions (documented choices)
------------------------------
* **Above the top breakpoint** a sub-index is **capped at 500** (the regulation's
  scale ends there); :func:`sub_index` with ``above="nan"`` returns NaN instead,
  and :func:`beyond_scale` flags such concentrations.
* **Non-integer ISPU values** are rounded half-up to an integer *before* the
  category is chosen (the regulation states integer ranges: 50 is BAIK, 51
  SEDANG).  So 50.49 is BAIK and 50.5 is SEDANG; the category edges are at
  50.5, 100.5, 200.5 and 300.5.  0 counts as BAIK.
* The published DKI data sometimes follows the older KepMenLH 45/1997 bands
  (101-199 TIDAK SEHAT, 200-299 SANGAT TIDAK SEHAT): a value of exactly 200 is
  published as SANGAT TIDAK SEHAT.  We follow P.14/2020 and list such rows as
  disagreements with a note.

The data
--------
``ispu_dki_all.csv`` holds **sub-indices, not concentrations**, and one row per
day (the station reported that day), see ``shared/data/ispu/SOURCES.md``.
:func:`read_ispu_csv` validates every row; rows that fail go to a quarantine
table, and valid rows get ISPU, critical pollutant and category derived and
compared with the published ones.

Row numbers: ``row`` is the 1-based *data* row (the header is not counted; the
first data row is 1; blank lines are skipped and not counted); ``line`` is the
1-based line of the file where the record starts (``row + 1`` for a file without
blank lines or multi-line quoted fields).  A record with too few or too many
fields is quarantined as a whole (field ``record``), never padded or dropped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd

from layers.registry import Attribute, Layer, register
from petalapor.errors import DataError, InvalidParameterError

#: ISPU levels of the breakpoint table.
ISPU_LEVELS: tuple[float, ...] = (0.0, 50.0, 100.0, 200.0, 300.0, 500.0)

#: Concentration breakpoints (µg/m³) per pollutant, P.14/2020 Lampiran.
BREAKPOINTS: Mapping[str, tuple[float, ...]] = {
    "pm10": (0, 50, 150, 350, 420, 500),  # 24 h
    "pm25": (0, 15.5, 55.4, 150.4, 250.4, 500),  # 24 h
    "so2": (0, 52, 180, 400, 800, 1200),  # 24 h
    "co": (0, 4000, 8000, 15000, 30000, 45000),  # 8 h
    "o3": (0, 120, 235, 400, 800, 1000),  # 1 h
    "no2": (0, 80, 200, 1130, 2260, 3000),  # 1 h
    "hc": (0, 45, 100, 215, 432, 648),  # 3 h
}

#: Averaging period of each pollutant's breakpoints.
AVERAGING: Mapping[str, str] = {
    "pm10": "24h",
    "pm25": "24h",
    "so2": "24h",
    "co": "8h",
    "o3": "1h",
    "no2": "1h",
    "hc": "3h",
}

#: Sub-index columns of ``ispu_dki_all.csv``, in file order.
SUBINDEX_COLUMNS: tuple[str, ...] = ("pm25", "pm10", "so2", "co", "o3", "no2")

#: Columns every ISPU CSV must have.
CSV_COLUMNS: tuple[str, ...] = (
    "tanggal",
    "stasiun",
    *SUBINDEX_COLUMNS,
    "max",
    "critical",
    "categori",
)

#: Licence statement of the DKI ISPU data (none is stated upstream).
LICENCE_NOTE = (
    "no licence stated by the source; check the Satu Data Jakarta terms before redistributing"
)

#: The ``categori`` value of rows without data.
NO_DATA = "TIDAK ADA DATA"


class Category(NamedTuple):
    """One ISPU category: code, label, integer range and colour."""

    code: str
    label: str
    low: int
    high: int | None
    colour_name: str
    hex: str

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        """Opaque RGBA tuple of :attr:`hex`."""
        h = self.hex.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


#: The five categories of P.14/2020, low to high.
CATEGORIES: tuple[Category, ...] = (
    Category("BAIK", "Baik", 0, 50, "hijau (green)", "#00cc00"),
    Category("SEDANG", "Sedang", 51, 100, "biru (blue)", "#0000cc"),
    Category("TIDAK SEHAT", "Tidak Sehat", 101, 200, "kuning (yellow)", "#cccc00"),
    Category("SANGAT TIDAK SEHAT", "Sangat Tidak Sehat", 201, 300, "merah (red)", "#cc0000"),
    Category("BERBAHAYA", "Berbahaya", 301, None, "hitam (black)", "#000000"),
)

#: Category edges on the continuous scale (values are rounded half-up first).
CATEGORY_EDGES: tuple[float, ...] = (50.5, 100.5, 200.5, 300.5)

_CATEGORY_CODES = np.array([c.code for c in CATEGORIES], dtype=object)
_POLLUTANT_ALIASES = {
    "PM25": "pm25",
    "PM10": "pm10",
    "SO2": "so2",
    "CO": "co",
    "O3": "o3",
    "NO2": "no2",
    "HC": "hc",
}
_STATION_CODE = re.compile(r"^\s*DKI\s*0*(\d+)\b", re.IGNORECASE)


# --------------------------------------------------------------------------- maths


def sub_index(
    pollutant: str, concentration: Any, *, above: Literal["cap", "nan"] = "cap"
) -> np.ndarray:
    """ISPU sub-index of concentrations, by linear interpolation in the P.14/2020 table.

    Parameters
    ----------
    pollutant
        One of :data:`BREAKPOINTS` (``pm10``, ``pm25``, ``so2``, ``co``, ``o3``,
        ``no2``, ``hc``); case-insensitive, ``PM2.5`` accepted.
    concentration
        Scalar or array of concentrations in µg/m³ over the pollutant's
        averaging period (:data:`AVERAGING`).  NaN gives NaN.
    above
        What a concentration above the top breakpoint gives: ``"cap"`` (500,
        the default) or ``"nan"``.

    Returns
    -------
    numpy.ndarray
        Float sub-indices, same shape as ``concentration`` (not rounded).

    Raises
    ------
    InvalidParameterError
        Unknown pollutant, negative concentration, or bad ``above``.

    Examples
    --------
    >>> float(sub_index("pm25", 55.4))
    100.0
    >>> sub_index("pm10", [0, 100, 600]).tolist()
    [0.0, 75.0, 500.0]

    See Also
    --------
    ispu, categorise
    """
    key = pollutant_key(pollutant)
    if above not in ("cap", "nan"):
        raise InvalidParameterError(f"above must be 'cap' or 'nan', got {above!r}")
    x = np.asarray(concentration, dtype=float)
    if np.any(x < 0):
        raise InvalidParameterError(
            f"{key}: concentrations must be >= 0, got {x[x < 0].ravel()[:5].tolist()}"
        )
    bp = np.asarray(BREAKPOINTS[key], dtype=float)
    out = np.interp(x, bp, ISPU_LEVELS)  # exactly (Ia-Ib)/(Xa-Xb)*(Xx-Xb)+Ib per segment
    out = np.where(np.isnan(x), np.nan, out)
    if above == "nan":
        out = np.where(x > bp[-1], np.nan, out)
    return out


def beyond_scale(pollutant: str, concentration: Any) -> np.ndarray:
    """True where a concentration lies above the pollutant's top breakpoint (ISPU > 500)."""
    x = np.asarray(concentration, dtype=float)
    return x > BREAKPOINTS[pollutant_key(pollutant)][-1]


def pollutant_key(name: str) -> str:
    """Canonical pollutant key (``"PM2.5"`` -> ``"pm25"``); raises on unknown names."""
    key = _POLLUTANT_ALIASES.get(re.sub(r"[\s._,]", "", str(name)).upper())
    if key is None:
        raise InvalidParameterError(f"unknown pollutant {name!r}; known: {sorted(BREAKPOINTS)}")
    return key


def round_ispu(values: Any) -> np.ndarray:
    """Round ISPU values half-up to integers (NaN stays NaN), as the categories assume."""
    v = np.asarray(values, dtype=float)
    return np.floor(v + 0.5)


def category_index(values: Any) -> np.ndarray:
    """Index into :data:`CATEGORIES` (0 BAIK .. 4 BERBAHAYA) per ISPU value; -1 for NaN."""
    v = np.asarray(values, dtype=float)
    idx = np.searchsorted(np.asarray(CATEGORY_EDGES) - 0.5, round_ispu(v), side="left")
    return np.where(np.isnan(v), -1, idx)


def categorise(values: Any) -> np.ndarray:
    """Category code (``"BAIK"`` ... ``"BERBAHAYA"``) per ISPU value; None for NaN.

    Values are rounded half-up first, so 50 and 50.4 are BAIK, 50.5 and 51 SEDANG.

    Examples
    --------
    >>> categorise([0, 50, 51, 200, 201, 301]).tolist()
    ['BAIK', 'BAIK', 'SEDANG', 'TIDAK SEHAT', 'SANGAT TIDAK SEHAT', 'BERBAHAYA']
    """
    idx = category_index(values)
    out = _CATEGORY_CODES[np.clip(idx, 0, len(CATEGORIES) - 1)]
    return np.where(idx < 0, None, out)


def ispu(sub_indices: pd.DataFrame) -> pd.DataFrame:
    """ISPU (max sub-index), critical pollutant(s) and category per row.

    Parameters
    ----------
    sub_indices
        One column per pollutant (any of :data:`BREAKPOINTS`), NaN where missing.

    Returns
    -------
    pandas.DataFrame
        Columns ``ispu`` (float, NaN when the row has no value), ``critical``
        (the first pollutant at the maximum, in column order), ``critical_all``
        (every pollutant at the maximum joined by ``"+"``, ties included),
        ``n_critical`` and ``category``; same index as the input.
    """
    cols = [pollutant_key(c) for c in sub_indices.columns]
    values = sub_indices.to_numpy(dtype=float)
    has = ~np.isnan(values).all(axis=1)
    top = np.where(has, np.nanmax(np.where(np.isnan(values), -np.inf, values), axis=1), np.nan)
    at_max = (values == top[:, None]) & has[:, None]
    names = np.array(cols, dtype=object)
    critical_all = ["+".join(names[row]) if row.any() else None for row in at_max]
    first = np.where(has, names[np.argmax(at_max, axis=1)], None)
    return pd.DataFrame(
        {
            "ispu": top,
            "critical": first,
            "critical_all": critical_all,
            "n_critical": at_max.sum(axis=1),
            "category": categorise(top),
        },
        index=sub_indices.index,
    )


# --------------------------------------------------------------------------- stations


def default_data_dir() -> Path:
    """``<shared data>/ispu`` from :class:`petalapor.settings.PathSettings`."""
    from petalapor.settings import PathSettings

    return PathSettings().shared_data / "ispu"


def load_stations(path: str | Path | None = None) -> gpd.GeoDataFrame:
    """Read the SPKU station list (``stations.csv``) as points.

    Parameters
    ----------
    path
        CSV with ``station_id, name, lon, lat, location_method[, kelurahan_id]``.
        Defaults to ``<shared data>/ispu/stations.csv``.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per station (EPSG:4326), ``location_method`` kept so users
        know how accurate each position is.

    Raises
    ------
    DataError
        Missing file or column, a bad coordinate or a duplicate station id
        (file, row and field are named).
    """
    path = Path(path) if path is not None else default_data_dir() / "stations.csv"
    table = read_csv_records(path, sep=",")
    if len(table.malformed):
        bad = table.malformed.iloc[0]
        raise DataError(f"{path}: row {bad['row']}: {bad['reason']}")
    frame = table.frame
    frame.columns = [c.lower() for c in frame.columns]
    missing = [
        c for c in ("station_id", "name", "lon", "lat", "location_method") if c not in frame.columns
    ]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    frame["station_id"] = frame["station_id"].str.strip().str.upper()
    for col, lo, hi in (("lon", -180.0, 180.0), ("lat", -90.0, 90.0)):
        num = pd.to_numeric(frame[col], errors="coerce")
        bad = num.isna() | (num < lo) | (num > hi)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise DataError(
                f"{path}: row {row}, field {col}: "
                f"{frame[col].iloc[row - 1]!r} is not a valid coordinate"
            )
        frame[col] = num
    dup = frame["station_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0]) + 1
        raise DataError(
            f"{path}: row {row}, field station_id: duplicate {frame['station_id'].iloc[row - 1]!r}"
        )
    geometry = gpd.points_from_xy(frame["lon"], frame["lat"], crs="EPSG:4326")
    return gpd.GeoDataFrame(frame.replace({"": None}), geometry=geometry, crs="EPSG:4326")


def station_code(label: Any) -> str | None:
    """``"DKI1 (Bunderan HI)"`` -> ``"DKI1"``; None when the label has no DKIn code."""
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return None
    m = _STATION_CODE.match(str(label))
    return f"DKI{int(m.group(1))}" if m else None


# --------------------------------------------------------------------------- reading


@dataclass
class IspuImport:
    """Result of :func:`read_ispu_csv`.

    Attributes
    ----------
    readings
        Valid rows: ``row, line, date, station_id, station`` and the six
        sub-indices, the derived ``ispu, critical, critical_all, n_critical,
        category`` and the published ``published_max, published_critical,
        published_category``.
    quarantine
        One entry per problem: ``file, row, line, field, value, reason``.  A
        row with two problems has two entries; no row is dropped silently.
    disagreements
        One entry per valid row and field (``max``, ``critical``,
        ``category``) where derived and published values differ:
        ``row, line, date, station, field, published, derived, note``.
    summary
        Counts (see :meth:`render`).
    """

    path: Path
    readings: pd.DataFrame
    quarantine: pd.DataFrame
    disagreements: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def category_agreement(self) -> float:
        """Share of valid rows whose derived category equals the published one."""
        n = self.summary.get("valid", 0)
        return self.summary.get("agree_category", 0) / n if n else float("nan")

    def render(self) -> str:
        """Text report: counts, every quarantine entry and every disagreement."""
        s = self.summary
        lines = [
            f"ISPU import report: {self.path}",
            f"  format: separator {s['separator']!r}, dates {s['date_format']}",
            f"  rows read {s['read']}: valid {s['valid']}, quarantined {s['quarantined']} "
            f"({s['quarantine_entries']} problems)",
        ]
        for key in ("category", "max", "critical"):
            n = s[f"agree_{key}"]
            share = n / s["valid"] if s["valid"] else float("nan")
            lines.append(f"  published {key} agrees with derived: {n}/{s['valid']} ({share:.2%})")
        lines.append(
            "  row: 1-based data row (header and blank lines not counted); line: file line"
        )
        lines.append(f"Quarantine ({len(self.quarantine)}):")
        for q in self.quarantine.itertuples(index=False):
            lines.append(f"  row {q.row} [{q.field}] {q.reason}: {q.value!r}")
        lines.append(f"Disagreements ({len(self.disagreements)}):")
        for d in self.disagreements.itertuples(index=False):
            note = f"  ({d.note})" if d.note else ""
            lines.append(
                f"  row {d.row} {d.date} {d.station} {d.field}: published {d.published!r}, "
                f"derived {d.derived!r}{note}"
            )
        return "\n".join(lines)


def read_ispu_csv(
    path: str | Path | None = None, *, stations: Iterable[str] | None = None
) -> IspuImport:
    """Read and check an ISPU file in the ``ispu_dki_all.csv`` shape.

    Both shapes are detected from the header: ``,`` with ISO dates (the
    yumairai copy) and ``;`` with dd/mm/yyyy dates (the EraNusa copy).

    Parameters
    ----------
    path
        The CSV; defaults to ``<shared data>/ispu/ispu_dki_all.csv``.
    stations
        Known station codes (``DKI1`` ...); default: those of
        :func:`load_stations`.  Labels are matched on their DKIn code only.

    Returns
    -------
    IspuImport
        Valid readings, the quarantine, every published-vs-derived
        disagreement and summary counts.

    Raises
    ------
    DataError
        The file is missing, or lacks a required column.

    Examples
    --------
    >>> result = read_ispu_csv()                       # doctest: +SKIP
    >>> print(result.render())                         # doctest: +SKIP

    See Also
    --------
    sub_index, categorise, layers.surface.write_surface
    """
    path = Path(path) if path is not None else default_data_dir() / "ispu_dki_all.csv"
    table = read_csv_records(path)
    raw = table.frame.set_axis([c.lower() for c in table.frame.columns], axis=1)
    date_format = _date_format(raw)
    missing = [c for c in CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(raw.columns)}")
    known = (
        {c.strip().upper() for c in stations}
        if stations is not None
        else set(load_stations()["station_id"])
    )
    parsed, problems = _parse_rows(raw, table.rows, date_format, known)
    problems = pd.concat(
        [problems, _duplicates(parsed, problems), table.malformed[list(problems.columns)]],
        ignore_index=True,
    )
    line_of = dict(zip(table.rows, table.lines, strict=True))
    line_of.update(zip(table.malformed["row"], table.malformed["line"], strict=True))
    parsed.insert(1, "line", parsed["row"].map(line_of))
    quarantine = _quarantine_frame(problems, path, line_of)
    bad_rows = set(problems["row"])
    valid = parsed[~parsed["row"].isin(bad_rows)].reset_index(drop=True)
    readings = _derive(valid)
    disagreements = _compare(readings)
    summary = _summarise(table, readings, quarantine, disagreements, date_format)
    return IspuImport(path, readings, quarantine, disagreements, summary)


class CsvRecords(NamedTuple):
    """A CSV read record by record (see :func:`read_csv_records`)."""

    frame: pd.DataFrame
    rows: np.ndarray
    lines: np.ndarray
    malformed: pd.DataFrame
    sep: str


def read_csv_records(path: str | Path, sep: str | None = None) -> CsvRecords:
    """Read a CSV as text, record by record, keeping row and line numbers.

    Every cell stays text (stripped, ``""`` when empty), so nothing is coerced
    silently.  Records with a different number of fields than the header are
    returned in ``malformed`` (``row, line, field="record", value, reason``)
    instead of being padded, truncated or failing the whole file.

    Parameters
    ----------
    path
        The file (UTF-8, a BOM is ignored).
    sep
        ``","`` or ``";"``; default: whichever the header line holds more of.

    Returns
    -------
    CsvRecords
        ``frame`` (well-formed records, header names stripped), ``rows`` (1-based
        data-record numbers, blank lines not counted), ``lines`` (1-based file
        line where each record starts), ``malformed`` and the separator.

    Raises
    ------
    DataError
        Missing or undecodable file, or no header.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header_line = fh.readline()
            sep = sep or (";" if header_line.count(";") > header_line.count(",") else ",")
            header = [h.strip() for h in next(csv.reader([header_line], delimiter=sep), [])]
            if not any(header):
                raise DataError(f"{path}: no header line")
            good, bad = _split_records(csv.reader(fh, delimiter=sep), len(header))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc})") from exc
    rows = np.array([g[0] for g in good], dtype=int)
    lines = np.array([g[1] for g in good], dtype=int)
    values = [[v.strip() for v in g[2]] for g in good]
    frame = (
        pd.DataFrame(values, columns=header, dtype=str)
        if values
        else pd.DataFrame(columns=header, dtype=str)
    )
    malformed = pd.DataFrame(bad, columns=["row", "line", "field", "value", "reason"]).astype(
        {"row": int, "line": int}
    )
    return CsvRecords(frame, rows, lines, malformed, sep)


def _split_records(
    reader: Any, width: int
) -> tuple[list[tuple[int, int, list[str]]], list[tuple[int, int, str, str, str]]]:
    """Well-formed ``(row, line, values)`` and malformed quarantine tuples."""
    good, bad = [], []
    row = 0
    line = 1 + 1  # the header was line 1
    for values in reader:
        start, line = line, reader.line_num + 2
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        row += 1
        if len(values) == width:
            good.append((row, start, values))
        else:
            reason = f"expected {width} fields, got {len(values)}"
            bad.append((row, start, "record", ",".join(values)[:200], reason))
    return good, bad


def _date_format(raw: pd.DataFrame) -> str:
    """``%d/%m/%Y`` when the first date looks like dd/mm/yyyy, else ISO."""
    first = raw["tanggal"].iloc[0] if "tanggal" in raw and len(raw) else ""
    return "%d/%m/%Y" if re.match(r"^\d{1,2}/\d{1,2}/\d{4}$", first) else "%Y-%m-%d"


def _parse_rows(
    raw: pd.DataFrame, rows: np.ndarray, date_format: str, known: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed columns plus one problem record per bad field."""
    problems: list[pd.DataFrame] = []

    def flag(mask: Any, fld: str, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            value = raw[fld].to_numpy()[mask] if fld in raw.columns else ""
            problems.append(
                pd.DataFrame({"row": rows[mask], "field": fld, "value": value, "reason": reason})
            )

    date = pd.to_datetime(raw["tanggal"], format=date_format, errors="coerce")
    flag(date.isna(), "tanggal", f"not a date in the format {date_format}")
    codes = raw["stasiun"].map(station_code)
    flag(raw["stasiun"] == "", "stasiun", "missing station")
    flag((raw["stasiun"] != "") & codes.isna(), "stasiun", "no DKIn station code in the label")
    flag(codes.notna() & ~codes.isin(known), "stasiun", f"unknown station (known: {sorted(known)})")
    out = pd.DataFrame(
        {
            "row": rows,
            "date": date,
            "station_id": codes,
            "station": raw["stasiun"],
        }
    )
    for col in (*SUBINDEX_COLUMNS, "max"):
        out[col] = _numeric(raw[col], col, flag)
    empty = out[list(SUBINDEX_COLUMNS)].isna().all(axis=1) & (
        raw[list(SUBINDEX_COLUMNS)] == ""
    ).all(axis=1)
    flag(empty, "pm25..no2", "no sub-index value in the row")
    category = raw["categori"].str.upper()
    flag(category == NO_DATA, "categori", f"published as {NO_DATA!r} (no data)")
    known_cats = {c.code for c in CATEGORIES} | {NO_DATA, ""}
    flag(~category.isin(known_cats), "categori", "unknown category")
    critical = raw["critical"].map(_published_pollutant)
    flag((raw["critical"] != "") & critical.isna(), "critical", "unknown pollutant name")
    out["published_max"] = out.pop("max")
    out["published_critical"] = critical
    out["published_category"] = category.replace("", None)
    problems_frame = pd.concat(problems, ignore_index=True) if problems else _empty_problems()
    return out, problems_frame


def _numeric(column: pd.Series, name: str, flag: Any) -> pd.Series:
    """Parse a sub-index column: '' is missing; text, negatives and > 500 are flagged."""
    text = column.str.replace(",", ".", regex=False)
    num = pd.to_numeric(text, errors="coerce")
    flag((column != "") & num.isna(), name, "not a number")
    flag(np.isinf(num.to_numpy(dtype=float)), name, "not finite")
    flag(num < 0, name, "negative sub-index")
    flag(num > ISPU_LEVELS[-1], name, "sub-index above the ISPU scale (500)")
    return num.astype(float)


def _published_pollutant(label: str) -> str | None:
    """Canonical key of a published ``critical`` label; None if empty or unknown."""
    if not label:
        return None
    return _POLLUTANT_ALIASES.get(re.sub(r"[\s._,]", "", label).upper())


def _duplicates(parsed: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """Second and later rows of a (date, station) pair already seen."""
    ok = parsed[~parsed["row"].isin(set(problems["row"]))]
    dup = ok.duplicated(["date", "station_id"], keep="first")
    if not dup.any():
        return _empty_problems()
    first = ok.groupby(["date", "station_id"])["row"].transform("min")
    d = ok[dup]
    return pd.DataFrame(
        {
            "row": d["row"].to_numpy(),
            "field": "tanggal+stasiun",
            "value": (d["date"].dt.strftime("%Y-%m-%d") + " " + d["station_id"]).to_numpy(),
            "reason": [f"duplicate (date, station), first at row {r}" for r in first[dup]],
        }
    )


def _empty_problems() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": pd.Series(dtype=int),
            "field": pd.Series(dtype=str),
            "value": pd.Series(dtype=str),
            "reason": pd.Series(dtype=str),
        }
    )


def _quarantine_frame(
    problems: pd.DataFrame, path: Path, line_of: Mapping[int, int]
) -> pd.DataFrame:
    """Problems sorted by row, with the file and line added."""
    q = problems.sort_values(["row", "field"], kind="stable").reset_index(drop=True)
    q.insert(0, "file", str(path))
    q.insert(2, "line", q["row"].map(line_of).astype(int))
    q["value"] = q["value"].astype(str)
    return q[["file", "row", "line", "field", "value", "reason"]]


def _derive(valid: pd.DataFrame) -> pd.DataFrame:
    """Add ISPU, critical pollutant and category from the sub-indices."""
    derived = ispu(valid[list(SUBINDEX_COLUMNS)])
    # When the published critical pollutant is among tied maxima, report that one.
    published_in_ties = [
        isinstance(p, str) and isinstance(c, str) and p in c.split("+")
        for p, c in zip(valid["published_critical"], derived["critical_all"], strict=True)
    ]
    derived["critical"] = np.where(
        published_in_ties, valid["published_critical"], derived["critical"]
    )
    return pd.concat(
        [valid.drop(columns=[c for c in derived.columns if c in valid]), derived], axis=1
    )


def _compare(readings: pd.DataFrame) -> pd.DataFrame:
    """One record per row and field where derived and published values differ."""
    r = readings
    max_bad = ~np.isclose(r["published_max"].to_numpy(dtype=float), r["ispu"].to_numpy(dtype=float))
    crit_bad = np.array(
        [
            not (isinstance(p, str) and isinstance(c, str) and p in c.split("+"))
            for p, c in zip(r["published_critical"], r["critical_all"], strict=True)
        ]
    )
    cat_bad = (r["published_category"].fillna("") != r["category"].fillna("")).to_numpy()
    rows = list(r.itertuples(index=False))
    parts = []
    for fld, bad, pub, der in (
        ("max", max_bad, r["published_max"], r["ispu"]),
        ("critical", crit_bad, r["published_critical"].str.upper(), r["critical_all"].str.upper()),
        ("category", cat_bad, r["published_category"], r["category"]),
    ):
        parts.append(
            pd.DataFrame(
                {
                    "row": r["row"][bad],
                    "line": r["line"][bad],
                    "date": r["date"][bad].dt.strftime("%Y-%m-%d"),
                    "station": r["station_id"][bad],
                    "field": fld,
                    "published": pub[bad].astype(object),
                    "derived": der[bad].astype(object),
                    "note": [_note(row, fld) for row, b in zip(rows, bad, strict=True) if b],
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    order = {"max": 0, "critical": 1, "category": 2}
    return out.sort_values(
        ["row", "field"], key=lambda s: s.map(order) if s.name == "field" else s, kind="stable"
    ).reset_index(drop=True)


def _note(row: Any, fld: str) -> str:
    """A short likely explanation of a disagreement, when one is recognisable."""
    pub = row.published_critical
    max_agrees = bool(np.isclose(row.published_max, row.ispu))
    if pub in SUBINDEX_COLUMNS and np.isnan(getattr(row, pub)):
        return f"published critical {pub.upper()} has no sub-index in the row"
    if (
        fld == "category"
        and row.ispu in (200.0, 300.0)
        and row.published_category in ("SANGAT TIDAK SEHAT", "BERBAHAYA")
    ):
        return "published category follows the KepMenLH 45/1997 bands (200-299, >=300)"
    if fld == "critical" and max_agrees:
        return "published max equals the derived max; only the pollutant label differs"
    if fld == "category" and max_agrees:
        return f"published category does not match the published max {row.published_max:g}"
    return ""


def _summarise(
    table: CsvRecords,
    readings: pd.DataFrame,
    quarantine: pd.DataFrame,
    disagreements: pd.DataFrame,
    date_format: str,
) -> dict[str, Any]:
    """Counts for the report and for tests."""
    counts = disagreements["field"].value_counts()
    valid = len(readings)
    return {
        "read": len(table.frame) + len(table.malformed),
        "valid": valid,
        "quarantined": int(quarantine["row"].nunique()),
        "quarantine_entries": len(quarantine),
        "disagreements": len(disagreements),
        **{f"agree_{k}": valid - int(counts.get(k, 0)) for k in ("max", "critical", "category")},
        "separator": table.sep,
        "date_format": date_format,
    }


# --------------------------------------------------------------------------- layer


def load_station_layer() -> gpd.GeoDataFrame:
    """The ``ispu_stations`` layer's rows: the station list without lon/lat columns."""
    stations = load_stations()
    return stations[["station_id", "name", "location_method", "kelurahan_id", "geometry"]]


register(
    Layer(
        name="ispu_stations",
        title="ISPU monitoring stations (SPKU DKI1-DKI5)",
        attribution=(
            "Stations: Dinas Lingkungan Hidup DKI Jakarta; positions APPROXIMATE (1-2 km): "
            "landmark or kelurahan centroid, see location_method"
        ),
        licence=LICENCE_NOTE,
        geometry_type="Point",
        table="layer_ispu_stations",
        id_column="station_id",
        load=load_station_layer,
        minzoom=8,
        maxzoom=18,
        attributes={
            "station_id": Attribute("text", "Station code, DKI1 ... DKI5"),
            "name": Attribute("text", "Station name"),
            "location_method": Attribute("text", "How the position was obtained (accuracy)"),
            "kelurahan_id": Attribute(
                "text", "Kelurahan code of the station, when placed by centroid"
            ),
        },
        description="The five SPKU stations whose daily ISPU is in ispu_dki_all.csv.",
    ),
    replace=True,
)
