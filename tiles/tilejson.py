"""TileJSON 3.0.0 documents, the MapLibre style and the ``/tiles`` catalogue.

Everything is built from the layer objects (:mod:`tiles.layers`, the
registry layers included) for one viewer: a public viewer never sees the
``reports`` layer listed.  Tile URLs are absolute and carry the request's
normalised filters, so a TileJSON fetched with ``?category=banjir`` points at
filtered tiles.  Key holders must send their key with every tile request
(MapLibre: ``transformRequest``); it never goes into a URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tiles.heatmap import Heatmap, colormap_lut
from tiles.layers import MVTLayer
from tiles.tms import JAKARTA_CENTER, Box

TILEJSON_VERSION = "3.0.0"
_GEOMETRY_KIND = {
    "Point": "circle",
    "MultiPoint": "circle",
    "LineString": "line",
    "MultiLineString": "line",
    "Polygon": "fill",
    "MultiPolygon": "fill",
}


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def tiles_url(base: str, layer: str, query: str = "") -> str:
    """Absolute tile URL template of a vector layer."""
    return _with_query(f"{base.rstrip('/')}/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt", query)


def center_in(bounds: Box, minzoom: int, maxzoom: int) -> list[float]:
    """Jakarta's default centre (clamped into the bounds and zoom range)."""
    lon, lat, zoom = JAKARTA_CENTER
    if not bounds.contains(lon, lat):
        lon, lat = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    return [round(lon, 6), round(lat, 6), min(max(zoom, minzoom), maxzoom)]


def vector_tilejson(layer: MVTLayer, base: str, query: str, bounds: Box) -> dict[str, Any]:
    """TileJSON 3.0.0 of one vector layer."""
    return {
        "tilejson": TILEJSON_VERSION,
        "name": layer.name,
        "description": layer.title + (f": {layer.description}" if layer.description else ""),
        "version": "1.0.0",
        "attribution": layer.attribution,
        "scheme": "xyz",
        "tiles": [tiles_url(base, layer.name, query)],
        "minzoom": layer.minzoom,
        "maxzoom": layer.maxzoom,
        "bounds": [round(v, 6) for v in bounds],
        "center": center_in(bounds, layer.minzoom, layer.maxzoom),
        "vector_layers": [
            {
                "id": layer.name,
                "description": layer.title,
                "minzoom": layer.minzoom,
                "maxzoom": layer.maxzoom,
                "fields": dict(layer.fields),
            }
        ],
    }


def heatmap_tilejson(heatmap: Heatmap, base: str, query: str, bounds: Box) -> dict[str, Any]:
    """TileJSON 3.0.0 of the heatmap raster (``vector_layers`` empty: raster)."""
    return {
        "tilejson": TILEJSON_VERSION,
        "name": "heatmap",
        "description": f"Report density (Gaussian KDE, {heatmap.bandwidth_m:g} m bandwidth), "
        "reports per km²",
        "version": "1.0.0",
        "attribution": "petalapor; reports from Jakarta's citizen-report channels",
        "scheme": "xyz",
        "tiles": [_with_query(f"{base.rstrip('/')}/heatmap/{{z}}/{{x}}/{{y}}.png", query)],
        "minzoom": heatmap.minzoom,
        "maxzoom": heatmap.maxzoom,
        "bounds": [round(v, 6) for v in bounds],
        "center": center_in(bounds, heatmap.minzoom, heatmap.maxzoom),
        "legend": _with_query(f"{base.rstrip('/')}/heatmap/legend", query),
        "vector_layers": [],
    }


def _ramp(field: str, stops: int = 5) -> list[Any]:
    lut = colormap_lut("viridis")
    expr: list[Any] = ["interpolate", ["linear"], ["coalesce", ["get", field], 0]]
    for i in range(stops):
        t = i / (stops - 1)
        r, g, b = (int(v) for v in lut[round(t * 255)])
        expr += [t, f"#{r:02x}{g:02x}{b:02x}"]
    return expr


