"""Test helpers: a clock the test moves, and a daemon built on the fakes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from alertd import auth, config, model

START = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.timezone.utc)

# Figures a test wants whoever runs the suite to see; printed at the end of the run (conftest).
REPORT: list[str] = []


@dataclasses.dataclass
class ManualClock:
    now: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance_to(self, when: dt.datetime) -> None:
        self.now = max(self.now, when)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


CONFIG = """
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
url = "{store}"

[dispatcher]
{dispatcher}

[channels.sms]
plugin = "twilio"
account_sid = "ACtest0000000000000000000000000000"
auth_token = "test-auth-token"
from = "+33700000000"
base_url = "{fakes}"
{sms}

[channels.push]
plugin = "fcm"
project_id = "alertd-test"
base_url = "{fakes}"

[channels.siren]
plugin = "siren-http"
base_url = "{fakes}/siren"
token = "gateway-token"
"""


def write_config(
    tmp: Path, fakes: str, port: int, store: str | None = None,
    dispatcher: str = "batch_size = 100", sms: str = "",
) -> Path:
    """A configuration on the fakes; `dispatcher` and `sms` are extra TOML lines for those sections."""
    path = tmp / "alertd.toml"
    store = store or f"sqlite:///{tmp / 'alertd.db'}"
    path.write_text(CONFIG.format(port=port, fakes=fakes, store=store, dispatcher=dispatcher, sms=sms))
    return path


def load_config(tmp: Path, fakes: str, port: int, **kw) -> config.Config:
    return config.load(str(write_config(tmp, fakes, port, **kw)), env={})


async def add_token(db, role: model.Role, zones: list[str], cell: str = "Préfecture test") -> str:
    plaintext, token = auth.new_token(cell, role, zones, START)
    await db.add_token(token)
    return plaintext


def order(**overrides) -> dict:
    base = {
        "status": "actual", "event": "Inondation", "urgency": "Immediate", "severity": "Severe",
        "certainty": "Observed", "expires": (START + dt.timedelta(hours=2)).isoformat(),
        "area": {"zones": ["75056"], "description": "Paris"},
        "channels": ["sms", "push", "siren"], "template": "shelter_in_place",
        "params": {"reason": "crue de la Seine"}, "locale": "fr",
    }
    base.update(overrides)
    return base
