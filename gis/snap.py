"""Snap lon/lat points to polygons (RW, kelurahan): inside, nearest, or outside.

The rule (the database mirrors it; see :data:`SNAP_SQL_RULE`), for each point:

1. **inside**: one or more polygons *cover* the point (interior or boundary).
   Code is the smallest code (byte/code-point order) among them and the
   distance is 0.  Covers is tested in EPSG:4326, like ``ST_Covers(geom, pt)``.
2. **nearest**: no polygon covers it, and the nearest polygon is within
   ``tolerance_m``.  Distances are planar in EPSG:32748 (points and polygon
   vertices are transformed, as ``ST_Transform`` does).  Polygons within
   :data:`TIE_TOLERANCE_M` of the minimum distance count as tied, and the
   smallest code wins.
3. **outside**: code is missing.  The distance to the nearest polygon is still
   recorded.  Points are never dropped.

Bad coordinates (NaN, inf, out of range) raise a ``ValueError`` naming the
first bad index.  Ingest code can call :func:`validate_lonlat` first and
quarantine those rows.

How the inside step is fast without being approximate
-----------------------------------------------------
:class:`SnapIndex` lays a regular lon/lat grid over the polygons (about 10 m
cells).  Every cell whose closed box, widened by 1e-6 cell, touches any
polygon ring is *marked*.  Each ring segment is split into pieces no longer
than a cell, and all cells under each piece's widened bounding box are
marked, so the marking is a superset.  Unmarked cells are grouped into
4-connected components.  No ring crosses a component, so every polygon
either covers all of a component or none of it.  One exact GEOS covers test
per component therefore gives the answer for every point in it.
Floating-point error in a point's cell index (at most ~2e-10 cell:
1 ulp of the longitude over a 1e-4 degree cell) is far below
the widening, so a point can only fall in an unmarked cell when that cell's
answer is its own.

Marked cells keep a resolved answer, plus the few polygons whose rings pass
through them.  A polygon that covers the whole cell is known from an unmarked
neighbour cell (no ring touches either, so it covers both or neither: the
neighbour's component lists it) or, lacking one, from the cell centre, and
any polygon whose ring crosses the cell is a candidate.  Points in marked
cells are tested exactly (``shapely.intersects_xy``, which for a point is
covers) only against candidates whose code is smaller than the resolved
answer, in ascending order until the first hit.  The results are those of
the exact covers test for every point.

Nearest and outside distances come from a GEOS STRtree in UTM: over the
polygons themselves (nothing to build), or, for calls with many points, over
the individual ring segments (faster per point, ~0.2 s to build for the RW).
A point that no polygon covers is outside every polygon, so its distance to a
polygon is its distance to that polygon's rings: both trees give the same
distances, computed by the same GEOS point-segment routine.  Points that may
be within the tolerance then get exact GEOS polygon distances to every
polygon near the minimum, which settles ties and the (sub-millimetre) cases
where the UTM polygon covers a point that the lon/lat polygon does not.

Agreement with PostGIS
----------------------
:data:`SNAP_SQL_RULE` was run on PostGIS 3.3 for 600 points, including 100
vertices shared by several RW.  Codes and methods were identical, and
distances agreed within 1e-9 m.  Floating point leaves two possible
differences.  PostGIS and GEOS may disagree for points closer than about
1e-15 degrees to an edge, because PostGIS tests points in polygons with its
own code.  And the tolerance decision can differ when a distance is within
about 1e-9 m of ``tolerance_m``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy import ndimage

from gis.boundaries import METRIC_CRS, STORAGE_CRS

#: Default snapping tolerance for the ``nearest`` step, in metres.
DEFAULT_TOLERANCE_M = 100.0
#: Default edge of the lookup grid's cells, in metres (converted to degrees).
DEFAULT_CELL_M = 10.0
#: The grid is coarsened automatically beyond this many cells (memory bound).
MAX_GRID_CELLS = 40_000_000
#: Distances within this of the minimum count as equal (ties go to the smallest code).
TIE_TOLERANCE_M = 1e-6
#: The snapping methods, in the order of the rule.
METHODS: tuple[str, str, str] = ("inside", "nearest", "outside")

# Polygons whose rings are within this of the nearest ring get an exact polygon
# distance: it covers a UTM polygon containing a point its lon/lat twin does not
# (straight edges bend by well under 1 mm over a few km of projection).
_CANDIDATE_SLACK_M = 0.01
# Small STRtree nodes make nearest-segment queries ~1.5-2x faster than the default 10.
_SEGMENT_NODE_CAPACITY = 4
# Nearest polygons come from a tree of whole polygons; a tree of ring segments costs
# ~0.2 s to build (2,700 RW) and pays off from about this many points in one call.
_SEGMENT_TREE_MIN_POINTS = 20_000
# Metres per degree of latitude near the equator; only sizes the grid cells.
_M_PER_DEG_LAT = 110_574.0
# Widening of every marked box, in cells; dwarfs the ~2e-10 cell rounding error.
_EPS_CELL = 1e-6

SNAP_SQL_RULE = """\
-- petalapor snapping rule; gis.snap computes exactly this.  Parameters:
-- :tol = tolerance in metres (default 100), :tie = 1e-6 (TIE_TOLERANCE_M).
-- poly(code text, geom geometry(MultiPolygon, 4326)); pts(id, geom geometry(Point, 4326)).
-- COLLATE "C" makes text order the byte order that Python's str order uses.
-- Store ST_Transform(geom, 32748) in a column (geom_utm) to avoid transforming per row:
-- the values are identical.
SELECT p.id,
       COALESCE(i.code, CASE WHEN n.dist <= :tol THEN n.code END)  AS snap_code,
       CASE WHEN i.code IS NOT NULL THEN 'inside'
            WHEN n.dist <= :tol     THEN 'nearest'
            ELSE 'outside' END                                     AS snap_method,
       CASE WHEN i.code IS NOT NULL THEN 0.0 ELSE n.dist END       AS snap_distance_m
