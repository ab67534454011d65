-- Context layers: JakWifi hotspots, ISPU stations and daily readings, ISPU surfaces,
-- the import log with its quarantine, JakWifi coverage per RW / kelurahan and the
-- ISPU value at each report.  Written by db/layers.py, one transaction per import.
--
-- Tables read by the tiles engine (layer.table of the registry) carry exactly the
-- registered attribute columns plus `geom`; extra columns (metric geometry, snapping,
-- provenance) are never served in tiles.

-- One row per import (or generation, or surface build).  The current import of a
-- layer is the one whose rows are in the layer's tables; older ones stay as history.
CREATE TABLE layer_imports (
    id           bigserial PRIMARY KEY,
    layer        text NOT NULL CHECK (layer IN ('jakwifi', 'ispu', 'ispu_surface')),
    source_file  text,
    synthetic    boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    is_current   boolean NOT NULL DEFAULT false,
    summary      jsonb NOT NULL DEFAULT '{}'::jsonb,   -- counts (read = valid + quarantined)
    report       jsonb NOT NULL DEFAULT '{}'::jsonb,   -- every quarantine entry, every disagreement
    report_text  text                                  -- the report as printed by the CLI
);
CREATE UNIQUE INDEX layer_imports_one_current ON layer_imports (layer) WHERE is_current;

-- Rows that failed validation: kept with file, row, field and reason, never lost.
-- A row with two problems has two entries.  Kept across re-imports (import_id tells which).
CREATE TABLE layer_quarantine (
    id           bigserial PRIMARY KEY,
    import_id    bigint NOT NULL REFERENCES layer_imports (id) ON DELETE CASCADE,
    layer        text NOT NULL,
    source_file  text,
    row_number   integer,           -- 1-based data row (header and blank lines not counted)
    line         integer,           -- 1-based file line where the record starts, when known
    field        text,
    value        text,
    reason       text NOT NULL,
    raw          jsonb NOT NULL DEFAULT '{}'::jsonb   -- the whole record as read
);
CREATE INDEX layer_quarantine_import ON layer_quarantine (import_id, row_number);

-- JakWifi hotspots.  Registry attributes (layers.jakwifi.jakwifi_layer) + geom, then
-- the metric copy and the snapping result.  rw_code/kelurahan_code/kecamatan_code/
-- kota_code and their names come from the snap to the current boundaries (RW first,
-- the kelurahan rule where no RW matches); what the file said is kept in `source`.
CREATE TABLE layer_jakwifi (
    id               text PRIMARY KEY,
    name             text,
    kota             text,
    kota_code        text,
    kecamatan        text,
    kecamatan_code   text,
    kelurahan        text,
    kelurahan_code   text,
    rw               text,
    rw_code          text,
    address          text,
    synthetic        boolean NOT NULL DEFAULT false,
    geom             geometry(Point, 4326) NOT NULL,
    geom_m           geometry(Point, 32748) NOT NULL,     -- UTM 48S, for KNN and buffers
    snap_level       text CHECK (snap_level IN ('rw', 'kelurahan')),
    snap_method      text NOT NULL CHECK (snap_method IN ('inside', 'nearest', 'outside')),
    snap_distance_m  double precision NOT NULL DEFAULT 0,
    source_row       integer,
    source           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- codes and names as given in the file
    import_id        bigint NOT NULL REFERENCES layer_imports (id)
);
CREATE INDEX layer_jakwifi_geom_gist ON layer_jakwifi USING gist (geom);
CREATE INDEX layer_jakwifi_geom_m_gist ON layer_jakwifi USING gist (geom_m);
CREATE INDEX layer_jakwifi_rw ON layer_jakwifi (rw_code);
CREATE INDEX layer_jakwifi_kelurahan ON layer_jakwifi (kelurahan_code);

