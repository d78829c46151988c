"""The two-person rule (issue 10, points 3 and 4): an actual alert of a person waits for a second
person, an approver other than its creator; what is approved is what is sent. On both stores, with
the fakes: "nothing sent" means the fakes received nothing after draining."""

from __future__ import annotations

import datetime as dt
import shutil

from alertd import config, housekeeping, model, render
from tests import helpers

R = model.Role


async def cells(daemon, **approval) -> None:
    """pref-75 (Paris, default policy unless told) with alice (issuer), bruno and carla (approvers),
    dora (issuer and approver); pref-69 (Lyon) with lucie (approver); the national cogic with nadia."""
    policy = {"approval": approval} if approval else {}
    await helpers.add_cell(daemon.store, "pref-75", ["75"], name="Préfecture de police", **policy)
    await helpers.add_cell(daemon.store, "pref-69", ["69"], name="Préfecture du Rhône")
    await helpers.add_cell(daemon.store, "cogic", ["*"], name="COGIC")
    for name, cell, roles in (
        ("alice", "pref-75", [R.ISSUER]), ("bruno", "pref-75", [R.APPROVER]), ("carla", "pref-75", [R.APPROVER]),
        ("dora", "pref-75", [R.ISSUER, R.APPROVER]), ("lucie", "pref-69", [R.APPROVER]),
        ("nadia", "cogic", [R.APPROVER]),
    ):
        daemon.headers[name] = helpers.auth_header(await helpers.add_person(daemon.store, name, cell, *roles))


async def order(daemon, who="alice", **fields) -> dict:
    resp = await daemon.post("/v1/alerts", who=who, json=helpers.order(**fields))
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def approve(daemon, alert_id: str, who: str, **kw):
    return await daemon.post(f"/v1/alerts/{alert_id}/approve", who=who, **kw)


async def reject(daemon, alert_id: str, who: str, reason: str | None = "not now"):
    body = {} if reason is None else {"reason": reason}
    return await daemon.post(f"/v1/alerts/{alert_id}/reject", who=who, json=body)


async def audit(daemon, alert_id: str) -> list[dict]:
    resp = await daemon.get(f"/v1/audit?subject={alert_id}", who="admin")
    return list(reversed((await resp.json())["entries"]))  # oldest first


async def nothing_sent(daemon) -> bool:
    await daemon.drain()
    return (await daemon.sms.received(), await daemon.push.received(), await daemon.siren.received()) == ([], [], [])


async def test_the_two_person_rule_end_to_end(daemon):
    """The CI check of the issue: a self-approval refused, a second person's approval releases the
    alert, an expired request never sends, the audit names both people."""
    await cells(daemon)
    waiting = await order(daemon)
    assert waiting["state"] == "awaiting_approval"
    assert await nothing_sent(daemon)

    own = await approve(daemon, waiting["id"], "dora")  # dora approves, but not her own...
    assert own.status == 202, await own.text()
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3
    await daemon.sms.reset()

    mine = await order(daemon, who="dora")
    refused = await approve(daemon, mine["id"], "dora")
    assert refused.status == 403 and refused.content_type == "application/problem+json"
    problem = await refused.json()
    assert problem["field"] == "approved_by" and "a second person must approve it" in problem["title"]
    assert (await daemon.status(mine["id"]))["state"] == "awaiting_approval"

    daemon.clock.advance(15 * 60)  # the cell's default: 15 minutes
    await housekeeping.run(daemon.dispatcher)
    assert (await daemon.status(mine["id"]))["state"] == "approval_expired"
    late = await approve(daemon, mine["id"], "bruno")
    assert late.status == 409
    assert await nothing_sent(daemon)

    entries = [(e["action"], e["cell"], e["user"]) for e in await audit(daemon, waiting["id"])]
    assert entries == [("created", "pref-75", "alice"), ("approved", "pref-75", "dora")]
    shown = await daemon.status(waiting["id"])
    assert (shown["created_by"], shown["approval"]["approved_by"], shown["approval"]["approved_cell"]) == \
        ("alice", "dora", "pref-75")
    assert [e["action"] for e in await audit(daemon, mine["id"])] == ["created", "approval_expired"]


