"""Targeting benchmark: selecting the located subscribers inside an alert's shapes.

Generates N located subscribers over metropolitan France (seeded; about 20 % of them around big
cities, so that Paris holds about 2 %) and four areas: a Paris-like polygon of 105 km² with 300
vertices, a 20 km circle around Lyon, and the largest areas `geo.check` lets through (one polygon of
49,999 vertices; 1,000 polygons sharing edges). For each it times `check`, `Shapes.of`, and:

  (a) `Shapes.contains` over all N points held in numpy arrays;
  (b) the store's bounding-box prefilter (`lat BETWEEN … AND lon BETWEEN …`, here in numpy), then
      `Shapes.contains` on the candidates only.

  (c) the real path of an alert drawn as that area, on a real store holding the N subscribers:
      `planner.target` reads the candidates in the box through the store's (lat, lon) index,
      selects them with `Shapes.contains` and writes the selected ids as the alert's targets.
      This is the figure the issue names (under 2 s for a city-sized polygon among 1,000,000).

Each line gives the best of --repeat runs in milliseconds, the share of the 2 s target and the count
selected.

    python bench/targeting.py [--n 1000000] [--seed 1] [--repeat 5] [--store URL | --no-store]

The store defaults to a fresh SQLite file in a temporary folder; loading it is timed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alertd import geo, model, planner, store as store_mod  # noqa: E402

TARGET_S = 2.0
FRANCE = (42.33, -4.79, 51.09, 8.23)  # metropolitan France: min_lat, min_lon, max_lat, max_lon
PARIS, LYON = (48.8566, 2.3522), (45.7640, 4.8357)
# (lat, lon, share of all subscribers, spread in km): about 20 % in all, the rest spread evenly.
CITIES = [
    (*PARIS, 0.020, 2.5),
    (*PARIS, 0.050, 15.0),  # the Paris suburbs
    (43.2965, 5.3698, 0.020, 5.0),  # Marseille
    (*LYON, 0.020, 4.0),
    (43.6047, 1.4442, 0.015, 4.0),  # Toulouse
    (50.6292, 3.0573, 0.019, 6.0),  # Lille
    (44.8378, -0.5792, 0.012, 4.0),  # Bordeaux
    (43.7102, 7.2620, 0.012, 3.0),  # Nice
    (47.2184, -1.5536, 0.010, 4.0),  # Nantes
    (48.5734, 7.7521, 0.010, 3.0),  # Strasbourg
    (43.6108, 3.8767, 0.010, 3.0),  # Montpellier
]
REPEAT = 5


def subscribers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The locations of `n` subscribers: around the CITIES by their shares, the rest uniform."""
    rng = np.random.default_rng(seed)
    lats, lons, taken = [], [], 0
    for lat, lon, share, spread_km in CITIES:
        count = round(n * share)
        lats.append(rng.normal(lat, spread_km / 111.2, count))
        lons.append(rng.normal(lon, spread_km / (111.2 * math.cos(math.radians(lat))), count))
        taken += count
    min_lat, min_lon, max_lat, max_lon = FRANCE
    lats.append(rng.uniform(min_lat, max_lat, n - taken))
    lons.append(rng.uniform(min_lon, max_lon, n - taken))
    order = rng.permutation(n)  # as a table would hold them: cities not in runs
    return np.concatenate(lats)[order], np.concatenate(lons)[order]


def wobbly_polygon(centre: geo.Point, area_km2: float, vertices: int, aspect: float = 1.8) -> geo.Ring:
    """A wobbly ellipse `aspect` times wider east-west than north-south, scaled to `area_km2`."""
    theta = np.linspace(0.0, 2 * math.pi, vertices, endpoint=False)
    r = 1 + 0.05 * np.sin(7 * theta) + 0.03 * np.sin(13 * theta + 1.0)
    x, y = aspect * r * np.cos(theta), r * np.sin(theta)  # km, before scaling
    scale = math.sqrt(area_km2 / (0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))))
    lat0, lon0 = centre
    lats = lat0 + np.degrees(scale * y / geo.EARTH_RADIUS_KM)
    lons = lon0 + np.degrees(scale * x / (geo.EARTH_RADIUS_KM * math.cos(math.radians(lat0))))
    ring = [(float(a), float(o)) for a, o in zip(lats, lons, strict=True)]
    return (*ring, ring[0])


