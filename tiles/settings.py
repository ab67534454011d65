"""Tile-serving settings (prefix ``PETALAPOR_TILES_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TileSettings(BaseSettings):
    """Vector tiles, heatmap and cache.

    API keys are not set here: the app resolves tile viewers from the
    ``api_keys`` table (``petalapor keys create``, :class:`api.auth.MemoResolver`).
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
    heatmap_bandwidth_m: float = Field(
        400.0, gt=0, le=5000, description="Gaussian kernel sigma, metres."
    )
    heatmap_colormap: str = Field(
        "magma", description="rio-tiler colormap name (perceptually uniform)."
    )
    heatmap_scale: Literal["linear", "sqrt"] = "sqrt"
    heatmap_maxzoom: int = Field(17, ge=0, le=22)
