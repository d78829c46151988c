"""Progress rows in both stores, and the recorder that writes them: one row per change, a final
row, nothing twice."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from alertd import model, progress, store as store_mod, web as web_mod
from tests import helpers

COUNTS = {"sms": {"pending": 2, "sent": 1}, "push": {"pending": 0, "sent": 3}}
DONE = {"sms": {"pending": 0, "sent": 3}, "push": {"pending": 0, "sent": 3}}


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path, pg_schema_url):
    db = store_mod.open_store(pg_schema_url if request.param == "postgresql" else f"sqlite:///{tmp_path}/a.db")
    await db.open()
    yield db
    await db.close()


async def test_rows_come_back_in_seq_order_per_alert_and_page(store):
    at = helpers.START
    seqs = [
        await store.record_progress("A", "planning", {}, at),
        await store.record_progress("B", "active", COUNTS, at),
        await store.record_progress("A", "active", COUNTS, at + dt.timedelta(seconds=1)),
        await store.record_progress("A", "completed", DONE, at + dt.timedelta(seconds=2)),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    rows = await store.progress("A")
    assert [(r.seq, r.state) for r in rows] == [(seqs[0], "planning"), (seqs[2], "active"), (seqs[3], "completed")]
    assert rows[1].counts == COUNTS and rows[1].at == at + dt.timedelta(seconds=1)
    assert [r.seq for r in await store.progress("A", after_seq=seqs[0], limit=1)] == [seqs[2]]
    assert (await store.last_progress("A")).final
    assert not (await store.last_progress("B")).final
    assert not progress.Progress(9, "C", at, "cancelled", COUNTS).final  # its sends still settle
    assert await store.last_progress("nobody") is None


async def stored_alert(store, alert_id: str, state: model.AlertState) -> None:
    await store.create_alert(helpers.alert(alert_id, model.Kind.SMS), alert_id)
    if state is not model.AlertState.PLANNING:
        await store.set_alert_state(alert_id, state)


async def test_the_recorder_writes_a_row_per_change_and_forgets_final_alerts(store):
    clock = helpers.ManualClock()
    recorder = progress.Recorder(store, clock)
    await stored_alert(store, "A", model.AlertState.PLANNING)  # picked up without a touch
    assert await recorder.flush() == 1
    assert await recorder.flush() == 0  # nothing changed: no row
    await store.set_alert_state("A", model.AlertState.ACTIVE)
    clock.advance(1)
    assert await recorder.flush() == 1
    await store.set_alert_state("A", model.AlertState.CANCELLED)
    assert await recorder.flush() == 1
    await store.set_alert_state("A", model.AlertState.COMPLETED)  # no longer followed: no row
    assert await recorder.flush() == 0
    rows = await store.progress("A")
    assert [r.state for r in rows] == ["planning", "active", "cancelled"]
    assert rows[1].at == helpers.START + dt.timedelta(seconds=1)


async def test_a_touched_alert_gets_its_final_row_even_if_no_pass_saw_it_live(store):
    recorder = progress.Recorder(store)
    await stored_alert(store, "done", model.AlertState.COMPLETED)
    await stored_alert(store, "draft", model.AlertState.DRAFT)
    for alert_id in ("done", "draft", "no-such-alert"):
        recorder.touch(alert_id)
    assert await recorder.flush() == 2
    assert [r.state for r in await store.progress("done")] == ["completed"]
    recorder.touch("done")
    assert await recorder.flush() == 0  # the final row is there already


async def test_a_restarted_recorder_writes_no_duplicate(store):
    await stored_alert(store, "A", model.AlertState.ACTIVE)
    assert await progress.Recorder(store).flush() == 1
    assert await progress.Recorder(store).flush() == 0


async def test_waiters_wake_when_a_row_is_written_and_on_shutdown(store):
    recorder = progress.Recorder(store)
    await stored_alert(store, "A", model.AlertState.ACTIVE)
    waiter = asyncio.create_task(recorder.wait(60))
    await asyncio.sleep(0)  # let it start waiting
    await recorder.flush()
    await asyncio.wait_for(waiter, 5)
    waiter = asyncio.create_task(recorder.wait(60))
    await asyncio.sleep(0)
    recorder.end_streams()
    await asyncio.wait_for(waiter, 5)
    assert recorder.closing


async def test_a_fan_out_leaves_rows_whose_last_counts_are_the_final_counts(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    accepted = await daemon.send()
    await recorder.flush()
    await daemon.drain()
    await recorder.flush()
    rows = await daemon.store.progress(accepted["id"])
    status = await daemon.status(accepted["id"])
    assert rows[-1].state == "completed" and rows[-1].counts == status["counts"]
    assert all(a.counts != b.counts or a.state != b.state for a, b in zip(rows, rows[1:], strict=False))
