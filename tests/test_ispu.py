"""ISPU maths (P.14/2020 table, categories) and the DKI CSV importer on the real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layers.ispu import (
    BREAKPOINTS,
    CATEGORIES,
    ISPU_LEVELS,
    beyond_scale,
    categorise,
    category_index,
    ispu,
    load_stations,
    pollutant_key,
    read_ispu_csv,
    station_code,
    sub_index,
)
from petalapor.errors import DataError, InvalidParameterError

HEADER = "tanggal,stasiun,pm25,pm10,so2,co,o3,no2,max,critical,categori"
STATIONS = ["DKI1", "DKI2", "DKI3", "DKI4", "DKI5"]


# --------------------------------------------------------------------------- the table


def test_table_is_the_regulation():
    assert ISPU_LEVELS == (0, 50, 100, 200, 300, 500)
    assert BREAKPOINTS["pm10"] == (0, 50, 150, 350, 420, 500)
    assert BREAKPOINTS["pm25"] == (0, 15.5, 55.4, 150.4, 250.4, 500)
    assert BREAKPOINTS["so2"] == (0, 52, 180, 400, 800, 1200)
    assert BREAKPOINTS["co"] == (0, 4000, 8000, 15000, 30000, 45000)
    assert BREAKPOINTS["o3"] == (0, 120, 235, 400, 800, 1000)
    assert BREAKPOINTS["no2"] == (0, 80, 200, 1130, 2260, 3000)
    assert BREAKPOINTS["hc"] == (0, 45, 100, 215, 432, 648)


@pytest.mark.parametrize("pollutant", sorted(BREAKPOINTS))
def test_sub_index_reproduces_every_breakpoint(pollutant):
    got = sub_index(pollutant, np.array(BREAKPOINTS[pollutant]))
    np.testing.assert_allclose(got, ISPU_LEVELS, rtol=0, atol=1e-9)


@pytest.mark.parametrize("pollutant", sorted(BREAKPOINTS))
def test_sub_index_between_breakpoints_is_the_formula(pollutant):
    bp = np.array(BREAKPOINTS[pollutant], dtype=float)
    levels = np.array(ISPU_LEVELS)
    xb, xa, ib, ia = bp[:-1], bp[1:], levels[:-1], levels[1:]
    for frac in (0.1, 0.25, 0.5, 0.9):
        xx = xb + frac * (xa - xb)
        expected = (ia - ib) / (xa - xb) * (xx - xb) + ib
        np.testing.assert_allclose(sub_index(pollutant, xx), expected, rtol=1e-12)
    # midpoints in one call, as a 2-D array: shape is kept
    mid = np.vstack([(xb + xa) / 2, (xb + xa) / 2])
    np.testing.assert_allclose(sub_index(pollutant, mid), np.vstack([(ib + ia) / 2] * 2))


def test_sub_index_known_values_and_edge_cases():
    assert float(sub_index("PM2.5", 35.0)) == pytest.approx(50 / 39.9 * 19.5 + 50)
    assert float(sub_index("pm10", 100)) == 75.0
    assert np.isnan(sub_index("o3", np.nan))
    assert sub_index("co", [50000, 45000]).tolist() == [500.0, 500.0]  # capped
    assert np.isnan(sub_index("co", 50000, above="nan"))
    assert beyond_scale("co", [45000, 45001]).tolist() == [False, True]
    with pytest.raises(InvalidParameterError, match="must be >= 0"):
        sub_index("no2", [-1, 10])
    with pytest.raises(InvalidParameterError, match="unknown pollutant"):
        sub_index("pm1", 10)
    assert pollutant_key("PM 2,5") == "pm25"


def test_category_boundaries_integer_and_rounding_convention():
    values = [0, 1, 50, 50.4, 50.5, 51, 100, 100.5, 101, 200, 200.49, 201, 300, 301, 500, np.nan]
    assert categorise(values).tolist() == [
        "BAIK",
        "BAIK",
        "BAIK",
        "BAIK",
        "SEDANG",
        "SEDANG",
        "SEDANG",
        "TIDAK SEHAT",
        "TIDAK SEHAT",
        "TIDAK SEHAT",
        "TIDAK SEHAT",
        "SANGAT TIDAK SEHAT",
        "SANGAT TIDAK SEHAT",
        "BERBAHAYA",
        "BERBAHAYA",
        None,
    ]
    assert category_index([25, np.nan]).tolist() == [0, -1]


def test_category_colours_are_green_blue_yellow_red_black():
    names = [c.colour_name.split()[0] for c in CATEGORIES]
    assert names == ["hijau", "biru", "kuning", "merah", "hitam"]
    r, g, b = zip(*[c.rgba[:3] for c in CATEGORIES], strict=True)
    assert (
        g[0] > r[0]
        and b[1] > r[1]
        and r[2] == g[2] > b[2]
        and r[3] > g[3]
        and max(CATEGORIES[4].rgba[:3]) == 0
    )


def test_ispu_max_and_ties():
    frame = pd.DataFrame(
        {"pm10": [40, 60, np.nan], "o3": [40, 80, np.nan], "co": [10, np.nan, np.nan]}
    )
    out = ispu(frame)
    assert out["ispu"].tolist()[:2] == [40, 80] and np.isnan(out["ispu"].iloc[2])
    assert out["critical_all"].tolist()[:2] == ["pm10+o3", "o3"] and pd.isna(
        out["critical_all"].iloc[2]
    )
    assert out["n_critical"].tolist() == [2, 1, 0]
    assert out["category"].tolist()[:2] == ["BAIK", "SEDANG"] and pd.isna(out["category"].iloc[2])


def test_station_code():
    assert station_code("DKI1 (Bunderan HI)") == "DKI1"
    assert station_code("dki 05 (Kebon Jeruk)") == "DKI5"
    assert station_code("Kebon Jeruk") is None
    assert station_code(None) is None


# --------------------------------------------------------------------------- the real file


@pytest.fixture(scope="module")
def real(shared_data):
    return read_ispu_csv(shared_data / "ispu" / "ispu_dki_all.csv")


def test_real_file_category_agreement_at_least_99_percent(real):
    assert real.summary["read"] == 5538
    assert real.category_agreement >= 0.99
    cat = real.disagreements[real.disagreements["field"] == "category"]
    assert len(cat) == real.summary["valid"] - real.summary["agree_category"]


def test_real_file_nothing_is_lost(real):
    s = real.summary
    assert s["read"] == s["valid"] + s["quarantined"]
    assert len(real.readings) == s["valid"]
    # the four "TIDAK ADA DATA" rows and the row without a station (2022-05-31)
    no_data = real.quarantine[real.quarantine["field"] == "categori"]
    assert len(no_data) == 4 and set(no_data["value"]) == {"TIDAK ADA DATA"}
    missing_station = real.quarantine[real.quarantine["field"] == "stasiun"]
    assert missing_station["row"].tolist() == [4534]
    assert (real.quarantine["line"] == real.quarantine["row"] + 1).all()
    raw = pd.read_csv(real.path, dtype=str, keep_default_na=False)
    assert raw.iloc[4534 - 1]["tanggal"] == "2022-05-31"


def test_real_file_every_disagreement_is_listed_and_rendered(real):
    d = real.disagreements
    r = real.readings
    derived_max = r.set_index("row")["ispu"]
    published_max = r.set_index("row")["published_max"]
    mismatch_rows = set(derived_max.index[~np.isclose(derived_max, published_max)])
    assert set(d.loc[d["field"] == "max", "row"]) == mismatch_rows
    text = real.render()
    for rec in d.itertuples(index=False):
        assert f"row {rec.row} {rec.date} {rec.station} {rec.field}:" in text
    # known examples: ISPU 200 published as SANGAT TIDAK SEHAT (1997 bands)
    row = d[(d["date"] == "2012-04-22") & (d["field"] == "category")].iloc[0]
    assert (row["published"], row["derived"]) == ("SANGAT TIDAK SEHAT", "TIDAK SEHAT")
    assert "1997" in row["note"]


def test_real_file_ties_do_not_count(real):
    r = real.readings
    tied = r[(r["n_critical"] > 1) & r["published_critical"].notna()]
    ok = [
        p in c.split("+")
        for p, c in zip(tied["published_critical"], tied["critical_all"], strict=True)
    ]
    tied_ok_rows = set(tied.loc[ok, "row"])
    assert tied_ok_rows, "the real file has ties with the published pollutant among them"
    crit = real.disagreements[real.disagreements["field"] == "critical"]
    assert not tied_ok_rows & set(crit["row"])


def test_eranusa_shape_is_detected(real, tmp_path):
    raw = pd.read_csv(real.path, dtype=str, keep_default_na=False)
    iso = pd.to_datetime(raw["tanggal"], format="%Y-%m-%d", errors="coerce")
    raw["tanggal"] = iso.dt.strftime("%d/%m/%Y").fillna(raw["tanggal"])
    path = tmp_path / "ispu_eranusa.csv"
    raw.to_csv(path, sep=";", index=False)
    other = read_ispu_csv(path)
    assert other.summary["separator"] == ";" and other.summary["date_format"] == "%d/%m/%Y"
    for key in ("read", "valid", "quarantined", "agree_category", "agree_max", "agree_critical"):
        assert other.summary[key] == real.summary[key], key
    pd.testing.assert_frame_equal(other.readings, real.readings)


# --------------------------------------------------------------------------- bad rows


def _write(tmp_path: Path, rows: list[str], sep: str = ",") -> Path:
    path = tmp_path / "ispu.csv"
    path.write_text("\n".join([HEADER.replace(",", sep), *rows]) + "\n")
    return path


def test_bad_rows_are_quarantined_with_row_field_and_reason(tmp_path):
    path = _write(
        tmp_path,
        [
            "2024-01-01,DKI1 (Bunderan HI),60,40,10,5,30,20,60,PM25,SEDANG",  # 1 ok
            "2024-13-01,DKI2 (Kelapa Gading),60,40,10,5,30,20,60,PM25,SEDANG",  # 2 bad date
            "2024-01-03,DKI9 (Nowhere),60,40,10,5,30,20,60,PM25,SEDANG",  # 3 unknown station
            "2024-01-04,DKI3 (Jagakarsa),-5,40,10,5,30,20,40,PM10,BAIK",  # 4 negative
            "2024-01-05,DKI4 (Lubang Buaya),abc,40,10,5,30,20,40,PM10,BAIK",  # 5 not a number
            "2024-01-06,DKI5 (Kebon Jeruk),,,,,,,0,,TIDAK ADA DATA",  # 6 no data
            "2024-01-01,DKI1 (Bunderan HI),61,40,10,5,30,20,61,PM25,SEDANG",  # 7 duplicate of 1
            "2024-01-08,,60,40,10,5,30,20,60,PM25,SEDANG",  # 8 missing station
            "2024-01-09,DKI1 (Bunderan HI),40,40,10,5,30,20,40,PM10,BAIK",  # 9 tie
            "2024-01-10,DKI1 (Bunderan HI),40,40,10,5,30,20,40,O3,BAIK",  # 10 published not a max
            "2024-01-11,DKI1 (Bunderan HI),,201,10,5,30,20,200,PM10,TIDAK SEHAT",  # 11 disagrees
        ],
    )
    result = read_ispu_csv(path, stations=STATIONS)
    q = result.quarantine
    by_row = {r: set(g["field"]) for r, g in q.groupby("row")}
    assert by_row == {
        2: {"tanggal"},
        3: {"stasiun"},
        4: {"pm25"},
        5: {"pm25"},
        6: {"categori", "pm25..no2"},
        7: {"tanggal+stasiun"},
        8: {"stasiun"},
    }
    reasons = dict(zip(q["row"], q["reason"], strict=False))
    assert (
        "unknown station" in reasons[3]
        and "negative" in reasons[4]
        and "not a number" in reasons[5]
    )
    assert "first at row 1" in reasons[7]
    assert set(q["file"]) == {str(path)}
    s = result.summary
    assert (s["read"], s["valid"], s["quarantined"]) == (11, 4, 7)
    d = result.disagreements
    assert set(zip(d["row"], d["field"], strict=True)) == {
        (10, "critical"),
        (11, "max"),
        (11, "category"),
    }
    assert result.readings.set_index("row").loc[9, "critical"] == "pm10"
    assert (
        "row 11 2024-01-11 DKI1 category: published 'TIDAK SEHAT', derived 'SANGAT"
        in result.render()
    )


def test_malformed_records_and_blank_lines_keep_row_and_line(tmp_path):
    path = _write(
        tmp_path,
        [
            "2024-01-01,DKI1 (Bunderan HI),60,40,10,5,30,20,60,PM25,SEDANG",  # row 1, line 2
            "",  # blank line 3: skipped, not a row
            "2024-01-02,DKI1 (Bunderan HI),60,40,10,5,30,20,60,PM25",  # row 2, line 4: short
            "2024-01-03,DKI1 (Bunderan HI),60,40,10,5,30,20,60,PM25,SEDANG,x",  # row 3: long
            '2024-01-04,"DKI2 (Kelapa\nGading)",60,40,10,5,30,20,60,PM25,SEDANG',  # row 4, 2 lines
            "2024-01-05,DKI3 (Jagakarsa),60,40,10,5,30,20,60,PM25,SEDANG",  # row 5, line 8
        ],
    )
    result = read_ispu_csv(path, stations=STATIONS)
    q = result.quarantine
    assert q[["row", "line", "field"]].values.tolist() == [
        [2, 4, "record"],
        [3, 5, "record"],
    ]
    assert "expected 11 fields, got 10" in q["reason"].iloc[0]
    assert result.readings[["row", "line"]].values.tolist() == [[1, 2], [4, 6], [5, 8]]
    assert result.summary["read"] == 5 == result.summary["valid"] + result.summary["quarantined"]


def test_missing_column_and_missing_file(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("tanggal,stasiun,pm10\n2024-01-01,DKI1,10\n")
    with pytest.raises(DataError, match="missing column"):
        read_ispu_csv(path, stations=STATIONS)
    with pytest.raises(DataError, match="not found"):
        read_ispu_csv(tmp_path / "nope.csv", stations=STATIONS)


def test_stations_keep_location_method(shared_data):
    st = load_stations(shared_data / "ispu" / "stations.csv")
    assert st["station_id"].tolist() == STATIONS
    assert st.crs.to_epsg() == 4326
    assert st["location_method"].notna().all()
    assert st["location_method"].iloc[0].startswith("landmark")


def test_stations_bad_coordinate_names_row_and_field(tmp_path):
    path = tmp_path / "stations.csv"
    path.write_text(
        "station_id,name,lon,lat,location_method\nDKI1,A,106.8,-6.2,x\nDKI2,B,abc,-6.1,y\n"
    )
    with pytest.raises(DataError, match="row 2, field lon"):
        load_stations(path)


def test_ispu_stations_layer_is_registered():
    from layers.registry import get

    layer = get("ispu_stations")
    assert layer.table == "layer_ispu_stations" and layer.geometry_type == "Point"
    assert "APPROXIMATE" in layer.attribution
    frame = layer.loader()()
    assert list(frame.columns) == [*layer.attributes, "geometry"]
