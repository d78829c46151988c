"""Polygon and circle matching: which points lie in an alert's area, and whether it leaves a jurisdiction.

An area's shapes are polygons (rings of (lat, lon), CAP order, closed: first == last) and circles
(lat, lon, radius_km); zone codes are matched elsewhere, in SQL. Polygons live in the lon/lat plane
(shapely's x = lon, y = lat): their edges are straight lines in degrees, as CAP and map drawing tools
mean them. Circles are great-circle distances on a sphere of radius EARTH_RADIUS_KM.

A point exactly on a polygon's edge, or exactly at a circle's radius, is inside: CAP does not say,
and warning one more person beats missing one.

Shapes crossing the antimeridian or reaching a pole are out of scope: `check` refuses them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any

import numpy as np
import shapely

from alertd import cap

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
MAX_POLYGONS = 1000
MAX_VERTICES = 50_000  # all polygons together
MAX_CIRCLES = 1000
MAX_RADIUS_KM = 1000.0
CIRCLE_SIDES = 64
TOLERANCE_KM = 0.001  # an area may overstep its jurisdiction by this much (shared edges, rounding)
# Boxes are widened by ~1 cm so that a point on a box's edge survives float rounding in SQL or numpy.
_PAD_DEG = 1e-7

Point = tuple[float, float]  # (lat, lon)
Ring = tuple[Point, ...]
Circle = tuple[float, float, float]  # (lat, lon, radius_km)
Box = tuple[float, float, float, float]  # (min_lat, min_lon, max_lat, max_lon)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """An alert's polygons and circles, ready to match many points: build once per alert with `of`.

    Call `check` on the raw shapes first; `of` mends invalid polygons rather than fail, because
    targeting must not stop in the middle of an emergency."""

    polygons: tuple[Ring, ...]
    circles: tuple[Circle, ...]
    _area: shapely.Geometry | None = dataclasses.field(default=None, repr=False, compare=False)
    _box: Box | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, polygons: Iterable[Sequence[Sequence[float]]], circles: Iterable[Sequence[float]]) -> Shapes:
        rings = tuple(tuple((float(lat), float(lon)) for lat, lon in ring) for ring in polygons)
        disks = tuple((float(lat), float(lon), float(radius)) for lat, lon, radius in circles)
        area = _union([_polygon(ring) for ring in rings])
        boxes = [_circle_box(*disk) for disk in disks]
        if area is not None:
            min_lon, min_lat, max_lon, max_lat = area.bounds
            boxes.append((min_lat, min_lon, max_lat, max_lon))
        return cls(rings, disks, area, _enclosing(boxes) if boxes else None)

    def bounds(self) -> Box | None:
        """(min_lat, min_lon, max_lat, max_lon) of a box holding every shape; None without shapes.

        For the store's indexed prefilter `lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?`."""
        return self._box

    def contains(self, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
        """For each point, whether it lies in any of the shapes (edges and radii included).

        A NaN coordinate (no location) is never inside."""
        lats, lons = np.asarray(lats, dtype=float), np.asarray(lons, dtype=float)
        inside = np.zeros(lats.shape, dtype=bool)
        if self._area is not None:
            min_lon, min_lat, max_lon, max_lat = self._area.bounds
            todo = np.flatnonzero(_in_box(_pad((min_lat, min_lon, max_lat, max_lon)), lats, lons))
            inside[todo] = shapely.intersects_xy(self._area, lons[todo], lats[todo])
        for circle in self.circles:
            todo = np.flatnonzero(~inside & _in_box(_pad(_circle_box(*circle)), lats, lons))
            inside[todo] = _within(circle, lats[todo], lons[todo])
        return inside

    def contains_point(self, lat: float, lon: float) -> bool:
        """`contains` for one point (a siren, say), by the very same rule."""
        return bool(self.contains(np.array([lat]), np.array([lon]))[0])


@dataclasses.dataclass(frozen=True)
class Outside:
    """The part of an area beyond a jurisdiction.

    `polygons` are the outer rings of that part, holes left out: they can only over-report."""

    polygons: tuple[Ring, ...]
    area_km2: float
    points: tuple[Point, ...] = ()  # circles of radius 0 (or less than a metre) outside

    def to_json(self) -> dict:
        return {
            "polygons": [[list(p) for p in ring] for ring in self.polygons], "area_km2": round(self.area_km2, 3),
            "points": [list(p) for p in self.points],
        }


def outside(shapes: Shapes, boundary: Iterable[Sequence[Sequence[float]]]) -> Outside | None:
    """What of `shapes` lies beyond the union of the `boundary` rings (lat, lon); None if nothing does.

    Circles count as their circumscribed polygons (`circle_ring`) and their centres, so the answer
    errs on the side of reporting, even for a circle of radius 0; the boundary is widened by
    TOLERANCE_KM so that shared edges and rounding are not reported."""
    parts = [shapes._area] if shapes._area is not None else []
    parts += [_polygon(circle_ring(*circle)) for circle in shapes.circles]
    parts += [shapely.Point(lon, lat) for lat, lon, _ in shapes.circles]
    if not parts:
        return None
    area = shapely.union_all(parts)
    border = [_polygon(ring) for ring in boundary]
    # Only the boundary near the area matters: a jurisdiction may be many detailed rings.
    near = shapely.STRtree(border).query(area) if border else []
    if len(near):
        widened = shapely.buffer(_union([border[i] for i in near]), _tolerance_deg(shapes._box), join_style="mitre")
        area = shapely.difference(area, widened)
    if area.is_empty:
        return None
    rings = tuple(
        tuple((round(lat, 7), round(lon, 7)) for lon, lat in polygon.exterior.coords)
        for polygon in shapely.get_parts(area)
        if isinstance(polygon, shapely.Polygon)
    )
    points = tuple((round(p.y, 7), round(p.x, 7)) for p in shapely.get_parts(area) if isinstance(p, shapely.Point))
    return Outside(rings, _area_km2(area), points)


def circle_ring(lat: float, lon: float, radius_km: float, sides: int = CIRCLE_SIDES) -> Ring:
    """A closed ring of `sides` edges around a circle, covering every point within `radius_km`.

    Built in the local plane x = (lon - lon0)·cos(lat0), y = lat - lat0, a linear map of the lon/lat
    plane (straight edges stay straight) where the circle is nearly round: each edge is a tangent to
    the densely sampled great circle, pushed out by a margin that covers the sampling gaps."""
    scale = math.cos(math.radians(lat))
    lats, lons = _circle_points(lat, lon, radius_km, max(1024, 4 * sides))
    xy = np.column_stack(((lons - lon) * scale, lats - lat))
    angles = np.linspace(0.0, 2 * math.pi, sides, endpoint=False)
    normals = np.column_stack((np.cos(angles), np.sin(angles)))
    reach = (xy @ normals.T).max(axis=0) + 1e-3 * math.degrees(radius_km / EARTH_RADIUS_KM) + _PAD_DEG
    # Vertex k is where tangent k meets tangent k + 1.
    n2, h2 = np.roll(normals, -1, axis=0), np.roll(reach, -1)
    det = math.sin(2 * math.pi / sides)
    x = (reach * n2[:, 1] - h2 * normals[:, 1]) / det
    y = (normals[:, 0] * h2 - n2[:, 0] * reach) / det
    ring = [(float(lat + dy), float(lon + dx / scale)) for dx, dy in zip(x, y, strict=True)]
    return (*ring, ring[0])


# -- checking an order's shapes ------------------------------------------------------------------


def check(polygons: Sequence[Sequence[Sequence[float]]], circles: Sequence[Sequence[float]]) -> None:
    """Refuse unusable shapes, naming every problem with its field (`area.polygons.3`)."""
    problems = size_problems(polygons, circles)
    if not problems:
        problems = _each("area.polygons", polygons, _ring_problems) + _each("area.circles", circles, _circle_problems)
    if problems:
        first = problems[0]
        raise cap.check.invalid(f"{first['field']}: {first['message']}", problems)


def _each(field: str, items: Sequence, problems_of: Callable[[Any], list[str]]) -> list[dict]:
    return [{"field": f"{field}.{i}", "message": text} for i, item in enumerate(items) for text in problems_of(item)]


def size_problems(polygons: Sequence[Sized], circles: Sized) -> list[dict]:
    """More polygons, vertices or circles than alertd takes: counted before anything else is looked
    at, so that a huge area costs little to refuse."""
    problems = []
    if len(polygons) > MAX_POLYGONS:
        problems.append({"field": "area.polygons", "message": f"at most {MAX_POLYGONS} polygons, got {len(polygons)}"})
    vertices = sum(len(ring) for ring in polygons)
    if vertices > MAX_VERTICES:
        message = f"at most {MAX_VERTICES} vertices in all polygons together, got {vertices}"
        problems.append({"field": "area.polygons", "message": message})
    if len(circles) > MAX_CIRCLES:
        problems.append({"field": "area.circles", "message": f"at most {MAX_CIRCLES} circles, got {len(circles)}"})
    return problems


def _ring_problems(ring: Sequence[Sequence[float]]) -> list[str]:
    try:
        points = np.asarray(ring, dtype=float)
    except (TypeError, ValueError):
        return ["not a list of [lat, lon] points"]
    if points.ndim != 2 or points.shape[1] != 2:
        return ["not a list of [lat, lon] points"]
    problems = []
    if len(points) < 4:
        problems.append(f"at least 4 points are needed (the first repeated last), got {len(points)}")
    elif not np.array_equal(points[0], points[-1]):
        problems.append("not closed: the last point must repeat the first")
    problems += _range_problems("latitude", points[:, 0], 90) + _range_problems("longitude", points[:, 1], 180)
    if not problems and np.ptp(points[:, 1]) > 180:
        problems.append("spans more than 180° of longitude: crossing the antimeridian is not supported")
    if not problems and (reason := shapely.is_valid_reason(_polygon(ring))) != "Valid Geometry":
        problems.append(f"not a simple polygon: {_describe(reason)}")
    return problems


def _range_problems(name: str, values: np.ndarray, limit: float) -> list[str]:
    bad = np.flatnonzero(~((values >= -limit) & (values <= limit)))
    if not len(bad):
        return []
    where = f" of point {bad[0]}" if len(values) > 1 else ""
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return [f"{name} {values[bad[0]]}{where} is not within [-{limit}, {limit}]{more}"]


def _describe(reason: str) -> str:
    """GEOS's "Self-intersection[2.35 48.85]" told in CAP order: "self-intersection near (48.85, 2.35)"."""
    match = re.fullmatch(r"(.*)\[(\S+) (\S+)\]", reason)
    if not match:
        return reason.lower()
    what, lon, lat = match.groups()
    return f"{what.lower()} near ({float(lat):.6g}, {float(lon):.6g})"


def _circle_problems(circle: Sequence[float]) -> list[str]:
    try:
        lat, lon, radius = (float(value) for value in circle)
    except (TypeError, ValueError):
        return ["not a [lat, lon, radius_km] triple"]
    problems = _range_problems("latitude", np.array([lat]), 90) + _range_problems("longitude", np.array([lon]), 180)
    if not 0 <= radius <= MAX_RADIUS_KM:
        problems.append(f"radius {radius} km is not within [0, {MAX_RADIUS_KM:g}]")
    if not problems:
        min_lat, min_lon, max_lat, max_lon = _circle_box(lat, lon, radius)
        if max(abs(min_lat), abs(max_lat)) >= 90 or min_lon < -180 or max_lon > 180:
            problems.append("reaches across the antimeridian or a pole, which is not supported")
    return problems


# -- plane and sphere ----------------------------------------------------------------------------


def _polygon(ring: Sequence[Sequence[float]]) -> shapely.Polygon:
    return shapely.Polygon(np.asarray(ring, dtype=float)[:, ::-1])


def _union(polygons: Sequence[shapely.Polygon]) -> shapely.Geometry | None:
    """The union of the polygons as one prepared geometry, or None."""
    if not polygons:
        return None
    shapes = np.array(polygons, dtype=object)
    invalid = ~shapely.is_valid(shapes)
    # One valid geometry: point tests on overlapping parts of a MultiPolygon are not defined. Valid
    # polygons that do not overlap (the usual drawing) already make one, at a tenth of a union's cost
    # (12 ms instead of 130 for a thousand: this runs on the event loop when an alert is planned).
    if not invalid.any() and shapely.is_valid(area := shapely.multipolygons(shapes)):
        shapely.prepare(area)
        return area
    shapes[invalid] = shapely.make_valid(shapes[invalid])
    area = shapely.union_all(shapes)
    shapely.prepare(area)
    return area


def _within(circle: Circle, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Haversine: whether each point is within the circle's radius, compared as sin²(d / 2R)."""
    lat0, lon0, radius = circle
    phi0, phi = math.radians(lat0), np.radians(lats)
    a = np.sin((phi - phi0) / 2) ** 2 + math.cos(phi0) * np.cos(phi) * np.sin(np.radians(lons - lon0) / 2) ** 2
    return a <= math.sin(radius / (2 * EARTH_RADIUS_KM)) ** 2


def _circle_box(lat: float, lon: float, radius_km: float) -> Box:
    """The exact lat/lon box of a spherical cap (its widest longitudes are poleward of its centre)."""
    delta = radius_km / EARTH_RADIUS_KM
    reach = math.degrees(delta)
    if abs(lat) + reach >= 90:  # the cap holds a pole: every longitude
        return max(lat - reach, -90.0), -180.0, min(lat + reach, 90.0), 180.0
    half = math.degrees(math.asin(math.sin(delta) / math.cos(math.radians(lat))))
    return lat - reach, lon - half, lat + reach, lon + half


def _circle_points(lat: float, lon: float, radius_km: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` points on the circle, at even bearings (the great-circle destination formula)."""
    bearings = np.linspace(0.0, 2 * math.pi, count, endpoint=False)
    delta, phi = radius_km / EARTH_RADIUS_KM, math.radians(lat)
    lats = np.arcsin(math.sin(phi) * math.cos(delta) + math.cos(phi) * math.sin(delta) * np.cos(bearings))
    east = np.sin(bearings) * math.sin(delta) * math.cos(phi)
    lons = np.arctan2(east, math.cos(delta) - math.sin(phi) * np.sin(lats))
    return np.degrees(lats), lon + np.degrees(lons)


def _enclosing(boxes: list[Box]) -> Box:
    lows, highs = np.min(boxes, axis=0), np.max(boxes, axis=0)
    return _pad((float(lows[0]), float(lows[1]), float(highs[2]), float(highs[3])))


def _pad(box: Box) -> Box:
    min_lat, min_lon, max_lat, max_lon = box
    return (
        max(min_lat - _PAD_DEG, -90.0), max(min_lon - _PAD_DEG, -180.0),
        min(max_lat + _PAD_DEG, 90.0), min(max_lon + _PAD_DEG, 180.0),
    )


def _in_box(box: Box, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    min_lat, min_lon, max_lat, max_lon = box
    return (lats >= min_lat) & (lats <= max_lat) & (lons >= min_lon) & (lons <= max_lon)


def _tolerance_deg(box: Box | None) -> float:
    """TOLERANCE_KM in degrees of longitude at the area's highest latitude: at least that much everywhere."""
    highest = max(abs(box[0]), abs(box[2])) if box else 0.0
    return math.degrees(TOLERANCE_KM / EARTH_RADIUS_KM) / math.cos(math.radians(min(highest, 89.0)))


def _area_km2(geometry: shapely.Geometry) -> float:
    """Area in the Lambert cylindrical equal-area projection of the sphere."""
    def project(coords: np.ndarray) -> np.ndarray:
        lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
        return np.column_stack((EARTH_RADIUS_KM * lon, EARTH_RADIUS_KM * np.sin(lat)))

    return float(shapely.area(shapely.transform(geometry, project)))
