"""The map pages (``/map``, ``/opd``, ``/embed``, ``/embed/builder``) and their static files.

Static files are served from two places only: an allow-list of files inside
``web_map/node_modules`` (``/static/vendor/...``: Leaflet and its plugins, as npm
installed them) and petalapor's own ``web_map/static`` (``/static/app/...``).

Framing: embeds may be framed by any site (``Content-Security-Policy:
frame-ancestors *``); every other page refuses it (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.datastructures import QueryParams

from api.auth import Viewer, auth_state, issue_session, resolve, viewer
from api.deps import parse_bbox
from api.middleware import security_headers
from db.boundaries import named_areas
from petalapor.catalog import get_catalog
from petalapor.errors import AuthenticationError, InvalidParameterError, NotFoundError
from web_map import pages
from web_map.i18n import check_lang

WEB_MAP = Path(pages.__file__).resolve().parent
JAKARTA_TZ = dt.timezone(dt.timedelta(hours=7))

#: The only files served from node_modules (relative to it).
VENDOR_FILES: frozenset[str] = frozenset(
    {
        "leaflet/dist/leaflet.js",
        "leaflet/dist/leaflet.js.map",
        "leaflet/dist/leaflet.css",
        "leaflet/dist/images/layers.png",
        "leaflet/dist/images/layers-2x.png",
        "leaflet/dist/images/marker-icon.png",
        "leaflet/dist/images/marker-icon-2x.png",
        "leaflet/dist/images/marker-shadow.png",
        "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js",
        "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.js",
        "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.js.map",
        "leaflet.markercluster/dist/leaflet.markercluster.js",
        "leaflet.markercluster/dist/leaflet.markercluster.js.map",
        "leaflet.markercluster/dist/MarkerCluster.css",
        "leaflet.markercluster/dist/MarkerCluster.Default.css",
        "swagger-ui-dist/swagger-ui-bundle.js",
        "swagger-ui-dist/swagger-ui.css",
    }
)
_APP_FILE = re.compile(r"^[a-z0-9_-]+\.(js|css|png|svg)$")
_MEDIA = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}

#: The only query parameters ``/embed`` accepts.
EMBED_PARAMS: tuple[str, ...] = (
    "layer",
    "kelurahan",
    "bbox",
    "category",
    "period",
    "metric",
    "lang",
)
_CODE = re.compile(r"^[0-9A-Za-z_.-]{1,32}$")
_PERIOD_DAYS = {"30d": 30, "90d": 90, "365d": 365}


# --------------------------------------------------------------------------- embed parameters


def _period(value: str, today: dt.date) -> tuple[str | None, str | None]:
    """``from``/``to`` dates of a period: 30d, 90d, 365d, all, YYYY, YYYY-MM, or D1..D2."""
    if value == "all":
        return None, None
    if value in _PERIOD_DAYS:
        return (today - dt.timedelta(days=_PERIOD_DAYS[value])).isoformat(), today.isoformat()
    try:
        if re.fullmatch(r"\d{4}", value):
            return f"{value}-01-01", f"{value}-12-31"
        if re.fullmatch(r"\d{4}-\d{2}", value):
            start = dt.date.fromisoformat(value + "-01")
            end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(
                days=1
            )
            return start.isoformat(), end.isoformat()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2}", value):
            a, b = (dt.date.fromisoformat(v) for v in value.split(".."))
            if a > b:
                raise ValueError("start after end")
            return a.isoformat(), b.isoformat()
    except ValueError:
        pass
    raise InvalidParameterError(
        "period must be 30d, 90d, 365d, all, YYYY, YYYY-MM or YYYY-MM-DD..YYYY-MM-DD "
        f"(got {value!r})"
    )


def parse_embed(params: QueryParams, today: dt.date | None = None) -> pages.EmbedOptions:
    """Check ``/embed``'s query against the whitelist; InvalidParameterError (400) otherwise."""
    unknown = sorted({k for k in params.keys() if k not in EMBED_PARAMS})
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(EMBED_PARAMS)}"
        )
    repeated = sorted({k for k in params.keys() if len(params.getlist(k)) > 1})
    if repeated:
        raise InvalidParameterError(f"parameter(s) given more than once: {', '.join(repeated)}")
    get = params.get
    layer = get("layer") or "hexes"
    if layer not in pages.AGGREGATE_LAYERS:
        raise InvalidParameterError(
            f"layer must be one of {', '.join(pages.AGGREGATE_LAYERS)} (got {layer!r})"
        )
    kelurahan = get("kelurahan") or None
    if kelurahan is not None and not _CODE.match(kelurahan):
        raise InvalidParameterError(f"kelurahan must be a kelurahan code (got {kelurahan!r})")
    bbox = parse_bbox(get("bbox"))
    if kelurahan and bbox:
        raise InvalidParameterError("give kelurahan or bbox, not both")
    category = get("category") or None
    if category is not None and category not in get_catalog().categories:
        raise InvalidParameterError(
            f"unknown category {category!r}; known: {', '.join(get_catalog().categories)}"
        )
    metric = get("metric") or "count"
    if metric not in pages.METRICS:
        raise InvalidParameterError(
            f"metric must be one of {', '.join(pages.METRICS)} (got {metric!r})"
        )
    period = get("period") or "365d"
    date_from, date_to = _period(period, today or dt.datetime.now(JAKARTA_TZ).date())
    return pages.EmbedOptions(
        layer=layer,
        kelurahan=kelurahan,
        bbox=bbox,
        category=category,
        period=period,
        date_from=date_from,
        date_to=date_to,
        metric=metric,
        lang=check_lang(get("lang")),
    )