FROM pts p
LEFT JOIN LATERAL (                       -- 1. inside: covering polygon, smallest code
    SELECT r.code FROM poly r
    WHERE ST_Covers(r.geom, p.geom)
    ORDER BY r.code COLLATE "C" LIMIT 1
) i ON true
LEFT JOIN LATERAL (                       -- 2./3. nearest in UTM 48S, ties by code
    WITH d AS (
        SELECT r.code,
               ST_Distance(ST_Transform(r.geom, 32748), ST_Transform(p.geom, 32748)) AS dist
        FROM poly r
    )
    SELECT d.code, m.dmin AS dist
    FROM d, (SELECT min(dist) AS dmin FROM d) m
    WHERE d.dist <= m.dmin + :tie
    ORDER BY d.code COLLATE "C" LIMIT 1
) n ON i.code IS NULL;
-- Faster forms (KNN "ORDER BY geom_utm <-> pt_utm" to find dmin, then ST_DWithin(
-- geom_utm, pt_utm, dmin + :tie) for the ties) are fine: they select the same rows.
"""


class LonLatCheck(NamedTuple):
    """Per-row validity of lon/lat input, from :func:`validate_lonlat`."""

    ok: np.ndarray
    """bool, True where the row can be snapped."""
    reason: np.ndarray
    """object, ``None`` where ok, else why the row was rejected."""


class SnapResult(NamedTuple):
    """Per-point snapping result; all fields are arrays of the input length."""

    code: np.ndarray
    """object: the polygon code (str), or ``None`` when outside."""
    method: np.ndarray
    """str: ``"inside"``, ``"nearest"`` or ``"outside"``."""
    distance_m: np.ndarray
    """float64: 0 when inside, else metres (EPSG:32748) to the nearest polygon."""
    row: np.ndarray
    """int64: position (``iloc``) of the polygon in the source frame, -1 when outside."""


# --------------------------------------------------------------------------- validation


def validate_lonlat(lon: np.ndarray, lat: np.ndarray) -> LonLatCheck:
    """Check lon/lat arrays row by row, for quarantining bad rows at ingest.

    Parameters
    ----------
    lon, lat
        Longitudes and latitudes in degrees (EPSG:4326), same length.

    Returns
    -------
    LonLatCheck
        ``ok`` (bool array) and ``reason`` (object array: ``None`` or a short
        text such as ``"lat out of range [-90, 90]"``).

    Examples
    --------
    >>> check = validate_lonlat(np.array([106.8, np.nan]), np.array([-6.2, -6.2]))
    >>> check.ok.tolist(), check.reason.tolist()
    ([True, False], [None, 'lon is not finite'])

    See Also
    --------
    check_lonlat : raises on the first bad row instead.
    """
    lon, lat = _as_float_pair(lon, lat)
    rules = (  # first matching rule names the row
        (~np.isfinite(lon), "lon is not finite"),
        (~np.isfinite(lat), "lat is not finite"),
        (np.abs(lon) > 180, "lon out of range [-180, 180]"),
        (np.abs(lat) > 90, "lat out of range [-90, 90]"),
    )
    reason = np.full(lon.shape, None, dtype=object)
    for bad, text in reversed(rules):
        reason[bad] = text
    ok = ~np.logical_or.reduce([bad for bad, _ in rules])
    return LonLatCheck(ok=ok, reason=reason)


def check_lonlat(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return lon/lat as float64 arrays, or raise on the first bad row.

    Parameters
    ----------
    lon, lat
        Longitudes and latitudes in degrees, same length.

    Returns
    -------
    tuple of numpy.ndarray
        ``(lon, lat)`` as 1-D float64 arrays.

    Raises
    ------
    ValueError
        Naming the first bad index, its values and the reason.

    See Also
    --------
    validate_lonlat : the per-row mask and reasons.
    """
    lon, lat = _as_float_pair(lon, lat)
    finite = np.isfinite(lon).all() and np.isfinite(lat).all()
    if not (finite and np.abs(lon).max(initial=0) <= 180 and np.abs(lat).max(initial=0) <= 90):
        check = validate_lonlat(lon, lat)
        i = int(np.flatnonzero(~check.ok)[0])
        n_bad = int((~check.ok).sum())
        raise ValueError(
            f"bad coordinate at index {i}: lon={float(lon[i])!r}, lat={float(lat[i])!r} "
            f"({check.reason[i]}); {n_bad} bad row(s) in all, see gis.snap.validate_lonlat"
        )
    return lon, lat


