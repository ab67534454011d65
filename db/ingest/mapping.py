"""Column mappings: the roles a source column can play, :class:`Mapping` and mapping files."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from petalapor.errors import ConfigError
from petalapor.settings import DATA_DIR

#: Roles a source column can play, and what they hold.
ROLES: dict[str, str] = {
    "external_id": "the source system's id (idempotency key within source)",
    "source": "channel: jaki, qlue, sms, web, ...",
    "category": "category code from data/categories.toml",
    "status": "workflow status (default menunggu)",
    "opd": "responsible OPD (default: the category's)",
    "title": "short title",
    "description": "free text",
    "media_url": "photo URL, http(s)",
    "created_at": "when reported",
    "updated_at": "last change (default: the latest of the other timestamps)",
    "first_coordinated_at": "first coordination",
    "resolved_at": "completion",
    "lon": "longitude, WGS 84 (default: the point geometry)",
    "lat": "latitude, WGS 84 (default: the point geometry)",
    "public": "false hides the report (default true)",
    "attrs": "a JSON object merged into attrs",
}
TEXT_ROLES = (
    "external_id",
    "source",
    "category",
    "status",
    "opd",
    "title",
    "description",
    "media_url",
)
TIME_ROLES = ("created_at", "updated_at", "first_coordinated_at", "resolved_at")
#: Mapping file folder shipped with petalapor.
MAPPINGS_DIR = DATA_DIR / "mappings"


@dataclass(frozen=True)
class Mapping:
    """How a file's columns become report fields.

    Attributes
    ----------
    columns
        Role -> candidate source columns; the first present in the file is used.
        A role with no entry uses the column of its own name when the file has
        one (``lon``/``lat`` also ``longitude``/``latitude``/``@lon``/``@lat``).
    defaults
        Role -> constant, used where the role has no column or the cell is empty.
    attrs
        Key in ``reports.attrs`` -> source column (e.g. ``report_data.flood_depth``).
    id_hash
        Columns hashed into ``external_id`` when no id column exists (stable for
        the same values, so re-imports update instead of duplicating).
    id_prefix
        Prefix of hashed ids.
    timezone
        Zone of naive timestamps.
    time_format
        strftime format of the timestamps, when they are not ISO 8601.
    delimiter
        CSV field separator.
    name
        Label (the mapping file's stem).
    """

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    id_hash: tuple[str, ...] = ()
    id_prefix: str = ""
    timezone: str = "Asia/Jakarta"
    time_format: str | None = None
    delimiter: str = ","
    name: str = "default"

    def with_options(
        self,
        *,
        columns: dict[str, str] | None = None,
        defaults: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> Mapping:
        """A copy with CLI options applied (they win over the file)."""
        cols = dict(self.columns)
        for role, col in (columns or {}).items():
            cols[role] = (col,)
        merged = {**self.defaults, **{k: v for k, v in (defaults or {}).items() if v is not None}}
        out = replace(self, columns=cols, defaults=merged, timezone=timezone or self.timezone)
        _check_mapping(out, "options")
        return out


def load_mapping(path: str | Path) -> Mapping:
    """Read a mapping TOML file (see ``data/mappings/petabencana.toml``).

    A bare name (``petabencana``) is looked up in ``data/mappings/``.

    Raises
    ------
    ConfigError
        Unreadable file, unknown role or section, or a bad value.
    """
    path = Path(path)
    if not path.exists() and (MAPPINGS_DIR / f"{path.name}.toml").exists():
        path = MAPPINGS_DIR / f"{path.name}.toml"
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read mapping: {exc}") from exc
    known = {
        "name",
        "timezone",
        "time_format",
        "delimiter",
        "columns",
        "defaults",
        "attrs",
        "external_id",
    }
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    columns = {}
    for role, value in spec.get("columns", {}).items():
        columns[role] = (value,) if isinstance(value, str) else tuple(value)
    hashed = spec.get("external_id", {})
    mapping = Mapping(
        columns=columns,
        defaults=dict(spec.get("defaults", {})),
        attrs=dict(spec.get("attrs", {})),
        id_hash=tuple(hashed.get("hash", ())),
        id_prefix=str(hashed.get("prefix", "")),
        timezone=str(spec.get("timezone", "Asia/Jakarta")),
        time_format=spec.get("time_format"),
        delimiter=str(spec.get("delimiter", ",")),
        name=str(spec.get("name", path.stem)),
    )
    _check_mapping(mapping, str(path))
    return mapping


def _check_mapping(mapping: Mapping, where: str) -> None:
    """Roles known, candidate lists non-empty, zone valid."""
    for section in (mapping.columns, mapping.defaults):
        bad = sorted(set(section) - set(ROLES))
        if bad:
            raise ConfigError(f"{where}: unknown role(s) {bad}; roles are {sorted(ROLES)}")
    for role, cols in mapping.columns.items():
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"{where}: role {role!r} needs a column name or a list of them")
    try:
        pd.Timestamp("2020-01-01").tz_localize(mapping.timezone)
    except Exception as exc:  # noqa: BLE001 - pytz/zoneinfo raise various classes
        raise ConfigError(f"{where}: unknown timezone {mapping.timezone!r}") from exc
