"""The backtest's measurements: what the serving model and the baselines score on each replayed day,
and the summary a user reads before trusting the loop.

Each day is scored *before* anything learns from it, on the day's own labels from the user's files
(on the simulator: its truth for every row). The baselines are what a team would otherwise run, fed
the same labels at the same time as Evergreen (the gold labels that had arrived by the evening
before), so a label delay slows them exactly as it slows the loop:

- ``static``: one LightGBM model trained on the warm-up days, never updated;
- ``daily_retrain``: a nightly cron job, a full LightGBM retrain on the last ``window_days`` every
  day (more windows on request: ``retrain_<n>d``);
- ``no_change``: each row gets the label of the newest row whose label is known, in time order (the
  previous row's, without a label delay): the reference for autocorrelated streams.
"""

import datetime as dt
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import atomic, ids
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, DatasetConfig
from pipeline.encoding import fit_preprocessing
from pipeline.features import model_feature_names
from pipeline.release import macro_f1
from pipeline.simulator import TRUTH, simulate_day
from pipeline.sources import SOURCE_FILE, SOURCE_ROW, read_landing_file
from pipeline.teacher import Teacher, train_teacher

STATIC, DAILY_RETRAIN, NO_CHANGE = "static", "daily_retrain", "no_change"
RECOVERY_POINTS = 0.02
"""A day has recovered from a drift event when its accuracy is within this of the days before it."""
BEFORE_EVENT_DAYS = 7
MIN_BASELINE_ROWS = 20


RELEASE_SEPARATOR = "; "


@dataclass
class BacktestDay:
    """One replayed day: the scores of the model serving that morning and of the baselines, and what
    the loop did about the day."""

    day: dt.date
    rows: int
    """Labelled rows scored (on the simulator: every row, against its truth)."""
    accuracy: float
    macro_f1: float
    baselines: dict[str, float]
    data_alarm: bool
    concept_alarm: bool
    action: str
    reason: str
    serving: str
    estimated_accuracy: float = float("nan")
    """The drift report's estimate for the serving model on the day's rows, made before their
    labels are used (NaN: none, or unreliable)."""
    top_cause: str = ""
    """The input whose attribution moved most that day (the drift report's first cause)."""
    retrained: bool = False
    retrain_trigger: str = ""
    retrain_action: str = ""
    retrain_run: str = ""
    retrain_seconds: float = 0.0
    """Wall time of the day's retrain runs (what the loop's freshness costs)."""
    release: str = ""
    """What happened to the serving versions that day, in order, ``; ``-separated (a gray release
    concluded in the morning and a retrain started the next one: both)."""
    sensor: str = ""
    seconds: float = 0.0
    runs: list[str] = field(default_factory=list)

    def add_release(self, event: str) -> None:
        self.release = f"{self.release}{RELEASE_SEPARATOR}{event}" if self.release else event

    @property
    def releases(self) -> list[str]:
        return self.release.split(RELEASE_SEPARATOR) if self.release else []

    def row(self) -> dict:
        """The timeline's row: scores to 4 decimals, the runs launched for the day space-separated."""
        record = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k not in ("baselines", "runs")}
        return {**record, **{k: round(v, 4) for k, v in self.baselines.items()}, "runs": " ".join(self.runs)}


def landed_truth(clean: pl.DataFrame, originals: dict[str, Path], csv_separator: str, label_column: str) -> pl.DataFrame:
    """``row_id`` and the true label of each clean row, read from the user's original files by the
    file and row the row came from (the pipeline may have seen the file with its labels withheld)."""
    parts = []
    for staged, original in originals.items():
        raw = read_landing_file(original, csv_separator)
        if label_column not in raw.columns:
            continue
        parts.append(raw.select(pl.lit(staged).alias(SOURCE_FILE), pl.col(SOURCE_ROW),
                                pl.col(label_column).cast(pl.String).str.strip_chars().alias(LABEL)))
    if not parts:
        return pl.DataFrame(schema={ROW_ID: pl.String, LABEL: pl.String})
    labels = pl.concat(parts).filter(pl.col(LABEL).is_not_null() & (pl.col(LABEL) != ""))
    return clean.select(ROW_ID, SOURCE_FILE, pl.col(SOURCE_ROW).cast(labels[SOURCE_ROW].dtype)).join(
        labels, on=[SOURCE_FILE, SOURCE_ROW], how="inner").select(ROW_ID, LABEL)


def simulated_truth(config: DatasetConfig, day: dt.date, hash_key: bytes) -> pl.DataFrame:
    """``row_id`` and the simulator's truth for every reading of the day (no deployed system has
    this; the simulator's backtest scores on it)."""
    return simulate_day(config.simulator, day).select(
        ids.row_id(pl.col("device_id"), pl.col("ts"), hash_key).alias(ROW_ID), pl.col(TRUTH).alias(LABEL)
    ).unique(ROW_ID)


