"""Who may write and who may read hidden reports: ``/reports`` and Open311, with real keys.

- ``POST /reports`` and Open311 ``POST requests`` need a key (401 without, Open311
  form for Open311); an OPD key files only for its own OPD (403).
- ``POST /reports/{id}/events``: admin for any report, an OPD key for its own OPD's,
  acting as its own OPD.
- Hidden reports: admin all, an OPD key its own OPD's, the public none.

Every refusal is checked to store nothing (row counts of the report tables).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import psycopg
import pytest
from intake import unchanged

from api.auth import create_key, revoke_key
from petalapor.catalog import sync_catalog

V2 = "/open311/v2"
MONAS = {"lat": -6.1754, "lon": 106.8272}
#: A token that looks like a key but matches none.
UNKNOWN_KEY = "plk_000000000000_" + "A" * 43


@pytest.fixture(scope="module")
def db(loaded_dsn: str) -> str:
    """The session database with boundaries and the catalog tables filled."""
    with psycopg.connect(loaded_dsn) as conn:
        sync_catalog(conn)
    return loaded_dsn


@pytest.fixture(scope="module")
def keys(db: str) -> dict[str, dict[str, str]]:
    """X-API-Key headers: an admin key and OPD keys of DSDA (banjir) and DBM (jalan_rusak)."""
    out = {}
    with psycopg.connect(db) as conn:
        for name, role, opd in (
            ("admin", "admin", None),
            ("dsda", "opd", "DSDA"),
            ("dbm", "opd", "DBM"),
        ):
            _, token = create_key(conn, role, opd, f"test_write_auth {name}")
            out[name] = {"X-API-Key": token}
    return out


@pytest.fixture()
def api(client, db):
    """The session client without cookies (a session would make reads non-public)."""
    client.cookies.clear()
    yield client
    client.cookies.clear()


def body(category: str = "banjir", **extra) -> dict:
    """A valid ``POST /reports`` body at Monas."""
    return {
        "category": category,
        **MONAS,
        "description": "uji hak akses",
        "external_id": f"wa-{uuid.uuid4().hex}",
        **extra,
    }


def file_report(api, headers: dict, **extra) -> dict:
    res = api.post("/reports", json=body(**extra), headers=headers)
    assert res.status_code == 201, res.text
    return res.json()


# --------------------------------------------------------------------------- POST /reports


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": UNKNOWN_KEY},
        {"X-API-Key": "garbage"},
        {"Authorization": "Bearer pls.forged.token"},
    ],
    ids=["none", "unknown", "malformed", "forged-session"],
)
def test_post_report_without_a_valid_key_is_401_and_stores_nothing(api, db, headers):
    with unchanged(db):
        res = api.post("/reports", json=body(reporter="+62 812 0000 0001"), headers=headers)
    assert res.status_code == 401, res.text
    assert res.headers["WWW-Authenticate"].startswith("ApiKey")


def test_auth_comes_before_validation(api, db):
    """Without a key even a bad body is a 401: validation tells an anonymous caller nothing."""
    with unchanged(db):
        res = api.post("/reports", json={"category": "ufo", "lat": 91})
    assert res.status_code == 401


def test_revoked_key_cannot_post(api, db):
    with psycopg.connect(db) as conn:
        key, token = create_key(conn, "admin", None, "revoked intake")
        revoke_key(conn, key.id)
    with unchanged(db):
        assert api.post("/reports", json=body(), headers={"X-API-Key": token}).status_code == 401


def test_session_cookie_cannot_post(api, db, keys):
    """The OPD page's cookie authorises reads only, so a cross-site form cannot file reports."""
    from fastapi.testclient import TestClient

    browser = TestClient(api.app)  # its own cookie jar; the app is already running
    login = browser.post(
        "/opd/login", data={"key": keys["dsda"]["X-API-Key"]}, follow_redirects=False
    )
    assert login.status_code == 303 and browser.cookies.get("petalapor_session")
    assert browser.get("/auth/whoami").json()["opd"] == "DSDA"
    with unchanged(db):
        assert browser.post("/reports", json=body()).status_code == 401
        assert (
            browser.post(
                f"{V2}/requests.json",
                data={"service_code": "banjir", "lat": "-6.1754", "long": "106.8272"},
            ).status_code
            == 401
        )


