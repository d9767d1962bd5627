"""End-to-end helpers: an isolated Evergreen environment for subprocesses and servers."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.home import prepare_home
from tests.conftest import ROOT, write_small_dataset

BIN = Path(sys.executable).parent


@dataclass
class Env:
    home: Path
    data_dir: Path
    vars: dict

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=ROOT, env=self.vars, capture_output=True, text=True, timeout=timeout)


def make_env(tmp: Path, dataset: Path | None = None) -> Env:
    """A fresh DAGSTER_HOME (the embedded instance config), data directory and dataset."""
    home, data_dir = prepare_home(tmp / "dagster_home"), tmp / "data"
    env = dict(os.environ, DAGSTER_HOME=str(home), EVERGREEN_DATA_DIR=str(data_dir),
               EVERGREEN_DATASET=str(dataset or write_small_dataset(tmp)), DAGSTER_DISABLE_TELEMETRY="1")
    return Env(home, data_dir, env)


def start(env: Env, *args: str, log: str) -> subprocess.Popen:
    """A server in its own process group, so stopping it stops its children (code servers, runs)."""
    return subprocess.Popen(args, cwd=ROOT, env=env.vars, stdout=open(env.home / log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
