"""The map pages, built with folium: planner map, OPD view, public embed, embed builder.

Every script and stylesheet is served by petalapor itself (``/static/vendor/...`` from
``web_map/node_modules``, ``/static/app/...`` from ``web_map/static``): folium's
default CDN links are replaced, and the pages hold no URL to another host.  A web
basemap is only added when one is configured, as a layer that is off at start.

Layers come from the tile service by URL contract (``/tiles/{layer}/{z}/{x}/{y}.mvt``,
``/heatmap/{z}/{x}/{y}.png``, a raster template for the ISPU surface); each is handed
to ``PL.register`` in ``static/petalapor.js``, which adds filters, legend and popups.
A page only draws the layers the app actually serves (:class:`PageContext.available`),
so a missing service never shows up as a failed request in the browser.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode

from petalapor.catalog import (
    COORDINATION_TARGET_HOURS,
    RESOLUTION_TARGET_DAYS,
    RESOLVED_TARGET_SHARE,
)
from web_map.i18n import strings, t

#: Leaflet and its plugins, as served from node_modules (see api.routes.pages.VENDOR_FILES).
VENDOR = "/static/vendor"
APP = "/static/app"
LEAFLET_JS = [("leaflet", f"{VENDOR}/leaflet/dist/leaflet.js")]
LEAFLET_CSS = [("leaflet_css", f"{VENDOR}/leaflet/dist/leaflet.css")]
VECTORGRID_JS = [
    ("vectorGrid", f"{VENDOR}/leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js")
]
MARKERCLUSTER_JS = [
    ("markercluster", f"{VENDOR}/leaflet.markercluster/dist/leaflet.markercluster.js")
]
MARKERCLUSTER_CSS = [
    ("markercluster_css", f"{VENDOR}/leaflet.markercluster/dist/MarkerCluster.css"),
    ("markercluster_default_css", f"{VENDOR}/leaflet.markercluster/dist/MarkerCluster.Default.css"),
]
APP_JS = [("petalapor_js", f"{APP}/petalapor.js")]
APP_CSS = [("petalapor_css", f"{APP}/petalapor.css")]

JAKARTA_CENTER = (-6.2, 106.83)
#: Mainland Jakarta, south-west and north-east corners (lat, lon).
JAKARTA_BOUNDS = ((-6.38, 106.68), (-6.08, 106.98))

TILE_LAYERS: tuple[str, ...] = (
    "hexes",
    "rw",
    "kelurahan",
    "reports",
    "jakwifi",
    "ispu_stations",
    "hotspots",
)
#: Layers that hold only aggregates (what an embed may show).
AGGREGATE_LAYERS: tuple[str, ...] = ("hexes", "rw", "kelurahan", "heatmap")
METRICS: tuple[str, ...] = ("count", "resolved_share", "median_days", "within_7d_share")
FILTER_KEYS: tuple[str, ...] = ("from", "to", "category", "opd", "status")


@dataclass
class PageContext:
    """What a page needs to know about the running service.

    Parameters
    ----------
    lang
        ``id`` or ``en``.
    available
        Layers the app serves: tile layer names plus ``heatmap`` and ``ispu_surface``.
    catalog
        ``categories``, ``opds`` and ``statuses`` as ``[code, name]`` lists.
    urls
        Optional service URLs: ``ispu_surface`` (raster template), ``summary_<layer>``
        (popup link templates with ``{code}``), ``worst_rw`` (analysis JSON),
        ``hotspots`` etc.
    basemap
        A web basemap template, added off by default; None keeps the page offline.
    path
        The page's own path and query (for the language switch).
    """

    lang: str = "id"
    available: frozenset[str] = frozenset()
    catalog: Mapping[str, Sequence[Sequence[str]]] = field(default_factory=dict)
    urls: Mapping[str, str] = field(default_factory=dict)
    basemap: tuple[str, str] | None = None
    #: ``{layer: (minzoom, maxzoom)}`` of the tile layers (tiles are only requested in range).
    zooms: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    path: str = "/map"
    query: Mapping[str, str] = field(default_factory=dict)
    #: ``(level, code, label)`` of the kota, kecamatan and kelurahan, for the place search.
    places: Sequence[Sequence[str]] = ()

    def lang_switch(self) -> str:
        """This page's URL in the other language."""
        params = dict(self.query)
        params["lang"] = "en" if self.lang == "id" else "id"
        return f"{self.path}?{urlencode(params)}"