-- SPKU stations (registry attributes of `ispu_stations` + geom).  Positions are
-- approximate; location_method says how each was obtained.
CREATE TABLE layer_ispu_stations (
    station_id       text PRIMARY KEY,
    name             text NOT NULL,
    location_method  text NOT NULL,
    kelurahan_id     text,
    geom             geometry(Point, 4326) NOT NULL,
    import_id        bigint NOT NULL REFERENCES layer_imports (id)
);
CREATE INDEX layer_ispu_stations_geom_gist ON layer_ispu_stations USING gist (geom);

-- Daily ISPU readings (one row per day in the DKI file: the station reported that day).
-- Sub-indices as published; ispu/critical/category derived (P.14/2020); published_* as
-- published.  Disagreements are listed in the import's report.
CREATE TABLE ispu_readings (
    date                date NOT NULL,
    station_id          text NOT NULL REFERENCES layer_ispu_stations (station_id),
    station             text,                      -- the label as published
    pm25                double precision,
    pm10                double precision,
    so2                 double precision,
    co                  double precision,
    o3                  double precision,
    no2                 double precision,
    ispu                double precision NOT NULL,
    critical            text,
    critical_all        text,
    category            text NOT NULL,
    published_max       double precision,
    published_critical  text,
    published_category  text,
    source_row          integer NOT NULL,
    import_id           bigint NOT NULL REFERENCES layer_imports (id),
    PRIMARY KEY (date, station_id)
);
CREATE INDEX ispu_readings_station ON ispu_readings (station_id, date);

-- ISPU surfaces written as COGs (layers.surface.write_surface); the current one is
-- what /layers/ispu_surface/{z}/{x}/{y}.png serves without ?period=.
CREATE TABLE ispu_surfaces (
    id            bigserial PRIMARY KEY,
    value         text NOT NULL DEFAULT 'ispu',
    period_start  date NOT NULL,
    period_end    date NOT NULL,
    power         double precision NOT NULL,
    cell_size     double precision NOT NULL,
    path          text NOT NULL,
    n_stations    integer NOT NULL,
    stations      jsonb NOT NULL,                  -- [{station_id, value, n_days}]
    created_at    timestamptz NOT NULL DEFAULT now(),
    is_current    boolean NOT NULL DEFAULT false,
    CONSTRAINT ispu_surfaces_period CHECK (period_end >= period_start)
);
CREATE UNIQUE INDEX ispu_surfaces_one_current ON ispu_surfaces (is_current) WHERE is_current;
CREATE INDEX ispu_surfaces_period ON ispu_surfaces (value, period_start, period_end);

-- Share of an area (UTM 48S polygon) within p_radius metres of a hotspot:
--   area(p_area ∩ union of the buffers of the hotspots within p_radius of it) / area(p_area).
-- The union is taken over that neighbourhood only (index scan on geom_m), never city-wide.
-- Buffers are ST_Buffer(point, r) with the default 8 segments per quarter circle.
-- Not inlined (it aggregates), PARALLEL SAFE and costly, so a scan of many units runs it
-- in parallel workers.
CREATE FUNCTION petalapor_jakwifi_share(p_area geometry, p_radius double precision)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE COST 10000 AS $$
    SELECT coalesce(
        least(1.0, ST_Area(ST_Intersection(p_area, ST_Union(ST_Buffer(h.geom_m, p_radius))))
                   / nullif(ST_Area(p_area), 0)),  -- rounding can give 1 + 2e-16
        0)
    FROM layer_jakwifi h
    WHERE ST_DWithin(h.geom_m, p_area, p_radius)
$$;

