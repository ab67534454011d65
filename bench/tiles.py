"""Vector tiles: petalapor (cold and warm cache) against tipg on the same PostGIS, same tiles.

Data: 1,000,000 synthetic reports (``tiles.synthetic``, seed 1) in their own
database, ``petalapor_bench_tiles``, on the dev cluster (``db.database_url``)
or the ``DATABASE_URL`` server; made once and reused while the count matches.

Layers, with the same content on both sides:

* **points**: petalapor ``/tiles/reports`` with an admin key (individual reports
  from z14, H3-cell clusters below: that is the layer's design) against tipg
  on the view ``bench_reports`` (the same columns over ``reports``);
* **hexes**: petalapor ``/tiles/hexes?res=9`` with an admin key (r9 cells from
  the roll-up) against tipg on ``bench_hex_r9``, a table made from the same
  roll-up rows (same attributes, same EPSG:3857 polygons, GiST index).

Both serve 4096-unit tiles with a 64-unit buffer and at most 10,000 points per
tile (tipg's default limit; petalapor set to the same).  The same ~200 tile
URLs (z10-z16 over the reports, seeded) go to every server; each server runs
as its own ``uvicorn`` process with one worker on 127.0.0.1, access log off.
The load: 8 keep-alive connections from a small asyncio HTTP/1.1 client,
15 s (``--seconds``) and at most 200,000 requests per measurement, with
``Accept-Encoding: gzip``.  The three servers run side by side and each
measurement is taken in three 5-s slices interleaved with the others', so
background load on a shared machine falls on all of them alike.  "cold" =
petalapor with its tile cache disabled (every request renders); "warm" = cache
on, after one pass over the URLs.  The client uses uvloop when installed.

    python bench/tiles.py [--reports 1000000] [--seconds 15] [--regenerate]

The last line is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg

from db.cluster import create_database

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import db  # noqa: E402
from api.auth import create_key  # noqa: E402
from db.boundaries import store_boundary_set  # noqa: E402
from db.migrate import migrate  # noqa: E402
from gis.boundaries import build_boundary_set, load_manifest  # noqa: E402
from petalapor.catalog import sync_catalog  # noqa: E402
from petalapor.settings import Settings  # noqa: E402
from tiles.layers import TileContext  # noqa: E402
from tiles.rollup import process_changes  # noqa: E402
from tiles.settings import TileSettings  # noqa: E402
from tiles.synthetic import RwPolygons, copy_reports, synthetic_reports  # noqa: E402

BENCH_DB = "petalapor_bench_tiles"
CONCURRENCY = 8
MAX_REQUESTS = 200_000
ZOOMS = range(10, 17)
URLS = 200
GOAL_COLD, GOAL_WARM, GOAL_P99_MS = 3.0, 30.0, 50.0
#: Each measurement is split into this many slices, interleaved across the servers.
ROUNDS = 3

TIPG_OBJECTS = """
DROP VIEW IF EXISTS bench_reports;
CREATE VIEW bench_reports AS
SELECT id::text AS id, category, opd, status, public, false AS cluster,
       to_char(created_at AT TIME ZONE 'Asia/Jakarta', 'YYYY-MM-DD') AS created, geom
FROM reports;
DROP TABLE IF EXISTS bench_hex_r9;
CREATE TABLE bench_hex_r9 AS
SELECT h3 AS id, h3_hex AS h3, res::int AS res, count, open, resolved, resolved_share, median_days,
       within_7d_share, top_category, geom
