-- Align petalapor_snap with gis/snap.py exactly: codes compare in byte order
-- (COLLATE "C"), and polygons within 1e-6 m of the minimum distance count as
-- tied (the smallest code wins), so a point equidistant from two RW does not
-- go either way on floating-point noise.  Migrations are immutable once
-- applied, hence a new one rather than an edit of 0003.
CREATE OR REPLACE FUNCTION petalapor_snap(
    p_level text, lon double precision, lat double precision, tolerance_m double precision DEFAULT 100
) RETURNS TABLE (code text, method text, distance_m double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH pt AS (
        SELECT ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS g,
               ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 32748) AS gm
    ),
    inside AS (
        SELECT b.code, 'inside'::text AS method, 0::double precision AS distance_m
        FROM boundaries b, pt
        WHERE b.level = p_level AND ST_Covers(b.geom, pt.g)
        ORDER BY b.code COLLATE "C"
        LIMIT 1
    ),
    nearest AS (
        SELECT b.code, ST_Distance(b.geom_m, pt.gm) AS d
        FROM boundaries b, pt
        WHERE b.level = p_level
        ORDER BY b.geom_m <-> pt.gm
        LIMIT 16
    ),
    dmin AS (
        SELECT min(d) AS d FROM nearest
    ),
    best AS (
        SELECT n.code, dmin.d
        FROM nearest n, dmin
        WHERE n.d <= dmin.d + 1e-6
        ORDER BY n.code COLLATE "C"
        LIMIT 1
    )
    SELECT code, method, distance_m FROM inside
    UNION ALL
    SELECT CASE WHEN d <= tolerance_m THEN code END,
           CASE WHEN d <= tolerance_m THEN 'nearest' ELSE 'outside' END,
           d
    FROM best
    WHERE NOT EXISTS (SELECT 1 FROM inside)
$$;
