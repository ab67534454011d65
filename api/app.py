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

from api.errors import add_exception_handlers
from api.middleware import BodySizeLimitMiddleware
from api.routes.boundaries import BoundaryFactory
from api.routes.health import HealthFactory
from petalapor import __version__
from petalapor.settings import Settings, get_settings

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
        try:
            yield
        finally:
            app.state.pool.close()

    app = FastAPI(
        title="petalapor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings

    # middleware and error handlers, in one block
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    add_exception_handlers(app)

    app.include_router(HealthFactory().router)
    app.include_router(BoundaryFactory(max_features=settings.api.boundary_max_features).router)
    return app