def _style_layers(layer: MVTLayer) -> list[dict[str, Any]]:
    common = {
        "source": layer.name,
        "source-layer": layer.name,
        "minzoom": layer.minzoom,
        "maxzoom": layer.maxzoom + 1,
    }
    if layer.name == "hexes":
        return [
            {
                "id": "hexes-fill",
                "type": "fill",
                **common,
                "paint": {"fill-color": _ramp("resolved_share"), "fill-opacity": 0.55},
            },
            {
                "id": "hexes-outline",
                "type": "line",
                **common,
                "paint": {"line-color": "#ffffff", "line-width": 0.4},
            },
        ]
    if layer.name in ("kelurahan", "rw"):
        fill = {
            "id": f"{layer.name}-fill",
            "type": "fill",
            **common,
            "layout": {"visibility": "none"},
            "filter": ["!", ["to-boolean", ["get", "suppressed"]]],
            "paint": {"fill-color": _ramp("resolved_share"), "fill-opacity": 0.5},
        }
        line = {
            "id": f"{layer.name}-line",
            "type": "line",
            **common,
            "paint": {
                "line-color": "#555555" if layer.name == "kelurahan" else "#999999",
                "line-width": 1.0 if layer.name == "kelurahan" else 0.5,
            },
        }
        return [fill, line]
    if layer.name == "reports":
        return [
            {
                "id": "reports-clusters",
                "type": "circle",
                **common,
                "filter": ["==", ["get", "cluster"], True],
                "paint": {
                    "circle-color": "#d7301f",
                    "circle-opacity": 0.7,
                    "circle-radius": [
                        "interpolate",
                        ["linear"],
                        ["sqrt", ["get", "count"]],
                        1,
                        3,
                        30,
                        18,
                    ],
                },
            },
            {
                "id": "reports-points",
                "type": "circle",
                **common,
                "filter": ["!=", ["get", "cluster"], True],
                "paint": {
                    "circle-radius": 3.5,
                    "circle-stroke-width": 0.5,
                    "circle-stroke-color": "#ffffff",
                    "circle-color": [
                        "match",
                        ["get", "status"],
                        "selesai",
                        "#1a9850",
                        "ditolak",
                        "#999999",
                        "#d73027",
                    ],
                },
            },
        ]
    kind = _GEOMETRY_KIND.get(layer.geometry_type, "circle")
    paint = {
        "circle": {
            "circle-radius": 4,
            "circle-color": "#3182bd",
            "circle-stroke-color": "#ffffff",
            "circle-stroke-width": 1,
        },
        "line": {"line-color": "#3182bd", "line-width": 1.5},
        "fill": {"fill-color": "#3182bd", "fill-opacity": 0.3},
    }[kind]
    return [{"id": layer.name, "type": kind, **common, "paint": paint}]


def style_json(
    layers: Sequence[MVTLayer], heatmap: Heatmap, base: str, query: str, bounds: Box
) -> dict[str, Any]:
    """A MapLibre (v8) style with every layer the viewer may see, plus the heatmap (hidden)."""
    base = base.rstrip("/")
    sources: dict[str, Any] = {
        layer.name: {"type": "vector", "url": _with_query(f"{base}/tiles/{layer.name}.json", query)}
        for layer in layers
    }
    sources["heatmap"] = {
        "type": "raster",
        "url": _with_query(f"{base}/heatmap.json", query),
        "tileSize": 256,
    }
    order = {"hexes": 1, "kelurahan": 2, "rw": 3, "reports": 9}
    style_layers: list[dict[str, Any]] = [
        {"id": "background", "type": "background", "paint": {"background-color": "#f2efe9"}},
        {
            "id": "heatmap",
            "type": "raster",
            "source": "heatmap",
            "layout": {"visibility": "none"},
            "paint": {"raster-opacity": 0.85},
        },
    ]
    for layer in sorted(layers, key=lambda lyr: (order.get(lyr.name, 5), lyr.name)):
        style_layers += _style_layers(layer)
    lon, lat, zoom = center_in(bounds, 0, 22)
    return {
        "version": 8,
        "name": "petalapor",
        "metadata": {"petalapor:filters": query},
        "center": [lon, lat],
        "zoom": zoom,
        "sources": sources,
        "layers": style_layers,
    }


def catalog_json(
    layers: Sequence[MVTLayer], heatmap: Heatmap, base: str, query: str
) -> dict[str, Any]:
    """The ``/tiles`` catalogue: every layer the viewer may see, with its URLs."""
    base = base.rstrip("/")
    entries = [
        {
            "id": layer.name,
            "title": layer.title,
            "description": layer.description,
            "kind": "vector",
            "geometry_type": layer.geometry_type,
            "minzoom": layer.minzoom,
            "maxzoom": layer.maxzoom,
            "attribution": layer.attribution,
            "report_derived": layer.report_derived,
            "privileged_only": layer.privileged_only,
            "tilejson": _with_query(f"{base}/tiles/{layer.name}.json", query),
            "tiles": tiles_url(base, layer.name, query),
            "fields": dict(layer.fields),
        }
        for layer in layers
    ]
    entries.append(
        {
            "id": "heatmap",
            "title": "Report density heatmap",
            "kind": "raster",
            "minzoom": heatmap.minzoom,
            "maxzoom": heatmap.maxzoom,
            "report_derived": True,
            "privileged_only": False,
            "tilejson": _with_query(f"{base}/heatmap.json", query),
            "tiles": _with_query(f"{base}/heatmap/{{z}}/{{x}}/{{y}}.png", query),
            "legend": _with_query(f"{base}/heatmap/legend", query),
        }
    )
    return {
        "tilejson": TILEJSON_VERSION,
        "style": _with_query(f"{base}/tiles/style.json", query),
        "layers": entries,
    }
