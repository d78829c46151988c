"""A property-based fuzz of the API, driven by its own OpenAPI document (schemathesis on hypothesis).

Requests generated from the document (valid ones and, as many, invalid ones) go to a real daemon on
the fakes over 127.0.0.1, as each kind of caller: no token, operator, approver, issuer, admin. Every
answer must be documented (status, content type, body, headers: `Conformance`, the checker of
tests/test_openapi_conformance.py), none a 5xx; and nothing a caller that may not send asked for
reaches a provider. schemathesis's own checks run too, but for those `NOT_CHECKED` says why. Seeded:
CI sends the same requests every time. 2,100 requests (and the probes of schemathesis's auth check);
`ALERTD_FUZZ_SCALE=N` sends N times as many.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from requests import structures
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from alertd import model
from tests import helpers
from tests.test_openapi_conformance import Conformance, settle

pytestmark = pytest.mark.parametrize("daemon", ["sqlite"], indirect=True)

SCALE = int(os.environ.get("ALERTD_FUZZ_SCALE", "1"))
PER_CALLER = 420 * SCALE
# Those that may not send come first: until the first that may, the fakes must receive nothing.
CALLERS = ("no token", "operator", "approver", "issuer", "admin")
MAY_NOT_SEND = {"no token", "operator"}
TIMEOUT = 20  # seconds: an answer slower than that is a failure, not a hang
# schemathesis's checks that disagree with what the document says alertd does:
NOT_CHECKED = [
    # "A request valid by the schema succeeds": an order valid by the schema is still refused for what
    # no schema can tell (an unknown template, a CAP document's own rules, a zone outside the caller's
    # jurisdiction, an unknown alert), with the documented 403, 404, 409 or 422.
    openapi_checks.positive_data_acceptance,
]
STREAMS = "/v1/alerts/{id}/events"  # an alert's stream lasts until the alert is over: random ids only


@dataclasses.dataclass(frozen=True)
class Answer:
    """What `Conformance.check` reads of an answer, from a `requests` response."""

    status: int
    headers: Any
    content_type: str
    charset: str | None

    @classmethod
    def of(cls, resp: schemathesis.Response) -> Answer:
        headers = structures.CaseInsensitiveDict({k: ", ".join(v) for k, v in resp.headers.items()})
        media, *params = headers.get("Content-Type", "").split(";")
        charset = dict(p.strip().partition("=")[::2] for p in params).get("charset")
        return cls(resp.status_code, headers, media.strip(), charset)


@dataclasses.dataclass
class Fuzz:
    schema: Any
    base_url: str
    conformance: Conformance
    ids: list[str]  # real alerts (a completed one, a draft) put in the path now and then
    statuses: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    def run(self, who: str, headers: dict[str, str]) -> None:
        """`PER_CALLER` requests as `who` (in a thread: the daemon answers on the test's loop)."""
        tally = self.statuses.setdefault(who, collections.Counter())
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)  # as many invalid requests as valid ones
        cases = st.one_of(*(self.schema.as_strategy(mode) for mode in modes))
        session = requests.Session()

        @hypothesis.settings(
            max_examples=PER_CALLER, database=None, deadline=None, print_blob=False,
            phases=[hypothesis.Phase.generate], suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.seed(CALLERS.index(who))  # each caller its own requests, the same on every run
        @hypothesis.given(case=cases, real=st.sampled_from([None, *self.ids]))
        def one(case, real) -> None:
            if real and "id" in (case.path_parameters or {}) and case.path != STREAMS:
                case.path_parameters["id"] = real
            resp = case.call(base_url=self.base_url, session=session, headers=headers, timeout=TIMEOUT)
            tally[resp.status_code] += 1
            self.check(who, case, resp, headers)

        one()

    def check(self, who: str, case, resp: schemathesis.Response, headers: dict[str, str]) -> None:
        where = f"{case.method} {case.formatted_path} as {who} -> {resp.status_code}"
        try:
            assert resp.status_code < 500, "a server error"
            self.conformance.check(case.method.lower(), case.path, Answer.of(resp), resp.content, case.formatted_path)
            case.validate_response(resp, headers=headers, transport_kwargs={"headers": headers, "timeout": TIMEOUT},
                                   excluded_checks=NOT_CHECKED)
        except (AssertionError, schemathesis.errors.FailureGroup) as exc:
            self.failures.append(f"{where}: {exc}\n    {case.as_curl_command(base_url=self.base_url)}")


async def received(daemon) -> dict[str, int]:
    return {fake.provider: len(await fake.received()) for fake in (daemon.sms, daemon.push, daemon.siren)}


async def test_fuzzed_requests_answer_as_documented_and_only_senders_reach_providers(daemon):
    doc = await (await daemon.client.get("/v1/openapi.json")).json()
    headers = {who: daemon.headers[who] for who in ("operator", "issuer", "admin")} | {"no token": {}}
    headers["approver"] = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.APPROVER, ["75"]))
    alert = await daemon.send()
    draft = await daemon.send(status="draft")
    await settle(daemon)
    base_url = str(daemon.client.make_url("")).rstrip("/")
    # The caller's own token or none: schemathesis neither makes one up nor leaves it out.
    config = schemathesis.config.SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_dict(doc, config=config)
    fuzz = Fuzz(schema, base_url, Conformance(daemon, doc), [alert["id"], draft["id"]])
    before = await received(daemon)
    for who in CALLERS:
        await asyncio.to_thread(fuzz.run, who, headers[who])
        await settle(daemon)
        if who in MAY_NOT_SEND:
            assert await received(daemon) == before, f"a request as {who} reached a provider"
    total = sum(sum(t.values()) for t in fuzz.statuses.values())
    for who, tally in fuzz.statuses.items():
        helpers.REPORT.append(f"fuzz as {who}: {sum(tally.values())} requests, " + ", ".join(
            f"{status}: {n}" for status, n in sorted(tally.items())))
    helpers.REPORT.append(f"fuzz: {total} requests in all, {len(fuzz.failures)} failures")
    assert not fuzz.failures, "\n".join(fuzz.failures[:20])
    assert total >= 2000 * SCALE