def write_without_labels(source: Path, target: Path, label_column: str, csv_separator: str) -> None:
    """A copy of a landing file whose label cells are empty (atomically): the readings arrive, their
    labels come later. Row order and every other cell stay, so rows keep their identity."""
    if source.suffix.lower() == ".parquet":
        frame = pl.read_parquet(source)
    else:
        frame = pl.read_csv(source, separator=csv_separator, infer_schema=False)
    if label_column in frame.columns:
        frame = frame.with_columns(pl.lit(None, frame.schema[label_column]).alias(label_column))
    with atomic.atomic_path(target) as tmp:
        if source.suffix.lower() == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp, separator=csv_separator)


def scored_rows(features: pl.DataFrame, truth: pl.DataFrame, classes: tuple[str, ...]) -> pl.DataFrame:
    """The day's feature rows that have a true label among the classes, in time order, the label
    being the truth (whatever the pipeline was shown)."""
    rows = features.drop(LABEL, strict=False).join(truth, on=ROW_ID, how="inner")
    return rows.filter(pl.col(LABEL).is_in(list(classes))).sort(TIMESTAMP, ROW_ID)


def score(truth: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> tuple[float, float]:
    """(accuracy, macro-F1); NaN for a day without labelled rows."""
    if not len(truth):
        return float("nan"), float("nan")
    return float(np.mean(truth == predicted)), macro_f1(truth, predicted, classes)


class LabelledHistory:
    """The feature rows of the replayed days and the gold labels as they arrived, to train the
    baselines on exactly what the loop could have learned from by a given evening."""

    def __init__(self, config: DatasetConfig):
        self.config = config
        self._features: dict[dt.date, pl.DataFrame] = {}
        self._gold: list[pl.DataFrame] = []

    def add_day(self, day: dt.date, features: pl.DataFrame, gold: pl.DataFrame) -> None:
        """The day's features and the labels that arrived on it."""
        self._features[day] = features.drop(LABEL, strict=False)
        self._gold.append(gold.select(ROW_ID, LABEL))

    def labelled(self, days: list[dt.date]) -> pl.DataFrame:
        """Rows of ``days`` with a label that had arrived by now, in time order."""
        frames = [self._features[d] for d in days if d in self._features]
        if not frames or not self._gold:
            return pl.DataFrame()
        gold = pl.concat(self._gold).unique(ROW_ID, keep="first")
        rows = pl.concat(frames, how="diagonal_relaxed").join(gold, on=ROW_ID, how="inner")
        return rows.filter(pl.col(LABEL).is_in(list(self.config.classes))).sort(TIMESTAMP, ROW_ID)

    def last_label(self) -> str | None:
        """The label of the newest labelled row known now (``no_change`` under a label delay)."""
        rows = self.labelled(sorted(self._features))
        return rows[LABEL][-1] if rows.height else None

    def window(self, through: dt.date, days: int) -> list[dt.date]:
        return [through - dt.timedelta(days=i) for i in range(days)]


def fit_baseline(rows: pl.DataFrame, config: DatasetConfig) -> Teacher | None:
    """A LightGBM model as a team's cron job would train it: the teacher's settings, the oldest 85%
    of the labelled rows to learn from and the newest 15% to stop early on. None with too few rows."""
    if rows.height < MIN_BASELINE_ROWS or rows[LABEL].n_unique() < 2:
        return None
    rows = rows.with_columns(pl.lit(1.0).alias("weight"))
    cut = int(rows.height * 0.85)
    train, validation = rows.head(cut), rows.tail(rows.height - cut)
    numeric, categorical = model_feature_names(config)
    preprocessing = fit_preprocessing(train, numeric, categorical)
    return train_teacher(train, validation, preprocessing, config.classes, config.training.teacher, config.training.seed)


def baseline_predict(model: Teacher | None, rows: pl.DataFrame, fallback: str) -> np.ndarray:
    """The model's classes for ``rows``; the fallback class where there is no model yet."""
    if model is None:
        return np.full(rows.height, fallback, dtype=object)
    return np.asarray(model.classes)[model.predict_proba(rows).argmax(axis=1)]


def no_change(rows: pl.DataFrame, last_known: str | None, label_delay_days: int) -> np.ndarray:
    """Each row gets the previous row's label (time order) when labels come back at once; under a
    delay, the newest label known that morning, for every row."""
    fallback = last_known if last_known is not None else rows[LABEL][0] if rows.height else ""
    if label_delay_days > 0:
        return np.full(rows.height, fallback, dtype=object)
    return rows[LABEL].shift(1).fill_null(fallback).to_numpy()


def timeline_frame(days: list[BacktestDay]) -> pl.DataFrame:
    return pl.DataFrame([d.row() for d in days])


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if v == v]
    return round(float(np.mean(kept)), 4) if kept else None


