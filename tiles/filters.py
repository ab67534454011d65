"""Report filters shared by every report-derived tile and the heatmap.

``from`` / ``to`` are inclusive calendar dates (``YYYY-MM-DD``) in Jakarta
time (WIB, UTC+7) on ``created_at``; ``category``, ``opd`` and ``status`` are
repeatable (``?category=banjir&category=sampah``, commas work too) and must be
codes of the catalog (``data/categories.toml``).  Anything invalid raises
:class:`~petalapor.errors.InvalidParameterError` (HTTP 400) with the reason.

:class:`Filters` is normalised (sorted, de-duplicated codes) so the same
selection always gives the same :attr:`Filters.key`: the cache key and the
query string of TileJSON tile URLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import Query
from psycopg import sql

from petalapor.catalog import Catalog, get_catalog
from petalapor.errors import InvalidParameterError

#: Jakarta time (no daylight saving).
WIB = timezone(timedelta(hours=7), "WIB")
#: Query parameter names, in canonical order.
FILTER_NAMES: tuple[str, ...] = ("category", "from", "opd", "status", "to")


@dataclass(frozen=True)
class Filters:
    """A normalised report selection; empty means every report."""

    start: date | None = None
    end: date | None = None
    categories: tuple[str, ...] = ()
    opds: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when nothing is filtered (tiles may then read the roll-ups)."""
        return not (self.start or self.end or self.categories or self.opds or self.statuses)

    @property
    def shape(self) -> tuple[bool, ...]:
        """Which conditions are set: all the SQL text depends on (values are bound)."""
        return (
            self.start is not None,
            self.end is not None,
            bool(self.categories),
            bool(self.opds),
            bool(self.statuses),
        )

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs in canonical order, one per value."""
        out: list[tuple[str, str]] = [("category", c) for c in self.categories]
        if self.start:
            out.append(("from", self.start.isoformat()))
        out += [("opd", o) for o in self.opds]
        out += [("status", s) for s in self.statuses]
        if self.end:
            out.append(("to", self.end.isoformat()))
        return out

    @cached_property
    def key(self) -> str:
        """Canonical query string (``""`` when empty)."""
        return urlencode(self.items())

    def where(self, alias: str = "r") -> tuple[list[sql.Composable], dict[str, object]]:
        """SQL conditions on ``reports`` (as ``alias``) and their bound values."""
        col = lambda name: sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))  # noqa: E731
        conds: list[sql.Composable] = []
        params: dict[str, object] = {}
        if self.start:
            conds.append(sql.SQL("{} >= %(f_from)s").format(col("created_at")))
            params["f_from"] = datetime.combine(self.start, time(0), WIB)
        if self.end:
            conds.append(sql.SQL("{} < %(f_to)s").format(col("created_at")))
            params["f_to"] = datetime.combine(self.end + timedelta(days=1), time(0), WIB)
        for name, values, param in (
            ("category", self.categories, "f_category"),
            ("opd", self.opds, "f_opd"),
            ("status", self.statuses, "f_status"),
        ):
            if values:
                conds.append(sql.SQL("{} = ANY(%({})s)").format(col(name), sql.SQL(param)))
                params[param] = list(values)
        return conds, params


EMPTY = Filters()


def _codes(name: str, raw: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    values = {v.strip() for item in raw for v in item.split(",") if v.strip()}
    known_set = set(known)
    unknown = sorted(values - known_set)
    if unknown:
        raise InvalidParameterError(
            f"unknown {name} {', '.join(repr(u) for u in unknown)}; "
            f"known: {', '.join(sorted(known_set))}"
        )
    return tuple(sorted(values))


def _date(name: str, raw: Sequence[str]) -> date | None:
    values = [v.strip() for v in raw if v.strip()]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameterError(f"{name} may be given once, got {len(values)} values")
    try:
        if len(values[0]) != 10:
            raise ValueError
        return date.fromisoformat(values[0])
    except ValueError:
        raise InvalidParameterError(
            f"{name} must be a date YYYY-MM-DD, got {values[0]!r}"
        ) from None


def parse_filters(values: Mapping[str, Sequence[str]], catalog: Catalog | None = None) -> Filters:
    """Check and normalise raw query values (``{name: [value, ...]}``); unrelated names are ignored.

    Examples
    --------
    >>> parse_filters({"category": ["sampah,banjir"], "from": ["2024-01-01"]}).key
    'category=banjir&category=sampah&from=2024-01-01'
    """
    catalog = catalog or get_catalog()
    start = _date("from", values.get("from", ()))
    end = _date("to", values.get("to", ()))
    if start and end and start > end:
        raise InvalidParameterError(f"from ({start}) is after to ({end})")
    return Filters(
        start=start,
        end=end,
        categories=_codes("category", values.get("category", ()), catalog.categories),
        opds=_codes("opd", values.get("opd", ()), catalog.opds),
        statuses=_codes("status", values.get("status", ()), catalog.statuses),
    )


@lru_cache(maxsize=4096)
def parse_query_string(query: bytes | str) -> Filters:
    """:func:`parse_filters` on a raw query string (the fast path; memoised: Filters is frozen)."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    return parse_filters(parse_qs(text, keep_blank_values=False))


@dataclass
class FilterParams:
    """FastAPI dependency: the report filters of a tile request, checked (400 on error)."""

    from_: Annotated[
        str | None,
        Query(
            alias="from",
            description="First day (WIB) of created_at, inclusive.",
            examples=["2024-01-01"],
        ),
    ] = None
    to: Annotated[
        str | None,
        Query(description="Last day (WIB) of created_at, inclusive.", examples=["2024-06-30"]),
    ] = None
    category: Annotated[
        list[str] | None,
        Query(description="Category code(s) from the catalog; repeatable.", examples=[["banjir"]]),
    ] = None
    opd: Annotated[list[str] | None, Query(description="OPD code(s); repeatable.")] = None
    status: Annotated[
        list[str] | None,
        Query(
            description="Status code(s): menunggu, disposisi, koordinasi, proses, selesai, ditolak."
        ),
    ] = None
    filters: Filters = field(init=False)

    def __post_init__(self) -> None:
        raw = {
            "from": [self.from_] if self.from_ else [],
            "to": [self.to] if self.to else [],
            "category": self.category or [],
            "opd": self.opd or [],
            "status": self.status or [],
        }
        self.filters = parse_filters(raw)
