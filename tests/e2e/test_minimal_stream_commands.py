"""``make run`` (``deploy.run_main``) on a minimal stream as a new user writes it, and on a broken
contract: subprocesses, as a person starts them."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.minimal_stream import bad_yaml


@pytest.mark.slow
def test_make_run_on_a_bad_config_names_the_file_and_field_without_a_traceback(tmp_path: Path):
    """``python -m deploy.run_main``: the YAML is read when the definitions are imported."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EVERGREEN_DATASET": str(bad_yaml(tmp_path)), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "deploy.run_main", "--days", "1"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "dataset.yaml: invalid dataset config: columns.label: Field required" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.slow
def test_make_run_and_the_ui_definitions_work_on_a_minimal_stream_as_written(tmp_path: Path):
    """``make run`` (``deploy.run_main``) on a stream a new user wrote (no site, no id, integer
    classes) trains, registers and packages a model; the definitions ``make ui`` serves load; the
    landing sensor's first tick after it runs nothing again."""
    import os
    import subprocess
    import sys
    from dataclasses import replace

    from examples import streams

    dataset = streams.write_stream(replace(streams.STREAMS["sudden"], rows_per_day=300, days=6), tmp_path / "streams")
    env = {**os.environ, "EVERGREEN_DATASET": str(dataset), "EVERGREEN_DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path / "data" / "dagster_home")}
    root = ROOT
    done = subprocess.run([sys.executable, "-m", "deploy.run_main", "--days", "6"], env=env, capture_output=True,
                          text=True, timeout=900, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[6/6] main_job 2026-06-06: ok" in done.stdout and "edge package:" in done.stdout
    # a day of a minimal stream has a handful of test rows: the summary says so beside the metrics
    assert re.search(r"newest test day 2026-06-0\d: \d+ test rows \[small sample \(< 200 rows\)\]", done.stdout), done.stdout
    assert len(list((tmp_path / "data" / "packages").glob("evergreen-v20260606-*.zip"))) == 1
    check = ("import dagster as dg, definitions\n"
             "dg.Definitions.validate_loadable(definitions.defs)\n"
             "ctx = dg.build_sensor_context(instance=dg.DagsterInstance.get(), definitions=definitions.defs, resources=definitions.defs.resources)\n"
             "tick = definitions.defs.resolve_sensor_def('landing_sensor').evaluate_tick(ctx)\n"
             "print('requests', len(tick.run_requests or []))\n")
    loaded = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "requests 0" in loaded.stdout