def event_outcome(days: list[BacktestDay], event: dt.date, next_event: dt.date | None) -> dict:
    """Days from the change to the first data and concept alarm and to recovery (accuracy back within
    ``RECOVERY_POINTS`` of the week before the change), before the next change."""
    before = [d.accuracy for d in days if event - dt.timedelta(days=BEFORE_EVENT_DAYS) <= d.day < event]
    after = [d for d in days if d.day >= event and (next_event is None or d.day < next_event)]
    pre = _mean(before)

    def first(kind: str) -> int | None:
        hit = next((d.day for d in after if getattr(d, kind)), None)
        return (hit - event).days if hit else None

    recovered = next((d.day for d in after if pre is not None and d.accuracy >= pre - RECOVERY_POINTS), None)
    return {
        "day": event.isoformat(), "accuracy_before": pre,
        "trough": round(min(d.accuracy for d in after), 4) if after else None,
        "days_to_data_alarm": first("data_alarm"), "days_to_concept_alarm": first("concept_alarm"),
        "days_to_recovery": (recovered - event).days if recovered else None,
        "retrains": sum(d.retrained for d in after),
    }


def summarise(days: list[BacktestDay], events: list[dt.date], baselines: list[str]) -> dict:
    """Mean daily accuracy and macro-F1 of Evergreen and of each baseline, every alarm, retrain and
    release, per event the days to alarm and to recovery, false alarms on the days before the first
    event, and the wall time per replayed day."""
    events = sorted(e for e in events if days and days[0].day <= e <= days[-1].day)
    stationary = [d for d in days if not events or d.day < events[0]]
    return {
        "days": len(days),
        "first_day": days[0].day.isoformat() if days else None, "last_day": days[-1].day.isoformat() if days else None,
        "mean_accuracy": {"evergreen": _mean([d.accuracy for d in days]),
                          **{b: _mean([d.baselines[b] for d in days]) for b in baselines}},
        "mean_macro_f1": _mean([d.macro_f1 for d in days]),
        "rows_scored": sum(d.rows for d in days),
        "alarms": [{"day": d.day.isoformat(), "data": d.data_alarm, "concept": d.concept_alarm}
                   for d in days if d.data_alarm or d.concept_alarm],
        "retrains": [{"day": d.day.isoformat(), "trigger": d.retrain_trigger, "action": d.retrain_action,
                      "run": d.retrain_run} for d in days if d.retrained],
        "releases": [{"day": d.day.isoformat(), "release": release} for d in days for release in d.releases
                     if release.startswith(("rolled", "started", "released"))],
        "events": [event_outcome(days, e, nxt) for e, nxt in zip(events, [*events[1:], None])],
        "stationary_days": len(stationary),
        "false_alarm_days": sum(d.data_alarm or d.concept_alarm for d in stationary),
        "retrains_on_stationary_days": sum(d.retrained for d in stationary),
        "seconds_per_day": _mean([d.seconds for d in days]),
        "retrain_seconds_per_day": _mean([d.retrain_seconds for d in days]),
        "seconds_per_retrain": _mean([d.retrain_seconds for d in days if d.retrained]),
    }


def plot(days: list[BacktestDay], events: list[dt.date], baselines: list[str], title: str) -> bytes:
    """Accuracy of Evergreen and the baselines over time, with alarms, retrains and known events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    # days on the x axis: matplotlib plots dates through its unit converters, its stubs know numbers only
    x: list[Any] = [d.day for d in days]
    ax.plot(x, [d.accuracy for d in days], marker="o", markersize=3, linewidth=2, label="Evergreen (serving model)")
    for name in baselines:
        ax.plot(x, [d.baselines[name] for d in days], linewidth=1, alpha=0.8, label=name)
    lows = np.nanmin([[d.accuracy, *d.baselines.values()] for d in days]) if days else 0.0
    for kind, marker, colour in (("data_alarm", "v", "tab:orange"), ("concept_alarm", "x", "tab:red")):
        hits: list[Any] = [d.day for d in days if getattr(d, kind)]
        ax.scatter(hits, [lows - 0.02] * len(hits), marker=marker, color=colour, label=kind.replace("_", " "))
    for i, d in enumerate(d for d in days if d.retrained):
        ax.axvline(d.day, color="black", alpha=0.3, label="retrain" if i == 0 else None)  # type: ignore[arg-type]  # a date, as x
    for event in events:
        ax.axvline(event, color="grey", linestyle="--")  # type: ignore[arg-type]  # a date, as x
    ax.set_ylim(max(lows - 0.05, 0.0), 1.01)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