def _as_float_pair(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float64 arrays of equal length."""
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat differ in length: {lon.size} vs {lat.size}")
    return lon, lat


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class _CoverGrid:
    """Regular lon/lat grid answering "smallest covering polygon" per cell.

    ``values`` holds, per cell (row-major, ``iy * nx + ix``), the polygon
    position (>= 0), -1 for "covered by none", or ``-2 - k`` for marked cell
    ``k``.  Marked cell ``k`` resolves to ``base[k]`` (-1 for none) unless one
    of ``cand[start[k]:start[k] + count[k]]`` (ascending) covers the point.
    """

    x0: float
    y0: float
    dx: float
    dy: float
    nx: int
    ny: int
    values: np.ndarray
    base: np.ndarray
    start: np.ndarray
    count: np.ndarray
    cand: np.ndarray

    def locate(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Flat cell index per point, -1 off the grid."""
        fx = np.floor((lon - self.x0) / self.dx)
        fy = np.floor((lat - self.y0) / self.dy)
        on = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        flat = np.full(lon.shape, -1, dtype=np.int64)
        flat[on] = fy[on].astype(np.int64) * self.nx + fx[on].astype(np.int64)
        return flat

    def centres(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of the centres of flat cells."""
        ix, iy = flat % self.nx, flat // self.nx
        return self.x0 + (ix + 0.5) * self.dx, self.y0 + (iy + 0.5) * self.dy


@dataclass(frozen=True)
class _RingSegments:
    """All ring segments of a set of polygons, with the owning polygon position."""

    ax: np.ndarray
    ay: np.ndarray
    bx: np.ndarray
    by: np.ndarray
    poly: np.ndarray


class SnapIndex:
    """Polygons prepared for fast, exact snapping of lon/lat points.

    Build it once with :meth:`from_frame`, then call :meth:`snap` on arrays.

    Attributes
    ----------
    codes : numpy.ndarray
        Polygon codes (str), sorted; positions in this array are what the
        index works with ("smallest code" is "smallest position").
    rows : numpy.ndarray
        For each sorted position, the row (``iloc``) in the source frame.
    tolerance_m : float
        Tolerance of the ``nearest`` step, metres.
    cell_m : float
        Edge of the lookup grid's cells, metres (after any coarsening).
    """

    def __init__(
        self,
        geoms: np.ndarray,
        codes: np.ndarray,
        rows: np.ndarray,
        tolerance_m: float = DEFAULT_TOLERANCE_M,
        cell_m: float = DEFAULT_CELL_M,
    ) -> None:
        """Build from polygons already sorted by code (use :meth:`from_frame`)."""
        if not np.isfinite(tolerance_m) or tolerance_m < 0:
            raise ValueError(f"tolerance_m must be a finite number >= 0, got {tolerance_m!r}")
        if not np.isfinite(cell_m) or cell_m <= 0:
            raise ValueError(f"cell_m must be a finite number > 0, got {cell_m!r}")
        self.codes = codes
        self.rows = rows
        self.tolerance_m = float(tolerance_m)
        self._geoms = geoms
        self._code_or_none = np.append(codes.astype(object), None)  # [-1] -> None
        self._row_or_missing = np.append(rows, -1)
        shapely.prepare(geoms)
        self._grid = _build_cover_grid(geoms, shapely.STRtree(geoms), cell_m)
        self.cell_m = self._grid.dy * _M_PER_DEG_LAT
        self._to_metric = Transformer.from_crs(STORAGE_CRS, METRIC_CRS, always_xy=True)
        self._metric_geoms = shapely.transform(geoms, self._project_coords)
        self._metric_tree = shapely.STRtree(self._metric_geoms)
        self._segments: tuple[shapely.STRtree, np.ndarray] | None = None  # built when needed

    @classmethod
    def from_frame(
        cls,
        polygons: gpd.GeoDataFrame,
        code_col: str = "code",
        tolerance_m: float = DEFAULT_TOLERANCE_M,
        cell_m: float = DEFAULT_CELL_M,
    ) -> SnapIndex:
        """Build an index from a polygon GeoDataFrame.

        Parameters
        ----------
        polygons
            Polygon/MultiPolygon rows with a CRS.  Reprojected to EPSG:4326
            with a warning if in another CRS.  Codes need not be unique (ties
            between equal codes go to the first row).
        code_col
            Column holding each polygon's code; values are compared as str.
        tolerance_m
            Maximum distance (metres, EPSG:32748) of the ``nearest`` step.
        cell_m
            Cell edge of the lookup grid in metres.  Smaller is faster to
            query and slower to build; coarsened automatically if the grid
            would exceed :data:`MAX_GRID_CELLS`.

        Returns
        -------
        SnapIndex

        Raises
        ------
        ValueError
            Missing CRS or code column, a null code, or a row that is not a
            non-empty polygon (the message names the first such row).

        Examples
        --------
        >>> from gis.boundaries import load_manifest, build_boundary_set
        >>> rw = build_boundary_set(load_manifest()).frames["rw"]    # doctest: +SKIP
        >>> index = SnapIndex.from_frame(rw)                          # doctest: +SKIP
        >>> index.snap(np.array([106.8272]), np.array([-6.1754])).method  # doctest: +SKIP
        array(['inside'], dtype='<U7')

        See Also
        --------
        snap_points : one-call wrapper for GeoDataFrames.
        """
        polygons = _as_storage_crs(polygons, "polygons")
        if code_col not in polygons.columns:
            raise ValueError(f"polygons have no column {code_col!r}")
        geoms = _check_polygons(polygons)
        codes = _check_codes(polygons[code_col])
        order = np.lexsort((np.arange(len(codes)), codes))
        return cls(geoms[order], codes[order], order.astype(np.int64), tolerance_m, cell_m)

    def inside(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Step 1 only: the smallest covering code per point, ``None`` where uncovered.

        Parameters
        ----------
        lon, lat
            Coordinates in degrees (EPSG:4326).

        Returns
        -------
        numpy.ndarray
            Object array of str / ``None``.
        """
        lon, lat = check_lonlat(lon, lat)
        return self._code_or_none[self._covering(lon, lat)]

    def snap(self, lon: np.ndarray, lat: np.ndarray) -> SnapResult:
        """Snap points by the full rule (inside, nearest within tolerance, outside).

        Parameters
        ----------
        lon, lat
            Coordinates in degrees (EPSG:4326), same length.

        Returns
        -------
        SnapResult
            ``code``, ``method``, ``distance_m`` and ``row`` arrays.

        Raises
        ------
        ValueError
            On NaN/inf/out-of-range coordinates (first bad index named).

        See Also
        --------
        validate_lonlat : find bad rows without raising.
        """
        lon, lat = check_lonlat(lon, lat)
        pos = self._covering(lon, lat)
        method = np.zeros(lon.shape, dtype=np.int8)
        dist = np.zeros(lon.shape, dtype=np.float64)
        out = np.flatnonzero(pos < 0)
        if out.size:
            near_pos, near_dist = self._nearest(lon[out], lat[out])
            within = near_dist <= self.tolerance_m
            pos[out] = np.where(within, near_pos, -1)
            method[out] = np.where(within, 1, 2)
            dist[out] = near_dist
        return SnapResult(
            code=self._code_or_none[pos],
            method=np.asarray(METHODS)[method],
            distance_m=dist,
            row=self._row_or_missing[pos],
        )

    # ------------------------------------------------------------------ steps

    def _project_coords(self, xy: np.ndarray) -> np.ndarray:
        """Lon/lat coordinate pairs to UTM 48S."""
        x, y = self._to_metric.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    def _covering(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Smallest covering polygon position per point, -1 where none."""
        grid = self._grid
        flat = grid.locate(lon, lat)
        val = np.full(lon.shape, -1, dtype=np.int64)
        on = flat >= 0
        val[on] = grid.values[flat[on]]
        marked = np.flatnonzero(val <= -2)
        if marked.size:
            cell = -2 - val[marked]
            val[marked] = grid.base[cell]
            hit_pt, hit_pos = _first_covering_candidate(
                grid, self._geoms, cell, lon[marked], lat[marked]
            )
            val[marked[hit_pt]] = hit_pos
        return val

    def _nearest(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest polygon position (ties: smallest) and distance in metres, UTM 48S."""
        x, y = self._to_metric.transform(lon, lat)
        pts = shapely.points(x, y)
        if self._segments is None and pts.size >= _SEGMENT_TREE_MIN_POINTS:
            self._segments = _segment_tree(self._metric_geoms)
        if self._segments is not None:  # ring segments: faster per point
            tree, owner = self._segments
        else:  # whole polygons: nothing to build
            tree, owner = self._metric_tree, np.arange(len(self._metric_geoms))
        (i, j), d = tree.query_nearest(pts, return_distance=True, all_matches=False)
        dmin = np.full(pts.shape, np.inf)
        dmin[i] = d
        pos = np.full(pts.shape, -1, dtype=np.int64)
        pos[i] = owner[j]
        near = np.flatnonzero(dmin <= self.tolerance_m + _CANDIDATE_SLACK_M)
        if near.size:
            pos[near], dmin[near] = _tied_nearest(
                tree, owner, self._metric_geoms, pts[near], dmin[near]
            )
        return pos, dmin


# --------------------------------------------------------------------------- build helpers


def _as_storage_crs(frame: gpd.GeoDataFrame, what: str) -> gpd.GeoDataFrame:
    """The frame in EPSG:4326; warns when it had to be reprojected."""
    if not isinstance(frame, gpd.GeoDataFrame):
        raise TypeError(f"{what} must be a GeoDataFrame, got {type(frame).__name__}")
    if frame.crs is None:
        raise ValueError(f"{what} have no CRS; call .set_crs(...) first")
    if not CRS.from_user_input(frame.crs).equals(CRS.from_user_input(STORAGE_CRS)):
        warnings.warn(
            f"{what} are in {frame.crs.to_string()}, reprojecting to {STORAGE_CRS}",
            UserWarning,
            stacklevel=3,
        )
        frame = frame.to_crs(STORAGE_CRS)
    return frame


def _check_polygons(polygons: gpd.GeoDataFrame) -> np.ndarray:
    """Geometries as an array; every row must be a non-empty (Multi)Polygon."""
    geoms = np.asarray(polygons.geometry.values, dtype=object)
    kind = shapely.get_type_id(geoms)  # -1 for None
    bad = ~np.isin(kind, (3, 6)) | shapely.is_empty(geoms)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"polygon row {i} is not a non-empty Polygon/MultiPolygon: {geoms[i]!r:.80}"
        )
    if len(geoms) == 0:
        raise ValueError("no polygons to snap to")
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        warnings.warn(
            f"{int(invalid.sum())} invalid polygon(s), first at row "
            f"{int(np.flatnonzero(invalid)[0])}; results follow GEOS on the invalid shapes, "
            "consider make_valid",
            UserWarning,
            stacklevel=3,
        )
    return geoms


def _check_codes(codes: object) -> np.ndarray:
    """Codes as a str array; nulls are rejected."""
    series = pd.Series(codes)
    missing = series.isna().to_numpy()
    if missing.any():
        raise ValueError(f"polygon row {int(np.flatnonzero(missing)[0])} has no code")
    return np.array([str(c) for c in series], dtype=str)


def _cell_degrees(cell_m: float, geoms: np.ndarray) -> tuple[float, float]:
    """Cell size in degrees (lon, lat) for ``cell_m`` metres at the polygons' mid-latitude."""
    _, miny, _, maxy = shapely.total_bounds(geoms)
    lat0 = np.radians((miny + maxy) / 2)
    return cell_m / (_M_PER_DEG_LAT * max(np.cos(lat0), 0.01)), cell_m / _M_PER_DEG_LAT


def _grid_frame(geoms: np.ndarray, cell_m: float) -> tuple[float, float, float, float, int, int]:
    """Origin, cell size and shape of a grid over the polygons with a 2-cell margin."""
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    dx, dy = _cell_degrees(cell_m, geoms)
    span = ((maxx - minx) / dx + 5) * ((maxy - miny) / dy + 5)
    if span > MAX_GRID_CELLS:  # coarsen to stay within memory
        factor = float(np.sqrt(span / MAX_GRID_CELLS))
        dx, dy = dx * factor, dy * factor
    x0, y0 = minx - 2 * dx, miny - 2 * dy
    nx = int(np.ceil((maxx - x0) / dx)) + 3
    ny = int(np.ceil((maxy - y0) / dy)) + 3
    return x0, y0, dx, dy, nx, ny


def _ring_segments(geoms: np.ndarray) -> _RingSegments:
    """Every exterior and interior ring segment, tagged with its polygon position."""
    parts, part_poly = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    poly = part_poly[ring_part][coord_ring[:-1][same]]
    return _RingSegments(a[:, 0], a[:, 1], b[:, 0], b[:, 1], poly.astype(np.int64))


def _segment_tree(geoms: np.ndarray) -> tuple[shapely.STRtree, np.ndarray]:
    """STRtree over every ring segment (as 2-point lines), and each segment's polygon."""
    segs = _ring_segments(geoms)
    lines = shapely.linestrings(
        np.stack([np.c_[segs.ax, segs.ay], np.c_[segs.bx, segs.by]], axis=1)
    )
    return shapely.STRtree(lines, node_capacity=_SEGMENT_NODE_CAPACITY), segs.poly


def _boundary_cells(
    segs: _RingSegments, x0: float, y0: float, dx: float, dy: float, nx: int, n_poly: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (cell, polygon) pairs for all cells a ring may touch, sorted by cell then polygon.

    Segments are cut into pieces spanning at most one cell; the cells under
    each piece's bounding box, widened by ``_EPS_CELL``, are marked.
    """
    ua, va = (segs.ax - x0) / dx, (segs.ay - y0) / dy
    ub, vb = (segs.bx - x0) / dx, (segs.by - y0) / dy
    n = np.maximum(1, np.ceil(np.maximum(np.abs(ub - ua), np.abs(vb - va)))).astype(np.int64)
    seg = np.repeat(np.arange(n.size), n)
    k = np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)
    t0, t1 = k / n[seg], (k + 1) / n[seg]
    u0, u1 = ua[seg] + (ub - ua)[seg] * t0, ua[seg] + (ub - ua)[seg] * t1
    v0, v1 = va[seg] + (vb - va)[seg] * t0, va[seg] + (vb - va)[seg] * t1
    i0 = np.floor(np.minimum(u0, u1) - _EPS_CELL).astype(np.int64)
    i1 = np.floor(np.maximum(u0, u1) + _EPS_CELL).astype(np.int64)
    j0 = np.floor(np.minimum(v0, v1) - _EPS_CELL).astype(np.int64)
    j1 = np.floor(np.maximum(v0, v1) + _EPS_CELL).astype(np.int64)
    poly = segs.poly[seg]
    keys = []
    for di in range(3):  # a piece spans at most 1 cell + 2 eps: at most 3 cells per axis
        for dj in range(3):
            ok = (i0 + di <= i1) & (j0 + dj <= j1)
            keys.append(((j0[ok] + dj) * nx + (i0[ok] + di)) * n_poly + poly[ok])
    key = np.sort(np.concatenate(keys))
    key = key[np.r_[True, key[1:] != key[:-1]]]
    return key // n_poly, key % n_poly


def _covering_pairs(
    tree: shapely.STRtree, geoms: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (point, polygon position) pairs where the polygon covers the point.

    Bounding-box candidates from the tree, then ``intersects_xy`` on the prepared
    polygons (for a point, intersects is covers): the same pairs as the tree's
    ``covered_by`` predicate, several times faster.
    """
    pt, pos = tree.query(shapely.points(x, y))
    hit = shapely.intersects_xy(geoms[pos], x[pt], y[pt])
    return pt[hit], pos[hit]


@dataclass(frozen=True)
class _Components:
    """The 4-connected components of unmarked cells and the polygons covering each.

    ``labels``: component per cell (1..n, 0 for marked cells); the polygons
    covering component ``c`` are ``cover[start[c]:start[c + 1]]`` (ascending).
    """

    labels: np.ndarray
    start: np.ndarray
    cover: np.ndarray

    def smallest(self) -> np.ndarray:
        """Smallest covering polygon per component (index 0: marked, -1), -1 where none."""
        first = self.start[:-1]
        has = self.start[1:] > first
        return np.where(has, self.cover[np.minimum(first, max(self.cover.size - 1, 0))], -1)


def _components(
    marked: np.ndarray, grid: _CoverGrid, tree: shapely.STRtree, geoms: np.ndarray
) -> _Components:
    """Label the unmarked components; one exact covering test per component."""
    labels, n_labels = ndimage.label(~marked.reshape(grid.ny, grid.nx))
    labels = labels.reshape(-1)
    cells = np.flatnonzero(labels)
    representative = np.zeros(n_labels + 1, dtype=np.int64)
    representative[labels[cells]] = cells  # any cell of a component will do
    del cells
    pt, pos = _covering_pairs(tree, geoms, *grid.centres(representative[1:]))
    order = np.lexsort((pos, pt))
    comp, cover = pt[order] + 1, pos[order]
    start = np.searchsorted(comp, np.arange(n_labels + 2))
    return _Components(labels, start, cover)


def _marked_tables(
    cells: np.ndarray,
    polys: np.ndarray,
    grid: _CoverGrid,
    tree: shapely.STRtree,
    geoms: np.ndarray,
    components: _Components,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resolved answer and exact-test candidates for each marked cell.

    ``polys`` are the polygons whose rings touch the cell ("partial").  A
    polygon covering the centre that is not partial covers the whole cell;
    the smallest such is the cell's ``base``.  Only partial polygons smaller
    than ``base`` need an exact test.

    The non-partial polygons covering a marked cell are those covering any
    unmarked cell next to it (no ring touches either cell, and they share an
    edge, so each such polygon covers both or neither): the component's list
    serves.  Only cells with no unmarked neighbour test their centre.
    """
    new_cell = np.r_[True, cells[1:] != cells[:-1]]  # cells are sorted
    marked = cells[new_cell]
    cell_of_pair = np.cumsum(new_cell) - 1
    n_poly = len(geoms)
    comp = np.zeros(marked.size, dtype=np.int64)
    col = marked % grid.nx
    for step, inside in (
        (1, col < grid.nx - 1),
        (-1, col > 0),
        (grid.nx, marked < (grid.ny - 1) * grid.nx),
        (-grid.nx, marked >= grid.nx),
    ):
        todo = np.flatnonzero((comp == 0) & inside)
        comp[todo] = components.labels[marked[todo] + step]
    # the neighbouring component's polygons, else the exact covering of the centre
    lone = np.flatnonzero(comp == 0)
    lone_pt, lone_pos = _covering_pairs(tree, geoms, *grid.centres(marked[lone]))
    near = np.flatnonzero(comp > 0)
    lo, hi = components.start[comp[near]], components.start[comp[near] + 1]
    k = hi - lo
    near_pt = np.repeat(near, k)
    offset = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    near_pos = components.cover[np.repeat(lo, k) + offset]
    pt = np.concatenate([lone[lone_pt], near_pt])
    pos = np.concatenate([lone_pos, near_pos]).astype(np.int64)
    pair_key = cell_of_pair * np.int64(n_poly) + polys  # sorted, as the pairs are
    centre_key = pt * np.int64(n_poly) + pos
    at = np.minimum(np.searchsorted(pair_key, centre_key), pair_key.size - 1)
    partial = pair_key[at] == centre_key
    base = np.full(marked.size, np.iinfo(np.int64).max)
    np.minimum.at(base, pt[~partial], pos[~partial])
    keep = polys < base[cell_of_pair]
    n_cand = np.bincount(cell_of_pair[keep], minlength=marked.size)
    start = np.cumsum(n_cand) - n_cand
    base = np.where(base == np.iinfo(np.int64).max, -1, base)
    return (
        marked,
        base.astype(np.int32),
        start,
        n_cand.astype(np.int32),
        polys[keep].astype(np.int32),
    )


def _build_cover_grid(geoms: np.ndarray, tree: shapely.STRtree, cell_m: float) -> _CoverGrid:
    """The conservative lookup grid for the inside step."""
    x0, y0, dx, dy, nx, ny = _grid_frame(geoms, cell_m)
    empty = np.zeros(0, dtype=np.int64)
    grid = _CoverGrid(x0, y0, dx, dy, nx, ny, empty, empty, empty, empty, empty)
    cells, polys = _boundary_cells(_ring_segments(geoms), x0, y0, dx, dy, nx, len(geoms))
    marked = np.zeros(nx * ny, dtype=bool)
    marked[cells] = True
    components = _components(marked, grid, tree, geoms)
    del marked
    values = components.smallest()[components.labels].astype(np.int32)
    marked_cells, base, start, count, cand = _marked_tables(
        cells, polys, grid, tree, geoms, components
    )
    values[marked_cells] = -2 - np.arange(marked_cells.size, dtype=np.int32)
    return _CoverGrid(x0, y0, dx, dy, nx, ny, values, base, start, count, cand)


# --------------------------------------------------------------------------- query helpers


def _first_covering_candidate(
    grid: _CoverGrid, geoms: np.ndarray, cell: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact tests in marked cells: (point, smallest covering candidate) for points with a hit.

    Candidates ascend per cell, so they are tried rank by rank: a point stops at
    its first hit (about a third fewer tests than trying all of them).
    """
    count, start = grid.count[cell], grid.start[cell]
    found_point, found_cand = [], []
    todo = np.flatnonzero(count > 0)
    rank = 0
    while todo.size:
        cand = grid.cand[start[todo] + rank].astype(np.int64)
        # For a point, intersects == covers (ST_Covers)
        hit = shapely.intersects_xy(geoms[cand], lon[todo], lat[todo])
        found_point.append(todo[hit])
        found_cand.append(cand[hit])
        rank += 1
        todo = todo[~hit & (count[todo] > rank)]
    if not found_point:  # no candidates at all
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(found_point), np.concatenate(found_cand)


def _tied_nearest(
    seg_tree: shapely.STRtree,
    seg_poly: np.ndarray,
    metric_geoms: np.ndarray,
    pts: np.ndarray,
    dmin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact polygon distances near the minimum; smallest position among the tied."""
    pt, seg = seg_tree.query(pts, predicate="dwithin", distance=dmin + _CANDIDATE_SLACK_M)
    key = np.unique(pt * np.int64(len(metric_geoms)) + seg_poly[seg])
    pt, pos = key // len(metric_geoms), key % len(metric_geoms)
    dist = shapely.distance(metric_geoms[pos], pts[pt])
    best = np.full(pts.shape, np.inf)
    np.minimum.at(best, pt, dist)
    tied = dist <= best[pt] + TIE_TOLERANCE_M
    winner = np.full(pts.shape, np.iinfo(np.int64).max)
    np.minimum.at(winner, pt[tied], pos[tied])
    return winner, best


# --------------------------------------------------------------------------- frames


def snap_points(
    points: gpd.GeoDataFrame,
    polygons: gpd.GeoDataFrame | SnapIndex,
    code_col: str = "code",
    tolerance_m: float = DEFAULT_TOLERANCE_M,
) -> gpd.GeoDataFrame:
    """Snap a point GeoDataFrame to polygons, adding ``snap_*`` columns.

    Parameters
    ----------
    points
        Point geometries with a CRS (reprojected to EPSG:4326 for snapping,
        with a warning; the returned frame keeps the input geometry and CRS).
    polygons
        Polygon GeoDataFrame, or a prebuilt :class:`SnapIndex` (then
        ``code_col`` and ``tolerance_m`` are ignored).
    code_col
        Code column of ``polygons``.
    tolerance_m
        Maximum distance of the ``nearest`` step, metres.

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``points`` with the three columns added (same row order; no
        row is dropped).

    Raises
    ------
    ValueError
        Missing CRS, non-point or empty geometries, or bad coordinates (the
        first bad row is named).

    Examples
    --------
    >>> snapped = snap_points(reports, rw)                                   # doctest: +SKIP
    >>> snapped.snap_method.value_counts()                                   # doctest: +SKIP

    See Also
    --------
    SnapIndex.from_frame : build once, snap many batches.
    """
    pts = _as_storage_crs(points, "points")
    geoms = np.asarray(pts.geometry.values, dtype=object)
    bad = (shapely.get_type_id(geoms) != 0) | shapely.is_empty(geoms)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"point row {i} (index {points.index[i]!r}) is not a non-empty Point")
    index = (
        polygons
        if isinstance(polygons, SnapIndex)
        else SnapIndex.from_frame(polygons, code_col=code_col, tolerance_m=tolerance_m)
    )
    result = index.snap(shapely.get_x(geoms), shapely.get_y(geoms))
    out = points.copy()
    out["snap_code"] = result.code
    out["snap_method"] = result.method
    out["snap_distance_m"] = result.distance_m
    return out
