"""Tile fast path: answer tile requests before routing (cache hits, and renders).

For ``GET``/``HEAD`` on ``/tiles/{layer}/{z}/{x}/{y}.mvt|.pbf`` and
``/heatmap/{z}/{x}/{y}.png`` it parses the address and the filters and
resolves the viewer with the tile service's resolver.  When the viewer may see
that tile, a cached tile is sent at once; a miss is rendered by the very call
the route makes (``TileService.vector_tile`` / ``heatmap_tile``, in a worker
thread) unless ``PETALAPOR_TILES_FAST_RENDER`` is off.  Responses carry the
same status and headers as the route's (:func:`tiles.service.tile_response`).

Anything else -- a bad parameter, an unknown key, a layer the viewer may not
see, a zoom out of range, a failed render -- goes on to the FastAPI route,
which raises the proper error; so does everything when the service's
``fast_path`` is off (a swapped viewer dependency without a resolver).  Other
paths are never touched.  The route stays the documented endpoint (OpenAPI)
and the reference behaviour; the fast path only skips FastAPI's routing and
dependency machinery, about a millisecond per tile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from tiles.filters import Filters, parse_query_string
from tiles.tms import Tile, parse_tile

_TILE = re.compile(r"^/tiles/([a-z_][a-z0-9_]{0,62})/(\d{1,2})/(\d{1,8})/(\d{1,8})\.(?:mvt|pbf)$")
_HEAT = re.compile(r"^/heatmap/(\d{1,2})/(\d{1,8})/(\d{1,8})\.png$")
_RES = re.compile(r"(?:^|&)res=(\d{1,2})(?:&|$)")


@dataclass(frozen=True)
class _Request:
    service: object
    layer: str
    tile: Tile
    filters: Filters
    viewer: object
    res: int | None
    headers: dict[str, str]
    head: bool


class TileCacheMiddleware:
    """Serve tiles without entering the router (see module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tile request, or pass it on."""
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            req = self._parse(scope)
            if req is not None:
                answer = await self._answer(req)
                if answer is not None:
                    status, headers, body = answer
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [
                                (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _parse(scope: Scope) -> _Request | None:
        path = scope["path"]
        match = _TILE.match(path)
        if match:
            layer, z, x, y = match.groups()
        else:
            match = _HEAT.match(path)
            if not match:
                return None
            layer, (z, x, y) = "heatmap", match.groups()
        app = scope.get("app")
        service = getattr(getattr(app, "state", None), "tiles", None)
        if service is None or not service.fast_path:
            return None
        try:
            tile = parse_tile(z, x, y)
            query = scope.get("query_string", b"")
            filters = parse_query_string(query)
            text = query.decode("latin-1")
            res_match = _RES.search(text)
            if text.count("res=") != (1 if res_match else 0):
                return None  # malformed or repeated res: the route decides
            res = int(res_match.group(1)) if res_match and layer != "heatmap" else None
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in scope.get("headers", ())
            }
            viewer = service.resolver(headers)
            if not service.allowed(layer, tile, viewer, res):
                return None
        except Exception:  # noqa: BLE001 - the route gives the proper error
            return None
        return _Request(
            service, layer, tile, filters, viewer, res, headers, scope["method"] == "HEAD"
        )

    @staticmethod
    async def _answer(req: _Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        from tiles.service import tile_response

        service = req.service
        found = service.cache.get(
            service.cache_key(req.layer, req.tile, req.filters, req.viewer, req.res)
        )
        if found is None:
            if not service.settings.fast_render:
                return None
            try:
                if req.layer == "heatmap":
                    found = await anyio.to_thread.run_sync(
                        service.heatmap_tile, req.tile, req.filters, req.viewer
                    )
                else:
                    found = await anyio.to_thread.run_sync(
                        service.vector_tile, req.layer, req.tile, req.filters, req.viewer, req.res
                    )
            except Exception:  # noqa: BLE001 - the route renders again and raises properly
                return None
        return tile_response(found, req.headers, service.cache_control(req.viewer), head=req.head)
