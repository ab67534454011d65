/* /embed/builder: build the /embed URL from the form, preview it, copy the <iframe> snippet. */
(function () {
  'use strict';
  var DEFAULTS = {period: '365d', metric: 'count', layer: 'hexes', lang: 'id'};

  function embedUrl(form) {
    var q = [];
    ['layer', 'metric', 'category', 'period', 'lang'].forEach(function (k) {
      var v = form.elements[k].value;
      if (v && v !== DEFAULTS[k]) { q.push(k + '=' + encodeURIComponent(v)); }
    });
    var area = form.elements.area.value.trim();
    if (area) {
      q.push((area.indexOf(',') >= 0 ? 'bbox=' : 'kelurahan=') + encodeURIComponent(area));
    }
    return '/embed' + (q.length ? '?' + q.join('&') : '');
  }

  function update() {
    var form = document.getElementById('pl-builder');
    var url = embedUrl(form);
    document.getElementById('b-preview').src = url;
    document.getElementById('b-snippet').value =
      '<iframe src="' + window.location.origin + url + '" width="600" height="420" ' +
      'style="border:0" loading="lazy" title="petalapor"></iframe>';
  }

  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('pl-builder');
    form.addEventListener('change', update);
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
