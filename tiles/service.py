"""The tile service: layers + cache + heatmap + change handling, shared by routes and middleware.

One :class:`TileService` lives on ``app.state.tiles`` while the app runs (the
tile router's lifespan creates, starts and stops it).  Routes call
:meth:`TileService.vector_tile` / :meth:`TileService.heatmap_tile`; the cache
middleware calls :meth:`TileService.cached`; the LISTEN thread calls
:meth:`TileService.process_changes` and :meth:`TileService.on_message`.

HTTP semantics (:func:`tile_response`): an empty tile is ``204 No Content``;
every tile answer (200, 204, 304) carries ``ETag`` (BLAKE2b of the body) and
``Cache-Control`` (``public`` for public tiles, ``private`` for key holders')
and ``Vary: Accept-Encoding, Authorization, X-API-Key``; ``If-None-Match``
with the current ETag gives ``304``.  MVT bodies of 1 KiB or more are gzipped
once when rendered and sent with ``Content-Encoding: gzip`` to clients that
accept it (the app's GZipMiddleware then leaves them alone); PNG is sent as is.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping

import psycopg
import shapely
from psycopg_pool import ConnectionPool

from tiles import cache as cache_module
from tiles.cache import CachedTile, TileCache, TileKey
from tiles.filters import Filters
from tiles.footprint import Footprint
from tiles.heatmap import PNG_MEDIA_TYPE, Heatmap
from tiles.layers import MVT_MEDIA_TYPE, AreaLayer, LayerSet, MVTLayer, TileContext, TileRequest
from tiles.listener import ChangeListener
from tiles.rollup import ChangeBatch, parse_message, process_changes
from tiles.settings import TileSettings
from tiles.tms import H3_RESOLUTIONS, JAKARTA_BOUNDS, Box, Tile, mercator_box, tile_range
from tiles.viewer import Resolver, ViewerLike, cache_role, is_privileged, public_only

log = logging.getLogger("petalapor.tiles")

VARY = "Accept-Encoding, Authorization, X-API-Key"
#: Layer names the URL scheme keeps for itself.
RESERVED_NAMES = frozenset({"style", "heatmap"})
_RES = re.compile(r"(?:^|&)res=(\d+)")


def key_res(key: TileKey) -> int | None:
    """The ``res`` option stored in a cache key's query, if any."""
    match = _RES.search(key.query)
    return int(match.group(1)) if match else None


