"""Boundary import on the real Jakarta files, and every way it can fail."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import geopandas as gpd
import psycopg
import pytest
import shapely

from db.boundaries import store_boundary_set
from gis.boundaries import BoundarySource, build_boundary_set, load_manifest
from petalapor.errors import BoundaryError, ConfigError


def _stated_kelurahan_count(shared_data: Path) -> int:
    """The kelurahan count SOURCES.md states for the primary layer."""
    text = (shared_data / "boundaries" / "SOURCES.md").read_text()
    match = re.search(
        r"kelurahan_dki_nusantr\.geojson`: primary kelurahan layer \((\d+) features\)", text
    )
    assert match, "SOURCES.md no longer states the kelurahan count"
    return int(match[1])


def test_real_counts(boundary_set, shared_data):
    counts = boundary_set.report.counts
    assert counts["kelurahan"] == _stated_kelurahan_count(shared_data) == 267
    assert counts["rw"] == 2698  # 2,732 parts dissolved by rw_id
    assert boundary_set.report.parts_in["rw"] == 2732
    assert counts["kecamatan"] == 44 and counts["kota"] == 6  # derived, Kepulauan Seribu included


def test_every_rw_has_a_kelurahan_or_is_an_orphan(boundary_set):
    rw = boundary_set.frames["rw"]
    kel_codes = set(boundary_set.frames["kelurahan"]["code"])
    orphans = {o["code"] for o in boundary_set.report.orphans}
    for code, parent in zip(rw["code"], rw["kelurahan_code"], strict=True):
        assert parent in kel_codes or code in orphans
    # the real file declares kelurahan 3175040005, which the kelurahan layer lacks
    assert {o["declared"] for o in boundary_set.report.orphans} == {"3175040005"}
    # joined by code: an RW's kecamatan/kota come from its kelurahan's codes
    kel = boundary_set.frames["kelurahan"].set_index("code")
    sample = rw.iloc[::97]
    assert (
        sample["kota_code"].to_numpy() == kel.loc[sample["kelurahan_code"], "kota_code"].to_numpy()
    ).all()


def test_rw_names_come_from_the_code(boundary_set):
    rw = boundary_set.frames["rw"].set_index("code")
    assert rw.loc["3174070005001000", "name"] == "RW 01"


def test_real_invalid_polygon_is_repaired_and_reported(boundary_set):
    repaired = {r["code"]: r["reason"] for r in boundary_set.report.repaired}
    assert "3171090004014000" in repaired  # Kebon Baru RW 14, per SOURCES.md
    assert "Self-intersection" in repaired["3171090004014000"]
    assert shapely.is_valid(boundary_set.frames["rw"].geometry.values).all()
    assert "3171090004014000" in boundary_set.report.render()


def test_store_is_idempotent_and_indexed(make_database, boundary_set):
    url = make_database()
    first = store_boundary_set(url, boundary_set)
    assert first.status == "created"
    again = store_boundary_set(url, boundary_set)
    assert again.status == "unchanged" and again.set_id == first.set_id
    with psycopg.connect(url) as conn:
        rows = dict(
            conn.execute("SELECT level, count(*) FROM boundaries GROUP BY level").fetchall()
        )
        assert rows == {"kota": 6, "kecamatan": 44, "kelurahan": 267, "rw": 2698}
        assert conn.execute("SELECT count(*) FROM boundary_sets").fetchone()[0] == 1
        assert conn.execute("SELECT bool_and(ST_IsValid(geom)) FROM boundaries").fetchone()[0]
        gist = conn.execute(
            "SELECT count(*) FROM pg_indexes "
            "WHERE tablename = 'boundaries' AND indexdef ILIKE '%gist%'"
        ).fetchone()[0]
        assert gist >= 2


# ---------------------------------------------------------------- small synthetic sources


def _subset(boundary_set, tmp_path: Path, kota: str = "3173") -> list[BoundarySource]:
    """Kelurahan and RW files for one kota, written in the real files' column shape."""
    kel = boundary_set.frames["kelurahan"]
    kel = kel[kel["kota_code"] == kota]
    rw = boundary_set.frames["rw"]
    rw = rw[rw["kelurahan_code"].isin(kel["code"])]
    kel_out = gpd.GeoDataFrame(
        {
            "kelurahan_id": kel["code"],
            "kelurahan": kel["name"],
            "kecamatan_id": kel["kecamatan_code"],
            "kecamatan": kel["kecamatan_code"],
            "kota_id": kel["kota_code"],
            "kota": "Jakarta Pusat",
        },
        geometry=kel.geometry.values,
        crs="EPSG:4326",
    )
    rw_out = gpd.GeoDataFrame(
        {"rw_id": rw["code"], "rw": rw["name"], "kelurahan_id": rw["kelurahan_code"]},
        geometry=rw.geometry.values,
        crs="EPSG:4326",
    )
    kel_out.to_file(tmp_path / "kel.geojson")
    rw_out.to_file(tmp_path / "rw.geojson")
    manifest = load_manifest()
    return [
        BoundarySource("kelurahan", tmp_path / "kel.geojson", manifest[0].columns),
        BoundarySource("rw", tmp_path / "rw.geojson", manifest[1].columns),
    ]


