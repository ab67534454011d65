"""``/reports`` on the real boundaries and a real PostGIS: placement, validation, workflow.

Writes go through :class:`Intake`, which carries an admin key as an intake app
would; reads stay public.  Who may write or read what: ``test_write_auth.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import h3
import numpy as np
import psycopg
import pytest
import shapely
from intake import Intake, admin_token, api, db, unchanged  # noqa: F401 - fixtures
from pyproj import Transformer

from db.reports import hash_reporter, reporter_salt
from petalapor.catalog import get_catalog

WIB = timezone(timedelta(hours=7))
TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32748", always_xy=True)
FROM_UTM = Transformer.from_crs("EPSG:32748", "EPSG:4326", always_xy=True)

#: Hand-picked places and the RW / kelurahan the boundary data puts them in.
KNOWN = {
    "monas": (106.8272, -6.1754, "3173080003002000"),
    "bundaran_hi": (106.8229, -6.1950, "3173020001005000"),
    "kota_tua": (106.8133, -6.1352, "3174060008006000"),
    "blok_m": (106.7995, -6.2443, "3171060005001000"),
    # the TMII RW lies in Ceger's polygon but belongs to kelurahan 3172030002
    "tmii": (106.8951, -6.3025, "3172030002999000"),
}


def report(lon: float, lat: float, **extra) -> dict:
    """A valid report body at lon/lat with a fresh external id."""
    body = {
        "category": "banjir",
        "lon": lon,
        "lat": lat,
        "description": "Genangan air setinggi 30 cm",
        "external_id": f"t-{uuid.uuid4().hex}",
    }
    body.update(extra)
    return body


def post(api, body: dict, expect: int = 201) -> dict:
    res = api.post("/reports", json=body)
    assert res.status_code == expect, res.text
    return res.json()


# --------------------------------------------------------------------------- placement


def smallest_covering(frame, lon: float, lat: float) -> str | None:
    """Independent check: the smallest code whose polygon covers the point (shapely)."""
    codes = sorted(frame.code[frame.covers(shapely.Point(lon, lat))])
    return codes[0] if codes else None


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_points_land_in_their_rw(api, boundary_set, name):
    lon, lat, expected = KNOWN[name]
    rw, kel = boundary_set.frames["rw"], boundary_set.frames["kelurahan"]
    assert smallest_covering(rw, lon, lat) == expected
    out = post(api, report(lon, lat))
    assert out["rw_code"] == expected
    assert (out["snap_method"], out["snap_distance_m"]) == ("inside", 0)
    # kelurahan is the RW's; kecamatan and kota come from the kelurahan row
    kel_code = rw.set_index("code").loc[expected, "kelurahan_code"]
    kel_row = kel.set_index("code").loc[kel_code]
    assert out["kelurahan_code"] == kel_code
    assert (out["kecamatan_code"], out["kota_code"]) == (
        kel_row["kecamatan_code"],
        kel_row["kota_code"],
    )
    assert out["kelurahan_name"] == kel_row["name"]
    for res in (7, 8, 9, 10, 11):
        assert out[f"h3_r{res}"] == h3.latlng_to_cell(lat, lon, res)
    assert (out["lon"], out["lat"]) == (lon, lat)


def test_tmii_takes_the_rw_kelurahan_not_the_covering_one(api, boundary_set):
    lon, lat, code = KNOWN["tmii"]
    assert smallest_covering(boundary_set.frames["kelurahan"], lon, lat) == "3172030007"
    assert post(api, report(lon, lat))["kelurahan_code"] == "3172030002"


def test_island_without_rw_uses_the_kelurahan_rule(api, boundary_set):
    lon, lat = 106.6147, -5.7455  # Pulau Pramuka, Kepulauan Seribu: no RW polygons
    assert smallest_covering(boundary_set.frames["rw"], lon, lat) is None
    expected = smallest_covering(boundary_set.frames["kelurahan"], lon, lat)
    out = post(api, report(lon, lat))
    assert out["rw_code"] is None
    assert out["kelurahan_code"] == expected == "3101020001"
    assert (out["kota_code"], out["snap_method"]) == ("3101", "inside")


def northern_vertex(rw) -> tuple[float, float]:
    """The northernmost RW vertex (on the coast: only sea lies north of it)."""
    coords = shapely.get_coordinates(rw.geometry.values)
    return tuple(coords[np.argmax(coords[:, 1])])


def north_of(lon: float, lat: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` north (UTM 48S grid north) of lon/lat."""
    x, y = TO_UTM.transform(lon, lat)
    return FROM_UTM.transform(x, y + metres)


