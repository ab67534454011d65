-- Tile serving: H3 cell polygons, roll-ups of the report statistics behind the
-- hexes / kelurahan / rw / clustered-reports tiles, and a change queue filled
-- by statement-level triggers on reports (so bulk COPY, the API and other
-- processes all reach the tile cache).  tiles/rollup.py owns the logic that
-- reads the queue; tiles/layers.py owns the statistics' definitions.

-- H3 cell polygons in Web Mercator, computed in Python (h3) for every cell
-- that holds a report (PostGIS has no H3 here); exterior rings clockwise, so
-- they stay exterior rings once flipped into tile coordinates (y down).
CREATE TABLE tile_hex_cells (
    res   smallint NOT NULL CHECK (res BETWEEN 0 AND 15),
    h3    bigint NOT NULL,
    geom  geometry(Polygon, 3857) NOT NULL,
    PRIMARY KEY (res, h3)
);

-- Report statistics per H3 cell and visibility scope ('public': public reports
-- only; 'all': every report), stored as the tile attributes (tiles/layers.py
-- stats_output), with the cell polygon copied in so a tile reads one table.
-- cx/cy: mean report position (lon/lat mean, then Web Mercator), for clusters.
CREATE TABLE tile_hex_stats (
    scope            text NOT NULL CHECK (scope IN ('public', 'all')),
    res              smallint NOT NULL,
    h3               bigint NOT NULL,
    h3_hex           text NOT NULL,
    count            integer NOT NULL,
    open             integer NOT NULL,
    resolved         integer NOT NULL,
    resolved_share   double precision,
    median_days      double precision,
    within_7d_share  double precision,
    top_category     text,
    cx               double precision NOT NULL,
    cy               double precision NOT NULL,
    geom             geometry(Polygon, 3857) NOT NULL,
    PRIMARY KEY (scope, res, h3)
);
-- One spatial index per (scope, resolution): a tile reads exactly one of them.
CREATE INDEX tile_hex_stats_public_r7 ON tile_hex_stats USING gist (geom) WHERE scope = 'public' AND res = 7;
CREATE INDEX tile_hex_stats_public_r8 ON tile_hex_stats USING gist (geom) WHERE scope = 'public' AND res = 8;
CREATE INDEX tile_hex_stats_public_r9 ON tile_hex_stats USING gist (geom) WHERE scope = 'public' AND res = 9;
CREATE INDEX tile_hex_stats_public_r10 ON tile_hex_stats USING gist (geom) WHERE scope = 'public' AND res = 10;
CREATE INDEX tile_hex_stats_public_r11 ON tile_hex_stats USING gist (geom) WHERE scope = 'public' AND res = 11;
CREATE INDEX tile_hex_stats_all_r7 ON tile_hex_stats USING gist (geom) WHERE scope = 'all' AND res = 7;
CREATE INDEX tile_hex_stats_all_r8 ON tile_hex_stats USING gist (geom) WHERE scope = 'all' AND res = 8;
CREATE INDEX tile_hex_stats_all_r9 ON tile_hex_stats USING gist (geom) WHERE scope = 'all' AND res = 9;
CREATE INDEX tile_hex_stats_all_r10 ON tile_hex_stats USING gist (geom) WHERE scope = 'all' AND res = 10;
CREATE INDEX tile_hex_stats_all_r11 ON tile_hex_stats USING gist (geom) WHERE scope = 'all' AND res = 11;

-- The same statistics per RW and kelurahan code.
CREATE TABLE tile_area_stats (
    scope            text NOT NULL CHECK (scope IN ('public', 'all')),
    level            text NOT NULL CHECK (level IN ('kelurahan', 'rw')),
    code             text NOT NULL,
    count            integer NOT NULL,
    open             integer NOT NULL,
    resolved         integer NOT NULL,
    resolved_share   double precision,
    median_days      double precision,
    within_7d_share  double precision,
    top_category     text,
    PRIMARY KEY (scope, level, code)
);

-- Tiles read small slices of these tables: a parallel plan only adds start-up cost.
ALTER TABLE tile_hex_cells SET (parallel_workers = 0);
ALTER TABLE tile_hex_stats SET (parallel_workers = 0);
ALTER TABLE tile_area_stats SET (parallel_workers = 0);

-- Change queue: one row per changed report version (old and new), or one
-- 'full' row for a large statement, or one 'boundaries' row.  Drained by
-- tiles.rollup.process_changes under an advisory lock.
CREATE TABLE tile_changes (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('report', 'full', 'boundaries')),
    lon             double precision,
    lat             double precision,
    h3_r7           bigint,
    h3_r8           bigint,
    h3_r9           bigint,
    h3_r10          bigint,
    h3_r11          bigint,
    rw_code         text,
    kelurahan_code  text,
    queued_at       timestamptz NOT NULL DEFAULT now()
);

