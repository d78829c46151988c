"""What the daemon and its sending processes load: each process's memory is mostly the libraries it
imports (issue 12: the daemon and its sending processes together in 250 MB at a million recipients).
Each check runs in a fresh interpreter (`python -P -c`), as a sending process is started."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# A push channel's provider libraries (some 16 MB), an SMS channel's, and the daemon's own.
FCM = ("firebase_admin", "google.auth", "httpx", "grpc", "alertd.channels.fcm_client")
TWILIO = ("twilio",)
DAEMON = ("jinja2", "shapely", "numpy", "apscheduler", "pydantic_settings", "prometheus_client", "aiosqlite",
          "aiohttp.web", "alertd.web", "alertd.render", "alertd.config", "alertd.dispatcher")

PREAMBLE = """
import asyncio, json, sys
from alertd import channels
from alertd.channels import remote

def loaded(names):
    print(json.dumps([name for name in names if name in sys.modules]))
"""


def run(code: str) -> list[str]:
    """What of the modules `code` asks about (`loaded(...)`) were imported."""
    done = subprocess.run([sys.executable, "-P", "-c", PREAMBLE + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_daemon_whose_push_channel_sends_from_its_own_processes_does_not_load_firebase_admin():
    """The daemon builds the plugin (settings, declared abilities) but never starts it."""
    assert run(f"""
        chan = remote.Remote("fcm", {{"project_id": "p", "base_url": "http://127.0.0.1:9"}},
                             channels.Context("http://127.0.0.1:9", "push"), processes=2)
        assert isinstance(chan, channels.Topics) and isinstance(chan, channels.DeadAddresses)
        loaded({FCM!r})
    """) == []


@pytest.mark.parametrize(("plugin", "settings", "foreign"), [
    ("twilio", {"account_sid": "AC1", "auth_token": "t", "from": "+33700000000", "base_url": "http://127.0.0.1:9"},
     FCM + DAEMON),
    ("fcm", {"project_id": "p", "base_url": "http://127.0.0.1:9"}, TWILIO + DAEMON),
])
def test_a_sending_process_loads_only_its_own_channel(plugin, settings, foreign):
    """Started as `remote.serve` starts it: no other channel's provider library, nothing of the daemon's."""
    assert run(f"""
        async def main():
            channel = channels.load({plugin!r})({settings!r}, channels.Context("http://127.0.0.1:9", "c"))
            await channel.start()
            await channel.close()

        asyncio.run(main())
        loaded({foreign!r})
    """) == []