# --------------------------------------------------------------------------- factory


def _default_tile_layers(app: Any) -> dict[str, tuple[int, int]]:
    """``{name: (minzoom, maxzoom)}`` of the vector tile layers the tile service serves."""
    layer_set = getattr(getattr(app.state, "tiles", None), "layers", None)
    if layer_set is None or not hasattr(layer_set, "all"):
        try:
            from tiles.layers import LayerSet
        except ImportError:
            return {name: (0, 22) for name in pages.TILE_LAYERS}
        layer_set = LayerSet()
    return {lyr.name: (int(lyr.minzoom), int(lyr.maxzoom)) for lyr in layer_set.all()}


def _surface_stored(request: Request) -> bool:
    """Is an ISPU surface stored (its tiles are 404 until one is built)?"""
    try:
        from db.layers import find_surface

        settings = getattr(request.app.state, "settings", None)
        raster_dir = settings.paths.var / "rasters" if settings is not None else None
        with request.app.state.pool.connection() as conn:
            find_surface(conn, raster_dir=raster_dir)
    except Exception:  # noqa: BLE001 - no table, no row, no file: the layer is not offered
        return False
    return True


def _registry_zooms(name: str, default: tuple[int, int]) -> tuple[int, int]:
    """A context layer's zoom range from ``layers.registry`` (``default`` when unknown)."""
    try:
        from layers.registry import get

        layer = get(name)
    except Exception:  # noqa: BLE001 - a missing or broken registry only loses the zoom range
        return default
    return (int(getattr(layer, "minzoom", default[0])), int(getattr(layer, "maxzoom", default[1])))


