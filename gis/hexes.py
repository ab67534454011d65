"""H3 (v4) cells for lon/lat arrays at resolutions 7-11, stored as int64.

H3 indexes are unsigned 64-bit, but bit 63 of every valid index is a
reserved zero.  Every cell therefore fits in a *non-negative* int64, and so
in PostgreSQL ``bigint``, unchanged (h3-pg: ``h3index::bigint``).  Arrays stay
int64 inside petalapor.  The hex-string form (``"898c106a48fffff"``) is made
only at the edge, by :func:`cells_to_str` and :func:`str_to_cells`.

:func:`points_to_cells` gives, at each resolution, exactly what the scalar
``h3.latlng_to_cell(lat, lng, res)`` gives (SQL: ``h3_lat_lng_to_cell(pt, res)``).
That is not always the parent of the finer cell: children do not tile their
parent exactly, and about 6-7 % of points differ per level.  ``hierarchical=True``
returns plain parents instead, so rollups add up exactly.

How it is fast and still exact
------------------------------
H3's ``latLngToCell`` has a floating-point half and an integer half, and
:func:`points_to_cells` runs both on whole arrays (numpy):

1. *Float*: the nearest icosahedron face, the gnomonic projection of the
   point onto it, scaled to the resolution (``_geoToHex2d``), and the hexagon
   of the face's hex grid that holds it (``_hex2dToCoordIJK``).  numpy's
   trigonometry may differ from the C library's by a few units in the last
   place, so every decision carries a margin: the point must be farther
   than a bound on that difference (:data:`_REL_ERROR` of its coordinates,
   more near a face centre, where the projection is ill-conditioned) from
   its hexagon's edges and from the other faces.  Points within the margin
   (a few per million, at the finest resolutions) take the scalar API.
2. *Integer*: the digits, from the hexagon up to resolution 0 by aperture-7
   steps (``_faceIjkToH3``), in exact integer arithmetic.  The base cell and
   the rotation of the digits depend on the face and the resolution-0
   coordinates alone; they are read once per such key from one scalar call
   (:func:`_learn_bases`) and kept.  Keys on pentagon base cells, whose
   digits follow special rules, are left to the scalar API.

Coarser resolutions reuse the finest: the parent of the finest hexagon is
tried first, and only points outside it (by the margin) are placed again.
For the points that do fall in it, the cell is the parent of the finest cell.

Why not a library: h3-py has no array API, and h3ronpy (Rust, vectorised)
returns the same cells but took about 0.45 s per resolution per million
points here (2.2 s for r7-r11), against about 0.3 s for all five with this
module; the scalar h3-py call stays the reference (tests/test_hexes.py
compares every resolution 0-15 on points around Jakarta and worldwide).

Longitude-wrapping (antimeridian) cells are not handled by
:func:`cells_to_frame`; Jakarta is far from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from itertools import repeat

import geopandas as gpd
import numpy as np
import shapely
from h3.api import basic_int as h3

from gis.boundaries import STORAGE_CRS
from gis.snap import check_lonlat

#: Resolutions petalapor stores for every report.
RESOLUTIONS: tuple[int, ...] = (7, 8, 9, 10, 11)
#: Finest resolution H3 defines.
MAX_H3_RES = 15

_RES_SHIFT = 52
_RES_MASK = np.int64(0xF << _RES_SHIFT)
_MODE_SHIFT = 59
_CELL_MODE = 1
_BASE_SHIFT = 45

# Icosahedron face centres (lat, lng radians), as unit vectors, and the azimuth of
# each face's Class II i-axis: constants of the H3 grid (H3 reference library,
# faceijk.c, Apache-2.0).
_FACE_GEO = np.array(
    [
        (0.803582649718989942, 1.248397419617396099),
        (1.307747883455638156, 2.536945009877921159),
        (1.054751253523952054, -1.347517358900396623),
        (0.600191595538186799, -0.450603909469755746),
        (0.491715428198773866, 0.401988202911306943),
        (0.172745327415618701, 1.678146885280433686),
        (0.605929321571350690, 2.953923329812411617),
        (0.427370518328979641, -1.888876200336285401),
        (-0.079066118549212831, -0.733429513380867741),
        (-0.230961644455383637, 0.506495587332349035),
        (0.079066118549212831, 2.408163140208925497),
        (0.230961644455383637, -2.635097066257444203),
        (-0.172745327415618701, -1.463445768309359553),
        (-0.605929321571350690, -0.187669323777381622),
        (-0.427370518328979641, 1.252716453253507838),
        (-0.600191595538186799, 2.690988744120037492),
        (-0.491715428198773866, -2.739604450678486295),
        (-0.803582649718989942, -1.893195233972397139),
        (-1.307747883455638156, -0.604647643711872080),
        (-1.054751253523952054, 1.794075294689396615),
    ]
)
_FACE_XYZ = np.array(
    [
        (0.2199307791404606, 0.6583691780274996, 0.7198475378926182),
        (-0.2139234834501421, 0.1478171829550703, 0.9656017935214205),
        (0.1092625278784797, -0.4811951572873210, 0.8697775121287253),
        (0.7428567301586791, -0.3593941678278028, 0.5648005936517033),
        (0.8112534709140969, 0.3448953237639384, 0.4721387736413930),
        (-0.1055498149613921, 0.9794457296411413, 0.1718874610009365),
        (-0.8075407579970092, 0.1533552485898818, 0.5695261994882688),
        (-0.2846148069787907, -0.8644080972654206, 0.4144792552473539),
        (0.7405621473854482, -0.6673299564565524, -0.0789837646326737),
        (0.8512303986474293, 0.4722343788582681, -0.2289137388687808),
        (-0.7405621473854481, 0.6673299564565524, 0.0789837646326737),
        (-0.8512303986474292, -0.4722343788582682, 0.2289137388687808),
        (0.1055498149613919, -0.9794457296411413, -0.1718874610009365),
        (0.8075407579970092, -0.1533552485898819, -0.5695261994882688),
        (0.2846148069787908, 0.8644080972654204, -0.4144792552473539),
        (-0.7428567301586791, 0.3593941678278027, -0.5648005936517033),
        (-0.8112534709140971, -0.3448953237639382, -0.4721387736413930),
        (-0.2199307791404607, -0.6583691780274996, -0.7198475378926182),
        (0.2139234834501420, -0.1478171829550704, -0.9656017935214205),
        (-0.1092625278784796, 0.4811951572873210, -0.8697775121287253),
    ]
)
_FACE_AXIS_AZ = np.array(
    [
        5.619958268523939882, 5.760339081714187279, 0.780213654393430055, 0.430469363979999913,
        6.130269123335111400, 2.692877706530642877, 2.982963003477243874, 3.532912002790141181,
        3.494305004259568154, 3.003214169499538391, 5.930472956509811562, 0.138378484090254847,
        0.448714947059150361, 0.158629650112549365, 5.891865957979238535, 2.711123289609793325,
        3.294508837434268316, 3.804819692245439833, 3.664438879055192436, 2.361378999196363184,
    ]
)  # fmt: skip
_AP7_ROT_RADS = 0.333473172251832115336090755351601070065900389  # Class III rotation
_INV_RES0_U_GNOMONIC = 2.61803398874989484820458683436563811772
_SQRT7 = 2.6457513110645905905016157536392604257102
_SIN60 = float(np.sqrt(3.0) / 2.0)
#: Bound on |numpy - C| of a point's hex coordinates, relative, times (1 + 1/r**2) for a
#: point r radians from its face centre: 1e4 times the double rounding unit.
_REL_ERROR = 1e-12
# Points closer than this (radians) to a face centre, or whose two nearest face centres
# are this close in dot product, take the scalar API.
_MIN_FACE_DISTANCE = 1e-9
_FACE_GAP = 1e-12
# Digit of an aperture-7 child from its axial offset (da, db) to the centre child,
# at index (da + 1) * 3 + db + 1; 7 marks offsets that cannot occur.
_DIGIT_OF_OFFSET = np.array([1, 3, 7, 5, 0, 2, 7, 4, 6], dtype=np.int64)
_CCW = np.array([0, 5, 3, 1, 6, 4, 2, 7], dtype=np.int64)  # digit rotated 60 deg ccw


def _ccw_powers() -> np.ndarray:
    """Digit at [k, d]: digit d after k ccw rotations (``_rotate60ccw``)."""
    table = [np.arange(8, dtype=np.int64)]
    for _ in range(5):
        table.append(_CCW[table[-1]])
    return np.stack(table)


_CCW_POWERS = _ccw_powers()
#: Digit at [k, offset index] of a child after k ccw rotations.
_ROTATED_DIGIT = _CCW_POWERS[:, _DIGIT_OF_OFFSET]
# Learnt per (face, resolution-0 i, j, k) key (face * 27 + i * 9 + j * 3 + k): base
# cell (-1 not yet known, -2 pentagon or not understood: scalar API) and ccw rotations.
_KEY_BASE = np.full(20 * 27, -1, dtype=np.int64)
_KEY_ROTATIONS = np.zeros(20 * 27, dtype=np.int64)


def points_to_cells(
    lon: np.ndarray,
    lat: np.ndarray,
    resolutions: Sequence[int] = RESOLUTIONS,
    hierarchical: bool = False,
) -> dict[int, np.ndarray]:
    """H3 cells of lon/lat points at several resolutions.

    Parameters
    ----------
    lon, lat
        Coordinates in degrees (EPSG:4326), same length; bad values raise.
    resolutions
        H3 resolutions (0-15), any order, no duplicates.
    hierarchical
        False (default): each resolution equals ``h3.latlng_to_cell`` for the
        point.  True: coarser cells are parents of the finest cell (counts
        roll up exactly, but ~6 % of points sit in a parent that does not
        contain them geometrically).

    Returns
    -------
    dict of int to numpy.ndarray
        Resolution to an int64 array of cells, in the order of ``resolutions``.

    Raises
    ------
    ValueError
        On a bad coordinate (index named) or resolution.

    Examples
    --------
    >>> cells = points_to_cells(np.array([106.8272]), np.array([-6.1754]), (9, 11))
    >>> cells_to_str(cells[9])[0]
    '898c1079b87ffff'

    See Also
    --------
    cells_to_parent : vectorised parent of int64 cells.
    """
    lon, lat = check_lonlat(lon, lat)
    resolutions = _check_resolutions(resolutions)
    finest = max(resolutions)
    proj = _Projection.of(lon, lat)
    a, b, sure = _hexagons(proj, finest)
    offsets, chain, (a0, b0) = _walk_up(a, b, finest, () if hierarchical else resolutions)
    fine, sure = _cells(proj.face, a0, b0, offsets, finest, sure, lon, lat)
    unsure = np.flatnonzero(~sure)
    if unsure.size:  # the finest cells of the points in doubt from the scalar API
        fine[unsure] = latlng_to_cells(lon[unsure], lat[unsure], finest)
    out = {}
    for res in resolutions:
        cells = _parents(fine, res)
        if res != finest and not hierarchical:
            res_sure = sure.copy()
            _place_again(cells, proj, chain[res], res, res_sure, lon, lat)
            redo = np.flatnonzero(~res_sure)
            if redo.size:
                cells[redo] = latlng_to_cells(lon[redo], lat[redo], res)
        out[res] = cells
    return out


def latlng_to_cells(lon: np.ndarray, lat: np.ndarray, res: int) -> np.ndarray:
    """One H3 resolution for every point, by the scalar API (the reference).

    Parameters
    ----------
    lon, lat
        Coordinates in degrees, same length.
    res
        H3 resolution, 0-15.

    Returns
    -------
    numpy.ndarray
        int64 cells.

    See Also
    --------
    points_to_cells : several resolutions, faster.
    """
    lon, lat = check_lonlat(lon, lat)
    (res,) = _check_resolutions([res])
    cells = map(h3.latlng_to_cell, lat.tolist(), lon.tolist(), repeat(res))
    return np.fromiter(cells, dtype=np.int64, count=lon.size)


def cell_resolutions(cells: np.ndarray) -> np.ndarray:
    """Resolution of each int64 cell (bits 52-55), vectorised.

    Parameters
    ----------
    cells
        int64 H3 cell indexes.

    Returns
    -------
    numpy.ndarray
        int64 resolutions.
    """
    cells = _check_cells(cells)
    return (cells & _RES_MASK) >> _RES_SHIFT


def cells_to_parent(cells: np.ndarray, res: int) -> np.ndarray:
    """Parent of each int64 cell at resolution ``res``, by bit arithmetic.

    Equal to ``h3.cell_to_parent(cell, res)``: the resolution field is set
    to ``res`` and the digits finer than ``res`` to 7 (unused).

    Parameters
    ----------
    cells
        int64 H3 cells, each at resolution >= ``res``.
    res
        Target resolution, 0-15.

    Returns
    -------
    numpy.ndarray
        int64 parent cells (a new array).

    Raises
    ------
    ValueError
        If a cell is coarser than ``res`` or is not an H3 cell index.
    """
    cells = _check_cells(cells)
    (res,) = _check_resolutions([res])
    coarser = np.flatnonzero(cell_resolutions(cells) < res)
    if coarser.size:
        i = int(coarser[0])
        raise ValueError(
            f"cell at index {i} ({h3.int_to_str(int(cells[i]))}) is coarser than {res}"
        )
    unused_digits = np.int64((1 << (3 * (MAX_H3_RES - res))) - 1)
    return (cells & ~_RES_MASK) | np.int64(res << _RES_SHIFT) | unused_digits


def cells_to_str(cells: np.ndarray) -> np.ndarray:
    """int64 cells to their hex-string form (object array), for output at the edge.

    Parameters
    ----------
    cells
        int64 H3 cells.

    Returns
    -------
    numpy.ndarray
        Object array of str, e.g. ``"898c1079b87ffff"``.
    """
    cells = _check_cells(cells)
    return np.array([h3.int_to_str(c) for c in cells.tolist()], dtype=object)


def str_to_cells(strings: Iterable[str]) -> np.ndarray:
    """Hex-string cells to int64, checking each is a valid H3 cell.

    Parameters
    ----------
    strings
        H3 cells as hex strings.

    Returns
    -------
    numpy.ndarray
        int64 cells.

    Raises
    ------
    ValueError
        Naming the first string that is not a valid H3 cell.
    """
    out = []
    for i, text in enumerate(strings):
        try:
            cell = h3.str_to_int(str(text))
        except (ValueError, TypeError):
            cell = -1
        if cell < 0 or not h3.is_valid_cell(cell):
            raise ValueError(f"not an H3 cell at index {i}: {text!r}")
        out.append(cell)
    return np.array(out, dtype=np.int64)


def cells_to_frame(cells: np.ndarray) -> gpd.GeoDataFrame:
    """Hexagon polygons (EPSG:4326) of the distinct cells given.

    Parameters
    ----------
    cells
        int64 H3 cells (repeats are dropped, order of first appearance kept).

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``h3`` (int64), ``h3_str``, ``resolution`` and ``geometry``
        (Polygon, lon/lat).

    See Also
    --------
    points_to_cells : cells of points.
    """
    cells = _check_cells(cells)
    _, first = np.unique(cells, return_index=True)
    cells = cells[np.sort(first)]
    rings = [np.asarray(h3.cell_to_boundary(c))[:, ::-1] for c in cells.tolist()]
    return gpd.GeoDataFrame(
        {"h3": cells, "h3_str": cells_to_str(cells), "resolution": cell_resolutions(cells)},
        geometry=[shapely.Polygon(ring) for ring in rings],
        crs=STORAGE_CRS,
    )


def zoom_to_resolution(zoom: int) -> int:
    """H3 resolution shown at a web-map zoom level.

    z <= 9 gives 7, z 10 gives 8, z 11-12 give 9, z 13-14 give 10, z >= 15 gives 11.

    Parameters
    ----------
    zoom
        Web-mercator zoom level (integer >= 0).

    Returns
    -------
    int
        One of :data:`RESOLUTIONS`.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, (int, np.integer)) or zoom < 0:
        raise ValueError(f"zoom must be an integer >= 0, got {zoom!r}")
    if zoom <= 9:
        return 7
    if zoom == 10:
        return 8
    return min(9 + (int(zoom) - 11) // 2, 11)


# --------------------------------------------------------------------------- helpers


def _check_resolutions(resolutions: Sequence[int]) -> tuple[int, ...]:
    """Resolutions as a tuple of distinct ints in 0-15."""
    out = tuple(int(r) for r in resolutions)
    for res, given in zip(out, resolutions, strict=True):
        if res != given or not 0 <= res <= MAX_H3_RES:
            raise ValueError(f"H3 resolution must be an integer 0-{MAX_H3_RES}, got {given!r}")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"resolutions must be non-empty and distinct, got {resolutions!r}")
    return out


