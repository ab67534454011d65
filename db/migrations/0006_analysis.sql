-- Resolution analysis.  The metrics themselves need no SQL objects (db/analysis.py builds
-- one query from window functions); what is stored here is the published hot-spot
-- result that the `hotspots` tile layer serves.
--
-- One result at a time: `petalapor analysis hotspots --store` (db.analysis.store_hotspots)
-- replaces every row in one transaction; `params` records how it was computed.  The
-- columns up to `geom` are the layer's registered attributes (db.analysis.hotspots_layer);
-- `params` and `computed_at` are never served in tiles.
CREATE TABLE analysis_hotspots (
    id             text PRIMARY KEY,                 -- '<unit>:<code>'
    unit           text NOT NULL,
    code           text NOT NULL,
    method         text NOT NULL CHECK (method IN ('gistar', 'moran')),
    metric         text NOT NULL CHECK (metric IN ('count', 'rate', 'backlog')),
    value          double precision,
    reports        bigint NOT NULL DEFAULT 0,
    z              double precision,
    p_value        double precision,
    q_value        double precision,
    hotspot_class  text NOT NULL,                    -- hot_99 ... cold_90, HH/LH/LL/HL, or ns
    geom           geometry(MultiPolygon, 4326) NOT NULL,
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    computed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analysis_hotspots_geom_gist ON analysis_hotspots USING gist (geom);