def utm_distances(frame, lon: float, lat: float):
    """Distance in metres (UTM 48S) from the point to every polygon, by code."""
    metric = frame.to_crs("EPSG:32748")
    return metric.distance(shapely.Point(*TO_UTM.transform(lon, lat))).set_axis(frame.code)


def test_point_30m_off_the_coast_snaps_nearest(api, boundary_set):
    rw = boundary_set.frames["rw"]
    lon, lat = north_of(*northern_vertex(rw), 30)
    dist = utm_distances(rw, lon, lat)
    expected = sorted(dist.index[dist <= dist.min() + 1e-6])[0]
    assert smallest_covering(rw, lon, lat) is None and 29.9 < dist.min() < 30.1
    out = post(api, report(lon, lat))
    assert (out["rw_code"], out["snap_method"]) == (expected, "nearest")
    assert out["snap_distance_m"] == pytest.approx(dist.min(), abs=0.01)
    assert out["kelurahan_code"] == rw.set_index("code").loc[expected, "kelurahan_code"]


def test_point_5km_out_is_kept_as_outside(api, boundary_set):
    lon, lat = north_of(*northern_vertex(boundary_set.frames["rw"]), 5000)
    assert utm_distances(boundary_set.frames["kelurahan"], lon, lat).min() > 100  # open sea
    out = post(api, report(lon, lat))
    assert out["snap_method"] == "outside"
    assert out["rw_code"] is None and out["kelurahan_code"] is None and out["kota_code"] is None
    assert out["snap_distance_m"] > 100
    assert api.get(f"/reports/{out['id']}").json()["snap_method"] == "outside"


def shared_vertex(rw, n: int = 2) -> tuple[float, float, list[str]]:
    """A vertex shared by exactly ``n`` RW polygons (all covering it), and their codes."""
    coords, which = shapely.get_coordinates(rw.geometry.values, return_index=True)
    uniq, inverse = np.unique(coords, axis=0, return_inverse=True)
    owners: dict[int, set[int]] = {}
    for k, j in zip(inverse.reshape(-1), which, strict=True):
        owners.setdefault(int(k), set()).add(int(j))
    for k in sorted(owners):
        if len(owners[k]) == n:
            lon, lat = (float(v) for v in uniq[k])
            codes = sorted(rw.code.iloc[j] for j in owners[k])
            if all(rw.geometry.iloc[j].covers(shapely.Point(lon, lat)) for j in owners[k]):
                return lon, lat, codes
    raise AssertionError("no shared vertex found")


def test_vertex_shared_by_two_rw_goes_to_the_smaller_code(api, boundary_set):
    rw = boundary_set.frames["rw"]
    lon, lat, codes = shared_vertex(rw, 2)
    assert smallest_covering(rw, lon, lat) == codes[0]
    results = {
        (o["rw_code"], o["snap_method"]) for o in (post(api, report(lon, lat)) for _ in range(4))
    }
    assert results == {(codes[0], "inside")}


# ------------------------------------------------------------------- bad input stores nothing


@pytest.mark.parametrize(
    "change",
    [
        {"lat": 91.0},
        {"lat": -90.5},
        {"lon": 181.0},
        {"lon": -180.1},
        {"lat": "north"},
        {"lon": None},
        {"lon": 107.5, "lat": -6.2},  # far east of Jakarta: outside the service area
        {"lon": 106.8, "lat": -7.0},  # Bogor and beyond
        {"lon": 0.0, "lat": 0.0},
        {"category": "ufo"},
        {"opd": "NASA"},
        {"description": "x" * 4001},
        {"title": "t" * 201},
        {"media_url": "ftp://example.org/a.jpg"},
        {"media_url": "javascript:alert(1)"},
        {"media_url": "/relative.jpg"},
        {"created_at": "2024-01-31T08:00:00"},  # no timezone
        {"created_at": "2999-01-01T00:00:00+07:00"},  # future
        {"description": "nul \x00 byte"},
        {"source": "Bad Source!"},
        {"external_id": ""},
        {"unknown_field": 1},
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:20]}" for k, v in c.items()),
)
def test_bad_report_is_4xx_and_stores_nothing(api, db, change):
    body = report(106.8272, -6.1754)
    body.update(change)
    with unchanged(db):
        res = api.post("/reports", json=body)
    assert 400 <= res.status_code < 500, res.text
    assert res.status_code == 422


