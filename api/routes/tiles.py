"""Vector tiles, heatmap tiles, TileJSON, the MapLibre style and the tile catalogue.

Endpoints (all GET/HEAD):

* ``/tiles`` -- catalogue of the layers the viewer may see
* ``/tiles/style.json`` -- MapLibre style with all of them
* ``/tiles/{layer}.json`` -- TileJSON 3.0.0
* ``/tiles/{layer}/{z}/{x}/{y}.mvt`` and ``.pbf`` -- Mapbox Vector Tile
* ``/heatmap.json``, ``/heatmap/{z}/{x}/{y}.png``, ``/heatmap/legend``,
  ``/heatmap/legend.png`` -- kernel density heatmap

Filters (``from``, ``to``, ``category``, ``opd``, ``status``) apply to every
report-derived layer and the heatmap; ``res`` to ``hexes``.  Status codes:
400 bad z/x/y, filter or option; 401 unknown key; 403 ``reports`` without an
OPD/admin key; 404 unknown layer or zoom outside the layer's range; 204 empty
tile; 304 ``If-None-Match`` hit.  See :mod:`tiles.service` for the headers.
"""

# No ``from __future__ import annotations``: the endpoint signatures use local
# Annotated aliases (viewer_dep, filters_dep) that FastAPI must see as objects.
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from petalapor.errors import InvalidParameterError
from tiles.cache import CachedTile
from tiles.filters import FilterParams
from tiles.heatmap import PNG_MEDIA_TYPE
from tiles.layers import MVT_MEDIA_TYPE
from tiles.service import VARY, TileService, tile_response
from tiles.settings import TileSettings
from tiles.tilejson import catalog_json, heatmap_tilejson, style_json, vector_tilejson
from tiles.tms import parse_tile
from tiles.viewer import Resolver, ViewerLike, get_viewer

#: Cache-Control max-age of TileJSON, style and catalogue documents (seconds).
JSON_MAX_AGE = 60
TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {MVT_MEDIA_TYPE: {}}, "description": "The tile (gzip when accepted)."},
    204: {"description": "Empty tile."},
    304: {"description": "Not modified (If-None-Match)."},
    400: {"description": "Bad z/x/y, filter or option."},
    401: {"description": "Unknown key."},
    403: {"description": "Layer needs an OPD or admin key."},
    404: {"description": "Unknown layer, or zoom outside its range."},
}


