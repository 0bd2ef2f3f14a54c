// Small helpers shared by the views: building elements, formatting,
// confirmation, notices, and the per-page poller (at most one request a
// second).

/** h('a', {href: '#'}, 'text', child) builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The same for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

export function time(t) {
  if (!t) return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return t;
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function duration(from, to) {
  if (!from) return '';
  const ms = (to ? new Date(to) : new Date()) - new Date(from);
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${ms} ms`;
  const sec = Math.round(ms / 1000);
  if (sec < 120) return `${sec} s`;
  const min = Math.floor(sec / 60);
  if (min < 120) return `${min} min ${sec % 60} s`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

export function badge(status) {
  return h('span', { class: `badge st-${String(status).toLowerCase()}` }, status);
}

/** Asks for confirmation in a modal dialog; resolves true when confirmed. */
export function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

let toastTimer = null;
export function notice(text, isError = false) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.toggle('bad', isError);
  t.classList.add('shown');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('shown'), 5000);
}

/**
 * One poller per page: every second it runs the next of its jobs (round
 * robin), so an open page sends at most one request a second. Stops when
 * the page is left; skips ticks while the tab is hidden.
 */
export class Poller {
  constructor(periodMs = 1000) {
    this.jobs = [];
    this.next = 0;
    this.stopped = false;
    this.periodMs = periodMs;
    this.timer = setTimeout(() => this.tick(), periodMs);
  }

  /** Adds a job; `when()` says whether it is due (default: always). */
  add(run, when = () => true) {
    this.jobs.push({ run, when });
    return this;
  }

  async tick() {
    if (this.stopped) return;
    if (!document.hidden) {
      for (let i = 0; i < this.jobs.length; i++) {
        const job = this.jobs[(this.next + i) % this.jobs.length];
        if (job.when()) {
          this.next = (this.next + i + 1) % this.jobs.length;
          try { await job.run(); } catch (e) { console.warn('refresh failed', e); }
          break;
        }
      }
    }
    if (!this.stopped) this.timer = setTimeout(() => this.tick(), this.periodMs);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e.message || String(e));
}
