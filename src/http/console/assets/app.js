// The console's entry: the session (sign-in, sign-out), the hash router
// and the views it shows.

import { get, post, setCsrfToken, onSessionEnded, ApiError } from './api.js';
import { Poller } from './ui.js';
import { renderTasks } from './tasks.js';
import { renderTask } from './task.js';
import { renderInventory } from './inventory.js';

const view = document.getElementById('view');
const top = document.getElementById('top');
const signIn = document.getElementById('sign-in');
let session = null;
let poller = null;

/** What every view gets: the session, the page's poller, and a way to re-render. */
function context() {
  if (poller) poller.stop();
  poller = new Poller(1000);
  return {
    session,
    poller,
    can: (p) => session.permissions.includes(p),
    canOperate: (clusterId) =>
      session.permissions.includes('SERVER_OPERATE') ||
      (session.serverClusters || []).includes(clusterId),
  };
}

function route() {
  if (!session) return;
  const hash = location.hash || '#/tasks';
  const [path, q] = hash.slice(1).split('?');
  const params = new URLSearchParams(q || '');
  const parts = path.split('/').filter(Boolean);
  document.getElementById('nav-tasks').toggleAttribute('aria-current', parts[0] !== 'inventory');
  document.getElementById('nav-inventory').toggleAttribute('aria-current', parts[0] === 'inventory');
  view.replaceChildren();
  const ctx = context();
  if (parts[0] === 'inventory') {
    document.title = 'Inventory · taskd';
    renderInventory(view, ctx);
  } else if (parts[0] === 'tasks' && parts[1]) {
    document.title = `Task ${parts[1]} · taskd`;
    renderTask(view, ctx, Number(parts[1]), params);
  } else {
    document.title = 'Tasks · taskd';
    renderTasks(view, ctx, params);
  }
}

function showSignIn(message) {
  session = null;
  if (poller) poller.stop();
  top.hidden = true;
  view.replaceChildren();
  signIn.hidden = false;
  document.getElementById('sign-in-error').textContent = message || '';
  document.getElementById('sign-in-name').focus();
}

function signedIn(s) {
  session = s;
  setCsrfToken(s.csrfToken);
  signIn.hidden = true;
  top.hidden = false;
  const roles = s.roles.map((r) => r.role).join(', ');
  document.getElementById('who').textContent = `${s.user} (${roles})`;
  route();
}

document.getElementById('sign-in-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const button = document.getElementById('sign-in-submit');
  button.disabled = true;
  try {
    const s = await post('/console/api/sign-in', {
      name: form.elements.name.value,
      password: form.elements.password.value,
    });
    form.elements.password.value = '';
    signedIn(s);
  } catch (e) {
    document.getElementById('sign-in-error').textContent = e.message;
  } finally {
    button.disabled = false;
  }
});

document.getElementById('sign-out').addEventListener('click', async () => {
  try { await post('/console/api/sign-out'); } catch { /* the session is gone either way */ }
  setCsrfToken(null);
  showSignIn('Signed out.');
});

onSessionEnded(() => showSignIn('Your session has ended; sign in again.'));
window.addEventListener('hashchange', route);

(async () => {
  try {
    signedIn(await get('/console/api/session'));
  } catch (e) {
    showSignIn(e instanceof ApiError && e.status === 401 ? '' : e.message);
  }
})();
