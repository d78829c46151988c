// Every siren of the caller's jurisdiction with its state as the API decides it, refreshed every few seconds.

import {api} from './api.js';
import {h} from './dom.js';
import {dateTime, t} from './i18n.js';

const REFRESH_MS = 5000;

function last(siren) {
  const d = siren.last;
  if (!d) return '—';
  return h('span', {}, `${t('command.' + d.command)} · ${t('last.' + d.state)} · `,
    h('a', {href: `#/alerts/${encodeURIComponent(d.alert_id)}`}, d.at ? dateTime(d.at) : d.alert_id));
}

// What the gateway last said of the siren: silence, or its mains and battery. The state itself
// (`status`) is the API's decision, shown as is.
function health(siren) {
  const hb = siren.health || {};
  if (hb.silent) {
    return hb.last_heartbeat ? t('siren.silent_since', {at: dateTime(hb.last_heartbeat)}) : t('siren.never_heard');
  }
  if (hb.mains === null || hb.mains === undefined) return '';
  const battery = hb.battery === null ? '—' : `${Math.round(hb.battery * 100)} %`;
  return t('siren.health', {mains: t(hb.mains ? 'yes' : 'no'), battery});
}

function row(siren) {
  return h('tr', {'data-siren': siren.id, 'data-status': siren.status},
    h('td', {}, h('i', {class: `dot ss-${siren.status}`}), t('siren.' + siren.status),
      h('div', {class: 'hint'}, health(siren))),
    h('td', {}, siren.label || '—'), h('td', {}, siren.id), h('td', {}, siren.zone),
    h('td', {}, last(siren)), h('td', {class: 'reason'}, (siren.last && siren.last.error) || ''));
}

export function show(root) {
  const body = h('tbody', {});
  const error = h('p', {class: 'error', role: 'alert'});
  root.append(h('section', {class: 'card wide'},
    h('h1', {}, t('sirens.title')),
    h('p', {class: 'hint'}, t('sirens.hint')),
    h('table', {class: 'sirens'}, h('thead', {}, h('tr', {},
      ['sirens.status', 'sirens.label', 'sirens.id', 'sirens.zone', 'sirens.last', 'sirens.error']
        .map((key) => h('th', {}, t(key))))), body),
    error));
  let timer = null;
  let stopped = false;
  const controller = new AbortController();
  async function refresh() {
    try {
      const {sirens} = await api('/v1/sirens', {signal: controller.signal});
      body.replaceChildren(...sirens.map(row));
      error.textContent = sirens.length ? '' : t('sirens.none');
    } catch (err) {
      if (stopped) return;
      error.textContent = err.status === 403 ? t('sirens.forbidden') : err.message;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return {stop() { stopped = true; clearTimeout(timer); controller.abort(); }};
}
