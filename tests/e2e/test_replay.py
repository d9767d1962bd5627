"""The simulator's backtest end to end (``make demo``, shortened): a firmware roll-out played through the real
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
        [sys.executable, "-m", "deploy.replay", "--days", "10", "--rollout-day", "4", "--warmup", "5",
         "--devices-per-site", "10", "--canary-min-labels", "30", "--set", "feedback.policy.student_steps=500", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["false_alarm_days"] == 0 and summary["stationary_days"] == 4
    rollout = summary["events"][0]
    assert rollout["days_to_data_alarm"] == 0
    assert rollout["days_to_concept_alarm"] is not None and rollout["days_to_concept_alarm"] <= 3
    # the alarm lasts for days; the drift retrains do not follow it day by day: one fixes the change
    # (a concept alarm is neither waited on nor held back by the cooldown) and follow-ups may come
    # 1, 2, 4 days after it, never on the stationary days before (the label sensor's retrains, on
    # answered labels, come on top)
    drift = [r for r in summary["retrains"] if r["trigger"] == "drift"]
    days = [dt.date.fromisoformat(r["day"]) for r in drift]
    assert drift and min(days) >= dt.date.fromisoformat(rollout["day"]) and len(set(days)) == len(days)
    # each retrain first serves one site (a canary), unless a blocking gate failed its run (said in the
    # timeline), and a canary is rolled out once its 2-day window is over, or before when its labels
    # already show it better than control by the early roll-out margin
    timeline = pl.read_csv(out / "timeline.csv")
    blocked = sum(release.count("retrain run failed") for release in timeline["release"].fill_null(""))
    started = [dt.date.fromisoformat(r["day"]) for r in summary["releases"] if r["release"].startswith("started canary on ")]
    rolled = [(dt.date.fromisoformat(r["day"]), r["release"]) for r in summary["releases"] if r["release"].startswith("rolled out ")]
    assert set(days) <= set(started) and len(started) + blocked == len(summary["retrains"])
    assert rolled and all((day - _window_opened(summary["releases"], day)).days >= 2 or "early roll-out margin" in release
                          for day, release in rolled), summary["releases"]
    assert rollout["days_to_recovery"] is not None and rollout["days_to_recovery"] <= 6
    # the roll-out is a real event: a model left alone loses over 10 points; the loop's serving model
    # dips before its fixes serve (9.8 points at 10 devices a site with the student's bins)
    assert timeline.filter(pl.col("day") >= rollout["day"])["static"].min() < rollout["accuracy_before"] - 0.1
    assert rollout["trough"] < rollout["accuracy_before"] - 0.05
    alarms = timeline.filter(pl.col("data_alarm") | pl.col("concept_alarm"))
    assert timeline.height == 10 and alarms.height > len(drift)
    assert timeline.filter(pl.col("serving").str.contains(" on ")).height >= 2  # canary days serve two versions
    # the baselines were scored on the same days: the static model never recovers from the roll-out
    assert timeline["static"].tail(3).mean() < timeline["accuracy"].tail(3).mean()
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _window_opened(releases: list[dict], day: dt.date) -> dt.date:
    """The first day of the gray release a verdict on ``day`` concluded: the first start since the last
    verdict before it (a retrain that takes over a running canary starts it again in the timeline, but
    its window goes on)."""
    events = [(dt.date.fromisoformat(r["day"]), r["release"]) for r in releases]
    ended = [d for d, text in events if text.startswith(("rolled out ", "rolled back ")) and d < day]
    return min(d for d, text in events if "started canary on " in text and d < day and (not ended or d >= max(ended)))
