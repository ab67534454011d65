"""Configuration through pydantic-settings: one class per concern, one prefix each.

Every value can be set in the environment (or a ``.env`` file in the working
directory).  ``DATABASE_URL`` is honoured as-is, as most hosting platforms set it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root (the folder holding ``pyproject.toml``) when run from a checkout.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Running from a source checkout (``./dev``, an editable install), not an installed wheel.
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
#: The shipped configuration: categories, the boundary manifest, column mappings.  ``data/``
#: of the checkout, or its copy inside the installed package (pyproject's force-include).
DATA_DIR = PROJECT_ROOT / "data" if IN_CHECKOUT else Path(__file__).resolve().parent / "data"


def _default_home() -> Path:
    """The checkout, or (installed from a wheel) the working directory."""
    return PROJECT_ROOT if IN_CHECKOUT else Path.cwd()


class PathSettings(BaseSettings):
    """Where the project keeps its state and reads its data (prefix ``PETALAPOR_``)."""

    model_config = SettingsConfigDict(env_prefix="PETALAPOR_", env_file=".env", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Project folder; `var/` lives under it (default: the checkout, or the "
        "working directory for an installed wheel).",
    )
    shared_data: Path = Field(
        default_factory=lambda: _default_home().parent / "shared" / "data",
        description="Folder with the real public data sets (boundaries, ispu, reports, ...).",
    )

    @property
    def var(self) -> Path:
        """Folder for run-time state (database cluster, caches, exports)."""
        return self.home / "var"

    @property
    def boundary_dirs(self) -> list[Path]:
        """Folders searched, in order, for the boundary files named in the manifest."""
        return [self.home / "data" / "boundaries", self.shared_data / "boundaries"]


class DatabaseSettings(BaseSettings):
    """PostGIS connection (prefix ``PETALAPOR_DB_``; ``DATABASE_URL`` wins when set)."""

    model_config = SettingsConfigDict(env_prefix="PETALAPOR_DB_", env_file=".env", extra="ignore")

    url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "PETALAPOR_DB_URL"),
        description="External PostGIS; when set, no embedded cluster is started.",
    )
    dir: Path | None = Field(None, description="Embedded cluster folder (default var/pg).")
    host: str = Field("127.0.0.1", description="Address the embedded cluster listens on.")
    port: int = Field(5433, ge=0, le=65535, description="Port; 0 picks a free one.")
    name: str = Field("petalapor", description="Database name in the embedded cluster.")
    pool_min: int = Field(1, ge=0)
    pool_max: int = Field(10, ge=1)
    pool_timeout: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must start with postgresql:// (got %r)" % value[:20])
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> "DatabaseSettings":
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) exceeds pool_max ({self.pool_max})")
        return self

    @property
    def embedded(self) -> bool:
        """True when petalapor runs its own cluster (no ``DATABASE_URL``)."""
        return self.url is None


class ApiSettings(BaseSettings):
    """HTTP service (prefix ``PETALAPOR_API_``)."""

    model_config = SettingsConfigDict(env_prefix="PETALAPOR_API_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, gt=0, description="Larger request bodies get 413.")
    boundary_max_features: int = Field(5000, gt=0)


class Settings(BaseSettings):
    """All settings together, as handed to ``create_app``."""

    paths: PathSettings = Field(default_factory=PathSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    def db_dir(self) -> Path:
        """Folder of the embedded cluster."""
        return self.db.dir or (self.paths.var / "pg")


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings()
