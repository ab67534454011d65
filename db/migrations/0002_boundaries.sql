-- Administrative boundaries: kota > kecamatan > kelurahan > rw, one table keyed by
-- (level, code).  A boundary set is one import; the current set is the one in use.

CREATE TABLE boundary_sets (
    id           serial PRIMARY KEY,
    fingerprint  text NOT NULL,
    sources      jsonb NOT NULL,
    report       jsonb NOT NULL,
    counts       jsonb NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    is_current   boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX boundary_sets_one_current ON boundary_sets (is_current) WHERE is_current;

CREATE TABLE boundaries (
    level           text NOT NULL CHECK (level IN ('kota', 'kecamatan', 'kelurahan', 'rw')),
    code            text NOT NULL,
    name            text NOT NULL,
    parent_code     text,
    kelurahan_code  text,
    kecamatan_code  text,
    kota_code       text,
    n_parts         integer NOT NULL DEFAULT 1,
    area_m2         double precision NOT NULL,
    geom            geometry(MultiPolygon, 4326) NOT NULL,
    -- metric copy (UTM 48S) so distances use the index without transforming the column
    geom_m          geometry(MultiPolygon, 32748) NOT NULL,
    set_id          integer NOT NULL REFERENCES boundary_sets (id),
    PRIMARY KEY (level, code)
);
CREATE INDEX boundaries_geom_gist ON boundaries USING gist (geom);
CREATE INDEX boundaries_geom_m_gist ON boundaries USING gist (geom_m);
CREATE INDEX boundaries_rw_geom_gist ON boundaries USING gist (geom) WHERE level = 'rw';
CREATE INDEX boundaries_rw_geom_m_gist ON boundaries USING gist (geom_m) WHERE level = 'rw';
CREATE INDEX boundaries_parent ON boundaries (level, parent_code);