def test_unknown_category_lists_the_known_ones(api, db):
    with unchanged(db):
        res = api.post("/reports", json=report(106.8272, -6.1754, category="ufo"))
    assert res.status_code == 422
    detail = res.json()["detail"]
    assert "unknown category 'ufo'" in detail
    assert all(code in detail for code in get_catalog().categories)


def test_outside_service_area_names_the_area(api, db):
    with unchanged(db):
        res = api.post("/reports", json=report(107.5, -6.2))
    assert res.status_code == 422 and "outside the service area" in res.json()["detail"]


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[1, 2]", b'{"category": "banjir", "lat": -6.1,']
)
def test_malformed_json_stores_nothing(api, db, raw):
    with unchanged(db):
        res = api.post("/reports", content=raw, headers={"content-type": "application/json"})
    assert res.status_code == 422, res.text


def test_body_too_large_is_413_and_stores_nothing(api, db, settings):
    body = report(106.8272, -6.1754, description="x" * (settings.api.max_body_bytes + 10))
    with unchanged(db):
        res = api.post("/reports", json=body)
    assert res.status_code == 413


def test_resent_external_id_returns_the_stored_report(api, db):
    body = report(106.8229, -6.1950, source="jaki")
    first = api.post("/reports", json=body)
    assert first.status_code == 201
    assert first.headers["location"].endswith(f"/reports/{first.json()['id']}")
    with unchanged(db):
        again = api.post("/reports", json={**body, "description": "sent twice"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["description"] == body["description"]
    # the same external id from another source is another report
    other = api.post("/reports", json={**body, "source": "qlue"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_reporter_identity_is_only_a_salted_hash(api, db):
    secret = f"{uuid.uuid4().int % 10**8:08d}"
    phone = f"+62 812 {secret[:4]} {secret[4:]}"
    body = report(106.8272, -6.1754, reporter=phone, created_at="2020-07-14T09:00:00+07:00")
    res = api.post("/reports", json=body)
    assert res.status_code == 201
    rid = res.json()["id"]
    with psycopg.connect(db) as conn:
        stored = conn.execute(
            "SELECT reporter_hash FROM reporter_identities WHERE report_id = %s", (rid,)
        ).fetchone()[0]
        row = conn.execute(
            "SELECT row_to_json(r)::text FROM reports r WHERE id = %s", (rid,)
        ).fetchone()[0]
    assert stored == hash_reporter(phone, reporter_salt()) and len(stored) == 64
    assert stored == hash_reporter(f" +62812{secret} ", reporter_salt())  # normalised
    assert stored != hash_reporter(phone, b"another salt")
    assert secret[4:] not in row and stored not in row
    day = {"from": "2020-07-14", "to": "2020-07-14"}
    listed = api.get("/reports", params=day).json()["items"]
    assert rid in {r["id"] for r in listed}
    for out in (res.json(), api.get(f"/reports/{rid}").json(), *listed):
        assert not any("reporter" in key for key in out)
        assert stored not in str(out) and f"{secret[:4]} {secret[4:]}" not in str(out)


def test_hidden_reports_are_not_served_to_the_public(api, db):
    out = post(
        api,
        report(
            106.8272, -6.1754, public=False, title="rahasia", created_at="2020-07-14T10:00:00+07:00"
        ),
    )
    assert out["title"] == "rahasia"  # the key that filed it sees it
    assert api.get(f"/reports/{out['id']}").status_code == 404
    day = {"from": "2020-07-14", "to": "2020-07-14"}
    listed = api.get("/reports", params=day).json()["items"]
    assert out["id"] not in {r["id"] for r in listed}
    with unchanged(db):
        res = api.client.post(f"/reports/{out['id']}/events", json={"status": "disposisi"})
    assert res.status_code == 401
    # the admin key sees it, and re-sending returns it in full
    as_admin = api.client.get(f"/reports/{out['id']}", headers={"X-API-Key": api.token})
    assert as_admin.json()["title"] == "rahasia"
    again = api.post(
        "/reports", json=report(106.8272, -6.1754, public=False, external_id=out["external_id"])
    )
    assert again.status_code == 200 and again.json()["id"] == out["id"]
    assert again.json()["title"] == "rahasia"


def test_get_unknown_report_is_404(api):
    assert api.get(f"/reports/{uuid.uuid4()}").status_code == 404
    assert api.get("/reports/not-a-uuid").status_code == 404


# --------------------------------------------------------------------------- listing


@pytest.fixture(scope="module")
def listed(api) -> dict[str, dict]:
    """Five reports in a window no other test uses (March 2003, WIB)."""
    specs = {
        "a": (KNOWN["monas"], "banjir", "2003-03-01T08:00:00+07:00"),
        "b": (KNOWN["monas"], "sampah", "2003-03-02T08:00:00+07:00"),
        "c": (KNOWN["bundaran_hi"], "banjir", "2003-03-03T08:00:00+07:00"),
        "d": (KNOWN["blok_m"], "jalan_rusak", "2003-03-04T23:30:00+07:00"),
        "e": (KNOWN["kota_tua"], "banjir", "2003-03-05T08:00:00+07:00"),
    }
    out = {}
    for key, ((lon, lat, _), category, at) in specs.items():
        out[key] = post(api, report(lon, lat, category=category, created_at=at))
    return out


WINDOW = {"from": "2003-03-01", "to": "2003-03-31"}


def ids(api, **params) -> list[str]:
    res = api.get("/reports", params={**WINDOW, **params})
    assert res.status_code == 200, res.text
    return [r["id"] for r in res.json()["items"]]


def test_list_is_newest_first(api, listed):
    assert ids(api) == [listed[k]["id"] for k in "edcba"]


def test_list_filters(api, listed):
    by = {k: v["id"] for k, v in listed.items()}
    assert ids(api, category="banjir") == [by["e"], by["c"], by["a"]]
    assert ids(api, category=["sampah", "jalan_rusak"]) == [by["d"], by["b"]]
    assert ids(api, kelurahan=listed["a"]["kelurahan_code"]) == [by["b"], by["a"]]
    assert ids(api, rw=KNOWN["bundaran_hi"][2]) == [by["c"]]
    assert ids(api, opd="DBM") == [by["d"]]
    assert ids(api, status="menunggu") == [by[k] for k in "edcba"]
    assert ids(api, status="selesai") == []
    assert ids(api, bbox="106.82,-6.18,106.83,-6.17") == [by["b"], by["a"]]
    assert ids(api, **{"from": "2003-03-02", "to": "2003-03-04"}) == [
        by["d"],
        by["c"],
        by["b"],
    ]  # whole days
    assert ids(api, **{"from": "2003-03-02T08:00:00+07:00", "to": "2003-03-03T01:00:00Z"}) == [
        by["c"],
        by["b"],
    ]


def test_list_paging(api, listed):
    page = api.get("/reports", params={**WINDOW, "limit": 2, "offset": 1}).json()
    assert [r["id"] for r in page["items"]] == [listed["d"]["id"], listed["c"]["id"]]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1001},
        {"limit": 0},
        {"offset": -1},
        {"bbox": "1,2,3"},
        {"bbox": "106.9,-6.1,106.8,-6.2"},
        {"from": "yesterday"},
        {"from": "2003-03-05", "to": "2003-03-01"},
        {"category": "ufo"},
        {"status": "lost"},
    ],
)
def test_list_bad_parameters_are_4xx(api, params):
    res = api.get("/reports", params=params)
    assert res.status_code in (400, 422), res.text


def test_times_are_shown_in_jakarta_time(api, listed):
    out = api.get(f"/reports/{listed['d']['id']}").json()
    assert out["created_at"] == "2003-03-04T23:30:00+07:00"
    post(api, report(106.8272, -6.1754, created_at="2003-02-01T01:00:00Z"))
    utc = api.get("/reports", params={"from": "2003-02-01", "to": "2003-02-01"}).json()["items"]
    assert [r["created_at"] for r in utc] == ["2003-02-01T08:00:00+07:00"]


# --------------------------------------------------------------------------- workflow


def event(
    api, rid: str, status: str, at: datetime | None = None, expect: int = 201, **extra
) -> dict:
    body = {"status": status, **extra}
    if at is not None:
        body["at"] = at.isoformat()
    res = api.post(f"/reports/{rid}/events", json=body)
    assert res.status_code == expect, res.text
    return res.json()


T0 = datetime(2023, 5, 1, 8, 0, tzinfo=WIB)


def test_legal_chain_sets_the_milestones(api):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    event(api, rid, "disposisi", T0 + timedelta(hours=1), actor_opd="DSDA")
    out = event(api, rid, "koordinasi", T0 + timedelta(hours=2), note="ke lokasi")
    assert out["first_coordinated_at"] == (T0 + timedelta(hours=2)).isoformat()
    out = event(api, rid, "proses", T0 + timedelta(hours=5))
    assert out["first_coordinated_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert out["resolved_at"] is None
    out = event(api, rid, "selesai", T0 + timedelta(days=2))
    assert (out["status"], out["is_open"]) == ("selesai", False)
    assert out["resolved_at"] == (T0 + timedelta(days=2)).isoformat()
    assert out["updated_at"] == out["resolved_at"]
    assert [(e["from_status"], e["to_status"]) for e in out["events"]] == [
        (None, "menunggu"),
        ("menunggu", "disposisi"),
        ("disposisi", "koordinasi"),
        ("koordinasi", "proses"),
        ("proses", "selesai"),
    ]
    assert out["events"][1]["actor_opd"] == "DSDA" and out["events"][2]["note"] == "ke lokasi"


def test_reopening_clears_resolved_at_and_keeps_first_coordination(api):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    for i, status in enumerate(["disposisi", "proses", "selesai"], start=1):
        event(api, rid, status, T0 + timedelta(hours=i))
    out = event(api, rid, "proses", T0 + timedelta(days=1))  # re-opened
    assert out["resolved_at"] is None
    assert out["first_coordinated_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert (out["reopened"], out["status"], out["is_open"]) == (1, "proses", True)
    out = event(api, rid, "selesai", T0 + timedelta(days=2))
    assert out["resolved_at"] == (T0 + timedelta(days=2)).isoformat() and out["reopened"] == 1
    out = event(api, rid, "proses", T0 + timedelta(days=3))
    assert out["reopened"] == 2 and len(out["events"]) == 7


def test_rejected_then_reopened(api):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    event(api, rid, "ditolak", T0 + timedelta(hours=1))
    out = event(api, rid, "disposisi", T0 + timedelta(hours=2))
    assert (
        out["reopened"] == 1 and out["first_coordinated_at"] is None and out["resolved_at"] is None
    )


@pytest.mark.parametrize(
    ("path", "illegal"),
    [((), "selesai"), ((), "proses"), (("disposisi",), "menunggu"), (("ditolak",), "selesai")],
)
def test_illegal_jumps_are_409_and_change_nothing(api, db, path, illegal):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    for i, status in enumerate(path, start=1):
        event(api, rid, status, T0 + timedelta(hours=i))
    before = api.get(f"/reports/{rid}").json()
    with unchanged(db):
        res = api.post(f"/reports/{rid}/events", json={"status": illegal})
    assert res.status_code == 409 and "illegal status change" in res.json()["detail"]
    assert api.get(f"/reports/{rid}").json() == before


@pytest.mark.parametrize(
    "body",
    [
        {"status": "lost"},
        {"status": "disposisi", "actor_opd": "NASA"},
        {"status": "disposisi", "at": "2023-05-01T10:00:00"},
        {"status": "disposisi", "at": "2999-05-01T10:00:00+07:00"},
        {"status": "disposisi", "note": "n" * 2001},
        {"status": "disposisi", "colour": "red"},
        {},
    ],
)
def test_bad_events_are_4xx_and_change_nothing(api, db, body):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    with unchanged(db):
        res = api.post(f"/reports/{rid}/events", json=body)
    assert res.status_code == 422, res.text


def test_event_before_the_last_one_is_409(api, db):
    rid = post(api, report(106.8272, -6.1754, created_at=T0.isoformat()))["id"]
    event(api, rid, "disposisi", T0 + timedelta(hours=3))
    with unchanged(db):
        res = api.post(
            f"/reports/{rid}/events",
            json={"status": "koordinasi", "at": (T0 + timedelta(hours=2)).isoformat()},
        )
    assert res.status_code == 409
    with unchanged(db):
        assert (
            api.post(f"/reports/{uuid.uuid4()}/events", json={"status": "disposisi"}).status_code
            == 404
        )


def test_events_are_append_only(api, db):
    rid = post(api, report(106.8272, -6.1754))["id"]
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM report_events WHERE report_id = %s", (rid,))
