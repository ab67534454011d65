"""API keys, roles, sessions, the public rate limit, and what the public can never see."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from typing import Annotated

import psycopg
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from synthetic_reports import SECRET_REPORTER, SECRET_TEXT, SOURCE, ensure_synthetic_reports

from api.auth import (
    PUBLIC,
    AuthSettings,
    Viewer,
    create_key,
    install_auth,
    issue_session,
    list_keys,
    read_session,
    require_admin,
    require_opd,
    revoke_key,
    verify_key,
)
from api.errors import add_exception_handlers
from api.routes.pages import route_paths
from petalapor.cli import build_parser
from petalapor.errors import (
    AuthenticationError,
    DataError,
    InvalidParameterError,
    PermissionDeniedError,
)


@pytest.fixture(scope="module")
def reports_dsn(loaded_dsn: str) -> str:
    """The session database with the synthetic reports."""
    ensure_synthetic_reports(loaded_dsn)
    return loaded_dsn


def cli(dsn: str, argv: list[str], capsys) -> str:
    """Run ``petalapor keys ...`` through the real parser against ``dsn``; its stdout."""
    args = build_parser().parse_args(["keys", *argv])
    args.dsn = dsn
    assert args.func(args) == 0
    return capsys.readouterr().out


def new_key(
    dsn: str, role: str = "opd", opd: str | None = "DSDA", name: str | None = "test"
) -> tuple[str, str]:
    """(key id, token) of a fresh key."""
    with psycopg.connect(dsn) as conn:
        key, token = create_key(conn, role, opd, name)
    return key.id, token


# --------------------------------------------------------------------------- keys and the CLI


def test_cli_create_list_revoke(loaded_dsn, capsys):
    out = cli(
        loaded_dsn,
        ["create", "--role", "opd", "--opd", "DSDA", "--name", "pintu air", "--json"],
        capsys,
    )
    created = json.loads(out)
    assert created["role"] == "opd" and created["opd"] == "DSDA" and created["name"] == "pintu air"
    token = created["token"]
    assert re.fullmatch(r"plk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert token.startswith(f"plk_{created['id']}_")

    listed = json.loads(cli(loaded_dsn, ["list", "--json"], capsys))
    mine = [k for k in listed if k["id"] == created["id"]]
    assert mine and mine[0]["revoked_at"] is None
    assert token not in json.dumps(listed)
    table = cli(loaded_dsn, ["list"], capsys)
    assert created["id"] in table and "active" in table and token not in table

    assert "revoked key" in cli(loaded_dsn, ["revoke", created["id"]], capsys)
    active = json.loads(cli(loaded_dsn, ["list", "--active", "--json"], capsys))
    assert created["id"] not in {k["id"] for k in active}
    with psycopg.connect(loaded_dsn) as conn, pytest.raises(AuthenticationError):
        verify_key(conn, token)


def test_cli_plain_create_prints_token_once(loaded_dsn, capsys):
    out = cli(loaded_dsn, ["create", "--role", "admin", "--name", "ops"], capsys)
    assert "created admin key" in out
    assert len(re.findall(r"plk_[0-9a-f]{12}_\S{43}", out)) == 1


def test_keys_are_stored_hashed_only(loaded_dsn):
    key_id, token = new_key(loaded_dsn)
    secret = token.split("_", 2)[2]
    with psycopg.connect(loaded_dsn) as conn:
        row = conn.execute("SELECT * FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        dump = conn.execute("SELECT string_agg(t::text, '|') FROM api_keys t").fetchone()[0]
    assert token not in dump and secret not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in row


def test_key_validation(loaded_dsn):
    with psycopg.connect(loaded_dsn) as conn:
        with pytest.raises(InvalidParameterError, match="needs --opd"):
            create_key(conn, "opd")
        with pytest.raises(DataError, match="unknown OPD"):
            create_key(conn, "opd", "NOPE")
        with pytest.raises(InvalidParameterError, match="not scoped"):
            create_key(conn, "admin", "DSDA")
        with pytest.raises(InvalidParameterError, match="role"):
            create_key(conn, "superuser")
        key, token = create_key(conn, "opd", "dsda")  # codes are upper-cased
        assert key.opd == "DSDA"
        assert verify_key(conn, token) == Viewer("opd", "DSDA", key.id)
        for bad in (
            "",
            "plk_",
            token + "x",
            token[:-1] + ("A" if token[-1] != "A" else "B"),
            token.replace(key.id, "0" * 12),
        ):
            with pytest.raises(AuthenticationError):
                verify_key(conn, bad)
        assert {k.id for k in list_keys(conn)} >= {key.id}
        assert revoke_key(conn, key.id).revoked_at is not None
        assert revoke_key(conn, token).revoked_at is not None  # the token works as an id too
        from petalapor.errors import NotFoundError

        with pytest.raises(NotFoundError):
            revoke_key(conn, "ffffffffffff")


def test_viewer_scope():
    opd = Viewer("opd", "DSDA", "k")
    assert opd.scope_opd(None) == "DSDA" and opd.scope_opd("DSDA") == "DSDA"
    with pytest.raises(PermissionDeniedError):
        opd.scope_opd("DBM")
    assert Viewer("admin", None, "a").scope_opd("DBM") == "DBM"
    assert (
        not opd.can_see_private and Viewer("admin").can_see_private and not PUBLIC.can_see_private
    )
    assert (
        opd.can_read_opd("DSDA") and not opd.can_read_opd("DBM") and not PUBLIC.can_read_opd("DSDA")
    )
    # hidden reports: the admin sees all, an OPD key its own OPD's, the public none
    assert (opd.private_opd, Viewer("admin").private_opd, PUBLIC.private_opd) == (
        "DSDA",
        None,
        None,
    )
    assert opd.can_see_report("DSDA", False) and not opd.can_see_report("DBM", False)
    assert opd.can_see_report("DBM", True) and Viewer("admin").can_see_report("DBM", False)
    assert PUBLIC.can_see_report("DBM", True) and not PUBLIC.can_see_report("DSDA", False)
    # writes: a key is needed; an OPD key acts for its own OPD only
    assert opd.require_key() is opd
    with pytest.raises(AuthenticationError):
        PUBLIC.require_key()
    with pytest.raises(AuthenticationError):
        PUBLIC.check_acts_for("DSDA")
    opd.check_acts_for("DSDA")
    Viewer("admin", None, "a").check_acts_for("DBM")
    with pytest.raises(PermissionDeniedError):
        opd.check_acts_for("DBM")


# --------------------------------------------------------------------------- HTTP: 401 / 403


def test_whoami_roles(client, loaded_dsn):
    assert client.get("/auth/whoami").json() == {"role": "public", "opd": None, "key_id": None}
    key_id, token = new_key(loaded_dsn)
    for headers in ({"X-API-Key": token}, {"Authorization": f"Bearer {token}"}):
        assert client.get("/auth/whoami", headers=headers).json() == {
            "role": "opd",
            "opd": "DSDA",
            "key_id": key_id,
        }
    r = client.get("/auth/whoami", headers={"X-API-Key": "plk_000000000000_" + "A" * 43})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("ApiKey")
    assert client.get("/auth/whoami", headers={"X-API-Key": "garbage"}).status_code == 401
    with psycopg.connect(loaded_dsn) as conn:
        revoke_key(conn, key_id)
    assert client.get("/auth/whoami", headers={"X-API-Key": token}).status_code == 401


def test_require_opd_and_admin(loaded_dsn, tmp_path):
    """401 without a key, 403 with a key of the wrong role, on a tiny app with real keys."""
    from db.pool import create_pool

    app = FastAPI()
    add_exception_handlers(app)
    install_auth(app, tmp_path)

    @app.get("/opd-only")
    def opd_only(who: Annotated[Viewer, Depends(require_opd)]) -> dict:
        return {"opd": who.opd}

    @app.get("/admin-only")
    def admin_only(who: Annotated[Viewer, Depends(require_admin)]) -> dict:
        return {"role": who.role}

    app.state.pool = create_pool(loaded_dsn)
    try:
        _, opd_token = new_key(loaded_dsn)
        _, admin_token = new_key(loaded_dsn, "admin", None)
        with TestClient(app) as c:
            assert c.get("/opd-only").status_code == 401
            assert c.get("/admin-only").status_code == 401
            assert c.get("/opd-only", headers={"X-API-Key": opd_token}).json() == {"opd": "DSDA"}
            assert c.get("/admin-only", headers={"X-API-Key": opd_token}).status_code == 403
            assert c.get("/admin-only", headers={"X-API-Key": admin_token}).json() == {
                "role": "admin"
            }
            assert c.get("/opd-only", headers={"X-API-Key": admin_token}).status_code == 200
        assert (tmp_path / "auth_secret").stat().st_mode & 0o077 == 0  # generated secret, private
    finally:
        app.state.pool.close()


def test_opd_page_scope(client, loaded_dsn):
    _, token = new_key(loaded_dsn)
    assert client.get("/opd", headers={"X-API-Key": token}).status_code == 200
    r = client.get("/opd", params={"opd": "DBM"}, headers={"X-API-Key": token})
    assert r.status_code == 403
    _, admin = new_key(loaded_dsn, "admin", None)
    assert (
        client.get("/opd", params={"opd": "DBM"}, headers={"X-API-Key": admin}).status_code == 200
    )


# --------------------------------------------------------------------------- sessions


def test_session_token_signing():
    secret = b"s" * 32
    viewer = Viewer("opd", "DSDA", "abcdefabcdef")
    token, expires = issue_session(secret, viewer, 5, now=1000.0)
    assert expires == 1300 and read_session(secret, token, now=1200.0) == viewer
    with pytest.raises(AuthenticationError, match="expired"):
        read_session(secret, token, now=1301.0)
    with pytest.raises(AuthenticationError):
        read_session(b"t" * 32, token, now=1200.0)
    payload, sig = token.removeprefix("pls.").split(".")
    forged = json.dumps({"k": "abcdefabcdef", "r": "admin", "o": None, "e": 99999}).encode()
    import base64

    forged_token = "pls." + base64.urlsafe_b64encode(forged).rstrip(b"=").decode() + "." + sig
    with pytest.raises(AuthenticationError):
        read_session(secret, forged_token, now=1200.0)
    with pytest.raises(AuthenticationError):
        issue_session(secret, PUBLIC, 5)


def test_login_cookie_and_revocation(client, loaded_dsn):
    key_id, token = new_key(loaded_dsn)
    client.cookies.clear()
    r = client.get("/opd")
    assert r.status_code == 401 and 'action="/opd/login"' in r.text
    bad = client.post("/opd/login", data={"key": "plk_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "pl-error" in bad.text
    r = client.post(
        "/opd/login", data={"key": token, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/opd"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and token not in cookie
    assert client.get("/opd").status_code == 200
    assert client.get("/auth/whoami").json()["opd"] == "DSDA"
    # the cookie only authorises reads
    assert client.post("/auth/session").status_code == 401
    # the session is exchangeable as a bearer token too
    session = client.cookies.get("petalapor_session")
    assert (
        client.get("/auth/whoami", headers={"Authorization": f"Bearer {session}"}).json()["role"]
        == "opd"
    )
    with psycopg.connect(loaded_dsn) as conn:
        revoke_key(conn, key_id)
    r = client.get("/opd")
    assert r.status_code == 401 and "pl-error" in r.text
    client.cookies.clear()
    assert client.get("/opd/logout", follow_redirects=False).status_code == 303


def test_session_endpoint(client, loaded_dsn):
    _, token = new_key(loaded_dsn)
    client.cookies.clear()
    assert client.post("/auth/session").status_code == 401
    body = client.post("/auth/session", headers={"X-API-Key": token}).json()
    assert body["token"].startswith("pls.") and body["expires_at"] > time.time()
    assert (
        client.get("/auth/whoami", headers={"Authorization": f"Bearer {body['token']}"}).json()[
            "opd"
        ]
        == "DSDA"
    )
    tampered = body["token"][:-2] + ("AA" if not body["token"].endswith("AA") else "BB")
    assert (
        client.get("/auth/whoami", headers={"Authorization": f"Bearer {tampered}"}).status_code
        == 401
    )


# --------------------------------------------------------------------------- rate limit


def test_public_rate_limit(loaded_dsn, settings, monkeypatch):
    from api.app import create_app

    monkeypatch.setenv("PETALAPOR_AUTH_RATE_BURST", "3")
    monkeypatch.setenv("PETALAPOR_AUTH_RATE_PER_SECOND", "0.2")
    monkeypatch.setenv("PETALAPOR_AUTH_RATE_EXEMPT_CLIENTS", "")
    assert AuthSettings().rate_burst == 3
    _, token = new_key(loaded_dsn)
    with TestClient(create_app(settings, dsn=loaded_dsn)) as c:
        codes = [c.get("/auth/whoami").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/boundaries/kota")
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 5
        # a wrong key does not escape the limit
        assert (
            c.get("/auth/whoami", headers={"X-API-Key": "plk_000000000000_" + "A" * 43}).status_code
            == 429
        )
        # static files are not limited
        assert c.get("/static/app/petalapor.css").status_code == 200
        # another client has its own bucket
        other = TestClient(c.app, client=("10.1.2.3", 5555))
        assert other.get("/auth/whoami").status_code == 200
        # a verified key is not counted against the public bucket
        fresh = TestClient(c.app, client=("10.9.9.9", 5555))
        assert fresh.get("/auth/whoami", headers={"X-API-Key": token}).status_code == 200
        assert all(
            fresh.get("/auth/whoami", headers={"X-API-Key": token}).status_code == 200
            for _ in range(10)
        )


def test_token_bucket_refills():
    from api.auth import TokenBucketLimiter

    lim = TokenBucketLimiter(rate=2.0, burst=2)
    assert lim.take("a", now=0.0) == 0 and lim.take("a", now=0.0) == 0
    assert lim.take("a", now=0.0) == pytest.approx(0.5)
    assert lim.take("a", now=0.6) == 0
    small = TokenBucketLimiter(rate=1.0, burst=1, max_clients=2)
    for ip in "abc":
        small.take(ip, now=0.0)
    assert len(small._buckets) == 2


# --------------------------------------------------------------------------- what the public sees


def _tile_for(lon: float, lat: float, z: int) -> tuple[int, int]:
    import math

    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def _body(r) -> bytes:
    data = r.content
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_no_public_response_leaks_identity_or_hidden_reports(client, reports_dsn):
    """Tiles, GeoJSON, report lists, Open311 GET, pages: no hidden report, no reporter."""
    with psycopg.connect(reports_dsn) as conn:
        hidden = conn.execute(
            "SELECT id::text, external_id, ST_X(geom), ST_Y(geom), opd FROM reports "
            "WHERE source = %s AND NOT public",
            (SOURCE,),
        ).fetchall()
    assert hidden, "the synthetic data has hidden reports"
    secrets_ = [SECRET_TEXT.encode(), SECRET_REPORTER.encode()]
    secrets_ += [h[0].encode() for h in hidden] + [h[1].encode() for h in hidden]
    client.cookies.clear()
    paths = route_paths(client.app)
    urls = ["/map", "/embed", "/embed/builder", "/reports?limit=1000", "/boundaries/kota"]
    urls += [f"/reports?limit=1000&opd={h[4]}" for h in hidden[:3]]
    urls += [f"/reports/{h[0]}" for h in hidden[:3]]
    if "/analysis/resolution" in paths:
        urls += [
            "/analysis/resolution?unit=rw&format=json",
            "/analysis/resolution?unit=h3_9&format=geojson",
        ]
    if "/open311/v2/requests.{fmt}" in paths:
        urls += ["/open311/v2/requests.json", "/open311/v2/requests.xml"]
        urls += [f"/open311/v2/requests/{h[0]}.json" for h in hidden[:3]]
    for _, _, lon, lat, _ in hidden[:3]:
        for z in (12, 15):
            x, y = _tile_for(lon, lat, z)
            if any(p.startswith("/tiles/{layer}") for p in paths):
                urls += [
                    f"/tiles/{layer}/{z}/{x}/{y}.mvt"
                    for layer in ("hexes", "rw", "kelurahan", "reports", "hotspots")
                ]
            if "/heatmap/{z}/{x}/{y}.png" in paths:
                urls.append(f"/heatmap/{z}/{x}/{y}.png")
    checked = 0
    for url in urls:
        r = client.get(url)
        assert r.status_code < 500, url
        if r.status_code >= 400:
            continue
        body = _body(r)
        for secret in secrets_:
            assert secret not in body, f"{url} leaks {secret[:40]!r}"
        checked += 1
    assert checked >= 8


# --------------------------------------------------------------------------- OPD scope of points


def test_opd_key_reads_its_own_hidden_reports(client, reports_dsn):
    """The reports API and Open311 GET show an OPD key its own OPD's hidden reports."""
    _, dsda = new_key(reports_dsn)
    as_dsda = {"X-API-Key": dsda}
    with psycopg.connect(reports_dsn) as conn:
        rows = conn.execute(
            "SELECT id::text, ST_X(geom), ST_Y(geom) FROM reports "
            "WHERE source = %s AND NOT public AND opd = 'DSDA' ORDER BY external_id",
            (SOURCE,),
        ).fetchall()
    assert rows, "the synthetic data has hidden DSDA reports"
    own = [r[0] for r in rows]
    client.cookies.clear()
    for rid, lon, lat in rows[:3]:
        assert client.get(f"/reports/{rid}").status_code == 404
        detail = client.get(f"/reports/{rid}", headers=as_dsda).json()
        assert (detail["id"], detail["public"], detail["opd"]) == (rid, False, "DSDA")
        assert not any("reporter" in k for k in detail)
        assert client.get(f"/open311/v2/requests/{rid}.json", headers=as_dsda).status_code == 200
        near = {"bbox": f"{lon - 1e-4},{lat - 1e-4},{lon + 1e-4},{lat + 1e-4}", "limit": 1000}
        assert rid in {
            i["id"] for i in client.get("/reports", params=near, headers=as_dsda).json()["items"]
        }
        assert rid not in {i["id"] for i in client.get("/reports", params=near).json()["items"]}
    by_id = client.get(
        "/open311/v2/requests.json", params={"service_request_id": ",".join(own)}, headers=as_dsda
    ).json()
    assert {r["service_request_id"] for r in by_id} == set(own)
    # without an OPD filter: every public report plus the key's own hidden ones, no others
    everything = client.get("/reports", params={"limit": 1000}, headers=as_dsda).json()["items"]
    assert {i["opd"] for i in everything if not i["public"]} <= {"DSDA"}
    assert {i["opd"] for i in everything if i["public"]} - {"DSDA"}


