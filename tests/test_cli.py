"""The `alertd` command line: imports, config checks, send/status, and the demo (cells, users and
tokens: test_cli_people)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import pathlib
import re
import subprocess
import sys

import pytest

from alertd import cli, cli_base, model, orders, store as store_mod
from tests import helpers


def config_file(tmp_path, store: str | None = None) -> str:
    """A configuration whose store exists, as `alertd serve` leaves it."""
    path = str(helpers.write_config(tmp_path, "http://127.0.0.1:9", 8080, store=store))
    with_store(tmp_path, lambda db: asyncio.sleep(0), store)
    return path


def storeless_config(tmp_path, store: str | None = None) -> str:
    """A configuration whose store was never created."""
    return str(helpers.write_config(tmp_path, "http://127.0.0.1:9", 8080, store=store))


def with_store(tmp_path, work, url: str | None = None):
    """Run `work(store)` on the test's store (SQLite unless `url`), from a synchronous test."""

    async def run():
        db = store_mod.open_store(url or f"sqlite:///{tmp_path / 'alertd.db'}")
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def test_subscribers_import_keeps_good_rows_and_reports_bad_ones(tmp_path, capsys):
    csv = tmp_path / "people.csv"
    csv.write_text("id,phone,push_token,locale,zones\n"
                   "a1,06 12 34 56 78,,fr,75056\n"
                   "a2,not-a-phone,,fr,75056\n"
                   "a3,,tok-3,en,69123\n")
    assert cli.main(["subscribers", "import", "--config", config_file(tmp_path), str(csv)]) == 1
    captured = capsys.readouterr()
    assert f"{csv}:3: phone" in captured.err
    assert "imported 2 subscribers" in captured.out
    assert with_store(tmp_path, lambda db: db.get_recipient("a1")).phone == "+33612345678"
    assert with_store(tmp_path, lambda db: db.count_recipients()) == 2


