"""The one-page area summary: a kelurahan's figures, RW map, backlog and monthly counts.

Shared by ``petalapor report`` (a file an OPD can e-mail) and ``GET /areas/kelurahan/{code}``
(linked from the map popups).  Everything is inline (SVG and CSS, no scripts, no CDN), so
the page works offline.  For public readers the figures come from public reports only, and
rows with fewer than ``k`` reports lose their figures (as in the analysis API).
Definitions: :mod:`gis.metrics`.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg

from db import analysis
from gis.metrics import BACKLOG_BANDS, MetricSpec, suppress_small
from petalapor.catalog import (
    COORDINATION_TARGET_HOURS,
    RESOLUTION_TARGET_DAYS,
    RESOLVED_TARGET_SHARE,
)
from petalapor.errors import NotFoundError

#: Colour classes of the 7-day share on the map (ColorBrewer RdYlGn, 5 classes).
SHARE_COLOURS: tuple[tuple[float, str], ...] = (
    (0.2, "#d7191c"),
    (0.4, "#fdae61"),
    (0.6, "#ffffbf"),
    (0.8, "#a6d96a"),
    (1.01, "#1a9641"),
)
UNRELIABLE_COLOUR = "#d9d9d9"
BAND_LABELS = ("0-7 hari", "8-30 hari", "31-90 hari", "> 90 hari")


# --------------------------------------------------------------------------- data


def report_data(
    conn: psycopg.Connection, code: str, spec: MetricSpec, k_anonymity: int | None = None
) -> dict[str, Any]:
    """Everything the one-page summary shows (plain values and frames).

    ``k_anonymity`` (public readers; ``spec`` then leaves private reports out):
    the kelurahan, RW and month rows with fewer reports lose their figures.
    """
    names = analysis.area_names(conn, "kelurahan", code)
    if names is None:
        raise NotFoundError(f"no kelurahan with code {code!r}")
    within = ("kelurahan", code)
    kel = analysis.resolution_metrics(conn, spec.with_(unit="kelurahan", within=within))
    city = analysis.resolution_metrics(conn, spec.with_(unit=None))
    rws = analysis.resolution_metrics(conn, spec.with_(unit="rw", within=within))
    monthly = analysis.resolution_metrics(
        conn, spec.with_(unit=None, period="month", within=within)
    )
    if k_anonymity:
        kel, rws, monthly = (suppress_small(t, k_anonymity) for t in (kel, rws, monthly))
    shapes = analysis.unit_frame(conn, "rw", parent=within)
    if shapes.empty:  # Kepulauan Seribu and a few others have no RW polygons
        shapes = analysis.unit_frame(conn, "kelurahan", codes=[code])
    return {
        "code": code,
        "names": names,
        "spec": spec,
        "kelurahan": _row(kel),
        "city": _row(city),
        "rws": rws,
        "shapes": shapes,
        "monthly": monthly.tail(12).reset_index(drop=True),
        "generated": dt.datetime.now(dt.UTC),
        "k_anonymity": k_anonymity,
    }


def _row(table: pd.DataFrame) -> dict[str, Any]:
    if table.empty:
        return {}
    row = table.iloc[0].to_dict()
    return {k: None if _missing(v) else v for k, v in row.items()}


def _missing(value: Any) -> bool:
    """None or NaN (suppressed and undefined figures)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- rendering


def render_report(data: dict[str, Any]) -> str:
    """The HTML page (inline SVG map and charts, no external resources)."""
    names, kel, spec = data["names"], data["kelurahan"], data["spec"]
    title = f"Kelurahan {names['kelurahan']}"
    wib = dt.timezone(dt.timedelta(hours=7))
    as_of = spec.as_of.astimezone(wib).strftime("%d-%m-%Y %H:%M WIB")
    period = _period_text(spec, wib)
    parts = [
        "<!doctype html>",
        '<html lang="id"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} - ringkasan penyelesaian laporan</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<p class='sub'>Kecamatan {_e(names.get('kecamatan') or '-')}, "
        f"{_e(names.get('kota') or '-')} &middot; kode {_e(data['code'])} &middot; "
        f"data per {as_of} &middot; {period}</p></header>",
        *(_notice(data) if kel.get("suppressed") else _body(data)),
        _footer(spec, data["generated"], data.get("k_anonymity")),
        "</body></html>",
    ]
    return "\n".join(parts)


