"""Categories, OPDs and the status workflow, from ``data/categories.toml``.

The file is versioned; :func:`sync_catalog` copies it into the ``categories``,
``opds`` and ``statuses`` tables so SQL can join on them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from petalapor.errors import ConfigError, ConflictError, DataError
from petalapor.settings import DATA_DIR

CATALOG_FILE = DATA_DIR / "categories.toml"
INITIAL_STATUS = "menunggu"
COORDINATION_STATUSES = frozenset({"koordinasi", "proses", "selesai"})
RESOLVED_STATUS = "selesai"
REJECTED_STATUS = "ditolak"
#: Published targets: first coordination within 6 hours, resolution within 7 days.
COORDINATION_TARGET_HOURS = 6
RESOLUTION_TARGET_DAYS = 7
#: The published bar: at least this share of (non-rejected) reports resolved.
RESOLVED_TARGET_SHARE = 0.95


@dataclass(frozen=True)
class Category:
    """One report category and the OPD it is routed to by default."""

    code: str
    name_id: str
    name_en: str
    opd: str
    jaklapor: bool = False


@dataclass(frozen=True)
class Status:
    """One workflow stage."""

    code: str
    name_id: str
    name_en: str
    open: bool
    next: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """The whole catalog file."""

    version: int
    opds: dict[str, str]
    categories: dict[str, Category]
    statuses: dict[str, Status]

    def category(self, code: str) -> Category:
        """The category, or a DataError naming the known codes."""
        try:
            return self.categories[code]
        except KeyError:
            raise DataError(
                f"unknown category {code!r}; known: {', '.join(sorted(self.categories))}"
            ) from None

    def check_opd(self, code: str) -> str:
        """The OPD code itself, or a DataError naming the known codes."""
        if code not in self.opds:
            raise DataError(f"unknown OPD {code!r}; known: {', '.join(sorted(self.opds))}")
        return code

    def check_transition(self, current: str, new: str) -> None:
        """Raise ConflictError unless ``current -> new`` is allowed."""
        if new not in self.statuses:
            raise DataError(f"unknown status {new!r}; known: {', '.join(self.statuses)}")
        allowed = self.statuses[current].next
        if new not in allowed:
            raise ConflictError(
                f"illegal status change {current} -> {new}; "
                f"from {current} allowed: {', '.join(allowed)}"
            )


def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """Parse and check the catalog file."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    opds = dict(raw.get("opd", {}))
    categories = {}
    for code, entry in raw.get("category", {}).items():
        cat = Category(code=code, **entry)
        if cat.opd not in opds:
            raise ConfigError(f"{path}: category {code} routes to unknown OPD {cat.opd}")
        categories[code] = cat
    statuses = {
        code: Status(
            code=code,
            name_id=e["name_id"],
            name_en=e["name_en"],
            open=e["open"],
            next=tuple(e["next"]),
        )
        for code, e in raw.get("status", {}).items()
    }
    for st in statuses.values():
        unknown = set(st.next) - set(statuses)
        if unknown:
            raise ConfigError(f"{path}: status {st.code} leads to unknown {sorted(unknown)}")
    if INITIAL_STATUS not in statuses:
        raise ConfigError(f"{path}: no status {INITIAL_STATUS}")
    return Catalog(
        version=int(raw.get("version", 0)), opds=opds, categories=categories, statuses=statuses
    )


@lru_cache
def get_catalog() -> Catalog:
    """The catalog, read once."""
    return load_catalog()


def sync_catalog(conn, catalog: Catalog | None = None) -> None:  # noqa: ANN001 - psycopg.Connection
    """Upsert the catalog into its tables (never deletes: old reports keep their codes)."""
    catalog = catalog or get_catalog()
    with conn.transaction():
        for code, name in catalog.opds.items():
            conn.execute(
                "INSERT INTO opds (code, name) VALUES (%s, %s) "
                "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name",
                (code, name),
            )
        for cat in catalog.categories.values():
            conn.execute(
                "INSERT INTO categories "
                "(code, name_id, name_en, default_opd, jaklapor, catalog_version) "
                "VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (code) DO UPDATE SET name_id = EXCLUDED.name_id, "
                "name_en = EXCLUDED.name_en, default_opd = EXCLUDED.default_opd, "
                "jaklapor = EXCLUDED.jaklapor, catalog_version = EXCLUDED.catalog_version",
                (cat.code, cat.name_id, cat.name_en, cat.opd, cat.jaklapor, catalog.version),
            )
        for st in catalog.statuses.values():
            conn.execute(
                "INSERT INTO statuses (code, name_id, name_en, is_open) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (code) DO UPDATE SET name_id = EXCLUDED.name_id, "
                "name_en = EXCLUDED.name_en, is_open = EXCLUDED.is_open",
                (st.code, st.name_id, st.name_en, st.open),
            )
