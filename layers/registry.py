"""The layer registry: what context layers exist and how to read them.

A layer is described once, by a :class:`Layer`, and registered from the module
that builds it::

    # layers/schools.py
    from layers.registry import Attribute, Layer, register

    def load() -> "gpd.GeoDataFrame": ...

    register(Layer(
        name="schools", title="Schools", attribution="...", licence="...",
        geometry_type="Point", table="layer_schools", load=load,
        attributes={"id": Attribute("text", "School id"), ...},
    ))

That one new module is the whole change: :func:`get` and :func:`all_layers`
import every module of the ``layers`` package on first use, so a module that
registers itself is found without editing any list.

The registry knows nothing about databases.  The tiles engine reads
``layer.table``, ``layer.geometry_column``, ``layer.id_column`` and
``layer.attributes`` to build its ``ST_AsMVT`` SQL; every one of those names is
checked here to be a plain lower-case SQL identifier, so it can be quoted and
used without further checks.  Raster layers have no table; their ``load``
returns the path of a Cloud-Optimised GeoTIFF.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from petalapor.errors import ConfigError, NotFoundError

#: Attribute types a layer may declare (PostgreSQL spellings, mapped 1:1 by the DB code).
ATTRIBUTE_TYPES: frozenset[str] = frozenset(
    {"text", "integer", "bigint", "double precision", "boolean", "date", "timestamptz"}
)
#: Geometry types a layer may declare; ``Raster`` marks a raster layer.
GEOMETRY_TYPES: frozenset[str] = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "Raster"}
)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_REGISTRY: dict[str, Layer] = {}
_discovered = False


@dataclass(frozen=True)
class Attribute:
    """One attribute column of a vector layer: its SQL type and meaning."""

    type: str
    description: str = ""


@dataclass(frozen=True)
class Layer:
    """Description of one context layer (vector table or raster).

    Parameters
    ----------
    name
        Registry key and public layer id (a lower-case identifier).
    title
        Human-readable title.
    attribution
        Source and attribution text shown on the map.  Synthetic layers must
        say so here.
    licence
        Licence of the data, or a statement that none is known.
    geometry_type
        One of :data:`GEOMETRY_TYPES`; ``"Raster"`` for a raster layer.
    load
        Callable returning the layer's data: a GeoDataFrame (EPSG:4326) whose
        columns are ``attributes`` plus ``geometry`` for vector layers, or the
        path of a COG for raster layers.  A ``"module:function"`` string is
        imported lazily.
    attributes
        Attribute columns ``{name: Attribute}`` (vector layers only).
    table
        SQL table or view the tiles engine reads (vector layers only).
    geometry_column, id_column, srid
        Geometry column, unique id column and SRID of ``table``.
    minzoom, maxzoom
        Zoom range in which the layer is served.
    synthetic
        True when the data is generated, not observed.
    description
        Longer free text (method, caveats).
    extra
        Anything else a consumer needs (a raster's colour map, legend, ...).
    """

    name: str
    title: str
    attribution: str
    licence: str
    geometry_type: str
    load: Callable[..., Any] | str
    attributes: Mapping[str, Attribute] = field(default_factory=dict)
    table: str | None = None
    geometry_column: str = "geom"
    id_column: str = "id"
    srid: int = 4326
    minzoom: int = 0
    maxzoom: int = 22
    synthetic: bool = False
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_layer(self)
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def kind(self) -> Literal["vector", "raster"]:
        """``"raster"`` for raster layers, else ``"vector"``."""
        return "raster" if self.geometry_type == "Raster" else "vector"

    def loader(self) -> Callable[..., Any]:
        """The ``load`` callable, importing it first when given as ``"module:function"``."""
        if callable(self.load):
            return self.load
        module_name, _, attr = self.load.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"layer {self.name!r}: cannot import load={self.load!r} ({exc})"
            ) from exc

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON description (no ``load``), e.g. for a layer catalogue endpoint."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "geometry_type": self.geometry_type,
            "attribution": self.attribution,
            "licence": self.licence,
            "synthetic": self.synthetic,
            "minzoom": self.minzoom,
            "maxzoom": self.maxzoom,
            "table": self.table,
            "geometry_column": self.geometry_column if self.table else None,
            "id_column": self.id_column if self.table else None,
            "srid": self.srid,
            "attributes": {
                k: {"type": a.type, "description": a.description}
                for k, a in self.attributes.items()
            },
            "description": self.description,
            "extra": dict(self.extra),
        }


def register(layer: Layer, *, replace: bool = False) -> Layer:
    """Add ``layer`` to the registry and return it.

    Parameters
    ----------
    layer
        The layer description.
    replace
        Allow replacing a layer of the same name (e.g. a synthetic layer by
        the real import).  Without it a second registration is an error.

    Raises
    ------
    ConfigError
        A layer of that name is already registered, or another layer already
        uses the same table.

    Examples
    --------
    >>> from layers.registry import Layer, register, unregister
    >>> demo = Layer(name="demo", title="Demo", attribution="me", licence="CC0",
    ...              geometry_type="Raster", load=lambda: "demo.tif")
    >>> register(demo).kind
    'raster'
    >>> unregister("demo")

    See Also
    --------
    get, all_layers
    """
    if not isinstance(layer, Layer):
        raise ConfigError(f"register() expects a Layer, got {type(layer).__name__}")
    old = _REGISTRY.get(layer.name)
    if old is not None and not replace and old != layer:
        raise ConfigError(
            f"layer {layer.name!r} is already registered (pass replace=True to swap it)"
        )
    for other in _REGISTRY.values():
        if layer.table and other.name != layer.name and other.table == layer.table:
            raise ConfigError(
                f"table {layer.table!r} of layer {layer.name!r} is already used by {other.name!r}"
            )
    _REGISTRY[layer.name] = layer
    return layer


def get(name: str) -> Layer:
    """The registered layer called ``name``.

    Raises
    ------
    NotFoundError
        No such layer; the message lists the known names.
    """
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFoundError(f"no layer {name!r}; known layers: {sorted(_REGISTRY)}") from None


def all_layers() -> tuple[Layer, ...]:
    """Every registered layer, sorted by name."""
    _discover()
    return tuple(_REGISTRY[k] for k in sorted(_REGISTRY))


def unregister(name: str) -> None:
    """Remove a layer (tests and plug-in reloads); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every module of the ``layers`` package once, so each registers itself."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # set first: a layer module may call get() while being imported
    package = importlib.import_module(__name__.rpartition(".")[0] or "layers")
    for info in pkgutil.iter_modules(package.__path__, prefix=package.__name__ + "."):
        if info.name != __name__ and not info.name.rpartition(".")[2].startswith("_"):
            try:
                importlib.import_module(info.name)
            except ImportError as exc:
                _discovered = False
                raise ConfigError(f"layer module {info.name} cannot be imported: {exc}") from exc


def _check_layer(layer: Layer) -> None:
    """Reject names, types and zooms the tiles engine could not use safely."""
    where = f"layer {layer.name!r}"
    if not _IDENT.match(layer.name):
        raise ConfigError(f"{where}: the name must match {_IDENT.pattern}")
    if layer.geometry_type not in GEOMETRY_TYPES:
        raise ConfigError(
            f"{where}: geometry_type {layer.geometry_type!r} not in {sorted(GEOMETRY_TYPES)}"
        )
    if not 0 <= layer.minzoom <= layer.maxzoom <= 30:
        raise ConfigError(
            f"{where}: need 0 <= minzoom <= maxzoom <= 30, got {layer.minzoom}..{layer.maxzoom}"
        )
    if not layer.attribution.strip():
        raise ConfigError(f"{where}: attribution is required")
    if not (callable(layer.load) or (isinstance(layer.load, str) and ":" in layer.load)):
        raise ConfigError(
            f"{where}: load must be a callable or 'module:function', got {layer.load!r}"
        )
    if layer.geometry_type == "Raster":
        if layer.table or layer.attributes:
            raise ConfigError(f"{where}: a raster layer has no table or attributes")
        return
    if layer.table is None:
        raise ConfigError(f"{where}: a vector layer needs a table")
    for label, ident in [
        ("table", layer.table),
        ("geometry_column", layer.geometry_column),
        ("id_column", layer.id_column),
        *(("attribute", a) for a in layer.attributes),
    ]:
        if not _IDENT.match(ident):
            raise ConfigError(f"{where}: {label} {ident!r} must match {_IDENT.pattern}")
    if layer.id_column not in layer.attributes:
        raise ConfigError(f"{where}: id_column {layer.id_column!r} is not among the attributes")
    bad = {k: a.type for k, a in layer.attributes.items() if a.type not in ATTRIBUTE_TYPES}
    if bad:
        raise ConfigError(
            f"{where}: unknown attribute type(s) {bad}; use one of {sorted(ATTRIBUTE_TYPES)}"
        )
