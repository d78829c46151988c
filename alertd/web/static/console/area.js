// The alert's area as an outline (no map tiles: the cell may be offline), its sirens as dots
// coloured by state. Without shapes or located sirens, the zone codes say where.

import {h, s} from './dom.js';
import {t} from './i18n.js';

const KM_PER_DEGREE = 111.32;

function circleOf(c) { // [lat, lon, radius_km] or {lat, lon, radius_km}
  return Array.isArray(c) ? {lat: c[0], lon: c[1], r: c[2]} : {lat: c.lat, lon: c.lon, r: c.radius_km};
}

// An equirectangular projection around the area's middle latitude, in degrees of latitude: one
// unit is about 111 km either way, so a circle stays a circle.
function projection(points) {
  const lats = points.map((p) => p[0]);
  const middle = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((middle * Math.PI) / 180);
  return ([lat, lon]) => [lon * k, -lat];
}

export function draw(area, sirens) {
  const polygons = area.polygons || [];
  const circles = (area.circles || []).map(circleOf);
  const located = sirens.filter((siren) => siren.lat !== null && siren.lat !== undefined && siren.lon !== null);
  const points = [
    ...polygons.flat(), ...located.map((siren) => [siren.lat, siren.lon]),
    ...circles.flatMap((c) => [[c.lat + c.r / KM_PER_DEGREE, c.lon], [c.lat - c.r / KM_PER_DEGREE, c.lon]]),
  ];
  const zones = h('p', {class: 'zones'}, h('strong', {}, t('area.zones')), ' ',
    area.zones.length ? area.zones.join(', ') : '—', area.description ? ` — ${area.description}` : '');
  const list = h('ul', {class: 'siren-list'}, sirens.map((siren) => h('li', {'data-siren': siren.id,
    'data-status': siren.status}, h('i', {class: `dot ss-${siren.status}`}), `${siren.label || siren.id} — `,
  t('siren.' + siren.status))));
  if (!points.length) return h('div', {class: 'area'}, zones, sirens.length ? list : null);

  const project = projection(points);
  const xy = points.map(project);
  const [minX, maxX] = [Math.min(...xy.map((p) => p[0])), Math.max(...xy.map((p) => p[0]))];
  const [minY, maxY] = [Math.min(...xy.map((p) => p[1])), Math.max(...xy.map((p) => p[1]))];
  const span = Math.max(maxX - minX, maxY - minY, 0.01);
  const pad = span * 0.08;
  const box = [minX - pad, minY - pad, maxX - minX + 2 * pad, maxY - minY + 2 * pad];
  const dot = span * 0.025;
  const shapes = [
    ...polygons.map((ring) => s('polygon', {class: 'shape', points: ring.map(project).map((p) => p.join(',')).join(' ')})),
    ...circles.map((c) => {
      const [cx, cy] = project([c.lat, c.lon]);
      return s('circle', {class: 'shape', cx, cy, r: c.r / KM_PER_DEGREE});
    }),
    ...located.map((siren) => {
      const [cx, cy] = project([siren.lat, siren.lon]);
      return s('circle', {class: `siren ss-${siren.status}`, cx, cy, r: dot, 'data-siren': siren.id},
        s('title', {}, `${siren.label || siren.id}: ${t('siren.' + siren.status)}`));
    }),
  ];
  const svg = s('svg', {class: 'outline', viewBox: box.join(' '), role: 'img', 'aria-label': t('area.title')}, shapes);
  return h('div', {class: 'area'}, svg, zones, sirens.length ? list : null);
}