-- A statement touching more rows than this queues one 'full' row instead.
CREATE FUNCTION petalapor_tile_change_limit() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 10000 $$;

-- Queue the inserted (new_rows) or deleted (old_rows) reports, or one 'full' row.
CREATE FUNCTION petalapor_tiles_reports_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    many boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) > petalapor_tile_change_limit() INTO many
        FROM (SELECT 1 FROM new_rows LIMIT petalapor_tile_change_limit() + 1) s;
        IF many THEN
            INSERT INTO tile_changes (kind) VALUES ('full');
        ELSE
            INSERT INTO tile_changes (kind, lon, lat, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code)
            SELECT 'report', ST_X(geom), ST_Y(geom), h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code
            FROM new_rows;
        END IF;
    ELSE
        SELECT count(*) > petalapor_tile_change_limit() INTO many
        FROM (SELECT 1 FROM old_rows LIMIT petalapor_tile_change_limit() + 1) s;
        IF many THEN
            INSERT INTO tile_changes (kind) VALUES ('full');
        ELSE
            INSERT INTO tile_changes (kind, lon, lat, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code)
            SELECT 'report', ST_X(geom), ST_Y(geom), h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code
            FROM old_rows;
        END IF;
    END IF;
    IF FOUND THEN
        PERFORM pg_notify('petalapor_reports', '');
    END IF;
    RETURN NULL;
END $$;

-- Updates count only when a column a tile shows or aggregates changed (title,
-- description, media, attrs and updated_at never reach a tile); both the old
-- and the new version are queued, so a moved or re-coded report clears both places.
CREATE FUNCTION petalapor_tiles_reports_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    n_changed bigint;
BEGIN
    SELECT count(*) INTO n_changed FROM (
        SELECT 1
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE (o.category, o.opd, o.status, o.created_at, o.resolved_at, o.public, o.rw_code,
               o.kelurahan_code, o.h3_r7, o.h3_r8, o.h3_r9, o.h3_r10, o.h3_r11, ST_AsEWKB(o.geom))
              IS DISTINCT FROM
              (n.category, n.opd, n.status, n.created_at, n.resolved_at, n.public, n.rw_code,
               n.kelurahan_code, n.h3_r7, n.h3_r8, n.h3_r9, n.h3_r10, n.h3_r11, ST_AsEWKB(n.geom))
        LIMIT petalapor_tile_change_limit() + 1
    ) s;
    IF n_changed = 0 THEN
        RETURN NULL;
    ELSIF n_changed > petalapor_tile_change_limit() THEN
        INSERT INTO tile_changes (kind) VALUES ('full');
    ELSE
        WITH changed AS (
            SELECT o.id
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE (o.category, o.opd, o.status, o.created_at, o.resolved_at, o.public, o.rw_code,
                   o.kelurahan_code, o.h3_r7, o.h3_r8, o.h3_r9, o.h3_r10, o.h3_r11, ST_AsEWKB(o.geom))
                  IS DISTINCT FROM
                  (n.category, n.opd, n.status, n.created_at, n.resolved_at, n.public, n.rw_code,
                   n.kelurahan_code, n.h3_r7, n.h3_r8, n.h3_r9, n.h3_r10, n.h3_r11, ST_AsEWKB(n.geom))
        ), versions AS (
            SELECT o.geom, o.h3_r7, o.h3_r8, o.h3_r9, o.h3_r10, o.h3_r11, o.rw_code, o.kelurahan_code
            FROM old_rows o JOIN changed c ON c.id = o.id
            UNION ALL
            SELECT n.geom, n.h3_r7, n.h3_r8, n.h3_r9, n.h3_r10, n.h3_r11, n.rw_code, n.kelurahan_code
            FROM new_rows n JOIN changed c ON c.id = n.id
        )
        INSERT INTO tile_changes (kind, lon, lat, h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code)
        SELECT 'report', ST_X(geom), ST_Y(geom), h3_r7, h3_r8, h3_r9, h3_r10, h3_r11, rw_code, kelurahan_code
        FROM versions;
    END IF;
    PERFORM pg_notify('petalapor_reports', '');
    RETURN NULL;
END $$;

CREATE FUNCTION petalapor_tiles_full_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tile_changes (kind) VALUES (TG_ARGV[0]);
    PERFORM pg_notify('petalapor_reports', '');
    RETURN NULL;
END $$;

CREATE TRIGGER reports_tiles_insert AFTER INSERT ON reports
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_reports_changed();
CREATE TRIGGER reports_tiles_update AFTER UPDATE ON reports
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_reports_updated();
CREATE TRIGGER reports_tiles_delete AFTER DELETE ON reports
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_reports_changed();
CREATE TRIGGER reports_tiles_truncate AFTER TRUNCATE ON reports
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_full_change('full');
CREATE TRIGGER boundaries_tiles_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON boundaries
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_full_change('boundaries');