# --------------------------------------------------------------------------- folium pieces


def _folium():
    """folium, with an install hint when it is missing."""
    try:
        import folium
    except ImportError as exc:  # pragma: no cover - folium is a dependency
        raise ImportError("the map pages need folium: pip install folium") from exc
    return folium


def _local_map(ctx: PageContext, **kwargs: Any):
    """A folium Map without web tiles, whose Leaflet comes from /static/vendor."""
    folium = _folium()
    m = folium.Map(
        location=kwargs.pop("location", JAKARTA_CENTER),
        zoom_start=kwargs.pop("zoom_start", 11),
        tiles=None,
        control_scale=True,
        **kwargs,
    )
    # folium hands min_zoom/max_zoom to its default tile layer only; the map needs them itself
    # (leaflet.markercluster refuses a map without maxZoom)
    m.options.update(min_zoom=9, max_zoom=18)
    # instance attributes: the class lists (CDN links) stay untouched
    m.default_js = list(LEAFLET_JS)
    m.default_css = list(LEAFLET_CSS)
    figure = m.get_root()
    figure.title = ""
    return m


def _assets(extra_js: Sequence[tuple[str, str]] = (), extra_css: Sequence[tuple[str, str]] = ()):
    """A folium element that links petalapor's JS/CSS and runs ``PL.init`` last."""
    from branca.element import MacroElement
    from folium.elements import JSCSSMixin
    from folium.template import Template

    class Assets(JSCSSMixin, MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) -%}
            PL.init({{ this._parent.get_name() }}, {{ this.config|tojson }});
            {{ this.after }}
            {%- endmacro %}
            """
        )

        def __init__(self, config: dict, after: str = "") -> None:
            super().__init__()
            self._name = "PetalaporAssets"
            self.config = config
            self.after = after
            self.default_js = [*extra_js, *APP_JS]
            self.default_css = [*extra_css, *APP_CSS]

    return Assets


def _register(key: str, layer: Any, meta: dict):
    """A folium element that hands a layer to ``PL.register`` (after the layer exists)."""
    from branca.element import MacroElement
    from folium.template import Template

    class Register(MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) -%}
            PL.register({{ this.key|tojson }}, {{ this.layer.get_name() }}, {{ this.meta|tojson }});
            {%- endmacro %}
            """
        )

        def __init__(self) -> None:
            super().__init__()
            self._name = "PetalaporRegister"
            self.key, self.layer, self.meta = key, layer, meta

    return Register()


def _vector_layer(
    m: Any,
    key: str,
    url: str,
    *,
    name: str,
    kind: str,
    show: bool,
    filters: Mapping[str, str],
    style_key: str | None = None,
    filterable: bool = True,
    interactive: bool = True,
    credentials: str = "same-origin",
    extra: str = "",
    zooms: tuple[int, int] | None = None,
) -> Any:
    """A Leaflet.VectorGrid protobuf layer on local tiles, registered with ``PL``."""
    from folium.plugins import VectorGridProtobuf

    class LocalVectorGrid(VectorGridProtobuf):
        default_js = list(VECTORGRID_JS)

    lo, hi = zooms or (0, 16)
    options = (
        "{"
        f'"vectorTileLayerStyles": PL.styles({json.dumps(style_key or key)}), '
        '"rendererFactory": L.canvas.tile, '
        f'"interactive": {json.dumps(interactive)}, '
        f'"minZoom": {int(lo)}, "maxNativeZoom": {int(min(hi, 16))}, "maxZoom": 18, '
        f'"fetchOptions": {{"credentials": {json.dumps(credentials)}}}, '
        f'"attribution": {json.dumps("petalapor")}'
        "}"
    )
    layer = LocalVectorGrid(
        _with_query(url, filters, extra), name=name, options=options, show=show, overlay=True
    )
    layer.add_to(m)
    meta = {
        "kind": kind,
        "base": url,
        "filterable": filterable,
        "interactive": interactive,
        "extra": extra,
    }
    m.add_child(_register(key, layer, meta))
    return layer


