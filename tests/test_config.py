"""Configuration: defaults, environment overrides, secrets, and every problem reported at once."""

from __future__ import annotations

import dataclasses
import pathlib

import pydantic
import pytest

from alertd import config, demo, errors
from tests import helpers

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "config" / "alertd.toml"

TWILIO = """
[channels.sms]
plugin = "twilio"
account_sid = "ACfake"
from = "+33700000000"
max_concurrency = 100
status_callback = true
"""

PUSH = """
[channels.push]
plugin = "fcm"
project_id = "p"
service_account_file = "{}"
"""


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "alertd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_no_file_gives_the_defaults():
    cfg = config.load(None, env={})
    assert cfg.server.listen == "127.0.0.1:8080"
    assert cfg.server.public_url == "http://127.0.0.1:8080"
    assert cfg.server.display_timezone == "Europe/Paris"
    assert cfg.store.url == "sqlite:///alertd.db"
    assert pathlib.Path(cfg.render.templates).name == "templates"
    assert cfg.render == config.Render(cfg.render.templates, "fr", 3, 4096)
    assert cfg.dispatcher == config.Dispatcher(500, 60, 8, 2.0, 300, 1000)
    assert dict(cfg.channels) == {}
    assert (cfg.log.level, cfg.log.format, cfg.systemd.watchdog) == ("info", "auto", True)


def test_the_example_configuration_is_valid_and_has_the_four_channels():
    assert config.check(EXAMPLE, env={}) == []
    cfg = config.load(EXAMPLE, env={})
    assert {name: c.plugin for name, c in cfg.channels.items()} == {
        "sms": "twilio", "push": "fcm", "siren": "siren-http", "cbc": "cbc",
    }
    assert all(c.settings.base_url.startswith("http://127.0.0.1:8900") for c in cfg.channels.values())


def test_the_configuration_is_frozen():
    cfg = config.load(EXAMPLE, env={})
    with pytest.raises(AttributeError):
        cfg.server.listen = "0.0.0.0:80"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.channels["sms"].settings.auth_token = "x"  # type: ignore[misc]


def test_environment_overrides_nested_keys_with_types_and_any_case():
    env = {
        "ALERTD_CHANNELS__SMS__BASE_URL": "http://127.0.0.1:9999",
        "ALERTD_STORE__URL": "postgresql://alertd@127.0.0.1/alertd",
        "ALERTD_DISPATCHER__BATCH_SIZE": "1000",
        "ALERTD_DISPATCHER__BACKOFF_BASE": "0.5",
        "ALERTD_Systemd__Watchdog": "off",
        "ALERTD_CHANNELS__SMS__MAX_CONCURRENCY": "7",
        "ALERTD_CHANNELS__SMS__STATUS_CALLBACK": "false",
        "ALERTD_CONFIG": "/not/an/override",
    }
    cfg = config.load(EXAMPLE, env=env)
    assert cfg.channels["sms"].settings.base_url == "http://127.0.0.1:9999"
    assert cfg.store.url == "postgresql://alertd@127.0.0.1/alertd"
    assert cfg.dispatcher.batch_size == 1000 and type(cfg.dispatcher.batch_size) is int
    assert cfg.dispatcher.backoff_base == 0.5
    assert cfg.systemd.watchdog is False
    assert cfg.channels["sms"].settings.max_concurrency == 7
    assert cfg.channels["sms"].settings.status_callback is False


def test_a_channel_can_be_added_from_the_environment():
    env = {
        "ALERTD_CHANNELS__SIREN__PLUGIN": "siren-http",
        "ALERTD_CHANNELS__SIREN__BASE_URL": "http://127.0.0.1:1",
        "ALERTD_CHANNELS__SIREN__TOKEN": "t",
    }
    cfg = config.load(None, env=env)
    assert cfg.channels["siren"].plugin == "siren-http"
    siren = cfg.channels["siren"].settings
    assert (siren.base_url, siren.token.get_secret_value()) == ("http://127.0.0.1:1", "t")
    assert dict(cfg.channels["siren"].table) == {"base_url": "http://127.0.0.1:1", "token": "t"}