def test_any_key_may_file_for_its_scope(api, keys):
    assert file_report(api, keys["admin"], category="jalan_rusak")["opd"] == "DBM"
    assert file_report(api, keys["admin"], opd="DLH")["opd"] == "DLH"
    assert file_report(api, keys["dsda"])["opd"] == "DSDA"  # banjir goes to DSDA
    # an explicit opd equal to the key's own routes another category to it
    assert file_report(api, keys["dsda"], category="jalan_rusak", opd="DSDA")["opd"] == "DSDA"
    assert file_report(api, keys["dbm"], category="jalan_rusak")["opd"] == "DBM"


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        ("dsda", {"category": "jalan_rusak"}),  # the category's OPD is DBM
        ("dsda", {"category": "banjir", "opd": "DBM"}),  # explicitly routed away
        ("dbm", {"category": "banjir"}),
        ("dbm", {"category": "banjir", "public": False, "reporter": "ani@example.com"}),
    ],
)
def test_opd_key_filing_for_another_opd_is_403_and_stores_nothing(api, db, keys, key, extra):
    with unchanged(db):
        res = api.post("/reports", json=body(**extra), headers=keys[key])
    assert res.status_code == 403, res.text
    assert "scoped to OPD" in res.json()["detail"]


def test_resend_of_another_opds_hidden_report_is_not_echoed(api, db, keys):
    """A re-send that hits another OPD's hidden report confirms the id, never its text."""
    hidden = file_report(api, keys["dsda"], public=False, title="rahasia DSDA")
    resend = {
        **body(category="jalan_rusak"),
        "external_id": hidden["external_id"],
        "source": hidden["source"],
    }
    with unchanged(db):
        res = api.post("/reports", json=resend, headers=keys["dbm"])
    assert res.status_code == 200 and res.json()["id"] == hidden["id"]
    assert res.json()["title"] is None and res.json()["description"] is None
    with unchanged(db):
        own = api.post("/reports", json={**resend, "category": "banjir"}, headers=keys["dsda"])
    assert own.status_code == 200 and own.json()["title"] == "rahasia DSDA"


# --------------------------------------------------------------------------- Open311 POST


def open311(api, fmt: str = "json", headers: dict | None = None, **fields):
    """POST a form-encoded Open311 request at Monas."""
    data = {"service_code": "banjir", "lat": "-6.1754", "long": "106.8272", **fields}
    return api.post(f"{V2}/requests.{fmt}", data=data, headers=headers or {})


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_open311_post_without_key_is_an_open311_401(api, db, fmt):
    with unchanged(db):
        res = open311(api, fmt, email="ani@example.com")
    assert res.status_code == 401 and res.headers["WWW-Authenticate"].startswith("ApiKey")
    if fmt == "xml":
        root = ET.fromstring(res.content)
        assert root.tag == "errors" and root.findtext("error/code") == "401"
        assert "api_key" in root.findtext("error/description")
    else:
        [error] = res.json()
        assert error["code"] == 401 and "api_key" in error["description"]


@pytest.mark.parametrize(
    "how",
    ["field", "query", "header", "json"],
)
def test_open311_post_with_invalid_key_is_an_open311_403(api, db, how):
    with unchanged(db):
        if how == "field":
            res = open311(api, api_key=UNKNOWN_KEY)
        elif how == "query":
            res = api.post(
                f"{V2}/requests.json",
                params={"api_key": "not-a-key"},
                data={"service_code": "banjir", "lat": "-6.1754", "long": "106.8272"},
            )
        elif how == "header":
            res = open311(api, headers={"X-API-Key": UNKNOWN_KEY})
        else:
            res = api.post(
                f"{V2}/requests.json",
                json={"service_code": "banjir", "lat": -6.1754, "long": 106.8272, "api_key": 42},
            )
    if how == "json":  # not a string at all: a bad request
        assert res.status_code == 400 and res.json()[0]["code"] == 400
        return
    assert res.status_code == 403, res.text
    [error] = res.json()
    assert error["code"] == 403 and error["description"]


def test_open311_key_checked_before_the_fields(api, db):
    with unchanged(db):
        res = api.post(f"{V2}/requests.json", data={"service_code": "ufo"})
    assert res.status_code == 401


