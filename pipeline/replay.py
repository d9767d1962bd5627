"""The replay's measurements: a day-by-day timeline of the serving model's true accuracy, the drift
alarms and the retrain runs, summarised against the issue's targets and drawn as one plot."""

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from pipeline import ids
from pipeline.dataset import ROW_ID, DatasetConfig
from pipeline.simulator import TRUTH, simulate_day


@dataclass
class ReplayDay:
    day: dt.date
    serving_version: str
    accuracy: float
    """The model in production when the day began, on all of the day's rows, against the simulator's truth."""
    data_drift: bool
    prediction_drift: bool
    concept_drift: bool
    severity: float
    action: str
    reason: str
    retrain_run: str | None = None
    sensor: str = ""
    release: str = ""
    """What the canary sensor did: why it waited, or the gray release it rolled out or back."""

    @property
    def alarm(self) -> bool:
        return self.data_drift or self.prediction_drift or self.concept_drift


def true_accuracy(config: DatasetConfig, day: dt.date, features: pl.DataFrame, predict: Callable[[pl.DataFrame], list[str]], hash_key: bytes) -> float:
    """Accuracy on every row of the day: the truth only the simulator knows, joined by row id."""
    truth = simulate_day(config.simulator, day).select(
        ids.row_id(pl.col("device_id"), pl.col("ts"), hash_key).alias(ROW_ID), pl.col(TRUTH)
    ).unique(ROW_ID)
    rows = features.join(truth, on=ROW_ID, how="inner")
    return float(np.mean(np.asarray(predict(rows)) == rows[TRUTH].to_numpy()))


def timeline_frame(days: list[ReplayDay]) -> pl.DataFrame:
    return pl.DataFrame([{**asdict(d), "alarm": d.alarm} for d in days])


def summarise(days: list[ReplayDay], rollout: dt.date, recovery_points: float = 0.02) -> dict:
    """Accuracy before the roll-out, the trough, days to the data and concept alarms, days from the
    first alarm to recovery (within ``recovery_points`` of before), false alarms before the
    roll-out, and the retrain runs launched."""
    before = [d for d in days if d.day < rollout]
    after = [d for d in days if d.day >= rollout]
    pre = float(np.mean([d.accuracy for d in before])) if before else float("nan")
    first = {kind: next((d.day for d in after if getattr(d, kind)), None) for kind in ("data_drift", "concept_drift")}
    alarm = min((d for d in first.values() if d), default=None)
    recovered = next((d.day for d in after if alarm and d.day > alarm and d.accuracy >= pre - recovery_points), None)
    return {
        "days": len(days), "rollout": rollout.isoformat(),
        "accuracy_before_rollout": round(pre, 4),
        "trough": round(min((d.accuracy for d in after), default=float("nan")), 4),
        "days_rollout_to_data_alarm": (first["data_drift"] - rollout).days if first["data_drift"] else None,
        "days_rollout_to_concept_alarm": (first["concept_drift"] - rollout).days if first["concept_drift"] else None,
        "days_alarm_to_recovery": (recovered - alarm).days if recovered else None,
        "false_alarms_before_rollout": sum(d.alarm for d in before),
        "stationary_days": len(before),
        "retrain_runs": [{"day": d.day.isoformat(), "action": d.action, "run": d.retrain_run} for d in days if d.retrain_run],
        "releases": [{"day": d.day.isoformat(), "release": d.release} for d in days if d.release.startswith(("rolled", "started"))],
    }


def plot(days: list[ReplayDay], events: dict[str, dt.date]) -> bytes:
    """Accuracy over time, with the drift alarms, the retrain runs and the world's events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    x = [d.day for d in days]
    ax.plot(x, [d.accuracy for d in days], marker="o", markersize=3, label="serving model accuracy (true labels)")
    lows = min(d.accuracy for d in days)
    for kind, marker, colour in (("data_drift", "v", "tab:orange"), ("concept_drift", "x", "tab:red")):
        hits = [d for d in days if getattr(d, kind)]
        ax.scatter([d.day for d in hits], [lows - 0.02] * len(hits), marker=marker, color=colour, label=kind.replace("_", " ") + " alarm")
    for i, d in enumerate(d for d in days if d.retrain_run):
        ax.axvline(d.day, color="tab:green", alpha=0.6, label="retrain run" if i == 0 else None)
    for name, day in events.items():
        ax.axvline(day, color="grey", linestyle="--")
        ax.text(day, 1.0, f" {name}", rotation=90, va="top", fontsize=8, color="grey")
    ax.set_ylim(lows - 0.05, 1.01)
    ax.set_ylabel("accuracy")
    ax.set_title("Evergreen replay: accuracy over time, drift alarms and retrains")
    ax.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