def test_an_override_that_does_not_fit_the_type_is_a_problem():
    problems = config.check(None, env={"ALERTD_DISPATCHER__MAX_ATTEMPTS": "many", "ALERTD_LOG__LEVELL": "x"})
    assert problems == [
        "dispatcher.max_attempts: expected an integer, got 'many' (from $ALERTD_DISPATCHER__MAX_ATTEMPTS)",
        "log.levell: unknown key; did you mean `level`? (from $ALERTD_LOG__LEVELL)",
    ]


def test_secret_from_a_file(tmp_path):
    (tmp_path / "token").write_text("s3cr3t-from-file\n")
    path = write(tmp_path, TWILIO + f'auth_token_file = "{tmp_path / "token"}"\n' + PUSH.format("/etc/sa.json"))
    cfg = config.load(path, env={})
    assert cfg.channels["sms"].settings.auth_token.get_secret_value() == "s3cr3t-from-file"
    assert "auth_token_file" not in cfg.channels["sms"].table
    # Not a secret: a path the plugin opens itself.
    assert cfg.channels["push"].settings.service_account_file == "/etc/sa.json"


def test_secret_from_a_systemd_credential(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio-auth-token").write_text("s3cr3t-credential\n")
    path = write(tmp_path, TWILIO + 'auth_token = "credential:twilio-auth-token"\n' + PUSH.format("credential:sa.json"))
    cfg = config.load(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.channels["sms"].settings.auth_token.get_secret_value() == "s3cr3t-credential"
    assert cfg.channels["push"].settings.service_account_file == str(creds / "sa.json")
    assert config.check(path, env={}) == [
        "channels.sms.auth_token: credential 'twilio-auth-token': $CREDENTIALS_DIRECTORY is not set "
        "(LoadCredential= in the unit?)",
        "channels.push.service_account_file: credential 'sa.json': $CREDENTIALS_DIRECTORY is not set "
        "(LoadCredential= in the unit?)",
    ]


BROKEN = """
[server]
listen = "localhost"
public_url = "ftp://example.org"
colour = "blue"

[store]
url = "mysql://root:hunter2@db/alertd"

[dispatcher]
batch_size = "lots"
lease_seconds = -1

[log]
level = "chatty"

[channels.sms]
plugin = "twilio"
auth_token_file = "/nonexistent/twilio-token"

[channels.push]
plugin = "fcm"

[channels.siren]
base_url = "http://127.0.0.1:8900/siren"

[channels.pager]
plugin = "carrier-pigeon"

[metrics]
enabled = true
"""


def test_check_reports_every_problem_at_once(tmp_path):
    path = write(tmp_path, BROKEN)
    problems = config.check(path, env={})
    expected = [
        "server.listen: expected host:port",
        "server.public_url: expected an http:// or https:// URL",
        "server.colour: unknown key",
        "store.url: unsupported store URL scheme 'mysql'",
        "dispatcher.batch_size: expected an integer, got 'lots'",
        "dispatcher.lease_seconds: must be positive",
        "log.level: expected one of debug, info, warning, error, critical",
        "channels.sms.auth_token_file: cannot read secret file '/nonexistent/twilio-token'",
        "channels.sms.account_sid: required",
        "channels.push.project_id: required",
        "channels.siren.plugin: required",
        "channels.pager.plugin: unknown plugin 'carrier-pigeon'",
        "metrics: unknown section",
    ]
    for start in expected:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)
    assert len(problems) == len(expected)
    assert not any("hunter2" in p for p in problems)
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path, env={})
    assert caught.value.problems == problems


def test_an_unreadable_or_malformed_file_is_one_problem(tmp_path):
    assert config.check(tmp_path / "missing.toml", env={}) == [
        f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"
    ]
    problems = config.check(write(tmp_path, "[server\n"), env={})
    assert len(problems) == 1 and "not valid TOML" in problems[0]


