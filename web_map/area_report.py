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
from psycopg.rows import dict_row, tuple_row

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
    rw_codes = shapes["code"].tolist()
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
        "wifi": _wifi(conn, code),
        "ispu": _ispu(conn, spec, rw_codes),
    }


def _wifi(conn: psycopg.Connection, code: str) -> dict[str, Any] | None:
    """The kelurahan's JakWifi coverage (and whether the points are synthetic), or None."""
    from db.layers import current_import

    current = current_import(conn, "jakwifi")
    if current is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT n_hotspots, per_km2, nearest_m, share_100m, share_300m FROM jakwifi_coverage "
            "WHERE unit = 'kelurahan' AND code = %s",
            (code,),
        ).fetchone()
    return None if row is None else {**row, "synthetic": bool(current["synthetic"])}


def _ispu(conn: psycopg.Connection, spec: MetricSpec, rw_codes: list[str]) -> dict[str, Any]:
    """Mean ISPU over the kelurahan's RW centroids for the reports' period (the analysis's
    IDW of the stations' period means), with the days it covers; or why there is none."""
    from db.analysis import LayerNotLoadedError
    from layers.ispu import categorise
    from petalapor.errors import DataError

    if not rw_codes:
        return {"error": "no_rw"}
    try:
        values = analysis.ispu_by_rw(conn, spec.start, spec.end, codes=rw_codes)
    except LayerNotLoadedError:
        return {"error": "not_loaded"}
    except DataError:
        with conn.cursor(row_factory=tuple_row) as cur:
            span = cur.execute("SELECT min(date), max(date) FROM ispu_readings").fetchone()
        return {"error": "no_period", "stored": tuple(str(d) for d in span)}
    mean = float(values["ispu_mean"].mean())
    days = tuple(pd.Timestamp(d).date().isoformat() for d in values.attrs["days"])
    return {"mean": mean, "category": categorise([mean])[0], "days": days}


def _row(table: pd.DataFrame) -> dict[str, Any]:
    if table.empty:
        return {}
    row = table.iloc[0].to_dict()
    return {k: None if _missing(v) else v for k, v in row.items()}


