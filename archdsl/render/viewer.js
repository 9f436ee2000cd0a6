(function(){
'use strict';
const META = JSON.parse(document.getElementById('arch-meta').textContent);
const svg = document.querySelector('#canvas svg');
const root = svg.querySelector('g.graph');
const AX = META.axis;                 // the axis along which the layers flow: 'y' (TB) or 'x' (LR)
const GAP = 22;                       // empty space left where a collapsed block's contents were
const NS = 'http://www.w3.org/2000/svg';
const tip = document.getElementById('tip');
const collapsed = new Set();
const lo = b => AX === 'y' ? b.y : b.x;
const hi = b => AX === 'y' ? b.y + b.height : b.x + b.width;
const tagged = Array.from(svg.querySelectorAll('g.node, g.edge, g.cluster'));
const info = new Map();
for (const el of tagged) {
  const anc = (el.getAttribute('class') || '').split(/\s+/).filter(c => c.startsWith('in-')).map(c => c.slice(3));
  info.set(el, {anc: anc, box: el.getBBox(), texts: Array.from(el.querySelectorAll('text')).map(t => t.getBBox())});
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
const W0 = svg.viewBox.baseVal.width, H0 = svg.viewBox.baseVal.height;

function overlayLines(cid) { return META.clusters[cid].label.split('\n').concat(['(click to expand)']); }

function render() {
  svg.querySelectorAll('.arch-overlay').forEach(o => o.remove());
  const occ = [], overlays = [];
  for (const el of tagged) {
    const i = info.get(el);
    const hidden = i.anc.some(c => collapsed.has(c));
    const self = el.classList.contains('cluster') && collapsed.has(el.id);
    el.classList.toggle('arch-hidden', hidden || self);
    if (hidden) continue;
    if (self) {
      const lines = overlayLines(el.id);
      const need = AX === 'y' ? 10 + 12 * lines.length : 12 + 6 * Math.max(...lines.map(l => l.length));
      occ.push([lo(i.box), Math.min(hi(i.box), lo(i.box) + need)]);
      overlays.push(el);
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
  for (const el of tagged) {
    if (!el.classList.contains('node')) continue;
    const b = info.get(el).box, d = (f(lo(b)) - lo(b)).toFixed(2);
    el.setAttribute('transform', AX === 'y' ? 'translate(0,' + d + ')' : 'translate(' + d + ',0)');
  }
  for (const el of overlays) {
    const cid = el.id, b = info.get(el).box, a0 = f(lo(b)), a1 = f(hi(b));
    const g = document.createElementNS(NS, 'g');
    g.setAttribute('class', 'arch-overlay');
    g.setAttribute('data-cluster', cid);
    const r = document.createElementNS(NS, 'rect');
    const x = AX === 'y' ? b.x : a0, y = AX === 'y' ? a0 : b.y;
    r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('rx', 4);
    r.setAttribute('width', AX === 'y' ? b.width : a1 - a0);
    r.setAttribute('height', AX === 'y' ? a1 - a0 : b.height);
    g.appendChild(r);
    overlayLines(cid).forEach((line, k) => {
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', x + 6); t.setAttribute('y', y + 13 + 12 * k);
      t.textContent = line;
      g.appendChild(t);
    });
    g.addEventListener('click', ev => { ev.stopPropagation(); collapsed.delete(cid); hideTip(); render(); });
    g.addEventListener('mousemove', ev => showTip(ev, META.clusters[cid].tip));
    g.addEventListener('mouseleave', hideTip);
    root.appendChild(g);
  }
  const removed = cuts.reduce((acc, [s, e]) => acc + (e - s - GAP), 0);
  const W = AX === 'x' ? W0 - removed : W0, H = AX === 'y' ? H0 - removed : H0;
  svg.setAttribute('viewBox', '0 0 ' + W.toFixed(2) + ' ' + H.toFixed(2));
  svg.setAttribute('width', W.toFixed(2) + 'pt');
  svg.setAttribute('height', H.toFixed(2) + 'pt');
  if (AX === 'x') root.setAttribute('transform', 'scale(1 1) rotate(0) translate(4 ' + (H0 - 4) + ')');
  const shown = tagged.filter(el => el.classList.contains('node') && !el.classList.contains('arch-hidden')).length;
  document.getElementById('count').textContent =
    shown + ' layers shown, ' + overlays.length + ' collapsed blocks';
}
function showTip(ev, text) {
  tip.textContent = text; tip.style.display = 'block';
  tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
}
function hideTip() { tip.style.display = 'none'; }
for (const el of svg.querySelectorAll('g.node')) {
  const text = META.nodes[el.id];
  if (!text) continue;
  el.addEventListener('mousemove', ev => showTip(ev, text));
  el.addEventListener('mouseleave', hideTip);
}
for (const el of svg.querySelectorAll('g.cluster')) {
  el.addEventListener('click', ev => { ev.stopPropagation(); collapsed.add(el.id); hideTip(); render(); });
}
function setDepth(d) {
  collapsed.clear();
  if (d !== null) for (const [cid, c] of Object.entries(META.clusters)) if (c.level >= d) collapsed.add(cid);
  render();
}
document.querySelectorAll('[data-depth]').forEach(b => b.addEventListener('click', () => {
  const v = b.getAttribute('data-depth');
  setDepth(v === 'all' ? null : parseInt(v, 10));
}));
window.archView = {setDepth: setDepth, collapsed: collapsed, render: render};
setDepth(META.depth);
})();