def _walk(routes: list, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI >= 0.16x keeps included routers as one route
            found |= _walk(inner.routes, prefix + getattr(route.include_context, "prefix", ""))
        elif getattr(route, "path", None):
            found.add(prefix + route.path)
    return found


def missing_vendor_files(node_modules: Path = WEB_MAP / "node_modules") -> list[str]:
    """The allow-listed npm files the map pages load that are not installed."""
    return sorted(path for path in VENDOR_FILES if not (node_modules / path).is_file())


def route_paths(app: object) -> set[str]:
    """Every path template the app serves (included routers too)."""
    return _walk(list(app.router.routes))  # type: ignore[attr-defined]


@dataclass
class PagesFactory:
    """Registers the map pages, the OPD login and the static files."""

    router: APIRouter = field(default_factory=APIRouter)
    node_modules: Path = WEB_MAP / "node_modules"
    static_dir: Path = WEB_MAP / "static"
    #: Optional web basemap ``(url template, attribution)``; off by default, None = none.
    basemap: tuple[str, str] | None = None
    #: Who is asking (swappable like the other factories).
    viewer: Callable[..., Viewer] = viewer
    #: ``app -> {layer: (minzoom, maxzoom)}`` of the vector tile layers served.
    tile_layers: Callable[[Any], Mapping[str, tuple[int, int]]] = _default_tile_layers

    def __post_init__(self) -> None:
        self.register_static()
        self.register_pages()
        self.register_opd()

    # ------------------------------------------------------------------ helpers

    def _img_hosts(self) -> str:
        if self.basemap is None:
            return ""
        parts = urlsplit(self.basemap[0].replace("{s}", "a"))
        return f" {parts.scheme}://*.{parts.hostname.split('.', 1)[-1]} {parts.scheme}://{parts.hostname}"

    def _html(
        self, body: str, *, embed: bool = False, status: int = 200, cache: str = "no-cache"
    ) -> HTMLResponse:
        headers = security_headers(embed, self._img_hosts())
        headers["Cache-Control"] = cache
        return HTMLResponse(body, status_code=status, headers=headers)

    def context(
        self, request: Request, lang: str | None, places: bool = False
    ) -> pages.PageContext:
        """What the page builders need: language, catalog, the layers this app serves.

        ``places``: also the kota, kecamatan and kelurahan names for the place search.
        """
        lang = check_lang(lang)
        paths = route_paths(request.app)
        available: set[str] = set()
        urls: dict[str, str] = {}
        zooms: dict[str, tuple[int, int]] = {}
        if any(p.startswith("/tiles/{layer}") and p.endswith(".mvt") for p in paths):
            zooms = dict(self.tile_layers(request.app))
            available.update(zooms)
        if "/heatmap/{z}/{x}/{y}.png" in paths:
            available.add("heatmap")
            heat = getattr(getattr(request.app.state, "tiles", None), "heatmap", None)
            zooms["heatmap"] = (int(getattr(heat, "minzoom", 8)), int(getattr(heat, "maxzoom", 17)))
        surface = next(
            (p for p in sorted(paths) if "ispu" in p and p.endswith("{z}/{x}/{y}.png")), None
        )
        if surface and _surface_stored(request):
            available.add("ispu_surface")
            urls["ispu_surface"] = surface
            zooms["ispu_surface"] = _registry_zooms("ispu_surface", (9, 16))
        if "/reports" in paths:
            urls["reports"] = "/reports"
        if "/reports/export" in paths:
            urls["reports_export"] = "/reports/export"
        if "/sources" in paths:
            urls["sources"] = "/sources" + ("?lang=en" if lang == "en" else "")
        if "/analysis/resolution" in paths:
            urls["worst_rw"] = "/analysis/resolution?unit=rw&format=json"
            urls["resolution_summary"] = "/analysis/resolution?unit=none&format=json"
        for level in ("rw", "kelurahan"):
            if "/analysis/kelurahan/{code}" in paths:  # the kelurahan's page (an RW's: its own)
                urls[f"summary_{level}"] = (
                    "/analysis/kelurahan/{code}"
                    if level == "kelurahan"
                    else "/analysis/kelurahan/{kelurahan_code}"
                ) + ("?lang=en" if lang == "en" else "")
            elif "/reports" in paths:  # the unit's (public) reports until the analysis API exists
                urls[f"summary_{level}"] = f"/reports?{level}={{code}}"
        catalog = get_catalog()
        name = (lambda c: c.name_id) if lang == "id" else (lambda c: c.name_en)
        return pages.PageContext(
            lang=lang,
            available=frozenset(available),
            catalog={
                "categories": [(c.code, name(c)) for c in catalog.categories.values()],
                "opds": [(code, code) for code in sorted(catalog.opds)],
                "statuses": [(s.code, name(s)) for s in catalog.statuses.values()],
            },
            urls=urls,
            zooms=zooms,
            basemap=self.basemap,
            path=request.url.path,
            query={k: v for k, v in request.query_params.items() if k != "lang"},
            places=self._places(request) if places else (),
        )

    @staticmethod
    def _places(request: Request) -> list[tuple[str, str, str]]:
        """``(level, code, label)`` of every kota, kecamatan and kelurahan."""
        with request.app.state.pool.connection() as conn:
            names = named_areas(conn, ("kota", "kecamatan", "kelurahan"))
        return [(a.level, a.code, a.label) for a in names]

    # ------------------------------------------------------------------ static

    def register_static(self) -> None:
        """``/static/vendor/{file}`` (allow-listed node_modules files), ``/static/app/{file}``."""

        @self.router.get("/static/vendor/{path:path}", include_in_schema=False)
        def vendor(path: str) -> FileResponse:
            if path not in VENDOR_FILES:
                raise NotFoundError(f"no static file {path!r}")
            file = self.node_modules / path
            if not file.is_file():
                raise NotFoundError(
                    f"{path} is missing: run `npm ci` in web_map/ (./dev install does)"
                )
            return FileResponse(
                file,
                media_type=_MEDIA.get(file.suffix),
                headers={"Cache-Control": "public, max-age=86400"},
            )

        @self.router.get("/favicon.ico", include_in_schema=False)
        def favicon() -> FileResponse:
            return FileResponse(
                self.static_dir / "favicon.svg",
                media_type="image/svg+xml",
                headers={"Cache-Control": "public, max-age=86400"},
            )

        @self.router.get("/static/app/{name}", include_in_schema=False)
        def app_file(name: str) -> FileResponse:
            file = self.static_dir / name
            if not _APP_FILE.match(name) or not file.is_file():
                raise NotFoundError(f"no static file {name!r}")
            return FileResponse(
                file, media_type=_MEDIA.get(file.suffix), headers={"Cache-Control": "no-cache"}
            )

    # ------------------------------------------------------------------ public pages

    def register_pages(self) -> None:
        """``/``, ``/map``, ``/embed`` and ``/embed/builder``."""

        @self.router.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/map", status_code=307)

        @self.router.get(
            "/map", tags=["pages"], summary="Planner map (HTML)", response_class=HTMLResponse
        )
        def planner_map(
            request: Request,
            lang: str | None = None,
            kelurahan: Annotated[
                str | None, Query(description="Open zoomed to this kelurahan (its code).")
            ] = None,
        ) -> HTMLResponse:
            if kelurahan is not None and not _CODE.match(kelurahan):
                raise InvalidParameterError(f"kelurahan must be a boundary code, got {kelurahan!r}")
            ctx = self.context(request, lang, places=True)
            return self._html(pages.map_page(ctx))

        @self.router.get(
            "/embed",
            tags=["pages"],
            summary="Public embeddable map (HTML; only layer, kelurahan|bbox, category, period, "
            "metric, lang)",
            response_class=HTMLResponse,
            responses={400: {"description": "Unknown or invalid parameter"}},
        )
        def embed(request: Request) -> HTMLResponse:
            opts = parse_embed(request.query_params)
            ctx = self.context(request, opts.lang)
            bounds = self._embed_bounds(request, opts)
            return self._html(
                pages.embed_page(ctx, opts, bounds), embed=True, cache="public, max-age=300"
            )

        @self.router.get(
            "/sources",
            tags=["pages"],
            summary="Where the data on the maps comes from, and on what terms (HTML)",
            response_class=HTMLResponse,
        )
        def sources(request: Request, lang: str | None = None) -> HTMLResponse:
            lang = check_lang(lang)
            return self._html(pages.sources_page(lang, self.source_info(request)))

        @self.router.get(
            "/embed/builder",
            tags=["pages"],
            summary="Build an embed snippet (HTML)",
            response_class=HTMLResponse,
        )
        def builder(request: Request, lang: str | None = None) -> HTMLResponse:
            ctx = self.context(request, lang)
            with request.app.state.pool.connection() as conn:
                areas = [(k.code, k.label) for k in named_areas(conn)]
            return self._html(pages.builder_page(ctx, areas))

    def source_info(self, request: Request) -> pages.SourceInfo:
        """The stored data's origins and the npm packages served, for ``/sources``."""
        import json as jsonlib

        from db import layers as layer_store
        from db.boundaries import current_set
        from gis.boundaries import manifest_attribution
        from gis.demo import DEMO_ID_PREFIX
        from layers import registry

        with request.app.state.pool.connection() as conn:
            layer_store.sync_registry(conn)  # JakWifi as stored: real export or synthetic
            counts = conn.execute(
                "SELECT count(*) AS n, count(*) FILTER (WHERE external_id LIKE %s "
                "AND attrs @> '{\"demo\": true}') AS demo FROM reports",
                (DEMO_ID_PREFIX + "%",),
            ).fetchone()
            bset = current_set(conn)
        boundaries = manifest_attribution()
        if bset is not None:
            boundaries["imported"] = (
                bset["imported_at"].astimezone(JAKARTA_TZ).strftime("%Y-%m-%d %H:%M WIB")
            )
        layers = [
            (lyr.title, lyr.attribution, lyr.licence, bool(lyr.synthetic))
            for lyr in registry.all_layers()
        ]
        software = []
        for package in sorted({path.split("/")[0] for path in VENDOR_FILES}):
            meta = self.node_modules / package / "package.json"
            if meta.is_file():
                data = jsonlib.loads(meta.read_text(encoding="utf-8"))
                software.append((package, str(data.get("version", "")), str(data.get("license"))))
        return pages.SourceInfo(
            reports=counts["n"],
            demo_reports=counts["demo"],
            boundaries=boundaries,
            layers=layers,
            software=software,
        )

    def _embed_bounds(
        self, request: Request, opts: pages.EmbedOptions
    ) -> tuple[tuple[float, float], ...]:
        """The view of an embed: the kelurahan's extent, the bbox, or Jakarta."""
        if opts.bbox:
            x0, y0, x1, y1 = opts.bbox
            return ((y0, x0), (y1, x1))
        if opts.kelurahan:
            with request.app.state.pool.connection() as conn:
                row = conn.execute(
                    "SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1 "
                    "FROM (SELECT ST_Envelope(geom) AS e FROM boundaries "
                    "WHERE level = 'kelurahan' AND code = %s) s",
                    (opts.kelurahan,),
                ).fetchone()
            if row is None:
                raise InvalidParameterError(f"unknown kelurahan {opts.kelurahan!r}")
            return ((row["y0"], row["x0"]), (row["y1"], row["x1"]))
        return pages.JAKARTA_BOUNDS

    # ------------------------------------------------------------------ OPD view

    def register_opd(self) -> None:
        """``/opd`` (key or session cookie needed), ``/opd/login`` and ``/opd/logout``."""

        @self.router.get(
            "/opd",
            tags=["pages"],
            summary="OPD view (HTML; an OPD or admin key or session is needed)",
            response_class=HTMLResponse,
            responses={401: {"description": "No key: the login form"}},
        )
        def opd_view(
            request: Request, lang: str | None = None, opd: str | None = None
        ) -> HTMLResponse:
            lang = check_lang(lang)
            minutes = auth_state(request).settings.session_minutes
            try:
                who = self.viewer(request)
            except AuthenticationError:
                return self._login(request, lang, minutes, error=True)
            if who.is_public:
                return self._login(request, lang, minutes, error=False)
            catalog = get_catalog()
            scope = who.scope_opd(catalog.check_opd(opd) if opd else None)
            ctx = self.context(request, lang, places=True)
            html = pages.opd_page(ctx, scope, catalog.opds.get(scope) if scope else None, who.role)
            return self._html(html, cache="no-store")

        @self.router.get(
            "/opd/login", tags=["pages"], summary="OPD login form", response_class=HTMLResponse
        )
        def login_form(request: Request, lang: str | None = None) -> HTMLResponse:
            lang = check_lang(lang)
            return self._html(
                pages.login_page(lang, auth_state(request).settings.session_minutes),
                cache="no-store",
            )

        @self.router.post(
            "/opd/login", tags=["pages"], summary="Exchange an API key for a session cookie"
        )
        def login(
            request: Request,
            key: Annotated[str, Form(max_length=200)],
            next: Annotated[str, Form(max_length=500)] = "/opd",  # noqa: A002 - the form field's name
            lang: Annotated[str, Form(max_length=2)] = "id",
        ) -> Response:
            state = auth_state(request)
            lang = check_lang(lang)
            try:
                who = resolve(request, key.strip())
            except AuthenticationError:
                return self._login(request, lang, state.settings.session_minutes, error=True)
            token, _ = issue_session(state.secret, who, state.settings.session_minutes)
            target = next if next.startswith("/") and not next.startswith("//") else "/opd"
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                state.settings.cookie_name,
                token,
                max_age=state.settings.session_minutes * 60,
                path="/",
                httponly=True,
                samesite="strict",
                secure=state.settings.cookie_secure,
            )
            return response

        @self.router.get("/opd/logout", tags=["pages"], summary="End the OPD session")
        def logout(request: Request) -> RedirectResponse:
            response = RedirectResponse("/opd/login", status_code=303)
            response.delete_cookie(auth_state(request).settings.cookie_name, path="/")
            return response

    def _login(self, request: Request, lang: str, minutes: int, error: bool) -> HTMLResponse:
        """401 with the login form (and the stale cookie removed)."""
        response = self._html(
            pages.login_page(lang, minutes, "/opd", error=error), status=401, cache="no-store"
        )
        response.headers["WWW-Authenticate"] = 'ApiKey realm="petalapor OPD"'
        if error:
            response.delete_cookie(auth_state(request).settings.cookie_name, path="/")
        return response
