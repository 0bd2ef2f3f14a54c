// The inventory: clusters, zones, servers and hosts with their statuses and
// latest tasks, and the operations started from here (restart, start, stop
// a server, with force where it applies; restart a host's agent), offered
// only to the roles that may use them.

import { get, post, query } from './api.js';
import { h, time, badge, confirmAction, notice, errorBox } from './ui.js';

const SERVER_OPS = [
  ['restart', 'Restart', true],
  ['start', 'Start', false],
  ['stop', 'Stop', true],
];

export function renderInventory(root, ctx) {
  const canReadTasks = ctx.can('TASK_READ');
  const clustersBox = h('div', { id: 'clusters' });
  const hostsBox = h('div', { id: 'hosts' });
  root.append(h('div', { class: 'heading' }, h('h1', {}, 'Inventory')),
    h('section', { 'aria-labelledby': 'clusters-title' }, h('h2', { id: 'clusters-title' }, 'Clusters'), clustersBox),
    h('section', { 'aria-labelledby': 'hosts-title' }, h('h2', { id: 'hosts-title' }, 'Hosts'), hostsBox));

  let clusters = null;
  let hosts = null;
  let latest = new Map();
  let allowed = new Map();

  const latestCell = (key) => {
    const list = latest.get(key) || [];
    if (!canReadTasks) return '';
    if (!list.length) return h('span', { class: 'dim' }, 'none');
    return h('ul', { class: 'latest' }, list.map((t) => h('li', {},
      h('a', { href: `#/tasks/${t.id}` }, `#${t.id} ${t.name}`), ' ', badge(t.status), ' ', h('span', { class: 'dim' }, time(t.createTime)))));
  };

  async function operate(label, text, path) {
    if (!(await confirmAction(text))) return;
    try {
      const task = await post(path);
      notice(`${label}: task ${task.id} started.`);
      if (canReadTasks) location.hash = `#/tasks/${task.id}`;
    } catch (e) {
      notice(`${label} refused: ${e.message}`, true);
    }
  }

  // Force checkboxes survive the refreshes that redraw the table.
  const forced = new Set();

  function serverButtons(c, srv) {
    if (!ctx.canOperate(c.id)) return '';
    const admits = allowed.get(srv.id);
    const force = h('input', { type: 'checkbox', id: `force-${srv.id}`, checked: forced.has(srv.id) });
    const buttons = SERVER_OPS.map(([op, label, forceable]) => {
      const b = h('button', {
        type: 'button', id: `server-${srv.id}-${op}`, class: op === 'start' ? '' : 'danger',
        'data-op': op,
        onclick: () => {
          const f = forceable && force.checked;
          operate(`${label} server ${srv.ip}`,
            `${label} server ${srv.ip}:${srv.sqlPort} in ${srv.zoneName} of ${c.name}${f ? ' (force)' : ''}?`,
            `/api/v2/ob/clusters/${c.id}/servers/${srv.id}/${op}${forceable ? query({ force: f }) : ''}`);
        },
      }, label);
      return [b, forceable];
    });
    // Only what the server's state admits (with force or not) is enabled;
    // the operation checks again when asked.
    const refresh = () => {
      for (const [b, forceable] of buttons) {
        const op = b.dataset.op;
        const ok = !admits || (forceable && force.checked ? admits[`${op}Force`] : admits[op]);
        b.disabled = !ok;
        b.title = ok ? '' : `The server is ${srv.status}: ${op}${force.checked && forceable ? ' (force)' : ''} is not admitted now`;
      }
    };
    force.addEventListener('change', () => {
      if (force.checked) forced.add(srv.id); else forced.delete(srv.id);
      refresh();
    });
    refresh();
    return h('div', { class: 'ops' }, buttons.map(([b]) => b),
      h('label', { class: 'check', for: `force-${srv.id}` }, force, ' force'));
  }

  function renderClusters() {
    if (!clusters) return;
    if (!clusters.length) { clustersBox.replaceChildren(h('p', {}, 'No cluster yet.')); return; }
    clustersBox.replaceChildren(...clusters.map((c) => h('article', { class: 'card cluster', 'data-cluster-id': c.id },
      h('h3', {}, `${c.name} `, badge(c.status), h('span', { class: 'dim' }, ` id ${c.id} · obClusterId ${c.obClusterId}`)),
      h('div', { class: 'scroll' }, h('table', { 'aria-label': `Servers of ${c.name}` },
        h('thead', {}, h('tr', {}, ['Zone', 'Server', 'Host', 'Status', 'Latest tasks', 'Operations'].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, c.zones.flatMap((z) => z.servers.map((srv) => h('tr', { 'data-server-id': srv.id },
          h('td', {}, z.name, ' ', badge(z.status)),
          h('td', {}, `${srv.ip}:${srv.sqlPort}`),
          h('td', {}, `host ${srv.hostId}`),
          h('td', {}, badge(srv.status)),
          h('td', {}, latestCell(`server:${srv.id}`)),
          h('td', {}, serverButtons(c, srv)))))))))));
  }

  function renderHosts() {
    if (!hosts) return;
    if (!hosts.length) { hostsBox.replaceChildren(h('p', {}, 'No host yet.')); return; }
    const canRestart = ctx.can('AGENT_RESTART');
    hostsBox.replaceChildren(h('div', { class: 'scroll card' }, h('table', { 'aria-label': 'Hosts' },
      h('thead', {}, h('tr', {}, ['Host', 'Address', 'Agent', 'Agent status', 'Latest tasks', 'Operations'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, hosts.map((ho) => h('tr', { 'data-host-id': ho.id },
        h('td', {}, `${ho.name} (id ${ho.id})`),
        h('td', {}, ho.ip),
        h('td', {}, h('code', {}, ho.agentUrl)),
        h('td', {}, badge(ho.agentStatus)),
        h('td', {}, latestCell(`host:${ho.id}`)),
        h('td', {}, canRestart ? h('button', {
          type: 'button', id: `host-${ho.id}-restart-agent`, class: 'danger',
          onclick: () => operate(`Restart agent of ${ho.name}`, `Restart the agent of host ${ho.name} (${ho.ip})?`,
            `/compute/hosts/${ho.id}/agent/restart`),
        }, 'Restart agent') : '')))))));
  }

  const loadClusters = async () => {
    try {
      clusters = (await get('/api/v2/ob/clusters?size=200')).contents;
      renderClusters();
    } catch (e) { clustersBox.replaceChildren(errorBox(e)); }
  };
  const loadHosts = async () => {
    try {
      hosts = (await get('/api/v2/compute/hosts?size=500')).contents;
      renderHosts();
    } catch (e) { hostsBox.replaceChildren(errorBox(e)); }
  };
  const loadLatest = async () => {
    if (!canReadTasks) return;
    try {
      const list = await get('/console/api/latest-tasks');
      latest = new Map();
      for (const t of list) (latest.get(t.target) || latest.set(t.target, []).get(t.target)).push(t);
      renderClusters();
      renderHosts();
    } catch (e) { notice(`Latest tasks: ${e.message}`, true); }
  };

  const loadAllowed = async () => {
    try {
      allowed = new Map((await get('/console/api/server-operations')).map((a) => [a.serverId, a]));
      renderClusters();
    } catch (e) { notice(`Server operations: ${e.message}`, true); }
  };

  // The first load runs the reads together; afterwards the poller
  // refreshes one of them a second.
  loadAllowed().then(loadClusters); loadHosts(); loadLatest();
  ctx.poller.add(loadClusters).add(loadAllowed).add(loadHosts).add(loadLatest);
}
