/* petalapor map pages: layer registry, styles, legend, filters, popups, OPD table.
 *
 * folium builds the Leaflet map and its layers; each layer is handed to PL.register()
 * and PL.init() adds the controls.  Everything is served by petalapor itself: no CDN.
 */
(function () {
  'use strict';

  // Leaflet.VectorGrid 1.3 calls L.DomEvent.fakeStop, removed in Leaflet 1.8.
  if (window.L && L.DomEvent && !L.DomEvent.fakeStop) {
    L.DomEvent.fakeStop = function (e) { e._stopped = true; };
  }

  var YLORRD = ['#ffffb2', '#fed976', '#feb24c', '#fd8d3c', '#f03b20', '#bd0026'];
  var RDYLGN = ['#d7191c', '#fdae61', '#ffffbf', '#a6d96a', '#1a9641'];
  var HIDDEN = '#bdbdbd';

  // Property names differ between tile builders; the first present one wins.
  var METRICS = {
    count: {aliases: ['count', 'n', 'n_reports', 'reports', 'total'], palette: YLORRD, kind: 'int'},
    resolved_share: {aliases: ['resolved_share', 'share_resolved', 'resolved_ratio', 'resolution_rate'],
                     palette: RDYLGN, breaks: [0.2, 0.4, 0.6, 0.8], kind: 'pct'},
    median_days: {aliases: ['median_days', 'median_days_to_resolve', 'days_median', 'median_resolution_days'],
                  palette: YLORRD, breaks: [1, 3, 7, 14, 30], kind: 'days'},
    within_7d_share: {aliases: ['within_7d_share', 'resolved_7d_share', 'share_within_7d', 'within7_share', 'on_time_share',
                                'resolved_within_7d_share'],
                      palette: RDYLGN, breaks: [0.2, 0.4, 0.6, 0.8], kind: 'pct'}
  };
  var COUNT_BREAKS = {hexes: [1, 3, 5, 10, 25, 50], rw: [1, 3, 5, 10, 25, 50], kelurahan: [5, 10, 25, 50, 100, 250]};
  var ISPU = [[50, '#00a651', 'ispu_good'], [100, '#0072bc', 'ispu_moderate'], [200, '#ffc20e', 'ispu_unhealthy'],
              [300, '#ed1c24', 'ispu_very_unhealthy'], [Infinity, '#231f20', 'ispu_hazardous']];
  var STATUS_OPEN = {menunggu: 1, koordinasi: 1, proses: 1};

  var PL = {cfg: {t: {}}, map: null, layers: {}, filters: {}, metric: 'count'};
  window.PL = PL;

  function tr(key) { return (PL.cfg.t && PL.cfg.t[key]) || key; }
  function pick(props, names) {
    for (var i = 0; i < names.length; i++) {
      var v = props[names[i]];
      if (v !== undefined && v !== null && v !== '') { return Number(v); }
    }
    return null;
  }
  function isHidden(props) {
    return props.suppressed === true || props.suppressed === 1 || props.suppressed === 'true' ||
      props.k_anonymous === false || props.hidden === true;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function fmt(v, kind) {
    if (v === null || isNaN(v)) { return '–'; }
    if (kind === 'pct') { return Math.round(v * 100) + '%'; }
    if (kind === 'days') { return (Math.round(v * 10) / 10) + ' ' + tr('days'); }
    return String(Math.round(v));
  }
  function breaksFor(metric, key) {
    return METRICS[metric].breaks || COUNT_BREAKS[key] || COUNT_BREAKS.hexes;
  }
  function classColor(v, breaks, palette) {
    var i = 0;
    while (i < breaks.length && v >= breaks[i]) { i++; }
    // count breaks start at 1: below the first break is the lightest class
    var idx = Math.min(palette.length - 1, Math.round(i * (palette.length - 1) / breaks.length));
    return palette[idx];
  }
  PL.metricValue = function (props, metric) { return pick(props, METRICS[metric].aliases); };

  // ------------------------------------------------------------------ styles

  function choropleth(key) {
    return function (props) {
      var base = {weight: key === 'hexes' ? 0.3 : 0.6, color: '#555', opacity: 0.7, fill: true, fillOpacity: 0.65};
      var m = PL.metric;
      var v = isHidden(props) ? null : PL.metricValue(props, m);
      base.fillColor = v === null ? HIDDEN : classColor(v, breaksFor(m, key), METRICS[m].palette);
      if (v === null) { base.fillOpacity = 0.25; }
      return base;
    };
  }
  function ispuColor(v) {
    for (var i = 0; i < ISPU.length; i++) { if (v <= ISPU[i][0]) { return ISPU[i][1]; } }
    return HIDDEN;
  }
  function hotspotColor(props) {
    var z = pick(props, ['gi_z', 'z', 'zscore', 'z_score', 'gi']);
    var cls = String(props['class'] || props.hotspot || props.gi_class || props.category || '');
    var conf = pick(props, ['confidence', 'conf']);
    if (z === null && cls) {
      var sign = cls.indexOf('hot') >= 0 ? 1 : (cls.indexOf('cold') >= 0 ? -1 : 0);
      var level = conf || Number((cls.match(/(\d+)/) || [0, 95])[1]);
      z = sign * (level >= 99 ? 2.6 : level >= 95 ? 2.0 : 1.7);
    }
    if (z === null) { return null; }
    if (z >= 2.58) { return '#b2182b'; }
    if (z >= 1.96) { return '#ef8a62'; }
    if (z >= 1.65) { return '#fddbc7'; }
    if (z <= -2.58) { return '#2166ac'; }
    if (z <= -1.96) { return '#67a9cf'; }
    if (z <= -1.65) { return '#d1e5f0'; }
    return null;
  }
  var STYLES = {
    hexes: choropleth('hexes'),
    rw: choropleth('rw'),
    kelurahan: choropleth('kelurahan'),
    outline: function () { return {weight: 0.8, color: '#37474f', opacity: 0.8, fill: false}; },
    hotspots: function (props) {
      var c = hotspotColor(props);
      return c ? {weight: 0.4, color: '#444', fill: true, fillColor: c, fillOpacity: 0.7, radius: 5}
               : {weight: 0, opacity: 0, fill: false, fillOpacity: 0, radius: 0};
    },
    jakwifi: function () {
      return {radius: 3, weight: 1, color: '#0d47a1', fill: true, fillColor: '#42a5f5', fillOpacity: 0.9};
    },
    ispu_stations: function (props) {
      var v = pick(props, ['ispu', 'value', 'ispu_max', 'max', 'mean']);
      return {radius: 7, weight: 1.5, color: '#111', fill: true, fillOpacity: 0.95,
              fillColor: v === null ? '#9e9e9e' : ispuColor(v)};
    },
    reports: function (props) {
      var open = STATUS_OPEN[props.status] === 1 || props.is_open === true;
      return {radius: 4, weight: 1, color: '#333', fill: true, fillOpacity: 0.85,
              fillColor: open ? '#e65100' : '#2e7d32'};
    }
  };

  /* A vectorTileLayerStyles object that gives every MVT layer name the same style
   * function, so the page does not depend on the layer name inside the tile. */
  PL.styles = function (key) {
    var fn = STYLES[key] || STYLES.outline;
    if (window.Proxy) {
      return new Proxy({}, {get: function () { return fn; }});
    }
    var o = {};
    o[key] = fn;
    return o;
  };

  // ------------------------------------------------------------------ registry and filters

  PL.register = function (key, layer, meta) {
    meta = meta || {};
    PL.layers[key] = {layer: layer, meta: meta};
    if (meta.interactive && layer.on) {
      layer.on('click', function (e) { PL.popup(key, e); });
    }
    return layer;
  };

  function query(meta) {
    var q = [];
    var keys = ['from', 'to', 'category', 'opd', 'status'];
    for (var i = 0; i < keys.length; i++) {
      var v = PL.filters[keys[i]];
      if (v) { q.push(keys[i] + '=' + encodeURIComponent(v)); }
    }
    if (meta && meta.extra) { q.push(meta.extra); }
    return q.length ? '?' + q.join('&') : '';
  }
  PL.query = query;
  function withQuery(url) {
    var q = query(null);
    if (!q) { return url; }
    return url.indexOf('?') >= 0 ? url + '&' + q.slice(1) : url + q;
  }

  /* New tile URLs for every filterable layer: the tiles are requested again, no reload. */
  PL.applyFilters = function () {
    Object.keys(PL.layers).forEach(function (key) {
      var entry = PL.layers[key];
      if (!entry.meta.filterable || !entry.layer.setUrl) { return; }
      entry.layer.setUrl(entry.meta.base + query(entry.meta));
    });
    if (PL.onFilters) { PL.onFilters(); }
    if (PL.updateDownload) { PL.updateDownload(); }
    PL.loadKpis();
  };

  PL.setMetric = function (metric) {
    if (!METRICS[metric]) { return; }
    PL.metric = metric;
    Object.keys(PL.layers).forEach(function (key) {
      var entry = PL.layers[key];
      if (entry.meta.kind === 'choropleth' && PL.map.hasLayer(entry.layer) && entry.layer.redraw) {
        entry.layer.redraw();
      }
    });
    PL.updateLegend();
  };

  // ------------------------------------------------------------------ popups

  PL.popup = function (key, e) {
    var p = (e.layer && e.layer.properties) || {};
    var meta = PL.layers[key].meta;
    var html = '<div class="pl-popup">';
    var title = p.name || p.nama || p.code || p.kode || p.h3 || p.id || '';
    html += '<strong>' + esc(tr('layer_' + key)) + (title ? ': ' + esc(title) : '') + '</strong><table>';
    if (meta.kind === 'choropleth') {
      if (isHidden(p)) {
        html += '<tr><td colspan="2">' + esc(tr('hidden_k')) + '</td></tr>';
      }
      Object.keys(METRICS).forEach(function (m) {
        var v = PL.metricValue(p, m);
        if (v !== null) {
          html += '<tr><th>' + esc(tr('metric_' + m)) + '</th><td>' + esc(fmt(v, METRICS[m].kind)) + '</td></tr>';
        }
      });
    } else {
      Object.keys(p).slice(0, 12).forEach(function (k) {
        html += '<tr><th>' + esc(k) + '</th><td>' + esc(p[k]) + '</td></tr>';
      });
    }
    html += '</table>';
    var link = PL.summaryLink(key, p);
    if (link) {
      html += '<a class="pl-summary" href="' + esc(link) + '" target="_blank" rel="noopener">' +
        esc(tr('summary')) + ' →</a>';
    }
    html += '</div>';
    L.popup({maxWidth: 320}).setLatLng(e.latlng).setContent(html).openOn(PL.map);
  };

  /* The popup's link: the layer's template with {code} (or another property, e.g. an RW's
     {kelurahan_code}) filled in, plus the current filters. */
  PL.summaryLink = function (key, p) {
    var tpl = PL.cfg.summary && PL.cfg.summary[key];
    if (!tpl) { return null; }
    var missing = false;
    var url = tpl.replace(/\{(\w+)\}/g, function (_, name) {
      var v = name === 'code' ? (p.code || p.kode || p.h3 || p.rw_code || p.kelurahan_code || p.id) : p[name];
      if (v === undefined || v === null || v === '') { missing = true; return ''; }
      return encodeURIComponent(v);
    });
    if (missing) { return null; }
    var q = query(null).replace(/^\?/, '');
    return q ? url + (url.indexOf('?') >= 0 ? '&' : '?') + q : url;
  };

  // ------------------------------------------------------------------ controls

  function option(value, label, selected) {
    var o = L.DomUtil.create('option');
    o.value = value;
    o.textContent = label;
    if (selected) { o.selected = true; }
    return o;
  }
  function field(form, label, input) {
    var row = L.DomUtil.create('label', 'pl-field', form);
    L.DomUtil.create('span', '', row).textContent = label;
    row.appendChild(input);
    return input;
  }
  function select(name, items, current) {
    var s = L.DomUtil.create('select');
    s.name = name;
    s.appendChild(option('', tr('all'), !current));
    (items || []).forEach(function (it) { s.appendChild(option(it[0], it[1], it[0] === current)); });
    return s;
  }

  /* "Find a place": a kota, kecamatan or kelurahan by name (a list the page brings along);
     the map zooms to it and outlines it. */
  function placeSearch(form) {
    var places = PL.cfg.places || [];
    if (!places.length) { return; }
    var byText = {};
    var list = L.DomUtil.create('datalist', '', form);
    list.id = 'pl-places';
    places.forEach(function (p) {  // [level, code, label]
      var o = L.DomUtil.create('option', '', list);
      o.value = p[2];
      var name = p[2].split(',')[0].toLowerCase();
      byText[p[2].toLowerCase()] = p;
      if (!byText[name] || p[0] === 'kelurahan') { byText[name] = p; }
      byText[p[1]] = p;
    });
    var input = L.DomUtil.create('input');
    input.type = 'search';
    input.name = 'place';
    input.id = 'pl-place';
    input.autocomplete = 'off';
    input.placeholder = tr('find_place_hint');
    input.setAttribute('list', 'pl-places');
    input.setAttribute('aria-describedby', 'pl-place-note');
    field(form, tr('find_place'), input);
    var note = L.DomUtil.create('small', 'pl-note', form);
    note.id = 'pl-place-note';
    note.setAttribute('aria-live', 'polite');
    function go(quiet) {
      var text = input.value.trim().toLowerCase();
      var p = byText[text];
      if (!text || (!p && quiet)) { note.textContent = ''; note.className = 'pl-note'; return; }
      if (!p) { note.textContent = tr('place_unknown'); note.className = 'pl-note pl-warn'; return; }
      note.textContent = '';
      note.className = 'pl-note';
      var link = p[0] === 'kelurahan' ? PL.summaryLink('kelurahan', {code: p[1]}) : null;
      if (link) {  // the kelurahan's summary page, with the current filters
        var a = L.DomUtil.create('a', 'pl-summary', note);
        a.href = link;
        a.target = '_blank';
        a.rel = 'noopener';
        a.textContent = tr('summary') + ' ' + p[2].split(',')[0] + ' →';
      }
      PL.place = {level: p[0], code: p[1]};
      PL.zoomTo(p[0], p[1]);
    }
    input.addEventListener('change', function () { go(false); });
    // picking from the list fills the whole label: go at once
    input.addEventListener('input', function () { if (byText[input.value.toLowerCase()] && input.value.indexOf(',') > 0) { go(true); } });
    input.addEventListener('keydown', function (e) { if (e.key === 'Enter') { e.preventDefault(); go(false); } });
  }

  var FilterControl = L.Control.extend({
    options: {position: 'topleft'},
    onAdd: function () {
      var cfg = PL.cfg;
      var div = L.DomUtil.create('div', 'leaflet-bar pl-panel pl-filters');
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      var head = L.DomUtil.create('div', 'pl-head', div);
      L.DomUtil.create('strong', '', head).textContent = tr('filters');
      if (cfg.langSwitch) {
        var a = L.DomUtil.create('a', 'pl-lang', head);
        a.href = cfg.langSwitch;
        a.textContent = tr('switch_lang');
      }
      var form = L.DomUtil.create('form', '', div);
      form.id = 'pl-filter-form';
      form.addEventListener('submit', function (ev) { ev.preventDefault(); });
      placeSearch(form);
      var inputs = {};
      ['from', 'to'].forEach(function (k) {
        var i = L.DomUtil.create('input');
        i.type = 'date';
        i.name = k;
        i.value = PL.filters[k] || '';
        inputs[k] = field(form, tr(k), i);
      });
      inputs.category = field(form, tr('category'), select('category', cfg.catalog.categories, PL.filters.category));
      if (!cfg.fixedOpd) {
        inputs.opd = field(form, tr('opd'), select('opd', cfg.catalog.opds, PL.filters.opd));
      }
      inputs.status = field(form, tr('status'), select('status', cfg.catalog.statuses, PL.filters.status));
      Object.keys(inputs).forEach(function (k) {
        inputs[k].addEventListener('change', function () {
          PL.filters[k] = inputs[k].value;
          PL.applyFilters();
        });
      });
      if (cfg.metricSwitch) {
        var ms = L.DomUtil.create('select');
        ms.name = 'metric';
        Object.keys(METRICS).forEach(function (m) { ms.appendChild(option(m, tr('metric_' + m), m === PL.metric)); });
        field(form, tr('metric'), ms).addEventListener('change', function () { PL.setMetric(ms.value); });
      }
      if (cfg.exportUrl) {  // the reports behind the map, as filtered
        var dl = L.DomUtil.create('a', 'pl-download', form);
        dl.id = 'pl-download';
        dl.textContent = tr('download_csv');
        dl.setAttribute('download', '');
        PL.updateDownload = function () { dl.href = cfg.exportUrl + query(null); };
        PL.updateDownload();
      }
      var reset = L.DomUtil.create('button', 'pl-reset', form);
      reset.type = 'button';
      reset.textContent = tr('reset');
      reset.addEventListener('click', function () {
        Object.keys(inputs).forEach(function (k) { inputs[k].value = ''; PL.filters[k] = ''; });
        if (cfg.fixedOpd) { PL.filters.opd = cfg.fixedOpd; }
        PL.applyFilters();
      });
      return div;
    }
  });

  function swatch(color, label, hollow) {
    return '<div class="pl-legend-row"><i style="background:' + (hollow ? 'transparent' : color) +
      ';border-color:' + color + '"></i>' + esc(label) + '</div>';
  }
  function legendFor(key, meta) {
    var html = '<div class="pl-legend-block"><b>' + esc(tr('layer_' + key)) + '</b>';
    if (meta.kind === 'choropleth') {
      var m = PL.metric, b = breaksFor(m, key), pal = METRICS[m].palette;
      html += '<div class="pl-legend-sub">' + esc(tr('metric_' + m)) + '</div>';
      // counts start at the first break (units below it are not drawn)
      for (var i = METRICS[m].kind === 'int' ? 1 : 0; i <= b.length; i++) {
        var lo = i === 0 ? null : b[i - 1], hi = i < b.length ? b[i] : null;
        var v = lo === null ? (hi - (METRICS[m].kind === 'int' ? 1 : 0.01)) : lo;
        var label = lo === null ? '< ' + fmt(hi, METRICS[m].kind) : (hi === null ? '≥ ' + fmt(lo, METRICS[m].kind)
          : fmt(lo, METRICS[m].kind) + ' – ' + fmt(hi, METRICS[m].kind));
        html += swatch(classColor(v, b, pal), label);
      }
      html += swatch(HIDDEN, tr('hidden_k'));
    } else if (key === 'ispu_stations' || key === 'ispu_surface') {
      var lo2 = 0;
      ISPU.forEach(function (c) {
        html += swatch(c[1], tr(c[2]) + ' (' + lo2 + (c[0] === Infinity ? '+' : '–' + c[0]) + ')');
        lo2 = c[0] + 1;
      });
    } else if (key === 'hotspots') {
      html += swatch('#b2182b', tr('hot') + ' 99%') + swatch('#ef8a62', tr('hot') + ' 95%') +
        swatch('#fddbc7', tr('hot') + ' 90%') + swatch('#67a9cf', tr('cold') + ' 95%') +
        swatch('#2166ac', tr('cold') + ' 99%');
    } else if (key === 'heatmap') {
      html += '<div class="pl-ramp"></div><div class="pl-legend-sub">' + esc(tr('heat_low_high')) + '</div>';
    } else if (key === 'jakwifi') {
      html += swatch('#42a5f5', tr('layer_jakwifi'));
    } else if (key === 'reports') {
      html += swatch('#e65100', tr('open')) + swatch('#2e7d32', tr('resolved'));
    } else if (key === 'outline') {
      html += swatch('#37474f', tr('kelurahan'), true);
    }
    return html + '</div>';
  }

  /* Small maps (the default embed is 600 x 420) start with the legend folded to its
     title, so it does not cover the map; the title button unfolds it. */
  var LEGEND_FOLDED_BELOW = {width: 700, height: 450};

  var LegendControl = L.Control.extend({
    options: {position: 'bottomright'},
    onAdd: function (map) {
      var size = map.getSize();
      this._folded = size.x < LEGEND_FOLDED_BELOW.width || size.y < LEGEND_FOLDED_BELOW.height;
      this._div = L.DomUtil.create('div', 'pl-panel pl-legend');
      L.DomEvent.disableScrollPropagation(this._div);
      L.DomEvent.disableClickPropagation(this._div);
      L.DomEvent.on(this._div, 'click', function (ev) {
        if (ev.target.closest && ev.target.closest('.pl-legend-toggle')) {
          this._folded = !this._folded;
          this.update();
        }
      }, this);
      return this._div;
    },
    update: function () {
      var html = '';
      Object.keys(PL.layers).forEach(function (key) {
        var entry = PL.layers[key];
        if (PL.map.hasLayer(entry.layer)) { html += legendFor(key, entry.meta); }
      });
      var folded = this._folded;
      this._div.innerHTML = html ?
        '<button type="button" class="pl-legend-toggle" aria-expanded="' + !folded + '">' +
        esc(tr('legend')) + ' <span aria-hidden="true">' + (folded ? '&#9656;' : '&#9662;') +
        '</span></button><div class="pl-legend-body"' + (folded ? ' hidden' : '') + '>' + html +
        '</div>' : '';
      this._div.style.display = html ? '' : 'none';
    }
  });

  PL.updateLegend = function () { if (PL.legend) { PL.legend.update(); } };

  // ------------------------------------------------------------------ summary figures

  /* City-wide figures for the current filters (the analysis API, public reports only):
     reports and backlog, resolved share against the published bar, within 7 days,
     median days, coordination within 6 hours. */
  var KpiControl = L.Control.extend({
    options: {position: 'bottomleft'},
    onAdd: function () {
      var div = L.DomUtil.create('div', 'pl-panel pl-kpis');
      div.id = 'pl-kpis';
      div.setAttribute('aria-live', 'polite');
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      return div;
    }
  });

  var kpiLoad = 0;
  PL.loadKpis = function () {
    var k = PL.cfg.kpis, el = document.getElementById('pl-kpis');
    if (!k || !k.url || !el) { return; }
    var q = [];
    ['from', 'to', 'category', 'opd'].forEach(function (f) {
      if (PL.filters[f]) { q.push(f + '=' + encodeURIComponent(PL.filters[f])); }
    });
    var mine = ++kpiLoad;
    PL.kpis = null;
    // the public panel sends no session: public figures, whatever this browser holds
    var credentials = k.public ? 'omit' : 'same-origin';
    fetch(k.url + (q.length ? '&' + q.join('&') : ''), {credentials: credentials}).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (data) {
      if (mine !== kpiLoad) { return; }  // a newer filter won
      renderKpis(el, data && data.rows ? (data.rows[0] || {reports: 0}) : null);
    }).catch(function () { if (mine === kpiLoad) { renderKpis(el, null); } });
  };

  function renderKpis(el, row) {
    var k = PL.cfg.kpis, lang = PL.cfg.lang === 'en' ? 'en-GB' : 'id-ID';
    var num = new Intl.NumberFormat(lang, {maximumFractionDigits: 0});
    var one = new Intl.NumberFormat(lang, {maximumFractionDigits: 1, minimumFractionDigits: 1});
    function pct(v) { return v === null || v === undefined ? '–' : one.format(v * 100) + '%'; }
    function line(label, value, extra, cls) {
      return '<div class="pl-kpi' + (cls ? ' ' + cls : '') + '"><span>' + esc(label) + '</span> <b>' +
        esc(value) + '</b>' + (extra ? ' <small>' + esc(extra) + '</small>' : '') + '</div>';
    }
    var html = '<div class="pl-kpi-head">' + esc(tr(k.public ? 'kpi_title' : 'kpi_title_opd')) + '</div>';
    if (!row) {
      html += '<div class="pl-empty">' + esc(tr('kpi_failed')) + '</div>';
    } else if (!row.reports) {
      html += '<div class="pl-empty">' + esc(row.suppressed ? tr('hidden_k') : tr('kpi_none')) + '</div>';
    } else {
      var ok = row.resolved_share !== null && row.resolved_share >= k.resolvedTarget;
      html += line(tr('kpi_reports'), num.format(row.reports), num.format(row.open || 0) + ' ' + tr('kpi_open'));
      html += line(tr('kpi_resolved'), pct(row.resolved_share),
        tr('kpi_target') + ' ' + num.format(k.resolvedTarget * 100) + '%', ok ? 'pl-ok' : 'pl-bad');
      html += line(tr('kpi_7d').replace('{days}', k.days), pct(row.resolved_7d_share));
      html += line(tr('kpi_median'), row.median_days === null || row.median_days === undefined ? '–'
        : one.format(row.median_days) + ' ' + tr('days'));
      html += line(tr('kpi_6h').replace('{hours}', k.hours), pct(row.coordinated_6h_share));
    }
    if (PL.filters.status) { html += '<div class="pl-kpi-note">' + esc(tr('kpi_no_status')) + '</div>'; }
    el.innerHTML = html;
    PL.kpis = row || {};
  }

  // ------------------------------------------------------------------ OPD table

  /* A sortable table of RWs; a row click zooms the map to the RW. */
  PL.rwTable = function (el, url, columns, getRows) {
    var rows = [];
    var sortKey = 'backlog', desc = true;
    function render() {
      rows.sort(function (a, b) {
        var x = a[sortKey], y = b[sortKey];
        if (x === y) { return 0; }
        if (x === null || x === undefined) { return 1; }
        if (y === null || y === undefined) { return -1; }
        return (x < y ? -1 : 1) * (desc ? -1 : 1);
      });
      var html = '<table class="pl-table" id="pl-worst-table"><thead><tr>';
      columns.forEach(function (c) {
        var mark = c.key === sortKey ? (desc ? ' ▼' : ' ▲') : '';
        html += '<th data-key="' + esc(c.key) + '">' + esc(c.label) + mark + '</th>';
      });
      html += '</tr></thead><tbody>';
      rows.slice(0, 50).forEach(function (r) {
        html += '<tr data-code="' + esc(r.rw_code || '') + '">';
        columns.forEach(function (c) {
          var v = r[c.key];
          var cell = c.kind === 'text' ? (v || '–') : fmt(v === null || v === undefined ? null : Number(v), c.kind);
          var link = c.link ? c.link(r) : null;  // e.g. the kelurahan's summary page
          html += '<td>' + (link ? '<a class="pl-summary" target="_blank" rel="noopener" href="' + esc(link) + '">' +
            esc(cell) + '</a>' : esc(cell)) + '</td>';
        });
        html += '</tr>';
      });
      html += '</tbody></table>';
      if (!rows.length) { html += '<p class="pl-empty">' + esc(tr('empty_table')) + '</p>'; }
      el.innerHTML = html;
      Array.prototype.forEach.call(el.querySelectorAll('th'), function (th) {
        th.addEventListener('click', function () {
          var k = th.getAttribute('data-key');
          if (k === sortKey) { desc = !desc; } else { sortKey = k; desc = true; }
          render();
        });
      });
      Array.prototype.forEach.call(el.querySelectorAll('tbody tr'), function (row) {
        row.addEventListener('click', function (ev) {
          if (ev.target.closest && ev.target.closest('a')) { return; }  // a link opens its page
          PL.zoomTo('rw', row.getAttribute('data-code'));
        });
      });
    }
    PL.reloadTable = function () { rows = (getRows() || []).slice(); render(); };
    PL.sortTable = function (key) { sortKey = key; desc = true; render(); };
  };

  var highlight = null;
  PL.zoomTo = function (level, code) {
    if (!code) { return; }
    fetch('/boundaries/' + level + '/' + encodeURIComponent(code) + '?simplify=5', {credentials: 'same-origin'})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (f) {
        if (!f) { return; }
        if (highlight) { PL.map.removeLayer(highlight); }
        highlight = L.geoJSON(f, {style: {color: '#00e5ff', weight: 3, fill: false}, interactive: false}).addTo(PL.map);
        PL.map.fitBounds(highlight.getBounds(), {maxZoom: 17});
      }).catch(function () { /* boundary missing: stay where we are */ });
  };

  // ------------------------------------------------------------------ OPD page

  function median(xs) {
    if (!xs.length) { return null; }
    xs = xs.slice().sort(function (a, b) { return a - b; });
    var mid = Math.floor(xs.length / 2);
    return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
  }

  /* Worst RWs from the OPD's reports: backlog (open reports) and median days to resolve. */
  function worstFromReports(items) {
    var by = {};
    items.forEach(function (r) {
      if (!r.rw_code) { return; }
      var row = by[r.rw_code] || (by[r.rw_code] = {rw_code: r.rw_code, rw: r.rw_name || r.rw_code,
        kelurahan: r.kelurahan_name || r.kelurahan_code || '', kelurahan_code: r.kelurahan_code,
        backlog: 0, total: 0, _days: []});
      row.total += 1;
      if (r.is_open) { row.backlog += 1; }
      if (r.resolved_at && r.created_at) {
        row._days.push((Date.parse(r.resolved_at) - Date.parse(r.created_at)) / 86400000);
      }
    });
    return Object.keys(by).map(function (k) {
      var row = by[k];
      row.median_days = median(row._days);
      delete row._days;
      return row;
    });
  }
  /* An analysis row (code, open, median_days, reports) with names from the loaded reports. */
  function normaliseWorst(r, names) {
    var code = r.rw_code || r.code;
    var known = names[code] || {};
    return {
      rw_code: code, rw: r.rw_name || r.name || known.rw || code,
      kelurahan: r.kelurahan_name || r.kelurahan || known.kelurahan || '',
      kelurahan_code: r.kelurahan_code || known.kelurahan_code,
      backlog: pick(r, ['backlog', 'open', 'n_open', 'open_count']),
      median_days: pick(r, ['median_days', 'median_days_to_resolve', 'days_median']),
      total: pick(r, ['reports', 'count', 'n', 'total', 'n_reports'])
    };
  }

  var reportsLoad = 0;
  function loadReports(done) {
    var url = PL.cfg.reportsUrl, items = [], mine = ++reportsLoad, pageSize = 1000, maxItems = 5000;
    if (!url) { done([]); return; }
    function page(offset) {
      var q = query(null);
      q += (q ? '&' : '?') + 'limit=' + pageSize + '&offset=' + offset;
      fetch(url + q, {credentials: 'same-origin'}).then(function (r) {
        return r.ok ? r.json() : {items: [], total: 0};
      }).then(function (data) {
        if (mine !== reportsLoad) { return; }  // a newer filter won
        items = items.concat(data.items || []);
        var more = (data.items || []).length === pageSize && items.length < Math.min(data.total || 0, maxItems);
        if (more) { page(offset + pageSize); } else { done(items); }
      }).catch(function () { done(items); });
    }
    page(0);
  }

  PL.opdPage = function (opts) {
    var group = PL.layers.reports && PL.layers.reports.layer;
    var cluster = L.markerClusterGroup ? L.markerClusterGroup({disableClusteringAtZoom: 16, chunkedLoading: true})
                                        : L.featureGroup();
    if (group) { group.addLayer(cluster); }
    var table = document.getElementById(opts.table);
    var columns = [
      {key: 'rw', label: tr('rw'), kind: 'text'},
      {key: 'kelurahan', label: tr('kelurahan'), kind: 'text',
       link: function (r) { return r.kelurahan_code ? PL.summaryLink('kelurahan', {code: r.kelurahan_code}) : null; }},
      {key: 'backlog', label: tr('backlog'), kind: 'int'},
      {key: 'median_days', label: tr('median_days'), kind: 'days'},
      {key: 'total', label: tr('total'), kind: 'int'}
    ];
    var worstRows = [];
    PL.rwTable(table, null, columns, function () { return worstRows; });
    function refresh() {
      loadReports(function (items) {
        cluster.clearLayers();
        var style = STYLES.reports;
        var markers = items.map(function (r) {
          var mk = L.circleMarker([r.lat, r.lon], style({status: r.status, is_open: r.is_open}));
          mk.bindPopup('<div class="pl-popup"><strong>' + esc(r.title || r.category_name || r.category) +
            '</strong><table><tr><th>' + esc(tr('status')) + '</th><td>' + esc(r.status_name || r.status) +
            '</td></tr><tr><th>' + esc(tr('category')) + '</th><td>' + esc(r.category_name || r.category) +
            '</td></tr><tr><th>' + esc(tr('rw')) + '</th><td>' + esc(r.rw_name || r.rw_code || '–') +
            '</td></tr><tr><th>' + esc(tr('from')) + '</th><td>' + esc(String(r.created_at).slice(0, 10)) +
            '</td></tr></table><a class="pl-summary" href="/reports/' + esc(r.id) + '" target="_blank">' +
            esc(tr('summary')) + ' →</a></div>');
          return mk;
        });
        cluster.addLayers ? cluster.addLayers(markers) : markers.forEach(function (mk) { cluster.addLayer(mk); });
        PL.reportCount = items.length;
        PL.reportOpds = items.map(function (r) { return r.opd; });
        var local = worstFromReports(items);
        if (!PL.cfg.worstUrl) {
          worstRows = local;
          PL.reloadTable();
          return;
        }
        // the analysis API's figures (Kaplan-Meier median days), named from the reports
        var names = {};
        local.forEach(function (r) { names[r.rw_code] = {rw: r.rw, kelurahan: r.kelurahan, kelurahan_code: r.kelurahan_code}; });
        fetch(withQuery(PL.cfg.worstUrl), {credentials: 'same-origin'}).then(function (r) {
          return r.ok ? r.json() : null;
        }).then(function (data) {
          var rows = data ? (Array.isArray(data) ? data : (data.rows || data.items || data.features || [])) : null;
          worstRows = rows === null ? local : rows.map(function (r) { return normaliseWorst(r.properties || r, names); })
            .filter(function (r) { return r.rw_code; });
          PL.worstSource = rows === null ? 'reports' : 'analysis';
          PL.reloadTable();
        }).catch(function () { worstRows = local; PL.reloadTable(); });
      });
    }
    PL.onFilters = refresh;
    var b1 = document.getElementById('pl-sort-backlog'), b2 = document.getElementById('pl-sort-days');
    if (b1) { b1.addEventListener('click', function () { PL.sortTable('backlog'); }); }
    if (b2) { b2.addEventListener('click', function () { PL.sortTable('median_days'); }); }
    refresh();
  };

  // ------------------------------------------------------------------ init

  PL.init = function (map, cfg) {
    PL.map = map;
    PL.cfg = cfg;
    PL.metric = cfg.metric || 'count';
    PL.filters = L.extend({}, cfg.filters || {});
    if (cfg.fixedOpd) { PL.filters.opd = cfg.fixedOpd; }
    if (cfg.controls && cfg.controls.filters) { new FilterControl().addTo(map); }
    if (cfg.controls && cfg.controls.legend) {
      PL.legend = new LegendControl().addTo(map);
      map.on('overlayadd overlayremove layeradd layerremove', function () { PL.updateLegend(); });
      PL.updateLegend();
    }
    if (cfg.kpis && cfg.kpis.url) {
      new KpiControl().addTo(map);
      PL.loadKpis();
    }
    if (cfg.bounds) { map.fitBounds(cfg.bounds); }
    if (cfg.sourcesUrl && map.attributionControl) {  // where the data comes from, on every map
      map.attributionControl.addAttribution('<a href="' + esc(cfg.sourcesUrl) +
        '" target="_blank" rel="noopener">' + esc(tr('sources')) + '</a>');
    }
    if (cfg.place) { PL.place = {level: cfg.place[0], code: cfg.place[1]}; PL.zoomTo(cfg.place[0], cfg.place[1]); }
    document.documentElement.setAttribute('lang', cfg.lang || 'id');
    PL.ready = true;
    return PL;
  };
})();
