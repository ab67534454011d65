"""What an import did (:class:`ImportSummary`) and how long each stage took (:class:`_Timer`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class ImportSummary:
    """What one import did; ``read = stored + updated + quarantined`` always holds."""

    import_id: uuid.UUID
    source_file: str
    read: int = 0
    stored: int = 0
    updated: int = 0
    quarantined: int = 0
    events: int = 0
    snap: dict[str, int] = field(default_factory=lambda: {"inside": 0, "nearest": 0, "outside": 0})
    quarantine_fields: dict[str, int] = field(default_factory=dict)
    bulk: bool = False
    direct: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    index_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (stored in ``report_imports.summary``)."""
        return {
            "source_file": self.source_file,
            "read": self.read,
            "stored": self.stored,
            "updated": self.updated,
            "quarantined": self.quarantined,
            "events": self.events,
            "snap": self.snap,
            "quarantine_fields": self.quarantine_fields,
            "bulk": self.bulk,
            "direct": self.direct,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "index_seconds": {k: round(v, 3) for k, v in self.index_seconds.items()},
        }

    def render(self) -> str:
        """Human-readable summary."""
        placed = sum(self.snap.values())
        share = (lambda k: self.snap[k] / placed) if placed else (lambda k: 0.0)
        total = self.seconds.get("total", 0.0)
        rate = f", {self.read / total:,.0f} rows/s" if total > 0 else ""
        lines = [
            f"import {self.import_id} ({self.source_file})"
            + (" [bulk mode, direct load]" if self.direct else " [bulk mode]" if self.bulk else ""),
            f"  read         {self.read:>10,}",
            f"  stored (new) {self.stored:>10,}",
            f"  updated      {self.updated:>10,}",
            f"  quarantined  {self.quarantined:>10,}"
            + (
                f"  ({', '.join(f'{k}: {v}' for k, v in sorted(self.quarantine_fields.items()))})"
                if self.quarantine_fields
                else ""
            ),
            "  snapped      "
            + ", ".join(
                f"{k} {self.snap[k]:,} ({share(k):.1%})" for k in ("inside", "nearest", "outside")
            ),
            f"  events       {self.events:>10,}",
            f"  took {total:.2f} s{rate}",
        ]
        return "\n".join(lines)


class _Timer:
    """Accumulates wall-clock seconds per named stage."""

    def __init__(self, into: dict[str, float]):
        self.into = into

    def __call__(self, name: str) -> _Timer._Span:
        return _Timer._Span(self.into, name)

    class _Span:
        def __init__(self, into: dict[str, float], name: str):
            self.into, self.name = into, name

        def __enter__(self) -> None:
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            self.into[self.name] = self.into.get(self.name, 0.0) + time.perf_counter() - self.t0


def _finish_summary(summary: ImportSummary, quarantine: pd.DataFrame) -> None:
    """Counts of the quarantine, and the invariant (else the import is rolled back)."""
    summary.quarantined = len(quarantine)
    summary.quarantine_fields = {
        str(k): int(v) for k, v in quarantine["field"].value_counts().items()
    }
    if summary.read != summary.stored + summary.updated + summary.quarantined:
        raise RuntimeError(
            f"row accounting failed: read {summary.read} != stored {summary.stored} + updated "
            f"{summary.updated} + quarantined {summary.quarantined}; nothing was stored"
        )
