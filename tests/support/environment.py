"""End-to-end helpers: an isolated Evergreen environment for subprocesses and servers."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

import definitions
from assets.jobs import MAIN_SELECTION
from assets.partitions import DAILY
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


def files_holding(root: Path, needles: set[str], skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Each file below ``root`` (but under the ``skip`` folders) that holds any of ``needles``, with
    the ones it holds. Parquet and zip members are searched decoded: compressed, an id would not
    show as bytes. Everything else (SQLite event logs, compute logs, JSON, ONNX) is searched raw."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        held = {n for n in needles if n in _searchable_text(path)}
        if held:
            found[str(path.relative_to(root))] = sorted(held)[:3]
    return found


def _searchable_text(path: Path) -> str:
    import zipfile

    import polars as pl

    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return "\n".join(map(str, frame.select(pl.col(pl.String)).unique().rows())) + " ".join(frame.columns)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return "\n".join(archive.read(n).decode("latin-1") for n in archive.namelist())
    return path.read_bytes().decode("latin-1")


NEWEST_DAYS = DAILY.get_partition_keys()[-2:]
"""Two days: the second's ``features`` read the first's clean rows, so a backfill of them crosses a
time-window dependency; a third only added a round of runs behind the instance's two run slots."""
DAILY_ASSETS = sorted(k.to_user_string() for k in MAIN_SELECTION.resolve(definitions.defs.resolve_asset_graph()))
"""Every asset but a federated round's (partitioned by day and site; tests/assets/test_assets.py runs a round)."""


def materialized(home: Path, asset: str) -> set[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


def why_runs_failed(home: Path, tags: dict[str, str] | None = None) -> str:
    """Each failed run's errors (a step's, the run worker's, a failed launch's) and the daemon's
    warnings, so an assertion on a run's or a backfill's status says why when it fails, in CI's log
    and not only on the machine it ran on."""
    lines = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags=tags or {})):
            lines.append(f"run {run.run_id} ({run.job_name}, {run.tags.get('dagster/partition', '')}) failed:")
            for record in instance.all_logs(run.run_id):
                error = getattr(getattr(record.dagster_event, "event_specific_data", None), "error", None)
                if error is not None or (record.dagster_event and record.dagster_event.is_run_failure):
                    lines.append(f"  {record.step_key or 'run'}: {record.message} {error.to_string() if error else ''}")
    daemon_log = home / "daemon.log"
    if daemon_log.exists():
        lines += [line for line in daemon_log.read_text(errors="replace").splitlines() if "WARNING" in line or "ERROR" in line]
    return "\n".join(lines) or "no failed run and no daemon warning recorded"


def single_day_env(tmp_path: Path, federated: bool = True):
    """One day alone has only same-day label returns: the default fleet gives enough of them to run
    the graph, not for a model the quality gate would release (macro-F1 0.47 on 48 test rows):
    the floor is lowered here, where the subject is the graph. ``federated=False`` keeps the
    federated sensor from launching its rounds (up to 8 rounds of a run per site) where a running
    daemon would queue them ahead of the runs a test waits for."""
    dataset = write_small_dataset(tmp_path, devices_per_site=40, deployment={"gates": {"min_macro_f1": 0.3}})
    if not federated:
        raw = yaml.safe_load(dataset.read_text())
        raw["training"].setdefault("federated", {})["enabled"] = False
        dataset.write_text(yaml.safe_dump(raw))
    return make_env(tmp_path, dataset=dataset)
