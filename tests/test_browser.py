"""The map pages in a real browser: Debian Chromium, headless, driven by Selenium 4.

The app runs under uvicorn in a thread on a free 127.0.0.1 port against the test
database (real boundaries plus a few thousand synthetic reports).  Nothing is
downloaded: the driver is /usr/bin/chromedriver (Selenium Manager is skipped and
``SE_OFFLINE`` set), and every request the pages make must go to 127.0.0.1.
Screenshots are kept in ``var/test/screenshots/``.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from synthetic_reports import ensure_synthetic_reports

from api.auth import create_key
from petalapor.settings import PROJECT_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = PROJECT_ROOT / "var" / "test" / "screenshots"


# --------------------------------------------------------------------------- PNG without PIL


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB/RGBA PNG as an (h, w, c) uint8 array (zlib + numpy only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 4 if color == 6 else 3
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(
        height, 1 + width * bpp
    )
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average, Paeth: sequential along the row
            cur = np.zeros_like(line)
            for x in range(width):
                s = slice(x * bpp, (x + 1) * bpp)
                a = cur[(x - 1) * bpp : x * bpp] if x else np.zeros(bpp, dtype=np.int32)
                b = prev[s]
                if kind == 3:
                    cur[s] = (line[s] + (a + b) // 2) % 256
                else:
                    c = prev[(x - 1) * bpp : x * bpp] if x else np.zeros(bpp, dtype=np.int32)
                    p = a + b - c
                    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
                    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
                    cur[s] = (line[s] + pred) % 256
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)[:, :, :3]


def region_stats(png: bytes, rect: dict, exclude: list[dict] = ()) -> tuple[float, float, int]:
    """Std of luminance, share of pixels unlike the most common colour, and distinct colours."""
    img = decode_png(png).astype(np.int32)
    x0, y0 = int(rect["x"]), int(rect["y"])
    x1, y1 = x0 + int(rect["width"]), y0 + int(rect["height"])
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = True
    for r in exclude:  # controls drawn over the map
        mask[int(r["y"]) : int(r["y"] + r["height"]), int(r["x"]) : int(r["x"] + r["width"])] = (
            False
        )
    px = img[mask]
    packed = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    background = values[np.argmax(counts)]
    lum = 0.299 * px[:, 0] + 0.587 * px[:, 1] + 0.114 * px[:, 2]
    return float(lum.std()), float((packed != background).mean()), int(len(values))


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(loaded_dsn: str, settings) -> Iterator[str]:
    """The app under uvicorn in a thread, on a free port, with synthetic reports."""
    import uvicorn

    from api.app import create_app

    ensure_synthetic_reports(loaded_dsn)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, dsn=loaded_dsn),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def framing_url(app_url: str) -> Iterator[str]:
    """A second server, on another port, whose pages frame the app's /embed (and /map)."""
    port = free_port()
    pages = {
        "/embed.html": '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
        f'<body style="margin:0"><h3>Situs lain</h3>'
        f'<iframe id="w" src="{app_url}/embed?layer=kelurahan&metric=count&period=all&lang=en" '
        'width="760" height="520" style="border:1px solid #888"></iframe></body></html>',
        # the embed builder's default size: the legend starts folded
        "/embed-small.html": '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
        f'<body style="margin:0"><iframe id="w" src="{app_url}/embed?layer=kelurahan&period=all'
        '&lang=en" width="600" height="420" style="border:0"></iframe></body></html>',
        "/map.html": '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
        f'<body><iframe id="w" src="{app_url}/map" width="600" '
        'height="400"></iframe></body></html>',
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def driver() -> Iterator:
    """Headless Debian Chromium; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(
                f"{path} is missing: apt-get install chromium chromium-driver (./dev install does)"
            )
    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="petalapor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--mute-audio",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def severe_logs(drv) -> list[dict]:
    """Console errors since the last call (the log is drained by reading it)."""
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def resources(drv) -> list[str]:
    return drv.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; });"
    )


def wait_for(drv, script: str, timeout: float = 30, what: str = "") -> object:
    """Poll a JS expression until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = drv.execute_script(f"try {{ return ({script}); }} catch (e) {{ return null; }}")
        if value:
            return value
        if time.monotonic() > deadline:
            logs = [e["message"][:300] for e in drv.get_log("browser")][-10:]
            raise AssertionError(f"timed out waiting for {what or script}; console: {logs}")
        time.sleep(0.2)


TILES_SETTLED = """
window.PL && PL.ready && Object.keys(PL.layers).every(function (k) {
  var l = PL.layers[k].layer;
  return !PL.map.hasLayer(l) || !l.isLoading || !l.isLoading();
})
"""


def settle(drv, timeout: float = 45) -> None:
    """Wait until no visible tile layer is loading and the resource list stops growing."""
    wait_for(drv, TILES_SETTLED, timeout, "tiles to load")
    last, stable = -1, 0
    deadline = time.monotonic() + timeout
    while stable < 3 and time.monotonic() < deadline:
        n = len(resources(drv))
        stable = stable + 1 if n == last else 0
        last = n
        time.sleep(0.25)
    wait_for(drv, TILES_SETTLED, timeout, "tiles to load")


def map_rect(drv) -> dict:
    return drv.execute_script(
        "var r = PL.map.getContainer().getBoundingClientRect();"
        "return {x: r.left, y: r.top, width: r.width, height: r.height};"
    )


def control_rects(drv) -> list[dict]:
    return drv.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('.leaflet-control'),"
        " function (el) { var r = el.getBoundingClientRect();"
        " return {x: r.left, y: r.top, width: r.width, height: r.height}; });"
    )


