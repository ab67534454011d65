"""The map pages: local assets only, framing headers, the embed whitelist, i18n, static files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from api.auth import create_key
from api.routes.pages import VENDOR_FILES, missing_vendor_files, parse_embed
from petalapor.errors import InvalidParameterError
from petalapor.settings import PROJECT_ROOT
from web_map import pages
from web_map.i18n import STRINGS, strings

WEB_MAP = PROJECT_ROOT / "web_map"
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*")
SRC = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def opd_token(loaded_dsn: str) -> str:
    with psycopg.connect(loaded_dsn) as conn:
        return create_key(conn, "opd", "DSDA", "pages test")[1]


def external_urls(html: str) -> list[str]:
    """URLs to another host (scheme-relative included); XML namespace names are not requests."""
    local = r"(?:https?:)?//(127\.0\.0\.1|localhost)\b|http://www\.w3\.org/2000/svg$"
    return [u for u in URL.findall(html) if not re.match(local, u)]


def page_config(html: str) -> dict:
    """The JSON a map page hands to ``PL.init``."""
    return json.loads(re.search(r"PL\.init\([a-z_0-9]+, (\{.*\})\);", html).group(1))


def page_urls(client, opd_token) -> dict[str, object]:
    return {
        "/map": client.get("/map"),
        "/map?lang=en": client.get("/map?lang=en"),
        "/opd": client.get("/opd", headers={"X-API-Key": opd_token}),
        "/opd (login)": client.get("/opd"),
        "/opd/login": client.get("/opd/login"),
        "/embed": client.get("/embed"),
        "/embed?layer=rw&metric=median_days&lang=en": client.get(
            "/embed?layer=rw&metric=median_days&lang=en"
        ),
        "/embed/builder": client.get("/embed/builder"),
    }


def test_pages_have_no_external_urls_and_assets_resolve(client, opd_token):
    client.cookies.clear()
    for name, r in page_urls(client, opd_token).items():
        assert r.status_code in (200, 401), name
        assert r.headers["content-type"].startswith("text/html"), name
        html = r.text
        assert external_urls(html) == [], f"{name}: {external_urls(html)}"
        assert "cdn" not in html.lower() and "unpkg" not in html.lower(), name
        for ref in SRC.findall(html):
            if ref.startswith("/static/"):
                asset = client.get(ref)
                assert asset.status_code == 200, f"{name}: {ref}"
                if ref.startswith(
                    "/static/app/"
                ):  # vendor files hold links (licence, attribution), not requests
                    assert external_urls(asset.text) == [], ref


def test_sources_page_names_every_source_and_licence(client, loaded_dsn):
    from layers import registry

    with psycopg.connect(loaded_dsn) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM reports").fetchone()
    r = client.get("/sources", params={"lang": "en"})
    assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
    html = r.text
    assert external_urls(html) == []
    assert f"{stored:,} reports stored" in html and "Reporter identity is never stored" in html
    assert "nusantr" in html and "MIT, (c) 2017 Rasyid Ridha" in html and "imported 20" in html
    for layer in registry.all_layers():
        assert layer.title in html and (not layer.synthetic or "(synthetic)" in html)
    leaflet = json.loads((WEB_MAP / "node_modules/leaflet/package.json").read_text())
    assert f"leaflet {leaflet['version']} ({leaflet['license']})" in html
    assert "swagger-ui-dist" in html
    id_html = client.get("/sources").text
    assert "Sumber data" in id_html and f"{stored:,}".replace(",", ".") + " laporan" in id_html
    config = page_config(client.get("/map?lang=en").text)
    assert config["sourcesUrl"] == "/sources?lang=en"


def test_api_docs_are_served_locally(client):
    """/docs is Swagger UI from web_map/node_modules (no CDN); /redoc is not offered."""
    html = client.get("/docs").text
    assert external_urls(html) == [] and "SwaggerUIBundle" in html
    refs = [ref for ref in SRC.findall(html) if ref.startswith("/static/")]
    assert len(refs) == 2
    for ref in refs:
        assert client.get(ref).status_code == 200, ref
    assert client.get("/redoc").status_code == 404


def test_framing_headers(client, opd_token):
    client.cookies.clear()
    for name, r in page_urls(client, opd_token).items():
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp, name
        if name.startswith("/embed") and not name.startswith("/embed/builder"):
            assert "frame-ancestors *" in csp, name
            assert "x-frame-options" not in r.headers, name
        else:
            assert "frame-ancestors 'none'" in csp, name
            assert r.headers["x-frame-options"] == "DENY", name
        assert r.headers["x-content-type-options"] == "nosniff"


def test_folium_cdn_links_replaced(client):
    html = client.get("/map").text
    assert "/static/vendor/leaflet/dist/leaflet.js" in html
    assert "/static/vendor/leaflet/dist/leaflet.css" in html
    for gone in ("jquery", "bootstrap", "awesome-markers", "fontawesome"):
        assert gone not in html.lower()
    if "L.vectorGrid.protobuf" in html:
        assert "/static/vendor/leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js" in html
    # folium's class defaults are untouched (other folium users keep theirs)
    import folium
    from folium.plugins import VectorGridProtobuf

    assert folium.Map.default_js[0][1].startswith("https://")
    assert VectorGridProtobuf.default_js[0][1].startswith("https://")


@pytest.mark.parametrize(
    "query",
    [
        "foo=1",
        "layer=hexes&callback=x",
        "layer=reports",
        "layer=jakwifi",
        "metric=mean",
        "lang=fr",
        "period=yesterday",
        "period=2024-13",
        "period=2024-05-01..2024-01-01",
        "category=nope",
        "bbox=1,2,3",
        "bbox=106.9,-6.1,106.8,-6.2",
        "kelurahan=3171010001&bbox=106.8,-6.2,106.85,-6.15",
        "kelurahan=not%20a%20code",
        "kelurahan=9999999999",
        "layer=hexes&layer=rw",
        "opd=DSDA",
        "status=selesai",
    ],
)
def test_embed_whitelist_rejects(client, query):
    r = client.get(f"/embed?{query}")
    assert r.status_code == 400, (query, r.text)
    assert r.json()["error"] == "InvalidParameterError"


def test_embed_accepts_the_whitelist(client, loaded_dsn):
    with psycopg.connect(loaded_dsn) as conn:
        code, x0, y0, x1, y1 = conn.execute(
            "SELECT code, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) "
            "FROM boundaries WHERE level = 'kelurahan' ORDER BY code LIMIT 1"
        ).fetchone()
    r = client.get(
        "/embed",
        params={
            "layer": "kelurahan",
            "kelurahan": code,
            "category": "banjir",
            "period": "2024",
            "metric": "within_7d_share",
            "lang": "en",
        },
    )
    assert r.status_code == 200, r.text
    html = r.text
    assert '<html lang="en">' in html
    config = page_config(html)
    (south, west), (north, east) = config["bounds"]
    assert (west, south, east, north) == pytest.approx((x0, y0, x1, y1))
    assert config["metric"] == "within_7d_share"
    assert config["filters"] == {"from": "2024-01-01", "to": "2024-12-31", "category": "banjir"}
    assert config["controls"]["filters"] is False
    # aggregated layers only, fetched without credentials, no point layers
    assert "/tiles/reports" not in html and "/reports" not in html and "jakwifi/{z}" not in html
    assert html.count('"credentials": "omit"') == html.count("L.vectorGrid.protobuf(")
    assert (
        client.get(
            "/embed", params={"bbox": "106.8,-6.2,106.85,-6.15", "period": "all"}
        ).status_code
        == 200
    )


def test_parse_embed_periods():
    import datetime as dt

    from starlette.datastructures import QueryParams

    today = dt.date(2024, 3, 15)
    assert parse_embed(QueryParams(""), today).date_from == "2023-03-16"
    opts = parse_embed(QueryParams("period=2024-02"), today)
    assert (opts.date_from, opts.date_to) == ("2024-02-01", "2024-02-29")
    opts = parse_embed(QueryParams("period=2024-01-05..2024-01-09"), today)
    assert (opts.date_from, opts.date_to) == ("2024-01-05", "2024-01-09")
    assert parse_embed(QueryParams("period=all"), today).date_from is None
    with pytest.raises(InvalidParameterError, match="unknown parameter"):
        parse_embed(QueryParams("zoom=3"), today)


def test_language_switch(client):
    id_html = client.get("/map").text
    en_html = client.get("/map?lang=en").text
    assert '<html lang="id">' in id_html and '<html lang="en">' in en_html
    assert "Peta Laporan Warga Jakarta" in id_html and "Jakarta Citizen Report Map" in en_html
    assert client.get("/map?lang=xx").status_code == 400
    assert page_config(en_html)["t"]["filters"] == "Filters"
    assert "lang=en" in client.get("/embed/builder").text
    builder = client.get("/embed/builder?lang=en").text
    assert '<option value="en" selected>English</option>' in builder


def test_builder_offers_every_kelurahan_by_name(client, loaded_dsn):
    html = client.get("/embed/builder").text
    with psycopg.connect(loaded_dsn) as conn:
        codes = {
            r[0] for r in conn.execute("SELECT code FROM boundaries WHERE level = 'kelurahan'")
        }
    offered = set(re.findall(r'<option value="([0-9]+)" label="[^"]+">', html))
    assert offered == codes and len(codes) > 250
    assert re.search(r'<option value="[0-9]+" label="Gambir, Kec\. Gambir, Jakarta Pusat">', html)
    assert 'list="b-areas"' in html
    assert set(strings("id")) == set(strings("en")) == set(STRINGS)


def test_map_opens_on_a_kelurahan(client):
    html = client.get("/map", params={"kelurahan": "3173080003", "lang": "en"}).text
    config = page_config(html)
    assert config["place"] == ["kelurahan", "3173080003"]
    r = client.get("/map", params={"kelurahan": "<script>"})
    assert r.status_code == 400 and "boundary code" in r.json()["detail"]


def test_map_page_configuration(client):
    html = client.get("/map", params={"category": "banjir", "metric": "median_days"}).text
    config = page_config(html)
    assert config["filters"]["category"] == "banjir" and config["metric"] == "median_days"
    assert (
        config["controls"] == {"filters": True, "legend": True} and config["metricSwitch"] is True
    )
    codes = {c[0] for c in config["catalog"]["categories"]}
    assert {"banjir", "sampah"} <= codes and {"DSDA", "DBM"} <= {
        c[0] for c in config["catalog"]["opds"]
    }
    # filterable layers start with the page's filters in their tile URL
    for url in re.findall(r"L\.vectorGrid\.protobuf\(\s*'([^']+)'", html):
        if "/tiles/hexes/" in url:
            assert "category=banjir" in url


def test_missing_npm_files_are_named(tmp_path):
    assert missing_vendor_files() == []  # ./dev installed them
    assert missing_vendor_files(tmp_path) == sorted(VENDOR_FILES)
    (tmp_path / "leaflet" / "dist").mkdir(parents=True)
    (tmp_path / "leaflet" / "dist" / "leaflet.js").write_text("//")
    assert "leaflet/dist/leaflet.js" not in missing_vendor_files(tmp_path)
    assert "leaflet/dist/leaflet.css" in missing_vendor_files(tmp_path)


def test_static_allow_list(client):
    for path in sorted(VENDOR_FILES):
        if path.endswith(".map"):
            continue
        r = client.get(f"/static/vendor/{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"].split(";")[0] in (
            "text/javascript",
            "text/css",
            "image/png",
        ), path
    for bad in (
        "leaflet/package.json",
        "leaflet/dist/leaflet-src.esm.js",
        "../package.json",
        "%2e%2e/package.json",
        "pbf/dist/pbf.js",
        ".package-lock.json",
    ):
        assert client.get(f"/static/vendor/{bad}").status_code == 404, bad
    for bad in ("../pages.py", "%2e%2e%2fpages.py", "nope.js", "petalapor.py", "..%2fi18n.py"):
        assert client.get(f"/static/app/{bad}").status_code == 404, bad
    assert (
        client.get("/static/app/petalapor.js").headers["content-type"].startswith("text/javascript")
    )


def test_npm_manifest():
    manifest = json.loads((WEB_MAP / "package.json").read_text())
    assert {"leaflet", "leaflet.vectorgrid", "leaflet.markercluster"} <= set(
        manifest["dependencies"]
    )
    lock = json.loads((WEB_MAP / "package-lock.json").read_text())
    assert "node_modules/leaflet" in lock["packages"]
    for spec in manifest["dependencies"].values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", spec), "versions are pinned"
    for path in VENDOR_FILES:
        assert (WEB_MAP / "node_modules" / path).is_file(), f"run npm ci in web_map/ ({path})"


def test_opd_login_form_without_key(client):
    client.cookies.clear()
    r = client.get("/opd")
    assert r.status_code == 401
    assert '<form method="post" action="/opd/login"' in r.text and 'type="password"' in r.text
    assert r.headers["cache-control"] == "no-store"


def test_page_builders_offline_without_layers():
    """Without a tile service the pages still build, with no tile layer and no URL to a host."""
    ctx = pages.PageContext()
    for html in (
        pages.map_page(ctx),
        pages.embed_page(ctx, pages.EmbedOptions(), pages.JAKARTA_BOUNDS),
        pages.opd_page(ctx, "DSDA", "Dinas Sumber Daya Air", "opd"),
        pages.builder_page(ctx),
    ):
        assert external_urls(html) == []
        assert "/tiles/" not in html


def test_basemap_is_optional_and_off(client):
    from api.routes.pages import PagesFactory

    factory = PagesFactory(basemap=("https://tile.example.org/{z}/{x}/{y}.png", "© example"))
    assert factory.basemap is not None
    ctx = pages.PageContext(basemap=factory.basemap)
    html = pages.map_page(ctx)
    assert external_urls(html) == ["https://tile.example.org/{z}/{x}/{y}.png"]
    # added as an overlay that is not shown at start: no addTo for it
    name = re.search(
        r"var (tile_layer_[0-9a-f]+) = L\.tileLayer\(\s*\"https://tile\.example", html
    ).group(1)
    assert f"{name}.addTo(" not in html
    assert "tile.example.org" in factory._img_hosts()


def test_root_redirects_to_map(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/map"


def test_js_files_parse():
    """The page scripts are valid JavaScript (node is installed with npm)."""
    import shutil
    import subprocess

    node = shutil.which("node")
    assert node, "node is needed for the map pages (apt-get install nodejs npm)"
    for name in ("petalapor.js", "builder.js"):
        src = Path(WEB_MAP / "static" / name)
        subprocess.run([node, "--check", str(src)], check=True)


def test_popup_summary_links_resolve(client, loaded_dsn):
    """An RW's and a kelurahan's popup link open the kelurahan's summary page."""
    html = client.get("/map").text
    config = page_config(html)
    with psycopg.connect(loaded_dsn) as conn:
        rw, kelurahan, name = conn.execute(
            "SELECT r.code, k.code, k.name FROM boundaries r JOIN boundaries k "
            "ON k.level = 'kelurahan' AND k.code = r.kelurahan_code "
            "WHERE r.level = 'rw' ORDER BY r.code LIMIT 1"
        ).fetchone()
    props = {
        "rw": {"code": rw, "kelurahan_code": kelurahan},
        "kelurahan": {"code": kelurahan},
    }
    assert set(config["summary"]) >= {"rw", "kelurahan"}
    for level, template in config["summary"].items():
        values = props[level]
        url = re.sub(r"\{(\w+)\}", lambda m, v=values: v[m[1]], template)  # as petalapor.js
        r = client.get(url + "?from=2024-01-01&to=2026-11-30")
        assert r.status_code == 200, (url, r.text[:200])
        assert r.headers["content-type"].startswith("text/html")
        assert (
            f"Kelurahan {name}" in r.text and "laporan dibuat 2024-01-01 s.d. 2026-11-30" in r.text
        )
