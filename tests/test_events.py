"""The live progress feed: `GET /v1/alerts/{id}/events` (Server-Sent Events), on both stores."""

from __future__ import annotations

import asyncio
import json

from alertd import model, web as web_mod
from alertd.web import events
from tests import helpers

TIMEOUT = 10  # seconds: a bound on every read, never a wait for work


async def next_event(resp) -> dict:
    """The next event of the stream (comments come as {"comment": ...}); {} at its end."""
    fields: dict = {}
    async with asyncio.timeout(TIMEOUT):
        while line := await resp.content.readline():
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                return {"comment": line[1:].strip()}
            if not line:
                if "data" in fields:
                    return fields | {"data": json.loads(fields["data"])}
                fields = {}  # a block with no data (`retry:`)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    return {}


async def read_all(resp) -> list[dict]:
    found = []
    while event := await next_event(resp):
        found.append(event)
    return found


async def stream(daemon, alert_id: str, who: str = "operator", last_event_id: str | None = None, query: str = ""):
    headers = dict(daemon.headers.get(who, {}))
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return await daemon.client.get(f"/v1/alerts/{alert_id}/events{query}", headers=headers)


async def fan_out(daemon, recorder, **order) -> str:
    """An alert sent and carried to completion, its recorder flushed at each step."""
    alert_id = (await daemon.send(**order))["id"]
    await recorder.flush()
    await daemon.dispatcher.planned()
    await recorder.flush()
    await daemon.drain()
    await recorder.flush()
    return alert_id


def progress_of(received: list[dict]) -> list[tuple[int, str, dict]]:
    return [(int(e["id"]), e["data"]["state"], e["data"]["counts"]) for e in received if e.get("event") == "progress"]


def rows_of(rows) -> list[tuple[int, str, dict]]:
    return [(r.seq, r.state, r.counts) for r in rows]


