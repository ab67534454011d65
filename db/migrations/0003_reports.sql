-- Reports, their append-only status history, quarantine of rejected input, and the
-- reporter-identity table that no public query touches.

CREATE TABLE opds (
    code  text PRIMARY KEY,
    name  text NOT NULL
);

CREATE TABLE categories (
    code             text PRIMARY KEY,
    name_id          text NOT NULL,
    name_en          text NOT NULL,
    default_opd      text NOT NULL REFERENCES opds (code),
    jaklapor         boolean NOT NULL DEFAULT false,
    catalog_version  integer NOT NULL
);

CREATE TABLE statuses (
    code     text PRIMARY KEY,
    name_id  text NOT NULL,
    name_en  text NOT NULL,
    is_open  boolean NOT NULL
);

CREATE TABLE reports (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source                text NOT NULL,             -- channel: jaki, qlue, sms, web, open311, ...
    external_id           text NOT NULL,             -- the source system's id: idempotency key
    category              text NOT NULL REFERENCES categories (code),
    opd                   text NOT NULL REFERENCES opds (code),
    title                 text,
    description           text,
    media_url             text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    first_coordinated_at  timestamptz,
    resolved_at           timestamptz,
    status                text NOT NULL DEFAULT 'menunggu' REFERENCES statuses (code),
    geom                  geometry(Point, 4326) NOT NULL,
    rw_code               text,
    kelurahan_code        text,
    kecamatan_code        text,
    kota_code             text,
    snap_method           text NOT NULL CHECK (snap_method IN ('inside', 'nearest', 'outside')),
    snap_distance_m       double precision NOT NULL DEFAULT 0,
    h3_r7                 bigint NOT NULL,
    h3_r8                 bigint NOT NULL,
    h3_r9                 bigint NOT NULL,
    h3_r10                bigint NOT NULL,
    h3_r11                bigint NOT NULL,
    public                boolean NOT NULL DEFAULT true,   -- the reporter may hide a report
    attrs                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT reports_source_external UNIQUE (source, external_id),
    CONSTRAINT reports_resolved_after_created CHECK (resolved_at IS NULL OR resolved_at >= created_at)
);
CREATE INDEX reports_geom_gist ON reports USING gist (geom);
CREATE INDEX reports_rw ON reports (rw_code);
CREATE INDEX reports_kelurahan ON reports (kelurahan_code);
CREATE INDEX reports_category ON reports (category);
CREATE INDEX reports_opd ON reports (opd);
CREATE INDEX reports_status ON reports (status);
CREATE INDEX reports_created ON reports (created_at);
CREATE INDEX reports_h3_r7 ON reports (h3_r7);
CREATE INDEX reports_h3_r8 ON reports (h3_r8);
CREATE INDEX reports_h3_r9 ON reports (h3_r9);
CREATE INDEX reports_h3_r10 ON reports (h3_r10);
CREATE INDEX reports_h3_r11 ON reports (h3_r11);

CREATE TABLE report_events (
    id           bigserial PRIMARY KEY,
    report_id    uuid NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    from_status  text REFERENCES statuses (code),        -- NULL for the creation event
    to_status    text NOT NULL REFERENCES statuses (code),
    at           timestamptz NOT NULL,
    actor_opd    text REFERENCES opds (code),
    note         text
);
CREATE INDEX report_events_report ON report_events (report_id, at);

-- report_events is append-only.
CREATE FUNCTION petalapor_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER report_events_append_only BEFORE UPDATE OR DELETE ON report_events
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION petalapor_append_only();

-- Reporter identity: at most a salted hash, in its own table, never joined by public queries.
CREATE TABLE reporter_identities (
    report_id      uuid PRIMARY KEY REFERENCES reports (id) ON DELETE CASCADE,
    reporter_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Rows that failed validation on import: kept with their reason, never lost.
CREATE TABLE report_quarantine (
    id           bigserial PRIMARY KEY,
    import_id    uuid NOT NULL,
    source_file  text,
    row_number   integer,               -- 1-based data row (header excluded)
    field        text,
    reason       text NOT NULL,
    raw          jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_quarantine_import ON report_quarantine (import_id);

CREATE TABLE report_imports (
    id          uuid PRIMARY KEY,
    source_file text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    summary     jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- The snapping rule, mirrored exactly by gis/snap.py:
--   1. polygons that COVER the point (inside or on the edge): smallest code, 'inside', 0 m;
--   2. else the nearest polygon within tolerance, distance in UTM 48S metres,
--      ties by smallest code: 'nearest';
--   3. else 'outside', no code, distance to the nearest polygon.
CREATE FUNCTION petalapor_snap(
    p_level text, lon double precision, lat double precision, tolerance_m double precision DEFAULT 100
) RETURNS TABLE (code text, method text, distance_m double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH pt AS (
        SELECT ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS g,
               ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 32748) AS gm
    ),
    inside AS (
        SELECT b.code, 'inside'::text AS method, 0::double precision AS distance_m, 0 AS rank
        FROM boundaries b, pt
        WHERE b.level = p_level AND ST_Covers(b.geom, pt.g)
        ORDER BY b.code
        LIMIT 1
    ),
    nearest AS (
        SELECT b.code, ST_Distance(b.geom_m, pt.gm) AS d
        FROM boundaries b, pt
        WHERE b.level = p_level
        ORDER BY b.geom_m <-> pt.gm, b.code
        LIMIT 8
    ),
    best AS (
        SELECT code, d FROM nearest ORDER BY d, code LIMIT 1
    )
    SELECT code, method, distance_m FROM inside
    UNION ALL
    SELECT CASE WHEN d <= tolerance_m THEN code END,
           CASE WHEN d <= tolerance_m THEN 'nearest' ELSE 'outside' END,
           d
    FROM best
    WHERE NOT EXISTS (SELECT 1 FROM inside)
$$;
