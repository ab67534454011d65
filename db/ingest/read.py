"""Reading: CSV, GeoJSON and (Geo)Parquet files, or data frames, as a :class:`RawTable`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from db.ingest.mapping import Mapping
from petalapor.errors import DataError


@dataclass
class RawTable:
    """A file's rows as read: flattened columns plus a way back to each raw row."""

    frame: pd.DataFrame
    path: str
    geometry_error: np.ndarray | None = None
    raw_rows: Callable[[np.ndarray], list[dict]] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def raw(self, positions: np.ndarray) -> list[dict]:
        """The raw rows at these positions, JSON-ready."""
        if self.raw_rows is not None:
            return self.raw_rows(positions)
        rows = self.frame.iloc[positions].astype(object)
        return rows.where(rows.notna(), None).to_dict("records")


def read_table(path: str | Path, mapping: Mapping | None = None) -> RawTable:
    """Read a CSV, GeoJSON, GeoParquet or Parquet file of reports.

    Raises
    ------
    DataError
        Missing, unreadable or malformed file (the file is named).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path, (mapping or Mapping()).delimiter if suffix != ".tsv" else "\t")
    if suffix in (".geojson", ".json"):
        return _read_geojson(path)
    if suffix in (".parquet", ".geoparquet", ".pq"):
        return _read_parquet(path)
    raise DataError(f"{path}: unknown format {suffix!r}; use .csv, .geojson or .parquet")


def _read_csv(path: Path, delimiter: str) -> RawTable:
    """CSV with every column as text (ids keep leading zeros, bad numbers stay visible)."""
    import csv

    import pyarrow.csv as pacsv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise DataError(f"{path}: empty file (no header row)")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) {dupes}")
    # large_string: what pandas' str dtype holds, so to_pandas copies nothing
    convert = pacsv.ConvertOptions(
        column_types={c: pa.large_string() for c in header},
        null_values=[""],
        strings_can_be_null=True,
    )
    # The table's buffers come from the C allocator: Arrow's default (mimalloc) took
    # 2x the CPU time to fault in fresh memory here (transparent huge pages).
    pool = pa.system_memory_pool()
    try:
        try:
            # Block-parallel parsing.  A block boundary inside a quoted line break
            # cannot pass unnoticed: that block's last row is then incomplete, and
            # Arrow fails ("out of sync with chunker"); the file is read again.
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
                convert_options=convert,
                memory_pool=pool,
            )
        except pa.ArrowInvalid:
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=convert,
                memory_pool=pool,
            )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from exc
    frame = table.to_pandas()
    return RawTable(
        frame=frame, path=str(path), raw_rows=lambda pos: table.take(pa.array(pos)).to_pylist()
    )


def _read_geojson(path: Path) -> RawTable:
    """GeoJSON Features; properties flattened with dots; Point coordinates as @lon/@lat."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    else:
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection")
    props = [f.get("properties") or {} if isinstance(f, dict) else {} for f in features]
    frame = pd.json_normalize(props, sep=".") if props else pd.DataFrame(index=range(0))
    lon = np.full(len(features), np.nan)
    lat = np.full(len(features), np.nan)
    error = np.full(len(features), None, dtype=object)
    for i, feat in enumerate(features):
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        if not geom:
            error[i] = "no geometry"
        elif geom.get("type") != "Point":
            error[i] = f"geometry is a {geom.get('type')}, not a Point"
        else:
            xy = geom.get("coordinates") or []
            try:
                lon[i], lat[i] = float(xy[0]), float(xy[1])
            except (TypeError, ValueError, IndexError):
                error[i] = f"bad Point coordinates {xy!r}"
    frame["@lon"], frame["@lat"] = lon, lat
    return RawTable(
        frame=frame,
        path=str(path),
        geometry_error=error,
        raw_rows=lambda pos: [features[int(i)] for i in pos],
    )


def _read_parquet(path: Path) -> RawTable:
    """GeoParquet (point geometry as @lon/@lat, reprojected to 4326) or plain Parquet."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        if b"geo" in meta:
            gdf = gpd.read_parquet(path)
        else:
            return RawTable(frame=pd.read_parquet(path).reset_index(drop=True), path=str(path))
    except (OSError, pa.ArrowInvalid, ValueError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from exc
    return _geo_raw(gdf, str(path))


def _geo_raw(gdf: gpd.GeoDataFrame, path: str) -> RawTable:
    """Attributes plus @lon/@lat of a point GeoDataFrame; other geometries flagged."""
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    gdf = gdf.reset_index(drop=True)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    type_id = shapely.get_type_id(geoms)
    error = np.full(len(gdf), None, dtype=object)
    error[type_id == -1] = "no geometry"
    bad_type = (type_id != 0) & (type_id != -1)
    error[bad_type] = "geometry is not a Point"
    error[(type_id == 0) & shapely.is_empty(geoms)] = "empty Point"
    frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    point = type_id == 0
    frame["@lon"] = np.where(point, shapely.get_x(geoms), np.nan)
    frame["@lat"] = np.where(point, shapely.get_y(geoms), np.nan)

    def raw_rows(pos: np.ndarray) -> list[dict]:
        rows = frame.drop(columns=["@lon", "@lat"]).iloc[pos].astype(object)
        out = rows.where(rows.notna(), None).to_dict("records")
        for row, g in zip(out, shapely.to_wkt(geoms[pos]), strict=True):
            row["geometry"] = g
        return out

    return RawTable(frame=frame, path=path, geometry_error=error, raw_rows=raw_rows)


def frame_table(frame: pd.DataFrame, label: str) -> RawTable:
    """Wrap an in-memory (Geo)DataFrame, e.g. the demo generator's output."""
    if isinstance(frame, gpd.GeoDataFrame) and not {"lon", "lat"} <= set(frame.columns):
        return _geo_raw(frame, label)
    plain = pd.DataFrame(
        frame.drop(columns=frame.geometry.name) if isinstance(frame, gpd.GeoDataFrame) else frame
    )
    return RawTable(frame=plain.reset_index(drop=True), path=label)
