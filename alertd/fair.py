"""Fair sharing between cells in the dispatcher: one cell's flood of alerts does not delay another's.

Two pieces, both per instance (two instances sharing a store each count what they plan):

- `Recent` counts each cell's alerts planned within `priority.WINDOW`: an alert's place in that
  count lowers its deliveries' priority (`priority.share`), so another cell's first alert is claimed
  before the rest of a flood, siren commands included;
- `Gate` lets a few plannings run at once and lets the next in by that same share: the store serves
  its callers in turn, so a thousand plannings under way would make a new one wait behind all of
  them, whatever its priority. The SQLite store's writer and reader are each a `Gate(1)` keyed on
  the caller's `store.TURN`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

from alertd import priority


class Recent:
    """When each cell's recent alerts were planned (monotonic seconds); idle cells are forgotten."""

    def __init__(self, window: float = priority.WINDOW) -> None:
        self.window = window
        self._times: dict[str, collections.deque[float]] = {}
        self._swept = 0.0

    def note(self, cell: str, now: float) -> int:
        """Count one more alert of `cell` planned at `now`; its place in the window (1: the first).
        No more times are kept than the last share level needs."""
        times = self._times.setdefault(cell, collections.deque(maxlen=2 ** (priority.LEVELS - 1)))
        self._expire(times, now)
        times.append(now)
        if now - self._swept >= self.window:
            self._sweep(now)
        return len(times)

    def count(self, cell: str, now: float) -> int:
        times = self._times.get(cell)
        if times is None:
            return 0
        self._expire(times, now)
        return len(times)

    def __len__(self) -> int:
        """The cells remembered."""
        return len(self._times)

    def _expire(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def _sweep(self, now: float) -> None:
        self._swept = now
        for cell in [c for c, times in self._times.items() if not times or times[-1] <= now - self.window]:
            del self._times[cell]


class Gate:
    """At most `size` holders at once; the others wait in the order of their key (lowest first,
    then first come)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.held = 0
        self._waiting: list[tuple[tuple[int, ...], int, asyncio.Future]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, key: tuple[int, ...]) -> AsyncIterator[None]:
        # Below `size`, no one is left waiting (`_release` lets them in): a newcomer jumps no queue.
        if self.held >= self.size:
            entry = (key, next(self._order), asyncio.get_running_loop().create_future())
            heapq.heappush(self._waiting, entry)
            try:
                await entry[2]  # `_next` counted us as holding
            except BaseException:
                if not entry[2].cancelled() and entry[2].done():
                    self._release()  # handed a turn as we were cancelled: pass it on
                raise
        else:
            self.held += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.held -= 1
        while self._waiting and self.held < self.size:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():  # a waiter cancelled meanwhile is skipped
                self.held += 1
                future.set_result(None)
