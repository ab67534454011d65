"""Open311 GeoReport v2 (``/open311/v2``): shapes in JSON and XML, round trips, limits, errors.

POSTs carry an admin key (:class:`Intake`); reads are public.  Keys and scopes of
``POST requests``: ``test_write_auth.py``.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from intake import Intake, admin_token, api, db, unchanged  # noqa: F401 - fixtures

from db.reports import count_rows
from petalapor.catalog import get_catalog, sync_catalog

V2 = "/open311/v2"
MONAS = {"lat": "-6.1754", "long": "106.8272"}


def xml(res) -> ET.Element:
    """The response parsed as XML (fails on anything not well-formed)."""
    assert res.headers["content-type"].startswith("text/xml")
    assert res.content.startswith(b"<?xml")
    return ET.fromstring(res.content)


def create(api, fmt: str = "json", expect: int = 201, **fields) -> str:
    """POST a form-encoded request; the new service_request_id."""
    res = api.post(f"{V2}/requests.{fmt}", data={"service_code": "banjir", **MONAS, **fields})
    assert res.status_code == expect, res.text
    if fmt == "xml":
        return xml(res).find("request/service_request_id").text
    return res.json()[0]["service_request_id"]


# --------------------------------------------------------------------------- discovery and services


def test_discovery(api):
    body = api.get(f"{V2}/discovery.json").json()
    endpoint = body["endpoints"][0]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith("/open311/v2/") and endpoint["type"] == "production"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    assert {"changeset", "contact", "key_service"} <= set(body)
    root = xml(api.get(f"{V2}/discovery.xml"))
    assert root.tag == "discovery"
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]
    assert root.find("endpoints/endpoint/specification").text == endpoint["specification"]


def test_services_are_the_categories(api):
    catalog = get_catalog()
    services = api.get(f"{V2}/services.json").json()
    assert [s["service_code"] for s in services] == list(catalog.categories)
    first = services[0]
    assert set(first) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert first["metadata"] is False and first["type"] == "realtime"
    assert {s["group"] for s in services} == {"JakLapor", "Layanan Kota"}
    root = xml(api.get(f"{V2}/services.xml"))
    assert root.tag == "services"
    assert [s.findtext("service_code") for s in root.findall("service")] == list(catalog.categories)
    assert root.find("service/metadata").text == "false"


def test_service_definition(api):
    assert api.get(f"{V2}/services/banjir.json").json() == {
        "service_code": "banjir",
        "attributes": [],
    }
    root = xml(api.get(f"{V2}/services/banjir.xml"))
    assert root.tag == "service_definition" and root.findtext("service_code") == "banjir"
    assert root.find("attributes") is not None


def test_unknown_service_definition_is_an_open311_404(api):
    res = api.get(f"{V2}/services/ufo.json")
    assert res.status_code == 404
    [error] = res.json()
    assert error["code"] == 404 and "ufo" in error["description"]
    res = api.get(f"{V2}/services/ufo.xml")
    root = xml(res)
    assert res.status_code == 404 and root.tag == "errors"
    assert root.findtext("error/code") == "404" and "ufo" in root.findtext("error/description")


def test_unknown_format_is_400(api):
    res = api.get(f"{V2}/services.csv")
    assert res.status_code == 400 and res.json()[0]["code"] == 400


# --------------------------------------------------------------------------- round trips


def test_form_post_then_get_round_trips(api, db):
    with psycopg.connect(db) as conn:
        before = count_rows(conn)
    res = api.client.post(  # the key as the spec's api_key field, no header
        f"{V2}/requests.json",
        data={
            "service_code": "banjir",
            **MONAS,
            "description": "Banjir 40 cm",
            "api_key": api.token,
            "media_url": "https://example.org/banjir.jpg",
            "email": "Warga@Example.com",
            "first_name": "Ani",
            "jurisdiction_id": "jakarta.go.id",
        },
    )
    assert res.status_code == 201, res.text
    [created] = res.json()
    assert set(created) == {"service_request_id", "service_notice", "account_id"}
    sid = created["service_request_id"]
    with psycopg.connect(db) as conn:
        after = count_rows(conn)
        source = conn.execute("SELECT source FROM reports WHERE id = %s", (sid,)).fetchone()[0]
    assert after == {k: v + 1 for k, v in before.items()}  # report, creation event, reporter hash
    assert source == "open311"

    res = api.get(f"{V2}/requests/{sid}.json")
    [req] = res.json()
    assert req["service_request_id"] == sid
    assert (req["status"], req["status_notes"]) == ("open", "Menunggu")
    assert (req["service_code"], req["service_name"]) == ("banjir", "Banjir / Genangan")
    assert req["agency_responsible"] == "Dinas Sumber Daya Air"
    assert (req["lat"], req["long"]) == (-6.1754, 106.8272)
    assert (
        req["description"] == "Banjir 40 cm"
        and req["media_url"] == "https://example.org/banjir.jpg"
    )
    requested = datetime.fromisoformat(req["requested_datetime"])
    assert req["requested_datetime"].endswith("+07:00") and req["updated_datetime"].endswith(
        "+07:00"
    )
    assert datetime.fromisoformat(req["expected_datetime"]) - requested == timedelta(days=7)
    assert abs(datetime.now(UTC) - requested) < timedelta(minutes=1)
    assert req["address_id"] == "3173080003002000" and "Gambir" in req["address"]
    assert "Ani" not in res.text and "example.com" not in res.text.lower()
    assert api.token not in res.text

    root = xml(api.get(f"{V2}/requests/{sid}.xml"))
    assert root.tag == "service_requests"
    [node] = root.findall("request")
    assert node.findtext("service_request_id") == sid and node.findtext("status") == "open"
    assert node.find("zipcode") is not None and not node.find("zipcode").text  # empty element
    assert float(node.findtext("lat")) == -6.1754


def test_json_post_with_xml_response(api):
    res = api.post(
        f"{V2}/requests.xml", json={"service_code": "sampah", "lat": -6.195, "long": 106.8229}
    )
    assert res.status_code == 201
    root = xml(res)
    assert root.tag == "service_requests"
    sid = root.findtext("request/service_request_id")
    assert root.find("request/account_id") is not None
    assert api.get(f"{V2}/requests/{sid}.json").json()[0]["service_code"] == "sampah"


def test_status_follows_the_workflow(api):
    sid = create(api)
    assert api.post(f"/reports/{sid}/events", json={"status": "disposisi"}).status_code == 201
    assert api.post(f"/reports/{sid}/events", json={"status": "koordinasi"}).status_code == 201
    [req] = api.get(f"{V2}/requests/{sid}.json").json()
    assert (req["status"], req["status_notes"]) == ("open", "Koordinasi")
    assert api.post(f"/reports/{sid}/events", json={"status": "selesai"}).status_code == 201
    [req] = api.get(f"{V2}/requests/{sid}.json").json()
    assert (req["status"], req["status_notes"]) == ("closed", "Selesai")
    assert req["updated_datetime"] >= req["requested_datetime"]


def test_resent_external_id_does_not_duplicate(api, db):
    key = f"client-{uuid.uuid4().hex}"
    first = create(api, external_id=key)
    with unchanged(db):
        assert create(api, expect=200, external_id=key) == first
    header = f"hdr-{uuid.uuid4().hex}"
    res = api.post(
        f"{V2}/requests.json",
        data={"service_code": "banjir", **MONAS},
        headers={"Idempotency-Key": header},
    )
    assert res.status_code == 201
    with unchanged(db):
        again = api.post(
            f"{V2}/requests.json",
            data={"service_code": "banjir", **MONAS},
            headers={"Idempotency-Key": header},
        )
    assert again.status_code == 200
    assert again.json()[0]["service_request_id"] == res.json()[0]["service_request_id"]
    # without a key every POST is a new request
    assert create(api) != create(api)


# --------------------------------------------------------------------------- search


def test_search_by_ids_codes_and_status(api):
    a = create(api, service_code="pohon_tumbang")
    b = create(api, service_code="pohon_tumbang")
    c = create(api, service_code="parkir_liar")
    got = api.get(f"{V2}/requests.json", params={"service_request_id": f"{a},{c},not-an-id"}).json()
    assert {r["service_request_id"] for r in got} == {a, c}
    got = api.get(f"{V2}/requests.json", params={"service_code": "pohon_tumbang"}).json()
    assert {a, b} <= {r["service_request_id"] for r in got} and c not in {
        r["service_request_id"] for r in got
    }
    for status in ("disposisi", "ditolak"):
        assert api.post(f"/reports/{b}/events", json={"status": status}).status_code == 201
    closed = {
        r["service_request_id"]
        for r in api.get(f"{V2}/requests.json", params={"status": "closed"}).json()
    }
    open_ = {
        r["service_request_id"]
        for r in api.get(f"{V2}/requests.json", params={"status": "open"}).json()
    }
    assert b in closed and b not in open_ and a in open_ and a not in closed
    both = api.get(
        f"{V2}/requests.json", params={"status": "open,closed", "service_code": "pohon_tumbang"}
    ).json()
    assert {a, b} <= {r["service_request_id"] for r in both}
    root = xml(api.get(f"{V2}/requests.xml", params={"service_request_id": f"{a},{b}"}))
    assert root.tag == "service_requests" and len(root.findall("request")) == 2


def test_search_date_window(api):
    old = datetime.now(UTC) - timedelta(days=120)
    res = api.post(
        "/reports",
        json={
            "category": "kebakaran",
            "lat": -6.1754,
            "lon": 106.8272,
            "created_at": old.isoformat(),
        },
    )
    assert res.status_code == 201
    rid = res.json()["id"]
    recent = create(api, service_code="kebakaran")

    def found(**params) -> set[str]:
        res = api.get(f"{V2}/requests.json", params={"service_code": "kebakaran", **params})
        assert res.status_code == 200, res.text
        return {r["service_request_id"] for r in res.json()}

    assert recent in found() and rid not in found()  # default: the last 90 days
    day = old.astimezone(UTC).date()
    assert rid in found(
        start_date=(day - timedelta(days=1)).isoformat(),
        end_date=(day + timedelta(days=1)).isoformat(),
    )
    assert rid in found(start_date=(old - timedelta(hours=1)).isoformat())  # start + 90 days
    assert rid not in found(end_date=(old - timedelta(hours=1)).isoformat())
    assert rid in found(end_date=(old + timedelta(days=30)).isoformat())  # end - 90 days


@pytest.mark.parametrize(
    "params",
    [
        {"start_date": "2024-01-01", "end_date": "2024-06-01"},  # more than 90 days
        {"start_date": "2024-01-01T00:00:00+07:00", "end_date": "2024-03-31T00:00:01+07:00"},
        {"start_date": "2024-03-01", "end_date": "2024-02-01"},
        {"start_date": "last week"},
        {"status": "pending"},
        {"service_code": "ufo"},
    ],
)
def test_bad_searches_are_open311_400s(api, params):
    res = api.get(f"{V2}/requests.json", params=params)
    assert res.status_code == 400
    assert res.json()[0]["code"] == 400
    res = api.get(f"{V2}/requests.xml", params=params)
    assert res.status_code == 400 and xml(res).tag == "errors"


def test_exactly_90_days_is_allowed(api):
    res = api.get(
        f"{V2}/requests.json", params={"start_date": "2024-01-01", "end_date": "2024-03-31"}
    )
    assert res.status_code == 200


def test_hidden_reports_are_not_served(api):
    res = api.post(
        "/reports", json={"category": "banjir", "lat": -6.1754, "lon": 106.8272, "public": False}
    )
    assert res.status_code == 201
    rid = res.json()["id"]
    assert api.get(f"{V2}/requests/{rid}.json").status_code == 404
    assert api.get(f"{V2}/requests.json", params={"service_request_id": rid}).json() == []
    assert rid not in {r["service_request_id"] for r in api.get(f"{V2}/requests.json").json()}


def test_unknown_request_is_404(api):
    res = api.get(f"{V2}/requests/{uuid.uuid4()}.xml")
    assert res.status_code == 404 and xml(res).findtext("error/code") == "404"


def test_at_most_1000_results(make_database, settings):
    """1,005 reports in a throw-away database: a search returns 1,000."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    dsn = make_database()
    with psycopg.connect(dsn) as conn:
        sync_catalog(conn)
        conn.execute(
            "INSERT INTO reports (source, external_id, category, opd, created_at, updated_at, "
            "geom, snap_method, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11) "
            "SELECT 'test', i::text, 'banjir', 'DSDA', now() - i * interval '1 minute', now(), "
            "ST_SetSRID(ST_MakePoint(106.8272, -6.1754), 4326), 'outside', 0, 0, 0, 0, 0 "
            "FROM generate_series(1, 1005) i"
        )
    with TestClient(create_app(settings, dsn=dsn)) as small:
        got = small.get(f"{V2}/requests.json").json()
        assert len(got) == 1000
        times = [r["requested_datetime"] for r in got]
        assert times == sorted(times, reverse=True)
        assert len(xml(small.get(f"{V2}/requests.xml")).findall("request")) == 1000


