"""Typed settings: every section validated by its model, every channel by its plugin's, all at once."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import ClassVar

import pydantic
import pytest

from alertd import channels, cli, config, errors, model
from alertd.channels import fcm_push, siren_http, twilio_sms

SMS = """
[channels.sms]
plugin = "twilio"
account_sid = "AC1"
from = "+33700000000"
"""

SIREN = """
[channels.siren]
plugin = "siren-http"
base_url = "http://127.0.0.1:8900/siren"
"""


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "alertd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_mistakes_in_several_sections_and_channels_are_reported_together(tmp_path):
    path = write(tmp_path, """
[server]
max_connections = 0
[dispatcher]
backoff_base = "fast"
[channels.sms]
plugin = "twilio"
account_sid = ["AC1"]
auth_token = "t"
from = "+33700000000"
timeout = -2
[channels.push]
plugin = "fcm"
quota_per_minute = true
[channels.siren]
plugin = "siren-http"
base_url = "http://127.0.0.1:8900/siren"
token = "t"
zones = ["75", "7"]
""")
    assert config.check(path, env={}) == [
        "server.max_connections: must be positive, got 0",
        "dispatcher.backoff_base: expected a number, got 'fast'",
        "channels.sms.account_sid: expected a string, got ['AC1']",
        "channels.sms.timeout: must be positive, got -2",
        "channels.push.project_id: required",
        "channels.push.quota_per_minute: expected a number, got true",
        "channels.siren.zones: zones must be a non-empty list of zone codes (\"*\", a département or a commune),"
        " got ['75', '7']",
    ]
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path, env={})
    assert len(caught.value.problems) == 7


def test_a_typo_gets_did_you_mean(tmp_path):
    path = write(tmp_path, """
[server]
lisen = "127.0.0.1:8080"
[dispatchr]
batch_size = 10
[channels.sms]
plugin = "twillio"
[channels.siren]
plugin = "siren-http"
base_url = "http://127.0.0.1:8900/siren"
token = "t"
pattern_activat = "long"
""")
    problems = config.check(path, env={"ALERTD_CHANNELS__SIREN__TIME_OUT": "3"})
    assert problems[0] == "dispatchr: unknown section; did you mean `dispatcher`?"
    assert "server.lisen: unknown key; did you mean `listen`?" in problems
    assert "channels.siren.pattern_activat: unknown key; did you mean `pattern_activate`?" in problems
    assert ("channels.siren.time_out: unknown key; did you mean `timeout`? (from $ALERTD_CHANNELS__SIREN__TIME_OUT)"
            in problems)
    [plugin] = [p for p in problems if p.startswith("channels.sms.plugin:")]
    assert "unknown plugin 'twillio'; did you mean `twilio`?" in plugin
    assert len(problems) == 5


def test_a_rule_between_keys_is_checked_once_the_keys_are_valid(tmp_path):
    path = write(tmp_path, '[channels.sms]\nplugin = "twilio"\naccount_sid = "AC1"\nauth_token = "t"\n')
    assert config.check(path, env={}) == [
        "channels.sms: one of from, senders or messaging_service_sid is required by the twilio plugin"
    ]
    assert config.check(path, env={"ALERTD_CHANNELS__SMS__MESSAGING_SERVICE_SID": "MG1"}) == []


def test_variables_nested_with_double_underscores_override_the_file(tmp_path):
    path = write(tmp_path, SMS + 'auth_token = "from-the-file"\ntimeout = 10\n[dispatcher]\nbatch_size = 500\n')
    env = {
        "ALERTD_DISPATCHER__BATCH_SIZE": "20",
        "alertd_channels__sms__timeout": "2.5",  # any case
        "ALERTD_CHANNELS__SMS__AUTH_TOKEN": "from-the-environment",
        "ALERTD_ALERTS__TEST_RECIPIENTS": "a1, s-1",
    }
    cfg = config.load(path, env=env)
    assert cfg.dispatcher.batch_size == 20
    assert cfg.alerts.test_recipients == ("a1", "s-1")
    sms = cfg.channels["sms"].settings
    assert isinstance(sms, twilio_sms.Settings) and sms.timeout == 2.5 and sms.account_sid == "AC1"
    assert sms.auth_token.get_secret_value() == "from-the-environment"
    assert config.check(path, env={"ALERTD_CHANNELS__SMS__TIMEOUT": "soon"}) == [
        "channels.sms.timeout: expected a number, got 'soon' (from $ALERTD_CHANNELS__SMS__TIMEOUT)"
    ]
    # A section given whole is JSON, as pydantic-settings reads it; anything else is a problem, not a crash.
    assert config.load(path, env={"ALERTD_LOG": '{"level": "debug"}'}).log.level == "debug"
    assert config.check(path, env={"ALERTD_LOG": "debug"}) == [
        "log: $ALERTD_LOG must be a JSON table; give its keys as $ALERTD_LOG__<KEY>"
    ]


def test_secrets_from_files_and_systemd_credentials(tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "siren-gateway-token").write_text("gateway-s3cr3t\n")
    (tmp_path / "twilio-token").write_text("twilio-s3cr3t\n")
    path = write(tmp_path, SMS + f'auth_token_file = "{tmp_path / "twilio-token"}"\n'
                 + SIREN + 'token = "credential:siren-gateway-token"\n'
                 + 'receipt_token_file = "credential:siren-gateway-token"\n')
    cfg = config.load(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    sms, siren = cfg.channels["sms"].settings, cfg.channels["siren"].settings
    assert isinstance(sms.auth_token, pydantic.SecretStr)
    assert sms.auth_token.get_secret_value() == "twilio-s3cr3t"
    assert siren.token.get_secret_value() == siren.receipt_token.get_secret_value() == "gateway-s3cr3t"
    for text in (repr(cfg), str(cfg.redacted())):
        assert "s3cr3t" not in text
    # The channel gets the typed settings and reads the secret from them.
    gateway = siren_http.SirenHTTP(cfg.channels["siren"].settings, channels.Context("http://127.0.0.1:9", "siren"))
    assert gateway.options is siren and gateway.accepts_receipt("gateway-s3cr3t")


def test_a_credential_named_like_a_variable_is_that_key(tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "alertd_channels__sms__auth_token").write_text("credential-s3cr3t\n")
    (creds / "twilio-auth-token").write_text("not named like a variable: read only when referenced")
    path = write(tmp_path, SMS + 'auth_token = "from-the-file"\n')
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert config.load(path, env=env).channels["sms"].settings.auth_token.get_secret_value() == "credential-s3cr3t"
    # Below the variables, as documented.
    env["ALERTD_CHANNELS__SMS__AUTH_TOKEN"] = "variable"
    assert config.load(path, env=env).channels["sms"].settings.auth_token.get_secret_value() == "variable"
    assert config.check(path, env={"CREDENTIALS_DIRECTORY": path}) == [
        "$CREDENTIALS_DIRECTORY: secrets_dir must reference a directory, not a file"
    ]


def test_a_secret_never_appears_in_check_config_output(tmp_path, capsys):
    (tmp_path / "token").write_text("file-s3cr3t")
    path = write(tmp_path, """