FROM tile_hex_stats WHERE scope = 'all' AND res = 9 ORDER BY h3;
ALTER TABLE bench_hex_r9 ADD PRIMARY KEY (id);
CREATE INDEX bench_hex_r9_geom ON bench_hex_r9 USING gist (geom);
ANALYZE bench_hex_r9;
"""


# --------------------------------------------------------------------------- data


def bench_database(n_reports: int, regenerate: bool) -> str:
    """URL of the bench database with ``n_reports`` reports and fresh roll-ups."""
    server = db.database_url(Settings(), migrate=False)
    with psycopg.connect(server, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            create_database(conn, BENCH_DB)
    info = psycopg.conninfo.conninfo_to_dict(server)
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    url = f"postgresql://{info.get('user', 'postgres')}@{host}:{port}/{BENCH_DB}"
    migrate(url)
    with psycopg.connect(url) as conn:
        sync_catalog(conn)
        if conn.execute("SELECT count(*) FROM boundaries").fetchone()[0] == 0:
            conn.commit()
            print("storing boundaries ...", flush=True)
            store_boundary_set(url, build_boundary_set(load_manifest()))
        have = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        if regenerate or have != n_reports:
            started = time.perf_counter()
            conn.execute("TRUNCATE reports CASCADE")
            frame = synthetic_reports(RwPolygons.load(conn), n_reports, seed=1)
            print(
                f"generated {n_reports:,} reports in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            started = time.perf_counter()
            copy_reports(conn, frame)
            conn.commit()
            print(f"copied in {time.perf_counter() - started:.1f} s", flush=True)
            conn.execute("ANALYZE reports")
    with psycopg.connect(url) as conn:
        pending = conn.execute("SELECT count(*) FROM tile_changes").fetchone()[0]
        stats = conn.execute("SELECT count(*) FROM tile_hex_stats").fetchone()[0]
        if pending or not stats:
            started = time.perf_counter()
            if not stats:
                conn.execute("INSERT INTO tile_changes (kind) VALUES ('full')")
                conn.commit()
            process_changes(conn, TileContext.from_settings(TileSettings()), source="bench")
            print(f"tile roll-ups refreshed in {time.perf_counter() - started:.1f} s", flush=True)
        conn.execute("ANALYZE tile_hex_stats")
        conn.execute(TIPG_OBJECTS)
        conn.commit()
    return url


def tile_paths(url: str, seed: int = 7) -> list[tuple[int, int, int]]:
    """~200 distinct tiles z10-z16 where reports are, drawn with the reports' density."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    with psycopg.connect(url) as conn:
        pts = np.array(
            conn.execute(
                "SELECT ST_X(geom), ST_Y(geom) FROM reports TABLESAMPLE SYSTEM (2) REPEATABLE (7)"
            ).fetchall()
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pts))
    # distinct tiles holding reports, per zoom, in a random (density-weighted) order
    found: dict[int, list[tuple[int, int, int]]] = {}
    for z in ZOOMS:
        seen: dict[tuple[int, int, int], None] = {}
        for i in order[: 20 * URLS]:
            t = tms.tile(float(pts[i, 0]), float(pts[i, 1]), z)
            seen[(z, t.x, t.y)] = None
        found[z] = list(seen)
    # an even share per zoom; what the low zooms cannot fill goes to the higher ones
    out: list[tuple[int, int, int]] = []
    left = URLS
    for n, z in enumerate(ZOOMS):
        take = min(len(found[z]), left // (len(ZOOMS) - n))
        out += found[z][:take]
        left -= take
    return out


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One uvicorn process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    health: str
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def __enter__(self) -> "Server":
        self.log = ROOT / "var" / "bench" / f"tiles-{self.name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        import httpx

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}{self.health}", timeout=2).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not start; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def uvicorn_argv(app: str, port: int, factory: bool = False) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return argv + (["--factory"] if factory else [])