def _raster_layer(
    m: Any,
    key: str,
    url: str,
    *,
    name: str,
    show: bool,
    filters: Mapping[str, str],
    filterable: bool,
    opacity: float = 0.75,
    zooms: tuple[int, int] | None = None,
) -> Any:
    """A PNG tile layer on local tiles, registered with ``PL``; only requested within ``zooms``."""
    folium = _folium()
    lo, hi = zooms or (0, 16)
    layer = folium.raster_layers.TileLayer(
        tiles=_with_query(url, filters),
        attr="petalapor",
        name=name,
        overlay=True,
        show=show,
        opacity=opacity,
        min_zoom=max(lo, 1),
        max_native_zoom=min(hi, 18),
        max_zoom=18,
    )
    layer.add_to(m)
    m.add_child(_register(key, layer, {"kind": "raster", "base": url, "filterable": filterable}))
    return layer


def _with_query(url: str, filters: Mapping[str, str], extra: str = "") -> str:
    """``url`` with the non-empty filters (and ``extra``) as its query string."""
    query = urlencode({k: v for k, v in filters.items() if v})
    query = "&".join(q for q in (query, extra) if q)
    return f"{url}?{query}" if query else url


def _vector(m: Any, ctx: PageContext, key: str, layer: str | None = None, **kwargs: Any) -> Any:
    """:func:`_vector_layer` for tile layer ``layer`` (default ``key``) with its zoom range."""
    layer = layer or key
    return _vector_layer(m, key, _tile_url(layer), zooms=ctx.zooms.get(layer), **kwargs)


def _vectors(
    m: Any, ctx: PageContext, filters: Mapping[str, str], specs: list[tuple[str, str, bool]]
) -> None:
    """Add each available layer of ``specs`` ``(key, kind, shown)``, named in the page language.

    Report layers follow the page's filters; point layers (JakWifi, ISPU
    stations) are context and take none.
    """
    for key, kind, show in specs:
        if key not in ctx.available:
            continue
        filterable = kind != "points"
        _vector(
            m,
            ctx,
            key,
            name=t(f"layer_{key}", ctx.lang),
            kind=kind,
            show=show,
            filters=filters if filterable else {},
            filterable=filterable,
        )


def _tile_url(layer: str) -> str:
    return f"/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt"


def _config(ctx: PageContext, page: str, **extra: Any) -> dict:
    """The JSON handed to ``PL.init``."""
    summary = {
        k.removeprefix("summary_"): v for k, v in ctx.urls.items() if k.startswith("summary_")
    }
    config = {
        "page": page,
        "lang": ctx.lang,
        "t": strings(ctx.lang),
        "catalog": {k: [list(x) for x in v] for k, v in ctx.catalog.items()},
        "summary": summary,
        "langSwitch": ctx.lang_switch(),
        "controls": {"filters": True, "legend": True},
        "metricSwitch": True,
        "metric": "count",
        "filters": {},
        "places": [list(p) for p in ctx.places],
        "sourcesUrl": ctx.urls.get("sources"),
    }
    config.update(extra)
    return config


def _kpis(ctx: PageContext, public: bool) -> dict[str, Any]:
    """The summary panel: its data URL and the published targets.

    ``public``: the public figures (the request carries no session); otherwise the
    caller's (an OPD session sees its own hidden reports too).
    """
    return {
        "url": ctx.urls.get("resolution_summary"),
        "public": public,
        "resolvedTarget": RESOLVED_TARGET_SHARE,
        "days": RESOLUTION_TARGET_DAYS,
        "hours": COORDINATION_TARGET_HOURS,
    }


def _add_outline(m: Any, ctx: PageContext) -> None:
    """Unfiltered kelurahan outlines: they give the map its shape when no basemap is used."""
    if "kelurahan" not in ctx.available:
        return
    _vector(
        m,
        ctx,
        "outline",
        "kelurahan",
        name=t("layer_outline", ctx.lang),
        kind="outline",
        show=True,
        filters={},
        filterable=False,
        interactive=False,
    )