def _missing(value: Any) -> bool:
    """None or NaN (suppressed and undefined figures)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- rendering


#: key -> (Indonesian, English); ``{name}`` fields are filled by :class:`_Text`.
TEXT: dict[str, tuple[str, str]] = {
    "title": ("ringkasan penyelesaian laporan", "report resolution summary"),
    "code": ("kode", "code"),
    "as_of": ("data per", "data as of"),
    "all_reports": ("semua laporan", "all reports"),
    "created": ("laporan dibuat {lo} s.d. {hi}", "reports created {lo} to {hi}"),
    "start": ("awal", "the start"),
    "now": ("kini", "now"),
    "days": ("{n} hari", "{n} days"),
    "band_0_7": ("0-7 hari", "0-7 days"),
    "band_8_30": ("8-30 hari", "8-30 days"),
    "band_31_90": ("31-90 hari", "31-90 days"),
    "band_over_90": ("> 90 hari", "> 90 days"),
    "map_title": ("Peta RW: diselesaikan &le; {days} hari", "RW map: resolved within {days} days"),
    "map_label": ("Peta RW", "RW map"),
    "backlog_title": ("Laporan terbuka menurut umur", "Open reports by age"),
    "monthly_title": (
        "Laporan per bulan (12 bulan terakhir)",
        "Reports per month (last 12 months)",
    ),
    "too_few": (
        "Kurang dari {k} laporan publik untuk pilihan ini: angka tidak ditampilkan, agar "
        "pelapor tidak dapat dikenali.",
        "Fewer than {k} public reports for this choice: no figures are shown, so that no "
        "reporter can be recognised.",
    ),
    "reports": ("Laporan", "Reports"),
    "open_rejected": ("terbuka {open}, ditolak {rejected}", "open {open}, rejected {rejected}"),
    "within_days": ("Selesai &le; {days} hari", "Resolved within {days} days"),
    "city_of_old": (
        "kota: {city} &middot; dari {n} laporan &ge; {days} hari",
        "city: {city} &middot; of {n} reports &ge; {days} days old",
    ),
    "median": ("Median lama penyelesaian", "Median time to resolve"),
    "city_target_days": (
        "kota: {city} &middot; target {days} hari",
        "city: {city} &middot; target {days} days",
    ),
    "p90": ("90% selesai dalam", "90% resolved within"),
    "coordinated": ("Koordinasi &le; {hours} jam", "Coordinated within {hours} hours"),
    "city": ("kota: {city}", "city: {city}"),
    "resolved_all": ("Selesai (semua)", "Resolved (all)"),
    "city_target_share": (
        "kota: {city} &middot; target {target}%",
        "city: {city} &middot; target {target}%",
    ),
    "target": ("target", "target"),
    "unreliable": (
        "Sedikit laporan: angka belum andal (kurang dari ambang laporan).",
        "Few reports: the figures are not reliable yet (below the report threshold).",
    ),
    "no_boundaries": ("Tidak ada batas wilayah.", "No boundaries."),
    "no_data": ("tanpa data", "no data"),
    "no_data_p": ("Tidak ada data.", "No data."),
    "legend_unreliable": ("belum andal / tanpa data", "not reliable / no data"),
    "per_rw": ("Per RW", "By RW"),
    "open": ("Terbuka", "Open"),
    "rank": ("Peringkat*", "Rank*"),
    "outside_rw": ("(di luar RW)", "(outside every RW)"),
    "rank_note": (
        "* peringkat di antara RW kelurahan ini yang andal; baris abu-abu: belum andal.",
        "* rank among this kelurahan's reliable RWs; grey rows: not reliable yet.",
    ),
    "definitions": (
        "<b>Definisi.</b> Laporan ditolak dihitung terpisah dan tidak masuk ukuran kinerja. "
        "Selesai &le; {days} hari: dari laporan berumur minimal {days} hari, bagian yang "
        "selesai dalam {days} hari (tepat {days} hari 0 detik dihitung). Median dan 90%: "
        "penaksir Kaplan-Meier, laporan terbuka disensor pada waktu data. Angka andal bila "
        "minimal {min_reports} laporan tidak ditolak.",
        "<b>Definitions.</b> Rejected reports are counted apart and left out of every "
        "performance figure. Resolved within {days} days: of the reports at least {days} days "
        "old, the share resolved within {days} days (exactly {days} days 0 seconds counts). "
        "Median and 90%: Kaplan-Meier estimates, open reports censored at the data time. "
        "Figures are reliable from {min_reports} reports that were not rejected.",
    ),
    "public_only": (
        "<b>Laporan publik saja.</b> Baris (RW, bulan) dengan kurang dari {k} laporan tidak "
        "ditampilkan angkanya (&ldquo;-&rdquo;).",
        "<b>Public reports only.</b> Rows (RW, month) with fewer than {k} reports show no "
        "figures (&ldquo;-&rdquo;).",
    ),
    "made_by": ("Dibuat oleh petalapor {at}.", "Made by petalapor {at}."),
    "on_map": ("lihat di peta &rarr;", "see it on the map &rarr;"),
    "context_title": ("Konteks: JakWifi dan kualitas udara", "Context: JakWifi and air quality"),
    "wifi_label": ("Titik JakWifi", "JakWifi hotspots"),
    "wifi_note": (
        "{per_km2} per km&sup2; &middot; {share}% wilayah dalam 300 m dari titik",
        "{per_km2} per km&sup2; &middot; {share}% of the area within 300 m of one",
    ),
    "wifi_synthetic": ("data sintetis, bukan lokasi nyata", "synthetic data, not real places"),
    "wifi_none": ("JakWifi belum dimuat.", "JakWifi is not loaded."),
    "ispu_label": ("ISPU rata-rata", "Mean ISPU"),
    "ispu_note": (
        "di pusat RW-nya (IDW dari stasiun) &middot; {lo} s.d. {hi}",
        "at its RW centres (IDW from the stations) &middot; {lo} to {hi}",
    ),
    "ispu_not_loaded": ("ISPU belum dimuat.", "ISPU is not loaded."),
    "ispu_no_period": (
        "Tidak ada data ISPU untuk periode ini (tersimpan: {lo} s.d. {hi}).",
        "No ISPU data for this period (stored: {lo} to {hi}).",
    ),
    "ispu_no_rw": ("Tanpa poligon RW: ISPU tidak dihitung.", "No RW polygons: no ISPU here."),
}
#: ISPU category names in English (``layers.ispu.CATEGORIES`` holds the Indonesian ones).
ISPU_EN = {
    "BAIK": "Good",
    "SEDANG": "Moderate",
    "TIDAK SEHAT": "Unhealthy",
    "SANGAT TIDAK SEHAT": "Very unhealthy",
    "BERBAHAYA": "Hazardous",
}
#: Backlog bands of :data:`gis.metrics.BACKLOG_BANDS`, in order.
BAND_KEYS = ("band_0_7", "band_8_30", "band_31_90", "band_over_90")


class _Text:
    """The page's strings in one language (``id`` or ``en``)."""

    def __init__(self, lang: str = "id") -> None:
        if lang not in ("id", "en"):
            raise ValueError(f"lang must be id or en, got {lang!r}")
        self.lang = lang
        self.index = 0 if lang == "id" else 1

    def __call__(self, key: str, **values: Any) -> str:
        text = TEXT[key][self.index]
        return text.format(**values) if values else text

    def days(self, value: Any) -> str:
        return "-" if _missing(value) else self("days", n=f"{float(value):.1f}")