def test_check_config_reports_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n[store]\nurl = "mysql://x"\n[channels.sms]\nplugin = "pigeon"\n')
    assert cli.main(["check-config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "server.listen" in out and "store.url" in out and "channels.sms" in out


def test_the_example_configuration_is_valid(capsys):
    assert cli.main(["check-config", "config/alertd.toml"]) == 0


def test_status_formats_counts_per_channel():
    alert = {"id": "a1", "event": "Crue", "status": "actual", "state": "active", "expires": None,
             "area": {"zones": ["75056"]}, "counts": {"sms": {"sent": 3, "pending": 1}}}
    text = cli.format_status(alert)
    assert "sms" in text and "3" in text and "pending" in text


def test_the_demo_runs_the_whole_path_once():
    out = subprocess.run(
        [sys.executable, "-m", "alertd.cli", "demo", "--once", "--subscribers", "1000"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "settled in" in out.stdout and "'sent'" in out.stdout
    assert "Traceback" not in out.stderr
    assert "status callback(s) lost" not in out.stderr  # the daemon heard every one before it stopped


async def test_send_takes_a_cap_document(daemon, tmp_path, capsys):
    from tests import test_cap_api

    path = tmp_path / "alert.xml"
    path.write_bytes(test_cap_api.document())
    token = daemon.headers["issuer"]["Authorization"].split()[1]
    url = f"http://127.0.0.1:{daemon.client.port}"
    assert await asyncio.to_thread(cli.main, ["send", "--url", url, "--token", token, str(path)]) == 0
    answer = capsys.readouterr().out
    assert '"identifier": "FR-75-0001"' in answer


# -- commands that need the daemon's store refuse when there is none -------------------------------

CELL = ["cell", "add", "lyon", "--name", "Mairie de Lyon", "--zones", "69123"]


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ")
    return line


def test_cell_add_without_a_configuration_creates_no_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALERTD_CONFIG", raising=False)
    assert cli.main(CELL) == 1
    line = one_line_error(capsys)
    assert f"no alertd store at {tmp_path / 'alertd.db'}" in line and "--config" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    CELL, ["user", "list"], ["token", "create", "--user", "x"], ["token", "revoke", "x"], ["audit"],
    ["audit", "--verify"], ["subscribers", "import", "people.csv"], ["sirens", "import", "s.csv"],
])
def test_commands_on_a_store_that_was_never_created_refuse_and_create_nothing(tmp_path, capsys, argv):
    (tmp_path / "people.csv").write_text("id,phone,push_token,locale,zones\na1,0612345678,,fr,75056\n")
    (tmp_path / "s.csv").write_text("id,zone,label\ns1,75056,Paris 1\n")
    argv = [*argv[:2], "--config", storeless_config(tmp_path), *argv[2:]]
    argv = [str(tmp_path / a) if a.endswith(".csv") else a for a in argv]
    assert cli.main(argv) == 1
    assert f"no alertd store at {tmp_path / 'alertd.db'}" in one_line_error(capsys)
    assert not (tmp_path / "alertd.db").exists()


def test_a_configuration_file_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert cli.main([*CELL, "--config", str(tmp_path / "nowhere.toml")]) == 1
    assert "nowhere.toml: cannot read" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_database_without_the_alertd_schema_is_not_a_store(pg_schema_url, tmp_path, capsys):
    assert cli.main([*CELL, "--config", storeless_config(tmp_path, pg_schema_url)]) == 1
    assert "no alertd store at postgresql://" in one_line_error(capsys)
    assert cli.main([*CELL, "--config", config_file(tmp_path, pg_schema_url)]) == 0  # once serve made it


def test_verifying_an_empty_audit_log_says_it_is_empty(tmp_path, capsys):
    assert cli.main(["audit", "--verify", "--config", config_file(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "holds" not in captured.out + captured.err
    assert "the audit log is empty" in captured.err


@pytest.mark.parametrize("content, says", [
    (None, "cannot read"),
    (b"\xff\xfe not text", "not JSON"),
    (b"{\"type\": ", "not JSON"),
    (b"[1, 2]", "not a GeoJSON object"),
    (b'{"type": "Point", "coordinates": [2.3, 48.8]}', "not a GeoJSON Polygon or MultiPolygon"),
    (b'{"type": ["Polygon"], "coordinates": []}', "not a GeoJSON Polygon or MultiPolygon"),  # was a traceback
])
def test_a_bad_boundary_file_is_a_one_line_error(tmp_path, capsys, content, says):
    boundary = tmp_path / "rhone.geojson"
    if content is not None:
        boundary.write_bytes(content)
    cfg = config_file(tmp_path)
    assert cli.main([*CELL, "--config", cfg, "--boundary", str(boundary)]) == 1
    assert says in one_line_error(capsys)
    assert with_store(tmp_path, lambda db: db.audit(10)) == []  # no cell was made


def test_a_missing_csv_file_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["subscribers", "import", "--config", config_file(tmp_path), str(tmp_path / "none.csv")]) == 1
    assert "none.csv: cannot read" in one_line_error(capsys)


# -- the README's example order, and --expires-in ----------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_order() -> bytes:
    """The JSON order the README shows, as written there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"```json\n(.*?)```", readme, re.S)[1].encode()


def test_the_readme_order_is_the_shipped_example_and_is_valid_today():
    assert json.loads(readme_order()) == json.loads((ROOT / "config" / "order.json").read_bytes())
    orders.parse(readme_order(), model.utcnow())  # raises when refused
    later = cli.with_expiry(readme_order(), dt.timedelta(hours=2), model.utcnow())
    order = orders.parse(later, model.utcnow())
    assert dt.timedelta(hours=1, minutes=59) < order.expires - model.utcnow() <= dt.timedelta(hours=2)


@pytest.mark.parametrize("text, delta", [
    ("2h", dt.timedelta(hours=2)), ("90m", dt.timedelta(minutes=90)), ("1h30m", dt.timedelta(minutes=90)),
    ("1d", dt.timedelta(days=1)), ("45s", dt.timedelta(seconds=45)),
])
def test_durations(text, delta):
    assert cli_base.duration(text) == delta


@pytest.mark.parametrize("text", ["", "2", "h", "-2h", "0m", "2 hours", "1.5h", "2h1d"])
def test_a_bad_duration_is_a_usage_error_naming_the_option(text, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["send", "--token", "x", "--expires-in", text, "order.json"])
    assert exit.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--expires-in" in err and "Traceback" not in err


async def test_send_expires_in_sets_the_expiry_of_a_json_order(daemon, tmp_path, capsys):
    order = json.loads(readme_order()) | {"expires": "2020-01-01T00:00:00+01:00"}  # overridden
    path = tmp_path / "order.json"
    path.write_text(json.dumps(order), encoding="utf-8")
    token = daemon.headers["admin"]["Authorization"].split()[1]
    url = f"http://127.0.0.1:{daemon.client.port}"
    before = model.utcnow().replace(microsecond=0)  # the order gives whole seconds
    argv = ["send", "--url", url, "--token", token, "--expires-in", "2h", str(path)]
    assert await asyncio.to_thread(cli.main, argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out  # the daemon, in this process, logs there too
    accepted = json.loads(re.search(r"^\{$.*?^\}$", out, re.S | re.M)[0])
    expires = dt.datetime.fromisoformat((await daemon.status(accepted["id"]))["expires"])
    assert before + dt.timedelta(hours=2) <= expires <= model.utcnow() + dt.timedelta(hours=2)


def test_expires_in_refuses_a_cap_document_and_a_file_that_is_not_a_json_object(tmp_path, capsys):
    from tests import test_cap_api

    (tmp_path / "alert.xml").write_bytes(test_cap_api.document())
    (tmp_path / "list.json").write_text("[1]")
    for name, says in (("alert.xml", "CAP document"), ("list.json", "not a JSON object")):
        argv = ["send", "--url", "http://127.0.0.1:9", "--token", "t", "--expires-in", "2h", str(tmp_path / name)]
        assert cli.main(argv) == 1
        assert says in one_line_error(capsys)


def test_every_environment_variable_the_tests_read_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    read = re.compile(r"""(?:os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = {name for path in (ROOT / "tests").glob("*.py") for name in read.findall(path.read_text(encoding="utf-8"))}
    assert "ALERTD_TEST_PG" in names
    assert {name for name in names if f"`{name}`" not in readme} == set()


def test_a_daemon_that_does_not_answer_is_a_one_line_error(tmp_path, capsys):
    from alertd import demo

    path = tmp_path / "order.json"
    path.write_bytes(readme_order())
    url = f"http://127.0.0.1:{demo.free_port()}"  # nobody listens there
    for argv in (["send", str(path)], ["status", "some-alert"]):
        assert cli.main([*argv, "--url", url, "--token", "t"]) == 1
        assert f"cannot reach {url}" in one_line_error(capsys)


def test_showing_an_empty_audit_log_says_it_is_empty(tmp_path, capsys):
    assert cli.main(["audit", "--config", config_file(tmp_path)]) == 0
    assert capsys.readouterr().err.strip() == "the audit log is empty"
    assert cli.main(["audit", "--config", config_file(tmp_path), "--cell", "nobody"]) == 0
    assert capsys.readouterr().err.strip() == "no audit entry matches"
