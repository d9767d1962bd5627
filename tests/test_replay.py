"""The replay end to end (``make demo``, shortened): a firmware roll-out played through the real
assets and the real drift sensor is detected on its first day, gets a retrain (at most one per
cooldown however many days alarm), which serves a canary site first and is rolled out by the
canary sensor, and the serving models recover; the stationary days before it raise no alarm."""

import datetime as dt
import json
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_a_short_replay_detects_the_rollout_retrains_without_chasing_every_alarm_and_recovers(tmp_path):
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
    # the alarm lasts for days; the retrains do not follow it day by day: with the non-IID sites the
    # roll-out keeps moving after the first retrain, so a second may follow once the cooldown is over
    retrains = summary["retrain_runs"]
    days = [dt.date.fromisoformat(r["day"]) for r in retrains]
    assert 1 <= len(retrains) <= 2 and all((b - a).days > 2 for a, b in zip(days, days[1:]))
    # each retrain serves one site for the 2-day canary window, then goes to all
    releases = [r["release"] for r in summary["releases"]]
    assert [r["day"] for r in summary["releases"][::2]] == [r["day"] for r in retrains]
    assert all(a.startswith("started canary on ") and b.startswith("rolled out ") for a, b in zip(releases[::2], releases[1::2]))
    assert summary["days_alarm_to_recovery"] is not None and summary["days_alarm_to_recovery"] <= 6
    assert summary["trough"] < summary["accuracy_before_rollout"] - 0.1
    timeline = pl.read_csv(out / "timeline.csv")
    assert timeline.height == 12 and timeline.filter(pl.col("alarm")).height > len(retrains)
    # per retrain: the version before, it on its canary site beside that one, it alone
    assert timeline["serving_version"].n_unique() == 1 + 2 * len(retrains)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
