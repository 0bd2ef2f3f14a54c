// The task list: OCP's filters (status, name, type, cluster, host, creator,
// time range), sort, paging, and a refresh every few seconds.

import { get, query } from './api.js';
import { h, time, duration, badge, errorBox } from './ui.js';

const STATUSES = ['RUNNING', 'FAILED', 'SUCCESSFUL'];
const TYPES = ['MANUAL', 'SCHEDULED', 'SYS_SCHEDULED'];
const SORTS = [
  ['id', 'Id'], ['name', 'Name'], ['status', 'Status'],
  ['createTime', 'Created'], ['startTime', 'Started'], ['finishTime', 'Finished'],
];
const TIME_FIELDS = [
  ['createTimeFrom', 'Created from'], ['createTimeTo', 'Created to'],
  ['finishTimeFrom', 'Finished from'], ['finishTimeTo', 'Finished to'],
];
const REFRESH_SECONDS = 3;

/** `datetime-local` value to RFC 3339 (the browser's time zone). */
function toRfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

function toLocal(rfc) {
  if (!rfc) return '';
  const d = new Date(rfc);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function field(label, id, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

export function renderTasks(root, ctx, params) {
  const statuses = (params.get('status') || '').split(',').filter(Boolean);
  const [sortKey, sortDir] = (params.get('sort') || 'id,desc').split(',');
  const page = Math.max(1, Number(params.get('page')) || 1);
  const size = Number(params.get('size')) || 20;

  const form = h('form', { class: 'filters card', id: 'task-filters', 'aria-label': 'Task filters' },
    h('fieldset', { class: 'statuses' }, h('legend', {}, 'Status'),
      STATUSES.map((st) => h('label', { class: 'check' },
        h('input', { type: 'checkbox', name: 'status', value: st, id: `f-status-${st}`, checked: statuses.includes(st) }),
        ` ${st}`))),
    field('Name contains', 'f-name', h('input', { id: 'f-name', name: 'name', value: params.get('name') || '' })),
    field('Type', 'f-type', h('select', { id: 'f-type', name: 'type' },
      h('option', { value: '' }, 'any'),
      TYPES.map((t) => h('option', { value: t, selected: params.get('type') === t }, t)))),
    field('Cluster id', 'f-cluster', h('input', { id: 'f-cluster', name: 'clusterId', type: 'number', min: 1, value: params.get('clusterId') || '' })),
    field('Host id', 'f-host', h('input', { id: 'f-host', name: 'hostId', type: 'number', min: 1, value: params.get('hostId') || '' })),
    field('Creator', 'f-creator', h('input', { id: 'f-creator', name: 'creator', value: params.get('creator') || '' })),
    TIME_FIELDS.map(([name, label]) => field(label, `f-${name}`,
      h('input', { id: `f-${name}`, name, type: 'datetime-local', value: toLocal(params.get(name)) }))),
    field('Sort by', 'f-sort', h('select', { id: 'f-sort', name: 'sortKey' },
      SORTS.map(([k, label]) => h('option', { value: k, selected: k === sortKey }, label)))),
    field('Order', 'f-dir', h('select', { id: 'f-dir', name: 'sortDir' },
      h('option', { value: 'desc', selected: sortDir !== 'asc' }, 'newest / Z first'),
      h('option', { value: 'asc', selected: sortDir === 'asc' }, 'oldest / A first'))),
    field('Per page', 'f-size', h('select', { id: 'f-size', name: 'size' },
      [10, 20, 50, 100].map((n) => h('option', { value: n, selected: n === size }, n)))),
    h('div', { class: 'field actions' },
      h('button', { type: 'submit', id: 'apply-filters' }, 'Apply'),
      h('button', { type: 'button', class: 'quiet', id: 'clear-filters', onclick: () => { location.hash = '#/tasks'; } }, 'Clear')),
  );

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = form.elements;
    const next = {
      status: [...form.querySelectorAll('input[name=status]:checked')].map((i) => i.value).join(','),
      name: f.name.value.trim(),
      type: f.type.value,
      clusterId: f.clusterId.value,
      hostId: f.hostId.value,
      creator: f.creator.value.trim(),
      sort: `${f.sortKey.value},${f.sortDir.value}`,
      size: f.size.value,
    };
    for (const [name] of TIME_FIELDS) next[name] = toRfc3339(f[name].value);
    location.hash = `#/tasks${query(next)}`;
  });

  const auto = h('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
  const summary = h('p', { class: 'summary', id: 'task-summary', 'aria-live': 'polite' });
  const body = h('tbody', { id: 'task-rows' });
  const table = h('table', { class: 'tasks', 'aria-label': 'Tasks' },
    h('thead', {}, h('tr', {},
      ['Id', 'Name', 'Status', 'Operation', 'Target', 'Creator', 'Created', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
    body);
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  root.append(
    h('div', { class: 'heading' }, h('h1', {}, 'Tasks'),
      h('label', { class: 'check' }, auto, ` Refresh every ${REFRESH_SECONDS} s`)),
    form, summary, h('div', { class: 'scroll' }, table), pager);

  const apiQuery = {
    status: statuses.join(','),
    name: params.get('name'),
    type: params.get('type'),
    clusterId: params.get('clusterId'),
    hostId: params.get('hostId'),
    creator: params.get('creator'),
    sort: `${sortKey},${sortDir === 'asc' ? 'asc' : 'desc'}`,
    page,
    size,
  };
  for (const [name] of TIME_FIELDS) apiQuery[name] = params.get(name);

  const pageLink = (n, label, id) => {
    const p = new URLSearchParams(params);
    p.set('page', n);
    return h('a', { href: `#/tasks?${p}`, id }, label);
  };

  async function load() {
    let data;
    try {
      data = await get(`/api/v2/tasks/instances${query(apiQuery)}`);
    } catch (e) {
      summary.replaceChildren(errorBox(e));
      return;
    }
    const { contents, page: info } = data;
    summary.textContent = info.totalElements === 0
      ? 'No task matches these filters.'
      : `${info.totalElementsEstimated ? 'about ' : ''}${info.totalElements} tasks; ` +
        `page ${info.number} of ${info.totalElementsEstimated ? 'about ' : ''}${info.totalPages}.`;
    body.replaceChildren(...contents.map((t) => h('tr', { 'data-task-id': t.id },
      h('td', {}, h('a', { href: `#/tasks/${t.id}` }, t.id)),
      h('td', {}, h('a', { href: `#/tasks/${t.id}` }, t.name)),
      h('td', {}, badge(t.status)),
      h('td', {}, t.operation),
      h('td', {}, t.clusterId ? `cluster ${t.cluster ? t.cluster.name : t.clusterId}` : t.hostId ? `host ${t.hostId}` : ''),
      h('td', {}, t.creator),
      h('td', {}, time(t.createTime)),
      h('td', {}, duration(t.startTime, t.finishTime)),
    )));
    pager.replaceChildren(
      info.number > 1 ? pageLink(info.number - 1, '← Previous', 'page-prev') : '',
      h('span', {}, ` ${info.number} / ${Math.max(1, info.totalPages)} `),
      info.number < info.totalPages ? pageLink(info.number + 1, 'Next →', 'page-next') : '',
    );
  }

  load();
  let ticks = 0;
  ctx.poller.add(load, () => auto.checked && ++ticks % REFRESH_SECONDS === 0);
}
