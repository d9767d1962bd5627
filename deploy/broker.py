"""A local MQTT broker for the demo, the tests and the benchmark: Mosquitto from the system packages.

The collector holds each message's acknowledgement until the micro-batch holding it has landed, so
the broker must let that many messages be in flight and queue whatever arrives while the collector
is down. Mosquitto's defaults (20 in flight, 1000 queued, then dropped) would lose messages, so this
config lifts both limits; a production broker needs the same two settings.

    python -m deploy.broker [--port 1883]     # runs on 127.0.0.1 until Ctrl-C
"""

import argparse
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """Mosquitto is not installed or did not start; the message says how to fix it."""


def mosquitto_binary() -> Path:
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if Path(p).is_file()), None)
    if found is None:
        raise BrokerError("mosquitto is not installed: `apt-get install mosquitto` (Debian/Ubuntu)")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def broker_config(port: int, host: str = "127.0.0.1", password_file: Path | None = None,
                  tls: tuple[Path, Path] | None = None) -> str:
    """Mosquitto's config: one listener on ``host`` only (TLS with ``tls`` = (certificate, key)),
    no in-flight or queue limit."""
    lines = [
        f"listener {port} {host}",
        *([f"certfile {tls[0]}", f"keyfile {tls[1]}"] if tls else []),
        f"allow_anonymous {'false' if password_file else 'true'}",
        "max_inflight_messages 0",
        "max_queued_messages 0",
        "persistence false",
    ]
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    return "\n".join(lines) + "\n"


@dataclass
class LocalBroker:
    """A running Mosquitto on 127.0.0.1; ``stop()`` (or leaving ``running()``) ends it."""

    host: str
    port: int
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(port: int | None = None, host: str = "127.0.0.1", workdir: Path | None = None,
          users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> LocalBroker:
    """Start Mosquitto and wait until it accepts connections. ``users`` turns on passwords; ``tls``
    (certificate and key files, copied into the broker's folder) turns on TLS."""
    binary, port = mosquitto_binary(), port or free_port(host)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="evergreen-mosquitto-"))
    password_file = _password_file(workdir, users) if users else None
    if tls:
        tls = tuple(Path(shutil.copy(path, workdir / f"tls-{path.name}")) for path in tls)
    config = workdir / "mosquitto.conf"
    config.write_text(broker_config(port, host, password_file, tls))
    _readable_by_broker(workdir)
    log = (workdir / "mosquitto.log").open("wb")
    process = subprocess.Popen([str(binary), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    broker = LocalBroker(host, port, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"mosquitto exited with {process.returncode}: see {workdir / 'mosquitto.log'}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return broker
        time.sleep(0.05)
    broker.stop()
    raise BrokerError(f"mosquitto did not listen on {host}:{port} within 10 s: see {workdir / 'mosquitto.log'}")


def _password_file(workdir: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file made by ``mosquitto_passwd`` (hashed, never plain text)."""
    path = workdir / "passwords"
    path.touch(mode=0o600)
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for user, password in users.items():
        subprocess.run([passwd, "-b", str(path), user, password], check=True, capture_output=True)
    return path


def _readable_by_broker(workdir: Path) -> None:
    """Started as root, Mosquitto drops to its own user: hand it the config folder (CI runs as root)."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in (workdir, *workdir.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def running(**kwargs) -> Iterator[LocalBroker]:
    broker = start(**kwargs)
    try:
        yield broker
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Mosquitto on 127.0.0.1 with the limits the collector needs.")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    with running(port=args.port) as broker:
        print(f"mosquitto on {broker.host}:{broker.port} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            broker.process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
