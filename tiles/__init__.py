"""Vector tiles, heatmap tiles and their cache.

``tms`` (grid), ``filters`` (report filters), ``viewer`` (roles), ``layers``
(MVT SQL from small pieces), ``rollup`` (pre-aggregated statistics and the
change queue), ``cache`` (LRU + disk, exact invalidation), ``heatmap`` (KDE
PNG tiles and COG), ``tilejson`` (TileJSON 3.0.0, MapLibre style), ``service``
(ties them together for ``api.routes.tiles`` and ``middleware``).
"""
