// The DAG of a task as SVG: nodes ranked by longest path from the roots
// (topological rank), parallel copies side by side in their rank, ordered
// to follow their upstreams; coloured by status; zoom and pan with the
// wheel, a drag, or the buttons and keys.

import { h, s } from './ui.js';

const NODE_W = 210;
const NODE_H = 46;
const GAP_X = 24;
const GAP_Y = 34;
const PAD = 16;

/** Ranks and positions of the subtasks; `subtasks` as the API gives them. */
export function layout(subtasks) {
  const byId = new Map(subtasks.map((t) => [t.id, t]));
  const rank = new Map();
  // Kahn's order; a node's rank is 1 + the highest rank of its upstreams.
  const pending = new Map(subtasks.map((t) => [t.id, t.upstreams.filter((u) => byId.has(u)).length]));
  let frontier = subtasks.filter((t) => pending.get(t.id) === 0).map((t) => t.id);
  frontier.forEach((id) => rank.set(id, 0));
  while (frontier.length) {
    const next = [];
    for (const id of frontier) {
      for (const d of byId.get(id).downstreams) {
        if (!byId.has(d)) continue;
        rank.set(d, Math.max(rank.get(d) ?? 0, rank.get(id) + 1));
        pending.set(d, pending.get(d) - 1);
        if (pending.get(d) === 0) next.push(d);
      }
    }
    frontier = next;
  }
  // Anything left is on a cycle (the server refuses those): last rank.
  const maxRank = Math.max(0, ...rank.values());
  for (const t of subtasks) if (!rank.has(t.id)) rank.set(t.id, maxRank + 1);

  const ranks = [];
  for (const t of subtasks) {
    const r = rank.get(t.id);
    (ranks[r] ||= []).push(t);
  }
  const x = new Map();
  ranks.forEach((row, r) => {
    if (!row) return;
    // Follow the upstreams (barycentre), then series and parallel index.
    const bary = (t) => {
      const ups = t.upstreams.filter((u) => x.has(u));
      return ups.length ? ups.reduce((a, u) => a + x.get(u), 0) / ups.length : 0;
    };
    row.sort((a, b) => (r > 0 ? bary(a) - bary(b) : 0) || a.seriesId - b.seriesId || a.parallelIdx - b.parallelIdx);
    row.forEach((t, i) => x.set(t.id, i - (row.length - 1) / 2));
  });
  const widest = Math.max(1, ...ranks.map((row) => (row ? row.length : 0)));
  const width = widest * NODE_W + (widest - 1) * GAP_X + 2 * PAD;
  const height = ranks.length * NODE_H + (ranks.length - 1) * GAP_Y + 2 * PAD;
  const pos = new Map();
  for (const t of subtasks) {
    pos.set(t.id, {
      x: width / 2 + x.get(t.id) * (NODE_W + GAP_X) - NODE_W / 2,
      y: PAD + rank.get(t.id) * (NODE_H + GAP_Y),
      rank: rank.get(t.id),
    });
  }
  return { pos, width, height };
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draws the DAG into `root`; `onSelect(id)` is called when a node is
 * chosen. Returns { update(subtasks, selected) } to recolour in place.
 */
export function drawDag(root, subtasks, onSelect) {
  const { pos, width, height } = layout(subtasks);
  const svg = s('svg', {
    class: 'dag', id: 'dag', role: 'group', 'aria-label': 'Task DAG',
    viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'xMidYMin meet',
  });
  svg.append(s('defs', {}, s('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  const edges = s('g', { class: 'edges' });
  const nodes = s('g', { class: 'nodes' });
  svg.append(edges, nodes);
  const nodeEls = new Map();
  for (const t of subtasks) {
    const p = pos.get(t.id);
    for (const d of t.downstreams) {
      const q = pos.get(d);
      if (!q) continue;
      const x1 = p.x + NODE_W / 2; const y1 = p.y + NODE_H;
      const x2 = q.x + NODE_W / 2; const y2 = q.y;
      const my = (y1 + y2) / 2;
      edges.append(s('path', {
        class: 'edge', 'data-from': t.id, 'data-to': d,
        d: `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2 - 1}`, 'marker-end': 'url(#arrow)',
      }));
    }
    const label = t.parallelIdx >= 0 ? `${t.name} [${t.parallelIdx}]` : t.name;
    const g = s('g', {
      class: 'node', tabindex: 0, role: 'button', 'data-subtask-id': t.id,
      transform: `translate(${p.x} ${p.y})`,
      onclick: () => onSelect(t.id),
      onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onSelect(t.id); } },
    },
    s('title', {}, label),
    s('rect', { width: NODE_W, height: NODE_H, rx: 7 }),
    s('text', { x: 10, y: 19, class: 'name' }, clip(label, 28)),
    s('text', { x: 10, y: 36, class: 'meta' }, ''));
    nodes.append(g);
    nodeEls.set(t.id, g);
  }

  // Zoom and pan by changing the viewBox, whose aspect always matches the
  // frame's. It opens at full size (the whole width when the DAG is wider
  // than the frame); Fit shows all of it. The wheel pans, Ctrl+wheel zooms.
  root.append(h('div', { class: 'dag-frame' }, svg));
  const frame = () => {
    const r = svg.getBoundingClientRect();
    return { w: Math.max(1, r.width), h: Math.max(1, r.height) };
  };
  let view = { x: 0, y: 0, w: width, h: height };
  const apply = () => svg.setAttribute('viewBox', `${view.x} ${view.y} ${view.w} ${view.h}`);
  const natural = () => {
    const f = frame();
    const k = Math.max(1, width / f.w);
    const w = f.w * k;
    return { x: (width - w) / 2, y: 0, w, h: f.h * k };
  };
  const fit = () => {
    const f = frame();
    const k = Math.max(width / f.w, height / f.h);
    const w = f.w * k;
    const hh = f.h * k;
    view = { x: (width - w) / 2, y: (height - hh) / 2, w, h: hh };
    apply();
  };
  const zoom = (factor, cx = view.x + view.w / 2, cy = view.y + view.h / 2) => {
    const w = Math.min(Math.max(view.w * factor, width / 20, 60), Math.max(width, height) * 4);
    const k = w / view.w;
    view = { x: cx - (cx - view.x) * k, y: cy - (cy - view.y) * k, w, h: view.h * k };
    apply();
  };
  /** Pans, keeping some of the DAG in view; false when nothing moved. */
  const pan = (dx, dy) => {
    const x = Math.min(Math.max(view.x + dx, -view.w + 40), width - 40);
    const y = Math.min(Math.max(view.y + dy, -view.h + 40), height - 40);
    const moved = x !== view.x || y !== view.y;
    view.x = x;
    view.y = y;
    apply();
    return moved;
  };
  view = natural();
  apply();
  svg.addEventListener('wheel', (ev) => {
    const r = svg.getBoundingClientRect();
    const k = view.w / r.width;
    if (ev.ctrlKey || ev.metaKey) {
      ev.preventDefault();
      const cx = view.x + ((ev.clientX - r.left) / r.width) * view.w;
      const cy = view.y + ((ev.clientY - r.top) / r.height) * view.h;
      zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, cx, cy);
    } else if (pan(ev.deltaX * k, ev.deltaY * k)) {
      ev.preventDefault(); // at the DAG's edge the page scrolls instead
    }
  }, { passive: false });
  let drag = null;
  svg.addEventListener('pointerdown', (ev) => {
    if (ev.target.closest('.node')) return;
    drag = { x: ev.clientX, y: ev.clientY };
    svg.setPointerCapture(ev.pointerId);
  });
  svg.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    const k = view.w / r.width;
    pan((drag.x - ev.clientX) * k, (drag.y - ev.clientY) * k);
    drag = { x: ev.clientX, y: ev.clientY };
  });
  svg.addEventListener('pointerup', () => { drag = null; });
  const step = () => view.w / 10;
  const tools = h('div', { class: 'dag-tools', role: 'toolbar', 'aria-label': 'DAG zoom and pan' },
    h('button', { type: 'button', id: 'dag-zoom-in', 'aria-label': 'Zoom in', onclick: () => zoom(1 / 1.25) }, '+'),
    h('button', { type: 'button', id: 'dag-zoom-out', 'aria-label': 'Zoom out', onclick: () => zoom(1.25) }, '−'),
    h('button', { type: 'button', id: 'dag-fit', 'aria-label': 'Fit the whole DAG', onclick: fit }, 'Fit'),
    h('button', { type: 'button', 'aria-label': 'Pan left', onclick: () => pan(-step(), 0) }, '←'),
    h('button', { type: 'button', 'aria-label': 'Pan right', onclick: () => pan(step(), 0) }, '→'),
    h('button', { type: 'button', 'aria-label': 'Pan up', onclick: () => pan(0, -step()) }, '↑'),
    h('button', { type: 'button', 'aria-label': 'Pan down', onclick: () => pan(0, step()) }, '↓'));
  root.prepend(tools);

  function update(list, selected) {
    for (const t of list) {
      const g = nodeEls.get(t.id);
      if (!g) continue;
      g.setAttribute('class', `node st-${t.status.toLowerCase()}${t.id === selected ? ' selected' : ''}`);
      g.setAttribute('data-status', t.status);
      g.setAttribute('aria-label', `${t.name}: ${t.status}, run ${t.runTime}`);
      g.setAttribute('aria-pressed', t.id === selected ? 'true' : 'false');
      g.querySelector('text.meta').textContent = `${t.status} · run ${t.runTime} · ${t.operation}`;
    }
  }
  /** Brings a node into view (centred) when it is outside it. */
  function reveal(id) {
    const p = pos.get(id);
    if (!p) return;
    const inside = p.x >= view.x && p.x + NODE_W <= view.x + view.w &&
      p.y >= view.y && p.y + NODE_H <= view.y + view.h;
    if (inside) return;
    view.x = p.x + NODE_W / 2 - view.w / 2;
    view.y = p.y + NODE_H / 2 - view.h / 2;
    apply();
  }

  update(subtasks, null);
  return { update, reveal };
}
