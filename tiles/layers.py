"""MVT layers, built from small SQL pieces; building is kept apart from running.

Every layer turns a :class:`TileRequest` into a :class:`TileQuery` (SQL text
plus bound values) and the service runs it.  Identifiers come from code or
from the checked layer registry (``psycopg.sql.Identifier``); every value is
bound, except integers chosen by code (extent, buffer, resolution, limits),
which are converted with ``int()`` and written as literals so the partial
indexes of the roll-ups match.  The envelope is built in EPSG:3857 and, for
tables stored in EPSG:4326, transformed (widened by the buffer) into the
table's SRID, never the column.

Report-derived layers
---------------------
``hexes``
    H3 cells with report statistics; resolution by zoom
    (:func:`tiles.tms.zoom_to_resolution`; ``?res=`` may ask for a coarser one,
    or one finer).  A hex is in a tile when its polygon intersects the tile;
    its statistics cover *all* its reports, also those outside the tile.
``kelurahan``, ``rw``
    Boundary polygons with the same statistics, names and codes (choropleth).
``reports``
    Individual reports for OPD/admin viewers only (an OPD key sees its own
    OPD's reports, hidden ones included; admin keys see all); below
    ``cluster_below_zoom`` (14) they are clustered per H3 cell
    (:func:`tiles.tms.cluster_resolution`) into one point at the reports'
    mean position with ``count``.

Statistics (all over the reports that pass the filters and the scope):
``count``; ``open`` (status menunggu, disposisi, koordinasi or proses);
``resolved`` (status selesai); ``resolved_share`` = resolved / count;
``median_days`` = median of resolved_at - created_at over resolved reports,
in days; ``within_7d_share`` = share of resolved reports resolved within the
published 7-day target; ``top_category`` = most frequent category (ties: the
smallest code).

Privacy
-------
Public viewers: reports with ``public = false`` are excluded from every
aggregate; hexes with fewer than k reports (``PETALAPOR_TILES_K_ANONYMITY``,
default 5) are dropped from the tile; RW/kelurahan polygons below k stay (the
boundaries are public) with every statistic removed and ``suppressed = true``;
the ``reports`` layer does not exist for them (403).  OPD/admin viewers see
all reports and no suppression.

Unfiltered tiles read the roll-ups kept by :mod:`tiles.rollup`
(``tile_hex_stats``, ``tile_area_stats``); filtered tiles aggregate
``reports`` live with the same SQL pieces, so both give the same numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import shapely
from psycopg import sql

from petalapor.catalog import RESOLUTION_TARGET_DAYS, RESOLVED_STATUS, Catalog, get_catalog
from petalapor.errors import InvalidParameterError, NotFoundError, PermissionDeniedError
from tiles.filters import Filters
from tiles.footprint import Footprint, hex_box, hex_polygon
from tiles.settings import TileSettings
from tiles.tms import (
    H3_RESOLUTIONS,
    Box,
    Tile,
    cluster_resolution,
    hex_margin,
    tile_range,
    tile_size,
    xy_bounds,
    zoom_to_resolution,
)
from tiles.viewer import ViewerLike, is_privileged, scope_of

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
#: Geometry column name inside the MVT subqueries (cannot clash with an attribute).
GEOM = "_geom"


@dataclass(frozen=True)
class TileQuery:
    """SQL text and its bound values: everything the service needs to run a tile."""

    sql: bytes | sql.Composable
    params: dict[str, object]


@dataclass(frozen=True)
class TileContext:
    """Settings and catalog values the SQL pieces need."""

    extent: int = 4096
    buffer: int = 64
    k: int = 5
    cluster_below_zoom: int = 14
    max_points: int = 50_000
    max_features: int = 50_000
    open_statuses: tuple[str, ...] = ()
    resolved_status: str = RESOLVED_STATUS
    target_days: int = RESOLUTION_TARGET_DAYS

    @classmethod
    def from_settings(cls, settings: TileSettings, catalog: Catalog | None = None) -> "TileContext":
        """Context from tile settings and the status catalog."""
        catalog = catalog or get_catalog()
        return cls(
            extent=settings.extent,
            buffer=settings.buffer,
            k=settings.k_anonymity,
            cluster_below_zoom=settings.cluster_below_zoom,
            max_points=settings.max_points_per_tile,
            max_features=settings.max_features_per_tile,
            open_statuses=tuple(sorted(c for c, s in catalog.statuses.items() if s.open)),
        )

    def buffer_m(self, z: int) -> float:
        """The MVT buffer in EPSG:3857 metres at zoom ``z``."""
        return tile_size(z) * self.buffer / self.extent


@dataclass(frozen=True)
class TileRequest:
    """One tile to render: address, filters, viewer and layer options."""

    tile: Tile
    filters: Filters
    viewer: ViewerLike
    res: int | None = None


# --------------------------------------------------------------------------- SQL pieces

ENVELOPE = sql.SQL("ST_MakeEnvelope(%(ex0)s, %(ey0)s, %(ex1)s, %(ey1)s, 3857)")


def envelope_params(tile: Tile) -> dict[str, object]:
    """Bound values of :data:`ENVELOPE` for ``tile``."""
    b = xy_bounds(tile)
    return {"ex0": b.left, "ey0": b.bottom, "ex1": b.right, "ey1": b.top}


def query_envelope(srid: int, margin_param: str = "margin") -> sql.Composed:
    """The envelope widened by a bound margin (metres) and transformed into ``srid``."""
    grown = sql.SQL("ST_Expand({}, %({})s)").format(ENVELOPE, sql.SQL(margin_param))
    if int(srid) == 3857:
        return grown
    return sql.SQL("ST_Transform({}, {})").format(grown, sql.Literal(int(srid)))


def mvt_geom(geom: sql.Composable, ctx: TileContext) -> sql.Composed:
    """``ST_AsMVTGeom`` of a 3857 geometry, clipped to the tile plus the buffer."""
    return sql.SQL("ST_AsMVTGeom({}, {}, {}, {}, true) AS {}").format(
        geom,
        ENVELOPE,
        sql.Literal(int(ctx.extent)),
        sql.Literal(int(ctx.buffer)),
        sql.Identifier(GEOM),
    )


#: Hexes at least this many tile units wide are moved into tile space with ST_Affine.
AFFINE_MIN_UNITS = 16.0


def use_affine(tile: Tile, res: int, ctx: TileContext) -> bool:
    """True when H3 cells at ``res`` are wide enough in this tile to skip ST_AsMVTGeom."""
    box = xy_bounds(tile)
    scale = ctx.extent / (box.right - box.left)
    return 2 * hex_margin(res) / 3 * scale >= AFFINE_MIN_UNITS


def hex_geometry(geom: sql.Composable, affine: bool, ctx: TileContext) -> sql.Composed:
    """Tile geometry of H3 cell polygons (EPSG:3857, exterior rings clockwise).

    A hexagon wholly inside the tile needs no clipping: an affine map into tile
    units (``%(sx)s`` ... from :func:`tile_transform`) and a snap to the integer
    grid give what ``ST_AsMVTGeom`` would, at a fraction of the cost.  Cells
    crossing the tile edge, and cells too small to survive the snap
    (``affine`` false), go through ``ST_AsMVTGeom``.
    """
    if not affine:
        return mvt_geom(geom, ctx)
    return sql.SQL(
        "CASE WHEN {g} @ {env} THEN ST_SnapToGrid(ST_Affine({g}, %(sx)s, 0, 0, %(nsx)s, "
        "%(tx)s, %(ty)s), 1) "
        "ELSE ST_AsMVTGeom({g}, {env}, {extent}, {buffer}, true) END AS {name}"
    ).format(
        g=geom,
        env=ENVELOPE,
        extent=sql.Literal(int(ctx.extent)),
        buffer=sql.Literal(int(ctx.buffer)),
        name=sql.Identifier(GEOM),
    )


def tile_transform(tile: Tile, ctx: TileContext) -> dict[str, float]:
    """Bound values of the map from EPSG:3857 into tile units (y down)."""
    box = xy_bounds(tile)
    scale = ctx.extent / (box.right - box.left)
    return {"sx": scale, "nsx": -scale, "tx": -box.left * scale, "ty": box.top * scale}


def point_geometry(x: sql.Composable, y: sql.Composable) -> sql.Composed:
    """Tile geometry of points given by EPSG:3857 coordinates, all within the tile plus its buffer.

    The query already keeps only such points, so nothing needs clipping: the
    point is mapped into tile units (:func:`tile_transform`) and rounded, as
    ``ST_AsMVTGeom`` would.
    """
    return sql.SQL(
        "ST_MakePoint(round(%(sx)s * {x} + %(tx)s), round(%(nsx)s * {y} + %(ty)s)) AS {name}"
    ).format(x=x, y=y, name=sql.Identifier(GEOM))


_TEXT_CACHE: dict[tuple, bytes] = {}


def compiled(shape: tuple, build: Callable[[], sql.Composable]) -> bytes:
    """The query text for a query *shape* (everything that changes the text), built once.

    Composing psycopg ``sql`` objects costs more than running a small tile's
    query, so each layer names the inputs its text depends on and the bytes are
    kept; the bound values are computed per tile.
    """
    text = _TEXT_CACHE.get(shape)
    if text is None:
        text = build().as_bytes(None)
        if len(_TEXT_CACHE) >= 4096:
            _TEXT_CACHE.clear()
        _TEXT_CACHE[shape] = text
    return text


def mercator_xy(alias: str = "r") -> tuple[sql.Composed, sql.Composed]:
    """EPSG:3857 x and y of a lon/lat point column (spherical Mercator formulas, no PROJ call)."""
    a = sql.Identifier(alias)
    return (
        sql.SQL("(ST_X({}.geom) * 111319.49079327357)").format(a),
        sql.SQL("(ln(tan(pi() / 4 + radians(ST_Y({}.geom)) / 2)) * 6378137.0)").format(a),
    )


def as_mvt(inner: sql.Composable, ctx: TileContext, id_column: str | None = None) -> sql.Composed:
    """Wrap a feature query into ``ST_AsMVT`` (the layer name is a bound value)."""
    args = [sql.SQL("t"), sql.SQL("%(layer)s"), sql.Literal(int(ctx.extent)), sql.Literal(GEOM)]
    if id_column:
        args.append(sql.Literal(id_column))
    return sql.SQL("SELECT ST_AsMVT({}) AS mvt FROM ({}) t").format(sql.SQL(", ").join(args), inner)


def stats_aggregates(alias: str = "r") -> sql.Composed:
    """Aggregates of the report statistics over ``reports`` as ``alias``."""
    return sql.SQL(
        """count(*)::int AS n,
        (count(*) FILTER (WHERE {a}.status = ANY(%(s_open)s)))::int AS n_open,
        (count(*) FILTER (WHERE {a}.status = %(s_resolved)s))::int AS n_resolved,
        (count(*) FILTER (WHERE {a}.status = %(s_resolved)s
            AND {a}.resolved_at <= {a}.created_at + make_interval(days => {days})))::int
            AS n_resolved_7d,
        percentile_cont(0.5) WITHIN GROUP
            (ORDER BY extract(epoch FROM {a}.resolved_at - {a}.created_at) / 86400.0)
            FILTER (WHERE {a}.status = %(s_resolved)s AND {a}.resolved_at IS NOT NULL)
            AS median_days,
        mode() WITHIN GROUP (ORDER BY {a}.category) AS top_category"""
    ).format(a=sql.Identifier(alias), days=sql.Literal(int(RESOLUTION_TARGET_DAYS)))


def mean_position(alias: str = "r") -> sql.Composed:
    """Mean report position: lon/lat means, then EPSG:3857 (one expression for live and roll-up)."""
    return sql.SQL(
        "ST_Transform(ST_SetSRID(ST_MakePoint(avg(ST_X({a}.geom)), avg(ST_Y({a}.geom))), "
        "4326), 3857)"
    ).format(a=sql.Identifier(alias))


def stats_params(ctx: TileContext) -> dict[str, object]:
    """Bound values of :func:`stats_aggregates`."""
    return {"s_open": list(ctx.open_statuses), "s_resolved": ctx.resolved_status}


#: Output attributes of the statistics and their TileJSON descriptions.
STATS_FIELDS: dict[str, str] = {
    "count": "Number: reports",
    "open": "Number: open reports (menunggu, disposisi, koordinasi, proses)",
    "resolved": "Number: resolved reports (selesai)",
    "resolved_share": "Number: resolved / count (0-1)",
    "median_days": "Number: median days from creation to resolution (resolved reports)",
    "within_7d_share": "Number: share of resolved reports resolved within 7 days (0-1)",
    "top_category": "String: most frequent category code",
}


#: Attribute columns of the statistics, in order (also the roll-up tables' columns).
STATS_COLUMNS: tuple[str, ...] = tuple(STATS_FIELDS)


def stats_output(alias: str = "g") -> sql.Composed:
    """The statistics' attributes from the aggregate columns of :func:`stats_aggregates`."""
    return sql.SQL(
        """{a}.n AS count, {a}.n_open AS open, {a}.n_resolved AS resolved,
        CASE WHEN {a}.n > 0 THEN round({a}.n_resolved::numeric / {a}.n, 4)::float8 END
            AS resolved_share,
        round({a}.median_days::numeric, 2)::float8 AS median_days,
        CASE WHEN {a}.n_resolved > 0
            THEN round({a}.n_resolved_7d::numeric / {a}.n_resolved, 4)::float8 END
            AS within_7d_share,
        {a}.top_category AS top_category"""
    ).format(a=sql.Identifier(alias))


