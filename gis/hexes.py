"""H3 (v4) cells for lon/lat arrays at resolutions 7-11, stored as int64.

H3 indexes are unsigned 64-bit, but bit 63 of every valid index is a
reserved zero.  Every cell therefore fits in a *non-negative* int64, and so
in PostgreSQL ``bigint``, unchanged (h3-pg: ``h3index::bigint``).  Arrays stay
int64 inside petalapor.  The hex-string form (``"898c106a48fffff"``) is made
only at the edge, by :func:`cells_to_str` and :func:`str_to_cells`.

:func:`points_to_cells` gives, at each resolution, exactly what the scalar
``h3.latlng_to_cell(lat, lng, res)`` gives (SQL: ``h3_lat_lng_to_cell(pt, res)``).
That is not always the parent of the finer cell: children do not tile their
parent exactly, and about 6-7 % of points differ per level.  It is still
fast.  The finest resolution is computed per point.  For each coarser resolution,
the parent of the finest cell is *certified* when the point lies on the inner
side of all six edge great circles of that parent's hexagon, by a margin of
about 6 mm (:data:`_EDGE_MARGIN`).  Only single-face hexagons qualify.  On a
single face, H3 cells are hexagons of the gnomonic face plane, so their edges
are great circles.  The other points get a scalar call: about 7 %, plus
points whose candidate holds fewer than :data:`_MIN_SHARED` points.
``hierarchical=True`` returns plain parents instead, so rollups add up
exactly.

Longitude-wrapping (antimeridian) cells are not handled by
:func:`cells_to_frame`; Jakarta is far from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
# A point certifies inside a hexagon when the sine of its angle inside every edge
# circle exceeds this (~6 mm); vertex and projection rounding is ~1e-15.
_EDGE_MARGIN = 1e-9
# Candidate parents holding fewer points than this are left to the scalar API.
_MIN_SHARED = 6


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
    fine = latlng_to_cells(lon, lat, finest)
    out = {res: cells_to_parent(fine, res) for res in resolutions}
    if not hierarchical:
        _fix_uncertain_parents(out, finest, lon, lat)
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


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Points on the unit sphere, shape (..., 3)."""
    lam, phi = np.radians(lon), np.radians(lat)
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1)


def _edge_normals(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inward unit normals of the six edge great circles of each distinct cell.

    Returns ``ok`` (m,), True where the cell is certifiable, and ``normals``
    (3, 6, m): x, y, z components per edge, zero where not ok.  A hexagon on
    a single icosahedron face is a hexagon of the gnomonic face plane, so its
    edges are great-circle arcs and its inside is the inner side of all six.
    """
    boundaries = [h3.cell_to_boundary(c) for c in cells.tolist()]
    ok = np.array(
        [
            len(b) == 6 and len(h3.get_icosahedron_faces(c)) == 1
            for b, c in zip(boundaries, cells.tolist(), strict=True)
        ],
        dtype=bool,
    )
    normals = np.zeros((3, 6, cells.size))
    if not ok.any():
        return ok, normals
    verts = np.asarray([b for b, good in zip(boundaries, ok, strict=True) if good])
    v = _unit_vectors(verts[..., 1], verts[..., 0])
    centre = v.mean(axis=1)
    n = np.cross(v, np.roll(v, -1, axis=1))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n *= np.sign(np.einsum("mk,mek->me", centre, n))[..., None]  # point inwards
    normals[:, :, ok] = n.transpose(2, 1, 0)
    return ok, normals


def _fix_uncertain_parents(
    cells: dict[int, np.ndarray], finest: int, lon: np.ndarray, lat: np.ndarray
) -> None:
    """Replace, in place, each parent not certified to hold its point by the scalar answer."""
    xyz, order = _unit_vectors(lon, lat).T.copy(), np.argsort(cells[finest])
    for res, parents in cells.items():
        if res != finest:
            redo = np.flatnonzero(~_certified(parents, order, xyz))
            parents[redo] = latlng_to_cells(lon[redo], lat[redo], res)


def _certified(parents: np.ndarray, order: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """True where the point (unit vectors, (3, n)) is certainly inside its candidate parent.

    Certain: inside all six edge circles by more than ``_EDGE_MARGIN``.  Only
    parents shared by ``_MIN_SHARED`` points or more are tried (fetching a
    hexagon costs more than a few scalar calls).  ``order`` sorts the finest
    cells; parents keep that order, so the distinct parents come from a diff
    instead of a second sort.
    """
    ordered = parents[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]][: ordered.size]
    starts = np.flatnonzero(new)
    inverse = np.empty(parents.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    tried = np.diff(np.r_[starts, ordered.size]) >= _MIN_SHARED
    ok = np.zeros(starts.size, dtype=bool)
    normals = np.zeros((3, 6, starts.size))
    ok[tried], normals[:, :, tried] = _edge_normals(ordered[starts[tried]])
    sure = ok[inverse]
    x, y, z = xyz
    for nx, ny, nz in zip(*normals, strict=True):
        sure &= x * nx[inverse] + y * ny[inverse] + z * nz[inverse] > _EDGE_MARGIN
    return sure
