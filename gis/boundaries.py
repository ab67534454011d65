"""Administrative boundaries: read, normalise, repair, dissolve and check.

Pure GeoDataFrame code, usable from a notebook::

    >>> from gis.boundaries import load_manifest, build_boundary_set
    >>> bset = build_boundary_set(load_manifest())          # doctest: +SKIP
    >>> bset.frames["rw"].plot()                             # doctest: +SKIP

Levels run kota > kecamatan > kelurahan > rw.  Levels are joined by *code*, never
by name (names differ between layers).  Geometries are stored in EPSG:4326;
areas and distances are computed in UTM 48S (EPSG:32748).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from petalapor.errors import BoundaryError, ConfigError

#: Levels from coarse to fine.
LEVELS: tuple[str, ...] = ("kota", "kecamatan", "kelurahan", "rw")
#: CRS in which geometries are stored.
STORAGE_CRS = "EPSG:4326"
#: Metric CRS for areas and distances (UTM zone 48 south covers all of Jakarta).
METRIC_CRS = "EPSG:32748"
#: Bumped when the importer's output changes for the same input files.
IMPORTER_VERSION = 1

#: Roles a source's columns can play, per level; ``code`` is always required.
ROLES: dict[str, dict[str, bool]] = {
    "kelurahan": {
        "code": True,
        "name": True,
        "kecamatan_code": True,
        "kecamatan_name": False,
        "kota_code": True,
        "kota_name": False,
    },
    "rw": {"code": True, "name": False, "kelurahan_code": False},
}

#: Columns of every normalised level frame, in order.
COLUMNS = [
    "level",
    "code",
    "name",
    "parent_code",
    "kelurahan_code",
    "kecamatan_code",
    "kota_code",
    "n_parts",
    "area_m2",
    "geometry",
]

_POLYGONAL = {"Polygon", "MultiPolygon"}


@dataclass(frozen=True)
class BoundarySource:
    """One boundary file and how its columns map onto petalapor's roles."""

    level: str
    path: Path
    columns: dict[str, str]
    layer: str | None = None

    def fingerprint(self) -> str:
        """Hash of the file's bytes and the column mapping."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(json.dumps([self.level, self.columns, self.layer], sort_keys=True).encode())
        return digest.hexdigest()


@dataclass
class ValidationReport:
    """What the importer found and did; printed after every import."""

    counts: dict[str, int] = field(default_factory=dict)
    parts_in: dict[str, int] = field(default_factory=dict)
    repaired: list[dict[str, str]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    mismatched_parent: list[dict[str, Any]] = field(default_factory=list)
    overlaps: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored with the boundary set)."""
        return {
            "counts": self.counts,
            "parts_in": self.parts_in,
            "repaired": self.repaired,
            "orphans": self.orphans,
            "mismatched_parent": self.mismatched_parent,
            "overlaps": self.overlaps,
            "gaps": self.gaps,
            "warnings": self.warnings,
        }

    def render(self) -> str:
        """Human-readable text of the report."""
        lines = ["Boundary validation report"]
        for level in LEVELS:
            if level in self.counts:
                parts = self.parts_in.get(level)
                extra = (
                    f" (from {parts} source parts)" if parts and parts != self.counts[level] else ""
                )
                lines.append(f"  {level:<10} {self.counts[level]:>6}{extra}")
        lines.append(f"  repaired geometries: {len(self.repaired)}")
        for rep in self.repaired:
            lines.append(f"    - {rep['level']} {rep['code']}: {rep['reason']}")
        lines.append(
            "  orphans (RW whose kelurahan code is not in the kelurahan layer): "
            f"{len(self.orphans)}"
        )
        for orph in self.orphans:
            lines.append(
                f"    - rw {orph['code']}: declared {orph['declared']}, "
                f"assigned {orph['assigned'] or 'none'} by area"
            )
        lines.append(f"  RW mostly outside their declared kelurahan: {len(self.mismatched_parent)}")
        for mis in self.mismatched_parent[:20]:
            lines.append(
                f"    - rw {mis['code']}: declared {mis['declared']}, "
                f"{mis['share']:.0%} of area in {mis['majority']}"
            )
        total = sum(o["area_m2"] for o in self.overlaps)
        lines.append(
            f"  RW overlaps over 1 m²: {len(self.overlaps)} pairs, {total / 1e6:.4f} km² in all"
        )
        lines.append(f"  kelurahan with RW coverage below 90%: {len(self.gaps)}")
        for gap in self.gaps[:20]:
            lines.append(
                f"    - {gap['code']} {gap['name']}: {gap['rw_coverage']:.0%} covered by RW"
            )
        for warn in self.warnings:
            lines.append(f"  warning: {warn}")
        return "\n".join(lines)