def test_new_version_replaces_the_set_in_one_go(make_database, boundary_set, tmp_path):
    url = make_database()
    store_boundary_set(url, boundary_set)
    small = build_boundary_set(_subset(boundary_set, tmp_path))
    result = store_boundary_set(url, small)
    assert result.status == "replaced"
    with psycopg.connect(url) as conn:
        n_kel = conn.execute(
            "SELECT count(*) FROM boundaries WHERE level = 'kelurahan'"
        ).fetchone()[0]
        assert n_kel == small.report.counts["kelurahan"] < 267
        assert (
            conn.execute("SELECT count(*) FROM boundary_sets WHERE is_current").fetchone()[0] == 1
        )


@pytest.mark.parametrize("driver,suffix", [("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_other_formats(boundary_set, tmp_path, driver, suffix):
    sources = _subset(boundary_set, tmp_path)
    converted = []
    for src in sources:
        frame = gpd.read_file(src.path)
        out = tmp_path / f"{src.level}{suffix}"
        frame.to_file(out, driver=driver)
        if suffix == ".shp":  # zip the shapefile's parts
            zpath = tmp_path / f"{src.level}.zip"
            with zipfile.ZipFile(zpath, "w") as zf:
                for part in tmp_path.glob(f"{src.level}.*"):
                    if part.suffix != ".zip":
                        zf.write(part, part.name)
            out = zpath
        converted.append(BoundarySource(src.level, out, src.columns))
    bset = build_boundary_set(converted)
    reference = build_boundary_set(sources)
    assert bset.report.counts == reference.report.counts


def test_invalid_polygon_in_a_new_file_is_repaired(boundary_set, tmp_path):
    sources = _subset(boundary_set, tmp_path)
    kel = gpd.read_file(sources[0].path)
    x0, y0, x1, y1 = kel.geometry.iloc[0].bounds
    bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    assert not bowtie.is_valid
    kel.loc[0, "geometry"] = bowtie
    kel.to_file(sources[0].path)
    bset = build_boundary_set(sources)
    codes = [r["code"] for r in bset.report.repaired if r["level"] == "kelurahan"]
    assert codes == [kel.loc[0, "kelurahan_id"]]
    assert shapely.is_valid(bset.frames["kelurahan"].geometry.values).all()


# ---------------------------------------------------------------- failures leave the set untouched


def _current_fingerprint(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT fingerprint FROM boundary_sets WHERE is_current").fetchone()[0]


def test_failures_are_clear_and_leave_previous_set(make_database, boundary_set, tmp_path):
    url = make_database()
    store_boundary_set(url, boundary_set)
    before = _current_fingerprint(url)
    sources = _subset(boundary_set, tmp_path)

    corrupt = tmp_path / "corrupt.geojson"
    corrupt.write_text('{"type": "FeatureCollection", "features": [ {"type": "Feat')
    with pytest.raises(BoundaryError, match=r"corrupt\.geojson: cannot read"):
        build_boundary_set([BoundarySource("kelurahan", corrupt, sources[0].columns), sources[1]])

    bad_mapping = dict(sources[0].columns, name="nama_kelurahan")
    with pytest.raises(BoundaryError, match=r"name='nama_kelurahan'.*the file has"):
        build_boundary_set([BoundarySource("kelurahan", sources[0].path, bad_mapping), sources[1]])

    unknown_role = dict(sources[1].columns, colour="rw")
    with pytest.raises(BoundaryError, match=r"unknown role\(s\) \['colour'\]"):
        build_boundary_set([sources[0], BoundarySource("rw", sources[1].path, unknown_role)])

    points = gpd.read_file(sources[1].path)
    points["geometry"] = points.geometry.representative_point()
    points.to_file(tmp_path / "points.geojson")
    with pytest.raises(BoundaryError, match="must hold polygons, found \\['Point'\\]"):
        build_boundary_set(
            [sources[0], BoundarySource("rw", tmp_path / "points.geojson", sources[1].columns)]
        )

    with pytest.raises(BoundaryError, match="file not found"):
        build_boundary_set(
            [sources[0], BoundarySource("rw", tmp_path / "nope.geojson", sources[1].columns)]
        )

    assert _current_fingerprint(url) == before


def test_failed_store_rolls_back(make_database, boundary_set, tmp_path):
    url = make_database()
    store_boundary_set(url, boundary_set)
    before = _current_fingerprint(url)
    small = build_boundary_set(_subset(boundary_set, tmp_path))
    small.frames["rw"].loc[0, "area_m2"] = None  # violates NOT NULL mid-COPY
    with pytest.raises(psycopg.Error):
        store_boundary_set(url, small)
    assert _current_fingerprint(url) == before
    with psycopg.connect(url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM boundaries WHERE level = 'rw'").fetchone()[0] == 2698
        )


def test_manifest_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected a folder"):
        load_manifest(tmp_path / "x.geojson")
    bad = tmp_path / "m.toml"
    bad.write_text("[kelurahan]\nfile = 'k.geojson'\n")
    with pytest.raises(ConfigError, match=r"no \[rw\] section"):
        load_manifest(bad)