def _body(data: dict[str, Any]) -> list[str]:
    """Figures, RW map, backlog and monthly charts, RW table."""
    kel, city = data["kelurahan"], data["city"]
    return [
        _kpis(kel, city),
        "<div class='row'>",
        f"<section><h2>Peta RW: diselesaikan &le; {RESOLUTION_TARGET_DAYS} hari</h2>",
        map_svg(data["shapes"], data["rws"]),
        _legend(),
        "</section>",
        "<section><h2>Laporan terbuka menurut umur</h2>",
        bar_svg([int(kel.get(b) or 0) for b, _, _ in BACKLOG_BANDS], BAND_LABELS, colour="#c0392b"),
        "<h2>Laporan per bulan (12 bulan terakhir)</h2>",
        bar_svg(
            [None if _missing(v) else int(v) for v in data["monthly"]["reports"]],
            [f"{p[5:7]}/{p[2:4]}" for p in data["monthly"]["period"]],
            colour="#2c7fb8",
        ),
        "</section></div>",
        _rw_table(data["rws"], data["shapes"]),
    ]


def _notice(data: dict[str, Any]) -> list[str]:
    """A kelurahan with too few public reports: no figures at all."""
    k = data.get("k_anonymity")
    return [
        f"<p class='warn'>Kurang dari {k} laporan publik untuk pilihan ini: angka tidak "
        "ditampilkan, agar pelapor tidak dapat dikenali.</p>"
    ]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _pct(value: Any, decimals: int = 0) -> str:
    return "-" if _missing(value) else f"{100 * float(value):.{decimals}f}%"


def _days(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.1f} hari"


def _count(value: Any) -> str:
    return "-" if _missing(value) else str(int(value))


def _period_text(spec: MetricSpec, tz: dt.tzinfo) -> str:
    if spec.start is None and spec.end is None:
        return "semua laporan"
    lo = spec.start.astimezone(tz).date().isoformat() if spec.start else "awal"
    last = spec.end - dt.timedelta(microseconds=1) if spec.end else None  # end is exclusive
    hi = last.astimezone(tz).date().isoformat() if last else "kini"
    return f"laporan dibuat {lo} s.d. {hi}"


def _kpis(kel: dict[str, Any], city: dict[str, Any]) -> str:
    median = kel.get("median_days")
    resolved = kel.get("resolved_share")
    p90 = kel.get("p90_days")
    cards = [
        (
            "Laporan",
            f"{int(kel.get('reports') or 0)}",
            f"terbuka {int(kel.get('open') or 0)}, ditolak {int(kel.get('rejected') or 0)}",
            None,
        ),
        (
            f"Selesai &le; {RESOLUTION_TARGET_DAYS} hari",
            _pct(kel.get("resolved_7d_share")),
            f"kota: {_pct(city.get('resolved_7d_share'))} &middot; dari "
            f"{int(kel.get('resolved_7d_eligible') or 0)} laporan &ge; 7 hari",
            None,
        ),
        (
            "Median lama penyelesaian",
            _days(median),
            f"kota: {_days(city.get('median_days'))} &middot; target {RESOLUTION_TARGET_DAYS} hari",
            None if median is None else median <= RESOLUTION_TARGET_DAYS,
        ),
        (
            "90% selesai dalam",
            _days(p90),
            f"kota: {_days(city.get('p90_days'))} &middot; target {RESOLUTION_TARGET_DAYS} hari",
            None if p90 is None else p90 <= RESOLUTION_TARGET_DAYS,
        ),
        (
            f"Koordinasi &le; {COORDINATION_TARGET_HOURS} jam",
            _pct(kel.get("coordinated_6h_share")),
            f"kota: {_pct(city.get('coordinated_6h_share'))}",
            None,
        ),
        (
            "Selesai (semua)",
            _pct(kel.get("resolved_share"), 1),
            f"kota: {_pct(city.get('resolved_share'), 1)} &middot; target "
            f"{RESOLVED_TARGET_SHARE * 100:.0f}%",
            None if resolved is None else resolved >= RESOLVED_TARGET_SHARE,
        ),
    ]
    html_cards = []
    for label, value, note, met in cards:
        mark = (
            ""
            if met is None
            else (
                "<span class='ok'>&#10003; target</span>"
                if met
                else "<span class='no'>&#10007; target</span>"
            )
        )
        html_cards.append(
            f"<div class='kpi'><div class='label'>{label}</div>"
            f"<div class='value'>{value} {mark}</div>"
            f"<div class='note'>{note}</div></div>"
        )
    warn = (
        ""
        if kel.get("reliable")
        else (
            "<p class='warn'>Sedikit laporan: angka belum andal (kurang dari ambang laporan).</p>"
        )
    )
    return "<section class='kpis'>" + "".join(html_cards) + "</section>" + warn


