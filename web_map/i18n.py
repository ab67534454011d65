"""UI text of the map pages: Indonesian first, English as a switch (``lang=id|en``)."""

from __future__ import annotations

from petalapor.errors import InvalidParameterError

LANGS: tuple[str, ...] = ("id", "en")
DEFAULT_LANG = "id"

#: key -> (Indonesian, English).  JavaScript receives the dict of one language.
STRINGS: dict[str, tuple[str, str]] = {
    "title_map": ("Peta Laporan Warga Jakarta", "Jakarta Citizen Report Map"),
    "title_opd": ("Laporan OPD", "OPD reports"),
    "title_embed": ("Laporan warga Jakarta", "Jakarta citizen reports"),
    "title_builder": ("Pembuat sematan peta", "Map embed builder"),
    "title_login": ("Masuk OPD", "OPD login"),
    "filters": ("Saring", "Filters"),
    "from": ("Dari", "From"),
    "to": ("Sampai", "To"),
    "category": ("Kategori", "Category"),
    "opd": ("OPD", "Agency (OPD)"),
    "status": ("Status", "Status"),
    "all": ("Semua", "All"),
    "metric": ("Ukuran", "Metric"),
    "metric_count": ("Jumlah laporan", "Number of reports"),
    "metric_resolved_share": ("Bagian selesai", "Share resolved"),
    "metric_median_days": ("Median hari sampai selesai", "Median days to resolve"),
    "metric_within_7d_share": ("Selesai dalam 7 hari", "Resolved within 7 days"),
    "reset": ("Atur ulang", "Reset"),
    "layer_hexes": ("Heksagon H3", "H3 hexagons"),
    "layer_rw": ("RW (koroplet)", "RW (choropleth)"),
    "layer_kelurahan": ("Kelurahan (koroplet)", "Kelurahan (choropleth)"),
    "layer_outline": ("Batas kelurahan", "Kelurahan outlines"),
    "layer_heatmap": ("Peta panas laporan", "Report heatmap"),
    "layer_hotspots": ("Titik panas (Gi*)", "Hotspots (Gi*)"),
    "layer_jakwifi": ("Titik JakWifi", "JakWifi hotspots"),
    "layer_ispu_stations": ("Stasiun ISPU", "ISPU stations"),
    "layer_ispu_surface": ("Permukaan ISPU", "ISPU surface"),
    "layer_reports": ("Laporan", "Reports"),
    "layer_basemap": ("Peta dasar (internet)", "Basemap (internet)"),
    "legend": ("Legenda", "Legend"),
    "hidden_k": ("disembunyikan (terlalu sedikit laporan)", "hidden (too few reports)"),
    "no_data": ("tidak ada data", "no data"),
    "reports": ("laporan", "reports"),
    "heat_low_high": ("kepadatan laporan: rendah → tinggi", "report density: low → high"),
    "resolved": ("selesai", "resolved"),
    "open": ("terbuka", "open"),
    "days": ("hari", "days"),
    "summary": ("Ringkasan", "Summary"),
    "find_place": ("Cari wilayah", "Find a place"),
    "download_csv": ("Unduh laporan (CSV)", "Download reports (CSV)"),
    "sources": ("Sumber data", "Data sources"),
    "sources_intro": (
        "Dari mana data di peta ini berasal, dan dengan syarat apa.",
        "Where the data on these maps comes from, and on what terms.",
    ),
    "sources_reports": ("Laporan warga", "Citizen reports"),
    "sources_reports_text": (
        "{n} laporan tersimpan, dari kanal pengaduan Jakarta (JAKI/JakLapor, Qlue, SMS, web, "
        "Open311). Identitas pelapor tidak pernah disimpan bersama laporan dan tidak pernah "
        "ditampilkan; laporan yang disembunyikan pelapor tidak masuk peta publik.",
        "{n} reports stored, from Jakarta's complaint channels (JAKI/JakLapor, Qlue, SMS, web, "
        "Open311). Reporter identity is never stored with a report and never shown; reports "
        "the reporter hid stay off the public maps.",
    ),
    "sources_demo": (
        "{n} di antaranya data demo SINTETIS (petalapor demo-data), bukan laporan nyata.",
        "{n} of them are SYNTHETIC demo data (petalapor demo-data), not real reports.",
    ),
    "sources_boundaries": ("Batas wilayah", "Boundaries"),
    "sources_imported": ("diimpor {at}", "imported {at}"),
    "sources_layers": ("Lapisan konteks", "Context layers"),
    "sources_software": ("Perangkat lunak peta", "Map software"),
    "licence": ("Lisensi", "Licence"),
    "synthetic": ("sintetis", "synthetic"),
    "layer": ("Lapisan", "Layer"),
    "source_col": ("Sumber", "Source"),
    "find_place_hint": ("kelurahan, kecamatan ...", "kelurahan, kecamatan ..."),
    "place_unknown": (
        "Wilayah tidak ditemukan; pilih dari daftar.",
        "No such place; pick one from the list.",
    ),
    "kpi_title": ("Ringkasan laporan publik", "Public reports at a glance"),
    "kpi_title_opd": ("Ringkasan laporan OPD", "The OPD's reports at a glance"),
    "kpi_reports": ("Laporan", "Reports"),
    "kpi_open": ("masih terbuka", "still open"),
    "kpi_resolved": ("Selesai", "Resolved"),
    "kpi_target": ("target", "target"),
    "kpi_7d": ("Selesai ≤ {days} hari", "Resolved within {days} days"),
    "kpi_median": ("Median penyelesaian", "Median time to resolve"),
    "kpi_6h": ("Koordinasi ≤ {hours} jam", "Coordinated within {hours} hours"),
    "kpi_no_status": (
        "Filter status tidak dipakai di ringkasan.",
        "The status filter does not apply here.",
    ),
    "kpi_none": ("Tidak ada laporan untuk saringan ini.", "No reports for these filters."),
    "kpi_failed": ("Ringkasan tidak tersedia.", "Summary unavailable."),
    "hot": ("panas", "hot"),
    "cold": ("dingin", "cold"),
    "not_significant": ("tidak signifikan", "not significant"),
    "ispu_good": ("Baik", "Good"),
    "ispu_moderate": ("Sedang", "Moderate"),
    "ispu_unhealthy": ("Tidak sehat", "Unhealthy"),
    "ispu_very_unhealthy": ("Sangat tidak sehat", "Very unhealthy"),
    "ispu_hazardous": ("Berbahaya", "Hazardous"),
    "worst_rw": ("RW terburuk", "Worst RWs"),
    "by_backlog": ("menurut tunggakan", "by backlog"),
    "by_days": ("menurut hari penyelesaian", "by days to resolve"),
    "rw": ("RW", "RW"),
    "kelurahan": ("Kelurahan", "Kelurahan"),
    "backlog": ("Tunggakan", "Backlog"),
    "median_days": ("Median hari", "Median days"),
    "total": ("Total", "Total"),
    "logout": ("Keluar", "Log out"),
    "login": ("Masuk", "Log in"),
    "api_key": ("Kunci API", "API key"),
    "login_hint": (
        "Masukkan kunci API OPD Anda. Sesi berlaku {minutes} menit.",
        "Enter your OPD API key. The session lasts {minutes} minutes.",
    ),
    "login_failed": ("Kunci tidak dikenal atau sudah dicabut.", "Unknown or revoked key."),
    "period": ("Periode", "Period"),
    "period_30d": ("30 hari terakhir", "Last 30 days"),
    "period_90d": ("90 hari terakhir", "Last 90 days"),
    "period_365d": ("12 bulan terakhir", "Last 12 months"),
    "period_all": ("Semua waktu", "All time"),
    "area": ("Wilayah", "Area"),
    "area_hint": (
        "nama atau kode kelurahan, atau bbox (minx,miny,maxx,maxy)",
        "kelurahan name or code, or a bbox (minx,miny,maxx,maxy)",
    ),
    "area_placeholder": ("ketik nama kelurahan", "type a kelurahan name"),
    "area_unknown": (
        "Kelurahan tidak dikenal; pilih dari daftar. Peta menampilkan seluruh Jakarta.",
        "Unknown kelurahan; pick one from the list. The map shows all of Jakarta.",
    ),
    "bbox_bad": (
        "bbox harus empat angka: minx,miny,maxx,maxy. Peta menampilkan seluruh Jakarta.",
        "A bbox is four numbers: minx,miny,maxx,maxy. The map shows all of Jakarta.",
    ),
    "language": ("Bahasa", "Language"),
    "copy": ("Salin", "Copy"),
    "copied": ("Tersalin", "Copied"),
    "preview": ("Pratinjau", "Preview"),
    "snippet": ("Kode sematan", "Embed code"),
    "switch_lang": ("English", "Bahasa Indonesia"),
    "source": (
        "Sumber: laporan warga Jakarta (agregat)",
        "Source: Jakarta citizen reports (aggregated)",
    ),
    "loading": ("memuat...", "loading..."),
    "empty_table": ("Belum ada data.", "No data yet."),
}


def check_lang(lang: str | None) -> str:
    """The language code (default Indonesian); InvalidParameterError for others."""
    if lang in (None, ""):
        return DEFAULT_LANG
    if lang not in LANGS:
        raise InvalidParameterError(f"lang must be one of {', '.join(LANGS)} (got {lang!r})")
    return lang


def strings(lang: str) -> dict[str, str]:
    """Every UI string in one language."""
    i = LANGS.index(check_lang(lang))
    return {key: pair[i] for key, pair in STRINGS.items()}


def t(key: str, lang: str, **values: object) -> str:
    """One UI string, formatted with ``values``."""
    text = STRINGS[key][LANGS.index(check_lang(lang))]
    return text.format(**values) if values else text