def stats_columns(alias: str = "a") -> sql.Composed:
    """The statistics' attribute columns of ``alias`` (a roll-up row or :func:`stats_output`)."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in STATS_COLUMNS
    )


def suppressed_columns(alias: str = "a") -> sql.Composed:
    """Attribute columns, NULL below k (``%(k)s``; no row counts 0), and ``suppressed``."""
    a = sql.Identifier(alias)
    ok = sql.SQL("coalesce({}.count, 0) >= %(k)s").format(a)
    cols = [
        sql.SQL("CASE WHEN {ok} THEN coalesce({a}.{c}, 0) END AS {c}").format(
            ok=ok, a=a, c=sql.Identifier(c)
        )
        for c in ("count", "open", "resolved")
    ]
    cols += [
        sql.SQL("CASE WHEN {ok} THEN {a}.{c} END AS {c}").format(ok=ok, a=a, c=sql.Identifier(c))
        for c in STATS_COLUMNS[3:]
    ]
    cols.append(sql.SQL("NOT ({}) AS suppressed").format(ok))
    return sql.SQL(", ").join(cols)


def scope_conditions(viewer: ViewerLike, alias: str = "r") -> list[sql.Composable]:
    """Public viewers never see reports whose reporter hid them."""
    if is_privileged(viewer):
        return []
    return [sql.SQL("{}.public").format(sql.Identifier(alias))]


def where(conds: list[sql.Composable]) -> sql.Composable:
    """``cond AND cond ...`` (``true`` when empty)."""
    return sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")


def h3_column(res: int, alias: str = "r") -> sql.Composed:
    """``reports.h3_r<res>`` for a stored resolution."""
    if res not in H3_RESOLUTIONS:
        raise InvalidParameterError(f"H3 resolution {res} is not stored; stored: {H3_RESOLUTIONS}")
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(f"h3_r{int(res)}"))


# --------------------------------------------------------------------------- layers


class MVTLayer(ABC):
    """A vector tile layer: metadata, visibility, SQL, and which tiles a report touches."""

    name: str
    title: str
    description: str = ""
    attribution: str = "petalapor; reports from Jakarta's citizen-report channels"
    geometry_type: str = "Polygon"
    minzoom: int = 0
    maxzoom: int = 22
    fields: Mapping[str, str] = {}
    report_derived: bool = True
    privileged_only: bool = False
    options: tuple[str, ...] = ()

    def check(self, tile: Tile, viewer: ViewerLike) -> None:
        """PermissionDeniedError (403), or NotFoundError (404) outside the layer's zooms."""
        self.check_visible(viewer)
        if not self.minzoom <= tile.z <= self.maxzoom:
            raise NotFoundError(
                f"layer {self.name} is served at zooms {self.minzoom}..{self.maxzoom}, not {tile.z}"
            )

    def check_visible(self, viewer: ViewerLike) -> None:
        """PermissionDeniedError (403) when the viewer may not see this layer at all."""
        if not self.visible_to(viewer):
            raise PermissionDeniedError(f"the {self.name} layer needs an OPD or admin key")

    def visible_to(self, viewer: ViewerLike) -> bool:
        """True when the viewer may request this layer."""
        return not self.privileged_only or is_privileged(viewer)

    def check_options(self, tile: Tile, res: int | None) -> None:
        """Reject options the layer does not take."""
        if res is not None and "res" not in self.options:
            raise InvalidParameterError(f"layer {self.name} takes no res parameter")

    @abstractmethod
    def query(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        """The SQL of one tile."""

    # -- invalidation: override in report-derived layers
    def tile_box(self, fp: Footprint, z: int, res: int | None, ctx: TileContext) -> Box | None:
        """EPSG:3857 box of the tiles ``fp`` can touch at zoom ``z`` (None: none)."""
        return None

    def touches(self, fp: Footprint, tile: Tile, res: int | None, ctx: TileContext) -> bool:
        """True when the tile's content depends on the report version ``fp``."""
        return False

    def tiles_touched(
        self, fp: Footprint, z: int, res: int | None, ctx: TileContext
    ) -> Iterator[Tile]:
        """Every tile at zoom ``z`` whose content depends on ``fp`` (for tests and warm-up)."""
        box = self.tile_box(fp, z, res, ctx)
        if box is None:
            return
        x0, x1, y0, y1 = tile_range(box, z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                if self.touches(fp, Tile(z, x, y), res, ctx):
                    yield Tile(z, x, y)

    def _base_params(self, req: TileRequest, ctx: TileContext) -> dict[str, object]:
        params: dict[str, object] = {"layer": self.name}
        params.update(envelope_params(req.tile))
        return params


def _box_polygon(box: Box) -> shapely.Polygon:
    return shapely.box(box.left, box.bottom, box.right, box.top)


class HexesLayer(MVTLayer):
    """H3 hexagons with report statistics."""

    name = "hexes"
    title = "Reports per H3 hexagon"
    description = (
        "Report statistics per H3 cell; resolution 7-11 by zoom. Public tiles omit hexes with "
        "fewer "
        "than k reports and never count reports hidden by their reporter."
    )
    geometry_type = "Polygon"
    fields = {"h3": "String: H3 cell index (hex)", "res": "Number: H3 resolution", **STATS_FIELDS}
    options = ("res",)

    def resolution(self, z: int, res: int | None) -> int:
        """The H3 resolution served at ``z`` (``res`` may be coarser, or at most one finer)."""
        default = zoom_to_resolution(z)
        if res is None:
            return default
        if res not in H3_RESOLUTIONS:
            raise InvalidParameterError(f"res must be one of {H3_RESOLUTIONS}, got {res}")
        if res > default + 1:
            raise InvalidParameterError(
                f"res {res} is too fine for zoom {z} (at most {default + 1})"
            )
        return res

    def check_options(self, tile: Tile, res: int | None) -> None:
        """``res`` must be stored and not too fine for the zoom."""
        self.resolution(tile.z, res)

    def query(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        """Roll-up rows when unfiltered, live aggregation otherwise; same columns either way."""
        res = self.resolution(req.tile.z, req.res)
        affine = use_affine(req.tile, res, ctx)
        params = self._base_params(req, ctx)
        params["k"] = 0 if is_privileged(req.viewer) else ctx.k
        if affine:
            params.update(tile_transform(req.tile, ctx))
        if not req.filters.is_empty:
            params.update(req.filters.where("r")[1])
            params.update(stats_params(ctx))
            params["margin"] = hex_margin(res)
        shape = ("hexes", res, affine, scope_of(req.viewer), req.filters.shape, ctx)
        text = compiled(shape, lambda: self._sql(req, res, affine, ctx))
        return TileQuery(text, params)

    def _sql(self, req: TileRequest, res: int, affine: bool, ctx: TileContext) -> sql.Composed:
        if req.filters.is_empty:
            source = sql.SQL(
                "SELECT a.h3, a.h3_hex, {stats}, a.geom FROM tile_hex_stats a "
                "WHERE a.scope = {scope} AND a.res = {res} AND a.geom && {env} AND a.count >= %(k)s"
            ).format(
                stats=stats_columns("a"),
                scope=sql.Literal(scope_of(req.viewer)),
                res=sql.Literal(res),
                env=ENVELOPE,
            )
        else:
            conds = [
                sql.SQL("r.geom && {}").format(query_envelope(4326)),
                *req.filters.where("r")[0],
                *scope_conditions(req.viewer),
            ]
            source = sql.SQL(
                "WITH g AS (SELECT {col} AS h3, {aggs} FROM reports r WHERE {where} "
                "GROUP BY {col}) "
                "SELECT g.h3, lower(to_hex(g.h3)) AS h3_hex, {stats}, c.geom FROM g "
                "JOIN tile_hex_cells c ON c.res = {res} AND c.h3 = g.h3 WHERE c.geom && {env} "
                "AND g.n >= %(k)s"
            ).format(
                col=h3_column(res),
                aggs=stats_aggregates("r"),
                where=where(conds),
                stats=stats_output("g"),
                res=sql.Literal(res),
                env=ENVELOPE,
            )
        inner = sql.SQL(
            "SELECT c.h3 AS id, c.h3_hex AS h3, {res} AS res, {stats}, {geom} FROM ({source}) c "
            "WHERE ST_Intersects(c.geom, {env}) ORDER BY c.h3"
        ).format(
            res=sql.Literal(res),
            stats=stats_columns("c"),
            geom=hex_geometry(sql.SQL("c.geom"), affine, ctx),
            source=source,
            env=ENVELOPE,
        )
        return as_mvt(inner, ctx, "id")

    def tile_box(self, fp: Footprint, z: int, res: int | None, ctx: TileContext) -> Box | None:
        """The box of the report's hex at the zoom's resolution."""
        return hex_box(fp.cell(self.resolution_or_default(z, res)))

    def touches(self, fp: Footprint, tile: Tile, res: int | None, ctx: TileContext) -> bool:
        """The hex polygon intersects the tile (the rule the SQL uses)."""
        poly = hex_polygon(fp.cell(self.resolution_or_default(tile.z, res)))
        return bool(poly.intersects(_box_polygon(xy_bounds(tile))))

    def resolution_or_default(self, z: int, res: int | None) -> int:
        """Like :meth:`resolution` without raising (cache keys were checked when stored)."""
        return res if res in H3_RESOLUTIONS else zoom_to_resolution(z)


@dataclass(frozen=True)
class _AreaSpec:
    level: str
    code_column: str
    attributes: tuple[str, ...]


class AreaLayer(MVTLayer):
    """Boundary polygons (kelurahan or RW) with the report statistics."""

    geometry_type = "MultiPolygon"
    #: (level, code) -> polygon in EPSG:3857, for exact invalidation (set by the tile service).
    shape_of: Callable[[str, str], shapely.Geometry | None] | None = None

    def __init__(self, level: str, *, minzoom: int) -> None:
        specs = {
            "kelurahan": _AreaSpec("kelurahan", "kelurahan_code", ("kecamatan_code", "kota_code")),
            "rw": _AreaSpec("rw", "rw_code", ("kelurahan_code", "kecamatan_code")),
        }
        self.spec = specs[level]
        self.name = level
        self.title = {"kelurahan": "Reports per kelurahan", "rw": "Reports per RW"}[level]
        self.description = (
            f"{level} polygons with report statistics (choropleth). Public tiles keep polygons "
            "with fewer "
            "than k reports but remove their statistics (suppressed = true)."
        )
        self.minzoom = minzoom
        self.fields = {
            "code": f"String: {level} code",
            "name": f"String: {level} name",
            **{a: f"String: {a.replace('_', ' ')}" for a in self.spec.attributes},
            **STATS_FIELDS,
            "suppressed": "Boolean: statistics removed (fewer than k reports, public tiles)",
        }

    def query(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        """Polygons in the tile, LEFT JOINed to roll-up or live statistics by code."""
        params = self._base_params(req, ctx)
        params.update({"level": self.spec.level, "k": 0 if is_privileged(req.viewer) else ctx.k})
        params["margin"] = ctx.buffer_m(req.tile.z)
        if not req.filters.is_empty:
            params.update(req.filters.where("r")[1])
            params.update(stats_params(ctx))
        shape = (self.name, scope_of(req.viewer), req.filters.shape, ctx)
        return TileQuery(compiled(shape, lambda: self._sql(req, ctx)), params)

    def _sql(self, req: TileRequest, ctx: TileContext) -> sql.Composed:
        if req.filters.is_empty:
            stats = sql.SQL(
                "SELECT s.code, {cols} FROM tile_area_stats s WHERE s.scope = {scope} "
                "AND s.level = %(level)s AND s.code IN (SELECT code FROM b)"
            ).format(cols=stats_columns("s"), scope=sql.Literal(scope_of(req.viewer)))
        else:
            code = sql.SQL("r.{}").format(sql.Identifier(self.spec.code_column))
            conds = [
                sql.SQL("{} IN (SELECT code FROM b)").format(code),
                *req.filters.where("r")[0],
                *scope_conditions(req.viewer),
            ]
            stats = sql.SQL(
                "SELECT g.code, {out} FROM (SELECT {code} AS code, {aggs} FROM reports r "
                "WHERE {where} GROUP BY {code}) g"
            ).format(
                out=stats_output("g"), code=code, aggs=stats_aggregates("r"), where=where(conds)
            )
        extra = sql.SQL(", ").join(
            sql.SQL("b.{}").format(sql.Identifier(a)) for a in self.spec.attributes
        )
        inner = sql.SQL(
            "WITH b AS (SELECT b.code, b.name, {extra}, b.geom FROM boundaries b "
            "WHERE b.level = %(level)s AND b.geom && {qenv}), a AS ({stats}) "
            "SELECT * FROM (SELECT b.code, b.name, {extra}, {out}, {geom} FROM b LEFT JOIN a "
            "ON a.code = b.code ORDER BY b.code) q WHERE {g} IS NOT NULL"
        ).format(
            extra=extra,
            qenv=query_envelope(4326),
            stats=stats,
            out=suppressed_columns("a"),
            geom=mvt_geom(sql.SQL("ST_Transform(b.geom, 3857)"), ctx),
            g=sql.Identifier(GEOM),
        )
        return as_mvt(inner, ctx)

    def tile_box(self, fp: Footprint, z: int, res: int | None, ctx: TileContext) -> Box | None:
        """Union of the boxes of the polygons the report is counted in, grown by the buffer."""
        boxes = [box for _, box in fp.areas.get(self.spec.level, ())]
        if not boxes:
            return None
        return Box(
            min(b.left for b in boxes),
            min(b.bottom for b in boxes),
            max(b.right for b in boxes),
            max(b.top for b in boxes),
        ).expand(ctx.buffer_m(z))

    def touches(self, fp: Footprint, tile: Tile, res: int | None, ctx: TileContext) -> bool:
        """A polygon the report is counted in meets the tile plus its buffer (the SQL's rule).

        Exact with :attr:`shape_of` (the service sets it); the polygon's box otherwise.
        """
        grown = xy_bounds(tile).expand(ctx.buffer_m(tile.z))
        for code, box in fp.areas.get(self.spec.level, ()):
            if not grown.intersects(box):
                continue
            shape = self.shape_of(self.spec.level, code) if self.shape_of else None
            if shape is None or shape.intersects(_box_polygon(grown)):
                return True
        return False


class ReportsLayer(MVTLayer):
    """Individual reports (OPD/admin only); clustered per H3 cell below the cluster zoom."""

    name = "reports"
    title = "Reports (OPD/admin)"
    description = (
        "Individual reports for OPD and admin keys; below zoom 14 clustered per H3 cell into "
        "one point "
        "at the reports' mean position with count. Not available to the public."
    )
    geometry_type = "Point"
    minzoom = 8
    privileged_only = True
    fields = {
        "id": "String: report id (points)",
        "category": "String: category code (points)",
        "opd": "String: responsible OPD code (points)",
        "status": "String: status code (points)",
        "public": "Boolean: the reporter allows public display (points)",
        "created": "String: creation day in Jakarta time, YYYY-MM-DD (points)",
        "cluster": "Boolean: true for a cluster point",
        "count": "Number: reports in the cluster",
        "open": "Number: open reports in the cluster",
        "top_category": "String: most frequent category in the cluster",
        "h3": "String: H3 cell of the cluster",
    }

    def query(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        """Points at or above the cluster zoom, clusters below it (OPD keys: their OPD only)."""
        req = self.scoped(req)
        if req.tile.z >= ctx.cluster_below_zoom:
            return self._points(req, ctx)
        return self._clusters(req, ctx)

    @staticmethod
    def scoped(req: TileRequest) -> TileRequest:
        """An OPD viewer sees its own OPD's reports; asking for another OPD is a 403."""
        if req.viewer.role != "opd":
            return req
        own = req.viewer.opd or ""
        if req.filters.opds and req.filters.opds != (own,):
            raise PermissionDeniedError(
                f"this key is scoped to OPD {own}; it cannot read {', '.join(req.filters.opds)}"
            )
        return replace(req, filters=replace(req.filters, opds=(own,)))

    def _points(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        params = self._base_params(req, ctx)
        params["margin"] = ctx.buffer_m(req.tile.z)
        params.update(req.filters.where("r")[1])
        params.update(tile_transform(req.tile, ctx))
        shape = ("reports:points", req.filters.shape, ctx)
        return TileQuery(compiled(shape, lambda: self._points_sql(req, ctx)), params)

    @staticmethod
    def _points_sql(req: TileRequest, ctx: TileContext) -> sql.Composed:
        conds = [sql.SQL("r.geom && {}").format(query_envelope(4326)), *req.filters.where("r")[0]]
        mx, my = mercator_xy("r")
        inner = sql.SQL(
            "SELECT r.id::text AS id, r.category, r.opd, r.status, r.public, false AS cluster, "
            "to_char(r.created_at AT TIME ZONE 'Asia/Jakarta', 'YYYY-MM-DD') AS created, {geom} "
            "FROM reports r WHERE {where} ORDER BY r.created_at DESC, r.id LIMIT {limit}"
        ).format(
            geom=point_geometry(mx, my), where=where(conds), limit=sql.Literal(int(ctx.max_points))
        )
        return as_mvt(inner, ctx)

    def _clusters(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        res = cluster_resolution(req.tile.z)
        params = self._base_params(req, ctx)
        grown = xy_bounds(req.tile).expand(ctx.buffer_m(req.tile.z))
        params.update(
            {"bx0": grown.left, "by0": grown.bottom, "bx1": grown.right, "by1": grown.top}
        )
        params["bufm"] = ctx.buffer_m(req.tile.z)
        params.update(tile_transform(req.tile, ctx))
        if not req.filters.is_empty:
            params.update(req.filters.where("r")[1])
            params.update(stats_params(ctx))
            params["margin"] = hex_margin(res) + ctx.buffer_m(req.tile.z)
        shape = ("reports:clusters", res, req.filters.shape, ctx)
        return TileQuery(compiled(shape, lambda: self._clusters_sql(req, res, ctx)), params)

    @staticmethod
    def _clusters_sql(req: TileRequest, res: int, ctx: TileContext) -> sql.Composed:
        if req.filters.is_empty:
            source = sql.SQL(
                "SELECT a.h3, a.h3_hex, a.count, a.open, a.top_category, a.cx, a.cy "
                "FROM tile_hex_stats a "
                "WHERE a.scope = 'all' AND a.res = {res} AND a.geom && ST_Expand({env}, %(bufm)s)"
            ).format(res=sql.Literal(res), env=ENVELOPE)
        else:
            conds = [
                sql.SQL("r.geom && {}").format(query_envelope(4326)),
                *req.filters.where("r")[0],
            ]
            source = sql.SQL(
                "SELECT g.h3, lower(to_hex(g.h3)) AS h3_hex, g.count, g.open, g.top_category, "
                "ST_X(g.p) AS cx, ST_Y(g.p) AS cy FROM (SELECT {col} AS h3, "
                "count(*)::int AS count, "
                "(count(*) FILTER (WHERE r.status = ANY(%(s_open)s)))::int AS open, "
                "mode() WITHIN GROUP (ORDER BY r.category) AS top_category, {mean} AS p "
                "FROM reports r WHERE {where} GROUP BY {col}) g"
            ).format(col=h3_column(res), mean=mean_position("r"), where=where(conds))
        inner = sql.SQL(
            "SELECT c.h3 AS id, c.h3_hex AS h3, c.count, c.open, c.top_category, "
            "true AS cluster, {geom} "
            "FROM ({source}) c WHERE c.cx BETWEEN %(bx0)s AND %(bx1)s "
            "AND c.cy BETWEEN %(by0)s AND %(by1)s ORDER BY c.h3"
        ).format(geom=point_geometry(sql.SQL("c.cx"), sql.SQL("c.cy")), source=source)
        return as_mvt(inner, ctx, "id")

    def tile_box(self, fp: Footprint, z: int, res: int | None, ctx: TileContext) -> Box | None:
        """The point at point zooms; the cluster cell (grown by the buffer) below."""
        if z >= ctx.cluster_below_zoom:
            x, y = fp.xy
            return Box(x, y, x, y).expand(ctx.buffer_m(z))
        return hex_box(fp.cell(cluster_resolution(z))).expand(ctx.buffer_m(z))

    def touches(self, fp: Footprint, tile: Tile, res: int | None, ctx: TileContext) -> bool:
        """Point inside the buffered tile; or, clustered, the cell meets the buffered tile."""
        grown = xy_bounds(tile).expand(ctx.buffer_m(tile.z))
        if tile.z >= ctx.cluster_below_zoom:
            return grown.contains(*fp.xy)
        poly = hex_polygon(fp.cell(cluster_resolution(tile.z)))
        return bool(poly.intersects(_box_polygon(grown)))


_SQL_TEXT_TYPES = {"date", "timestamptz"}


class RegistryLayer(MVTLayer):
    """A context layer from ``layers.registry`` (JakWifi, ISPU stations, ...): same tile code."""

    report_derived = False

    def __init__(self, layer) -> None:  # noqa: ANN001 - layers.registry.Layer
        self.layer = layer
        self.name = layer.name
        self.title = layer.title
        self.description = layer.description
        self.attribution = layer.attribution
        self.geometry_type = layer.geometry_type
        self.minzoom = layer.minzoom
        self.maxzoom = layer.maxzoom
        kinds = {
            "integer": "Number",
            "bigint": "Number",
            "double precision": "Number",
            "boolean": "Boolean",
        }
        self.fields = {
            name: f"{kinds.get(a.type, 'String')}: {a.description}".rstrip(": ")
            for name, a in layer.attributes.items()
        }

    def query(self, req: TileRequest, ctx: TileContext) -> TileQuery:
        """Features of the layer's table in the tile (plus buffer), by id, up to the limit."""
        params = self._base_params(req, ctx)
        params["margin"] = ctx.buffer_m(req.tile.z)
        layer = self.layer
        shape = (
            "registry",
            id(layer),
            layer.name,
            layer.table,
            layer.geometry_column,
            layer.id_column,
            layer.srid,
            tuple((k, a.type) for k, a in layer.attributes.items()),
            ctx,
        )
        return TileQuery(compiled(shape, lambda: self._sql(ctx)), params)

    def _sql(self, ctx: TileContext) -> sql.Composed:
        layer = self.layer
        cols = []
        for name, attr in layer.attributes.items():
            col = sql.SQL("l.{}").format(sql.Identifier(name))
            if attr.type in _SQL_TEXT_TYPES:
                col = sql.SQL("{}::text AS {}").format(col, sql.Identifier(name))
            cols.append(col)
        geom = sql.SQL("l.{}").format(sql.Identifier(layer.geometry_column))
        to_3857 = (
            geom if int(layer.srid) == 3857 else sql.SQL("ST_Transform({}, 3857)").format(geom)
        )
        inner = sql.SQL(
            "SELECT {cols}, {mvt} FROM {table} l WHERE {geom} && {qenv} ORDER BY l.{id} LIMIT "
            "{limit}"
        ).format(
            cols=sql.SQL(", ").join(cols),
            mvt=mvt_geom(to_3857, ctx),
            table=sql.Identifier(layer.table),
            geom=geom,
            qenv=query_envelope(layer.srid),
            id=sql.Identifier(layer.id_column),
            limit=sql.Literal(int(ctx.max_features)),
        )
        return as_mvt(inner, ctx)


@dataclass
class LayerSet:
    """The built-in report layers plus every vector layer of ``layers.registry``."""

    builtin: dict[str, MVTLayer] = field(
        default_factory=lambda: {
            lyr.name: lyr
            for lyr in (
                HexesLayer(),
                AreaLayer("kelurahan", minzoom=8),
                AreaLayer("rw", minzoom=10),
                ReportsLayer(),
            )
        }
    )
    _wrapped: dict[str, tuple[object, RegistryLayer]] = field(default_factory=dict)

    def get(self, name: str) -> MVTLayer:
        """The layer called ``name`` (NotFoundError with the known names otherwise)."""
        if name in self.builtin:
            return self.builtin[name]
        layer = self._registry_layer(name)
        if layer is None:
            raise NotFoundError(f"no tile layer {name!r}; known: {', '.join(sorted(self.names()))}")
        return layer

    def names(self) -> list[str]:
        """Every servable layer name."""
        return [*self.builtin, *(lyr.name for lyr in self._registry_vectors())]

    def all(self) -> list[MVTLayer]:
        """Every servable layer, built-in first."""
        return [self.get(n) for n in self.names()]

    def report_derived(self) -> dict[str, MVTLayer]:
        """The layers a report change can affect."""
        return {n: lyr for n, lyr in self.builtin.items() if lyr.report_derived}

    def _registry_vectors(self) -> list:
        try:
            from layers.registry import all_layers
        except ImportError:  # pragma: no cover - registry not installed
            return []
        return [
            lyr for lyr in all_layers() if lyr.kind == "vector" and lyr.name not in self.builtin
        ]

    def _registry_layer(self, name: str) -> RegistryLayer | None:
        for lyr in self._registry_vectors():
            if lyr.name == name:
                cached = self._wrapped.get(name)
                if cached is None or cached[0] is not lyr:
                    cached = (lyr, RegistryLayer(lyr))
                    self._wrapped[name] = cached
                return cached[1]
        return None
