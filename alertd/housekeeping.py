"""The periodic pass over the store, an APScheduler job every second in `app` (and the last step of
`Dispatcher.run_until_idle` in tests): what no send and no receipt triggers by itself.

Resume the plannings that failed or were left unfinished, expire what outlived its alert (approval
requests too), drop the all-clears a cancelled alert never owed, purge the receipts that waited for a
delivery in vain, fail the siren activations never acknowledged, report the sirens gone silent, and
mark the finished alerts completed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import structlog

from alertd import channels as channels_mod

if TYPE_CHECKING:  # the dispatcher runs a pass itself (`run_until_idle`)
    from alertd import dispatcher as dispatcher_mod

log = structlog.get_logger("alertd.housekeeping")

# A receipt that arrived before its delivery was recorded waits this long for it: a delivery is
# recorded within its lease (minutes), so one still missing after a day never will be.
EARLY_RECEIPTS_KEPT = dt.timedelta(days=1)


async def run(disp: dispatcher_mod.Dispatcher) -> None:
    """One pass (`app` runs one every `HOUSEKEEPING_SECONDS`, never two at once)."""
    await disp.resume()
    now = disp.clock()
    await _expire(disp, now)
    for name, channel in disp.channels.items():  # siren gateways that acknowledge, or send heartbeats
        await _sirens(disp, name, channel, now)
    for alert_id in await disp.store.complete_settled():
        disp.uncache(alert_id)
        log.info("alert completed", alert_id=alert_id)
        disp.metrics.completed(alert_id)


async def _expire(disp: dispatcher_mod.Dispatcher, now: dt.datetime) -> None:
    await disp.store.expire_due(now)
    for alert_id in await disp.store.expire_approvals(now):
        log.warning("approval request expired: the alert will never be sent", alert_id=alert_id)
    if dropped := await disp.store.drop_unreached(now):
        log.info("all-clears or withdrawals not owed: the cancelled alert never reached them", deliveries=dropped)
    await disp.store.purge_early_receipts(now - EARLY_RECEIPTS_KEPT)


async def _sirens(disp: dispatcher_mod.Dispatcher, name: str, channel: channels_mod.Channel, now: dt.datetime) -> None:
    if isinstance(channel, channels_mod.Acknowledges) and (ack_timeout := channel.ack_timeout):
        for d in await disp.store.fail_unacknowledged(name, now - dt.timedelta(seconds=ack_timeout), now):
            log.warning("siren failed to sound", alert_id=d.alert_id, siren_id=d.target, error=d.last_error)
            disp.metrics.failed_later(name, "no_ack")
    if isinstance(channel, channels_mod.Heartbeats) and (silence := channel.heartbeat_timeout):
        for siren_id in await disp.store.newly_silent(now - dt.timedelta(seconds=silence)):
            log.warning("siren silent", siren_id=siren_id, seconds=silence)
