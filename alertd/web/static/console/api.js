// The API, with the token kept for this browser session only (sessionStorage), always sent as an
// Authorization header: never in a URL, where logs and histories would keep it.

const KEY = 'alertd.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value.trim()),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  return {Authorization: `Bearer ${token.get()}`, ...extra};
}

export async function api(path, {method = 'GET', body, signal} = {}) {
  const init = {method, signal, headers: headers(body === undefined ? {} : {'Content-Type': 'application/json'})};
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (resp.status === 401) window.dispatchEvent(new Event('alertd:signedout'));
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
  return resp.status === 204 ? null : resp.json();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

function parseEvent(block) {
  const ev = {event: 'message', id: null, data: []};
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const cut = line.indexOf(':');
    const field = cut < 0 ? line : line.slice(0, cut);
    const value = cut < 0 ? '' : line.slice(cut + 1).replace(/^ /, '');
    if (field === 'event') ev.event = value;
    else if (field === 'id') ev.id = value;
    else if (field === 'data') ev.data.push(value);
  }
  if (!ev.data.length) return null;
  return {...ev, data: JSON.parse(ev.data.join('\n'))};
}

// Server-Sent Events read with fetch (an EventSource cannot send the Authorization header).
// Reconnects after a network failure with Last-Event-ID, so nothing is missed or repeated;
// resolves after the `end` event, or when `signal` aborts.
export async function follow(path, after, onEvent, signal) {
  let last = after;
  while (!signal.aborted) {
    try {
      const extra = {Accept: 'text/event-stream'};
      if (last !== null) extra['Last-Event-ID'] = String(last);
      const resp = await fetch(path, {headers: headers(extra), signal});
      if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const ev = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!ev) continue;
          if (ev.id !== null) last = Number(ev.id);
          onEvent(ev.event, ev.data);
          if (ev.event === 'end') return;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500) throw err;
    }
    await sleep(2000, signal); // the daemon restarted, or the network dropped: resume after `last`
  }
}