def render_report(data: dict[str, Any], lang: str = "id", map_url: str | None = None) -> str:
    """The HTML page (inline SVG map and charts, no external resources), in ``lang``.

    ``map_url``: a link to the kelurahan on the planner map (the web page; a file sent
    by e-mail has none).
    """
    t = _Text(lang)
    link = f" &middot; <a href='{_e(map_url)}'>{t('on_map')}</a>" if map_url else ""
    names, kel, spec = data["names"], data["kelurahan"], data["spec"]
    title = f"Kelurahan {names['kelurahan']}"
    wib = dt.timezone(dt.timedelta(hours=7))
    as_of = spec.as_of.astimezone(wib).strftime("%d-%m-%Y %H:%M WIB")
    period = _period_text(spec, wib, t)
    parts = [
        "<!doctype html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} - {t('title')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<p class='sub'>Kecamatan {_e(names.get('kecamatan') or '-')}, "
        f"{_e(names.get('kota') or '-')} &middot; {t('code')} {_e(data['code'])} &middot; "
        f"{t('as_of')} {as_of} &middot; {period}{link}</p></header>",
        *(_notice(data, t) if kel.get("suppressed") else _body(data, t)),
        _footer(spec, data["generated"], t, data.get("k_anonymity")),
        "</body></html>",
    ]
    return "\n".join(parts)


def _body(data: dict[str, Any], t: _Text) -> list[str]:
    """Figures, RW map, backlog and monthly charts, RW table."""
    kel, city = data["kelurahan"], data["city"]
    return [
        _kpis(kel, city, t),
        "<div class='row'>",
        f"<section><h2>{t('map_title', days=RESOLUTION_TARGET_DAYS)}</h2>",
        map_svg(data["shapes"], data["rws"], text=t),
        _legend(t),
        "</section>",
        f"<section><h2>{t('backlog_title')}</h2>",
        bar_svg(
            [int(kel.get(b) or 0) for b, _, _ in BACKLOG_BANDS],
            [t(k) for k in BAND_KEYS],
            colour="#c0392b",
            text=t,
        ),
        f"<h2>{t('monthly_title')}</h2>",
        bar_svg(
            [None if _missing(v) else int(v) for v in data["monthly"]["reports"]],
            [f"{p[5:7]}/{p[2:4]}" for p in data["monthly"]["period"]],
            colour="#2c7fb8",
            text=t,
        ),
        "</section></div>",
        _context(data, t),
        _rw_table(data["rws"], data["shapes"], t),
    ]