def assert_local_only(urls: list[str], base: str) -> None:
    foreign = [
        u for u in urls if not u.startswith(base + "/") and not u.startswith(("data:", "blob:"))
    ]
    assert foreign == [], f"requests to other hosts: {foreign[:5]}"


# --------------------------------------------------------------------------- tests


def test_map_loads_draws_and_refilters(driver, app_url):
    driver.get(app_url + "/map")
    wait_for(driver, "window.PL && PL.ready", 30, "PL.init")
    layers = driver.execute_script("return Object.keys(PL.layers);")
    assert "hexes" in layers, f"the tile service is not serving hexes (layers: {layers})"
    settle(driver)
    assert severe_logs(driver) == []
    first = resources(driver)
    assert_local_only(first, app_url)
    assert any("/tiles/hexes/" in u for u in first)
    assert any("/static/vendor/leaflet/dist/leaflet.js" in u for u in first)
    # every map credits its data: a link to /sources in the attribution
    link = driver.find_element("css selector", ".leaflet-control-attribution a[href='/sources']")
    assert link.text == "Sumber data"

    # the tiles draw: the map area is far from a flat background
    png = driver.get_screenshot_as_png()
    (SHOTS / "map.png").write_bytes(png)
    std, not_bg, colours = region_stats(png, map_rect(driver), control_rects(driver))
    assert std > 8 and not_bg > 0.02 and colours > 50, (std, not_bg, colours)
    # ... and without the tile layers it is (nearly) flat
    driver.execute_script(
        "Object.keys(PL.layers).forEach(function (k) { PL.map.removeLayer(PL.layers[k].layer); });"
    )
    time.sleep(0.5)
    blank = driver.get_screenshot_as_png()
    std0, not_bg0, _ = region_stats(blank, map_rect(driver), control_rects(driver))
    assert not_bg0 < not_bg / 3 and std0 < std, (std0, not_bg0)
    driver.execute_script(
        "PL.map.addLayer(PL.layers.hexes.layer); PL.map.addLayer(PL.layers.outline.layer);"
    )
    settle(driver)

    # toggling a layer in the layer control requests that layer's tiles
    before = len(resources(driver))
    driver.execute_script(
        "var labels = document.querySelectorAll('.leaflet-control-layers-overlays label');"
        "for (var i = 0; i < labels.length; i++) {"
        "  if (labels[i].textContent.indexOf(arguments[0]) >= 0) {"
        "    labels[i].querySelector('input').click();"
        "  }"
        "}",
        "RW",
    )
    settle(driver)
    new = resources(driver)[before:]
    assert any("/tiles/rw/" in u for u in new), new[:5]

    # changing a filter re-requests the tiles with the filter in the query string, no reload
    driver.execute_script("window.__noReload = true;")
    before = len(resources(driver))
    driver.execute_script(
        "var s = document.querySelector('#pl-filter-form select[name=category]');"
        "s.value = 'banjir'; s.dispatchEvent(new Event('change'));"
    )
    settle(driver)
    new = resources(driver)[before:]
    assert any("/tiles/hexes/" in u and "category=banjir" in u for u in new), new[:5]
    assert any("/tiles/rw/" in u and "category=banjir" in u for u in new), new[:5]
    assert driver.execute_script("return window.__noReload === true;"), "the page reloaded"

    # the metric switch restyles the choropleths
    driver.execute_script(
        "var s = document.querySelector('#pl-filter-form select[name=metric]');"
        "s.value = 'resolved_share'; s.dispatchEvent(new Event('change'));"
    )
    settle(driver)
    assert driver.execute_script("return PL.metric;") == "resolved_share"
    legend = driver.find_element("css selector", ".pl-legend").text
    assert "Bagian selesai" in legend
    driver.get_screenshot_as_png()
    (SHOTS / "map_filtered.png").write_bytes(driver.get_screenshot_as_png())
    assert severe_logs(driver) == []
    assert_local_only(resources(driver), app_url)