def share_colour(value: Any, reliable: bool) -> str:
    """Fill of a RW on the map."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not reliable:
        return UNRELIABLE_COLOUR
    return next(colour for upper, colour in SHARE_COLOURS if value < upper)


def map_svg(
    shapes: gpd.GeoDataFrame, rws: pd.DataFrame, width: int = 520, height: int = 420
) -> str:
    """Inline SVG of the polygons coloured by ``resolved_7d_share`` (grey: unreliable / no data)."""
    if shapes.empty:
        return "<p>Tidak ada batas wilayah.</p>"
    values = (
        rws.set_index("code")
        if len(rws)
        else pd.DataFrame(columns=["resolved_7d_share", "reliable"])
    )
    geoms = shapes.geometry.to_numpy()
    x0, y0, x1, y1 = shapes.total_bounds
    lat0 = math.radians((y0 + y1) / 2)
    sx = math.cos(lat0)
    pad = 8
    scale = min(
        (width - 2 * pad) / max((x1 - x0) * sx, 1e-9), (height - 2 * pad) / max(y1 - y0, 1e-9)
    )

    def pt(x: float, y: float) -> str:
        return f"{pad + (x - x0) * sx * scale:.1f},{pad + (y1 - y) * scale:.1f}"

    paths = []
    for code, name, geom in zip(shapes["code"], shapes["name"], geoms, strict=True):
        d = []
        for poly in getattr(geom, "geoms", [geom]):
            for ring in (poly.exterior, *poly.interiors):
                coords = np.asarray(ring.coords)
                d.append("M" + " L".join(pt(x, y) for x, y in coords) + " Z")
        row = values.loc[code] if code in values.index else None
        share = None if row is None else row["resolved_7d_share"]
        fill = share_colour(share, bool(row["reliable"]) if row is not None else False)
        tip = f"{name}: {_pct(share) if share is not None and not pd.isna(share) else 'tanpa data'}"
        paths.append(
            f'<path d="{" ".join(d)}" fill="{fill}" fill-rule="evenodd">'
            f"<title>{_e(tip)}</title></path>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="Peta RW" class="map">'
        f'<g stroke="#555" stroke-width="0.6">{"".join(paths)}</g></svg>'
    )


def _legend() -> str:
    lower = 0.0
    items = []
    for upper, colour in SHARE_COLOURS:
        items.append(
            f"<span><i style='background:{colour}'></i>"
            f"{lower * 100:.0f}-{min(upper, 1) * 100:.0f}%</span>"
        )
        lower = upper
    items.append(
        f"<span><i style='background:{UNRELIABLE_COLOUR}'></i>belum andal / tanpa data</span>"
    )
    return "<div class='legend'>" + "".join(items) + "</div>"


def bar_svg(
    values: list[int | None], labels: Any, *, colour: str, width: int = 420, height: int = 170
) -> str:
    """Inline SVG bar chart with value labels (None: a hidden figure, drawn as "-")."""
    labels = list(labels)
    if not values:
        return "<p>Tidak ada data.</p>"
    top = max(max((v for v in values if v is not None), default=0), 1)
    n = len(values)
    left, bottom, gap = 8, 34, 6
    bar_w = (width - 2 * left - gap * (n - 1)) / n
    bars = []
    for i, (v, label) in enumerate(zip(values, labels, strict=True)):
        h = (height - bottom - 18) * (v or 0) / top
        x = left + i * (bar_w + gap)
        y = height - bottom - h
        shown = "-" if v is None else v
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"/>'
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">{shown}</text>'
            f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14:.1f}" text-anchor="middle" '
            f'class="axis">{_e(label)}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" class="chart">{"".join(bars)}'
        f'<line x1="{left}" x2="{width - left}" y1="{height - bottom}" y2="{height - bottom}" '
        'stroke="#999"/></svg>'
    )


def _rw_table(rws: pd.DataFrame, shapes: gpd.GeoDataFrame) -> str:
    if rws.empty:
        return ""
    names = dict(zip(shapes["code"], shapes["name"], strict=True))
    rows = []
    for r in rws.itertuples(index=False):
        name = names.get(r.code, r.code or "(di luar RW)")
        rows.append(
            f"<tr{'' if r.reliable else ' class=dim'}><td>{_e(name)}</td>"
            f"<td>{_count(r.reports)}</td><td>{_count(r.open)}</td>"
            f"<td>{_pct(r.resolved_7d_share)}</td><td>{_days(r.median_days)}</td>"
            f"<td>{'' if _missing(r.rank) else int(r.rank)}</td></tr>"
        )
    return (
        "<section><h2>Per RW</h2><table><thead><tr><th>RW</th><th>Laporan</th><th>Terbuka</th>"
        f"<th>Selesai &le; {RESOLUTION_TARGET_DAYS} hari</th><th>Median</th><th>Peringkat*</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p class='note'>* peringkat di antara RW kelurahan ini yang andal; "
        "baris abu-abu: belum andal.</p></section>"
    )


def _footer(spec: MetricSpec, generated: dt.datetime, k_anonymity: int | None = None) -> str:
    days = RESOLUTION_TARGET_DAYS
    public = (
        f"<p><b>Laporan publik saja.</b> Baris (RW, bulan) dengan kurang dari {k_anonymity} "
        "laporan tidak ditampilkan angkanya (&ldquo;-&rdquo;).</p>"
        if k_anonymity
        else ""
    )
    return (
        "<footer><p><b>Definisi.</b> Laporan ditolak dihitung terpisah dan tidak masuk "
        f"ukuran kinerja. Selesai &le; {days} hari: dari laporan berumur minimal {days} hari, "
        f"bagian yang selesai dalam {days} hari (tepat {days} hari 0 detik dihitung). "
        "Median dan 90%: penaksir Kaplan-Meier, laporan terbuka disensor pada waktu data. "
        f"Angka andal bila minimal {spec.min_reports} laporan tidak ditolak.</p>"
        f"{public}<p>Dibuat oleh petalapor {generated.strftime('%Y-%m-%d %H:%M UTC')}.</p>"
        "</footer>"
    )


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222}
body{max-width:1000px;margin:16px auto;padding:0 12px}
h1{margin:0;font-size:24px}
h2{font-size:15px;margin:12px 0 6px}
.sub{color:#666;margin:4px 0 12px}
.kpis{display:grid;grid-template-columns:repeat(3,1fr);gap:8px}
.kpi{border:1px solid #ddd;border-radius:6px;padding:8px}
.kpi .label{color:#555;font-size:12px}
.kpi .value{font-size:22px;font-weight:600}
.kpi .note{color:#777;font-size:11px}
.ok{color:#1a9641;font-size:12px}
.no{color:#d7191c;font-size:12px}
.warn{color:#b35806}
.row{display:grid;grid-template-columns:1.2fr 1fr;gap:12px}
svg text{font-size:10px}
svg .axis{fill:#555}
.legend span{display:inline-block;margin-right:8px;font-size:11px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:3px}
.legend i{vertical-align:middle;border:1px solid #999}
table{border-collapse:collapse;width:100%;font-size:12px}
td,th{border-bottom:1px solid #eee;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr.dim{color:#999}
footer{color:#666;font-size:11px;margin-top:16px}
p.note{color:#777;font-size:11px}
@media print{body{margin:0}.row{grid-template-columns:1fr 1fr}}
"""
