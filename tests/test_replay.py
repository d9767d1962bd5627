"""The replay end to end (``make demo``, shortened): a firmware roll-out played through the real
assets and the real drift sensor is detected on its first day, gets exactly one retrain, which
serves a canary site first and is rolled out by the canary sensor, and the serving models
recover; the stationary days before it raise no alarm."""

import json
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_a_short_replay_detects_the_rollout_retrains_once_and_recovers(tmp_path):
    out = tmp_path / "replay"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.replay", "--days", "12", "--rollout-day", "4", "--warmup", "5",
         "--devices-per-site", "10", "--canary-min-labels", "30", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["false_alarms_before_rollout"] == 0 and summary["stationary_days"] == 4
    assert summary["days_rollout_to_data_alarm"] == 0
    assert summary["days_rollout_to_concept_alarm"] is not None and summary["days_rollout_to_concept_alarm"] <= 3
    [retrain] = summary["retrain_runs"]  # one drift event, one run, though it alarmed on several days
    assert retrain["action"] == "full"
    # the retrain waits for the roll-out to settle, then serves one site for the 2-day canary window
    [started, rolled_out] = summary["releases"]
    assert started["day"] == retrain["day"] and started["release"].startswith("started canary on ")
    assert rolled_out["release"].startswith("rolled out ")
    assert summary["days_alarm_to_recovery"] is not None and summary["days_alarm_to_recovery"] <= 6
    assert summary["trough"] < summary["accuracy_before_rollout"] - 0.1
    timeline = pl.read_csv(out / "timeline.csv")
    assert timeline.height == 12 and timeline.filter(pl.col("alarm")).height >= 2
    assert timeline["serving_version"].n_unique() == 3  # the old model, old + canary site, the new model
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