def _res(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidParameterError(f"res must be an integer H3 resolution, got {value!r}")
    return int(value)


@dataclass
class TileFactory:
    """Registers the tile and heatmap endpoints; owns the tile service's lifespan.

    Attributes
    ----------
    settings
        Tile settings.
    viewer
        FastAPI dependency returning the viewer; swap it for the auth system's.
    resolver
        Headers -> viewer for the service (and the cache middleware's fast
        path).  When ``viewer`` is swapped and no resolver is given, the fast
        path is turned off so the middleware never guesses a role.
    """

    settings: TileSettings = field(default_factory=TileSettings)
    viewer: Callable[..., Any] = get_viewer
    resolver: Resolver | None = None
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(lifespan=self.lifespan)
        self.register_routes()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Create the tile service on ``app.state.tiles``, start it, stop it on the way out."""
        service = TileService(
            app.state.pool,
            self.settings,
            dsn=getattr(app.state, "dsn", None),
            resolver=self.resolver,
        )
        if self.viewer is not get_viewer and self.resolver is None:
            service.fast_path = False
        app.state.tiles = service
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    def _json(self, request: Request, body: dict, viewer: ViewerLike) -> JSONResponse:
        service: TileService = request.app.state.tiles
        cache_control = service.cache_control(viewer, max_age=JSON_MAX_AGE)
        return JSONResponse(body, headers={"cache-control": cache_control, "vary": VARY})

    def register_routes(self) -> None:  # noqa: C901 - one block of small endpoint functions
        """Add every endpoint."""
        viewer_dep = Annotated[ViewerLike, Depends(self.viewer)]
        filters_dep = Annotated[FilterParams, Depends()]

        @self.router.get("/tiles", tags=["tiles"], summary="Tile layers the caller may see")
        def catalog(request: Request, filters: filters_dep, viewer: viewer_dep) -> JSONResponse:
            service: TileService = request.app.state.tiles
            layers = [lyr for lyr in service.layers.all() if lyr.visible_to(viewer)]
            body = catalog_json(layers, service.heatmap, str(request.base_url), filters.filters.key)
            return self._json(request, body, viewer)

        @self.router.get(
            "/tiles/style.json", tags=["tiles"], summary="MapLibre style with every layer"
        )
        def style(request: Request, filters: filters_dep, viewer: viewer_dep) -> JSONResponse:
            service: TileService = request.app.state.tiles
            layers = [lyr for lyr in service.layers.all() if lyr.visible_to(viewer)]
            body = style_json(
                layers,
                service.heatmap,
                str(request.base_url),
                filters.filters.key,
                service.bounds(),
            )
            return self._json(request, body, viewer)

        @self.router.get(
            "/tiles/{layer}.json", tags=["tiles"], summary="TileJSON 3.0.0 of one layer"
        )
        def tilejson(
            request: Request,
            layer: str,
            filters: filters_dep,
            viewer: viewer_dep,
            res: Annotated[str | None, Query(description="hexes only: H3 resolution 7-11.")] = None,
        ) -> JSONResponse:
            service: TileService = request.app.state.tiles
            lyr = service.layers.get(layer)
            lyr.check_visible(viewer)
            query = filters.filters.key
            if _res(res) is not None:
                query = f"{query}&res={_res(res)}" if query else f"res={_res(res)}"
            body = vector_tilejson(lyr, str(request.base_url), query, service.bounds())
            return self._json(request, body, viewer)

        def vector_tile(
            request: Request,
            layer: str,
            z: str,
            x: str,
            y: str,
            filters: filters_dep,
            viewer: viewer_dep,
            res: Annotated[
                str | None, Query(description="hexes only: H3 resolution 7-11 (default by zoom).")
            ] = None,
        ) -> Response:
            tile = parse_tile(z, x, y)
            service: TileService = request.app.state.tiles
            result = service.vector_tile(layer, tile, filters.filters, viewer, _res(res))
            return _tile_reply(request, service, viewer, result)

        for suffix in ("mvt", "pbf"):
            for method in ("GET", "HEAD"):
                self.router.add_api_route(
                    f"/tiles/{{layer}}/{{z}}/{{x}}/{{y}}.{suffix}",
                    vector_tile,
                    methods=[method],
                    tags=["tiles"],
                    summary=f"Vector tile (.{suffix})",
                    response_class=Response,
                    responses=TILE_RESPONSES,
                    name=f"vector_tile_{suffix}_{method.lower()}",
                    include_in_schema=method == "GET",
                )

        @self.router.get("/heatmap.json", tags=["heatmap"], summary="TileJSON 3.0.0 of the heatmap")
        def heatmap_json(
            request: Request, filters: filters_dep, viewer: viewer_dep
        ) -> JSONResponse:
            service: TileService = request.app.state.tiles
            body = heatmap_tilejson(
                service.heatmap, str(request.base_url), filters.filters.key, service.bounds()
            )
            return self._json(request, body, viewer)

        @self.router.get("/heatmap/legend", tags=["heatmap"], summary="Heatmap legend (JSON)")
        def legend(request: Request, filters: filters_dep, viewer: viewer_dep) -> JSONResponse:
            service: TileService = request.app.state.tiles
            with service.pool.connection() as conn:
                body = service.heatmap.legend(conn, filters.filters, viewer)
            return self._json(request, body, viewer)

        @self.router.get(
            "/heatmap/legend.png",
            tags=["heatmap"],
            summary="Heatmap colour bar (PNG)",
            response_class=Response,
            responses={200: {"content": {PNG_MEDIA_TYPE: {}}}},
        )
        def legend_png(request: Request) -> Response:
            service: TileService = request.app.state.tiles
            return Response(
                service.heatmap.legend_png(),
                media_type=PNG_MEDIA_TYPE,
                headers={"cache-control": f"public, max-age={self.settings.max_age}"},
            )

        def heatmap_tile(
            request: Request, z: str, x: str, y: str, filters: filters_dep, viewer: viewer_dep
        ) -> Response:
            tile = parse_tile(z, x, y)
            service: TileService = request.app.state.tiles
            result = service.heatmap_tile(tile, filters.filters, viewer)
            return _tile_reply(request, service, viewer, result)

        for method in ("GET", "HEAD"):
            self.router.add_api_route(
                "/heatmap/{z}/{x}/{y}.png",
                heatmap_tile,
                methods=[method],
                tags=["heatmap"],
                summary="Heatmap tile (256x256 RGBA PNG)",
                response_class=Response,
                responses={**TILE_RESPONSES, 200: {"content": {PNG_MEDIA_TYPE: {}}}},
                name=f"heatmap_tile_{method.lower()}",
                include_in_schema=method == "GET",
            )


def _tile_reply(
    request: Request, service: TileService, viewer: ViewerLike, result: CachedTile
) -> Response:
    """A rendered or cached tile as the response (ETag, 304, gzip, HEAD as the middleware)."""
    status, headers, body = tile_response(
        result, request.headers, service.cache_control(viewer), head=request.method == "HEAD"
    )
    return Response(body, status_code=status, headers=dict(headers))