def test_map_popup_on_click(driver, app_url, loaded_dsn):
    from selenium.webdriver.common.action_chains import ActionChains

    with psycopg.connect(loaded_dsn) as conn:  # the centre of the busiest H3 r9 cell
        lon, lat = conn.execute(
            "SELECT avg(ST_X(geom)), avg(ST_Y(geom)) FROM reports WHERE public "
            "GROUP BY h3_r9 ORDER BY count(*) DESC, h3_r9 LIMIT 1"
        ).fetchone()
    driver.get(app_url + "/map?lang=en")
    wait_for(driver, "window.PL && PL.ready", 30)
    # the language link sits inside the filter panel (not in a 26 px Leaflet button box)
    inside = driver.execute_script(
        "var p = document.querySelector('.pl-filters').getBoundingClientRect();"
        "var a = document.querySelector('.pl-filters .pl-lang').getBoundingClientRect();"
        "return [a.left >= p.left, a.right <= p.right, a.width > 60, a.width, p.width];"
    )
    assert inside[:3] == [True, True, True], inside
    driver.execute_script(
        "PL.map.setView([arguments[0], arguments[1]], 13, {animate: false});", lat, lon
    )
    settle(driver)
    # a click on the hex there opens a popup with its statistics and a link to its summary
    container = driver.find_element("css selector", ".folium-map")
    ActionChains(driver).move_to_element(container).click().perform()
    wait_for(driver, "document.querySelector('.leaflet-popup-content .pl-popup')", 10, "a popup")
    popup = driver.find_element("css selector", ".leaflet-popup-content .pl-popup").text
    assert "H3 hexagons" in popup and "Number of reports" in popup, popup
    time.sleep(0.5)  # the popup fades in
    (SHOTS / "map_popup.png").write_bytes(driver.get_screenshot_as_png())
    assert severe_logs(driver) == []


def test_map_summary_figures_follow_the_filters(driver, app_url, loaded_dsn):
    """The summary panel shows the public reports' city-wide figures for the filters."""
    with psycopg.connect(loaded_dsn) as conn:
        total, category, in_category = conn.execute(
            "SELECT sum(n) OVER (), category, n FROM (SELECT category, count(*) AS n "
            "FROM reports WHERE public AND created_at <= now() GROUP BY category) c "
            "ORDER BY n DESC, category LIMIT 1"
        ).fetchone()
    driver.get(app_url + "/map?lang=en")
    wait_for(driver, "window.PL && PL.ready && PL.kpis", 30, "the summary figures")
    assert driver.execute_script("return PL.kpis.reports;") == total
    panel = driver.find_element("id", "pl-kpis").text
    assert "Public reports at a glance" in panel and f"{total:,}" in panel, panel
    assert "target 95%" in panel and "Resolved within 7 days" in panel
    share = driver.execute_script("return PL.kpis.resolved_share;")
    colour = driver.execute_script(
        "return getComputedStyle(document.querySelector('#pl-kpis .pl-kpi:nth-of-type(3) b'))"
        ".color;"
    )
    assert colour == ("rgb(27, 94, 32)" if share >= 0.95 else "rgb(183, 28, 28)"), colour
    select = driver.find_element("css selector", "#pl-filter-form select[name=category]")
    select.find_element("css selector", f"option[value={category}]").click()
    wait_for(driver, f"PL.kpis && PL.kpis.reports === {int(in_category)}", 30, "refiltered")
    # the download link follows the filters, and reads as a link inside the panel
    link = driver.find_element("id", "pl-download")
    assert link.get_attribute("href") == f"{app_url}/reports/export?category={category}"
    assert link.text == "Download reports (CSV)" and link.size["width"] > 100
    status = driver.find_element("css selector", "#pl-filter-form select[name=status]")
    status.find_element("css selector", "option[value=menunggu]").click()
    wait_for(driver, "PL.kpis && PL.kpis.reports", 30, "figures again")
    assert "status filter does not apply" in driver.find_element("id", "pl-kpis").text
    assert severe_logs(driver) == []