async def test_an_awaiting_alert_shows_the_approver_what_will_be_sent_and_nothing_goes(daemon):
    await cells(daemon)
    waiting = await order(daemon)
    assert await nothing_sent(daemon)
    shown = await daemon.status(waiting["id"])
    record = shown["approval"]
    assert shown["state"] == "awaiting_approval" and shown["totals"] == {}
    assert (shown["created_by"], shown["cell"], shown["cell_name"]) == ("alice", "pref-75", "Préfecture de police")
    assert (record["requested_by"], record["approved_by"]) == ("alice", None)
    assert record["expires_at"] == (helpers.START + dt.timedelta(minutes=15)).isoformat()
    assert record["audience"] == {"sms": 3, "push": 3, "siren": 1} and record["area"] == shown["area"]
    messages = (await (await daemon.get(f"/v1/alerts/{waiting['id']}/messages")).json())["messages"]
    assert messages == record["messages"] and {m["channel"] for m in messages} == {"sms", "push", "siren"}
    assert [e["detail"]["approval"] for e in await audit(daemon, waiting["id"])] == ["required"]
    # Not released: not public either.
    assert (await daemon.client.get(f"/v1/alerts/{waiting['id']}.xml")).status == 401
    assert waiting["id"] not in await (await daemon.client.get("/v1/feed.atom")).text()

    assert (await approve(daemon, waiting["id"], "bruno")).status == 202
    await daemon.drain()
    shown = await daemon.status(waiting["id"])
    attempted = {channel: sum(states.values()) for channel, states in shown["counts"].items()}
    assert attempted == record["audience"]  # exactly the audience approved
    assert len(await daemon.sms.received()) == 3


async def test_only_an_approver_of_a_cell_covering_the_alert_approves_it_and_the_role_comes_first(daemon):
    await cells(daemon)
    first, second = await order(daemon), await order(daemon, identifier="second")
    assert (await approve(daemon, first["id"], "lucie")).status == 404  # Lyon's: not even its existence
    assert (await approve(daemon, first["id"], "operator")).status == 403
    assert (await reject(daemon, second["id"], "bruno", "wrong zone")).status == 200
    # An issuer who is not its creator learns nothing of its state: 403 before any 409.
    daemon.headers["eve"] = helpers.auth_header(await helpers.add_person(daemon.store, "eve", "pref-75", R.ISSUER))
    assert (await approve(daemon, second["id"], "eve")).status == 403
    assert (await approve(daemon, second["id"], "carla")).status == 409  # an approver does
    national = await approve(daemon, first["id"], "nadia")  # the national cell has authority over Paris
    assert national.status == 202, await national.text()
    entries = [(e["action"], e["cell"], e["user"]) for e in await audit(daemon, first["id"])]
    assert entries == [("created", "pref-75", "alice"), ("approved", "cogic", "nadia")]


async def test_a_rejection_needs_a_reason_and_ends_the_alert(daemon):
    await cells(daemon)
    waiting = await order(daemon)
    missing = await reject(daemon, waiting["id"], "bruno", reason=None)
    assert missing.status == 422 and (await missing.json())["field"] == "reason"
    blank = await reject(daemon, waiting["id"], "bruno", reason="  ")
    assert blank.status == 422
    assert (await reject(daemon, waiting["id"], "bruno", reason="x" * 1001)).status == 422
    resp = await reject(daemon, waiting["id"], "bruno", reason="the wrong commune")
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "rejected" and body["approval"]["rejected_by"] == "bruno"
    assert body["approval"]["reason"] == "the wrong commune"
    assert (await approve(daemon, waiting["id"], "carla")).status == 409
    assert await nothing_sent(daemon)
    rejected = (await audit(daemon, waiting["id"]))[-1]
    assert (rejected["action"], rejected["user"], rejected["detail"]["reason"]) == \
        ("rejected", "bruno", "the wrong commune")
    withdrawn = await order(daemon, identifier="again")
    assert (await reject(daemon, withdrawn["id"], "alice", "my mistake")).status == 200  # its creator withdraws it