@dataclass
class BoundarySet:
    """All levels of one import, normalised, plus its report and fingerprint."""

    frames: dict[str, gpd.GeoDataFrame]
    report: ValidationReport
    fingerprint: str
    sources: list[BoundarySource]

    def all_levels(self) -> gpd.GeoDataFrame:
        """One frame with every level stacked (the storage layout)."""
        frames = [self.frames[lvl] for lvl in LEVELS if lvl in self.frames]
        return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=STORAGE_CRS)


# --------------------------------------------------------------------------- manifest


def default_manifest_path() -> Path:
    """The manifest shipped in ``data/boundaries/``."""
    from petalapor.settings import DATA_DIR

    return DATA_DIR / "boundaries" / "sources.toml"


def load_manifest(
    path: str | Path | None = None, search_dirs: list[Path] | None = None
) -> list[BoundarySource]:
    """Read a boundary manifest (TOML) into sources.

    Parameters
    ----------
    path
        Manifest file, or a folder holding the manifest's files (the shipped
        manifest's mapping is then used with files from that folder).
    search_dirs
        Folders searched for relative file names, in order.  Defaults to
        ``data/boundaries/`` and the shared data folder.

    Returns
    -------
    list of BoundarySource
    """
    if search_dirs is None:
        from petalapor.settings import PathSettings

        search_dirs = PathSettings().boundary_dirs
    manifest = default_manifest_path()
    if path is not None:
        path = Path(path)
        if path.is_dir():
            search_dirs = [path]
        elif path.suffix == ".toml":
            manifest = path
            search_dirs = [path.parent, *search_dirs]
        else:
            raise ConfigError(
                f"{path}: expected a folder of boundary files or a manifest .toml "
                "(use --kelurahan/--rw to name single files)"
            )
    try:
        spec = tomllib.loads(Path(manifest).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{manifest}: cannot read boundary manifest: {exc}") from exc
    for level in ("kelurahan", "rw"):
        if level not in spec:
            raise ConfigError(f"{manifest}: no [{level}] section")
    sources = []
    for level in ("kelurahan", "rw"):
        entry = spec[level]
        sources.append(
            BoundarySource(
                level=level,
                path=_find_file(entry.get("file", ""), search_dirs, manifest),
                columns=dict(entry.get("columns", {})),
                layer=entry.get("layer"),
            )
        )
    return sources


def manifest_attribution(path: str | Path | None = None) -> dict[str, str]:
    """The ``[attribution]`` of a boundary manifest: ``text`` and ``licence`` (may be empty)."""
    manifest = Path(path) if path is not None else default_manifest_path()
    try:
        spec = tomllib.loads(manifest.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{manifest}: cannot read boundary manifest: {exc}") from exc
    section = spec.get("attribution", {})
    return {key: str(section.get(key, "")) for key in ("text", "licence")}


def _find_file(name: str, search_dirs: list[Path], manifest: Path) -> Path:
    """Resolve a manifest file name against the search folders."""
    if not name:
        raise ConfigError(f"{manifest}: a source has no 'file'")
    candidate = Path(name)
    if candidate.is_absolute():
        if candidate.exists():
            return candidate
        raise BoundaryError(f"{candidate}: file not found")
    for folder in search_dirs:
        if (folder / candidate).exists():
            return folder / candidate
    tried = ", ".join(str(d) for d in search_dirs)
    raise BoundaryError(f"{name}: not found in {tried}")


# --------------------------------------------------------------------------- reading


def read_source(source: BoundarySource) -> gpd.GeoDataFrame:
    """Read one boundary file (GeoJSON, GeoPackage, Shapefile or .zip).

    Raises
    ------
    BoundaryError
        The file is missing, unreadable, has no polygons, or lacks a mapped column.
    """
    path = Path(source.path)
    if not path.exists():
        raise BoundaryError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gdf = gpd.read_file(path, layer=source.layer, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several unrelated classes
        raise BoundaryError(f"{path}: cannot read as a vector file ({exc})") from exc
    if len(gdf) == 0:
        raise BoundaryError(f"{path}: no features")
    gdf = _untruncate(gdf, source)
    _check_columns(gdf, source)
    _check_polygonal(gdf, source)
    return gdf


def _untruncate(gdf: gpd.GeoDataFrame, source: BoundarySource) -> gpd.GeoDataFrame:
    """Match mapped names cut to 10 characters, as Shapefiles store them."""
    renames = {}
    for col in source.columns.values():
        if col not in gdf.columns and len(col) > 10 and col[:10] in gdf.columns:
            renames[col[:10]] = col
    return gdf.rename(columns=renames) if renames else gdf


def _check_columns(gdf: gpd.GeoDataFrame, source: BoundarySource) -> None:
    """Every mapped column exists and every required role is mapped."""
    roles = ROLES[source.level]
    unknown_roles = sorted(set(source.columns) - set(roles))
    if unknown_roles:
        raise BoundaryError(
            f"{source.path}: unknown role(s) {unknown_roles} in the {source.level} column "
            f"mapping; roles are {sorted(roles)}"
        )
    missing_roles = [r for r, required in roles.items() if required and r not in source.columns]
    if missing_roles:
        raise BoundaryError(
            f"{source.path}: the {source.level} column mapping lacks {missing_roles}"
        )
    absent = {r: c for r, c in source.columns.items() if c not in gdf.columns}
    if absent:
        have = [c for c in gdf.columns if c != "geometry"]
        raise BoundaryError(
            f"{source.path}: mapped column(s) not in the file: "
            + ", ".join(f"{r}={c!r}" for r, c in absent.items())
            + f"; the file has {have}"
        )


def _check_polygonal(gdf: gpd.GeoDataFrame, source: BoundarySource) -> None:
    """Reject layers that are not polygons, naming the first bad rows."""
    types = gdf.geom_type
    bad = ~types.isin(_POLYGONAL)
    if bad.all():
        found = sorted(set(types.dropna()))
        raise BoundaryError(
            f"{source.path}: the {source.level} layer must hold polygons, "
            f"found {found or ['no geometry']}"
        )
    if bad.any():
        rows = [int(i) + 1 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise BoundaryError(
            f"{source.path}: feature(s) {rows} are not polygons "
            f"({sorted(set(types[bad].astype(str)))}); every {source.level} feature must be one"
        )


# --------------------------------------------------------------------------- normalising


def normalise(
    gdf: gpd.GeoDataFrame, source: BoundarySource, report: ValidationReport
) -> gpd.GeoDataFrame:
    """Rename mapped columns, reproject to EPSG:4326, repair, and dissolve by code."""
    out = gpd.GeoDataFrame(
        {role: gdf[col].astype("string").str.strip() for role, col in source.columns.items()},
        geometry=gdf.geometry.values,
        crs=gdf.crs,
    )
    if out.crs is None:
        minx, miny, maxx, maxy = out.total_bounds
        if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
            raise BoundaryError(f"{source.path}: no CRS given and coordinates are not lon/lat")
        report.warnings.append(f"{source.path.name}: no CRS given, assumed EPSG:4326")
        out = out.set_crs(STORAGE_CRS)
    elif not out.crs.equals(STORAGE_CRS):
        out = out.to_crs(STORAGE_CRS)
    blank = out["code"].isna() | (out["code"] == "")
    if blank.any():
        rows = [int(i) + 1 for i in np.flatnonzero(blank.to_numpy())[:5]]
        raise BoundaryError(
            f"{source.path}: feature(s) {rows} have an empty code ({source.columns['code']})"
        )
    out = _repair(out, source.level, report)
    report.parts_in[source.level] = len(out)
    return _dissolve_by_code(out, source.level)


def _repair(gdf: gpd.GeoDataFrame, level: str, report: ValidationReport) -> gpd.GeoDataFrame:
    """``make_valid`` every invalid geometry, keep its polygonal part, report each."""
    geoms = gdf.geometry.values
    invalid = ~shapely.is_valid(geoms)
    if not invalid.any():
        return gdf
    reasons = shapely.is_valid_reason(geoms[invalid])
    fixed = shapely.make_valid(geoms[invalid])
    fixed = np.array([_polygonal_part(g) for g in fixed], dtype=object)
    for code, reason in zip(gdf["code"].to_numpy()[invalid], reasons, strict=True):
        report.repaired.append(
            {"level": level, "code": str(code), "reason": f"{reason}; make_valid"}
        )
    gdf = gdf.copy()
    new = np.array(geoms, dtype=object)
    new[invalid] = fixed
    gdf.geometry = gpd.GeoSeries(new, crs=gdf.crs, index=gdf.index)
    return gdf


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a (possibly mixed) geometry, as a MultiPolygon."""
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in _POLYGONAL]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _dissolve_by_code(gdf: gpd.GeoDataFrame, level: str) -> gpd.GeoDataFrame:
    """Merge the parts of a unit that share a code into one geometry."""
    counts = gdf.groupby("code").size().rename("n_parts")
    attrs = gdf.drop(columns="geometry").groupby("code").first()
    geoms = gdf.groupby("code").geometry.agg(lambda s: shapely.union_all(s.values))
    out = gpd.GeoDataFrame(attrs.join(counts), geometry=geoms, crs=gdf.crs).reset_index()
    out["geometry"] = out.geometry.apply(_as_multi)
    out["level"] = level
    return out


def _as_multi(geom: shapely.Geometry) -> shapely.Geometry:
    """Polygons become one-part MultiPolygons so the storage column has one type."""
    if geom.geom_type == "Polygon":
        return shapely.MultiPolygon([geom])
    return geom


# --------------------------------------------------------------------------- hierarchy


def build_boundary_set(sources: list[BoundarySource]) -> BoundarySet:
    """Read, normalise and link kelurahan and RW sources into all four levels.

    Parameters
    ----------
    sources
        A ``kelurahan`` and an ``rw`` source, as from :func:`load_manifest`.

    Returns
    -------
    BoundarySet
        Frames for kota, kecamatan, kelurahan and rw (EPSG:4326) and the
        validation report.

    See Also
    --------
    db.boundaries.store_boundary_set : writes a set to PostGIS in one transaction.
    """
    by_level = {s.level: s for s in sources}
    for needed in ("kelurahan", "rw"):
        if needed not in by_level:
            raise ConfigError(f"no {needed} source given")
    report = ValidationReport()
    kel = normalise(read_source(by_level["kelurahan"]), by_level["kelurahan"], report)
    rw = normalise(read_source(by_level["rw"]), by_level["rw"], report)
    kel_m = kel.to_crs(METRIC_CRS)
    rw_m = rw.to_crs(METRIC_CRS)
    kel["area_m2"] = kel_m.area.to_numpy()
    rw["area_m2"] = rw_m.area.to_numpy()
    kel = _finish_kelurahan(kel)
    rw = _link_rw(rw, rw_m, kel, kel_m, report)
    kec = _derive(kel, "kecamatan", "kecamatan_code", "kecamatan_name", parent="kota_code")
    kota = _derive(kel, "kota", "kota_code", "kota_name", parent=None)
    report.overlaps = _overlaps(rw_m)
    report.gaps = _gaps(kel, rw)
    frames = {"kota": kota, "kecamatan": kec, "kelurahan": kel, "rw": rw}
    for level, frame in frames.items():
        report.counts[level] = len(frame)
        frames[level] = frame[COLUMNS].reset_index(drop=True)
    return BoundarySet(
        frames=frames, report=report, fingerprint=sources_fingerprint(sources), sources=sources
    )


def sources_fingerprint(sources: list[BoundarySource]) -> str:
    """Identity of an import: the files' bytes, their mappings and the importer version."""
    digest = hashlib.sha256(f"importer-{IMPORTER_VERSION}".encode())
    for source in sorted(sources, key=lambda s: s.level):
        digest.update(source.fingerprint().encode())
    return digest.hexdigest()


def _finish_kelurahan(kel: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Fill the hierarchy columns of the kelurahan frame."""
    kel = kel.copy()
    kel["kelurahan_code"] = kel["code"]
    kel["parent_code"] = kel["kecamatan_code"]
    return kel


def _link_rw(
    rw: gpd.GeoDataFrame,
    rw_m: gpd.GeoDataFrame,
    kel: gpd.GeoDataFrame,
    kel_m: gpd.GeoDataFrame,
    report: ValidationReport,
) -> gpd.GeoDataFrame:
    """Give every RW its kelurahan (by code, checked by majority of area)."""
    rw = rw.copy()
    majority, share = _majority_parent(rw_m, kel_m)
    known = set(kel["code"])
    declared = rw["kelurahan_code"] if "kelurahan_code" in rw else pd.Series(pd.NA, index=rw.index)
    assigned = []
    for code, decl, maj, shr in zip(rw["code"], declared, majority, share, strict=True):
        decl = None if pd.isna(decl) else str(decl)
        if decl in known:
            assigned.append(decl)
            if maj is not None and maj != decl and shr > 0.5:
                report.mismatched_parent.append(
                    {"code": code, "declared": decl, "majority": maj, "share": float(shr)}
                )
        else:
            assigned.append(maj)
            report.orphans.append({"code": code, "declared": decl, "assigned": maj})
    rw["kelurahan_code"] = assigned
    rw["parent_code"] = rw["kelurahan_code"]
    parents = kel.set_index("code")[["kecamatan_code", "kota_code"]]
    rw = rw.join(parents, on="kelurahan_code")
    rw["name"] = [
        _rw_name(code, label)
        for code, label in zip(rw["code"], rw.get("name", rw["code"]), strict=True)
    ]
    return rw


def _majority_parent(
    child_m: gpd.GeoDataFrame, parent_m: gpd.GeoDataFrame
) -> tuple[list[str | None], np.ndarray]:
    """For each child, the parent code holding most of its area, and that share."""
    left, right = parent_m.sindex.query(child_m.geometry.values, predicate="intersects")
    inter = shapely.area(
        shapely.intersection(child_m.geometry.values[left], parent_m.geometry.values[right])
    )
    frame = pd.DataFrame({"child": left, "parent": right, "area": inter})
    best = frame.sort_values(["child", "area"], ascending=[True, False]).drop_duplicates("child")
    codes: list[str | None] = [None] * len(child_m)
    share = np.zeros(len(child_m))
    child_area = child_m.area.to_numpy()
    parent_codes = parent_m["code"].to_numpy()
    for c, p, a in best.itertuples(index=False):
        codes[c] = str(parent_codes[p])
        share[c] = a / child_area[c] if child_area[c] > 0 else 0.0
    return codes, share


_RW_LABEL = re.compile(r"^\s*RW\s*0*(\d+)\s*$", re.IGNORECASE)


def _rw_name(code: str, label: Any) -> str:
    """Uniform RW name from the code (characters 11-13); keeps special-area labels."""
    label = "" if label is None or pd.isna(label) else str(label)
    if label and not _RW_LABEL.match(label):
        return label  # "TMII", "TPU", "LP Cipinang", ...
    digits = str(code)[10:13]
    return f"RW {int(digits):02d}" if digits.isdigit() else (label or str(code))


def _derive(
    kel: gpd.GeoDataFrame, level: str, code_col: str, name_col: str, parent: str | None
) -> gpd.GeoDataFrame:
    """Dissolve kelurahan into a coarser level by its code column."""
    names = kel.groupby(code_col)[name_col].first() if name_col in kel else None
    geoms = kel.groupby(code_col).geometry.agg(lambda s: shapely.union_all(s.values))
    out = gpd.GeoDataFrame({"code": geoms.index}, geometry=geoms.values, crs=kel.crs)
    out["name"] = names.reindex(out["code"]).to_numpy() if names is not None else out["code"]
    out["geometry"] = out.geometry.apply(_as_multi)
    out["level"] = level
    out["n_parts"] = kel.groupby(code_col).size().reindex(out["code"]).to_numpy()
    out["area_m2"] = out.to_crs(METRIC_CRS).area.to_numpy()
    out["kelurahan_code"] = None
    if level == "kecamatan":
        kota = kel.groupby(code_col)["kota_code"].first()
        out["kecamatan_code"] = out["code"]
        out["kota_code"] = kota.reindex(out["code"]).to_numpy()
        out["parent_code"] = out["kota_code"]
    else:
        out["kecamatan_code"] = None
        out["kota_code"] = out["code"]
        out["parent_code"] = None
    return out


def _overlaps(rw_m: gpd.GeoDataFrame, min_area: float = 1.0) -> list[dict[str, Any]]:
    """Pairs of RW whose interiors overlap by more than ``min_area`` m²."""
    geoms = rw_m.geometry.values
    left, right = rw_m.sindex.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    area = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    codes = rw_m["code"].to_numpy()
    big = area > min_area
    return [
        {"a": str(codes[a]), "b": str(codes[b]), "area_m2": round(float(x), 1)}
        for a, b, x in zip(left[big], right[big], area[big], strict=True)
    ]


def _gaps(
    kel: gpd.GeoDataFrame, rw: gpd.GeoDataFrame, threshold: float = 0.9
) -> list[dict[str, Any]]:
    """Kelurahan whose RW cover less than ``threshold`` of their area."""
    covered = rw.groupby("kelurahan_code")["area_m2"].sum()
    share = covered.reindex(kel["code"]).fillna(0.0).to_numpy() / kel["area_m2"].to_numpy()
    out = []
    for code, name, s in zip(kel["code"], kel["name"], share, strict=True):
        if s < threshold:
            out.append({"code": str(code), "name": str(name), "rw_coverage": round(float(s), 4)})
    return out