def _context(data: dict[str, Any], t: _Text) -> str:
    """JakWifi coverage and mean ISPU of the kelurahan, as two cards."""
    from layers.ispu import CATEGORIES

    wifi, ispu = data.get("wifi"), data.get("ispu") or {}
    if wifi is None:
        cards = [(t("wifi_label"), "-", t("wifi_none"))]
    else:
        note = t(
            "wifi_note",
            per_km2="-" if _missing(wifi["per_km2"]) else f"{wifi['per_km2']:.1f}",
            share=f"{100 * wifi['share_300m']:.0f}",
        )
        if wifi["synthetic"]:
            note += f" &middot; <b>{t('wifi_synthetic')}</b>"
        cards = [(t("wifi_label"), str(wifi["n_hotspots"]), note)]
    if "mean" in ispu:
        labels = {c.code: c.label for c in CATEGORIES} if t.lang == "id" else ISPU_EN
        lo, hi = ispu["days"]
        value = f"{ispu['mean']:.0f} <small>{_e(labels.get(ispu['category'], ''))}</small>"
        cards.append((t("ispu_label"), value, t("ispu_note", lo=lo, hi=hi)))
    else:
        error = ispu.get("error", "not_loaded")
        lo, hi = ispu.get("stored", ("-", "-"))
        cards.append((t("ispu_label"), "-", t(f"ispu_{error}", lo=lo, hi=hi)))
    body = "".join(
        f"<div class='kpi'><div class='label'>{label}</div><div class='value'>{value}</div>"
        f"<div class='note'>{note}</div></div>"
        for label, value, note in cards
    )
    return f"<section><h2>{t('context_title')}</h2><div class='kpis'>{body}</div></section>"


def _notice(data: dict[str, Any], t: _Text) -> list[str]:
    """A kelurahan with too few public reports: no figures at all."""
    return [f"<p class='warn'>{t('too_few', k=data.get('k_anonymity'))}</p>"]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _pct(value: Any, decimals: int = 0) -> str:
    return "-" if _missing(value) else f"{100 * float(value):.{decimals}f}%"


def _count(value: Any) -> str:
    return "-" if _missing(value) else str(int(value))


def _period_text(spec: MetricSpec, tz: dt.tzinfo, t: _Text) -> str:
    if spec.start is None and spec.end is None:
        return t("all_reports")
    lo = spec.start.astimezone(tz).date().isoformat() if spec.start else t("start")
    last = spec.end - dt.timedelta(microseconds=1) if spec.end else None  # end is exclusive
    hi = last.astimezone(tz).date().isoformat() if last else t("now")
    return t("created", lo=lo, hi=hi)


def _kpis(kel: dict[str, Any], city: dict[str, Any], t: _Text) -> str:
    median = kel.get("median_days")
    resolved = kel.get("resolved_share")
    p90 = kel.get("p90_days")
    days = RESOLUTION_TARGET_DAYS
    cards = [
        (
            t("reports"),
            f"{int(kel.get('reports') or 0)}",
            t(
                "open_rejected",
                open=int(kel.get("open") or 0),
                rejected=int(kel.get("rejected") or 0),
            ),
            None,
        ),
        (
            t("within_days", days=days),
            _pct(kel.get("resolved_7d_share")),
            t(
                "city_of_old",
                city=_pct(city.get("resolved_7d_share")),
                n=int(kel.get("resolved_7d_eligible") or 0),
                days=days,
            ),
            None,
        ),
        (
            t("median"),
            t.days(median),
            t("city_target_days", city=t.days(city.get("median_days")), days=days),
            None if median is None else median <= days,
        ),
        (
            t("p90"),
            t.days(p90),
            t("city_target_days", city=t.days(city.get("p90_days")), days=days),
            None if p90 is None else p90 <= days,
        ),
        (
            t("coordinated", hours=COORDINATION_TARGET_HOURS),
            _pct(kel.get("coordinated_6h_share")),
            t("city", city=_pct(city.get("coordinated_6h_share"))),
            None,
        ),
        (
            t("resolved_all"),
            _pct(resolved, 1),
            t(
                "city_target_share",
                city=_pct(city.get("resolved_share"), 1),
                target=f"{RESOLVED_TARGET_SHARE * 100:.0f}",
            ),
            None if resolved is None else resolved >= RESOLVED_TARGET_SHARE,
        ),
    ]
    html_cards = []
    for label, value, note, met in cards:
        mark = (
            ""
            if met is None
            else f"<span class='{'ok' if met else 'no'}'>{'&#10003;' if met else '&#10007;'} "
            f"{t('target')}</span>"
        )
        html_cards.append(
            f"<div class='kpi'><div class='label'>{label}</div>"
            f"<div class='value'>{value} {mark}</div>"
            f"<div class='note'>{note}</div></div>"
        )
    warn = "" if kel.get("reliable") else f"<p class='warn'>{t('unreliable')}</p>"
    return "<section class='kpis'>" + "".join(html_cards) + "</section>" + warn


