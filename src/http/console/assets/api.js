// The console's only way to the server: taskd's JSON API with the session
// cookie, and the session's CSRF token on every state change.

let csrfToken = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

/** Called when the server says the session has ended. */
export function onSessionEnded(fn) {
  onSignedOut = fn;
}

/** Calls the API; returns the envelope's `data` or throws an ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'NETWORK', `the server cannot be reached (${e.message})`);
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError(response.status, 'BAD_RESPONSE', `HTTP ${response.status}`);
  }
  if (!envelope.successful) {
    const e = envelope.error || {};
    if (response.status === 401 && !path.endsWith('/sign-in')) onSignedOut();
    throw new ApiError(response.status, e.code || 'ERROR', e.message || `HTTP ${response.status}`);
  }
  return envelope.data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
