"""alertd as a user installs it: a wheel in a fresh virtual environment, far from the source tree."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv

import pytest

from alertd import demo

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a wheel is built from; a copy, so that builds running side by side never share build/ folders.
SOURCES = ("pyproject.toml", "README.md", "alertd")


def build_wheel(into: pathlib.Path) -> pathlib.Path:
    tree = into / "src"
    tree.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, tree / name)
    # No build isolation: the setuptools already installed builds it, with no download.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(into / "dist"), str(tree)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = (into / "dist").glob("alertd-*.whl")
    return wheel


def fresh_venv(path: pathlib.Path) -> pathlib.Path:
    """A virtualenv that sees the dependencies already installed, but not the editable alertd: a
    path line in a .pth adds that folder without running the .pth files inside it (the editable
    finder is one of them)."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (pathlib.Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """The fresh virtualenv's bin folder, with the wheel of this tree installed in it."""
    tmp = tmp_path_factory.mktemp("install")
    wheel = build_wheel(tmp)
    python = fresh_venv(tmp / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
    return python.parent


def run(bin_dir: pathlib.Path, *argv: str, cwd: pathlib.Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_the_installed_alertd_is_the_wheel_not_the_source_tree(installed, tmp_path):
    # alertd is a namespace package (no __init__.py): every folder it spans, and its modules.
    code = "import alertd, alertd.cli; print(*alertd.__path__, alertd.cli.__file__, sep='\\n')"
    out = run(installed, "python", "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(pathlib.Path(p).is_relative_to(installed.parent) for p in out.stdout.split()), out.stdout


def test_the_demo_runs_from_a_wheel_in_another_folder(installed, tmp_path):
    out = run(installed, "alertd", "demo", "--once", "--subscribers", "200", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    settled = out.stdout.split("settled in", 1)[1].splitlines()[0]
    totals = ast.literal_eval(settled.split(": ", 1)[1].strip())
    assert {state: n for state, n in totals.items() if n and state not in demo.SETTLED} == {}, totals
    assert totals["sent"] + totals["delivered"] > 0 and totals["failed"] == 0, totals
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # the demo works in a folder of its own


def test_the_installed_example_configuration_and_templates_check_ok(installed, tmp_path):
    shown = run(installed, "alertd", "example-config", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (ROOT / "config" / "alertd.toml").read_text(encoding="utf-8")
    (tmp_path / "alertd.toml").write_text(shown.stdout, encoding="utf-8")
    out = run(installed, "alertd", "check-config", "alertd.toml", cwd=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (0, "alertd.toml: ok"), out.stdout + out.stderr


def listening(url: str, proc: subprocess.Popen, timeout: float = 30) -> bool:
    """Whether the daemon `proc` answers at `url` before it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            time.sleep(0.05)  # waiting for another process to listen
    return False


def test_the_installed_daemon_serves_the_example_configuration(installed, tmp_path):
    port = demo.free_port()
    url = f"http://127.0.0.1:{port}"
    shown = run(installed, "alertd", "example-config", cwd=tmp_path).stdout
    (tmp_path / "alertd.toml").write_text(shown, encoding="utf-8")
    env = os.environ | {"ALERTD_CONFIG": "alertd.toml", "ALERTD_SERVER__LISTEN": f"127.0.0.1:{port}",
                        "ALERTD_SERVER__PUBLIC_URL": url, "ALERTD_LOG__LEVEL": "warning"}
    def alertd(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(installed / "alertd"), *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    # The README's first steps: a cell, a user of it, and that user's token.
    cell = ("cell", "add", "pref-69", "--name", "Préfecture du Rhône", "--zones", "69")
    before = alertd(*cell)
    assert before.returncode == 1 and "no alertd store" in before.stderr  # nothing made it yet
    daemon = subprocess.Popen([str(installed / "alertd"), "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listening(url, daemon), daemon.communicate(timeout=10)
        for step in (cell, ("user", "add", "alice", "--cell", "pref-69", "--role", "issuer")):
            done = alertd(*step)
            assert done.returncode == 0, done.stderr
        token = alertd("token", "create", "--user", "alice")
        assert token.returncode == 0 and token.stdout.startswith("alertd_"), token.stderr
        bearer = {"Authorization": f"Bearer {token.stdout.strip()}"}
        request = urllib.request.Request(url + "/v1/alerts", headers=bearer)
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
    finally:
        daemon.terminate()
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err[-2000:]
    assert "Traceback" not in err
