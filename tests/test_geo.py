"""Polygon and circle targeting: real-looking French shapes, then properties against plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings, strategies as st

from alertd import errors, geo

R = geo.EARTH_RADIUS_KM

# Paris inside the Périphérique, roughly (lat, lon), about 90 km².
PARIS = (
    (48.9016, 2.3200), (48.9000, 2.3700), (48.8950, 2.3980), (48.8780, 2.4100), (48.8530, 2.4150),
    (48.8350, 2.4120), (48.8240, 2.3900), (48.8160, 2.3600), (48.8180, 2.3300), (48.8280, 2.2950),
    (48.8400, 2.2700), (48.8560, 2.2550), (48.8720, 2.2780), (48.8900, 2.3000), (48.9016, 2.3200),
)
BELLECOUR = (45.7578, 4.8320)  # Lyon
LYON_CIRCLE = (*BELLECOUR, 2.0)
# Lyon's Presqu'île as a box with axis-aligned edges, so a point can lie exactly on one.
PRESQUILE = ((45.75, 4.82), (45.75, 4.84), (45.77, 4.84), (45.77, 4.82), (45.75, 4.82))


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * R * math.asin(math.sqrt(min(a, 1.0)))


def destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    p1, b, d = math.radians(lat), math.radians(bearing_deg), km / R
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    east = math.sin(b) * math.sin(d) * math.cos(p1)
    return math.degrees(p2), lon + math.degrees(math.atan2(east, math.cos(d) - math.sin(p1) * math.sin(p2)))


def problems(polygons=(), circles=()) -> list[dict]:
    with pytest.raises(errors.Invalid) as caught:
        geo.check(polygons, circles)
    assert caught.value.status == 422 and caught.value.field == caught.value.errors[0]["field"]
    return caught.value.errors


# -- matching ------------------------------------------------------------------------------------


def test_points_in_paris_are_targeted_and_points_around_it_are_not():
    shapes = geo.Shapes.of([PARIS], [])
    notre_dame, eiffel_tower = (48.8530, 2.3499), (48.8584, 2.2945)
    versailles, la_defense, saint_denis = (48.8049, 2.1204), (48.8920, 2.2380), (48.9362, 2.3574)
    assert shapes.contains_point(*notre_dame) and shapes.contains_point(*eiffel_tower)
    assert not any(shapes.contains_point(*p) for p in (versailles, la_defense, saint_denis, BELLECOUR))


def test_a_point_exactly_on_the_edge_or_a_vertex_is_targeted():
    shapes = geo.Shapes.of([PRESQUILE, PARIS], [])
    assert shapes.contains_point(45.75, 4.83)  # on the southern edge
    assert shapes.contains_point(45.77, 4.84)  # a corner
    assert shapes.contains_point(48.8160, 2.3600)  # a vertex of Paris
    assert not shapes.contains_point(45.75 - 1e-9, 4.83)


@pytest.mark.parametrize("bearing", range(0, 360, 30))
def test_the_circle_edge_is_accurate_to_a_metre(bearing):
    shapes = geo.Shapes.of([], [LYON_CIRCLE])
    assert shapes.contains_point(*destination(*BELLECOUR, bearing, 2.0 - 0.001))
    assert not shapes.contains_point(*destination(*BELLECOUR, bearing, 2.0 + 0.001))


def test_overlapping_polygons_do_not_cancel_out():
    west = ((45.75, 4.82), (45.75, 4.84), (45.77, 4.84), (45.77, 4.82), (45.75, 4.82))
    east = ((45.75, 4.83), (45.75, 4.85), (45.77, 4.85), (45.77, 4.83), (45.75, 4.83))
    shapes = geo.Shapes.of([west, east], [])
    assert shapes.contains_point(45.76, 4.835) and shapes.contains_point(45.76, 4.825)


def test_vectorised_and_single_point_answers_agree():
    shapes = geo.Shapes.of([PARIS], [LYON_CIRCLE])
    rng = np.random.default_rng(7)
    lats = np.concatenate([rng.uniform(48.80, 48.92, 300), rng.uniform(45.73, 45.79, 300)])
    lons = np.concatenate([rng.uniform(2.24, 2.43, 300), rng.uniform(4.79, 4.88, 300)])
    selected = shapes.contains(lats, lons)
    assert selected.tolist() == [shapes.contains_point(a, o) for a, o in zip(lats, lons, strict=True)]
    assert 100 < selected.sum() < 500
    assert not shapes.contains(np.array([np.nan, 48.85]), np.array([2.35, np.nan])).any()  # no location


def test_bounds_hold_every_shape_closely():
    shapes = geo.Shapes.of([PARIS], [LYON_CIRCLE])
    min_lat, min_lon, max_lat, max_lon = shapes.bounds()
    edge = [destination(*BELLECOUR, b / 4, 2.0) for b in range(0, 360 * 4)]
    for lat, lon in [*PARIS, *edge]:
        assert min_lat <= lat <= max_lat and min_lon <= lon <= max_lon
    assert min_lat == pytest.approx(min(lat for lat, _ in edge), abs=1e-6)
    assert max_lat == pytest.approx(max(lat for lat, _ in PARIS), abs=1e-6)
    assert max_lon == pytest.approx(max(lon for _, lon in edge), abs=1e-6)


def test_bounds_of_a_large_circle_far_north_are_wide_enough():
    # The widest longitudes of a cap are poleward of its centre: radius / cos(lat) would fall short.
    lat, lon, radius = 70.0, 20.0, 1000.0
    _, min_lon, _, max_lon = geo.Shapes.of([], [(lat, lon, radius)]).bounds()
    widest = max(destination(lat, lon, b / 10, radius)[1] for b in range(3600))
    assert widest <= max_lon and min_lon <= 2 * lon - widest
    assert lon + math.degrees(radius / R) / math.cos(math.radians(lat)) < widest


def test_no_shapes_select_no_one():
    shapes = geo.Shapes.of([], [])
    assert shapes.bounds() is None and not shapes.contains(np.array([48.85]), np.array([2.35])).any()


def test_an_invalid_polygon_still_targets_rather_than_fails():
    bow_tie = ((45.75, 4.82), (45.77, 4.84), (45.77, 4.82), (45.75, 4.84), (45.75, 4.82))
    assert geo.Shapes.of([bow_tie], []).contains_point(45.755, 4.83)


# -- checking ------------------------------------------------------------------------------------


def test_good_shapes_pass():
    geo.check([PARIS, PRESQUILE], [LYON_CIRCLE, (48.85, 2.35, 0.0), (48.85, 2.35, 1000.0)])


def test_every_problem_is_reported_with_its_field():
    found = problems(
        [
            PARIS,
            PARIS[:3],
            PARIS[:-1],
            ((45.75, 4.82), (45.77, 4.84), (45.77, 4.82), (45.75, 4.84), (45.75, 4.82)),
            ((91.0, 4.82), (45.75, 4.84), (45.77, 184.0), (91.0, 4.82)),
            ((10.0, -100.0), (10.0, 100.0), (20.0, 0.0), (10.0, -100.0)),
            "not a ring",
        ],
        [LYON_CIRCLE, (48.85, 2.35, -1.0), (48.85, 2.35, 1000.5), (95.0, 2.35, 1.0), (0.0, 179.99, 5.0), (1.0, 2.0)],
    )
    by_field = {}
    for problem in found:
        by_field.setdefault(problem["field"], []).append(problem["message"])
    assert sorted(by_field) == [
        "area.circles.1", "area.circles.2", "area.circles.3", "area.circles.4", "area.circles.5",
        "area.polygons.1", "area.polygons.2", "area.polygons.3", "area.polygons.4", "area.polygons.5",
        "area.polygons.6",
    ]
    assert "at least 4 points" in by_field["area.polygons.1"][0]
    assert "not closed" in by_field["area.polygons.2"][0]
    assert by_field["area.polygons.3"] == ["not a simple polygon: self-intersection near (45.76, 4.83)"]
    assert ["latitude 91.0" in m or "longitude 184.0" in m for m in by_field["area.polygons.4"]] == [True, True]
    assert "antimeridian" in by_field["area.polygons.5"][0]
    assert "radius -1.0 km" in by_field["area.circles.1"][0] and "1000.5" in by_field["area.circles.2"][0]
    assert by_field["area.circles.3"] == ["latitude 95.0 is not within [-90, 90]"]
    assert "antimeridian" in by_field["area.circles.4"][0]


def test_too_many_polygons_is_one_clear_problem():
    square = PRESQUILE
    assert problems([square] * (geo.MAX_POLYGONS + 1)) == [
        {"field": "area.polygons", "message": "at most 1000 polygons, got 1001"}
    ]


def test_too_many_vertices_is_one_clear_problem():
    bad_ring = ((0.0, 0.0),) * (geo.MAX_VERTICES - 4)  # not looked at: the count is refused first
    assert problems([PARIS[:4] + (PARIS[0],), bad_ring]) == [
        {"field": "area.polygons", "message": "at most 50000 vertices in all polygons together, got 50001"}
    ]


def test_the_largest_allowed_polygon_passes():
    ring = [destination(46.5, 2.5, b, 300.0) for b in np.linspace(0, 360, geo.MAX_VERTICES - 1, endpoint=False)]
    geo.check([(*ring, ring[0])], [])
    assert geo.Shapes.of([(*ring, ring[0])], []).contains_point(46.5, 2.5)


# -- jurisdiction --------------------------------------------------------------------------------


def test_an_area_within_the_jurisdiction_is_not_outside():
    assert geo.outside(geo.Shapes.of([PARIS], [(48.86, 2.35, 2.0)]), [PARIS]) is None


def test_an_area_sharing_the_jurisdictions_edges_is_not_outside():
    west, east = PRESQUILE, ((45.75, 4.84), (45.75, 4.86), (45.77, 4.86), (45.77, 4.84), (45.75, 4.84))
    both = ((45.75, 4.82), (45.75, 4.86), (45.77, 4.86), (45.77, 4.82), (45.75, 4.82))
    assert geo.outside(geo.Shapes.of([both], []), [west, east]) is None


def test_a_polygon_half_out_reports_the_half_outside():
    jurisdiction = ((45.0, 4.0), (45.0, 4.84), (46.5, 4.84), (46.5, 4.0), (45.0, 4.0))
    area = geo.Shapes.of([((45.75, 4.82), (45.75, 4.86), (45.77, 4.86), (45.77, 4.82), (45.75, 4.82))], [])
    beyond, whole = geo.outside(area, [jurisdiction]), geo.outside(area, [])
    assert whole.area_km2 == pytest.approx(2.224 * 3.111, rel=0.01)
    assert beyond.area_km2 == pytest.approx(whole.area_km2 / 2, rel=0.05)
    ((_, lons),) = [tuple(zip(*ring, strict=True)) for ring in beyond.polygons]
    assert min(lons) == pytest.approx(4.84, abs=1e-4) and max(lons) == pytest.approx(4.86)
    assert beyond.to_json()["polygons"][0][0] == list(beyond.polygons[0][0])


def test_a_circle_poking_out_is_reported_with_its_cap():
    jurisdiction = ((45.0, 4.0), (45.0, 4.84), (46.5, 4.84), (46.5, 4.0), (45.0, 4.0))
    beyond = geo.outside(geo.Shapes.of([], [LYON_CIRCLE]), [jurisdiction])
    # Bellecour is 621 m west of the line: the segment beyond holds 3.84 km² of the 12.57 km² disc.
    assert beyond.area_km2 == pytest.approx(3.84, rel=0.02)


def test_a_circle_inside_but_close_to_the_edge_is_not_outside():
    jurisdiction = ((45.0, 4.0), (45.0, 4.86), (46.5, 4.86), (46.5, 4.0), (45.0, 4.0))
    edge_km = haversine_km(*BELLECOUR, BELLECOUR[0], 4.86)
    assert geo.outside(geo.Shapes.of([], [(*BELLECOUR, edge_km - 0.02)]), [jurisdiction]) is None
    assert geo.outside(geo.Shapes.of([], [(*BELLECOUR, edge_km + 0.01)]), [jurisdiction]) is not None


# -- properties ----------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def star_polygons(draw) -> tuple[tuple[float, float], ...]:
    """A simple polygon around a centre in France: angles strictly increasing with every gap under π,
    and either one radius (convex) or random radii (usually not convex)."""
    n = draw(st.integers(4, 24))
    lat, lon = draw(st.floats(42.5, 51.0)), draw(st.floats(-4.5, 8.0))
    steps = np.array(draw(st.lists(st.floats(0.5, 1.0), min_size=n, max_size=n)))
    angles = np.cumsum(steps) / steps.sum() * 2 * math.pi
    size = draw(st.floats(0.001, 0.5))
    radii = [1.0] * n if draw(st.booleans()) else draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    ring = [(lat + size * r * math.sin(a), lon + size * r * math.cos(a)) for r, a in zip(radii, angles, strict=True)]
    return (*ring, ring[0])


circles = st.tuples(st.floats(42.5, 51.0), st.floats(-4.5, 8.0), st.floats(0.0, 60.0))


def ray_casting(lat: float, lon: float, ring) -> tuple[bool, float]:
    """Whether the point is inside the ring (even-odd rule, x = lon) and its distance in degrees to the edges."""
    inside, nearest = False, math.inf
    for (y1, x1), (y2, x2) in zip(ring, ring[1:], strict=False):
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
        dx, dy = x2 - x1, y2 - y1
        t = max(0.0, min(1.0, ((lon - x1) * dx + (lat - y1) * dy) / (dx * dx + dy * dy)))
        nearest = min(nearest, math.hypot(lon - x1 - t * dx, lat - y1 - t * dy))
    return inside, nearest


def reference(lat: float, lon: float, polygons, disks) -> bool | None:
    """Whether the point is in the area, or None when it is too close to an edge to tell by floats."""
    answers = [ray_casting(lat, lon, ring) for ring in polygons]
    for c_lat, c_lon, radius in disks:
        distance = haversine_km(lat, lon, c_lat, c_lon)
        answers.append((distance <= radius, abs(distance - radius) / 111.0))  # in degrees, near enough
    if any(inside and margin > 1e-9 for inside, margin in answers):
        return True
    if all(margin > 1e-9 for _, margin in answers):
        return any(inside for inside, _ in answers)
    return None


def points_around(shapes: geo.Shapes, seed: int, count: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Points spread over a box a little larger than the shapes, half of them near their edges."""
    rng = np.random.default_rng(seed)
    min_lat, min_lon, max_lat, max_lon = shapes.bounds()
    pad_lat, pad_lon = (max_lat - min_lat) / 5 + 1e-4, (max_lon - min_lon) / 5 + 1e-4
    lats = rng.uniform(min_lat - pad_lat, max_lat + pad_lat, count)
    lons = rng.uniform(min_lon - pad_lon, max_lon + pad_lon, count)
    edges = [(lat, lon) for ring in shapes.polygons for lat, lon in ring]
    edges += [destination(lat, lon, rng.uniform(0, 360), r) for lat, lon, r in shapes.circles]
    picks = rng.integers(0, len(edges), count // 2)
    near = np.array([edges[i] for i in picks]) + rng.normal(0, 1e-3, (count // 2, 2))
    return np.concatenate([lats, near[:, 0]]), np.concatenate([lons, near[:, 1]])


@PROPERTY
@given(
    polygons=st.lists(star_polygons(), max_size=3),
    disks=st.lists(circles, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_targeting_selects_exactly_the_points_in_the_area(polygons, disks, seed):
    if not polygons and not disks:
        disks = [LYON_CIRCLE]
    geo.check(polygons, disks)  # the generated shapes are valid ones
    shapes = geo.Shapes.of(polygons, disks)
    lats, lons = points_around(shapes, seed)
    selected = shapes.contains(lats, lons)
    for lat, lon, chosen in zip(lats, lons, selected, strict=True):
        expected = reference(lat, lon, polygons, disks)
        assert expected is None or chosen == expected, (lat, lon)
    min_lat, min_lon, max_lat, max_lon = shapes.bounds()
    assert ((lats[selected] >= min_lat) & (lats[selected] <= max_lat)).all()
    assert ((lons[selected] >= min_lon) & (lons[selected] <= max_lon)).all()


@PROPERTY
@given(disk=st.tuples(st.floats(-75.0, 75.0), st.floats(-150.0, 150.0), st.floats(0.01, 1000.0)), seed=st.integers(0))
def test_a_circles_ring_covers_the_whole_circle_and_hugs_it(disk, seed):
    lat, lon, radius = disk
    ring = geo.circle_ring(lat, lon, radius)
    polygon = shapely.Polygon([(x, y) for y, x in ring])
    assert len(ring) == geo.CIRCLE_SIDES + 1 and polygon.is_valid
    rng = np.random.default_rng(seed)
    bearings, distances = rng.uniform(0, 360, 200), radius * np.sqrt(rng.uniform(0, 1, 200))
    inside = [destination(lat, lon, b, d) for b, d in zip(bearings, distances, strict=True)]
    inside += [destination(lat, lon, b, radius) for b in np.linspace(0, 360, 720, endpoint=False)]
    assert shapely.intersects_xy(polygon, [x for _, x in inside], [y for y, _ in inside]).all()
    assert all(haversine_km(lat, lon, y, x) <= radius * 1.01 + 1e-4 for y, x in ring)


def test_a_point_sized_circle_cannot_slip_out_of_the_jurisdiction():
    boundary = (((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22)),)
    lyon = geo.outside(geo.Shapes.of([], [(45.7578, 4.832, 0.0)]), boundary)
    assert lyon is not None  # reported, as a speck of polygon or as a point
    assert geo.outside(geo.Shapes.of([], [(45.7578, 4.832, 0.0004)]), boundary) is not None
    assert geo.outside(geo.Shapes.of([], [(48.85, 2.35, 0.0)]), boundary) is None
