"""Tile-serving settings (prefix ``PETALAPOR_TILES_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class TileSettings(BaseSettings):
    """Vector tiles, heatmap, cache and the default key check.

    Keys: ``PETALAPOR_TILES_ADMIN_KEYS=k1,k2`` and
    ``PETALAPOR_TILES_OPD_KEYS=DBM:k3,DSDA:k4`` (OPD code, colon, key).  They
    only feed the minimal default viewer resolver (:mod:`tiles.viewer`); the
    auth system replaces it.
    """

    model_config = SettingsConfigDict(
        env_prefix="PETALAPOR_TILES_", env_file=".env", extra="ignore"
    )

    k_anonymity: int = Field(
        5, ge=1, description="Public cells with fewer reports carry no statistics."
    )
    extent: int = Field(4096, ge=256, le=65536, description="MVT extent (units per tile side).")
    buffer: int = Field(64, ge=0, le=1024, description="MVT buffer in tile units.")
    cluster_below_zoom: int = Field(
        14, ge=0, le=23, description="Reports are clustered below this zoom."
    )
    max_points_per_tile: int = Field(50_000, gt=0, description="Newest reports first above this.")
    max_features_per_tile: int = Field(50_000, gt=0, description="Limit for registry layers.")
    cache_bytes: int = Field(
        256 * 2**20, ge=0, description="Memory cache budget; 0 disables memory caching."
    )
    cache_dir: Path | None = Field(None, description="Optional on-disk cache tier (no size limit).")
    max_age: int = Field(300, ge=0, description="Cache-Control max-age of tiles, seconds.")
    listen: bool = Field(
        True, description="LISTEN for report changes (rollup refresh + invalidation)."
    )
    fast_render: bool = Field(True, description="The tile fast path renders cache misses too.")
    admin_keys: Annotated[tuple[str, ...], NoDecode] = ()
    opd_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="key -> OPD code"
    )
    heatmap_bandwidth_m: float = Field(
        400.0, gt=0, le=5000, description="Gaussian kernel sigma, metres."
    )
    heatmap_colormap: str = Field(
        "magma", description="rio-tiler colormap name (perceptually uniform)."
    )
    heatmap_scale: Literal["linear", "sqrt"] = "sqrt"
    heatmap_maxzoom: int = Field(17, ge=0, le=22)

    @field_validator("admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("opd_keys", mode="before")
    @classmethod
    def _split_opd_keys(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                opd, sep, key = item.partition(":")
                if not sep or not opd.strip() or not key.strip():
                    raise ValueError(f"OPD keys are OPD:key pairs, got {item!r}")
                pairs[key.strip()] = opd.strip()
            return pairs
        return value

    @model_validator(mode="after")
    def _check(self) -> "TileSettings":
        overlap = set(self.admin_keys) & set(self.opd_keys)
        if overlap:
            raise ValueError("a key cannot be both an admin key and an OPD key")
        return self
