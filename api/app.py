"""App assembly: ``create_app(settings)`` builds the FastAPI application.

The lifespan opens the one connection pool (waiting until it is ready) and
closes it on the way out; routers come from small factory classes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.auth import MemoResolver, install_auth
from api.auth import viewer as auth_viewer
from api.errors import add_exception_handlers
from api.middleware import BodySizeLimitMiddleware
from api.routes.analysis import AnalysisFactory
from api.routes.boundaries import BoundaryFactory
from api.routes.health import HealthFactory
from api.routes.layers import LayerFactory
from api.routes.open311 import Open311Factory
from api.routes.pages import PagesFactory
from api.routes.reports import ReportFactory
from api.routes.tiles import TileFactory
from petalapor import __version__
from petalapor.catalog import sync_catalog
from petalapor.settings import Settings, get_settings
from tiles.middleware import TileCacheMiddleware

log = logging.getLogger("petalapor.api")

DESCRIPTION = """
petalapor turns Jakarta's geotagged citizen reports into maps and analysis:
reports snapped to RW and kelurahan, indexed into H3 hexes, served as vector
tiles and heatmaps next to JakWifi and ISPU layers. Reporter identity is never
public.
"""


def create_app(settings: Settings | None = None, dsn: str | None = None) -> FastAPI:
    """Build the application.

    Parameters
    ----------
    settings
        Settings to use (read from the environment when omitted).
    dsn
        Database URL; when omitted it comes from ``DATABASE_URL`` or the embedded
        cluster, which is started and migrated at startup.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import db
        from db.pool import create_pool

        url = dsn or db.database_url(settings)
        app.state.dsn = url
        app.state.pool = create_pool(url, settings.db)
        with app.state.pool.connection() as conn:
            sync_catalog(conn)  # reports reference the catalog tables
        try:
            yield
        finally:
            app.state.pool.close()

    app = FastAPI(
        title="petalapor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs below: Swagger UI from web_map/node_modules, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings

    # middleware and error handlers, in one block
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    add_exception_handlers(app)
    app.add_middleware(TileCacheMiddleware)  # cached tiles answered before routing
    install_auth(app, settings.paths.var)  # keys, sessions, public rate limit, /auth/*

    app.include_router(HealthFactory().router)
    app.include_router(BoundaryFactory(max_features=settings.api.boundary_max_features).router)
    app.include_router(AnalysisFactory().router)
    app.include_router(ReportFactory(viewer=auth_viewer).router)
    app.include_router(Open311Factory(viewer=auth_viewer).router)
    app.include_router(LayerFactory(raster_dir=settings.paths.var / "rasters").router)
    app.include_router(
        TileFactory(resolver=MemoResolver(app)).router
    )  # viewer from headers, memoised
    app.include_router(PagesFactory().router)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The interactive API documentation, with every file served by petalapor."""
        vendor = "/static/vendor/swagger-ui-dist"
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="petalapor API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
            swagger_ui_parameters={"validatorUrl": None},  # no call to validator.swagger.io
        )

    return app
