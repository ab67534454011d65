/* /embed/builder: build the /embed URL from the form, preview it, copy the <iframe> snippet. */
(function () {
  'use strict';
  var DEFAULTS = {period: '365d', metric: 'count', layer: 'hexes', lang: 'id'};

  var BBOX = /^\s*-?\d+(\.\d+)?\s*(,\s*-?\d+(\.\d+)?\s*){3}$/;

  /* The kelurahan offered in the datalist: {code: label} and {lower-case name: code}. */
  function areaIndex() {
    var byCode = {}, byName = {};
    Array.prototype.forEach.call(document.querySelectorAll('#b-areas option'), function (o) {
      var label = o.getAttribute('label') || o.value;
      byCode[o.value] = label;
      byName[label.toLowerCase()] = o.value;
      byName[label.split(',')[0].trim().toLowerCase()] = o.value;
    });
    return {byCode: byCode, byName: byName};
  }

  /* What the area field means: {param, value, note, warn}. A name becomes its code. */
  function resolveArea(text, index) {
    var t = text.trim(), msg = window.PL_BUILDER || {};
    if (!t) { return {note: ''}; }
    if (t.indexOf(',') >= 0) {
      if (index.byName[t.toLowerCase()]) {
        var c = index.byName[t.toLowerCase()];
        return {param: 'kelurahan', value: c, note: index.byCode[c] + ' (' + c + ')'};
      }
      if (BBOX.test(t)) { return {param: 'bbox', value: t.replace(/\s+/g, ''), note: 'bbox'}; }
      return {note: msg.bbox_bad || 'bad bbox', warn: true};
    }
    var code = index.byCode[t] ? t : index.byName[t.toLowerCase()];
    if (code) { return {param: 'kelurahan', value: code, note: index.byCode[code] + ' (' + code + ')'}; }
    return {note: msg.area_unknown || 'unknown kelurahan', warn: true};
  }

  function embedUrl(form, area) {
    var q = [];
    ['layer', 'metric', 'category', 'period', 'lang'].forEach(function (k) {
      var v = form.elements[k].value;
      if (v && v !== DEFAULTS[k]) { q.push(k + '=' + encodeURIComponent(v)); }
    });
    if (area.param) { q.push(area.param + '=' + encodeURIComponent(area.value)); }
    return '/embed' + (q.length ? '?' + q.join('&') : '');
  }

  var INDEX = null;

  function update() {
    var form = document.getElementById('pl-builder');
    INDEX = INDEX || areaIndex();
    var area = resolveArea(form.elements.area.value, INDEX);
    var note = document.getElementById('b-area-note');
    note.textContent = area.note;
    note.className = 'pl-note' + (area.warn ? ' pl-warn' : '');
    var url = embedUrl(form, area);
    document.getElementById('b-preview').src = url;
    document.getElementById('b-snippet').value =
      '<iframe src="' + window.location.origin + url + '" width="600" height="420" ' +
      'style="border:0" loading="lazy" title="petalapor"></iframe>';
  }

  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('pl-builder');
    form.addEventListener('change', update);
    // a pick from the list sets the field without a change event in some browsers
    form.elements.area.addEventListener('input', function () {
      INDEX = INDEX || areaIndex();
      if (INDEX.byCode[this.value]) { update(); }
    });
    form.addEventListener('submit', function (e) { e.preventDefault(); update(); });
    document.getElementById('b-copy').addEventListener('click', function () {
      var area = document.getElementById('b-snippet');
      var btn = this, text = window.PL_BUILDER || {};
      area.select();
      var done = function () { btn.textContent = text.copied || 'Copied'; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(area.value).then(done, function () { document.execCommand('copy'); done(); });
      } else {
        document.execCommand('copy');
        done();
      }
    });
    update();
  });
})();