def _add_basemap(m: Any, ctx: PageContext) -> None:
    """The configured web basemap, off at start (never added when not configured)."""
    if ctx.basemap is None:
        return
    folium = _folium()
    url, attribution = ctx.basemap
    folium.raster_layers.TileLayer(
        tiles=url, attr=attribution, name=t("layer_basemap", ctx.lang), overlay=True, show=False
    ).add_to(m)


FAVICON = f'<link rel="icon" type="image/svg+xml" href="{APP}/favicon.svg">'


def _render(m: Any, title: str, lang: str) -> str:
    """The page's HTML, with a title, an icon (no /favicon.ico request) and its language."""
    html = m.get_root().render()
    html = html.replace("<html>", f'<html lang="{escape(lang)}">', 1)
    return html.replace("<head>", f"<head>\n    <title>{escape(title)}</title>\n    {FAVICON}", 1)


# --------------------------------------------------------------------------- pages


def map_page(ctx: PageContext) -> str:
    """The planner map ``/map``: every layer, a layer control, filters, metric switch, legend.

    Examples
    --------
    >>> html = map_page(PageContext(available=frozenset({"hexes"})))  # doctest: +SKIP
    """
    folium = _folium()
    lang = ctx.lang
    m = _local_map(ctx)
    _add_basemap(m, ctx)
    filters = {k: ctx.query.get(k, "") for k in FILTER_KEYS}
    have = ctx.available
    _add_outline(m, ctx)
    _vectors(
        m,
        ctx,
        filters,
        [
            ("hexes", "choropleth", True),
            ("rw", "choropleth", False),
            ("kelurahan", "choropleth", False),
        ],
    )
    if "heatmap" in have:
        _raster_layer(
            m,
            "heatmap",
            "/heatmap/{z}/{x}/{y}.png",
            name=t("layer_heatmap", lang),
            show=False,
            filters=filters,
            filterable=True,
            zooms=ctx.zooms.get("heatmap"),
        )
    _vectors(m, ctx, filters, [("hotspots", "hotspots", False)])
    if "ispu_surface" in have and ctx.urls.get("ispu_surface"):
        _raster_layer(
            m,
            "ispu_surface",
            ctx.urls["ispu_surface"],
            name=t("layer_ispu_surface", lang),
            show=False,
            filters={},
            filterable=False,
            opacity=0.6,
            zooms=ctx.zooms.get("ispu_surface"),
        )
    _vectors(m, ctx, filters, [("jakwifi", "points", False), ("ispu_stations", "points", False)])
    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    metric = ctx.query.get("metric") or "count"
    config = _config(
        ctx,
        "map",
        filters=filters,
        metric=metric,
        bounds=JAKARTA_BOUNDS,
        kpis=_kpis(ctx, public=True),
        exportUrl=ctx.urls.get("reports_export"),
        place=["kelurahan", ctx.query["kelurahan"]] if ctx.query.get("kelurahan") else None,
    )
    m.add_child(_assets()(config))
    return _render(m, t("title_map", lang), lang)


def opd_page(ctx: PageContext, opd: str | None, opd_name: str | None, role: str) -> str:
    """The OPD view ``/opd``: the OPD's reports (clustered), its hotspots, its worst RWs.

    ``opd`` is the key's OPD (None for an admin looking at every OPD).
    """
    folium = _folium()
    lang = ctx.lang
    m = _local_map(ctx, width="100%", height="100%")
    _add_basemap(m, ctx)
    filters = {k: ctx.query.get(k, "") for k in FILTER_KEYS}
    if opd:
        filters["opd"] = opd
    _add_outline(m, ctx)
    _vectors(m, ctx, filters, [("hexes", "choropleth", False), ("hotspots", "hotspots", True)])
    # the reports themselves, clustered by leaflet.markercluster (filled by PL.opdReports)
    cluster = folium.FeatureGroup(name=t("layer_reports", lang), overlay=True, show=True)
    cluster.add_to(m)
    m.add_child(_register("reports", cluster, {"kind": "points", "base": "", "filterable": False}))
    folium.LayerControl(collapsed=True, position="topright").add_to(m)
    config = _config(
        ctx,
        "opd",
        filters=filters,
        fixedOpd=opd,
        bounds=JAKARTA_BOUNDS,
        metricSwitch=False,
        reportsUrl=ctx.urls.get("reports", ""),
        worstUrl=ctx.urls.get("worst_rw", ""),
        exportUrl=ctx.urls.get("reports_export"),
        kpis=_kpis(ctx, public=False),
    )
    after = "PL.opdPage(%s);" % json.dumps({"table": "pl-worst", "role": role})
    m.add_child(_assets(MARKERCLUSTER_JS, MARKERCLUSTER_CSS)(config, after))
    map_html = _render(m, t("title_opd", lang), lang)
    side = _opd_side(ctx, opd, opd_name, role)
    return _wrap_side(map_html, side, m.get_name())