def test_open311_post_with_valid_keys(api, db, keys):
    token = keys["dsda"]["X-API-Key"]
    for res in (
        open311(api, api_key=token),  # the spec's field
        open311(api, headers=keys["admin"]),  # the header
        open311(api, headers={"Authorization": f"Bearer {token}"}),
        api.post(
            f"{V2}/requests.xml",
            params={"api_key": token},
            data={"service_code": "banjir", "lat": "-6.1754", "long": "106.8272"},
        ),
        api.post(
            f"{V2}/requests.json",
            json={"service_code": "jalan_rusak", "lat": -6.1754, "long": 106.8272},
            headers=keys["dbm"],
        ),
    ):
        assert res.status_code == 201, res.text
        assert token not in res.text


def test_open311_opd_key_for_another_opds_service_is_403(api, db, keys):
    with unchanged(db):
        res = open311(api, service_code="jalan_rusak", api_key=keys["dsda"]["X-API-Key"])
        xml_res = open311(api, "xml", service_code="banjir", headers=keys["dbm"])
    assert res.status_code == 403 and res.json()[0]["code"] == 403
    assert "DBM" in res.json()[0]["description"]
    root = ET.fromstring(xml_res.content)
    assert xml_res.status_code == 403 and root.findtext("error/code") == "403"


def test_open311_field_key_wins_over_header(api, db, keys):
    """The api_key field is the credential when both are sent."""
    with unchanged(db):
        res = open311(
            api,
            service_code="jalan_rusak",
            api_key=keys["dsda"]["X-API-Key"],
            headers=keys["admin"],
        )
    assert res.status_code == 403
    res = open311(
        api, service_code="jalan_rusak", api_key=keys["dbm"]["X-API-Key"], headers=keys["dsda"]
    )
    assert res.status_code == 201


def test_discovery_names_the_key_service(api):
    assert "api_key" in api.get(f"{V2}/discovery.json").json()["key_service"]


# --------------------------------------------------------------------------- events


def test_event_without_key_is_401_and_stores_nothing(api, db, keys):
    rid = file_report(api, keys["admin"])["id"]
    with unchanged(db):
        assert api.post(f"/reports/{rid}/events", json={"status": "disposisi"}).status_code == 401
        res = api.post(
            f"/reports/{rid}/events",
            json={"status": "disposisi"},
            headers={"X-API-Key": UNKNOWN_KEY},
        )
        assert res.status_code == 401
        # the key comes first: a bad body or an unknown report says nothing to the public
        assert api.post(f"/reports/{rid}/events", json={"status": "lost"}).status_code == 401
        assert (
            api.post(f"/reports/{uuid.uuid4()}/events", json={"status": "disposisi"}).status_code
            == 401
        )
    assert api.get(f"/reports/{rid}").json()["status"] == "menunggu"


def test_opd_key_changes_its_own_reports_as_itself(api, keys):
    rid = file_report(api, keys["admin"])["id"]  # banjir: DSDA
    out = api.post(f"/reports/{rid}/events", json={"status": "disposisi"}, headers=keys["dsda"])
    assert out.status_code == 201, out.text
    assert out.json()["events"][-1]["actor_opd"] == "DSDA"  # defaults to the key's OPD
    out = api.post(
        f"/reports/{rid}/events",
        json={"status": "koordinasi", "actor_opd": "DSDA"},
        headers=keys["dsda"],
    )
    assert out.status_code == 201 and out.json()["events"][-1]["actor_opd"] == "DSDA"


def test_opd_key_cannot_change_another_opds_report(api, db, keys):
    rid = file_report(api, keys["admin"])["id"]  # banjir: DSDA
    with unchanged(db):
        res = api.post(f"/reports/{rid}/events", json={"status": "disposisi"}, headers=keys["dbm"])
        assert res.status_code == 403 and "DSDA" in res.json()["detail"]
        res = api.post(
            f"/reports/{rid}/events",
            json={"status": "disposisi", "actor_opd": "DBM"},
            headers=keys["dbm"],
        )
        assert res.status_code == 403
    assert api.get(f"/reports/{rid}").json()["status"] == "menunggu"


def test_opd_key_cannot_act_as_another_opd(api, db, keys):
    rid = file_report(api, keys["admin"])["id"]  # banjir: DSDA
    with unchanged(db):
        for actor in ("DBM", "dsda", "NASA"):
            res = api.post(
                f"/reports/{rid}/events",
                json={"status": "disposisi", "actor_opd": actor},
                headers=keys["dsda"],
            )
            assert res.status_code == 403, (actor, res.text)
    assert api.get(f"/reports/{rid}").json()["events"][-1]["to_status"] == "menunggu"


