"""End to end, as a user runs it: the CLI through the multiprocess executor and ``make run``'s launcher
on a bring-your-own-data landing folder (the UI's own calls: ``test_ui_server.py``)."""

import datetime as dt
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset import DEVICE_ID, load_dataset_config
from pipeline.simulator import simulate_day
from tests.conftest import BYOD_YAML
from tests.support.environment import BIN, DAILY_ASSETS, files_holding, make_env, materialized, single_day_env

pytestmark = pytest.mark.slow


def test_the_cli_runs_the_whole_graph_through_the_multiprocess_executor(tmp_path: Path):
    env = single_day_env(tmp_path)
    day = "2026-10-20"
    done = env.run(str(BIN / "dagster"), "asset", "materialize", "-m", "definitions", "--select", ",".join(DAILY_ASSETS), "--partition", day)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "multiprocess executor" in done.stderr + done.stdout
    for asset in DAILY_ASSETS:
        assert materialized(env.home, asset) == {day}, asset
    [package] = (env.data_dir / "packages").glob("*.zip")
    assert json.loads(zipfile.ZipFile(package).read("manifest.json"))["dataset"] == "broadband_cpe"
    raw_ids = set(simulate_day(load_dataset_config(env.vars["EVERGREEN_DATASET"]).simulator, dt.date.fromisoformat(day))[DEVICE_ID])
    assert files_holding(env.data_dir / "assets" / "raw_telemetry", raw_ids)  # the search finds ids where they are kept
    assert files_holding(env.data_dir, raw_ids, skip=("raw_telemetry",)) == {}  # and nowhere else
    assert files_holding(env.home, raw_ids) == {}  # the event log and every step's captured output
    assert not any(i in done.stdout + done.stderr for i in raw_ids)


def test_a_landing_folder_with_other_column_names_runs_through_the_same_graph_with_a_quiet_console(tmp_path: Path):
    env = make_env(tmp_path, dataset=BYOD_YAML)
    done = env.run(str(BIN / "python"), "-m", "deploy.run_main", "--days", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[3/3] main_job 2026-06-03: ok" in done.stdout
    # a quiet console: the rows quarantined and the window days before the first are handled, not warned about
    assert [line for line in (done.stdout + done.stderr).splitlines() if "warning" in line.lower()] == []
    for asset in DAILY_ASSETS:
        assert "2026-06-03" in materialized(env.home, asset), asset
    assets = env.data_dir / "assets"
    raw, clean, quarantine = (pl.read_parquet(assets / name / "2026-06-02.parquet") for name in ("raw_telemetry", "clean_telemetry", "quarantine"))
    assert "RxPower" in raw.columns and "rx_power_dbm" in clean.columns
    reasons = set(quarantine["reason"])
    assert "temperature_c: not a number '41,5'" in reasons
    assert "timestamp: 2026-06-01 23:59:00 is outside partition 2026-06-02: it is 2026-06-01 23:59:00 in UTC" in reasons
    assert all(Path(f).name == "isp_export_2026-06-02.csv" for f in quarantine["_source_file"])
    [package] = (env.data_dir / "packages").glob("*.zip")
    assert json.loads(zipfile.ZipFile(package).read("manifest.json"))["dataset"] == "isp_export"
