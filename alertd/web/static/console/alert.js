// One alert: counts per state and channel live from its event stream, the reach curve, the area
// and its sirens, its messages as sent (or as put before its approver), the failed deliveries, who
// created and approved it, and the approve, reject and cancel buttons.

import {api, follow} from './api.js';
import {area as areaText, badge} from './alerts.js';
import * as area from './area.js';
import {bar, settled, STATES, total} from './bars.js';
import * as chart from './chart.js';
import {fill, h, section} from './dom.js';
import {dateTime, duration, money, number, t} from './i18n.js';

const CAN_CANCEL = ['issuer', 'admin'];
const CAN_ISSUE_DRAFT = ['issuer', 'admin', 'approver'];
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
    const awaiting = a.state === 'awaiting_approval';
    const approver = me.roles.includes('approver');
    // The creator sees the button too: the API's refusal says why a second person must approve.
    const approve = (a.state === 'draft' && me.roles.some((r) => CAN_ISSUE_DRAFT.includes(r))) || (awaiting && approver)
      ? h('button', {id: 'approve', type: 'button', class: 'primary', onclick: approveAlert}, t('approve.button')) : null;
    const reject = awaiting && (approver || me.user === a.created_by)
      ? h('button', {id: 'reject', type: 'button', class: 'ghost', onclick: rejectAlert}, t('reject.button')) : null;
    fill(part.head,
      h('div', {class: 'title'}, h('h1', {}, a.event), badge(a.state), approve, reject, cancel),
      h('p', {class: 'meta'}, meta.filter(Boolean).join(' · ')),
      approvalLines(a),
      h('p', {class: 'error', id: 'approval-error', role: 'alert'}, st.approvalError || ''),
      a.cancelled_at ? h('p', {class: 'cancelled', id: 'cancelled'},
        t('cancel.done', {at: dateTime(a.cancelled_at), who: who || t('cancel.someone')})) : null);
  }

  function approvalLines(a) { // who created it, who approved or rejected it, until when it waits
    const r = a.approval;
    const created = a.created_by ? t('approval.created', {who: a.created_by, cell: a.cell_name || a.cell}) : null;
    if (!r) return created ? h('p', {class: 'meta', id: 'approval'}, created) : null;
    const lines = [created];
    if (r.approved_by) lines.push(t('approval.approved', {who: r.approved_by, cell: r.approved_cell, at: dateTime(r.approved_at)}));
    if (r.rejected_by) lines.push(t('approval.rejected', {who: r.rejected_by, cell: r.rejected_cell, reason: r.reason}));
    if (a.state === 'awaiting_approval') lines.push(t('approval.until', {at: dateTime(r.expires_at)}));
    if (a.state === 'approval_expired') lines.push(t('approval.expired', {at: dateTime(r.expires_at)}));
    const counts = Object.entries(r.audience).map(([kind, n]) => `${t('kind.' + kind)} ${number(n)}`).join(', ');
    return h('div', {id: 'approval'}, h('p', {class: 'meta'}, lines.filter(Boolean).join(' · ')),
      a.state === 'awaiting_approval' ? h('p', {class: 'meta', id: 'audience'}, t('approval.audience', {counts})) : null,
      a.state === 'awaiting_approval' ? estimateLines(a.estimate) : null);
  }

  function estimateLines(e) { // how long and how much, at the channels' rates, before it is released
    if (!e) return null;
    const channels = Object.entries(e.channels).map(([kind, c]) => {
      const time = c.seconds_to_last === null ? t('estimate.unknown') : duration(c.seconds_to_last);
      return `${t('kind.' + kind)} ${time}${c.cost ? ` (${money(c.cost.amount, c.cost.currency)})` : ''}`;
    }).join(', ');
    const late = e.warnings.filter((w) => w.code === 'ends-after-expiry')
      .map((w) => h('p', {class: 'error', 'data-warning': w.code}, t('estimate.late', {kind: t('kind.' + w.channel)})));
    return h('div', {id: 'estimate'}, h('p', {class: 'meta'}, t('estimate.time', {channels})), ...late);
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

  async function approveAlert() { // a draft goes out as an actual alert, as of now; an awaiting one is released
    if (!window.confirm(t('approve.confirm', {event: st.alert.event, area: areaText(st.alert)}))) return;
    await act(`${path}/approve`);
  }

  async function rejectAlert() {
    const reason = window.prompt(t('reject.reason', {event: st.alert.event}));
    if (reason && reason.trim()) await act(`${path}/reject`, {reason});
  }

  async function act(url, body) { // the alert as it is afterwards, or the API's refusal shown in its head
    try {
      await api(url, {method: 'POST', body, signal});
      st.approvalError = '';
    } catch (err) {
      st.approvalError = err.message;
    }
    st.alert = await api(path, {signal}).catch(() => st.alert);
    st.counts = st.alert.counts || st.counts;
    schedule();
    loadTexts();
  }

  async function cancel() {
    const dialog = document.getElementById('dialog');
    let message;
    try {
      const answer = await api(`${path}/cancel`, {method: 'POST', signal});
      if (answer.state === 'awaiting_approval') { // a Cancel of it, for a second person to approve
        window.location.hash = `#/alerts/${encodeURIComponent(answer.id)}`;
        return;
      }
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
