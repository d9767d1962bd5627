"""End to end through the UI's own GraphQL calls against a running webserver and daemon: a
materialization of every daily asset and a backfill of the data layer over the newest days, launched
as the UI launches them, with the daemon's sensors running as they do for a user (but the federated
rounds').

The backfill holds the data layer only: the daemon launches a backfill in waves, one per level of
time-window dependency, each after a 30 s daemon tick, and the whole graph's eleven waves took 17
minutes alone on a slow 2-core machine (longer beside the rest of the suite). The data layer has
two waves (``features`` reads earlier days' clean rows) and so still crosses a time-window mapping;
the whole graph runs in the materialization."""

import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from deploy.broker import free_port
from tests.support import ui_client
from tests.support.environment import BIN, DAILY_ASSETS, NEWEST_DAYS, materialized, single_day_env, start, stop, why_runs_failed

BACKFILLED = ["raw_telemetry", "clean_telemetry", "quarantine", "gold_labels", "features"]
"""The data layer, in dependency order (``clean_telemetry`` and ``quarantine`` are one step)."""

pytestmark = pytest.mark.slow


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
    env = single_day_env(tmp_path, federated=False)  # rounds are tested in tests/assets/test_assets.py
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
        backfill_id = ui_client.launch_backfill(url, [[a] for a in BACKFILLED], NEWEST_DAYS)
        assert ui_client.wait_run(url, run_id, timeout=600) == "SUCCESS", why_runs_failed(env.home)
        backfill_status = ui_client.wait_backfill(url, backfill_id, timeout=600)
        assert backfill_status == "COMPLETED_SUCCESS", why_runs_failed(env.home, {"dagster/backfill": backfill_id})
    finally:
        stop(daemon)
        stop(web)
    assert set(BACKFILLED) <= set(DAILY_ASSETS)
    for asset in DAILY_ASSETS:
        backfilled = set(NEWEST_DAYS) if asset in BACKFILLED else set()
        assert materialized(env.home, asset) == {*backfilled, "2026-10-20"}, asset
    with dg.DagsterInstance.from_config(str(env.home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.tags["dagster/from_ui"] == "true" and run.tags["dagster/partition"] == "2026-10-20"
        backfill_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert {r.tags["dagster/partition"] for r in backfill_runs} == set(NEWEST_DAYS)
