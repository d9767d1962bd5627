"""One run of ``python -m deploy.backtest`` on a minimal stream (no site, no id, integer classes), as a
new user would run it."""

import json
import subprocess
import sys
from dataclasses import replace

import polars as pl
import pytest

from examples import streams
from tests.conftest import ROOT


@pytest.mark.slow
def test_the_backtest_of_a_minimal_stream_scores_every_day_beside_the_baselines_and_sees_the_change(tmp_path):
    """A new user's stream (timestamp, label, features; integer classes) replayed as-is, with labels
    returned a day late through the label inbox."""
    spec = replace(streams.STREAMS["sudden"], rows_per_day=400, days=10, drift_day=7, seed=11)
    dataset = streams.write_stream(spec, tmp_path / "streams")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.backtest", "--dataset", str(dataset), "--warmup", "5", "--out", str(out),
         "--label-delay", "1", "--event", "2026-06-08", "--set", "feedback.policy.student_steps=300"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    timeline = pl.read_csv(out / "timeline.csv")
    assert timeline["day"].cast(pl.String).to_list() == [f"2026-06-{d:02d}" for d in range(6, 11)]
    assert {"day", "rows", "accuracy", "macro_f1", "static", "daily_retrain", "no_change", "data_alarm",
            "concept_alarm", "action", "retrained", "serving"} <= set(timeline.columns)
    assert timeline["rows"].to_list() == [400] * 5  # every row of the day scored with its own label
    before, after = timeline.filter(pl.col("day").cast(pl.String) < "2026-06-08"), timeline.filter(pl.col("day").cast(pl.String) == "2026-06-08")
    assert before["accuracy"].min() > 0.85 and after["accuracy"][0] < 0.8  # the rule changed under the model
    assert after["static"][0] < 0.8
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean_accuracy"]) == {"evergreen", "static", "daily_retrain", "no_change"}
    assert summary["events"][0]["day"] == "2026-06-08" and summary["label_delay_days"] == 1
    # labels of a replayed day came back the next day, through the inbox, into that day's gold labels
    gold = pl.read_parquet(out / "data" / "assets" / "gold_labels" / "2026-06-07.parquet")
    assert (gold["label_source"] == "returned").sum() == 400
    staged = pl.read_csv(out / "landing" / "2026-06-07.csv", infer_schema=False)
    assert staged["y"].null_count() == staged.height  # the pipeline saw the day without its labels
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "dagster_home" / "dagster.yaml").exists()