def test_map_finds_a_place_by_name(driver, app_url, loaded_dsn):
    with psycopg.connect(loaded_dsn) as conn:
        code, x0, y0, x1, y1 = conn.execute(
            "SELECT code, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) "
            "FROM boundaries WHERE level = 'kelurahan' AND name = 'Gambir'"
        ).fetchone()
    driver.get(app_url + "/map?lang=en")
    wait_for(driver, "window.PL && PL.ready", 30)
    options = driver.execute_script("return document.querySelectorAll('#pl-places option').length;")
    assert options > 300  # 6 kota, 44 kecamatan, 267 kelurahan
    place = driver.find_element("id", "pl-place")
    place.send_keys("gambir\n")
    wait_for(driver, "PL.map.getZoom() >= 14", 20, "zoom to Gambir")
    view = driver.execute_script(
        "var b = PL.map.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];"
    )
    assert view[0] < (x0 + x1) / 2 < view[2] and view[1] < (y0 + y1) / 2 < view[3], view
    assert driver.execute_script("return PL.place;") == {"level": "kelurahan", "code": code}
    summary = driver.find_element("css selector", "#pl-place-note a.pl-summary")
    assert summary.get_attribute("href") == f"{app_url}/analysis/kelurahan/{code}?lang=en"
    assert summary.text == "Summary Gambir →"
    place.clear()
    place.send_keys("Kec. Gambir, Jakarta Pusat\n")
    wait_for(driver, "PL.place && PL.place.level === 'kecamatan'", 20, "the kecamatan")
    place.clear()
    place.send_keys("Atlantis\n")
    note = driver.find_element("id", "pl-place-note")
    assert "No such place" in note.text and "pl-warn" in note.get_attribute("class")
    (SHOTS / "map_place.png").write_bytes(driver.get_screenshot_as_png())
    # the kelurahan page's "see it on the map" link opens the map there
    driver.get(app_url + f"/map?kelurahan={code}")
    wait_for(driver, "window.PL && PL.ready && PL.map.getZoom() >= 14", 20, "zoom on load")
    view = driver.execute_script(
        "var b = PL.map.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];"
    )
    assert view[0] < (x0 + x1) / 2 < view[2] and view[1] < (y0 + y1) / 2 < view[3], view
    assert severe_logs(driver) == []


def test_every_layer_toggles_without_errors(driver, app_url):
    """Each overlay of the layer control can be switched on (and off) with no console error."""
    driver.get(app_url + "/map")
    wait_for(driver, "window.PL && PL.ready", 30)
    settle(driver)
    names = driver.execute_script(
        "return Array.prototype.map.call("
        "document.querySelectorAll('.leaflet-control-layers-overlays label'),"
        " function (l) { return l.textContent.trim(); });"
    )
    assert len(names) >= 4, names
    toggle = (
        "var labels = document.querySelectorAll('.leaflet-control-layers-overlays label');"
        "for (var i = 0; i < labels.length; i++) {"
        "  if (labels[i].textContent.trim() === arguments[0]) {"
        "    labels[i].querySelector('input').click();"
        "  }"
        "}"
    )
    for name in names:
        driver.execute_script(toggle, name)
        settle(driver)
        assert severe_logs(driver) == [], name
        driver.execute_script(toggle, name)
    # a view where the finer layers (RW, JakWifi) are in their zoom range
    driver.execute_script("PL.map.setView([-6.2, 106.83], 14, {animate: false});")
    for name in names:
        driver.execute_script(toggle, name)
    settle(driver)
    (SHOTS / "map_all_layers.png").write_bytes(driver.get_screenshot_as_png())
    assert severe_logs(driver) == []
    assert_local_only(resources(driver), app_url)


def test_api_docs_render_offline(driver, app_url):
    driver.get(app_url + "/docs")
    wait_for(driver, "document.querySelectorAll('.opblock').length > 20", 30, "the operations")
    assert "/reports/export" in driver.find_element("id", "swagger-ui").text
    assert_local_only(resources(driver), app_url)
    assert severe_logs(driver) == []