def _check_cells(cells: np.ndarray) -> np.ndarray:
    """int64 array whose entries have the cell mode bits (cheap sanity check)."""
    cells = np.asarray(cells)
    if cells.dtype == np.uint64:
        cells = cells.view(np.int64)
    if not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"H3 cells must be integers (int64), got dtype {cells.dtype}")
    cells = cells.astype(np.int64, copy=False).reshape(-1)
    bad = np.flatnonzero((cells < 0) | ((cells >> _MODE_SHIFT) & 0xF != _CELL_MODE))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"not an H3 cell index at position {i}: {int(cells[i])}")
    return cells


def _parents(cells: np.ndarray, res: int) -> np.ndarray:
    """:func:`cells_to_parent` without the checks (cells known valid and fine enough)."""
    unused_digits = np.int64((1 << (3 * (MAX_H3_RES - res))) - 1)
    return (cells & ~_RES_MASK) | np.int64(res << _RES_SHIFT) | unused_digits


#: sqrt(7) ** res, multiplied up as the C library does.
_SCALE = np.cumprod([1.0] + [_SQRT7] * MAX_H3_RES)
_AP7_COS, _AP7_SIN = np.cos(_AP7_ROT_RADS), np.sin(_AP7_ROT_RADS)
_FACE_COS_LAT, _FACE_SIN_LAT = np.cos(_FACE_GEO[:, 0]), np.sin(_FACE_GEO[:, 0])
_FACE_COS_LNG, _FACE_SIN_LNG = np.cos(_FACE_GEO[:, 1]), np.sin(_FACE_GEO[:, 1])
_AXIS_COS, _AXIS_SIN = np.cos(_FACE_AXIS_AZ), np.sin(_FACE_AXIS_AZ)
# The face lookup grid: 1 degree cells; a cell whose centre is nearer its face's centre
# than any other by more than this (in dot product) is nearer it in every point.
_FACE_GRID_DEG = 1.0
# Twice the bound: a point is within a chord of 2 sin(half-diagonal / 2) of its cell's
# centre, and a dot-product gap changes by at most 2 chords over that distance.
_FACE_GRID_GAP = 2 * 2 * 2 * np.sin(np.radians(_FACE_GRID_DEG) / np.sqrt(2) / 2) + _FACE_GAP
_face_grid_cache: list[np.ndarray] = []