async def test_the_stream_replays_exactly_the_recorded_sequence_then_ends(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    alert_id = await fan_out(daemon, recorder)
    rows = await daemon.store.progress(alert_id)
    assert len(rows) >= 2 and rows[-1].state == "completed"

    resp = await stream(daemon, alert_id, query="?after=0")
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    received = await read_all(resp)
    assert progress_of(received) == rows_of(rows)
    assert received[-1] == {"event": "end", "data": {"state": "completed"}}

    # A fresh stream of a finished alert: its snapshot at the latest row, then the end.
    fresh = await read_all(await stream(daemon, alert_id))
    assert [e["event"] for e in fresh] == ["snapshot", "end"]
    snapshot = fresh[0]
    assert int(snapshot["id"]) == rows[-1].seq and snapshot["data"]["state"] == "completed"
    assert snapshot["data"]["counts"] == (await daemon.status(alert_id))["counts"]


async def test_a_live_stream_gets_each_change_as_it_is_recorded(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    await daemon.sms.fail(status=429, code=20429, retry_after=30, times=1, to="+33612345678")
    alert_id = (await daemon.send())["id"]
    await daemon.dispatcher.planned()
    await recorder.flush()
    resp = await stream(daemon, alert_id)
    snapshot = await next_event(resp)
    assert snapshot["event"] == "snapshot" and snapshot["data"]["id"] == alert_id

    await daemon.dispatcher.run_until_idle()  # the retry waits 30 s: the alert stays active
    await recorder.flush()
    first = await next_event(resp)
    assert first["event"] == "progress" and first["data"]["state"] == "active"
    await daemon.drain()
    await recorder.flush()
    rest = await read_all(resp)
    assert rest[-1]["data"] == {"state": "completed"}
    after_snapshot = await daemon.store.progress(alert_id, int(snapshot["id"]))
    assert progress_of([first, *rest]) == rows_of(after_snapshot)


async def test_a_client_that_reconnects_with_last_event_id_misses_nothing_and_repeats_nothing(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    await daemon.sms.fail(status=429, code=20429, retry_after=30, times=1, to="+33612345678")
    alert_id = (await daemon.send())["id"]
    await recorder.flush()
    first = await stream(daemon, alert_id, query="?after=0")
    seen = [await next_event(first)]
    first.close()  # the connection drops

    await daemon.dispatcher.planned()
    await recorder.flush()
    await daemon.dispatcher.run_until_idle()
    await recorder.flush()
    await daemon.drain()
    await recorder.flush()
    again = await stream(daemon, alert_id, last_event_id=seen[-1]["id"], query="?after=999999")  # the header wins
    seen += await read_all(again)
    assert progress_of(seen) == rows_of(await daemon.store.progress(alert_id))
    assert len(progress_of(seen)) >= 3 and seen[-1]["event"] == "end"

    # A client that had everything, the end included, hears only the end again.
    done = await stream(daemon, alert_id, last_event_id=seen[-2]["id"])
    assert [e["event"] for e in await read_all(done)] == ["end"]


async def test_the_stream_of_a_cancelled_alert_ends_cancelled(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    await daemon.sms.fail(status=429, code=20429, retry_after=30, times=None)
    alert_id = (await daemon.send(channels=["sms"]))["id"]
    await daemon.dispatcher.run_until_idle()
    await recorder.flush()
    resp = await stream(daemon, alert_id)
    assert (await next_event(resp))["data"]["state"] == "active"
    cancelled = await daemon.post(f"/v1/alerts/{alert_id}/cancel")
    assert cancelled.status == 200
    await recorder.flush()
    received = await read_all(resp)
    assert received[-1] == {"event": "end", "data": {"state": "cancelled"}}
    assert received[-2]["data"]["counts"]["sms"]["cancelled"] == 3


async def test_another_cells_alert_is_not_found_and_a_token_is_required(daemon):
    alert_id = (await daemon.send())["id"]
    lyon = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.OPERATOR, ["69"], cell="Lyon"))
    resp = await daemon.client.get(f"/v1/alerts/{alert_id}/events", headers=lyon)
    assert resp.status == 404
    resp = await daemon.client.get(f"/v1/alerts/{alert_id}/events")
    assert resp.status == 401
    resp = await stream(daemon, alert_id, last_event_id="yesterday")
    assert resp.status == 400 and (await resp.json())["field"] == "Last-Event-ID"


async def test_an_idle_stream_sends_heartbeats_and_ends_when_the_daemon_shuts_down(daemon, monkeypatch):
    monkeypatch.setattr(events, "HEARTBEAT", 0.05)
    await daemon.sms.fail(status=429, code=20429, retry_after=30, times=None)
    alert_id = (await daemon.send(channels=["sms"]))["id"]
    await daemon.dispatcher.run_until_idle()
    resp = await stream(daemon, alert_id)
    assert (await next_event(resp))["event"] == "snapshot"
    assert await next_event(resp) == {"comment": "keep-alive"}
    await daemon.app.shutdown()  # what the runner does first when the daemon stops
    assert [e for e in await read_all(resp) if "comment" not in e] == []  # the stream just closes


async def test_a_completed_alert_cancelled_later_streams_until_its_sirens_are_stopped(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    alert_id = await fan_out(daemon, recorder, channels=["siren"])
    assert (await daemon.store.last_progress(alert_id)).state == "completed"
    assert (await daemon.post(f"/v1/alerts/{alert_id}/cancel")).status == 200

    resp = await stream(daemon, alert_id)
    assert (await next_event(resp))["data"]["state"] == "cancelled"  # the snapshot: no end yet
    await recorder.flush()
    stopping = await next_event(resp)
    assert stopping["data"]["state"] == "cancelled" and stopping["data"]["counts"]["siren"]["pending"] == 1
    await daemon.drain()
    await recorder.flush()
    received = await read_all(resp)
    assert received[-1] == {"event": "end", "data": {"state": "cancelled"}}
    assert received[-2]["data"]["counts"]["siren"] == {**stopping["data"]["counts"]["siren"], "pending": 0, "sent": 2}
    assert [c["command"] for c in await daemon.siren.received()][-1] == "cancel"


async def test_a_replay_goes_past_a_completed_row_to_the_cancel_that_followed(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    alert_id = await fan_out(daemon, recorder, channels=["sms"])
    assert (await daemon.post(f"/v1/alerts/{alert_id}/cancel")).status == 200
    await recorder.flush()
    received = await read_all(await stream(daemon, alert_id, query="?after=0"))
    states = [state for _, state, _ in progress_of(received)]
    assert states[-2:] == ["completed", "cancelled"] and received[-1]["data"] == {"state": "cancelled"}


async def test_receipts_after_the_fan_out_are_still_recorded(daemon):
    recorder = daemon.app[web_mod.RECORDER]
    alert_id = await fan_out(daemon, recorder, channels=["sms"])
    sid = (await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries")).json())["deliveries"][0]["provider_id"]
    await daemon.store.apply_receipt(sid, model.State.DELIVERED, None, daemon.clock())
    assert await recorder.flush() == 1  # the alert is still followed: its receipts come after it completed
    rows = await daemon.store.progress(alert_id, 0, 100)
    assert rows[-1].counts["sms"]["delivered"] == 1


async def test_a_token_holds_at_most_its_streams_then_gets_a_clear_429(daemon):
    alert_id = (await daemon.send(channels=["sms"]))["id"]  # never drained: its streams stay live
    limit = daemon.app[web_mod.SETTINGS].max_streams_per_token
    held = [await stream(daemon, alert_id) for _ in range(limit)]
    for resp in held:
        assert resp.status == 200
        assert (await next_event(resp))["event"] == "snapshot"
    refused = await stream(daemon, alert_id)
    assert refused.status == 429
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert int(refused.headers["Retry-After"]) > 0
    problem = await refused.json()
    assert problem["type"].endswith("/too-many-streams") and str(limit) in problem["detail"]
    other = await stream(daemon, alert_id, who="admin")  # another token's streams are its own
    assert other.status == 200
    other.close()
    metrics = await (await daemon.client.get("/metrics")).text()
    assert "alertd_streams_refused_total 1.0" in metrics

    held.pop().close()  # the client goes away: its stream ends, and its place is free again
    async with asyncio.timeout(TIMEOUT):
        while (again := await stream(daemon, alert_id)).status == 429:
            await asyncio.sleep(0.05)  # the server notices the closed stream at its next poll
    assert again.status == 200
    for resp in [*held, again]:
        resp.close()