def _features(r) -> list[dict]:
    """Decoded features of an MVT response (all layers)."""
    import mapbox_vector_tile

    if r.status_code == 204 or not r.content:
        return []
    tile = mapbox_vector_tile.decode(_body(r))
    return [f for layer in tile.values() for f in layer["features"]]


def test_opd_key_cannot_read_another_opds_points(client, reports_dsn):
    _, dsda = new_key(reports_dsn)
    _, admin = new_key(reports_dsn, "admin", None)
    as_dsda, as_admin = {"X-API-Key": dsda}, {"X-API-Key": admin}
    with psycopg.connect(reports_dsn) as conn:
        others = conn.execute(
            "SELECT id::text, opd, public, ST_X(geom), ST_Y(geom) FROM reports "
            "WHERE source = %s AND opd <> 'DSDA' ORDER BY public, external_id LIMIT 6",
            (SOURCE,),
        ).fetchall()
    hidden = [o for o in others if not o[2]]
    assert hidden
    # the reports API: another OPD's hidden report does not exist for an OPD key; an admin sees it
    for rid, opd, *_ in hidden[:2]:
        assert client.get(f"/reports/{rid}", headers=as_dsda).status_code == 404
        assert client.get(f"/reports/{rid}", headers=as_admin).status_code == 200
        items = client.get("/reports", params={"opd": opd, "limit": 1000}, headers=as_dsda).json()[
            "items"
        ]
        assert items and all(i["public"] for i in items)
    # the OPD page refuses another OPD
    assert client.get("/opd", params={"opd": hidden[0][1]}, headers=as_dsda).status_code == 403
    # Open311 GET: the same scope
    other_ids = ",".join(h[0] for h in hidden)
    found = client.get(
        "/open311/v2/requests.json", params={"service_request_id": other_ids}, headers=as_dsda
    ).json()
    assert found == []
    assert (
        client.get(f"/open311/v2/requests/{hidden[0][0]}.json", headers=as_dsda).status_code == 404
    )
    # the points tiles: an OPD key gets its own OPD's points only
    assert any(p.startswith("/tiles/{layer}") for p in route_paths(client.app)), (
        "tile routes are not mounted"
    )
    for rid, opd, _, lon, lat in others[:4]:
        x, y = _tile_for(lon, lat, 15)
        url = f"/tiles/reports/15/{x}/{y}.mvt"
        assert client.get(url).status_code in (401, 403)
        r = client.get(url, params={"opd": opd}, headers=as_dsda)
        assert r.status_code == 403 or not _features(r), "an OPD key read another OPD's points"
        seen = _features(client.get(url, headers=as_dsda))
        assert all(f["properties"].get("opd") in ("DSDA", None) for f in seen)
        assert rid not in {f["properties"].get("id") for f in seen}
        assert rid in {
            f["properties"].get("id") for f in _features(client.get(url, headers=as_admin))
        }