def share_colour(value: Any, reliable: bool) -> str:
    """Fill of a RW on the map."""
    if _missing(value) or not reliable:
        return UNRELIABLE_COLOUR
    return next(colour for upper, colour in SHARE_COLOURS if value < upper)


def map_svg(
    shapes: gpd.GeoDataFrame,
    rws: pd.DataFrame,
    width: int = 520,
    height: int = 420,
    *,
    text: _Text | None = None,
) -> str:
    """Inline SVG of the polygons coloured by ``resolved_7d_share`` (grey: unreliable / no data)."""
    t = text or _Text()
    if shapes.empty:
        return f"<p>{t('no_boundaries')}</p>"
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
        tip = f"{name}: {t('no_data') if _missing(share) else _pct(share)}"
        paths.append(
            f'<path d="{" ".join(d)}" fill="{fill}" fill-rule="evenodd">'
            f"<title>{_e(tip)}</title></path>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{t("map_label")}" class="map">'
        f'<g stroke="#555" stroke-width="0.6">{"".join(paths)}</g></svg>'
    )


def _legend(t: _Text) -> str:
    lower = 0.0
    items = []
    for upper, colour in SHARE_COLOURS:
        items.append(
            f"<span><i style='background:{colour}'></i>"
            f"{lower * 100:.0f}-{min(upper, 1) * 100:.0f}%</span>"
        )
        lower = upper
    items.append(
        f"<span><i style='background:{UNRELIABLE_COLOUR}'></i>{t('legend_unreliable')}</span>"
    )
    return "<div class='legend'>" + "".join(items) + "</div>"


def bar_svg(
    values: list[int | None],
    labels: Any,
    *,
    colour: str,
    width: int = 420,
    height: int = 170,
    text: _Text | None = None,
) -> str:
    """Inline SVG bar chart with value labels (None: a hidden figure, drawn as "-")."""
    labels = list(labels)
    if not values:
        return f"<p>{(text or _Text())('no_data_p')}</p>"
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


def _rw_table(rws: pd.DataFrame, shapes: gpd.GeoDataFrame, t: _Text) -> str:
    if rws.empty:
        return ""
    names = dict(zip(shapes["code"], shapes["name"], strict=True))
    rows = []
    for r in rws.itertuples(index=False):
        name = names.get(r.code, r.code or t("outside_rw"))
        rows.append(
            f"<tr{'' if r.reliable else ' class=dim'}><td>{_e(name)}</td>"
            f"<td>{_count(r.reports)}</td><td>{_count(r.open)}</td>"
            f"<td>{_pct(r.resolved_7d_share)}</td><td>{t.days(r.median_days)}</td>"
            f"<td>{'' if _missing(r.rank) else int(r.rank)}</td></tr>"
        )
    return (
        f"<section><h2>{t('per_rw')}</h2><table><thead><tr><th>RW</th><th>{t('reports')}</th>"
        f"<th>{t('open')}</th><th>{t('within_days', days=RESOLUTION_TARGET_DAYS)}</th>"
        f"<th>Median</th><th>{t('rank')}</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p class='note'>{t('rank_note')}</p></section>"
    )


def _footer(
    spec: MetricSpec, generated: dt.datetime, t: _Text, k_anonymity: int | None = None
) -> str:
    public = f"<p>{t('public_only', k=k_anonymity)}</p>" if k_anonymity else ""
    return (
        f"<footer><p>{t('definitions', days=RESOLUTION_TARGET_DAYS, min_reports=spec.min_reports)}"
        f"</p>{public}<p>{t('made_by', at=generated.strftime('%Y-%m-%d %H:%M UTC'))}</p>"
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