def _opd_side(ctx: PageContext, opd: str | None, opd_name: str | None, role: str) -> str:
    """The side panel of the OPD view: who, the worst-RW table and a logout link."""
    lang = ctx.lang
    who = f"{escape(opd)} – {escape(opd_name or '')}" if opd else escape(role)
    return (
        f'<aside class="pl-side" id="pl-side"><h1>{escape(t("title_opd", lang))}</h1>'
        f'<div class="pl-who" id="pl-who" data-opd="{escape(opd or "")}">{who} · '
        f'<a href="/opd/logout">{escape(t("logout", lang))}</a> · '
        f'<a href="{escape(ctx.lang_switch())}">{escape(t("switch_lang", lang))}</a></div>'
        f"<h2>{escape(t('worst_rw', lang))}</h2>"
        f'<nav><button type="button" id="pl-sort-backlog">{escape(t("by_backlog", lang))}</button>'
        f'<button type="button" id="pl-sort-days">{escape(t("by_days", lang))}</button></nav>'
        f'<div id="pl-worst">{escape(t("loading", lang))}</div></aside>'
    )


def _wrap_side(html: str, side: str, map_name: str) -> str:
    """Put the folium map and a side panel next to each other."""
    div = f'<div class="folium-map" id="{map_name}" ></div>'
    if div not in html:  # pragma: no cover - folium changed its markup
        raise RuntimeError("unexpected folium markup: map div not found")
    return html.replace(
        div, f'<div class="pl-opd-layout"><div class="pl-map-wrap">{div}</div>{side}</div>', 1
    )


@dataclass(frozen=True)
class EmbedOptions:
    """The checked options of ``/embed`` (see :func:`api.routes.pages.parse_embed`)."""

    layer: str = "hexes"
    kelurahan: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    category: str | None = None
    period: str = "365d"
    date_from: str | None = None
    date_to: str | None = None
    metric: str = "count"
    lang: str = "id"


def embed_page(
    ctx: PageContext, opts: EmbedOptions, bounds: tuple[tuple[float, float], tuple[float, float]]
) -> str:
    """The public embed ``/embed``: one aggregated layer, no controls but a legend.

    Tiles are requested without credentials, so an embed always shows what the
    public sees (k-anonymised aggregates), whoever opens it.
    """
    lang = ctx.lang
    m = _local_map(ctx, zoom_control=True)
    filters = {
        "from": opts.date_from or "",
        "to": opts.date_to or "",
        "category": opts.category or "",
    }
    if "kelurahan" in ctx.available:
        _vector(
            m,
            ctx,
            "outline",
            "kelurahan",
            name=t("layer_outline", lang),
            kind="outline",
            show=True,
            filters={},
            filterable=False,
            interactive=False,
            credentials="omit",
        )
    if opts.layer == "heatmap":
        if "heatmap" in ctx.available:
            _raster_layer(
                m,
                "heatmap",
                "/heatmap/{z}/{x}/{y}.png",
                name=t("layer_heatmap", lang),
                show=True,
                filters=filters,
                filterable=False,
                zooms=ctx.zooms.get("heatmap"),
            )
    elif opts.layer in ctx.available:
        _vector(
            m,
            ctx,
            opts.layer,
            name=t(f"layer_{opts.layer}", lang),
            kind="choropleth",
            show=True,
            filters=filters,
            filterable=False,
            credentials="omit",
        )
    config = _config(
        ctx,
        "embed",
        metric=opts.metric,
        bounds=bounds,
        metricSwitch=False,
        langSwitch=None,
        summary={},
        controls={"filters": False, "legend": True},
        filters=filters,
    )
    caption = json.dumps(t("source", lang))
    after = (
        "(function(){var c=L.control({position:'bottomleft'});c.onAdd=function(){"
        "var d=L.DomUtil.create('div','pl-panel pl-caption');d.textContent=%s;return d;};"
        "c.addTo(PL.map);})();" % caption
    )
    m.add_child(_assets()(config, after))
    return _render(m, t("title_embed", lang), lang)