async def test_an_approval_after_the_request_expired_is_refused_and_says_so(daemon):
    await helpers.add_cell(daemon.store, "pref-75", ["75"], approval_minutes=5)
    daemon.headers["alice"] = helpers.auth_header(await helpers.add_person(daemon.store, "alice", "pref-75", R.ISSUER))
    bruno = await helpers.add_person(daemon.store, "bruno", "pref-75", R.APPROVER)
    daemon.headers["bruno"] = helpers.auth_header(bruno)
    waiting = await order(daemon)
    daemon.clock.advance(5 * 60)  # no housekeeping ran: the approval itself finds it expired
    resp = await approve(daemon, waiting["id"], "bruno")
    assert resp.status == 409 and (await resp.json())["type"].endswith("/approval-expired")
    assert (await daemon.status(waiting["id"]))["state"] == "approval_expired"
    assert await nothing_sent(daemon)


async def test_an_alert_changed_since_it_was_shown_is_shown_again_not_approved(daemon):
    await cells(daemon)
    waiting = await order(daemon)
    before = (await daemon.status(waiting["id"]))["approval"]
    newcomer = {"id": "p-new", "phone": "+33612345670", "locale": "fr", "zones": [helpers.PARIS]}
    assert (await daemon.post("/v1/subscribers", who="admin", json=newcomer)).status == 200
    resp = await approve(daemon, waiting["id"], "bruno")
    assert resp.status == 409 and (await resp.json())["field"] == "digest"
    after = (await daemon.status(waiting["id"]))["approval"]
    assert after["audience"]["sms"] == before["audience"]["sms"] + 1 and after["digest"] != before["digest"]
    assert after["expires_at"] == before["expires_at"]  # renewed, not extended
    assert await nothing_sent(daemon)
    assert (await approve(daemon, waiting["id"], "bruno")).status == 202  # what they now saw
    await daemon.drain()
    assert len(await daemon.sms.received()) == 4
    assert [e["action"] for e in await audit(daemon, waiting["id"])] == ["created", "approval_renewed", "approved"]


async def test_planning_refuses_an_alert_whose_messages_changed_after_approval(daemon, tmp_path):
    await cells(daemon)
    waiting = await order(daemon)
    changed = tmp_path / "templates"
    shutil.copytree(config.default_templates(), changed)
    sms = changed / "fr" / "shelter_in_place.sms.j2"
    sms.write_text(sms.read_text() + " Et autre chose.")
    # The templates the fan-out renders with changed behind the approver's back.
    daemon.dispatcher.renderer = render.Renderer(changed)
    assert (await approve(daemon, waiting["id"], "bruno")).status == 202
    assert await nothing_sent(daemon)
    assert (await daemon.status(waiting["id"]))["state"] == "refused"
    refused = (await audit(daemon, waiting["id"]))[-1]
    assert (refused["action"], refused["detail"]["approved_by"]) == ("refused", "bruno")


async def test_a_cancel_waits_for_a_second_person_unless_the_cell_says_otherwise(daemon):
    await cells(daemon)
    sent = await order(daemon)
    assert (await approve(daemon, sent["id"], "bruno")).status == 202
    await daemon.drain()
    await daemon.sms.reset()
    resp = await daemon.post(f"/v1/alerts/{sent['id']}/cancel", who="alice")
    assert resp.status == 202, await resp.text()
    cancel = await resp.json()
    assert cancel["state"] == "awaiting_approval" and cancel["msg_type"] == "cancel"
    assert [r["id"] for r in cancel["references"]] == [sent["id"]]
    assert await nothing_sent(daemon)
    assert (await daemon.status(sent["id"]))["state"] == "completed"  # still in force
    assert (await approve(daemon, cancel["id"], "alice")).status == 403
    assert (await approve(daemon, cancel["id"], "bruno")).status == 202
    await daemon.drain()
    assert (await daemon.status(sent["id"]))["state"] == "cancelled"
    assert len(await daemon.sms.received()) == 3  # the all-clear, to those the alert reached


async def test_a_cell_may_let_its_own_cancels_go_at_once(daemon):
    await cells(daemon, cancel="none")
    sent = await order(daemon)
    assert (await approve(daemon, sent["id"], "bruno")).status == 202
    resp = await daemon.post(f"/v1/alerts/{sent['id']}/cancel", who="alice")
    assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
    cancelled = (await audit(daemon, sent["id"]))[-1]
    assert (cancelled["action"], cancelled["user"]) == ("cancelled", "alice")
    assert cancelled["detail"]["approval_reason"] == "cell setting for cancel"


