"""The map pages, built with folium (Leaflet) and served by the API.

* ``pages.py``: page builders for the planner map (``/map``), the OPD view
  (``/opd``), the public embed (``/embed``) and its builder (``/embed/builder``).
* ``i18n.py``: UI strings, Indonesian first, English as a switch (``lang=id|en``).
* ``static/``: petalapor's own JavaScript and CSS (``/static/app/...``): layer
  registry, styles, legend, filters, popups and the OPD table.
* ``package.json`` / ``package-lock.json``: Leaflet, Leaflet.VectorGrid and
  Leaflet.markercluster from npm (``npm ci`` here; ``./dev`` runs it).  An allow-list
  of their files is served under ``/static/vendor/...``; no CDN is used at run time.

Routes are in :mod:`api.routes.pages`.
"""
