// The reach curve: the share of each channel's targets sent (accepted by the provider) and
// delivered (confirmed by a receipt) over time since the order, from the alert's progress rows.

import {h, s} from './dom.js';
import {duration, percent, t} from './i18n.js';

const W = 640;
const H = 260;
const M = {left: 44, right: 12, top: 12, bottom: 30};
export const COLOURS = ['#2563eb', '#9333ea', '#ea580c', '#0d9488', '#be185d'];

// [{channel, measure: 'sent'|'delivered', points: [[seconds, share]]}], one line per channel and
// measure; `delivered` only for channels that ever had a receipt.
export function lines(sent, rows) {
  const start = Date.parse(sent);
  const found = new Map();
  for (const row of rows) {
    const x = Math.max(0, (Date.parse(row.at) - start) / 1000);
    for (const [channel, counts] of Object.entries(row.counts)) {
      const all = Object.values(counts).reduce((a, b) => a + b, 0);
      if (!all) continue;
      const delivered = counts.delivered || 0;
      for (const [measure, n] of [['sent', (counts.sent || 0) + delivered], ['delivered', delivered]]) {
        const key = `${channel} ${measure}`;
        if (!found.has(key)) found.set(key, {channel, measure, points: [[0, 0]]});
        found.get(key).points.push([x, n / all]);
      }
    }
  }
  return [...found.values()].filter((line) => line.measure === 'sent' || line.points.some(([, y]) => y > 0));
}

function ticks(max, count) {
  const rough = max / count;
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].find((s) => s >= rough) || rough;
  const out = [];
  for (let v = 0; v <= max + 1e-9; v += step) out.push(v);
  return out;
}

export function draw(sent, rows) {
  const all = lines(sent, rows);
  const channels = [...new Set(all.map((line) => line.channel))].sort();
  const maxX = Math.max(5, ...all.flatMap((line) => line.points.map(([x]) => x)));
  const px = (x) => M.left + ((W - M.left - M.right) * x) / maxX;
  const py = (y) => H - M.bottom - (H - M.top - M.bottom) * y;
  const grid = [
    ...[0, 0.25, 0.5, 0.75, 1].map((y) => [
      s('line', {x1: M.left, x2: W - M.right, y1: py(y), y2: py(y), class: 'grid'}),
      s('text', {x: M.left - 6, y: py(y) + 4, class: 'tick', 'text-anchor': 'end'}, percent(y)),
    ]),
    ...ticks(maxX, 6).map((x) => s('text', {x: px(x), y: H - 10, class: 'tick', 'text-anchor': 'middle'}, duration(x))),
  ];
  const paths = all.map((line) => s('polyline', {
    class: `reach ${line.measure}`, 'data-channel': line.channel, 'data-points': line.points.length,
    stroke: COLOURS[channels.indexOf(line.channel) % COLOURS.length],
    points: line.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' '),
  }, s('title', {}, `${line.channel} — ${t('reach.' + line.measure)}`)));
  const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': t('reach.title'),
    'data-rows': rows.length}, grid, paths);
  const legend = h('p', {class: 'legend'}, channels.map((channel, i) => h('span', {},
    h('i', {class: 'swatch', style: `background:${COLOURS[i % COLOURS.length]}`}), channel)),
  h('span', {}, h('i', {class: 'swatch line'}), t('reach.sent')),
  h('span', {}, h('i', {class: 'swatch dashed'}), t('reach.delivered')));
  return h('div', {class: 'reach-chart'}, all.length ? svg : h('p', {class: 'hint'}, t('reach.empty')), legend);
}
