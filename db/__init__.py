"""Schema, migrations, the embedded cluster and the connection pool."""

from __future__ import annotations

from db.cluster import Cluster
from petalapor.settings import Settings


def cluster_for(settings: Settings) -> Cluster:
    """The embedded cluster the settings describe."""
    return Cluster(
        settings.db_dir(), host=settings.db.host, port=settings.db.port, dbname=settings.db.name
    )


def database_url(settings: Settings, *, start: bool = True, migrate: bool = True) -> str:
    """DSN of the database to use: ``DATABASE_URL``, or the embedded cluster (started).

    Migrations are applied unless ``migrate`` is False.
    """
    if settings.db.url:
        dsn = settings.db.url
    else:
        cluster = cluster_for(settings)
        if start:
            cluster.start()
        dsn = cluster.dsn()
    if migrate:
        from db.migrate import migrate as apply

        apply(dsn)
    return dsn