def _page(title: str, lang: str, body: str, scripts: Sequence[str] = ()) -> str:
    """A small non-map HTML page using petalapor's stylesheet."""
    tags = "".join(f'<script src="{escape(s)}"></script>' for s in scripts)
    return (
        f'<!DOCTYPE html><html lang="{escape(lang)}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>{FAVICON}"
        f'<link rel="stylesheet" href="{APP}/petalapor.css">{tags}</head>'
        f'<body><main class="pl-page">{body}</main></body></html>'
    )


def login_page(lang: str, minutes: int, next_url: str = "/opd", error: bool = False) -> str:
    """The OPD login form (the key is exchanged for a session cookie)."""
    err = f'<p class="pl-error" role="alert">{escape(t("login_failed", lang))}</p>' if error else ""
    body = (
        f"<h1>{escape(t('title_login', lang))}</h1>{err}"
        f"<p>{escape(t('login_hint', lang, minutes=minutes))}</p>"
        f'<form method="post" action="/opd/login" id="pl-login">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<input type="hidden" name="lang" value="{escape(lang)}">'
        f"<label>{escape(t('api_key', lang))}<br>"
        f'<input type="password" name="key" autocomplete="off" required></label>'
        f'<button type="submit">{escape(t("login", lang))}</button></form>'
    )
    return _page(t("title_login", lang), lang, body)


@dataclass(frozen=True)
class SourceInfo:
    """What ``/sources`` lists: the stored data and the software the pages load."""

    reports: int = 0
    demo_reports: int = 0
    boundaries: Mapping[str, str] = field(default_factory=dict)  # text, licence, imported
    #: ``(title, attribution, licence, synthetic)`` per context layer.
    layers: Sequence[tuple[str, str, str, bool]] = ()
    #: ``(name, version, licence)`` of the npm packages served.
    software: Sequence[tuple[str, str, str]] = ()


def sources_page(lang: str, info: SourceInfo) -> str:
    """``/sources``: where each layer's data comes from and on what terms (id/en)."""

    def section(title: str, body: str) -> str:
        return f"<section><h2>{escape(title)}</h2>{body}</section>"

    def count(n: int) -> str:
        return f"{n:,}".replace(",", "." if lang == "id" else ",")

    reports = escape(t("sources_reports_text", lang, n=count(info.reports)))
    if info.demo_reports:
        reports += " <b>" + escape(t("sources_demo", lang, n=count(info.demo_reports))) + "</b>"
    bounds = info.boundaries
    boundary_text = escape(bounds.get("text") or "-")
    if bounds.get("licence"):
        boundary_text += f"<br>{escape(t('licence', lang))}: {escape(bounds['licence'])}"
    if bounds.get("imported"):
        boundary_text += f"<br>{escape(t('sources_imported', lang, at=bounds['imported']))}"
    rows = "".join(
        f"<tr><td>{escape(title)}"
        + (f" <b>({escape(t('synthetic', lang))})</b>" if synthetic else "")
        + f"</td><td>{escape(attribution)}</td><td>{escape(licence)}</td></tr>"
        for title, attribution, licence, synthetic in info.layers
    )
    head = (
        f"<tr><th>{escape(t('layer', lang))}</th><th>{escape(t('source_col', lang))}</th>"
        f"<th>{escape(t('licence', lang))}</th></tr>"
    )
    software = "".join(
        f"<li>{escape(name)} {escape(version)} ({escape(licence)})</li>"
        for name, version, licence in info.software
    )
    other = "id" if lang == "en" else "en"
    map_url = "/map?lang=en" if lang == "en" else "/map"
    body = (
        f"<h1>{escape(t('sources', lang))}</h1>"
        f'<p><a href="?lang={other}">{escape(t("switch_lang", lang))}</a> &middot; '
        f'<a href="{map_url}">{escape(t("title_map", lang))}</a></p>'
        f"<p>{escape(t('sources_intro', lang))}</p>"
        + section(t("sources_reports", lang), f"<p>{reports}</p>")
        + section(t("sources_boundaries", lang), f"<p>{boundary_text}</p>")
        + section(
            t("sources_layers", lang),
            f'<table class="pl-table pl-sources"><thead>{head}</thead>'
            f"<tbody>{rows}</tbody></table>",
        )
        + section(t("sources_software", lang), f"<ul>{software}</ul>")
    )
    return _page(t("sources", lang), lang, body)