# ------------------------------------------------------------------- bad input stores nothing


@pytest.mark.parametrize(
    "fields",
    [
        {"service_code": "ufo", **MONAS},
        {"service_code": "", **MONAS},
        {**MONAS},
        {"service_code": "banjir"},
        {"service_code": "banjir", "address_string": "Jl. Medan Merdeka"},
        {"service_code": "banjir", "lat": "91", "long": "106.8"},
        {"service_code": "banjir", "lat": "-6.17", "long": "200"},
        {"service_code": "banjir", "lat": "north", "long": "106.8"},
        {"service_code": "banjir", "lat": "-6.2", "long": "107.5"},  # outside the service area
        {"service_code": "banjir", **MONAS, "description": "x" * 4001},
        {"service_code": "banjir", **MONAS, "media_url": "file:///etc/passwd"},
    ],
)
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_bad_posts_are_400_and_store_nothing(api, db, fields, fmt):
    with unchanged(db):
        res = api.post(f"{V2}/requests.{fmt}", data=fields)
    assert res.status_code == 400, res.text
    if fmt == "xml":
        root = xml(res)
        assert root.tag == "errors" and root.findtext("error/code") == "400"
        assert root.findtext("error/description")
    else:
        [error] = res.json()
        assert error["code"] == 400 and error["description"]


def test_unknown_service_code_names_the_known_ones(api, db):
    with unchanged(db):
        res = api.post(f"{V2}/requests.json", data={"service_code": "ufo", **MONAS})
    assert "banjir" in res.json()[0]["description"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1]", b'"text"'])
def test_malformed_json_is_400_and_stores_nothing(api, db, raw):
    with unchanged(db):
        res = api.post(
            f"{V2}/requests.json", content=raw, headers={"content-type": "application/json"}
        )
    assert res.status_code == 400 and res.json()[0]["code"] == 400


def test_body_too_large_is_413_and_stores_nothing(api, db, settings):
    with unchanged(db):
        res = api.post(
            f"{V2}/requests.json",
            data={
                "service_code": "banjir",
                **MONAS,
                "description": "x" * (settings.api.max_body_bytes + 1),
            },
        )
    assert res.status_code == 413


def test_file_upload_is_refused(api, db):
    with unchanged(db):
        res = api.post(
            f"{V2}/requests.json",
            data={"service_code": "banjir", **MONAS},
            files={"media": ("a.jpg", b"\xff\xd8")},
        )
    assert res.status_code == 400 and "media_url" in res.json()[0]["description"]
