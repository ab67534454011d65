"""The ``hotspots`` vector tile layer: the published hot-spot result.

``petalapor analysis hotspots --store`` (:func:`db.analysis.store_hotspots`)
replaces the table ``analysis_hotspots``; its trigger (migration 0010) tells
every tile server to drop the layer's cached tiles.  The method is in
:mod:`gis.hotspots`; the tiles engine serves the layer like any other vector
layer of the registry.
"""

from __future__ import annotations

from layers.registry import Attribute, Layer, register


def hotspots_layer() -> Layer:
    """The ``hotspots`` layer description (over table ``analysis_hotspots``)."""
    text, num = "text", "double precision"
    return Layer(
        name="hotspots",
        title="Report hot spots (Getis-Ord Gi* / Local Moran)",
        attribution=(
            "petalapor analysis of citizen reports (Gi* with BH false-discovery-rate correction)"
        ),
        licence="derived from the report data; same terms",
        geometry_type="MultiPolygon",
        table="analysis_hotspots",
        load="db.analysis:load_published_hotspots",
        minzoom=9,
        maxzoom=16,
        attributes={
            "id": Attribute(text, "unit:code"),
            "unit": Attribute(text, "rw, kelurahan, kecamatan or h3_7 ... h3_10"),
            "code": Attribute(text, "Unit code (H3 cells as hex)"),
            "method": Attribute(text, "gistar or moran"),
            "metric": Attribute(text, "count, rate (per km2) or backlog (open reports)"),
            "value": Attribute(num, "The analysed value"),
            "reports": Attribute("bigint", "Reports in the unit"),
            "z": Attribute(num, "Gi* z-score (Moran: conditional z)"),
            "p_value": Attribute(num, "Two-sided p-value used"),
            "q_value": Attribute(num, "Benjamini-Hochberg q-value"),
            "hotspot_class": Attribute(text, "hot_99/95/90, cold_99/95/90, HH/LH/LL/HL or ns"),
        },
        description=(
            "The published hot-spot result, refreshed by `petalapor analysis hotspots --store`; "
            "see gis/hotspots.py for the method."
        ),
    )


register(hotspots_layer(), replace=True)