def test_embed_in_an_iframe_on_another_port(driver, app_url, framing_url):
    driver.get(framing_url + "/embed.html")
    frame = driver.find_element("id", "w")
    driver.switch_to.frame(frame)
    try:
        wait_for(driver, "window.PL && PL.ready", 30, "embed PL.init")
        settle(driver)
        assert driver.execute_script("return Object.keys(PL.layers);") == ["outline", "kelurahan"]
        urls = resources(driver)
        assert_local_only(urls, app_url)
        assert any("/tiles/kelurahan/" in u for u in urls)
        assert not any("/tiles/reports" in u or "/reports?" in u for u in urls)
        assert driver.execute_script("return document.querySelectorAll('.pl-filters').length;") == 0
        assert "Number of reports" in driver.find_element("css selector", ".pl-legend").text
        toggle = driver.find_element("css selector", ".pl-legend-toggle")
        assert toggle.get_attribute("aria-expanded") == "true"
        rect = map_rect(driver)
    finally:
        driver.switch_to.default_content()
    offset = driver.find_element("id", "w").rect
    png = driver.get_screenshot_as_png()
    (SHOTS / "embed.png").write_bytes(png)
    rect = {
        "x": offset["x"] + rect["x"] + 1,
        "y": offset["y"] + rect["y"] + 1,
        "width": rect["width"] - 2,
        "height": rect["height"] - 2,
    }
    std, not_bg, _ = region_stats(png, rect)
    assert std > 5 and not_bg > 0.05, (std, not_bg)
    assert severe_logs(driver) == []

    # the planner map refuses to be framed (frame-ancestors 'none')
    driver.get(framing_url + "/map.html")
    time.sleep(1.5)
    refused = [
        e
        for e in severe_logs(driver)
        if "frame-ancestors" in e["message"] or "X-Frame-Options" in e["message"]
    ]
    assert refused, "the browser framed /map"


def test_small_embed_folds_its_legend_until_asked(driver, framing_url):
    driver.get(framing_url + "/embed-small.html")
    driver.switch_to.frame(driver.find_element("id", "w"))
    try:
        wait_for(driver, "window.PL && PL.ready", 30, "embed PL.init")
        legend = driver.find_element("css selector", ".pl-legend")
        toggle = legend.find_element("css selector", ".pl-legend-toggle")
        body = legend.find_element("css selector", ".pl-legend-body")
        assert toggle.get_attribute("aria-expanded") == "false" and not body.is_displayed()
        folded = legend.size
        toggle.click()
        body = legend.find_element("css selector", ".pl-legend-body")
        assert body.is_displayed() and "Number of reports" in body.text
        assert legend.size["height"] > folded["height"] + 40
        # a layer refresh (legend rebuilt) keeps the reader's choice
        driver.execute_script("PL.updateLegend();")
        assert legend.find_element("css selector", ".pl-legend-body").is_displayed()
        legend.find_element("css selector", ".pl-legend-toggle").click()
        assert not legend.find_element("css selector", ".pl-legend-body").is_displayed()
        assert severe_logs(driver) == []
    finally:
        driver.switch_to.default_content()


def test_embed_builder_finds_a_kelurahan_by_name(driver, app_url, loaded_dsn):
    """A citizen types a kelurahan's name; the snippet and preview use its code and extent."""
    with psycopg.connect(loaded_dsn) as conn:
        code, name, x0, y0, x1, y1 = conn.execute(
            "SELECT code, name, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) "
            "FROM boundaries WHERE level = 'kelurahan' AND name = 'Gambir'"
        ).fetchone()
    driver.get(app_url + "/embed/builder?lang=en")
    options = driver.execute_script("return document.querySelectorAll('#b-areas option').length;")
    assert options > 250  # every kelurahan of Jakarta is offered
    area = driver.find_element("id", "b-area")
    snippet = driver.find_element("id", "b-snippet")
    note = driver.find_element("id", "b-area-note")

    def enter(text: str) -> None:
        area.clear()
        area.send_keys(text)
        driver.execute_script(
            "document.getElementById('pl-builder').dispatchEvent(new Event('change'));"
        )

    enter(name.lower())
    assert f"kelurahan={code}" in snippet.get_attribute("value")
    assert "lang=en" in snippet.get_attribute("value")  # the embed speaks the page's language
    assert name in note.text and code in note.text and "Jakarta Pusat" in note.text
    assert "pl-warn" not in note.get_attribute("class")
    preview = driver.find_element("id", "b-preview")
    assert f"kelurahan={code}" in preview.get_attribute("src")
    driver.switch_to.frame(preview)
    try:  # the preview opens on the kelurahan
        wait_for(driver, "window.PL && PL.ready", 30, "preview PL.init")
        view = driver.execute_script(
            "var b = PL.map.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), "
            "b.getNorth()];"
        )
    finally:
        driver.switch_to.default_content()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert view[0] < cx < view[2] and view[1] < cy < view[3], view
    assert view[2] - view[0] < 0.2  # zoomed in, not the whole city (about 0.8 degrees wide)

    enter("Atlantis")  # not a kelurahan: said so, and the snippet keeps to the whole city
    assert "pl-warn" in note.get_attribute("class") and "Unknown kelurahan" in note.text
    assert "kelurahan=" not in snippet.get_attribute("value")
    enter("106.80, -6.20, 106.85, -6.15")
    assert "bbox=106.80%2C-6.20%2C106.85%2C-6.15" in snippet.get_attribute("value")
    enter("106.80,-6.20")
    assert "pl-warn" in note.get_attribute("class") and "bbox" not in snippet.get_attribute("value")
    (SHOTS / "builder.png").write_bytes(driver.get_screenshot_as_png())
    assert severe_logs(driver) == []


