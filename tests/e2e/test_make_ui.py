"""``make ui`` stops whole: a stop signal, sent as a service manager, a terminal or a script sends it,
ends ``dagster dev`` and every process it started (webserver, daemon, code servers).

``make ui`` runs with this interpreter's venv (``VENV=``); ``-o`` tells make that the venv is
installed, so the test never reinstalls it (in CI ``make test`` has just created it)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from deploy import ui
from deploy.broker import free_port
from tests.conftest import ROOT
from tests.support.environment import make_env

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent
STOPPED_WITHIN = ui.GRACE_SECONDS + 45
"""Seconds: deploy.ui's grace period before it kills what is left, and slack for a machine whose other
test worker is busy (alone it stops in 2-3 s; beside the UI-server test once took over 45 s)."""


def _make_ui(port: int) -> list[str]:
    return ["make", "-o", f"{VENV}/.installed", "ui", f"VENV={VENV}", f"UI_PORT={port}"]


def _launcher(port: int) -> list[str]:
    return [sys.executable, "-m", "deploy.ui", "--port", str(port)]


def _live_processes(session: int) -> list[str]:
    """The processes of ``session`` that still run (a zombie has ended; reaping it is its reaper's job)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        state, _ppid, _pgrp, sid = text[text.rindex(")") + 2:].split()[:4]
        if int(sid) == session and state != "Z":
            found.append(text[: text.rindex(")") + 1])
    return found


def _wait_for_webserver(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "make ui exited before its webserver answered"
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}: no answer after {timeout}s")


@pytest.mark.parametrize(("command", "signum", "to_group"), [
    pytest.param(_make_ui, signal.SIGTERM, False, id="make ui, SIGTERM to make, as a service manager or kill sends it"),
    pytest.param(_make_ui, signal.SIGINT, True, id="make ui, SIGINT to its process group, as a terminal's Ctrl-C sends it"),
    pytest.param(_launcher, signal.SIGINT, False, id="deploy.ui, SIGINT to it, as a script sends it"),
    pytest.param(_launcher, signal.SIGTERM, False, id="deploy.ui, SIGTERM to it"),
])
def test_the_ui_stops_whole_on_a_stop_signal(tmp_path: Path, command, signum: int, to_group: bool):
    env = make_env(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "ui.log", "wb") as log:
        server = subprocess.Popen(command(port), cwd=ROOT, env=env.vars, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    session = server.pid
    try:
        _wait_for_webserver(url, server)
        assert len(_live_processes(session)) >= 3, _live_processes(session)  # dagster dev's children are in the session
        (os.killpg if to_group else os.kill)(server.pid, signum)
        started = time.monotonic()
        server.wait(STOPPED_WITHIN)
        deadline = started + STOPPED_WITHIN
        while _live_processes(session) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _live_processes(session) == [], (tmp_path / "ui.log").read_text()[-3000:]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/server_info", timeout=2)
    finally:
        for pid in _live_processes(session):  # a failed test leaves no server behind
            os.kill(int(pid.split()[0]), signal.SIGKILL)
