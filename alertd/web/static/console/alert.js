// One alert: counts per state and channel live from its event stream, the reach curve, the area
// and its sirens, its messages as sent, the failed deliveries, and the cancel button.

import {api, follow} from './api.js';
import {area as areaText, badge} from './alerts.js';
import * as area from './area.js';
import {bar, settled, STATES, total} from './bars.js';
import * as chart from './chart.js';
import {fill, h, section} from './dom.js';
import {dateTime, number, t} from './i18n.js';

const CAN_CANCEL = ['issuer', 'admin'];
const CANCELLABLE = ['planning', 'active', 'completed', 'draft']; // a completed alert may still have sirens sounding
const RELOAD_MS = 2000; // sirens and failures follow the counts, at most this often
// And the sirens also as often as on the sirens page: their state moves without the alert's counts
// (heartbeats, a later command), and both pages must say the same.
const SIRENS_MS = 5000;
const FAILED_SHOWN = 50;

export function show(root, id, me) {
  const controller = new AbortController();
  const signal = controller.signal;
  const path = `/v1/alerts/${encodeURIComponent(id)}`;
  const st = {alert: null, counts: {}, rows: [], sirens: [], cancelledBy: null, locale: null, messages: []};
  const part = {head: h('div', {class: 'head'}), counts: h('div'), chart: h('div'), area: h('div'),
    texts: h('div'), failed: h('div')};
  let frame = 0;
  let reloadAt = 0;
  let sirensTimer = 0;

  function drawHead() {
    const a = st.alert;
    const who = a.cancelled_by ? a.cancelled_by.cell || a.cancelled_by : st.cancelledBy;
    const cancel = me.roles.some((r) => CAN_CANCEL.includes(r)) && CANCELLABLE.includes(a.state)
      ? h('button', {id: 'cancel', type: 'button', class: 'danger', onclick: confirmCancel}, t('cancel.button')) : null;
    const meta = [`${t('alert.sent')} ${dateTime(a.sent)}`, a.cell || a.sender, t('status.' + a.status),
      [a.severity, a.urgency, a.certainty].map((v) => t('cap.' + v)).join(' / '), a.expires && `${t('alert.expires')} ${dateTime(a.expires)}`];
    const approve = me.roles.some((r) => CAN_CANCEL.includes(r)) && a.state === 'draft'
      ? h('button', {id: 'approve', type: 'button', class: 'primary', onclick: approveDraft}, t('approve.button')) : null;
    fill(part.head,
      h('div', {class: 'title'}, h('h1', {}, a.event), badge(a.state), approve, cancel),
      h('p', {class: 'meta'}, meta.filter(Boolean).join(' · ')),
      a.cancelled_at ? h('p', {class: 'cancelled', id: 'cancelled'},
        t('cancel.done', {at: dateTime(a.cancelled_at), who: who || t('cancel.someone')})) : null);
  }

  function drawCounts() {
    const channels = Object.keys(st.counts).sort();
    const all = Object.values(st.counts);
    fill(part.counts,
      h('table', {class: 'counts', 'data-done': all.reduce((n, c) => n + settled(c), 0),
        'data-total': all.reduce((n, c) => n + total(c), 0)},
      h('thead', {}, h('tr', {}, h('th', {}, t('counts.channel')), STATES.map((s) => h('th', {}, t('state.' + s))),
        h('th', {}, t('counts.total')))),
      h('tbody', {}, channels.map((channel) => h('tr', {'data-channel': channel},
        h('th', {}, channel),
        STATES.map((s) => h('td', {'data-state': s, class: st.counts[channel][s] ? '' : 'zero'},
          number(st.counts[channel][s] || 0))),
        h('td', {'data-state': 'total'}, number(total(st.counts[channel]))))))),
      h('div', {class: 'bars'}, channels.map((channel) => bar(channel, st.counts[channel]))),
      channels.length ? null : h('p', {class: 'hint'}, t('counts.none')));
  }

  function draw() { // at most once a frame: a replay brings many rows at once
    frame = 0;
    drawHead();
    drawCounts();
    fill(part.chart, chart.draw(st.alert.sent, st.rows));
  }

  function schedule() {
    if (!frame && !signal.aborted) frame = requestAnimationFrame(draw);
  }

  function drawTexts() {
    const locales = [...new Set(st.messages.map((m) => m.locale))].sort();
    if (!locales.includes(st.locale)) st.locale = locales.includes(st.alert.locale) ? st.alert.locale : locales[0];
    const tabs = h('div', {class: 'tabs', role: 'tablist'}, locales.map((locale) => h('button', {type: 'button',
      role: 'tab', 'aria-selected': locale === st.locale ? 'true' : 'false',
      onclick: () => { st.locale = locale; drawTexts(); }}, locale)));
    const cards = st.messages.filter((m) => m.locale === st.locale).map((m) => h('article', {class: 'message',
      'data-channel': m.channel, 'data-locale': m.locale},
    h('h3', {}, t('kind.' + m.channel)),
    m.title ? h('p', {class: 'msg-title'}, m.title) : null,
    h('p', {class: 'msg-body', dir: 'auto'}, m.body),
    h('p', {class: 'hint'}, m.channel === 'sms' ? t('texts.sms', {segments: m.segments, encoding: m.encoding})
      : t('texts.size', {size: m.size}))));
    fill(part.texts, tabs, h('div', {class: 'messages'}, cards));
  }

  async function loadTexts() {
    try {
      st.messages = (await api(`${path}/messages`, {signal})).messages;
      drawTexts();
    } catch (err) {
      fill(part.texts, h('p', {class: 'error'}, err.message));
    }
  }

  async function loadSirens() { // each siren's state is the API's, shown as is
    st.sirens = (await api(`${path}/sirens`, {signal})).sirens;
    fill(part.area, area.draw(st.alert.area, st.sirens));
  }

  async function pollSirens() {
    await loadSirens().catch(() => {});
    if (!signal.aborted) sirensTimer = setTimeout(pollSirens, SIRENS_MS);
  }

  async function loadFailed() {
    const {deliveries} = await api(`${path}/deliveries?state=failed&limit=${FAILED_SHOWN}`, {signal});
    const failed = Object.values(st.counts).reduce((n, c) => n + (c.failed || 0), 0);
    fill(part.failed, deliveries.length ? h('table', {class: 'failed'},
      h('thead', {}, h('tr', {}, ['failed.channel', 'failed.target', 'failed.address', 'failed.attempts',
        'failed.reason', 'failed.at'].map((key) => h('th', {}, t(key))))),
      h('tbody', {}, deliveries.map((d) => h('tr', {'data-delivery': d.id},
        h('td', {}, d.channel), h('td', {}, d.target), h('td', {}, d.address), h('td', {}, d.attempts),
        h('td', {class: 'reason'}, d.last_error || '—'), h('td', {}, d.updated_at ? dateTime(d.updated_at) : '—')))))
      : h('p', {class: 'hint'}, t('failed.none')),
    failed > deliveries.length ? h('p', {class: 'hint'}, t('failed.more', {n: failed - deliveries.length})) : null);
  }

  function reloadSoon() { // the sirens and failures change with the counts
    const now = Date.now();
    if (now < reloadAt) return;
    reloadAt = now + RELOAD_MS;
    setTimeout(() => Promise.all([loadSirens(), loadFailed()]).catch(() => {}), 0);
  }

  function onEvent(name, data) {
    if (name === 'progress') {
      st.rows.push(data);
      st.counts = data.counts;
      st.alert.state = data.state;
      schedule();
      reloadSoon();
    } else if (name === 'end') { // the final word: who cancelled, when, and the last failures
      // The alert as it is now: receipts may have moved its counts since the last row.
      api(path, {signal}).then((alert) => { st.alert = alert; st.counts = alert.counts; schedule(); }).catch(() => {});
      reloadAt = 0;
      reloadSoon();
    }
  }

  function confirmCancel() {
    const dialog = document.getElementById('dialog');
    dialog.replaceChildren(h('form', {method: 'dialog'},
      h('h2', {}, t('cancel.title')),
      h('p', {}, t('cancel.confirm', {event: st.alert.event, area: areaText(st.alert)})),
      h('div', {class: 'buttons'},
        h('button', {value: 'keep', class: 'ghost'}, t('cancel.keep')),
        h('button', {value: 'cancel', class: 'danger', id: 'confirm-cancel'}, t('cancel.do')))));
    dialog.returnValue = '';
    dialog.onclose = () => { if (dialog.returnValue === 'cancel') cancel(); };
    dialog.showModal();
  }

  async function approveDraft() { // a draft goes out as an actual alert, as of now
    if (!window.confirm(t('approve.confirm', {event: st.alert.event, area: areaText(st.alert)}))) return;
    try {
      await api(`${path}/approve`, {method: 'POST', signal});
      window.location.reload();
    } catch (err) {
      window.alert(err.message);
    }
  }

  async function cancel() {
    const dialog = document.getElementById('dialog');
    let message;
    try {
      const answer = await api(`${path}/cancel`, {method: 'POST', signal});
      st.cancelledBy = answer.cancelled_by ? answer.cancelled_by.cell || answer.cancelled_by : me.cell_name;
      st.alert = {...st.alert, ...answer};
      message = [t('cancel.done', {at: dateTime(answer.cancelled_at), who: st.cancelledBy}),
        t('cancel.stopped', {n: answer.stopped, sirens: answer.siren_cancels})];
      schedule();
    } catch (err) {
      message = [err.message];
    }
    dialog.onclose = null;
    dialog.replaceChildren(h('form', {method: 'dialog', id: 'cancel-result'},
      h('h2', {}, t('cancel.title')), message.map((line) => h('p', {}, line)),
      h('div', {class: 'buttons'}, h('button', {value: 'ok', class: 'primary'}, t('close')))));
    dialog.showModal();
  }

  async function start() {
    try {
      st.alert = await api(path, {signal});
    } catch (err) {
      if (!signal.aborted) root.replaceChildren(h('p', {class: 'error', role: 'alert'}, err.message));
      return;
    }
    st.counts = st.alert.counts;
    draw();
    loadTexts();
    pollSirens();
    loadFailed().catch(() => {});
    // From seq 0: every row so far (the curve's history), then each new one live.
    follow(`${path}/events`, 0, onEvent, signal).catch((err) => {
      part.counts.append(h('p', {class: 'error'}, err.message));
    });
  }

  root.append(h('p', {class: 'back'}, h('a', {href: '#/alerts'}, `← ${t('alerts.title')}`)),
    part.head,
    h('div', {class: 'detail'},
      section(t('counts.title'), part.counts),
      section(t('reach.title'), part.chart),
      section(t('area.title'), part.area),
      section(t('texts.title'), part.texts),
      h('section', {class: 'card span'}, h('h2', {}, t('failed.title')), part.failed)));
  start();
  return {stop() { controller.abort(); cancelAnimationFrame(frame); clearTimeout(sirensTimer); }};
}
