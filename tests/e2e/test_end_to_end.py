"""End to end, as a user runs it: the CLI through the multiprocess executor, ``make run``'s launcher
on a bring-your-own-data landing folder, and the UI's own GraphQL calls against a running
webserver and daemon."""

import datetime as dt
import json
import time
import zipfile
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import requests

import definitions
from assets.jobs import MAIN_SELECTION
from assets.partitions import DAILY
from deploy.broker import free_port
from pipeline.dataset import DEVICE_ID, load_dataset_config
from pipeline.simulator import simulate_day
from tests.conftest import BYOD_YAML, write_small_dataset
from tests.support import ui_client
from tests.support.environment import BIN, files_holding, make_env, start, stop

pytestmark = pytest.mark.slow
NEWEST_DAYS = DAILY.get_partition_keys()[-3:]
DAILY_ASSETS = sorted(k.to_user_string() for k in MAIN_SELECTION.resolve(definitions.defs.resolve_asset_graph()))
"""Every asset but a federated round's (partitioned by day and site; tests/test_assets.py runs a round)."""


def _materialized(home: Path, asset: str) -> set[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


def _single_day_env(tmp_path: Path):
    """One day alone has only same-day label returns: the default fleet gives enough of them to run
    the graph, not for a model the quality gate would release (macro-F1 0.47 on 48 test rows):
    the floor is lowered here, where the subject is the graph."""
    return make_env(tmp_path, dataset=write_small_dataset(tmp_path, devices_per_site=40,
                                                          deployment={"gates": {"min_macro_f1": 0.3}}))


def test_the_cli_runs_the_whole_graph_through_the_multiprocess_executor(tmp_path: Path):
    env = _single_day_env(tmp_path)
    day = "2026-10-20"
    done = env.run(str(BIN / "dagster"), "asset", "materialize", "-m", "definitions", "--select", ",".join(DAILY_ASSETS), "--partition", day)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "multiprocess executor" in done.stderr + done.stdout
    for asset in DAILY_ASSETS:
        assert _materialized(env.home, asset) == {day}, asset
    [package] = (env.data_dir / "packages").glob("*.zip")
    assert json.loads(zipfile.ZipFile(package).read("manifest.json"))["dataset"] == "broadband_cpe"
    raw_ids = set(simulate_day(load_dataset_config(env.vars["EVERGREEN_DATASET"]).simulator, dt.date.fromisoformat(day))[DEVICE_ID])
    assert files_holding(env.data_dir / "assets" / "raw_telemetry", raw_ids)  # the search finds ids where they are kept
    assert files_holding(env.data_dir, raw_ids, skip=("raw_telemetry",)) == {}  # and nowhere else
    assert files_holding(env.home, raw_ids) == {}  # the event log and every step's captured output
    assert not any(i in done.stdout + done.stderr for i in raw_ids)


def test_a_landing_folder_with_other_column_names_runs_through_the_same_graph(tmp_path: Path):
    env = make_env(tmp_path, dataset=BYOD_YAML)
    done = env.run(str(BIN / "python"), "-m", "deploy.run_main", "--days", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[3/3] main_job 2026-06-03: ok" in done.stdout
    for asset in DAILY_ASSETS:
        assert "2026-06-03" in _materialized(env.home, asset), asset
    assets = env.data_dir / "assets"
    raw, clean, quarantine = (pl.read_parquet(assets / name / "2026-06-02.parquet") for name in ("raw_telemetry", "clean_telemetry", "quarantine"))
    assert "RxPower" in raw.columns and "rx_power_dbm" in clean.columns
    reasons = set(quarantine["reason"])
    assert "temperature_c: not a number '41,5'" in reasons
    assert "timestamp: 2026-06-01 23:59:00 is outside partition 2026-06-02: it is 2026-06-01 23:59:00 in UTC" in reasons
    assert all(Path(f).name == "isp_export_2026-06-02.csv" for f in quarantine["_source_file"])
    [package] = (env.data_dir / "packages").glob("*.zip")
    assert json.loads(zipfile.ZipFile(package).read("manifest.json"))["dataset"] == "isp_export"


def _wait_for_location(url: str, server: "subprocess.Popen", timeout: float = 180) -> str:  # noqa: F821
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "webserver exited"
        try:
            return ui_client.find_location_name(url)
        except (requests.ConnectionError, RuntimeError):
            time.sleep(0.5)
    raise TimeoutError(f"{url}: code location not loaded after {timeout}s")


def test_materialize_and_backfill_through_a_running_ui_server(tmp_path: Path):
    env = _single_day_env(tmp_path)
    dg.DagsterInstance.from_config(str(env.home)).dispose()  # create storage before two processes race to
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web = start(env, str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml", log="webserver.log")
    daemon = start(env, str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml", log="daemon.log")
    try:
        location = _wait_for_location(url, web)
        keys = [[a] for a in DAILY_ASSETS]
        run_id = ui_client.launch_materialization(url, location, keys, "2026-10-20")
        # the newest days: a backfill also targets the days downstream of its range along the
        # time-window mappings, and after the newest partition there are none
        backfill_id = ui_client.launch_backfill(url, keys, NEWEST_DAYS)
        assert ui_client.wait_run(url, run_id, timeout=600) == "SUCCESS"
        assert ui_client.wait_backfill(url, backfill_id, timeout=900) == "COMPLETED_SUCCESS"
    finally:
        stop(daemon)
        stop(web)
    for asset in DAILY_ASSETS:
        assert _materialized(env.home, asset) == {*NEWEST_DAYS, "2026-10-20"}, asset
    with dg.DagsterInstance.from_config(str(env.home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.tags["dagster/from_ui"] == "true" and run.tags["dagster/partition"] == "2026-10-20"
        backfill_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert {r.tags["dagster/partition"] for r in backfill_runs} == set(NEWEST_DAYS)