def test_redacted_and_repr_hide_secrets(tmp_path):
    env = {"ALERTD_STORE__URL": "postgresql://alertd:pg-s3cr3t@127.0.0.1/alertd",
           "ALERTD_CHANNELS__SMS__AUTH_TOKEN": "tw-s3cr3t"}
    cfg = config.load(EXAMPLE, env=env)
    shown = cfg.redacted()
    assert shown["channels"]["sms"]["auth_token"] == "***"
    assert shown["channels"]["siren"]["token"] == "***"
    assert shown["channels"]["sms"]["account_sid"].startswith("ACfake")
    assert shown["store"]["url"] == "postgresql://alertd:***@127.0.0.1/alertd"
    for text in (str(shown), repr(cfg)):
        assert "s3cr3t" not in text
    assert cfg.channels["sms"].settings.auth_token.get_secret_value() == "tw-s3cr3t"


def test_a_siren_channel_may_not_send_from_other_processes(tmp_path):
    # Its acknowledgements and heartbeats are checked against the daemon's own client.
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", demo.free_port(), siren="processes = 1")
    problems = config.check(str(path), env={})
    assert [p for p in problems if p.startswith("channels.siren.processes: siren-http sends from the daemon")], problems


# -- templates ---------------------------------------------------------------------------------------


def test_the_default_templates_are_the_ones_shipped_inside_the_package():
    shipped = pathlib.Path(config.load(None, env={}).render.templates)
    assert shipped == pathlib.Path(config.__file__).resolve().parent / "templates"
    assert {"fr", "en", "es", "ar"} <= {p.name for p in shipped.iterdir() if p.is_dir()}
    assert config.check(None, env={}) == []


def test_a_templates_folder_that_is_missing_or_holds_no_templates_is_a_problem(tmp_path):
    empty = tmp_path / "empty"
    (empty / "fr").mkdir(parents=True)
    (empty / "fr" / "notes.txt").write_text("not a template")
    assert config.check(None, env={"ALERTD_RENDER__TEMPLATES": str(empty)}) == [
        f"render.templates: {empty} holds no templates (<locale>/<name>.<sms|push|siren|cell_broadcast>.j2)"
    ]
    missing = tmp_path / "missing"
    assert config.check(None, env={"ALERTD_RENDER__TEMPLATES": str(missing)}) == [
        f"render.templates: no such directory: {str(missing)!r}"
    ]


def test_a_default_locale_without_templates_is_a_problem():
    problems = config.check(None, env={"ALERTD_RENDER__DEFAULT_LOCALE": "de"})
    assert problems == [f"render.default_locale: no templates for 'de' in {config.default_templates()}"
                        " (locales there: ar, en, es, fr)"]


def test_the_server_bounds_what_idle_and_slow_clients_hold(tmp_path):
    defaults = config.load(None, env={}).server
    assert (defaults.keepalive_timeout, defaults.header_timeout, defaults.body_timeout) == (15.0, 10.0, 60.0)
    assert (defaults.max_connections, defaults.max_streams_per_token) == (1000, 20)
    example = config.load(EXAMPLE, env={}).server
    assert example == dataclasses.replace(defaults, listen=example.listen, public_url=example.public_url)
    path = write(tmp_path, "[server]\nheader_timeout = 2.5\nmax_connections = 300\n")
    cfg = config.load(path, env={"ALERTD_SERVER__MAX_STREAMS_PER_TOKEN": "5"})
    assert (cfg.server.header_timeout, cfg.server.max_connections, cfg.server.max_streams_per_token) == (2.5, 300, 5)
    bad = write(tmp_path, '[server]\nbody_timeout = 0\nmax_connections = "many"\nkeepalive_timeout = -1\n')
    assert sorted(p.split(":")[0] for p in config.check(bad, env={})) == [
        "server.body_timeout", "server.keepalive_timeout", "server.max_connections",
    ]