@dataclass(frozen=True)
class _Projection:
    """Points on the gnomonic plane of their nearest icosahedron face (``_geoToHex2d``).

    ``radius`` is the gnomonic distance from the face centre in resolution-0
    units; ``cos2, sin2`` and ``cos3, sin3`` give the direction in the hex
    grid's frame at Class II (even) and Class III (odd) resolutions.  ``rel``
    bounds the relative error of the coordinates; ``ok`` is False where the
    face itself is in doubt.
    """

    face: np.ndarray
    radius: np.ndarray
    cos2: np.ndarray
    sin2: np.ndarray
    cos3: np.ndarray
    sin3: np.ndarray
    rel: np.ndarray
    ok: np.ndarray

    @classmethod
    def of(cls, lon: np.ndarray, lat: np.ndarray) -> _Projection:
        """Project lon/lat degrees."""
        lat_r, lng_r = np.radians(lat), np.radians(lon)
        sin_lat, cos_lat = np.sin(lat_r), np.cos(lat_r)
        sin_lng, cos_lng = np.sin(lng_r), np.cos(lng_r)
        x, y, z = cos_lng * cos_lat, sin_lng * cos_lat, sin_lat
        face, ok = _nearest_faces(lon, lat, x, y, z)
        sqd = (x - _FACE_XYZ[:, 0][face]) ** 2 + (y - _FACE_XYZ[:, 1][face]) ** 2
        sqd += (z - _FACE_XYZ[:, 2][face]) ** 2
        r = np.arccos(1 - sqd * 0.5)  # angle from the face centre
        ok &= r > _MIN_FACE_DISTANCE
        # azimuth from the face centre to the point (atan2(north, east)), as a unit vector
        face_cos, face_sin = _FACE_COS_LNG[face], _FACE_SIN_LNG[face]
        sin_dl = sin_lng * face_cos - cos_lng * face_sin
        cos_dl = cos_lng * face_cos + sin_lng * face_sin
        north = cos_lat * sin_dl
        east = _FACE_COS_LAT[face] * sin_lat - _FACE_SIN_LAT[face] * cos_lat * cos_dl
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1 / np.hypot(north, east)
            # theta = axis azimuth - point azimuth: ccw from the Class II i-axis
            axis_cos, axis_sin = _AXIS_COS[face], _AXIS_SIN[face]
            cos2 = (axis_cos * east + axis_sin * north) * inv
            sin2 = (axis_sin * east - axis_cos * north) * inv
            rel = _REL_ERROR * (1 + 1 / np.maximum(r, _MIN_FACE_DISTANCE) ** 2)
        return cls(
            face=face,
            radius=np.tan(r) * _INV_RES0_U_GNOMONIC,
            cos2=cos2,
            sin2=sin2,
            cos3=cos2 * _AP7_COS + sin2 * _AP7_SIN,  # theta - AP7 rotation
            sin3=sin2 * _AP7_COS - cos2 * _AP7_SIN,
            rel=rel,
            ok=ok,
        )

    def take(self, index: np.ndarray) -> _Projection:
        """The projection of some points."""
        return _Projection(*(getattr(self, f.name)[index] for f in fields(self)))

    def hex2d(self, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hex-grid coordinates at ``res`` and the bound on their error."""
        r = self.radius * _SCALE[res]
        if res % 2:
            x, y = r * self.cos3, r * self.sin3
        else:
            x, y = r * self.cos2, r * self.sin2
        return x, y, r * self.rel + _REL_ERROR


def _face_grid() -> np.ndarray:
    """Nearest face per 1-degree lat/lon cell (rows from -90), -1 where it may vary."""
    if not _face_grid_cache:
        deg = _FACE_GRID_DEG
        lat, lon = np.meshgrid(
            np.arange(-90 + deg / 2, 90, deg), np.arange(-180 + deg / 2, 180, deg), indexing="ij"
        )
        lat_r, lng_r = np.radians(lat.ravel()), np.radians(lon.ravel())
        xyz = np.stack([np.cos(lat_r) * np.cos(lng_r), np.cos(lat_r) * np.sin(lng_r)])
        xyz = np.vstack([xyz, np.sin(lat_r)])
        dots = np.sort(_FACE_XYZ @ xyz, axis=0)  # (20, cells): a small product
        face = np.argmax(_FACE_XYZ @ xyz, axis=0)
        face[dots[-1] - dots[-2] <= _FACE_GRID_GAP] = -1
        _face_grid_cache.append(face.reshape(lat.shape).astype(np.int8))
    return _face_grid_cache[0]


def _nearest_faces(
    lon: np.ndarray, lat: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest face centre per point, and False where a second one is nearly as near."""
    grid = _face_grid()
    row = np.clip(np.floor((lat + 90) / _FACE_GRID_DEG), 0, grid.shape[0] - 1).astype(np.intp)
    col = np.clip(np.floor((lon + 180) / _FACE_GRID_DEG), 0, grid.shape[1] - 1).astype(np.intp)
    face = grid[row, col].astype(np.intp)
    ok = np.ones(face.size, dtype=bool)
    near_edge = np.flatnonzero(face < 0)
    if near_edge.size:
        p = np.stack([x[near_edge], y[near_edge], z[near_edge]])
        dots = _FACE_XYZ @ p
        face[near_edge] = np.argmax(dots, axis=0)
        dots.sort(axis=0)
        ok[near_edge] = dots[-1] - dots[-2] > _FACE_GAP
    return face, ok


def _hexagons(proj: _Projection, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial hex coordinates (a, b) at ``res`` of each point, and where they are certain.

    ``_hex2dToCoordIJK`` finds the hexagon holding the point; this rounds to the
    nearest hexagon centre (cube rounding) and requires the point to be inside it
    by more than the error bound.  ``a, b`` are IJK's ``i - k, j - k``.
    """
    x, y, tol = proj.hex2d(res)
    bf = y / _SIN60
    q, r = x - 0.5 * bf, bf  # coordinates along axes 60 degrees apart
    s = -q - r
    rq, rr, rs = np.rint(q), np.rint(r), np.rint(s)
    dq, dr, ds = np.abs(rq - q), np.abs(rr - r), np.abs(rs - s)
    fix_q = (dq > dr) & (dq > ds)
    rq = np.where(fix_q, -rr - rs, rq)
    rr = np.where(~fix_q & (dr > ds), -rq - rs, rr)
    a, b = rq + rr, rr
    sure = proj.ok & (_slack(x, y, a, b) > tol)
    # points in doubt (NaN at a face centre, too) walk up from (0, 0), harmlessly
    return np.where(sure, a, 0).astype(np.int64), np.where(sure, b, 0).astype(np.int64), sure


def _slack(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far inside the hexagon of centre (a, b) each point is (unit: centre spacing)."""
    dx = x - (a - 0.5 * b)
    dy = (y - b * _SIN60) * _SIN60
    half = 0.5 * dx
    return 0.5 - np.maximum(np.abs(dx), np.maximum(np.abs(half + dy), np.abs(half - dy)))


def _walk_up(
    a: np.ndarray, b: np.ndarray, res: int, keep: Sequence[int] = ()
) -> tuple[dict[int, np.ndarray], dict[int, tuple[np.ndarray, np.ndarray]], tuple]:
    """Aperture-7 steps from ``res`` to 0 (``_upAp7``/``_upAp7r``), in axial coordinates.

    Returns, per resolution 1..res, the offset index of each cell from its
    parent's centre child (see :data:`_DIGIT_OF_OFFSET`); the coordinates at the
    resolutions in ``keep``; and the resolution-0 coordinates.
    """
    offsets, kept = {}, {}
    for r in range(res, 0, -1):
        if r in keep:
            kept[r] = (a, b)
        if r % 2:  # Class III: up is _upAp7, the centre child is _downAp7
            pa = (3 * a - b + 3) // 7
            pb = (a + 2 * b + 3) // 7
            da, db = a - (2 * pa + pb), b - (3 * pb - pa)
        else:
            pa = (2 * a + b + 3) // 7
            pb = (3 * b - a + 3) // 7
            da, db = a - (3 * pa - pb), b - (pa + 2 * pb)
        offsets[r] = da * 3 + db + 4
        a, b = pa, pb
    if 0 in keep:
        kept[0] = (a, b)
    return offsets, kept, (a, b)


def _cells(
    face: np.ndarray,
    a0: np.ndarray,
    b0: np.ndarray,
    offsets: dict[int, np.ndarray],
    res: int,
    sure: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """H3 indexes from the walk up (``_faceIjkToH3``) and where they are certain.

    Not certain (the caller asks the scalar API): points already in doubt and
    points on keys whose base cell is a pentagon or could not be learnt.
    """
    low = np.minimum(np.minimum(a0, b0), 0)  # normalised IJK: i, j, k >= 0, one of them 0
    i, j, k = a0 - low, b0 - low, -low
    outside = (i > 2) | (j > 2) | (k > 2)  # cannot happen on the nearest face
    key = np.where(outside, 0, face * 27 + i * 9 + j * 3 + k)
    sure = sure & ~outside
    if (_KEY_BASE[key[sure]] == -1).any():
        _learn_bases(key, offsets, res, sure, lon, lat)
    base = _KEY_BASE[key]
    sure &= base >= 0
    rotations = _KEY_ROTATIONS[key]
    unused = (1 << (3 * (MAX_H3_RES - res))) - 1
    header = (_CELL_MODE << _MODE_SHIFT) | (res << _RES_SHIFT) | unused
    cells = (np.maximum(base, 0) << _BASE_SHIFT) | np.int64(header)
    if rotations.size and (rotations == rotations[0]).all():
        table = _ROTATED_DIGIT[rotations[0]]
        for r in range(1, res + 1):
            cells |= table[offsets[r]] << (3 * (MAX_H3_RES - r))
    else:
        flat, row = _ROTATED_DIGIT.ravel(), rotations * _ROTATED_DIGIT.shape[1]
        for r in range(1, res + 1):
            cells |= flat[row + offsets[r]] << (3 * (MAX_H3_RES - r))
    return cells, sure


def _learn_bases(
    key: np.ndarray,
    offsets: dict[int, np.ndarray],
    res: int,
    sure: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
) -> None:
    """Base cell and digit rotation of new keys, from the scalar API for a few points each.

    The rotation is the one turning the point's digits into H3's; a key whose
    base cell is a pentagon, or whose points disagree, is marked for the scalar
    API (-2).  A key whose points have no non-zero digit stays unknown.
    """
    if res == 0:
        return
    candidates = np.flatnonzero(sure & (_KEY_BASE[key] == -1))
    order = np.argsort(key[candidates].astype(np.int16), kind="stable")  # a radix sort
    candidates = candidates[order]
    ordered = key[candidates]
    for start in np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist():
        k, found = int(ordered[start]), set()
        for p in candidates[start : start + 16].tolist():
            mine = _DIGIT_OF_OFFSET[[int(offsets[r][p]) for r in range(1, res + 1)]]
            if key[p] != k or len(found) >= 3:
                break
            if not mine.any():  # the centre of the base cell: no rotation to see
                continue
            cell = h3.latlng_to_cell(float(lat[p]), float(lon[p]), res)
            theirs = [(cell >> (3 * (MAX_H3_RES - r))) & 7 for r in range(1, res + 1)]
            turns = [t for t in range(6) if _CCW_POWERS[t][mine].tolist() == theirs]
            if h3.is_pentagon(h3.cell_to_parent(cell, 0)) or len(turns) != 1:
                found.add((-2, 0, p))
            else:
                found.add(((cell >> _BASE_SHIFT) & 0x7F, turns[0], p))
        learnt = {(base, turns) for base, turns, _ in found}
        if learnt:
            _KEY_BASE[k], _KEY_ROTATIONS[k] = learnt.pop() if len(learnt) == 1 else (-2, 0)


def _place_again(
    cells: np.ndarray,
    proj: _Projection,
    chain: tuple[np.ndarray, np.ndarray],
    res: int,
    sure: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
) -> None:
    """Replace parents (in place) by the cells of points not inside the parent's hexagon.

    ``chain``: the axial coordinates, at ``res``, of the finest hexagon's
    ancestor.  Points inside it by the error bound have the parent as their
    cell; the others (~7 %) are placed directly.  ``sure`` is narrowed where
    that is in doubt.
    """
    x, y, tol = proj.hex2d(res)
    moved = np.flatnonzero(sure & ~(_slack(x, y, *chain) > tol))
    if moved.size == 0:
        return
    sub = proj.take(moved)
    a, b, sub_sure = _hexagons(sub, res)
    offsets, _, (a0, b0) = _walk_up(a, b, res)
    cells[moved], sub_sure = _cells(
        sub.face, a0, b0, offsets, res, sub_sure, lon[moved], lat[moved]
    )
    sure[moved] = sub_sure