def builder_page(ctx: PageContext, areas: Sequence[tuple[str, str]] = ()) -> str:
    """``/embed/builder``: pick options, preview, copy the ``<iframe>`` snippet.

    ``areas``: ``(code, label)`` of every kelurahan, offered by name in the
    *area* field (a ``<datalist>``); the field also takes a code or a bbox.
    """
    lang = ctx.lang

    def options(
        name: str, items: Sequence[tuple[str, str]], blank: bool = False, selected: str = ""
    ) -> str:
        opts = [f'<option value="">{escape(t("all", lang))}</option>'] if blank else []
        opts += [
            f'<option value="{escape(v)}"{" selected" if v == selected else ""}>'
            f"{escape(label)}</option>"
            for v, label in items
        ]
        return f'<select name="{name}" id="b-{name}">{"".join(opts)}</select>'

    layers = [(k, t(f"layer_{k}", lang)) for k in AGGREGATE_LAYERS]
    periods = [(p, t(f"period_{p}", lang)) for p in ("30d", "90d", "365d", "all")]
    metrics = [(k, t(f"metric_{k}", lang)) for k in METRICS]
    cats = [(c[0], c[1]) for c in ctx.catalog.get("categories", [])]
    langs = [("id", "Bahasa Indonesia"), ("en", "English")]
    button_text = {
        "copied": t("copied", lang),
        "copy": t("copy", lang),
        "area_unknown": t("area_unknown", lang),
        "bbox_bad": t("bbox_bad", lang),
    }
    area_options = "".join(
        f'<option value="{escape(code)}" label="{escape(label)}"></option>' for code, label in areas
    )
    body = (
        f"<h1>{escape(t('title_builder', lang))}</h1>"
        f'<p><a href="{escape(ctx.lang_switch())}">{escape(t("switch_lang", lang))}</a></p>'
        '<div class="pl-builder"><form id="pl-builder">'
        f"<label>{escape(t('layer', lang))}<br>{options('layer', layers)}</label>"
        f"<label>{escape(t('metric', lang))}<br>{options('metric', metrics)}</label>"
        f"<label>{escape(t('category', lang))}<br>{options('category', cats, blank=True)}</label>"
        f"<label>{escape(t('period', lang))}<br>{options('period', periods)}</label>"
        f'<label>{escape(t("area", lang))}<br><input type="text" name="area" id="b-area" '
        f'list="b-areas" autocomplete="off" placeholder="{escape(t("area_placeholder", lang))}" '
        f'title="{escape(t("area_hint", lang))}" aria-describedby="b-area-note"></label>'
        f'<datalist id="b-areas">{area_options}</datalist>'
        '<small id="b-area-note" class="pl-note" aria-live="polite"></small>'
        f"<label>{escape(t('language', lang))}<br>{options('lang', langs, selected=lang)}</label>"
        f"<label>{escape(t('snippet', lang))}<br>"
        '<textarea id="b-snippet" rows="4" readonly></textarea></label>'
        f'<button type="button" id="b-copy">{escape(t("copy", lang))}</button></form>'
        f'<div class="pl-preview"><b>{escape(t("preview", lang))}</b>'
        '<iframe id="b-preview" title="preview" loading="lazy"></iframe></div></div>'
        f"<script>window.PL_BUILDER = {json.dumps(button_text)};</script>"
    )
    return _page(t("title_builder", lang), lang, body, scripts=[f"{APP}/builder.js"])
