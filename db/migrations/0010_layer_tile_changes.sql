-- Context layers reach the tile caches the way boundaries do: any statement that
-- changes a layer's table (an import, a re-snap, `analysis hotspots --store`,
-- an edit in psql) queues one 'layer' row naming the layer, and the tile
-- servers drop that layer's cached tiles (tiles/rollup.py, tiles/service.py).
-- A new vector layer with its own table adds the same trigger in its migration.
ALTER TABLE tile_changes DROP CONSTRAINT tile_changes_kind_check;
ALTER TABLE tile_changes
    ADD CONSTRAINT tile_changes_kind_check CHECK (kind IN ('report', 'full', 'boundaries', 'layer')),
    ADD COLUMN layer text,
    ADD CONSTRAINT tile_changes_layer_named CHECK ((kind = 'layer') = (layer IS NOT NULL));

CREATE FUNCTION petalapor_tiles_layer_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tile_changes (kind, layer) VALUES ('layer', TG_ARGV[0]);
    PERFORM pg_notify('petalapor_reports', '');
    RETURN NULL;
END $$;

CREATE TRIGGER layer_jakwifi_tiles_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON layer_jakwifi
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_layer_change('jakwifi');
CREATE TRIGGER layer_ispu_stations_tiles_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON layer_ispu_stations
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_layer_change('ispu_stations');
CREATE TRIGGER analysis_hotspots_tiles_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON analysis_hotspots
    FOR EACH STATEMENT EXECUTE FUNCTION petalapor_tiles_layer_change('hotspots');