def communes(centre: geo.Point, count: int = 1000, vertices: int = 50, cell_deg: float = 0.04) -> list[geo.Ring]:
    """`count` square cells sharing their edges, like communes on a map, each with `vertices` points."""
    side = (vertices - 1) // 4
    steps = np.arange(side) / side * cell_deg
    columns = math.ceil(math.sqrt(count))
    rings = []
    for k in range(count):
        lat, lon = centre[0] + (k // columns) * cell_deg, centre[1] + (k % columns) * cell_deg
        ring = [(lat, lon + s) for s in steps] + [(lat + s, lon + cell_deg) for s in steps]
        ring += [(lat + cell_deg, lon + cell_deg - s) for s in steps] + [(lat + cell_deg - s, lon) for s in steps]
        rings.append((*ring, ring[0]))
    return rings


def timed(name: str, fn: Callable[[], object], repeat: int = REPEAT, show: bool = True) -> object:
    """Run `fn` `repeat` times; print the best and median time, the share of the target and (if
    `show`) its result, which it returns."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    best, median = min(times), statistics.median(times)
    print(f"  {name:<46} {best * 1e3:8.1f} ms (median {median * 1e3:7.1f})"
          f"  {best / TARGET_S:6.1%} of {TARGET_S:g} s" + (f"  → {result}" if show else ""))
    return result


def in_memory(polygons: list, circles: list, lats: np.ndarray, lons: np.ndarray, repeat: int) -> None:
    """check(), Shapes.of(), then (a) and (b) for one area."""
    timed("check()", lambda: geo.check(polygons, circles) or "valid", repeat)
    shapes = timed("Shapes.of()", lambda: geo.Shapes.of(polygons, circles), repeat, show=False)
    timed("(a) contains() over all points", lambda: f"{int(shapes.contains(lats, lons).sum()):,}", repeat)
    timed("(b) bbox prefilter + contains() on candidates", lambda: prefiltered(shapes, lats, lons), repeat)


def prefiltered(shapes: geo.Shapes, lats: np.ndarray, lons: np.ndarray) -> str:
    min_lat, min_lon, max_lat, max_lon = shapes.bounds()
    candidates = np.flatnonzero((lats >= min_lat) & (lats <= max_lat) & (lons >= min_lon) & (lons <= max_lon))
    selected = shapes.contains(lats[candidates], lons[candidates])
    return f"{int(selected.sum()):,} of {len(candidates):,} candidates"


async def load(url: str, lats: np.ndarray, lons: np.ndarray) -> store_mod.Store:
    db = store_mod.open_store(url)
    await db.open()
    batch = 50_000
    for start in range(0, len(lats), batch):
        await db.upsert_recipients([
            model.Recipient(f"r{i:07d}", "fr", ("75056",), phone=f"+3360{i:07d}",
                            lat=float(lats[i]), lon=float(lons[i]))
            for i in range(start, min(start + batch, len(lats)))
        ])
    return db


async def store_path(db: store_mod.Store, polygons: list, circles: list, repeat: int) -> None:
    """(c): `planner.target` for a fresh alert each run (an alert's targets are written once)."""
    times, selected = [], 0
    for run in range(repeat):
        alert = model.Alert(
            id=f"bench-{run}-{time.monotonic_ns()}", identifier="bench", sender="bench", sent=model.utcnow(),
            status=model.Status.ACTUAL, event="bench", urgency="Immediate", severity="Severe", certainty="Observed",
            area=model.Area(polygons=tuple(map(tuple, polygons)), circles=tuple(circles)), channels=(model.Kind.SMS,),
        )
        start = time.perf_counter()
        await planner.target(db, alert, ())
        times.append(time.perf_counter() - start)
        rows = await db._fetch("SELECT count(*) AS n FROM alert_targets WHERE alert_id = $1", alert.id)  # noqa: SLF001
        selected = rows[0]["n"]
    best, median = min(times), statistics.median(times)
    print(f"  {'(c) store: box query, contains(), targets written':<46} {best * 1e3:8.1f} ms"
          f" (median {median * 1e3:7.1f})  {best / TARGET_S:6.1%} of {TARGET_S:g} s  → {selected:,}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="located subscribers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--store", help="store URL for (c); default: SQLite in a temporary folder")
    parser.add_argument("--no-store", action="store_true", help="skip (c)")
    args = parser.parse_args(argv)
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:

    start = time.perf_counter()
    lats, lons = subscribers(args.n, args.seed)
    print(f"{args.n:,} subscribers generated in {time.perf_counter() - start:.2f} s (seed {args.seed})")
    paris, departement = wobbly_polygon(PARIS, 105.0, 300), wobbly_polygon(LYON, 3300.0, geo.MAX_VERTICES - 1, 1.2)
    areas = {
        "Paris-like polygon, 300 vertices, 105 km²": ([paris], []),
        "Lyon, circle of 20 km": ([], [(*LYON, 20.0)]),
        f"département-like polygon, {geo.MAX_VERTICES - 1:,} vertices, 3,300 km²": ([departement], []),
        f"{geo.MAX_POLYGONS:,} commune-like squares sharing edges, 50 vertices each": (communes(LYON), []),
    }
    db = None
    if not args.no_store:
        folder = tempfile.mkdtemp(prefix="alertd-bench-")
        start = time.perf_counter()
        db = await load(args.store or f"sqlite:///{folder}/targeting.db", lats, lons)
        print(f"store loaded with {args.n:,} located subscribers in {time.perf_counter() - start:.1f} s")
    for title, (polygons, circles) in areas.items():
        print(title)
        in_memory(polygons, circles, lats, lons, args.repeat)
        if db is not None:
            await store_path(db, polygons, circles, args.repeat)
    if db is not None:
        await db.close()


if __name__ == "__main__":
    main()