[channels.sms]
plugin = "twilio"
account_sid = "AC1"
auth_token = 4815162342
[channels.siren]
plugin = "siren-http"
base_url = 42
token = ["toml-s3cr3t"]
receipt_token = "receipt-s3cr3t"
receipt_token_file = "%s"
acks = "sometimes"
""" % (tmp_path / "token"))
    assert cli.main(["check-config", path]) == 1
    out = capsys.readouterr().out
    assert "channels.sms.auth_token: expected a string" in out and "channels.siren.token: expected" in out
    assert "channels.siren.receipt_token_file: give receipt_token or receipt_token_file, not both" in out
    for secret in ("4815162342", "toml-s3cr3t", "receipt-s3cr3t", "file-s3cr3t"):
        assert secret not in out
    assert "got 42" in out and "'sometimes'" in out  # what is not a secret is shown, to be found


def test_serve_with_a_broken_configuration_exits_without_a_traceback(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "everywhere"\n[log]\nlevel = "chatty"\n'
                 + SMS + 'auth_token = "serve-s3cr3t"\nacount_sid = "AC2"\n')
    done = subprocess.run([sys.executable, "-m", "alertd.cli", "serve", "--config", path],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert (line["level"], line["event"]) == ("error", "alertd cannot serve")
    assert line["problems"] == [
        "server.listen: expected host:port, e.g. 127.0.0.1:8080, got 'everywhere'",
        "log.level: expected one of debug, info, warning, error, critical, got 'chatty'",
        "channels.sms.acount_sid: unknown key; did you mean `account_sid`?",
    ]
    assert "serve-s3cr3t" not in done.stderr


# -- channels built from a mapping, as tests and third parties do ----------------------------------


def test_a_channel_built_from_a_mapping_reports_every_problem():
    with pytest.raises(errors.ConfigError) as caught:
        fcm_push.FCMPush({"timeout": "long", "max_concurency": 3}, channels.Context("http://127.0.0.1", "push"))
    assert caught.value.problems == [
        "channels.push.project_id: required",
        "channels.push.timeout: expected a number, got 'long'",
        "channels.push.max_concurency: unknown key; did you mean `max_concurrency`?",
    ]


class Hook(channels.Base):
    """A third party's plugin from before typed settings: no model of its own, reads a mapping."""

    kind: ClassVar[model.Kind] = model.Kind.SMS


def test_a_plugin_without_a_settings_model_still_reads_its_mapping(tmp_path):
    (tmp_path / "key").write_text("hook-s3cr3t")
    hook = Hook({"base_url": "http://127.0.0.1:9", "api_key_file": str(tmp_path / "key"), "max_concurrency": "4"},
                channels.Context("http://127.0.0.1", "hook"))
    assert hook.config["base_url"] == "http://127.0.0.1:9"
    assert hook.config["api_key"] == "hook-s3cr3t"  # a secret by its name, read from its file
    assert hook.concurrency == 4
    with pytest.raises(errors.ConfigError, match="channels.hook.max_concurrency: must be positive"):
        Hook({"max_concurrency": 0}, channels.Context("http://127.0.0.1", "hook"))
