// One task: what failed and why (at the top), why it waits, its actions,
// the DAG, the selected node's details, the timeline of runs and the log
// of each run (run selector, live tail, download).

import { get, post, query } from './api.js';
import { h, s, time, duration, badge, confirmAction, notice, errorBox } from './ui.js';
import { drawDag } from './dag.js';

const TASK_ACTIONS = [
  ['retry', 'Retry task', 'Retry this task? Its failed subtasks run again.'],
  ['rollback', 'Roll back task', 'Roll this task back? Every subtask that ran is undone, in reverse order.'],
];
const SUBTASK_ACTIONS = [
  ['retry', 'Retry subtask', 'Retry this subtask?'],
  ['skip', 'Skip subtask', 'Skip this subtask? It is marked done without running.'],
  ['cancel', 'Cancel subtask', 'Cancel this running subtask? Its action is stopped.'],
];
const ACTIVE = new Set(['RUNNING', 'CANCELING']);

export function renderTask(root, ctx, id, params) {
  let detail = null;
  let selected = params.has('subtask') ? Number(params.get('subtask')) : null;
  let chosen = selected !== null; // the user picked the node
  let dag = null;
  let logRun = null; // null: the latest run
  let busy = false;

  const header = h('div', { class: 'task-head' });
  const alerts = h('div', { class: 'alerts' });
  const dagBox = h('section', { class: 'dag-box card', 'aria-label': 'DAG' });
  const nodeBox = h('section', { class: 'node-box card', id: 'node', 'aria-label': 'Selected subtask' });
  const timelineBox = h('section', { class: 'card timeline-box', 'aria-labelledby': 'timeline-title' });
  const logPre = h('pre', { class: 'log', id: 'log', tabindex: 0, 'aria-label': 'Log' });
  const runSelect = h('select', { id: 'log-run' });
  const tail = h('input', { type: 'checkbox', id: 'log-tail', checked: true });
  const logBox = h('section', { class: 'card log-box', 'aria-labelledby': 'log-title' },
    h('div', { class: 'log-head' },
      h('h2', { id: 'log-title' }, 'Log'),
      h('label', { for: 'log-run' }, 'Run '), runSelect,
      h('label', { class: 'check' }, tail, ' Live tail'),
      h('button', { type: 'button', id: 'log-download', class: 'quiet', onclick: download }, 'Download')),
    logPre);
  runSelect.addEventListener('change', () => {
    logRun = runSelect.value === 'all' ? 'all' : runSelect.value === 'latest' ? null : Number(runSelect.value);
    loadLog();
  });

  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/tasks', id: 'back-to-list' }, '← Tasks')),
    header, alerts,
    h('div', { class: 'task-grid' }, dagBox, h('div', { class: 'side' }, nodeBox, logBox)),
    timelineBox);

  const node = (sid) => detail && detail.nodes.find((n) => n.id === sid);
  const sub = (sid) => detail && detail.task.subtasks.find((t) => t.id === sid);

  async function act(label, text, path) {
    if (busy) return;
    if (!(await confirmAction(text))) return;
    busy = true;
    try {
      await post(path);
      notice(`${label}: done.`);
    } catch (e) {
      notice(`${label} refused: ${e.message}`, true);
    } finally {
      busy = false;
    }
    await load();
  }

  function renderHeader() {
    const t = detail.task;
    const target = t.clusterId ? `cluster ${t.cluster ? t.cluster.name : t.clusterId}` +
      (t.context?.stringMap?.server_id ? `, server ${t.context.stringMap.server_id}` : '')
      : t.hostId ? `host ${t.hostId}` : '';
    const buttons = TASK_ACTIONS.filter(([a]) => detail.actions[a]).map(([a, label, text]) =>
      h('button', { type: 'button', id: `task-${a}`, class: a === 'rollback' ? 'danger' : '',
        onclick: () => act(label, `${text} (task ${t.id})`, `/api/v2/tasks/instances/${t.id}/${a}`) }, label));
    header.replaceChildren(
      h('h1', {}, `Task ${t.id}: ${t.name} `, h('span', { id: 'task-status' }, badge(t.status))),
      h('p', { class: 'meta' },
        `${t.operation} · ${target} · by ${t.creator} · created ${time(t.createTime)}` +
        (t.finishTime ? ` · finished ${time(t.finishTime)} (${duration(t.startTime, t.finishTime)})` : ` · running for ${duration(t.startTime)}`)),
      buttons.length ? h('div', { class: 'buttons', id: 'task-actions' }, buttons) : '');
    const items = [];
    if (detail.failures.length && t.status === 'FAILED') {
      items.push(h('div', { class: 'alert bad', id: 'failure', role: 'alert' },
        h('strong', {}, 'Failed: '),
        detail.failures.map((f) => h('div', {},
          h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); chosen = true; select(f.subtaskId); } }, f.name),
          ` (run ${f.runTime}${f.finishTime ? `, ${time(f.finishTime)}` : ''}): `,
          h('span', { class: 'why' }, f.error)))));
    }
    if (detail.waiting) {
      items.push(h('div', { class: 'alert wait', id: 'waiting' }, h('strong', {}, 'Waiting: '), detail.waiting));
    }
    alerts.replaceChildren(...items);
  }

  function renderNode() {
    const t = sub(selected);
    const n = node(selected);
    if (!t || !n) {
      nodeBox.replaceChildren(h('p', {}, 'Select a node of the DAG to see its details.'));
      return;
    }
    const row = (k, v, wide) => [h('dt', { class: wide ? 'wide' : '' }, k),
      h('dd', { class: wide ? 'wide' : '' }, v === undefined || v === null || v === '' ? '—' : v)];
    const buttons = SUBTASK_ACTIONS.filter(([a]) => n.actions[a]).map(([a, label, text]) =>
      h('button', { type: 'button', id: `subtask-${a}`, class: a === 'retry' ? '' : 'danger',
        onclick: () => act(label, `${text} (${t.name})`, `/api/v2/tasks/instances/${id}/subtasks/${t.id}/${a}`) }, label));
    nodeBox.replaceChildren(
      h('h2', { id: 'node-name' }, t.name, ' ', badge(t.status)),
      h('dl', { class: 'facts' },
        row('Subtask id', t.id),
        row('runTime', h('span', { id: 'node-runtime' }, t.runTime)),
        row('Operation', t.operation),
        row('Retry limit', n.retryLimit),
        row('Timeout', `${t.timeout} s`),
        row('Executor', t.executor),
        row('Start', time(t.startTime)),
        row('Finish', time(t.finishTime)),
        row('Duration', duration(t.startTime, t.finishTime)),
        row('className', h('code', { id: 'node-class' }, t.className), true),
        n.waiting ? row('Waiting', n.waiting, true) : [],
        row('Error', n.error ? h('span', { class: 'why', id: 'node-error' }, n.error) : '', true)),
      buttons.length ? h('div', { class: 'buttons', id: 'subtask-actions' }, buttons) : '');
    const runs = n.runs.map((r) => r.runTime);
    const want = logRun === null ? 'latest' : String(logRun);
    runSelect.replaceChildren(
      h('option', { value: 'latest' }, `latest${runs.length ? ` (${runs[runs.length - 1]})` : ''}`),
      runs.map((r) => h('option', { value: r }, `run ${r}`)),
      h('option', { value: 'all' }, 'all runs'));
    runSelect.value = [...runSelect.options].some((o) => o.value === want) ? want : 'latest';
  }

  function renderTimeline() {
    const rows = detail.task.subtasks
      .map((t) => ({ t, runs: node(t.id)?.runs || [] }))
      .filter((r) => r.runs.length);
    const title = h('h2', { id: 'timeline-title' }, 'Timeline of runs');
    if (!rows.length) {
      timelineBox.replaceChildren(title, h('p', {}, 'No subtask has run yet.'));
      return;
    }
    const now = Date.now();
    const end = (r, t, last) => (last && ACTIVE.has(t.status) ? now : new Date(r.lastTime).getTime());
    const t0 = Math.min(...rows.flatMap((r) => r.runs.map((x) => new Date(x.firstTime).getTime())));
    const t1 = Math.max(t0 + 1000, ...rows.flatMap((r) => r.runs.map((x, i) => end(x, r.t, i === r.runs.length - 1))));
    const LABEL = 220; const W = 900; const ROW = 18;
    const X = (ms) => LABEL + ((ms - t0) / (t1 - t0)) * (W - LABEL - 10);
    const svg = s('svg', { class: 'timeline', viewBox: `0 0 ${W} ${rows.length * ROW + 20}`, role: 'img',
      'aria-label': `Runs from ${time(new Date(t0).toISOString())} to ${time(new Date(t1).toISOString())}` });
    rows.forEach(({ t, runs }, i) => {
      const y = i * ROW + 4;
      svg.append(s('text', { x: 4, y: y + 11, class: 'tl-label' }, t.name.length > 30 ? `${t.name.slice(0, 29)}…` : t.name));
      runs.forEach((r, k) => {
        const last = k === runs.length - 1;
        const status = last ? t.status : 'FAILED';
        const x1 = X(new Date(r.firstTime).getTime());
        const x2 = Math.max(x1 + 3, X(end(r, t, last)));
        svg.append(s('rect', {
          x: x1, y, width: x2 - x1, height: ROW - 6, rx: 2, class: `tl-bar st-${status.toLowerCase()}`,
          onclick: () => { chosen = true; select(t.id); logRun = r.runTime; loadLog(); },
        }, s('title', {}, `${t.name}, run ${r.runTime}: ${time(r.firstTime)} – ${time(r.lastTime)}, ${r.lines} lines\n${r.opening}`)));
      });
    });
    svg.append(s('text', { x: LABEL, y: rows.length * ROW + 16, class: 'tl-axis' }, time(new Date(t0).toISOString())),
      s('text', { x: W - 10, y: rows.length * ROW + 16, class: 'tl-axis end' }, `+${duration(new Date(t0).toISOString(), new Date(t1).toISOString())}`));
    timelineBox.replaceChildren(title, h('div', { class: 'scroll' }, svg));
  }

  let logText = '';
  let logStale = false;
  async function loadLog() {
    const t = sub(selected);
    if (!t) { logPre.textContent = ''; return; }
    logStale = false;
    const runTime = logRun === 'all' ? undefined : logRun === null ? t.runTime : logRun;
    try {
      const data = await get(`/api/v2/tasks/instances/${id}/subtasks/${t.id}/log${query({ runTime })}`);
      const stick = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
      logText = data.log;
      logPre.textContent = data.log || '(no lines yet)';
      if (stick) logPre.scrollTop = logPre.scrollHeight;
    } catch (e) {
      logPre.textContent = `The log cannot be read: ${e.message}`;
    }
  }

  function download() {
    const t = sub(selected);
    if (!t) return;
    const blob = new Blob([logText], { type: 'text/plain' });
    const a = h('a', { href: URL.createObjectURL(blob), download: `task-${id}-subtask-${t.id}-${runSelect.value}.log` });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  function select(sid) {
    if (selected !== sid) logRun = null;
    selected = sid;
    const p = new URLSearchParams({ subtask: sid });
    history.replaceState(null, '', `#/tasks/${id}?${p}`);
    dag.update(detail.task.subtasks, selected);
    dag.reveal(sid);
    renderNode();
    loadLog();
  }

  async function load() {
    let next;
    try {
      next = await get(`/console/api/tasks/${id}`);
    } catch (e) {
      if (!detail) root.replaceChildren(h('p', { class: 'crumbs' }, h('a', { href: '#/tasks' }, '← Tasks')), errorBox(e));
      else notice(`Refresh failed: ${e.message}`, true);
      return;
    }
    const first = !detail;
    if (detail && detail.task.status === 'RUNNING' && next.task.status !== 'RUNNING') logStale = true;
    detail = next;
    if (first) dag = drawDag(dagBox, detail.task.subtasks, (sid) => { chosen = true; select(sid); });
    // Until the user picks a node, the view follows the task: the failed
    // subtask, else the running one.
    if (!chosen) {
      const pick = detail.task.subtasks;
      const follow = detail.failures[0]?.subtaskId ??
        (pick.find((t) => ACTIVE.has(t.status)) || pick.find((t) => t.id === selected) || pick[0])?.id ?? null;
      if (follow !== selected || first) {
        if (selected !== null && !first) {
          // Read on the next tick; never show another subtask's log.
          logStale = true;
          logText = '';
          logPre.textContent = 'Loading…';
        }
        selected = follow;
        logRun = null;
        dag.reveal(selected);
      }
    } else if (first) {
      dag.reveal(selected);
    }
    renderHeader();
    dag.update(detail.task.subtasks, selected);
    renderNode();
    renderTimeline();
    if (first) loadLog();
  }

  load();
  const running = () => detail && detail.task.status === 'RUNNING';
  ctx.poller
    .add(load, running)
    .add(loadLog, () => logStale || (tail.checked && detail && (running() || ACTIVE.has(sub(selected)?.status))));
}
