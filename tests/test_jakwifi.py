"""JakWifi: importer validation, the seeded generator, the round trip, and the layer registry."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from layers import registry
from layers.jakwifi import (
    COLUMNS,
    PUBLISHED_COUNTS,
    generate_hotspots,
    jakwifi_layer,
    read_hotspots,
    write_open_data_csv,
)
from layers.registry import Attribute, Layer
from petalapor.errors import ConfigError, DataError, InvalidParameterError, NotFoundError


@pytest.fixture(scope="module")
def frames(boundary_set):
    return boundary_set.frames


@pytest.fixture(scope="module")
def hotspots(frames):
    return generate_hotspots(
        frames["rw"], frames["kelurahan"], kecamatan=frames["kecamatan"], seed=1
    )


# --------------------------------------------------------------------------- generator


def test_generator_reproduces_published_counts_exactly(hotspots):
    assert sum(PUBLISHED_COUNTS.values()) == 9250
    assert len(hotspots) == 9250
    got = hotspots["kota_code"].value_counts().to_dict()
    assert got == dict(PUBLISHED_COUNTS)
    by_name = hotspots["kota"].value_counts().to_dict()
    assert by_name == {
        "Jakarta Pusat": 2451,
        "Jakarta Selatan": 2222,
        "Jakarta Barat": 1649,
        "Jakarta Utara": 1488,
        "Jakarta Timur": 1390,
        "Kepulauan Seribu": 50,
    }


def test_generator_is_deterministic_for_a_seed(frames, hotspots):
    again = generate_hotspots(
        frames["rw"], frames["kelurahan"], kecamatan=frames["kecamatan"], seed=1
    )
    pd.testing.assert_frame_equal(
        pd.DataFrame(again.drop(columns="geometry")),
        pd.DataFrame(hotspots.drop(columns="geometry")),
    )
    assert again.geometry.geom_equals_exact(hotspots.geometry, tolerance=0).all()
    other = generate_hotspots(frames["rw"], frames["kelurahan"], seed=2)
    assert not other.geometry.geom_equals_exact(hotspots.geometry, tolerance=0).all()


def test_every_point_strictly_inside_its_city_and_polygon(frames, hotspots):
    kota = frames["kota"].set_index("code").geometry
    inside_city = shapely.contains_properly(
        kota.reindex(hotspots["kota_code"]).to_numpy(), hotspots.geometry.to_numpy()
    )
    assert inside_city.all()
    mainland = hotspots[hotspots["rw_code"].notna()]
    rw = frames["rw"].set_index("code").geometry
    assert shapely.contains_properly(
        rw.reindex(mainland["rw_code"]).to_numpy(), mainland.geometry.to_numpy()
    ).all()
    seribu = hotspots[hotspots["kota_code"] == "3101"]
    assert len(seribu) == 50 and seribu["rw_code"].isna().all()  # no RW polygons on the islands
    kel = frames["kelurahan"].set_index("code").geometry
    assert shapely.contains_properly(
        kel.reindex(seribu["kelurahan_code"]).to_numpy(), seribu.geometry.to_numpy()
    ).all()


def test_generated_attributes(frames, hotspots):
    assert list(hotspots.columns) == list(COLUMNS)
    assert hotspots["synthetic"].all()
    assert hotspots["id"].is_unique and hotspots["id"].iloc[0] == "JW-SYN-00001"
    main = hotspots[hotspots["kota_code"] != "3101"]
    # the RW's kelurahan as linked by gis.boundaries (14 orphan RWs are linked by area, not code)
    rw_kel = frames["rw"].set_index("code")["kelurahan_code"].astype(str)
    assert (main["rw_code"].map(rw_kel) == main["kelurahan_code"]).all()
    assert (hotspots["kelurahan_code"].str[:7] == hotspots["kecamatan_code"]).all()
    assert hotspots["kecamatan"].notna().all() and hotspots["kelurahan"].notna().all()
    assert hotspots["address"].str.contains("SYNTHETIC").all()
    # one per RW before the weighted remainder (every usable RW of a city gets at least one)
    per_rw = main.groupby("rw_code").size()
    assert per_rw.min() >= 1 and per_rw.max() > 5


def test_generator_rejects_bad_counts(frames):
    with pytest.raises(InvalidParameterError):
        generate_hotspots(frames["rw"], frames["kelurahan"], counts={"9999": 3})
    few = generate_hotspots(
        frames["rw"], frames["kelurahan"], counts={"3173": 10, "3101": 2}, seed=5
    )
    assert few["kota_code"].value_counts().to_dict() == {"3173": 10, "3101": 2}


# --------------------------------------------------------------------------- round trip


def test_round_trip_through_the_open_data_csv(frames, hotspots, tmp_path):
    path = write_open_data_csv(hotspots, tmp_path / "jakwifi.csv")
    header = path.read_text().splitlines()[0]
    assert header.startswith(
        "no,nama_lokasi,alamat,wilayah,kecamatan,kelurahan,rw,latitude,longitude"
    )
    result = read_hotspots(path, service_area=frames["kelurahan"])
    assert (result.read, result.valid, result.quarantined) == (9250, 9250, 0)
    assert result.synthetic
    back = result.hotspots

    def plain(frame):
        return pd.DataFrame(frame.drop(columns="geometry")).astype(object).fillna("")

    pd.testing.assert_frame_equal(plain(back), plain(hotspots))
    assert back.geometry.geom_equals_exact(hotspots.geometry, tolerance=1e-9).all()
    assert "every row is marked synthetic" in result.render()


# --------------------------------------------------------------------------- importer


CSV_ROWS = [
    # NO, Nama, Alamat, Wilayah, KEC, KEL, RW, LATITUDE, Long
    "1,Taman A,Jl. A,Jakarta Pusat,Gambir,Gambir,RW 01,-6.1754,106.8272",  # ok
    "2,Taman B,Jl. B,Jakarta Barat,,,,,106.80",  # missing lat
    "3,Taman C,Jl. C,Jakarta Barat,,,,abc,106.80",  # not a number
    "4,Taman D,Jl. D,Jakarta Barat,,,,-95,106.80",  # out of range
    "5,Taman E,Jl. E,Jakarta Selatan,,,,-6.9175,107.6191",  # Bandung: outside service area
    "1,Taman F,Jl. F,Jakarta Pusat,,,,-6.18,106.83",  # duplicate id
    "7,Taman G,Jl. G,Jakarta Timur,,,,106.85,-6.20",  # swapped
    "8,Taman H,Jl. H,Jakarta Tengah,,,,-6.20,106.85",  # unknown wilayah
    "9,Taman I,Jl. I,JAKSEL,,,,-6.26,106.81",  # ok (alias)
    "10,Taman J,Jl. J,jakarta utara,,,,0,0",  # null island
]


def test_importer_quarantines_each_problem(frames, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "NO,Nama Lokasi,Alamat,Wilayah,KEC,Kel,RW,LATITUDE,Long\n" + "\n".join(CSV_ROWS) + "\n"
    )
    result = read_hotspots(path, service_area=frames["kelurahan"])
    assert result.columns["lat"] == "LATITUDE" and result.columns["lon"] == "Long"
    assert result.columns["kecamatan"] == "KEC"
    assert result.read == len(CSV_ROWS) == result.valid + result.quarantined
    assert result.hotspots["id"].tolist() == ["1", "9"]
    assert result.hotspots["kota"].tolist() == ["Jakarta Pusat", "Jakarta Selatan"]
    assert not result.hotspots["synthetic"].any()
    q = result.quarantine
    reasons = {row: " | ".join(g["reason"]) for row, g in q.groupby("row")}
    assert reasons == {
        2: "missing coordinate",
        3: "not a number",
        4: "out of range [-90, 90]",
        5: "outside the service area",
        6: "duplicate id, first at row 1",
        7: "latitude and longitude look swapped",
        8: "unknown wilayah",
        10: "coordinates are (0, 0)",
    }
    assert set(q["file"]) == {str(path)}
    assert q.set_index("row").loc[6, "field"] == "id"
    assert q.set_index("row").loc[5, "field"] == "geometry"


def test_importer_semicolon_decimal_comma_and_default_area(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "id;nama;lat;lng;kota\nA;x;-6,2;106,8;Jakarta Pusat\nB;y;-7,5;110,4;Jakarta Pusat\n"
    )
    result = read_hotspots(path)  # default service area: the DKI bounding box
    assert result.hotspots["id"].tolist() == ["A"]
    assert result.hotspots.geometry.iloc[0].equals(shapely.Point(106.8, -6.2))
    assert result.quarantine["reason"].tolist() == ["outside the service area"]


def test_importer_tolerance_accepts_points_just_off_the_coast(frames, tmp_path):
    path = tmp_path / "pier.csv"
    kel = frames["kelurahan"]
    coast = kel[kel["kota_code"] == "3175"].to_crs("EPSG:32748").union_all()
    probe = shapely.Point(coast.centroid.x, coast.bounds[3] + 150)  # in the bay, north of the coast
    distance = probe.distance(coast)
    lon, lat = gpd.GeoSeries([probe], crs="EPSG:32748").to_crs(4326).iloc[0].coords[0]
    path.write_text(f"id,latitude,longitude\n1,{lat:.9f},{lon:.9f}\n")
    assert distance >= 150
    assert read_hotspots(path, service_area=kel).quarantined == 1
    assert read_hotspots(path, service_area=kel, tolerance_m=distance - 5).quarantined == 1
    assert read_hotspots(path, service_area=kel, tolerance_m=distance + 5).valid == 1


def test_importer_geojson_with_point_geometry(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"ID": ["a", "b", "c"], "Wilayah": ["Jakarta Pusat", "Jakarta Timur", "Jakarta Utara"]},
        geometry=[
            shapely.Point(106.83, -6.18),
            None,
            shapely.LineString([(106.8, -6.1), (106.9, -6.1)]),
        ],
        crs="EPSG:4326",
    )
    path = tmp_path / "jakwifi.geojson"
    gdf.to_file(path, driver="GeoJSON")
    result = read_hotspots(path)
    assert result.hotspots["id"].tolist() == ["a"]
    assert dict(zip(result.quarantine["row"], result.quarantine["reason"], strict=True)) == {
        2: "missing geometry",
        3: "not a point",
    }


def test_importer_file_level_errors(tmp_path):
    no_coords = tmp_path / "bad.csv"
    no_coords.write_text("id,alamat\n1,Jl. A\n")
    with pytest.raises(DataError, match="no latitude/longitude"):
        read_hotspots(no_coords)
    ambiguous = tmp_path / "ambiguous.csv"
    ambiguous.write_text("id,lat,latitude,lon\n1,-6.2,-6.2,106.8\n")
    with pytest.raises(DataError, match="look like lat"):
        read_hotspots(ambiguous)
    with pytest.raises(DataError, match="not found"):
        read_hotspots(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- registry


def test_jakwifi_layer_is_registered_as_synthetic():
    layer = registry.get("jakwifi")
    assert layer.synthetic and "SYNTHETIC" in layer.attribution
    assert (
        layer.table == "layer_jakwifi"
        and layer.geometry_column == "geom"
        and layer.id_column == "id"
    )
    assert list(layer.attributes) == [c for c in COLUMNS if c != "geometry"]
    assert layer.attributes["synthetic"].type == "boolean"
    real = jakwifi_layer(synthetic=False)
    assert not real.synthetic and "SYNTHETIC" not in real.attribution


def test_registry_lists_the_three_layers_and_describes_them():
    names = [layer.name for layer in registry.all_layers()]
    assert {"jakwifi", "ispu_stations", "ispu_surface"} <= set(names)
    assert names == sorted(names)
    info = registry.get("jakwifi").as_dict()
    assert info["kind"] == "vector" and info["attributes"]["id"]["type"] == "text"
    with pytest.raises(NotFoundError, match="known layers"):
        registry.get("schools")


def _layer(**kw):
    base = dict(
        name="schools_test",
        title="Schools",
        attribution="test",
        licence="CC0",
        geometry_type="Point",
        table="layer_schools_test",
        load="layers.jakwifi:load_synthetic",
        attributes={"id": Attribute("text")},
    )
    return Layer(**{**base, **kw})


def test_registry_checks_identifiers_and_duplicates():
    layer = registry.register(_layer())
    try:
        assert registry.get("schools_test") is layer
        assert callable(layer.loader())
        registry.register(_layer())  # same description again: fine
        with pytest.raises(ConfigError, match="already registered"):
            registry.register(_layer(title="Other"))
        with pytest.raises(ConfigError, match="already used"):
            registry.register(_layer(name="other_test"))
    finally:
        registry.unregister("schools_test")
    with pytest.raises(ConfigError, match="table"):
        _layer(table='x"; drop table y; --')
    with pytest.raises(ConfigError, match="attribute"):
        _layer(attributes={"id": Attribute("text"), "Bad Name": Attribute("text")})
    with pytest.raises(ConfigError, match="unknown attribute type"):
        _layer(attributes={"id": Attribute("varchar")})
    with pytest.raises(ConfigError, match="id_column"):
        _layer(attributes={"name": Attribute("text")})
    with pytest.raises(ConfigError, match="raster"):
        _layer(geometry_type="Raster")
    with pytest.raises(ConfigError, match="cannot import"):
        _layer(load="layers.nothing:here").loader()
    assert np.isin(["schools_test"], [la.name for la in registry.all_layers()]).sum() == 0


def test_importer_quarantines_malformed_records(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("id,lat,lon\n1,-6.2,106.8\n2,-6.2\n\n3,-6.21,106.81,extra\n4,-6.22,106.82\n")
    result = read_hotspots(path)
    assert result.hotspots["id"].tolist() == ["1", "4"]
    assert result.quarantine[["row", "field"]].values.tolist() == [[2, "record"], [3, "record"]]
    assert result.read == 4