def test_admin_changes_any_report_and_names_any_actor(api, keys):
    rid = file_report(api, keys["dbm"], category="jalan_rusak")["id"]
    out = api.post(f"/reports/{rid}/events", json={"status": "disposisi"}, headers=keys["admin"])
    assert out.status_code == 201 and out.json()["events"][-1]["actor_opd"] is None
    out = api.post(
        f"/reports/{rid}/events",
        json={"status": "koordinasi", "actor_opd": "DSDA"},
        headers=keys["admin"],
    )
    assert out.status_code == 201 and out.json()["events"][-1]["actor_opd"] == "DSDA"


def test_hidden_reports_for_events(api, db, keys):
    """An OPD key changes its own hidden report; another OPD's does not exist for it."""
    own = file_report(api, keys["dsda"], public=False)["id"]
    res = api.post(f"/reports/{own}/events", json={"status": "disposisi"}, headers=keys["dsda"])
    assert res.status_code == 201 and res.json()["public"] is False
    with unchanged(db):
        res = api.post(f"/reports/{own}/events", json={"status": "proses"}, headers=keys["dbm"])
    assert res.status_code == 404
    res = api.post(f"/reports/{own}/events", json={"status": "proses"}, headers=keys["admin"])
    assert res.status_code == 201


# --------------------------------------------------------------------------- reading hidden reports


@pytest.fixture(scope="module")
def hidden(client, keys) -> dict[str, dict]:
    """Hidden reports of DSDA and DBM and a public one, in a window no other test uses."""
    at = "2019-09-0{}T08:00:00+07:00"
    out = {}
    for n, (name, category, public) in enumerate(
        (("dsda", "banjir", False), ("dbm", "jalan_rusak", False), ("public", "banjir", True)),
        start=1,
    ):
        res = client.post(
            "/reports",
            json=body(category, public=public, title=f"uji {name}", created_at=at.format(n)),
            headers=keys["admin"],
        )
        assert res.status_code == 201, res.text
        out[name] = res.json()
    return out


WINDOW = {"from": "2019-09-01", "to": "2019-09-30"}


def listed(api, headers: dict | None = None, **params) -> set[str]:
    res = api.get("/reports", params={**WINDOW, **params}, headers=headers or {})
    assert res.status_code == 200, res.text
    return {r["id"] for r in res.json()["items"]}


def open311_found(api, ids: list[str], headers: dict | None = None) -> set[str]:
    res = api.get(
        f"{V2}/requests.json", params={"service_request_id": ",".join(ids)}, headers=headers or {}
    )
    assert res.status_code == 200, res.text
    return {r["service_request_id"] for r in res.json()}


@pytest.mark.parametrize(
    ("who", "sees"),
    [
        ("public", {"public"}),
        ("dsda", {"public", "dsda"}),
        ("dbm", {"public", "dbm"}),
        ("admin", {"public", "dsda", "dbm"}),
    ],
)
def test_who_sees_which_hidden_reports(api, keys, hidden, who, sees):
    headers = {} if who == "public" else keys[who]
    ids = {name: r["id"] for name, r in hidden.items()}
    expected = {ids[n] for n in sees}
    assert listed(api, headers) == expected
    assert listed(api, headers, opd="DSDA") == expected & {ids["dsda"], ids["public"]}
    assert open311_found(api, list(ids.values()), headers) == expected
    for name, rid in ids.items():
        code = 200 if name in sees else 404
        assert api.get(f"/reports/{rid}", headers=headers).status_code == code, name
        assert api.get(f"{V2}/requests/{rid}.json", headers=headers).status_code == code, name
        if code == 200:
            assert api.get(f"/reports/{rid}", headers=headers).json()["title"] == f"uji {name}"


def test_open311_search_scope(api, keys, hidden):
    """The date search (no ids) follows the same scope."""
    params = {"start_date": "2019-09-01", "end_date": "2019-09-30"}

    def found(headers: dict) -> set[str]:
        res = api.get(f"{V2}/requests.json", params=params, headers=headers)
        assert res.status_code == 200, res.text
        return {r["service_request_id"] for r in res.json()}

    ids = {name: r["id"] for name, r in hidden.items()}
    assert found({}) == {ids["public"]}
    assert found(keys["dsda"]) == {ids["public"], ids["dsda"]}
    assert found(keys["admin"]) == set(ids.values())
