"""The `alertd` command line: tokens, imports, config checks, send/status, and the demo."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from alertd import auth, cli, model, store as store_mod
from tests import helpers


def config_file(tmp_path) -> str:
    return str(helpers.write_config(tmp_path, "http://127.0.0.1:9", 8080))


def with_store(tmp_path, work):
    """Run `work(store)` on the test's SQLite store, from a synchronous test."""

    async def run():
        db = store_mod.open_store(f"sqlite:///{tmp_path / 'alertd.db'}")
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def test_token_create_prints_the_token_once_and_stores_only_its_hash(tmp_path, capsys):
    assert cli.main(["token", "create", "--config", config_file(tmp_path), "--cell", "Mairie de Lyon",
                     "--role", "issuer", "--zones", "69123"]) == 0
    plaintext = capsys.readouterr().out.strip()
    token_id, secret_hash = auth.parse_bearer(f"Bearer {plaintext}")
    token = with_store(tmp_path, lambda db: db.token_by_hash(secret_hash))
    assert token.cell == "Mairie de Lyon" and token.zones == ("69123",) and token.role is model.Role.ISSUER
    assert plaintext.split("_")[-1] not in token.secret_hash
    assert plaintext not in (tmp_path / "alertd.db").read_bytes().decode("latin1")


def test_token_create_refuses_bad_zones(tmp_path, capsys):
    assert cli.main(["token", "create", "--config", config_file(tmp_path), "--cell", "X",
                     "--role", "issuer", "--zones", "Lyon"]) == 1
    assert "zones" in capsys.readouterr().err


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
        [sys.executable, "-m", "alertd.cli", "demo", "--once", "--subscribers", "300"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "settled in" in out.stdout and "'sent'" in out.stdout
    assert "Traceback" not in out.stderr


def test_token_create_with_a_drawn_boundary(tmp_path, capsys):
    geojson = tmp_path / "paris.geojson"  # GeoJSON: longitude first
    geojson.write_text('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                       '[[[2.22, 48.80], [2.47, 48.80], [2.47, 48.92], [2.22, 48.92], [2.22, 48.80]]]}}')
    assert cli.main(["token", "create", "--config", config_file(tmp_path), "--cell", "Préfecture de police",
                     "--role", "issuer", "--zones", "75", "--boundary", str(geojson)]) == 0
    _, secret_hash = auth.parse_bearer(f"Bearer {capsys.readouterr().out.strip()}")
    token = with_store(tmp_path, lambda db: db.token_by_hash(secret_hash))
    assert token.boundary == (((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22)),)


async def test_send_takes_a_cap_document(daemon, tmp_path, capsys):
    from tests import test_cap_api

    path = tmp_path / "alert.xml"
    path.write_bytes(test_cap_api.document())
    token = daemon.headers["issuer"]["Authorization"].split()[1]
    url = f"http://127.0.0.1:{daemon.client.port}"
    assert await asyncio.to_thread(cli.main, ["send", "--url", url, "--token", token, str(path)]) == 0
    answer = capsys.readouterr().out
    assert '"identifier": "FR-75-0001"' in answer