def accepts_gzip(headers: Mapping[str, str]) -> bool:
    """True when Accept-Encoding allows gzip."""
    for part in headers.get("accept-encoding", "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            quality = params.replace(" ", "").lower().removeprefix("q=")
            try:
                return not params or float(quality) > 0
            except ValueError:
                return True
    return False


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of If-None-Match against the current ETag (``*`` matches)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def tile_response(
    tile: CachedTile, headers: Mapping[str, str], cache_control: str, *, head: bool = False
) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a tile: 304, 204 or 200 (gzip when accepted)."""
    out = [("etag", tile.etag), ("cache-control", cache_control), ("vary", VARY)]
    if etag_matches(headers.get("if-none-match"), tile.etag):
        return 304, out, b""
    if tile.empty:
        return 204, out, b""
    body = tile.body
    if tile.gzip is not None and accepts_gzip(headers):
        body = tile.gzip
        out.append(("content-encoding", "gzip"))
    out += [("content-type", tile.media_type), ("content-length", str(len(body)))]
    return 200, out, b"" if head else body


class TileService:
    """Renders, caches and invalidates tiles for one app (or CLI run).

    Parameters
    ----------
    pool
        The app's connection pool (dict rows are fine).
    settings
        Tile settings (read from the environment when omitted).
    dsn
        Database URL for the LISTEN thread; without it nothing listens.
    resolver
        Headers -> viewer (default :func:`tiles.viewer.public_only`; the app passes
        :class:`api.auth.MemoResolver`).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        settings: TileSettings | None = None,
        *,
        dsn: str | None = None,
        resolver: Resolver | None = None,
        layers: LayerSet | None = None,
        cache: TileCache | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings or TileSettings()
        self.dsn = dsn
        self.ctx = TileContext.from_settings(self.settings)
        self.layers = layers or LayerSet()
        self.cache = (
            cache
            if cache is not None
            else TileCache(self.settings.cache_bytes, self.settings.cache_dir)
        )
        self.heatmap = Heatmap(
            self.ctx,
            self.settings.heatmap_bandwidth_m,
            self.settings.heatmap_colormap,
            self.settings.heatmap_scale,
            self.settings.heatmap_maxzoom,
        )
        self.resolver: Resolver = resolver or public_only
        #: The middleware answers cache hits itself only while this is True.
        self.fast_path = True
        self.instance = uuid.uuid4().hex[:12]
        self.listener: ChangeListener | None = None
        self._bounds: Box | None = None
        self._shapes: dict[tuple[str, str], shapely.Geometry | None] = {}
        for layer in self.layers.builtin.values():
            if isinstance(layer, AreaLayer):
                layer.shape_of = self.area_shape

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bring the roll-ups up to date, then listen (with a DSN and ``listen`` on)."""
        cache_module.on_report_change.append(self.invalidate_point)
        self.sync_registry()
        if self.settings.listen and self.dsn:
            self.listener = ChangeListener(
                self.dsn, self.process_changes, self.on_message, self.drop_report_tiles
            )
            try:
                self.process_changes()
            except Exception:  # noqa: BLE001 - never block the app; the listener retries
                log.exception("tile roll-up refresh at start failed; the listener will retry")
            self.listener.start()

    def stop(self) -> None:
        """Stop listening and unregister the invalidation hook."""
        if self.invalidate_point in cache_module.on_report_change:
            cache_module.on_report_change.remove(self.invalidate_point)
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    # ------------------------------------------------------------------ rendering
    def cache_key(
        self, layer: str, tile: Tile, filters: Filters, viewer: ViewerLike, res: int | None = None
    ) -> TileKey:
        """The cache key of one tile variant."""
        query = filters.key
        if res is not None:
            query = f"{query}&res={int(res)}" if query else f"res={int(res)}"
        return TileKey(layer, tile.z, tile.x, tile.y, query, cache_role(viewer))

    def cache_control(self, viewer: ViewerLike, max_age: int | None = None) -> str:
        """``public`` or ``private`` (key holders) Cache-Control, tiles' max-age by default."""
        scope = "private" if is_privileged(viewer) else "public"
        return f"{scope}, max-age={self.settings.max_age if max_age is None else int(max_age)}"

    def layer(self, name: str, tile: Tile, viewer: ViewerLike, res: int | None = None) -> MVTLayer:
        """The checked layer (404 unknown or zoom out of range, 403, 400 bad option)."""
        layer = self.layers.get(name)
        layer.check(tile, viewer)
        layer.check_options(tile, res)
        return layer

    def vector_tile(
        self, name: str, tile: Tile, filters: Filters, viewer: ViewerLike, res: int | None = None
    ) -> CachedTile:
        """The MVT of one layer tile, from the cache or rendered (then cached)."""
        layer = self.layer(name, tile, viewer, res)
        key = self.cache_key(name, tile, filters, viewer, res)
        found = self.cache.get(key)
        if found is not None:
            return found
        generation = self.cache.generation
        query = layer.query(TileRequest(tile, filters, viewer, res), self.ctx)
        with self.pool.connection() as conn:
            conn.autocommit = True  # one round trip per tile, no BEGIN/COMMIT
            try:
                row = conn.execute(query.sql, query.params, binary=True).fetchone()  # bytea as is
            finally:
                conn.autocommit = False
        body = row["mvt"] if isinstance(row, dict) else row[0]
        result = CachedTile.build(bytes(body or b""), MVT_MEDIA_TYPE)
        self.cache.put(key, result, generation=generation)
        return result

    def check_heatmap(self, tile: Tile) -> None:
        """404 outside the heatmap's zoom range."""
        from petalapor.errors import NotFoundError

        if not self.heatmap.minzoom <= tile.z <= self.heatmap.maxzoom:
            raise NotFoundError(
                "the heatmap is served at zooms "
                f"{self.heatmap.minzoom}..{self.heatmap.maxzoom}, not {tile.z}"
            )

    def heatmap_tile(self, tile: Tile, filters: Filters, viewer: ViewerLike) -> CachedTile:
        """The PNG heatmap tile, from the cache or rendered (then cached)."""
        self.check_heatmap(tile)
        key = self.cache_key(Heatmap.name, tile, filters, viewer)
        found = self.cache.get(key)
        if found is not None:
            return found
        generation = self.cache.generation
        with self.pool.connection() as conn:
            body = self.heatmap.render(conn, tile, filters, viewer)
        result = CachedTile.build(body, PNG_MEDIA_TYPE, compress=False)
        self.cache.put(key, result, generation=generation)
        return result

    def allowed(self, layer: str, tile: Tile, viewer: ViewerLike, res: int | None) -> bool:
        """True when the route would serve this tile to this viewer (no error to report)."""
        if layer == Heatmap.name:
            return self.heatmap.minzoom <= tile.z <= self.heatmap.maxzoom
        try:
            self.layer(layer, tile, viewer, res)
        except Exception:  # noqa: BLE001 - the route produces the proper error
            return False
        return True

    def cached(
        self, layer: str, tile: Tile, filters: Filters, viewer: ViewerLike, res: int | None
    ) -> CachedTile | None:
        """A cached tile if the viewer may see it, else None (the route then decides)."""
        if not self.allowed(layer, tile, viewer, res):
            return None
        return self.cache.get(self.cache_key(layer, tile, filters, viewer, res))

    def bounds(self) -> Box:
        """Lon/lat extent of the boundaries (Jakarta's box before any import)."""
        if self._bounds is None:
            try:
                with self.pool.connection() as conn:
                    row = conn.execute(
                        "SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, "
                        "ST_YMax(e) AS y1 "
                        "FROM (SELECT ST_Extent(geom) AS e FROM boundaries) s"
                    ).fetchone()
                values = list(row.values()) if isinstance(row, dict) else list(row)
                self._bounds = Box(*values) if values[0] is not None else Box(*JAKARTA_BOUNDS)
            except psycopg.Error:
                return Box(*JAKARTA_BOUNDS)
        return self._bounds

    # ------------------------------------------------------------------ changes and invalidation
    def process_changes(self) -> ChangeBatch:
        """Drain the change queue now (refresh roll-ups, notify) and invalidate locally."""
        with self.pool.connection() as conn:
            batch = process_changes(conn, self.ctx, source=self.instance)
        if not batch.empty:
            dropped = self.apply(batch)
            log.info(
                "tile changes: %d queued rows, full=%s, %d tiles dropped, %.0f ms",
                batch.rows,
                batch.full,
                dropped,
                batch.seconds * 1000,
            )
        return batch

    def on_message(self, payload: str) -> None:
        """An invalidation message from any tile server (our own ones are already applied)."""
        if f'"src":"{self.instance}"' in payload:
            return
        self.apply(parse_message(payload))

    def report_layers(self) -> dict[str, object]:
        """Cache layer name -> invalidation rule, for every report-derived layer and the heatmap."""
        return {**self.layers.report_derived(), Heatmap.name: self.heatmap}

    def apply(self, batch: ChangeBatch) -> int:
        """Invalidate what a change batch affects; returns the number of dropped entries."""
        dropped = 0
        if batch.full or len(batch.footprints) > 2000:
            dropped += self.drop_report_tiles()
        elif batch.footprints:
            dropped += self.invalidate_footprints(batch.footprints)
        if batch.boundaries:
            self._bounds = None
            self._shapes.clear()
            dropped += self.cache.invalidate_layers(["kelurahan", "rw"])
        if batch.layers:
            self.sync_registry()
            dropped += self.cache.invalidate_layers(batch.layers)
        return dropped

    def sync_registry(self) -> None:
        """Layer descriptions that depend on stored data (JakWifi real or synthetic)."""
        from db.layers import sync_registry

        try:
            with self.pool.connection() as conn:
                changed = sync_registry(conn)
        except Exception:  # noqa: BLE001 - a description must never stop the tiles
            log.exception("layer registry sync failed; descriptions may be stale")
            return
        if changed:
            log.info("layer descriptions updated from the database: %s", ", ".join(changed))

    def drop_report_tiles(self) -> int:
        """Drop every report-derived tile and forget the heatmap colour scales."""
        self.heatmap.reset()
        return self.cache.invalidate_layers(self.report_layers())

    def invalidate_footprints(self, footprints: Iterable[Footprint]) -> int:
        """Drop exactly the cached tiles whose content depends on these report versions."""
        footprints = list(footprints)
        dropped = 0
        for name, rule in self.report_layers().items():
            with_res = "res" in getattr(rule, "options", ())
            for z in self.cache.zooms(name):
                for fp in footprints:
                    boxes = [rule.tile_box(fp, z, None, self.ctx)]
                    if with_res:
                        boxes += [rule.tile_box(fp, z, r, self.ctx) for r in H3_RESOLUTIONS]
                    boxes = [b for b in boxes if b is not None]
                    if not boxes:
                        continue
                    box = Box(
                        min(b.left for b in boxes),
                        min(b.bottom for b in boxes),
                        max(b.right for b in boxes),
                        max(b.top for b in boxes),
                    )

                    def hit(key: TileKey, rule=rule, fp=fp) -> bool:
                        return rule.touches(fp, Tile(key.z, key.x, key.y), key_res(key), self.ctx)

                    dropped += self.cache.invalidate(name, z, tile_range(box, z), hit)
        return dropped

    def invalidate_point(self, lon: float, lat: float) -> int:
        """Drop the tiles showing a report at ``lon, lat`` (areas within the 100 m snap)."""
        return self.invalidate_footprints(
            [Footprint.from_point(lon, lat, self._areas_near(lon, lat))]
        )

    def _areas_near(self, lon: float, lat: float) -> dict[str, tuple[tuple[str, Box], ...]]:
        try:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    "SELECT level, code, ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, "
                    "ST_YMax(e) AS y1 FROM (SELECT level, code, ST_Envelope(geom) AS e "
                    "FROM boundaries WHERE level IN ('rw', 'kelurahan') AND ST_DWithin(geom_m, "
                    "ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), 32748), 100)) s",
                    (lon, lat),
                ).fetchall()
        except psycopg.Error:
            log.exception("boundary lookup for invalidation failed; dropping all area tiles")
            self.cache.invalidate_layers(["kelurahan", "rw"])
            return {}
        areas: dict[str, list[tuple[str, Box]]] = {}
        for row in rows:
            level, code, *box = list(row.values()) if isinstance(row, dict) else list(row)
            areas.setdefault(level, []).append((code, mercator_box(Box(*box))))
        return {lvl: tuple(found) for lvl, found in areas.items()}

    def area_shape(self, level: str, code: str) -> shapely.Geometry | None:
        """The RW/kelurahan polygon in EPSG:3857 (prepared, memoised; None when unknown)."""
        key = (level, code)
        if key not in self._shapes:
            try:
                with self.pool.connection() as conn:
                    row = conn.execute(
                        "SELECT ST_AsBinary(ST_Transform(geom, 3857)) AS wkb FROM boundaries "
                        "WHERE level = %s AND code = %s",
                        key,
                    ).fetchone()
            except psycopg.Error:
                return None
            shape = None
            if row is not None:
                shape = shapely.from_wkb(bytes(row["wkb"] if isinstance(row, dict) else row[0]))
                shapely.prepare(shape)
            if len(self._shapes) > 20_000:
                self._shapes.clear()
            self._shapes[key] = shape
        return self._shapes[key]