async def test_an_exercise_needs_no_second_person_by_default_and_the_audit_says_why(daemon):
    await cells(daemon)
    exercise = await order(daemon, status="exercise")
    assert exercise["state"] == "planning"
    created = (await audit(daemon, exercise["id"]))[0]
    assert (created["detail"]["approval"] == "none"
            and created["detail"]["approval_reason"] == "cell setting for exercise")
    trusted = await daemon.send()  # the suite's trusted machine client
    machine = (await audit(daemon, trusted["id"]))[0]
    assert machine["detail"]["approval_reason"] == "trusted machine client"


async def test_a_draft_issued_as_actual_takes_a_second_person(daemon):
    await cells(daemon)
    draft = await order(daemon, status="draft")
    assert (await approve(daemon, draft["id"], "alice")).status == 403  # its author, and no approver
    assert (await approve(daemon, draft["id"], "dora", json={"status": "actual"})).status == 202
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3
    shown = await daemon.status(draft["id"])
    assert (shown["created_by"], shown["approval"]["requested_by"], shown["approval"]["approved_by"]) == \
        ("alice", "alice", "dora")


async def test_an_update_waits_for_a_second_person_and_the_original_stays_in_force(daemon):
    await cells(daemon)
    sent = await order(daemon)
    assert (await approve(daemon, sent["id"], "bruno")).status == 202
    await daemon.drain()
    await daemon.sms.reset()
    shown = await daemon.status(sent["id"])
    earlier = {"sender": shown["sender"], "identifier": shown["identifier"], "sent": shown["sent"]}
    update = await order(daemon, msg_type="update", references=[earlier], identifier="update-1")
    assert update["state"] == "awaiting_approval"
    assert await nothing_sent(daemon)
    assert (await daemon.status(sent["id"]))["state"] == "completed"  # not replaced yet
    assert (await approve(daemon, update["id"], "carla")).status == 202
    await daemon.drain()
    assert (await daemon.status(sent["id"]))["state"] == "updated"
    assert len(await daemon.sms.received()) == 3


async def test_the_cli_approves_and_rejects_as_its_token_s_person(daemon, capsys):
    """`alertd approve` / `alertd reject` act as the person the token belongs to: the creator's own
    approval fails (exit 1, the problem on stderr), a second person's releases the alert."""
    import asyncio
    import json
    import re

    from alertd import cli

    def printed(text: str) -> dict:  # the daemon, in this process, logs beside the CLI's answer
        return json.loads(re.search(r"^\{$.*?^\}$", text, re.S | re.M)[0])

    await cells(daemon)
    url = f"http://127.0.0.1:{daemon.client.port}"

    def run(who: str, *argv: str) -> int:
        token = daemon.headers[who]["Authorization"].split()[1]
        return cli.main([argv[0], "--url", url, "--token", token, *argv[1:]])

    first, second = await order(daemon, who="dora"), await order(daemon)
    capsys.readouterr()
    assert await asyncio.to_thread(run, "dora", "approve", first["id"]) == 1  # an approver, but its creator
    assert printed(capsys.readouterr().err)["type"].endswith("/self-approval")
    assert await asyncio.to_thread(run, "bruno", "approve", first["id"]) == 0
    assert printed(capsys.readouterr().out)["state"] != "awaiting_approval"
    assert await asyncio.to_thread(run, "carla", "reject", second["id"], "--reason", "wrong area") == 0
    assert printed(capsys.readouterr().out)["state"] == "rejected"
    await daemon.drain()
    assert len(await daemon.sms.received()) > 0  # the first went out
    assert (await daemon.status(second["id"]))["state"] == "rejected"


async def test_the_messages_name_the_cell_as_people_know_it_and_go_as_approved(daemon):
    """A push is signed "Préfecture de police", not with the cell's id; the name is in the texts the
    approver saw, so the planner's check of the approved digest passes."""
    await cells(daemon)
    waiting = await order(daemon, channels=["push"])
    assert (await approve(daemon, waiting["id"], "bruno")).status == 202
    await daemon.drain()
    pushes = await daemon.push.received()
    assert pushes and all("Préfecture de police" in str(p) and "pref-75" not in str(p) for p in pushes)
    assert (await daemon.status(waiting["id"]))["state"] != "refused"
