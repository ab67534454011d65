"""Server-side tile cache: a memory LRU with a byte budget and an optional disk tier.

Keys are :class:`TileKey` ``(layer, z, x, y, query, role)``: ``query`` is the
normalised filter/option string (:attr:`tiles.filters.Filters.key`), ``role``
the viewer's cache role, so a public tile is never served to an admin or the
other way round.  Values are :class:`CachedTile` (body, its gzip, ETag =
BLAKE2b of the body, media type); empty tiles are cached too.

Invalidation is by tile: :meth:`TileCache.invalidate` drops the variants (all
filters, all roles) of the tiles a predicate selects inside a tile range.  A
render that started before an invalidation is not stored (generation check),
so a tile computed from the old data cannot slip back in.

Report changes reach the cache in two ways:

* the ``reports`` triggers of migration 0005 (any process, bulk imports
  included) -> :mod:`tiles.rollup` -> ``NOTIFY petalapor_tiles`` -> every tile
  server's listener; nothing to call;
* in-process code may also call :func:`invalidate_point` (``lon, lat``) after
  its commit: every hook in :data:`on_report_change` runs (each running tile
  service registers one), dropping the tiles that show that point.

The disk tier (``PETALAPOR_TILES_CACHE_DIR``) keeps one file per variant
under ``layer/z/x/y/``; it has no size limit (``petalapor tiles clear``) and,
shared by several processes, may keep a tile rendered during another
process's invalidation until the next change there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("petalapor.tiles")

#: Hooks called by :func:`invalidate_point`; tile services add one while they run.
on_report_change: list[Callable[[float, float], object]] = []
#: Bodies below this size are not gzipped (same threshold as the app's GZipMiddleware).
GZIP_MIN_BYTES = 1024
#: gzip level of stored tiles: 4 is the fastest of zlib's lazy-matching levels,
#: about three times faster than 6 on big tiles for a few per cent more bytes.
GZIP_LEVEL = 4
_ENTRY_OVERHEAD = 256


def invalidate_point(lon: float, lat: float) -> None:
    """Tell every running tile service that the report at ``lon, lat`` changed.

    Call after the transaction commits.  Not needed when the database
    triggers are in place (they notify every server), but harmless.
    """
    for hook in list(on_report_change):
        try:
            hook(lon, lat)
        except Exception:  # noqa: BLE001 - one broken hook must not stop the others
            log.exception("tile invalidation hook failed")


class TileKey(NamedTuple):
    """One cached variant of one tile."""

    layer: str
    z: int
    x: int
    y: int
    query: str = ""
    role: str = "public"


@dataclass(frozen=True)
class CachedTile:
    """A rendered tile: body, gzip of the body (None when small or empty), ETag, media type."""

    body: bytes
    gzip: bytes | None
    etag: str
    media_type: str

    @property
    def empty(self) -> bool:
        """True for an empty tile (served as 204)."""
        return not self.body

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return len(self.body) + len(self.gzip or b"") + _ENTRY_OVERHEAD

    @classmethod
    def build(cls, body: bytes, media_type: str, *, compress: bool = True) -> "CachedTile":
        """Hash and (for bodies of 1 KiB or more) gzip a freshly rendered tile."""
        body = bytes(body or b"")
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        gz = (
            gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            if compress and len(body) >= GZIP_MIN_BYTES
            else None
        )
        return cls(body, gz, etag, media_type)


class TileCache:
    """Thread-safe LRU of :class:`CachedTile` within ``max_bytes``, plus an optional disk tier.

    Parameters
    ----------
    max_bytes
        Memory budget; 0 keeps nothing in memory.
    directory
        Disk tier folder, or None.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, directory: Path | str | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory else None
        self._entries: OrderedDict[TileKey, CachedTile] = OrderedDict()
        self._index: dict[tuple[str, int], dict[tuple[int, int], set[TileKey]]] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when neither memory nor disk keeps anything."""
        return self.max_bytes > 0 or self.directory is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: TileKey) -> bool:
        return key in self._entries or (
            self.directory is not None and self._disk_path(key).exists()
        )

    # ------------------------------------------------------------------ get / put
    def get(self, key: TileKey) -> CachedTile | None:
        """The cached tile, or None (a disk hit is promoted to memory)."""
        with self._lock:
            tile = self._entries.get(key)
            if tile is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return tile
        if self.directory is not None:
            tile = self._disk_get(key)
            if tile is not None:
                with self._lock:
                    self.hits += 1
                    self._store(key, tile)
                return tile
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: TileKey, tile: CachedTile, *, generation: int | None = None) -> bool:
        """Store ``tile`` unless an invalidation happened since ``generation``; True when stored."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return False
            self._store(key, tile)
        if self.directory is not None:
            self._disk_put(key, tile)
        return True

    def _store(self, key: TileKey, tile: CachedTile) -> None:
        if self.max_bytes <= 0 or tile.nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[key] = tile
        self.nbytes += tile.nbytes
        self._index.setdefault((key.layer, key.z), {}).setdefault((key.x, key.y), set()).add(key)
        while self.nbytes > self.max_bytes and self._entries:
            old_key, old_tile = self._entries.popitem(last=False)
            self.nbytes -= old_tile.nbytes
            self._unindex(old_key)

    def _unindex(self, key: TileKey) -> None:
        bucket = self._index.get((key.layer, key.z))
        if bucket is None:
            return
        variants = bucket.get((key.x, key.y))
        if variants is not None:
            variants.discard(key)
            if not variants:
                del bucket[(key.x, key.y)]
        if not bucket:
            del self._index[(key.layer, key.z)]

    # ------------------------------------------------------------------ invalidation
    def zooms(self, layer: str) -> list[int]:
        """Zooms with cached tiles of ``layer`` in memory."""
        with self._lock:
            return sorted(z for (lyr, z) in self._index if lyr == layer)

    def invalidate(
        self,
        layer: str,
        z: int,
        tile_range: tuple[int, int, int, int],
        predicate: Callable[[TileKey], bool] | None = None,
    ) -> int:
        """Drop variants of ``layer`` tiles at ``z`` inside ``(xmin, xmax, ymin, ymax)`` that match.

        Returns the number of dropped entries (memory and disk).
        """
        xmin, xmax, ymin, ymax = tile_range
        dropped: list[TileKey] = []
        with self._lock:
            self.generation += 1
            bucket = self._index.get((layer, z), {})
            area = (xmax - xmin + 1) * (ymax - ymin + 1)
            if area <= len(bucket):
                cells = [
                    (x, y)
                    for x in range(xmin, xmax + 1)
                    for y in range(ymin, ymax + 1)
                    if (x, y) in bucket
                ]
            else:
                cells = [xy for xy in bucket if xmin <= xy[0] <= xmax and ymin <= xy[1] <= ymax]
            for xy in cells:
                for key in list(bucket.get(xy, ())):
                    if predicate is None or predicate(key):
                        tile = self._entries.pop(key, None)
                        if tile is not None:
                            self.nbytes -= tile.nbytes
                        self._unindex(key)
                        dropped.append(key)
        disk = (
            self._disk_invalidate(layer, z, tile_range, predicate)
            if self.directory is not None
            else 0
        )
        return len(dropped) + disk

    def invalidate_layers(self, layers: Iterable[str]) -> int:
        """Drop every cached tile of these layers."""
        names = set(layers)
        with self._lock:
            self.generation += 1
            keys = [k for k in self._entries if k.layer in names]
            for key in keys:
                self.nbytes -= self._entries.pop(key).nbytes
                self._unindex(key)
        if self.directory is not None:
            for name in names:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        return len(keys)

    def clear(self) -> None:
        """Drop everything (memory and disk)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self._index.clear()
            self.nbytes = 0
        if self.directory is not None and self.directory.exists():
            for child in self.directory.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                    missing_ok=True
                )

    def keys(self) -> list[TileKey]:
        """Keys held in memory (oldest first)."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, object]:
        """Entries, bytes, budget, hits and misses."""
        return {
            "entries": len(self._entries),
            "bytes": self.nbytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "directory": str(self.directory) if self.directory else None,
        }

    # ------------------------------------------------------------------ disk tier
    def _tile_dir(self, layer: str, z: int, x: int, y: int) -> Path:
        assert self.directory is not None
        return self.directory / layer / str(z) / str(x) / str(y)

    def _disk_path(self, key: TileKey) -> Path:
        name = hashlib.sha1(f"{key.query}|{key.role}".encode()).hexdigest()[:24] + ".tile"
        return self._tile_dir(key.layer, key.z, key.x, key.y) / name

    def _disk_get(self, key: TileKey) -> CachedTile | None:
        path = self._disk_path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        header, _, body = data.partition(b"\n")
        try:
            meta = json.loads(header)
        except ValueError:
            return None
        if meta.get("key") != list(key):
            return None
        tile = CachedTile.build(body, meta["media_type"])
        return tile if tile.etag == meta.get("etag") else None

    def _disk_put(self, key: TileKey, tile: CachedTile) -> None:
        path = self._disk_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            header = json.dumps(
                {"key": list(key), "etag": tile.etag, "media_type": tile.media_type}
            ).encode()
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(header + b"\n" + tile.body)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("tile disk cache write failed: %s", exc)

    def _disk_invalidate(
        self,
        layer: str,
        z: int,
        tile_range: tuple[int, int, int, int],
        predicate: Callable[[TileKey], bool] | None,
    ) -> int:
        xmin, xmax, ymin, ymax = tile_range
        zdir = self.directory / layer / str(z) if self.directory else None
        if zdir is None or not zdir.exists():
            return 0
        dropped = 0
        for xdir in zdir.iterdir():
            if not (xdir.name.isdigit() and xmin <= int(xdir.name) <= xmax):
                continue
            for ydir in xdir.iterdir():
                if not (ydir.name.isdigit() and ymin <= int(ydir.name) <= ymax):
                    continue
                for path in ydir.glob("*.tile"):
                    try:
                        header = path.read_bytes().partition(b"\n")[0]
                        key = TileKey(*json.loads(header)["key"])
                    except (OSError, ValueError, KeyError, TypeError):
                        path.unlink(missing_ok=True)
                        continue
                    if predicate is None or predicate(key):
                        path.unlink(missing_ok=True)
                        dropped += 1
        return dropped