def tipg_server(url: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIPG_", "PETALAPOR_"))}
    env.update(
        DATABASE_URL=url,
        TIPG_DB_SCHEMAS='["public"]',
        TIPG_DB_TABLES='["public.bench_reports", "public.bench_hex_r9"]',
        TIPG_DB_SPATIAL_EXTENT="false",
        TIPG_DB_DATETIME_EXTENT="false",
        TIPG_CATALOG_TTL="0",
        TIPG_TILE_BUFFER="64",
        TIPG_TILE_RESOLUTION="4096",
        TIPG_MAX_FEATURES_PER_TILE="10000",
    )
    return Server("tipg", uvicorn_argv("tipg.main:app", port), env, port, "/healthz")


def petalapor_server(url: str, name: str, cache: bool) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIPG_", "PETALAPOR_TILES_"))}
    env.update(
        DATABASE_URL=url,
        PETALAPOR_TILES_CACHE_BYTES=str(1 << 30 if cache else 0),
        PETALAPOR_TILES_MAX_POINTS_PER_TILE="10000",
        PETALAPOR_TILES_BUFFER="64",
    )
    return Server(
        name, uvicorn_argv("api.app:create_app", port, factory=True), env, port, "/healthz"
    )


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    """Latencies and status codes of one measurement."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0
    bytes: int = 0

    def merge(self, other: "Result") -> None:
        """Add another measurement of the same server and layer."""
        self.latencies += other.latencies
        for code, n in other.statuses.items():
            self.statuses[code] = self.statuses.get(code, 0) + n
        self.errors += other.errors
        self.seconds += other.seconds
        self.bytes += other.bytes

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(self.latencies, q) * 1000)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = b""
    if status not in (204, 304):
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(parts)
    return status, body, headers.get("connection", "").lower() == "close"


async def _worker(
    port: int, paths: list[str], headers: str, deadline: float, result: Result, offset: int
) -> None:
    reader = writer = None
    i = offset
    while time.perf_counter() < deadline and len(result.latencies) + result.errors < MAX_REQUESTS:
        path = paths[i % len(paths)]
        i += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            status, body, close = await asyncio.wait_for(_read_response(reader), timeout=60)
            elapsed = time.perf_counter() - started
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            result.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status in (200, 204):
            result.latencies.append(elapsed)
            result.bytes += len(body)
        else:
            result.errors += 1
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def load(port: int, paths: list[str], headers: dict[str, str], seconds: float) -> Result:
    """Run the concurrent load; returns the result."""
    header_text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def run() -> Result:
        result = Result()
        started = time.perf_counter()
        deadline = started + seconds
        step = max(1, len(paths) // CONCURRENCY)
        await asyncio.gather(
            *(
                _worker(port, paths, header_text, deadline, result, c * step)
                for c in range(CONCURRENCY)
            )
        )
        result.seconds = time.perf_counter() - started
        return result

    try:  # the client must not be the bottleneck: uvloop when installed
        import uvloop

        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def line(label: str, r: Result) -> str:
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    return (
        f"{label:<28} {r.rate:9.1f} req/s  p50 {r.pct(50):7.1f} ms  p99 {r.pct(99):7.1f} ms  "
        f"errors {r.errors:4d}  ({len(r.latencies):,} ok, "
        f"{r.bytes / max(len(r.latencies), 1) / 1024:.1f} KiB avg; {codes})"
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()

    url = bench_database(args.reports, args.regenerate)
    tiles = tile_paths(url)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM api_keys WHERE name = 'bench/tiles.py'")
        _, admin = create_key(conn, "admin", name="bench/tiles.py")
    print(
        f"{len(tiles)} tiles: "
        + ", ".join(f"z{z} {sum(1 for t in tiles if t[0] == z)}" for z in ZOOMS),
        flush=True,
    )
    petal_headers = {"accept-encoding": "gzip", "x-api-key": admin}
    tipg_headers = {"accept-encoding": "gzip"}
    layers = {
        "points": (
            [
                f"/collections/public.bench_reports/tiles/WebMercatorQuad/{z}/{x}/{y}"
                for z, x, y in tiles
            ],
            [f"/tiles/reports/{z}/{x}/{y}.mvt" for z, x, y in tiles],
        ),
        "hexes": (
            [
                f"/collections/public.bench_hex_r9/tiles/WebMercatorQuad/{z}/{x}/{y}"
                for z, x, y in tiles
            ],
            [f"/tiles/hexes/{z}/{x}/{y}.mvt?res=9" for z, x, y in tiles],
        ),
    }
    results: dict[tuple[str, str], Result] = {}
    servers = {
        "tipg": tipg_server(url),
        "cold": petalapor_server(url, "petalapor-cold", cache=False),
        "warm": petalapor_server(url, "petalapor-warm", cache=True),
    }
    headers = {"tipg": tipg_headers, "cold": petal_headers, "warm": petal_headers}
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        for tipg_paths, petal_paths in layers.values():
            for path in petal_paths:  # one pass fills the warm server's cache
                load_one(servers["warm"].port, path, petal_headers)
            for name in ("tipg", "cold"):  # settle: catalogue, pools, prepared statements
                paths = tipg_paths if name == "tipg" else petal_paths
                load(servers[name].port, paths[:40], headers[name], 2.0)
        # rounds interleave the servers so background load on this shared machine hits all alike
        for _ in range(ROUNDS):
            for layer, (tipg_paths, petal_paths) in layers.items():
                for name in ("tipg", "cold", "warm"):
                    paths = tipg_paths if name == "tipg" else petal_paths
                    part = load(servers[name].port, paths, headers[name], args.seconds / ROUNDS)
                    results.setdefault((name, layer), Result()).merge(part)
    for layer in layers:
        for name, label in (
            ("tipg", "tipg"),
            ("cold", "petalapor cold"),
            ("warm", "petalapor warm"),
        ):
            print(line(f"{label} {layer}", results[(name, layer)]), flush=True)

    ratios = {
        (mode, layer): results[(mode, layer)].rate / max(results[("tipg", layer)].rate, 1e-9)
        for mode in ("cold", "warm")
        for layer in layers
    }
    for (mode, layer), ratio in ratios.items():
        print(f"ratio {mode:<4} {layer:<6} {ratio:6.1f}x tipg")
    warm_p99 = max(results[("warm", layer)].pct(99) for layer in layers)
    cold = min(ratios[("cold", layer)] for layer in layers)
    warm = min(ratios[("warm", layer)] for layer in layers)
    goals = (
        f"goals cold >= {GOAL_COLD:g}x {'met' if cold >= GOAL_COLD else 'MISSED'}, "
        f"warm >= {GOAL_WARM:g}x {'met' if warm >= GOAL_WARM else 'MISSED'}, "
        f"warm p99 < {GOAL_P99_MS:g} ms {'met' if warm_p99 < GOAL_P99_MS else 'MISSED'}"
    )
    print(goals)
    parts = "; ".join(
        f"{layer} {results[('cold', layer)].rate:.0f} cold / "
        f"{results[('warm', layer)].rate:.0f} warm "
        f"vs {results[('tipg', layer)].rate:.0f} req/s"
        for layer in layers
    )
    print(
        f"tiles: {cold:.1f}x tipg cold, {warm:.0f}x warm (min over points and hexes; {parts}; "
        f"warm p99 {warm_p99:.1f} ms; 1 worker each, concurrency {CONCURRENCY}, {args.seconds:g} s)"
    )


def load_one(port: int, path: str, headers: dict[str, str]) -> int:
    """One request (cache warm-up)."""
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=120).status_code


if __name__ == "__main__":
    main()
