"""``make ui``: ``dagster dev`` on the project's instance, stopped whole by SIGTERM or SIGINT.

    python -m deploy.ui [--host 127.0.0.1] [--port 3000]

``dagster dev`` starts a webserver and a daemon, which start code servers and runs. A service manager
or a script stops a command with SIGTERM to the one process it started (``make``, which passes only
SIGTERM on to its child, or this launcher); dagster dev's children never see it, and a
``dagster dev`` that is killed leaves them running. So dagster dev runs in a process group of its
own, every stop signal is passed to the whole group (as a terminal's Ctrl-C reaches every process in
the foreground group: dagster dev's own shutdown), and whatever is still in the group after
``GRACE_SECONDS``, or once dagster dev has exited, is killed.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.home import home_from_env

ROOT = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_SECONDS = 30.0
"""dagster dev's own shutdown of the webserver and the daemon usually takes a few seconds."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    home_from_env()
    dagster = Path(sys.executable).parent / "dagster"
    return run_until_stopped([str(dagster), "dev", "-h", args.host, "-p", str(args.port), "-w", str(ROOT / "workspace.yaml")])


def run_until_stopped(command: list[str], grace: float = GRACE_SECONDS) -> int:
    """Run ``command`` in a new process group until it exits; a stop signal goes to the whole group,
    which is killed ``grace`` seconds later if it has not exited by then, and once the command has
    exited no process of the group is left. Returns the command's exit code."""
    child = subprocess.Popen(command, cwd=ROOT, process_group=0)
    deadline: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        deadline[:] = deadline or [time.monotonic() + grace]
        _signal_group(child.pid, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if deadline and time.monotonic() > deadline[0]:
                _signal_group(child.pid, signal.SIGKILL)
    _signal_group(child.pid, signal.SIGKILL)  # a code server or run its parent left behind
    return code


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # the group is empty: nothing left to stop
        pass


if __name__ == "__main__":
    sys.exit(main())
