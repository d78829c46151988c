// The list of alerts, newest first, with a progress bar per channel; refreshed every few seconds.

import {api} from './api.js';
import {bars} from './bars.js';
import {h} from './dom.js';
import {dateTime, t} from './i18n.js';

const REFRESH_MS = 3000;
const SHOWN = 30;

export function area(alert) {
  return alert.area.description || alert.area.zones.join(', ') || t('area.shapes');
}

export function badge(state) {
  return h('span', {class: `badge as-${state}`, 'data-state': state}, t('alert.' + state));
}

function row(alert) {
  const link = `#/alerts/${encodeURIComponent(alert.id)}`;
  return h('tr', {'data-alert': alert.id, 'data-state': alert.state},
    h('td', {}, h('a', {href: link}, dateTime(alert.sent))),
    h('td', {}, h('a', {href: link, class: 'event'}, alert.event),
      alert.status !== 'actual' ? h('span', {class: 'tag'}, t('status.' + alert.status)) : null),
    h('td', {}, badge(alert.state)),
    h('td', {}, area(alert)),
    h('td', {class: 'progress'}, bars(alert.counts)));
}

export function show(root) {
  const body = h('tbody', {});
  const empty = h('p', {class: 'hint', hidden: true}, t('alerts.none'));
  const error = h('p', {class: 'error', role: 'alert'});
  root.append(h('section', {class: 'card wide'},
    h('h1', {}, t('alerts.title')),
    h('table', {class: 'alerts'},
      h('thead', {}, h('tr', {}, ['alerts.sent', 'alerts.event', 'alerts.state', 'alerts.area', 'alerts.progress']
        .map((key) => h('th', {}, t(key))))),
      body),
    empty, error));
  let timer = null;
  let stopped = false;
  const controller = new AbortController();
  async function refresh() {
    try {
      const {alerts} = await api(`/v1/alerts?limit=${SHOWN}`, {signal: controller.signal});
      // The list has no counts: each alert's status has them (few alerts, a few times a minute).
      const full = await Promise.all(alerts.map((a) => api(`/v1/alerts/${a.id}`, {signal: controller.signal})));
      body.replaceChildren(...full.map(row));
      empty.hidden = full.length > 0;
      error.textContent = '';
    } catch (err) {
      if (!stopped) error.textContent = err.message;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return {stop() { stopped = true; clearTimeout(timer); controller.abort(); }};
}
