(function(){
'use strict';
// The archc HTML viewer. The page holds Graphviz's full-depth layout (every layer); this script
//  * collapses frames into boxes sized to their label and closes up the space they leave along the flow
//    axis (a monotone piecewise-linear map of that coordinate: nothing crosses, the layout stays put),
//  * redraws every edge that enters or leaves a collapsed box, with an arrowhead, to the box's border,
//  * pans (drag) and zooms (wheel, buttons, keys) by moving the SVG viewBox; "fit" shows everything,
//  * searches labels and ops, selects a layer or block (click, arrows) and shows its details in a panel.
const META = JSON.parse(document.getElementById('arch-meta').textContent);
const svg = document.querySelector('#canvas svg');
const root = svg.querySelector('g.graph');
const AX = META.axis;                 // the axis along which the layers flow: 'y' (TB) or 'x' (LR)
const GAP = 22;                       // empty space left where a collapsed block's contents were
const NS = 'http://www.w3.org/2000/svg';
const tip = document.getElementById('tip');
const panel = document.getElementById('panel');
const collapsed = new Set();
const lo = b => AX === 'y' ? b.y : b.x;
const hi = b => AX === 'y' ? b.y + b.height : b.x + b.width;
const tagged = Array.from(svg.querySelectorAll('g.node, g.edge, g.cluster'));
const info = new Map();
const nodeAnc = {};
for (const el of tagged) {
  const anc = (el.getAttribute('class') || '').split(/\s+/).filter(c => c.startsWith('in-')).map(c => c.slice(3));
  info.set(el, {anc: anc, box: el.getBBox(), texts: Array.from(el.querySelectorAll('text')).map(t => t.getBBox())});
  if (el.classList.contains('node')) nodeAnc[el.id] = anc;
}
// original geometry of everything that is not moved rigidly (edges, cluster frames, the background)
const geo = [];
const remember = (el, attr) => { if (el && el.hasAttribute(attr)) geo.push({el: el, attr: attr, orig: el.getAttribute(attr)}); };
for (const g of tagged) {
  if (g.classList.contains('node')) continue;
  g.querySelectorAll('path').forEach(e => remember(e, 'd'));
  g.querySelectorAll('polygon, polyline').forEach(e => remember(e, 'points'));
  g.querySelectorAll('text').forEach(e => remember(e, AX));
}
remember(root.querySelector(':scope > polygon'), 'points');
const T0 = root.transform.baseVal.consolidate();
const OFF = T0 ? {x: T0.matrix.e, y: T0.matrix.f} : {x: 0, y: 0};   // root -> svg coordinates
svg.removeAttribute('width'); svg.removeAttribute('height');
svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
// an arrowhead for the edges this script draws (same look as Graphviz's)
const defs = document.createElementNS(NS, 'defs');
defs.innerHTML = '<marker id="arch-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ' +
  'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker>';
svg.insertBefore(defs, svg.firstChild);

const boxes = {};          // item id (node id or collapsed cluster id) -> its box after the last render
let adj = {out: {}, in: {}};
let selected = null;

function overlayLines(cid) { return META.clusters[cid].label.split('\n').concat(['(click to expand)']); }
function outer(nodeId) {   // the outermost collapsed frame around a node, or null
  const anc = nodeAnc[nodeId] || [];
  for (let k = anc.length - 1; k >= 0; k--) if (collapsed.has(anc[k])) return anc[k];
  return null;
}
const itemOf = nodeId => outer(nodeId) || nodeId;

function render() {
  svg.querySelectorAll('.arch-overlay, .arch-edge').forEach(o => o.remove());
  const occ = [], overlays = [];
  for (const el of tagged) {
    const i = info.get(el);
    const hidden = i.anc.some(c => collapsed.has(c));
    const self = el.classList.contains('cluster') && collapsed.has(el.id);
    el.classList.toggle('arch-hidden', hidden || self);
    if (hidden) continue;
    if (self) {
      const lines = overlayLines(el.id);
      const need = AX === 'y' ? 10 + 12 * lines.length : 14 + 5.6 * Math.max(...lines.map(l => l.length));
      occ.push([lo(i.box), Math.min(hi(i.box), lo(i.box) + need)]);
      overlays.push({el: el, lines: lines, need: need});
    } else if (el.classList.contains('node')) {
      occ.push([lo(i.box), hi(i.box)]);
    } else if (el.classList.contains('cluster')) {
      const end = i.texts.length ? Math.max(...i.texts.map(hi)) + 4 : lo(i.box) + 8;
      occ.push([lo(i.box), end]);
      occ.push([hi(i.box) - 8, hi(i.box)]);
    } else {
      i.texts.forEach(t => occ.push([lo(t), hi(t)]));
    }
  }
  // squeeze every empty stretch along the flow axis down to GAP: a monotone piecewise-linear map
  occ.sort((a, b) => a[0] - b[0]);
  const cuts = [];
  let end = null;
  for (const [a, b] of occ) {
    if (end !== null && a - end > GAP) cuts.push([end, a]);
    end = end === null ? b : Math.max(end, b);
  }
  const f = v => {
    let d = 0;
    for (const [s, e] of cuts) {
      const len = e - s;
      if (v >= e) d += len - GAP; else if (v > s) d += (v - s) * (1 - GAP / len);
    }
    return v - d;
  };
  const pair = /(-?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?),(-?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)/g;
  const mapPairs = s => s.replace(pair, (m, x, y) => AX === 'y' ? x + ',' + f(+y).toFixed(2) : f(+x).toFixed(2) + ',' + y);
  for (const g of geo) {
    g.el.setAttribute(g.attr, g.attr === 'x' || g.attr === 'y' ? f(+g.orig).toFixed(2) : mapPairs(g.orig));
  }
  for (const k in boxes) delete boxes[k];
  for (const el of tagged) {
    if (!el.classList.contains('node')) continue;
    const b = info.get(el).box, d = f(lo(b)) - lo(b);
    el.setAttribute('transform', AX === 'y' ? 'translate(0,' + d.toFixed(2) + ')' : 'translate(' + d.toFixed(2) + ',0)');
    boxes[el.id] = AX === 'y' ? {x: b.x, y: b.y + d, width: b.width, height: b.height}
                              : {x: b.x + d, y: b.y, width: b.width, height: b.height};
  }
  // a collapsed block: a box as large as its label, where its frame began, centred across the flow
  for (const o of overlays) {
    const cid = o.el.id, b = info.get(o.el).box;
    const across = AX === 'y' ? Math.min(b.width, 14 + 5.6 * Math.max(...o.lines.map(l => l.length)))
                              : Math.min(b.height, 8 + 12 * o.lines.length);
    const a0 = f(lo(b)), a1 = Math.min(f(hi(b)), a0 + o.need);
    const x = AX === 'y' ? b.x + (b.width - across) / 2 : a0;
    const y = AX === 'y' ? a0 : b.y + (b.height - across) / 2;
    const w = AX === 'y' ? across : a1 - a0, h = AX === 'y' ? a1 - a0 : across;
    const g = document.createElementNS(NS, 'g');
    g.setAttribute('class', 'arch-overlay');
    g.setAttribute('data-cluster', cid);
    g.setAttribute('id', 'ov-' + cid);
    const r = document.createElementNS(NS, 'rect');
    g.appendChild(r);
    root.appendChild(g);
    const texts = o.lines.map((line, k) => {
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('y', y + 13 + 12 * k);
      t.textContent = line;
      g.appendChild(t);
      return t;
    });
    // now that the text is laid out, fit the box to it (the estimate above only reserved the space)
    const tw = Math.max(...texts.map(t => t.getComputedTextLength())) + 12;
    let bx = x, bw = w;
    if (AX === 'y') { bw = Math.min(b.width, tw); bx = b.x + (b.width - bw) / 2; } else { bw = Math.min(w, tw); }
    texts.forEach(t => t.setAttribute('x', bx + 6));
    r.setAttribute('x', bx); r.setAttribute('y', y); r.setAttribute('rx', 4);
    r.setAttribute('width', bw); r.setAttribute('height', h);
    boxes[cid] = {x: bx, y: y, width: bw, height: h};
    g.addEventListener('click', ev => { ev.stopPropagation(); if (dragged) return; expand(cid); });
    g.addEventListener('mousemove', ev => showTip(ev, META.clusters[cid].tip));
    g.addEventListener('mouseleave', hideTip);
  }
  // edges into or out of a collapsed block: drawn again, border to border, with an arrowhead; once per pair
  adj = {out: {}, in: {}};
  const drawn = new Set();
  for (const el of svg.querySelectorAll('g.edge')) {
    const e = META.edges[el.id];
    if (!e || el.classList.contains('arch-hidden')) continue;
    const s = itemOf(e[0]), t = itemOf(e[1]);
    if (s !== t) {
      (adj.out[s] = adj.out[s] || []).push(t);
      (adj.in[t] = adj.in[t] || []).push(s);
    }
    if (s === e[0] && t === e[1]) continue;
    el.classList.add('arch-hidden');
    const key = s + '>' + t + '>' + e[2];
    if (s === t || drawn.has(key) || !boxes[s] || !boxes[t]) continue;
    drawn.add(key);
    root.appendChild(edgePath(boxes[s], boxes[t], e[2]));
  }
  const W = root.getBBox();
  content = {x: W.x + OFF.x - 4, y: W.y + OFF.y - 4, w: W.width + 8, h: W.height + 8};
  const shown = tagged.filter(el => el.classList.contains('node') && !el.classList.contains('arch-hidden')).length;
  document.getElementById('count').textContent = shown + ' layers shown, ' + overlays.length + ' collapsed blocks';
  if (selected && !boxes[selected]) select(null); else markSelected();
  highlight();
}
function edgePath(a, b, label) {
  // from the side of ``a`` facing the flow to the opposite side of ``b``
  const p = AX === 'y' ? [a.x + a.width / 2, a.y + a.height, b.x + b.width / 2, b.y]
                       : [a.x + a.width, a.y + a.height / 2, b.x, b.y + b.height / 2];
  const back = AX === 'y' ? p[3] < p[1] : p[2] < p[0];
  if (META.rev || back) {   // drawn against the flow (BT, RL, or a wire going back): leave the other side
    if (AX === 'y') { p[1] = a.y; p[3] = b.y + b.height; } else { p[0] = a.x; p[2] = b.x + b.width; }
  }
  const m = AX === 'y' ? (p[3] - p[1]) / 2 : (p[2] - p[0]) / 2;
  const c = AX === 'y' ? [p[0], p[1] + m, p[2], p[3] - m] : [p[0] + m, p[1], p[2] - m, p[3]];
  const g = document.createElementNS(NS, 'g');
  g.setAttribute('class', 'arch-edge');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', 'M' + p[0] + ',' + p[1] + ' C' + c.join(',') + ' ' + p[2] + ',' + p[3]);
  path.setAttribute('marker-end', 'url(#arch-arrow)');
  g.appendChild(path);
  const t = document.createElementNS(NS, 'text');
  t.setAttribute('x', (p[0] + p[2]) / 2 + 3); t.setAttribute('y', (p[1] + p[3]) / 2);
  t.textContent = label;
  g.appendChild(t);
  return g;
}

// ------------------------------------------------------------------------------- pan and zoom
let content = {x: 0, y: 0, w: 100, h: 100};
let cam = null;    // the viewBox: x, y and the scale (screen px per SVG unit)
function applyCam() {
  const r = svg.getBoundingClientRect();
  svg.setAttribute('viewBox', [cam.x, cam.y, r.width / cam.s, r.height / cam.s].map(v => v.toFixed(2)).join(' '));
}
function fit() {
  const r = svg.getBoundingClientRect();
  const s = Math.min(r.width / content.w, r.height / content.h, 2);
  cam = {s: s, x: content.x - (r.width / s - content.w) / 2, y: content.y - (r.height / s - content.h) / 2};
  applyCam();
}
function zoom(factor, px, py) {   // keep the point under (px, py) (screen, relative to the svg) in place
  const r = svg.getBoundingClientRect();
  if (px === undefined) { px = r.width / 2; py = r.height / 2; }
  const s = Math.max(0.02, Math.min(20, cam.s * factor));
  cam = {s: s, x: cam.x + px / cam.s - px / s, y: cam.y + py / cam.s - py / s};
  applyCam();
}
function centerOn(id) {
  const b = boxes[id];
  if (!b) return;
  const r = svg.getBoundingClientRect();
  if (cam.s < 0.8) cam.s = 1;
  cam.x = b.x + OFF.x + b.width / 2 - r.width / cam.s / 2;
  cam.y = b.y + OFF.y + b.height / 2 - r.height / cam.s / 2;
  applyCam();
}
svg.addEventListener('wheel', ev => {
  ev.preventDefault();
  const r = svg.getBoundingClientRect();
  zoom(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
}, {passive: false});
let drag = null, dragged = false;
svg.addEventListener('pointerdown', ev => { drag = {x: ev.clientX, y: ev.clientY, cx: cam.x, cy: cam.y}; dragged = false; });
window.addEventListener('pointermove', ev => {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (!dragged && Math.hypot(dx, dy) < 4) return;
  dragged = true;
  svg.classList.add('arch-panning');
  cam.x = drag.cx - dx / cam.s; cam.y = drag.cy - dy / cam.s;
  applyCam();
});
window.addEventListener('pointerup', () => { drag = null; svg.classList.remove('arch-panning'); });
window.addEventListener('resize', () => { if (cam) applyCam(); });

// ------------------------------------------------------------------------------- collapse / expand in place
function relayout(before, after, change) {
  // keep the item ``before`` names (as ``after`` names it once the layout changed) where it is on the screen
  const b0 = boxes[before] ? {x: boxes[before].x, y: boxes[before].y} : null;
  change();
  render();
  const id = typeof after === 'function' ? after() : after;
  const now = id && boxes[id];
  if (b0 && now && cam) { cam.x += now.x - b0.x; cam.y += now.y - b0.y; applyCam(); }
  return id;
}
function expand(cid) {
  hideTip();
  const id = relayout(cid, () => itemOf(firstNodeIn(cid)), () => collapsed.delete(cid));
  if (id) select(id);
}
function collapse(cid) {
  hideTip();
  const first = firstNodeIn(cid);
  relayout(first ? itemOf(first) : null, cid, () => collapsed.add(cid));
  select(cid);
}
function firstNodeIn(cid) {   // the block's first layer in execution order (ids follow the IR's order)
  const ids = Object.keys(nodeAnc).filter(n => nodeAnc[n].includes(cid));
  ids.sort((a, b) => parseInt(a.slice(1), 10) - parseInt(b.slice(1), 10));
  return ids.length ? ids[0] : null;
}
for (const el of svg.querySelectorAll('g.cluster')) {
  el.addEventListener('click', ev => { ev.stopPropagation(); if (dragged) return; collapse(el.id); });
}
function setDepth(d) {
  collapsed.clear();
  if (d !== null) for (const [cid, c] of Object.entries(META.clusters)) if (c.level >= d && !c.container) collapsed.add(cid);
  render();
}

// ------------------------------------------------------------------------------- selection and the side panel
function row(k, v) {
  const tr = document.createElement('tr');
  const a = document.createElement('th'), b = document.createElement('td');
  a.textContent = k; b.textContent = v;
  tr.appendChild(a); tr.appendChild(b);
  return tr;
}
const fmtShape = s => s.join('\u00d7');
function select(id) {
  selected = id;
  markSelected();
  panel.textContent = '';
  if (!id) { const d = document.createElement('div'); d.className = 'empty'; d.textContent = 'select a layer or block'; panel.appendChild(d); return; }
  const h = document.createElement('h3');
  const table = document.createElement('table');
  const c = META.clusters[id];
  if (c) {
    const lines = c.label.split('\n');
    h.textContent = lines[0];
    const args = lines.slice(1).filter(l => !/params$/.test(l)).join(' ');
    if (args) table.appendChild(row('arguments', args));
    table.appendChild(row('params', c.params.toLocaleString('en-US')));
    if (c.spec) table.appendChild(row('spec', c.spec));
    panel.appendChild(h); panel.appendChild(table);
    const b = document.createElement('button');
    b.textContent = collapsed.has(id) ? 'expand (Enter)' : 'collapse (Enter)';
    b.addEventListener('click', () => collapsed.has(id) ? expand(id) : collapse(id));
    panel.appendChild(b);
    return;
  }
  const n = META.nodes[id];
  h.textContent = n.name || n.label.split('\n')[0];
  if (n.op) table.appendChild(row('op', n.op));
  if (n.args) table.appendChild(row('arguments', n.args));
  if (n.inputs) table.appendChild(row('input', n.inputs.map(fmtShape).join(', ')));
  if (n.out) table.appendChild(row('output', fmtShape(n.out)));
  table.appendChild(row('params', (n.params || 0).toLocaleString('en-US')));
  if (n.macs) table.appendChild(row('MACs', n.macs.toLocaleString('en-US')));
  if (n.rf) table.appendChild(row('receptive field', n.rf.join('\u00d7') + ' px, stride ' + n.jump.join('\u00d7')));
  if (n.spec) table.appendChild(row('spec', n.spec));
  panel.appendChild(h); panel.appendChild(table);
}
function markSelected() {
  svg.querySelectorAll('.arch-selected').forEach(e => e.classList.remove('arch-selected'));
  if (!selected) return;
  const el = document.getElementById(collapsed.has(selected) ? 'ov-' + selected : selected);
  if (el) el.classList.add('arch-selected');
}
for (const el of svg.querySelectorAll('g.node')) {
  const n = META.nodes[el.id];
  if (!n) continue;
  el.addEventListener('mousemove', ev => showTip(ev, n.tip));
  el.addEventListener('mouseleave', hideTip);
  el.addEventListener('click', ev => { ev.stopPropagation(); if (!dragged) select(el.id); });
}
function showTip(ev, text) {
  tip.textContent = text; tip.style.display = 'block';
  tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
}
function hideTip() { tip.style.display = 'none'; }

// ------------------------------------------------------------------------------- search
const search = document.getElementById('search');
let matches = [], matchAt = -1;
function findAll(q) {
  q = q.trim().toLowerCase();
  if (!q) return [];
  return Object.keys(META.nodes).filter(id => {
    const n = META.nodes[id];
    return n.label.toLowerCase().includes(q) || (n.op || '').toLowerCase().includes(q) ||
      (n.name || '').toLowerCase().includes(q);
  });
}
function highlight() {
  svg.querySelectorAll('.arch-match').forEach(e => e.classList.remove('arch-match'));
  for (const id of matches) {
    const it = itemOf(id);
    const el = document.getElementById(it === id ? id : 'ov-' + it);
    if (el) el.classList.add('arch-match');
  }
  document.getElementById('found').textContent = search.value.trim() ?
    (!matches.length ? 'nothing found' : matchAt < 0 ? matches.length + ' found (Enter: next)' :
     (matchAt + 1) + ' of ' + matches.length + ' found') : '';
}
search.addEventListener('input', () => { matches = findAll(search.value); matchAt = -1; highlight(); });
function nextMatch(step) {
  if (!matches.length) return;
  matchAt = (matchAt + step + matches.length) % matches.length;
  const id = matches[matchAt];
  for (const c of nodeAnc[id] || []) collapsed.delete(c);   // open the blocks around it
  render();
  select(id);
  centerOn(id);
}
search.addEventListener('keydown', ev => {
  if (ev.key === 'Enter') { ev.preventDefault(); nextMatch(ev.shiftKey ? -1 : 1); }
  if (ev.key === 'Escape') { search.value = ''; matches = []; highlight(); search.blur(); }
});

// ------------------------------------------------------------------------------- keyboard
document.addEventListener('keydown', ev => {
  if (ev.target === search || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  const fwd = AX === 'y' ? ['ArrowDown', 'ArrowRight'] : ['ArrowRight', 'ArrowDown'];
  if (k === '/') { ev.preventDefault(); search.focus(); }
  else if (k === '+' || k === '=') zoom(1.25);
  else if (k === '-' || k === '_') zoom(0.8);
  else if (k === 'f' || k === '0') fit();
  else if (k === 'Escape') select(null);
  else if ((k === 'Enter' || k === ' ') && selected) {
    ev.preventDefault();
    if (META.clusters[selected]) { collapsed.has(selected) ? expand(selected) : collapse(selected); }
    else { const anc = nodeAnc[selected] || []; if (anc.length) collapse(anc[0]); }
  } else if (k.startsWith('Arrow')) {
    ev.preventDefault();
    if (!selected) { select(itemOf(Object.keys(META.nodes)[0])); centerOn(selected); return; }
    const next = (fwd.includes(k) ? adj.out : adj.in)[selected] || [];
    if (next.length) { select(next[0]); centerOn(next[0]); }
  }
});
document.getElementById('fit').addEventListener('click', fit);
document.getElementById('zoomin').addEventListener('click', () => zoom(1.25));
document.getElementById('zoomout').addEventListener('click', () => zoom(0.8));
document.querySelectorAll('[data-depth]').forEach(b => b.addEventListener('click', () => {
  const v = b.getAttribute('data-depth');
  setDepth(v === 'all' ? null : parseInt(v, 10));
  fit();
}));
window.archView = {setDepth: setDepth, collapsed: collapsed, render: render, select: select, fit: fit,
                   zoom: zoom, expand: expand, collapse: collapse, camera: () => Object.assign({}, cam),
                   selected: () => selected};
setDepth(META.depth);
fit();
})();