def test_opd_view_requires_a_key_and_shows_only_its_reports(driver, app_url, loaded_dsn):
    driver.delete_all_cookies()
    driver.get(app_url + "/opd")
    form = driver.find_element("id", "pl-login")
    assert driver.execute_script("return window.PL === undefined;")
    severe_logs(driver)  # the 401 of the login page itself is logged; drain it
    with psycopg.connect(loaded_dsn) as conn:
        _, token = create_key(conn, "opd", "DSDA", "browser test")
        expected = conn.execute(
            "SELECT count(*) FROM reports WHERE opd = 'DSDA'",
            (),  # own hidden reports included
        ).fetchone()[0]
    form.find_element("name", "key").send_keys(token)
    form.submit()
    wait_for(driver, "window.PL && PL.ready", 30, "OPD page")
    wait_for(driver, "typeof PL.reportCount === 'number'", 45, "reports to load")
    settle(driver)
    assert driver.current_url.endswith("/opd")
    opds = set(driver.execute_script("return PL.reportOpds;"))
    assert opds == {"DSDA"}, opds
    assert driver.execute_script("return PL.reportCount;") == min(expected, 5000)
    assert "DSDA" in driver.find_element("id", "pl-who").text
    # its summary panel counts its own reports, hidden ones included (the session is sent)
    wait_for(driver, "PL.kpis && PL.kpis.reports !== undefined", 30, "the OPD's figures")
    assert driver.execute_script("return PL.kpis.reports;") == expected
    assert "Ringkasan laporan OPD" in driver.find_element("id", "pl-kpis").text
    (SHOTS / "opd_overview.png").write_bytes(driver.get_screenshot_as_png())
    # clustered at low zoom: far fewer cluster icons than reports
    icons = len(driver.find_elements("css selector", ".marker-cluster"))
    assert 0 < icons < expected
    # the worst-RW table, sortable, each row zooming the map
    wait_for(
        driver, "document.querySelectorAll('#pl-worst-table tbody tr').length > 0", 30, "the table"
    )
    if driver.execute_script("return PL.cfg.worstUrl;"):
        assert driver.execute_script("return PL.worstSource;") == "analysis"
    rows = driver.find_elements("css selector", "#pl-worst-table tbody tr")
    assert rows
    # each RW's kelurahan links to the kelurahan's summary page (for this OPD's reports)
    link = rows[0].find_elements("tag name", "td")[1].find_element("tag name", "a")
    assert "/analysis/kelurahan/" in link.get_attribute("href")
    assert link.get_attribute("href").endswith("opd=DSDA")
    backlog = [r.find_elements("tag name", "td")[2].text for r in rows]
    assert [int(b) for b in backlog] == sorted((int(b) for b in backlog), reverse=True)
    driver.find_element("id", "pl-sort-days").click()
    assert (
        "▼" in driver.find_element("css selector", "#pl-worst-table th[data-key=median_days]").text
    )
    zoom = driver.execute_script("return PL.map.getZoom();")
    driver.find_elements("css selector", "#pl-worst-table tbody tr")[0].click()
    wait_for(driver, f"PL.map.getZoom() > {zoom}", 20, "zoom to the RW")
    settle(driver)
    urls = resources(driver)
    assert_local_only(urls, app_url)
    assert all("opd=DSDA" in u for u in urls if "/reports?" in u or "/tiles/hotspots/" in u)
    (SHOTS / "opd.png").write_bytes(driver.get_screenshot_as_png())
    assert severe_logs(driver) == []
    driver.delete_all_cookies()