-- JakWifi coverage of one boundary level ('rw' or 'kelurahan'), all in UTM 48S:
--   n_hotspots  hotspots whose snapped code is the unit's
--   per_km2     n_hotspots / unit area (km2)
--   nearest_m   distance from the unit's centroid (ST_Centroid of geom_m) to the nearest
--               hotspot anywhere (KNN `<->` on layer_jakwifi.geom_m; exact for points)
--   share_100m, share_300m
--               petalapor_jakwifi_share(unit, 100 / 300)
-- Run it as a top-level SELECT (db.layers.refresh_coverage does) so the shares can be
-- computed by parallel workers; an INSERT ... SELECT would run it serially.
CREATE FUNCTION petalapor_jakwifi_coverage(p_unit text)
RETURNS TABLE (
    code text, name text, kelurahan_code text, kecamatan_code text, kota_code text,
    area_km2 double precision, n_hotspots integer, per_km2 double precision,
    nearest_m double precision, nearest_id text,
    share_100m double precision, share_300m double precision
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH u AS MATERIALIZED (
        SELECT b.code, b.name, b.kelurahan_code, b.kecamatan_code, b.kota_code, b.area_m2,
               ST_Centroid(b.geom_m) AS centre,
               petalapor_jakwifi_share(b.geom_m, 100) AS share_100m,
               petalapor_jakwifi_share(b.geom_m, 300) AS share_300m
        FROM boundaries b
        WHERE b.level = p_unit
    ),
    counts AS (
        SELECT CASE WHEN p_unit = 'rw' THEN h.rw_code ELSE h.kelurahan_code END AS code,
               count(*)::integer AS n
        FROM layer_jakwifi h
        GROUP BY 1
    )
    SELECT u.code, u.name, u.kelurahan_code, u.kecamatan_code, u.kota_code,
           u.area_m2 / 1e6,
           coalesce(c.n, 0),
           coalesce(c.n, 0) / nullif(u.area_m2 / 1e6, 0),
           nn.d, nn.id,
           u.share_100m, u.share_300m
    FROM u
    LEFT JOIN counts c ON c.code = u.code
    LEFT JOIN LATERAL (
        SELECT h.id, ST_Distance(h.geom_m, u.centre) AS d
        FROM layer_jakwifi h
        ORDER BY h.geom_m <-> u.centre
        LIMIT 1
    ) nn ON true
    ORDER BY u.code
$$;

-- The coverage of the current hotspots, refreshed by db.layers.refresh_coverage in the
-- same transaction as every JakWifi import (and by `petalapor layers coverage`).
CREATE TABLE jakwifi_coverage (
    unit            text NOT NULL CHECK (unit IN ('rw', 'kelurahan')),
    code            text NOT NULL,
    name            text,
    kelurahan_code  text,
    kecamatan_code  text,
    kota_code       text,
    area_km2        double precision NOT NULL,
    n_hotspots      integer NOT NULL,
    per_km2         double precision,
    nearest_m       double precision,      -- NULL when there is no hotspot at all
    nearest_id      text,
    share_100m      double precision NOT NULL,
    share_300m      double precision NOT NULL,
    import_id       bigint REFERENCES layer_imports (id) ON DELETE SET NULL,
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (unit, code)
);

-- ISPU at each report's place and day, computed in bulk by `petalapor layers exposure`
-- (db.layers.compute_report_ispu, layers.surface.idw_at_points), not per request:
--   ispu       IDW (power 2, UTM metres) of the station means over the calendar month
--              (`period`, Asia/Jakarta) of the report's local day, at the report's point;
--              NULL when no station reported that month
--   category   P.14/2020 category of `ispu`
--   ispu_day / day_station
--              the reading of the report's day itself (the DKI file has one station per
--              day, so a one-day surface is flat: it is that station's value everywhere)
CREATE TABLE report_ispu (
    report_id    uuid PRIMARY KEY REFERENCES reports (id) ON DELETE CASCADE,
    report_date  date NOT NULL,
    period       text NOT NULL,              -- 'YYYY-MM'
    ispu         double precision,
    category     text,
    n_stations   integer NOT NULL DEFAULT 0,
    ispu_day     double precision,
    day_station  text,
    power        double precision NOT NULL,
    import_id    bigint REFERENCES layer_imports (id) ON DELETE SET NULL,  -- the ISPU import used
    computed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_ispu_period ON report_ispu (period);
