"""The API skeleton: /healthz, /boundaries, OpenAPI, body limit, and `petalapor serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import shapely
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.middleware import BodySizeLimitMiddleware
from db.cluster import free_port


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] == "reachable"
    assert body["postgis"].startswith("3.")
    assert body["counts"]["kelurahan"] == 267 and body["counts"]["rw"] == 2698


def test_kelurahan_are_the_real_polygons(client, boundary_set):
    resp = client.get("/boundaries/kelurahan")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/geo+json")
    features = resp.json()["features"]
    assert len(features) == 267
    ref = boundary_set.frames["kelurahan"].set_index("code")
    one = next(f for f in features if f["id"] == "3171010001")
    assert one["properties"]["name"] == ref.loc["3171010001", "name"]
    geom = shapely.geometry.shape(one["geometry"])
    assert abs(geom.area - ref.loc["3171010001", "geometry"].area) / geom.area < 1e-4


def test_bbox_simplify_and_parent(client):
    full = client.get("/boundaries/rw", params={"bbox": "106.82,-6.19,106.83,-6.18"}).json()
    assert 0 < len(full["features"]) < 100
    simple = client.get(
        "/boundaries/rw", params={"bbox": "106.82,-6.19,106.83,-6.18", "simplify": 20}
    ).json()
    assert [f["id"] for f in simple["features"]] == [f["id"] for f in full["features"]]
    assert len(str(simple)) < len(str(full))
    kids = client.get("/boundaries/kelurahan", params={"parent": "3171010"}).json()["features"]
    assert kids and all(f["properties"]["kecamatan_code"] == "3171010" for f in kids)


def test_single_boundary_and_errors(client):
    assert client.get("/boundaries/kota/3173").json()["properties"]["level"] == "kota"
    missing = client.get("/boundaries/kelurahan/0000000000")
    assert missing.status_code == 404 and "0000000000" in missing.json()["detail"]
    assert client.get("/boundaries/desa").status_code == 422
    for bad in ("1,2,3", "a,b,c,d", "106.9,-6.1,106.8,-6.2", "200,0,201,1"):
        resp = client.get("/boundaries/rw", params={"bbox": bad})
        assert resp.status_code == 400, bad
        assert "bbox" in resp.json()["detail"]
    assert client.get("/boundaries/rw", params={"simplify": -1}).status_code == 422


def test_openapi_lists_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/boundaries/{level}", "/boundaries/{level}/{code}"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_body_size_limit():
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"n": len(await request.body())}

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=100)
    with TestClient(app) as tc:
        assert tc.post("/echo", content=b"x" * 100).json() == {"n": 100}
        resp = tc.post("/echo", content=b"x" * 101)
        assert resp.status_code == 413 and "100 bytes" in resp.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(5):
                yield b"y" * 30

        assert tc.post("/echo", content=chunks()).status_code == 413


@pytest.mark.slow
def test_petalapor_serve_answers(loaded_dsn):
    port = free_port()
    env = dict(os.environ, DATABASE_URL=loaded_dsn, PETALAPOR_API_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "petalapor.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "serve did not come up:\n"
                        + (proc.stdout.read() if proc.poll() is not None else "")
                    ) from exc
                time.sleep(0.3)
        assert health.json()["counts"]["kelurahan"] == 267
        kel = httpx.get(
            f"http://127.0.0.1:{port}/boundaries/kelurahan",
            timeout=30,
            headers={"Accept-Encoding": "gzip"},
        )
        assert kel.status_code == 200 and len(kel.json()["features"]) == 267
        assert kel.headers.get("content-encoding") == "gzip"
        pages = {"/map": 200, "/opd": 401, "/embed/builder": 200, "/sources": 200, "/docs": 200}
        for path, code in pages.items():
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30).status_code == code
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    printed = proc.stdout.read()  # the start-up lines name every page
    for path in pages:
        assert f"http://127.0.0.1:{port}{path}" in printed, printed
