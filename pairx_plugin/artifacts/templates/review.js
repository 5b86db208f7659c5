/* PAIR-X review page: run view, pair view with toggleable layers, curator decisions.
 * Reads the run's data from the #review-data JSON block. Host strings only ever reach the page
 * through textContent / setAttribute, never as markup. No network except an optional POST of
 * decisions to the serving page's own origin (DATA.post_url). */
(function () {
  'use strict';

  var DATA = JSON.parse(document.getElementById('review-data').textContent);
  var RUN = DATA.run;
  var STORE_KEY = 'pairx-review/v1/' + RUN;
  var LOW_EVIDENCE = 0.5;  // evidence score (or, on old artifacts, inlier ratio) below this is "low evidence"
  var FIRST_ROWS = 150;    // rows rendered at once; more as the list is scrolled
  var KINDS = {
    same: {key: 'y', icon: '\u2713', text: 'same individual'},
    different: {key: 'n', icon: '\u2717', text: 'different'},
    unsure: {key: 'u', icon: '?', text: 'unsure'}
  };
  var LAYERS = [
    {id: 'heat', key: 'h', text: 'heat map'},
    {id: 'lines', key: 'l', text: 'match lines'},
    {id: 'colours', key: 'c', text: 'per-match colours'},
    {id: 'points', key: 'p', text: 'match points'}
  ];
  var SVG_NS = 'http://www.w3.org/2000/svg';

  // ------------------------------------------------------------------ data access (one function per asset)
  function photoUrl(rec, side) { return rec.files['display_' + side] || null; }
  function heatUrl(rec, side) { return rec.files['overlay_heatmap_' + side] || null; }
  function coloursUrl(rec, side) { return rec.files['overlay_colors_' + side] || null; }
  function sizeOf(rec, side) { var s = rec.sizes[side]; return s ? {w: s[0], h: s[1]} : null; }
  function cellSize(rec, side) { var s = rec.stride[side]; return s ? {w: s[0], h: s[1]} : null; }
  function matchesOf(rec) {
    return rec.matches.map(function (m, k) {
      return {k: k, q: [m[0], m[1]], c: [m[2], m[3]], relevance: m[4], colour: m[5]};
    });
  }
  function panelsOf(rec) {
    return Object.keys(rec.files).filter(function (role) { return role.indexOf('overlay_') !== 0; })
      .map(function (role) { return {role: role, href: rec.files[role]}; });
  }

  // ------------------------------------------------------------------ records
  var records = [];
  var byIndex = {};
  DATA.queries.forEach(function (group) {
    group.records.forEach(function (rec) { records.push(rec); byIndex[rec.i] = rec; });
  });
  var mcSorted = records.map(function (r) { return r.metrics && r.metrics.mc; })
    .filter(function (v) { return typeof v === 'number'; }).sort(function (a, b) { return a - b; });

  // the combined evidence score (on the animal x one geometry x enough support); artifacts made
  // before it existed fall back to the inlier ratio
  function evidence(rec) {
    var m = rec.metrics;
    if (!m) { return null; }
    if (typeof m.evidence === 'number') { return m.evidence; }
    return typeof m.inlier_ratio === 'number' ? m.inlier_ratio : null;
  }
  function lowEvidence(rec) { return rec.status === 'explained' && (evidence(rec) === null || evidence(rec) < LOW_EVIDENCE); }
  function mcShare(rec) {
    var v = rec.metrics && rec.metrics.mc;
    if (typeof v !== 'number' || mcSorted.length < 2) { return null; }
    var below = 0;
    while (below < mcSorted.length && mcSorted[below] < v) { below += 1; }
    return below / (mcSorted.length - 1);
  }
  function disagreement(rec) {
    var d = decisionOf(rec);
    if (rec.same === null) { return false; }
    if (d && d.decision !== 'unsure') { return (d.decision === 'same') !== rec.same; }
    return rec.rank === 0 && rec.same === false;  // the model's best guess has another label
  }

  // ------------------------------------------------------------------ formatting
  function fmtScore(v) {
    if (typeof v === 'number') { return v.toFixed(3); }
    return v === 'NaN' ? 'n/a' : (v === 'Infinity' ? '+\u221e' : '\u2212\u221e');
  }
  function fmtEvidence(rec) {
    var e = evidence(rec);
    if (rec.status !== 'explained') { return 'not explained'; }
    if (e === null) { return 'too few matches'; }
    return typeof rec.metrics.evidence === 'number' ? Math.round(e * 100) + '% evidence' : Math.round(e * 100) + '% fit';
  }
  var EVIDENCE_HELP = 'Evidence score (0-100%): how much of the match relevance sits on the animal, agrees on one ' +
    'geometric transform between the two photos, and is backed by enough matches (docs/metrics.md). Below ' +
    Math.round(LOW_EVIDENCE * 100) + '% counts as low evidence. Older artifacts show the inlier ratio instead (% fit).';
  function labelCue(rec) {
    if (rec.same === true) { return {icon: '=', text: 'same label', cls: 'same'}; }
    if (rec.same === false) { return {icon: '\u2260', text: 'other label', cls: 'different'}; }
    return {icon: '\u2026', text: 'label unknown', cls: 'unknown'};
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        if (name === 'class') { node.className = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
      });
    }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }

  // ------------------------------------------------------------------ decisions
  function loadDecisions() {
    try {
      var parsed = JSON.parse(localStorage.getItem(STORE_KEY) || '{}');
      return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {};
    } catch (err) {
      return {};
    }
  }
  var decisions = loadDecisions();
  // a stored decision counts only for the record it was made on (same index, query and candidate id):
  // file:// pages share one storage, and another store may hold a run of the same name
  function decisionOf(rec) {
    var d = decisions[rec.i];
    return d && d.q === rec.q && d.c === rec.c ? d : null;
  }
  var saveStatus = document.getElementById('save-status');

  function saveDecisions() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(decisions));
    } catch (err) {
      saveStatus.textContent = 'Not kept in this browser (' + err.name + '); export the decisions now.';
    }
    updateCount();
  }
  function decisionLine(rec, d) {
    return {
      schema_version: DATA.decision_schema, run_name: RUN, record_index: rec.i, query_id: rec.q,
      candidate_id: rec.c, decision: d.decision, note: d.note || '', decided_at: d.decided_at,
      artifact_id: rec.artifact || null
    };
  }
  function exportText() {
    return records.filter(function (rec) { var d = decisionOf(rec); return d && d.decision; })
      .map(function (rec) { return JSON.stringify(decisionLine(rec, decisionOf(rec))) + '\n'; }).join('');
  }
  function postDecision(rec) {
    if (!DATA.post_url || typeof fetch !== 'function') { return; }
    var body = JSON.stringify(decisionLine(rec, decisionOf(rec))) + '\n';
    fetch(DATA.post_url, {method: 'POST', headers: {'Content-Type': 'application/x-ndjson'}, body: body})
      .then(function (response) {
        saveStatus.textContent = response.ok ? 'Saved to the server.' : 'The server refused the decision (' + response.status + ').';
      })
      .catch(function () { saveStatus.textContent = 'Not saved to the server; it stays in this browser.'; });
  }
  function decide(rec, kind) {
    var previous = decisionOf(rec) || {};
    decisions[rec.i] = {decision: kind, note: previous.note || '', decided_at: new Date().toISOString(), q: rec.q, c: rec.c};
    saveDecisions();
    postDecision(rec);
    refreshRow(rec);
    if (current === rec) { showDecision(rec); }
  }
  function setNote(rec, note) {
    var d = decisionOf(rec) || {decision: null, note: '', decided_at: null, q: rec.q, c: rec.c};
    d.note = note;
    if (d.decision) { d.decided_at = new Date().toISOString(); }
    decisions[rec.i] = d;
    saveDecisions();
  }
  function updateCount() {
    var n = records.filter(function (rec) { var d = decisionOf(rec); return d && d.decision; }).length;
    document.getElementById('decided-count').textContent = n + ' of ' + records.length + ' decided';
  }
  document.getElementById('export').addEventListener('click', function () {
    var text = exportText();
    if (!text) { saveStatus.textContent = 'Nothing decided yet.'; return; }
    var url = URL.createObjectURL(new Blob([text], {type: 'application/x-ndjson'}));
    var link = el('a', {href: url, download: RUN + '.decisions.jsonl'});
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    saveStatus.textContent = 'Exported ' + (text.split('\n').length - 1) + ' decisions.';
  });

  // ------------------------------------------------------------------ run view
  var list = document.getElementById('records');
  var visible = [];      // records in the list's current filter and order
  var rendered = 0;      // how many of them have a row
  var rows = {};         // record index -> row button
  var current = null;

  function decisionBadge(rec) {
    var d = decisionOf(rec);
    return d && d.decision ? KINDS[d.decision].icon + ' ' + KINDS[d.decision].text : 'undecided';
  }
  function rowFor(rec) {
    var item = el('li', {'class': 'record'});
    var button = el('button', {type: 'button', 'class': 'row', 'data-record-index': String(rec.i)});
    var cue = labelCue(rec);
    var header = el('span', {'class': 'who'});
    header.appendChild(el('span', {'class': 'rank'}, '#' + (rec.rank + 1)));
    header.appendChild(el('code', {'class': 'cid'}, rec.c));
    if (sortMode !== 'rank') { header.appendChild(el('span', {'class': 'muted'}, ' for ' + rec.q)); }
    button.appendChild(header);
    var nums = el('span', {'class': 'nums'});
    nums.appendChild(el('span', {'class': 'cue ' + cue.cls, title: 'Labels of the two images: ' + cue.text},
      cue.icon + ' ' + cue.text));
    nums.appendChild(el('span', {title: 'Model score (higher ranks first)'}, 'score ' + fmtScore(rec.score)));
    nums.appendChild(el('span', {'class': lowEvidence(rec) ? 'low' : '', title: EVIDENCE_HELP},
      (lowEvidence(rec) ? '\u26a0 ' : '') + fmtEvidence(rec)));
    button.appendChild(nums);
    button.appendChild(el('span', {'class': 'badge'}, decisionBadge(rec)));
    button.addEventListener('click', function () { select(rec, false); });
    item.appendChild(button);
    rows[rec.i] = button;
    if (current === rec) { button.setAttribute('aria-current', 'true'); }
    return item;
  }
  function refreshRow(rec) {
    var button = rows[rec.i];
    if (button) { button.querySelector('.badge').textContent = decisionBadge(rec); }
  }

  var sortMode = 'rank';
  function computeVisible() {
    var onlyDisagree = document.getElementById('f-disagree').checked;
    var onlyLow = document.getElementById('f-low').checked;
    var onlyUndecided = document.getElementById('f-undecided').checked;
    var out = records.filter(function (rec) {
      var d = decisionOf(rec);
      return (!onlyDisagree || disagreement(rec)) && (!onlyLow || lowEvidence(rec)) &&
        (!onlyUndecided || !(d && d.decision));
    });
    if (sortMode === 'score') {
      out.sort(function (a, b) { return (typeof b.score === 'number' ? b.score : -Infinity) - (typeof a.score === 'number' ? a.score : -Infinity); });
    } else if (sortMode === 'evidence') {
      out.sort(function (a, b) {
        var ea = evidence(a), eb = evidence(b);
        return (ea === null ? -1 : ea) - (eb === null ? -1 : eb);
      });
    }
    return out;
  }
  function renderMore(upTo) {
    var fragment = document.createDocumentFragment();
    var lastQuery = rendered > 0 ? visible[rendered - 1].q : null;
    while (rendered < Math.min(upTo, visible.length)) {
      var rec = visible[rendered];
      if (sortMode === 'rank' && rec.q !== lastQuery) {
        var heading = el('li', {'class': 'query-heading'});
        heading.appendChild(el('span', null, 'Query '));
        heading.appendChild(el('code', null, rec.q));
        if (rec.ql !== null) { heading.appendChild(el('span', {'class': 'muted'}, ' label ' + rec.ql)); }
        fragment.appendChild(heading);
        lastQuery = rec.q;
      }
      fragment.appendChild(rowFor(rec));
      rendered += 1;
    }
    list.insertBefore(fragment, sentinel);
  }
  var sentinel = el('li', {'class': 'sentinel', 'aria-hidden': 'true'});
  function rebuildList() {
    visible = computeVisible();
    rendered = 0;
    rows = {};
    list.textContent = '';
    list.appendChild(sentinel);
    renderMore(FIRST_ROWS);
    document.getElementById('list-count').textContent = visible.length + ' of ' + records.length + ' records shown';
  }
  if ('IntersectionObserver' in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) { renderMore(rendered + FIRST_ROWS); }
    }, {root: document.getElementById('run-view'), rootMargin: '400px'}).observe(sentinel);
  }
  ['f-disagree', 'f-low', 'f-undecided'].forEach(function (id) {
    document.getElementById(id).addEventListener('change', rebuildList);
  });
  document.getElementById('sort').addEventListener('change', function (event) {
    sortMode = event.target.value;
    rebuildList();
  });

  function select(rec, focusRow) {
    if (current && rows[current.i]) { rows[current.i].removeAttribute('aria-current'); }
    current = rec;
    var position = visible.indexOf(rec);
    if (position >= rendered) { renderMore(position + FIRST_ROWS); }
    var button = rows[rec.i];
    if (button) {
      button.setAttribute('aria-current', 'true');
      button.scrollIntoView({block: 'nearest'});
      if (focusRow) { button.focus({preventScroll: true}); }
    }
    history.replaceState(null, '', '#r' + rec.i);
    renderPair(rec);
  }
  function step(delta) {
    if (!visible.length) { return; }
    var position = current ? visible.indexOf(current) : -1;
    var next = position < 0 ? 0 : Math.max(0, Math.min(visible.length - 1, position + delta));
    select(visible[next], document.activeElement && document.activeElement.classList.contains('row'));
  }

  // ------------------------------------------------------------------ pair view
  var pairView = document.getElementById('pair-view');
  var layerOn = {heat: true, lines: true, colours: false, points: true};
  var opacity = 0.7;
  var pinned = null;
  var stageParts = null;  // {stage, figures, svg, info, table} of the shown record

  function showDecision(rec) {
    var d = decisionOf(rec);
    pairView.querySelectorAll('.decide button').forEach(function (button) {
      button.setAttribute('aria-pressed', d && d.decision === button.getAttribute('data-kind') ? 'true' : 'false');
    });
    var status = pairView.querySelector('.decision-status');
    status.textContent = d && d.decision ? 'Decided: ' + KINDS[d.decision].icon + ' ' + KINDS[d.decision].text : 'Not decided yet.';
  }

  function numbersLine(rec) {
    var p = el('p', {'class': 'numbers'});
    function item(text, help) { p.appendChild(el('span', {title: help}, text)); }
    item('score ' + fmtScore(rec.score), 'The host model\'s score for this candidate (rank ' + (rec.rank + 1) + ').');
    if (rec.cosine !== null) { item('cosine ' + rec.cosine.toFixed(3), 'Cosine similarity of the two embeddings that PAIR-X explained.'); }
    if (rec.status === 'explained') {
      item('evidence: ' + fmtEvidence(rec), EVIDENCE_HELP);
      if (typeof rec.metrics.irm === 'number') {
        item('geometry fit ' + rec.metrics.irm.toFixed(2), 'IRM: 1 / (1 + mean reprojection error in pixels) of all matches under one ' +
          'homography; 1 is a perfect fit, near 0 means scattered matches.');
      }
      var share = mcShare(rec);
      if (share !== null) {
        item(share >= 1 ? 'match relevance: highest in this run' : (share <= 0 ? 'match relevance: lowest in this run' :
          'match relevance above ' + Math.round(share * 100) + '% of this run\'s pairs'), 'MC: mean relevance of the top matches (raw ' +
          rec.metrics.mc.toExponential(2) + '). Its scale depends on the model, so it is shown against the other pairs of this run.');
      }
      item(rec.metrics.match_count + ' matches', 'Mutual nearest-neighbour matches between the two feature maps.');
      if (rec.layer) { item('layer ' + rec.layer, 'The model layer whose features were matched.'); }
    }
    return p;
  }

  function renderPair(rec) {
    pairView.textContent = '';
    pinned = null;
    stageParts = null;
    var cue = labelCue(rec);
    var title = el('h2');
    title.appendChild(el('span', null, 'Query '));
    title.appendChild(el('code', {'class': 'qid'}, rec.q));
    title.appendChild(el('span', null, ' vs candidate #' + (rec.rank + 1) + ' '));
    title.appendChild(el('code', {'class': 'cid'}, rec.c));
    pairView.appendChild(title);
    var labels = el('p', {'class': 'labels'});
    labels.appendChild(el('span', {'class': 'cue ' + cue.cls}, cue.icon + ' ' + cue.text));
    labels.appendChild(el('span', null, ' (query label: ' + (rec.ql === null ? 'unknown' : rec.ql) +
      ', candidate label: ' + (rec.cl === null ? 'unknown' : rec.cl) + ')'));
    pairView.appendChild(labels);
    pairView.appendChild(numbersLine(rec));

    var decide = el('div', {'class': 'decide', role: 'group', 'aria-label': 'Decision for this record'});
    Object.keys(KINDS).forEach(function (kind) {
      var button = el('button', {type: 'button', 'data-kind': kind, 'aria-pressed': 'false', 'class': 'kind-' + kind},
        KINDS[kind].icon + ' ' + KINDS[kind].text + ' (' + KINDS[kind].key + ')');
      button.addEventListener('click', function () { decide(rec, kind); });
      decide.appendChild(button);
    });
    var noteLabel = el('label', {'class': 'note'}, 'Note (e): ');
    var note = el('textarea', {rows: '2', cols: '40', id: 'note', maxlength: '4000'});
    note.value = (decisionOf(rec) && decisionOf(rec).note) || '';
    note.addEventListener('input', function () { setNote(rec, note.value); });
    noteLabel.appendChild(note);
    decide.appendChild(noteLabel);
    decide.appendChild(el('span', {'class': 'decision-status', 'aria-live': 'polite'}));
    pairView.appendChild(decide);
    showDecision(rec);

    if (rec.error) { pairView.appendChild(el('p', {'class': 'error'}, 'Not explained: ' + rec.error)); }
    if (rec.status === 'not_explained' && !rec.error) {
      pairView.appendChild(el('p', {'class': 'muted'}, 'Not explained (outside top_k or explanations off): no photos to show.'));
    }
    if (rec.missing.length) { pairView.appendChild(el('p', {'class': 'error'}, 'Missing files: ' + rec.missing.join(', '))); }
    if (photoUrl(rec, 'query') && photoUrl(rec, 'candidate') && sizeOf(rec, 'query') && sizeOf(rec, 'candidate')) {
      pairView.appendChild(layerControls(rec));
      buildStage(rec);
    } else if (rec.files.composite) {
      pairView.appendChild(el('img', {'class': 'composite', src: rec.files.composite,
        alt: 'PAIR-X composite for query ' + rec.q + ' and candidate ' + rec.c}));
    }
    var panels = panelsOf(rec);
    if (panels.length || rec.json) {
      var more = el('details', {'class': 'panels'});
      more.appendChild(el('summary', null, 'All panels and the explanation file'));
      panels.forEach(function (panel) {
        var figure = el('figure');
        var link = el('a', {href: panel.href});
        link.appendChild(el('img', {src: panel.href, alt: panel.role + ' panel', loading: 'lazy'}));
        figure.appendChild(link);
        figure.appendChild(el('figcaption', null, panel.role));
        more.appendChild(figure);
      });
      if (rec.json) { more.appendChild(el('p')).appendChild(el('a', {href: rec.json, 'class': 'json'}, 'explanation.json')); }
      pairView.appendChild(more);
    }
  }

  function layerControls(rec) {
    var box = el('fieldset', {'class': 'layers'});
    box.appendChild(el('legend', null, 'Layers'));
    LAYERS.forEach(function (layer) {
      var label = el('label');
      var input = el('input', {type: 'checkbox', id: 'layer-' + layer.id});
      input.checked = layerOn[layer.id];
      input.addEventListener('change', function () { setLayer(layer.id, input.checked); });
      label.appendChild(input);
      label.appendChild(document.createTextNode(' ' + layer.text + ' (' + layer.key + ')'));
      box.appendChild(label);
    });
    var label = el('label', null, 'opacity ([ ]) ');
    var range = el('input', {type: 'range', id: 'opacity', min: '0', max: '100', step: '5'});
    range.value = String(Math.round(opacity * 100));
    range.addEventListener('input', function () { setOpacity(Number(range.value) / 100); });
    label.appendChild(range);
    box.appendChild(label);
    return box;
  }
  function setLayer(id, on) {
    layerOn[id] = on;
    var input = document.getElementById('layer-' + id);
    if (input) { input.checked = on; }
    applyLayers();
  }
  function setOpacity(value) {
    opacity = Math.max(0, Math.min(1, value));
    var range = document.getElementById('opacity');
    if (range) { range.value = String(Math.round(opacity * 100)); }
    applyLayers();
  }
  function applyLayers() {
    if (!stageParts) { return; }
    stageParts.stage.querySelectorAll('[data-layer]').forEach(function (node) {
      var on = layerOn[node.getAttribute('data-layer')];
      node.style.display = on ? '' : 'none';
      node.style.opacity = String(opacity);
    });
  }

  function buildStage(rec) {
    var stage = el('div', {'class': 'stage'});
    var figures = {};
    ['query', 'candidate'].forEach(function (side) {
      var figure = el('figure', {'class': 'photo ' + side});
      var id = side === 'query' ? rec.q : rec.c;
      figure.appendChild(el('img', {'class': 'clean', src: photoUrl(rec, side), alt: side + ' photo ' + id}));
      if (heatUrl(rec, side)) {
        figure.appendChild(el('img', {'class': 'layer', 'data-layer': 'heat', src: heatUrl(rec, side), alt: ''}));
      }
      if (coloursUrl(rec, side)) {
        figure.appendChild(el('img', {'class': 'layer', 'data-layer': 'colours', src: coloursUrl(rec, side), alt: ''}));
      }
      figure.appendChild(el('figcaption', null, side + ' ' + id));
      stage.appendChild(figure);
      figures[side] = figure;
    });
    var marks = svg('svg', {'class': 'marks', 'aria-hidden': 'true'});
    stage.appendChild(marks);
    pairView.appendChild(stage);
    var info = el('p', {'class': 'match-info', 'aria-live': 'polite'}, 'Hover or focus a match to highlight it in both photos.');
    pairView.appendChild(info);
    var table = matchTable(rec);
    pairView.appendChild(table);
    stageParts = {rec: rec, stage: stage, figures: figures, svg: marks, info: info, table: table};
    layoutStage();
  }

  function layoutStage() {
    if (!stageParts) { return; }
    var rec = stageParts.rec, stage = stageParts.stage;
    var q = sizeOf(rec, 'query'), c = sizeOf(rec, 'candidate');
    var gap = 12;
    var width = Math.max(200, stage.clientWidth - gap);
    var maxHeight = Math.max(220, window.innerHeight * 0.62);
    var height = Math.min(maxHeight, width / (q.w / q.h + c.w / c.h));
    var boxes = {};
    ['query', 'candidate'].forEach(function (side) {
      var size = side === 'query' ? q : c;
      var w = Math.floor(height * size.w / size.h), h = Math.floor(height);
      stageParts.figures[side].querySelectorAll('img').forEach(function (img) {
        img.style.width = w + 'px';
        img.style.height = h + 'px';
      });
      stageParts.figures[side].style.width = w + 'px';
    });
    var stageBox = stage.getBoundingClientRect();
    ['query', 'candidate'].forEach(function (side) {
      var box = stageParts.figures[side].querySelector('img.clean').getBoundingClientRect();
      var size = side === 'query' ? q : c;
      boxes[side] = {x: box.left - stageBox.left, y: box.top - stageBox.top, s: box.width / size.w, t: box.height / size.h};
    });
    stageParts.boxes = boxes;
    drawMarks();
    applyLayers();
  }

  function toStage(side, xy) {
    var b = stageParts.boxes[side];
    return [b.x + xy[0] * b.s, b.y + xy[1] * b.t];
  }
  function lineColour(k) { return DATA.palette.lines[k % DATA.palette.lines.length]; }
  function mapColour(m) { return m.colour === null || m.colour === undefined ? null : DATA.palette.maps[m.colour % DATA.palette.maps.length]; }

  function drawMarks() {
    var rec = stageParts.rec, marks = stageParts.svg;
    marks.textContent = '';
    var stageBox = stageParts.stage.getBoundingClientRect();
    marks.setAttribute('width', String(Math.ceil(stageBox.width)));
    marks.setAttribute('height', String(Math.ceil(stageBox.height)));
    var cells = svg('g', {'class': 'cells'});
    var lines = svg('g', {'data-layer': 'lines'});
    var points = svg('g', {'data-layer': 'points'});
    matchesOf(rec).forEach(function (m) {
      var a = toStage('query', m.q), b = toStage('candidate', m.c);
      lines.appendChild(svg('line', {x1: a[0], y1: a[1], x2: b[0], y2: b[1], stroke: lineColour(m.k),
        'stroke-width': '2', 'data-match': String(m.k)}));
      [a, b].forEach(function (p) {
        var dot = svg('g', {'data-match': String(m.k), 'class': 'point'});
        dot.appendChild(svg('circle', {cx: p[0], cy: p[1], r: '5', fill: lineColour(m.k), stroke: '#fff', 'stroke-width': '1.5'}));
        var label = svg('text', {x: p[0] + 7, y: p[1] - 5, fill: lineColour(m.k), stroke: '#fff', 'stroke-width': '0.8',
          'paint-order': 'stroke', 'font-size': '12', 'font-weight': 'bold'});
        label.textContent = String(m.k + 1);
        dot.appendChild(label);
        dot.addEventListener('mouseenter', function () { highlight(m.k); });
        dot.addEventListener('mouseleave', function () { highlight(pinned); });
        dot.addEventListener('click', function () { pin(m.k); });
        points.appendChild(dot);
      });
    });
    marks.appendChild(lines);
    marks.appendChild(points);
    marks.appendChild(cells);
    highlight(pinned);
  }

  // curator lines (schema 1.3) chosen on the animal say so; older artifacts list the published top matches
  function matchCaption(rec, n) {
    if (rec.lines === 'foreground') {
      return n ? n + ' most relevant matches on the animal that agree on one pose (host foreground)'
        : 'No matches on the animal agree on one pose (host foreground)';
    }
    return n ? 'Top ' + n + ' matches, most relevant first' : 'No matches stored';
  }

  function matchTable(rec) {
    var matches = matchesOf(rec);
    var table = el('table', {'class': 'matches'});
    table.appendChild(el('caption', null, matchCaption(rec, matches.length)));
    var head = el('tr');
    ['#', 'line', 'pixel colour', 'relevance share', 'query point', 'candidate point'].forEach(function (name) { head.appendChild(el('th', {scope: 'col'}, name)); });
    table.appendChild(head);
    var total = matches.reduce(function (sum, m) { return sum + (m.relevance > 0 ? m.relevance : 0); }, 0);
    matches.forEach(function (m) {
      var row = el('tr', {tabindex: '0', 'data-match': String(m.k)});
      row.appendChild(el('td', null, String(m.k + 1)));
      var swatch = el('td');
      swatch.appendChild(el('span', {'class': 'swatch', 'data-colour': lineColour(m.k)}, '\u25cf'));
      row.appendChild(swatch);
      var colourCell = el('td');
      var colour = mapColour(m);
      if (colour) {
        colourCell.appendChild(el('span', {'class': 'swatch', 'data-colour': colour}, '\u25a0'));
        colourCell.appendChild(document.createTextNode(' ' + DATA.palette.map_names[m.colour % DATA.palette.map_names.length]));
      } else {
        colourCell.textContent = '\u2014';
      }
      row.appendChild(colourCell);
      row.appendChild(el('td', null, total > 0 && m.relevance !== null ? (100 * m.relevance / total).toFixed(1) + '%' : 'n/a'));
      row.appendChild(el('td', null, '(' + Math.round(m.q[0]) + ', ' + Math.round(m.q[1]) + ') px'));
      row.appendChild(el('td', null, '(' + Math.round(m.c[0]) + ', ' + Math.round(m.c[1]) + ') px'));
      row.addEventListener('mouseenter', function () { highlight(m.k); });
      row.addEventListener('mouseleave', function () { highlight(pinned); });
      row.addEventListener('focus', function () { pin(m.k); });
      row.addEventListener('click', function () { pin(m.k); });
      table.appendChild(row);
    });
    table.querySelectorAll('.swatch').forEach(function (node) { node.style.color = node.getAttribute('data-colour'); });
    return table;
  }

  function pin(k) { pinned = k; highlight(k); }
  function highlight(k) {
    if (!stageParts) { return; }
    var rec = stageParts.rec, marks = stageParts.svg;
    marks.classList.toggle('focused', k !== null && k !== undefined);
    marks.querySelectorAll('[data-match]').forEach(function (node) {
      node.classList.toggle('hl', String(k) === node.getAttribute('data-match'));
    });
    stageParts.table.querySelectorAll('tr[data-match]').forEach(function (row) {
      row.classList.toggle('hl', String(k) === row.getAttribute('data-match'));
    });
    var cells = marks.querySelector('.cells');
    cells.textContent = '';
    if (k === null || k === undefined) {
      stageParts.info.textContent = 'Hover or focus a match to highlight it in both photos.';
      return;
    }
    var m = matchesOf(rec)[k];
    ['query', 'candidate'].forEach(function (side) {
      var size = cellSize(rec, side);
      if (!size) { return; }
      var centre = toStage(side, side === 'query' ? m.q : m.c), b = stageParts.boxes[side];
      cells.appendChild(svg('rect', {x: centre[0] - size.w * b.s / 2, y: centre[1] - size.h * b.t / 2,
        width: size.w * b.s, height: size.h * b.t, fill: 'none', stroke: '#fff', 'stroke-width': '2', 'stroke-dasharray': '4 3'}));
    });
    var colour = mapColour(m);
    stageParts.info.textContent = 'Match ' + (k + 1) + ': query cell at (' + Math.round(m.q[0]) + ', ' + Math.round(m.q[1]) +
      ') px \u2194 candidate cell at (' + Math.round(m.c[0]) + ', ' + Math.round(m.c[1]) + ') px; relevance ' +
      (m.relevance === null ? 'n/a' : m.relevance.toExponential(2)) +
      (colour ? '; pixels drawn in the ' + DATA.palette.map_names[m.colour % DATA.palette.map_names.length] + ' map' : '') + '.';
  }
  function cycleMatch(delta) {
    if (!stageParts) { return; }
    var n = stageParts.rec.matches.length;
    if (!n) { return; }
    pin(pinned === null ? (delta > 0 ? 0 : n - 1) : (pinned + delta + n) % n);
  }

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(layoutStage, 100);
  });

  // ------------------------------------------------------------------ keyboard
  var help = document.getElementById('help');
  var helpToggle = document.getElementById('help-toggle');
  function toggleHelp() {
    help.hidden = !help.hidden;
    helpToggle.setAttribute('aria-expanded', help.hidden ? 'false' : 'true');
  }
  helpToggle.addEventListener('click', toggleHelp);

  document.addEventListener('keydown', function (event) {
    var target = event.target;
    var typing = target && (target.tagName === 'TEXTAREA' || target.tagName === 'SELECT' ||
      (target.tagName === 'INPUT' && ['checkbox', 'range', 'button'].indexOf(target.type) < 0));
    if (typing) {
      if (event.key === 'Escape') { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var handled = true;
    switch (event.key) {
      case 'j': step(1); break;
      case 'k': step(-1); break;
      case 'y': if (current) { decide(current, 'same'); } break;
      case 'n': if (current) { decide(current, 'different'); } break;
      case 'u': if (current) { decide(current, 'unsure'); } break;
      case 'e': if (document.getElementById('note')) { document.getElementById('note').focus(); } break;
      case 'h': setLayer('heat', !layerOn.heat); break;
      case 'l': setLayer('lines', !layerOn.lines); break;
      case 'c': setLayer('colours', !layerOn.colours); break;
      case 'p': setLayer('points', !layerOn.points); break;
      case '[': setOpacity(opacity - 0.1); break;
      case ']': setOpacity(opacity + 0.1); break;
      case 'm': cycleMatch(1); break;
      case 'M': cycleMatch(-1); break;
      case '?': toggleHelp(); break;
      default: handled = false;
    }
    if (handled) { event.preventDefault(); }
  });

  // ------------------------------------------------------------------ start
  rebuildList();
  updateCount();
  var fromHash = /^#r(\d+)$/.exec(location.hash);
  if (fromHash && byIndex[fromHash[1]]) { select(byIndex[fromHash[1]], false); }
  window.pairxReview = {exportText: exportText, ready: true};
}());
