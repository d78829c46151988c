// Counts per delivery state, drawn as one stacked bar per channel.

import {h} from './dom.js';
import {number, t} from './i18n.js';

// Drawing order: what reached people first, what is still to do last.
export const STATES = ['delivered', 'sent', 'failed', 'expired', 'cancelled', 'sending', 'pending'];
export const SETTLED = ['delivered', 'sent', 'failed', 'expired', 'cancelled'];

export function total(counts) {
  return Object.values(counts || {}).reduce((sum, n) => sum + n, 0);
}

export function settled(counts) {
  return SETTLED.reduce((sum, state) => sum + ((counts || {})[state] || 0), 0);
}

export function bar(channel, counts) {
  const all = total(counts);
  const done = settled(counts);
  const segments = STATES.filter((state) => counts[state]).map((state) => h('span', {
    class: `seg st-${state}`, style: `width:${(100 * counts[state]) / all}%`,
    title: `${t('state.' + state)}: ${number(counts[state])}`,
  }));
  return h('div', {class: 'channel-bar', 'data-channel': channel, 'data-done': done, 'data-total': all},
    h('span', {class: 'label'}, channel),
    h('span', {class: 'bar', role: 'img', 'aria-label': `${channel} ${done}/${all}`}, segments),
    h('span', {class: 'figure'}, `${number(done)}/${number(all)}`));
}

export function bars(counts) {
  return h('div', {class: 'bars'}, Object.keys(counts || {}).sort().map((channel) => bar(channel, counts[channel])));
}
