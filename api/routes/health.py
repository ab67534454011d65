"""``/healthz``: is the database reachable, which PostGIS, what is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from fastapi import APIRouter, Depends, Response

from api.deps import get_conn
from petalapor import __version__


@dataclass
class HealthFactory:
    """Registers the health endpoint."""

    router: APIRouter = field(default_factory=APIRouter)

    def __post_init__(self) -> None:
        self.register_routes()

    def register_routes(self) -> None:
        """Add ``GET /healthz``."""

        @self.router.get("/healthz", tags=["service"], summary="Service and database health")
        def healthz(response: Response, conn: psycopg.Connection = Depends(get_conn)) -> dict:
            row = conn.execute(
                "SELECT postgis_lib_version() AS postgis, version() AS postgres"
            ).fetchone()
            counts = {
                r["level"]: r["n"]
                for r in conn.execute(
                    "SELECT level, count(*) AS n FROM boundaries GROUP BY level"
                ).fetchall()
            }
            for table in self.counted_tables:
                if conn.execute("SELECT to_regclass(%s) AS t", (table,)).fetchone()["t"]:
                    counts[table] = conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()[
                        "n"
                    ]  # noqa: S608 - fixed names
            response.headers["Cache-Control"] = "no-store"
            return {
                "status": "ok",
                "version": __version__,
                "database": "reachable",
                "postgis": row["postgis"],
                "postgres": row["postgres"].split(",")[0],
                "counts": counts,
            }

    #: Tables whose row counts /healthz reports when they exist (fixed names only).
    counted_tables: tuple[str, ...] = (
        "reports",
        "report_quarantine",
        "layer_jakwifi",
        "ispu_readings",
    )
