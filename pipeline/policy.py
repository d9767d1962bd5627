"""The retraining policy: from a day's drift summary to none / wait / incremental / full retrain.

A drift *event* is a streak of alarm days under one production model; it gets one retrain. The
policy waits (at most ``max_wait_days``) while the inputs are still moving day over day, since a
model fitted mid-roll-out is stale again the next day, and it chooses a full retrain when fresh
labels show a large accuracy drop (the old trees encode a rule that no longer holds), an
incremental update otherwise. A concept alarm is not waited on: the labels show production is wrong
now, and the follow-ups after a label-rule change (1, 2, 4, 8 days later) catch up with inputs still
moving; they come while production still serves the old rule too (its fix in a canary, or blocked),
since a fix trained on the change's first day alone is the weakest one.
With the estimate of performance without labels (``pipeline.estimation``, ``feedback.estimate``): a
shift of the inputs whose estimated accuracy has not dropped beyond its band is recorded as "shift
without harm" and not retrained for; an estimated drop retrains at once, before labels confirm it
(not waited on, like a concept alarm). An unreliable estimate (inputs the reference never saw) is
no evidence either way: the tests decide as before. The fresh-label concept test stays the
authority: the estimate cannot see a new label rule, so it never vetoes a concept alarm.
Hyper-parameters adapt to severity and data volume.
"""

import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import cast

import polars as pl

from pipeline import atomic
from pipeline.dataset import DatasetConfig, PolicySpec, TrainingSpec
from pipeline.drift import DAY, PRODUCTION_VERSION, DriftSummary, monitored_features, summarise
from pipeline.sample_sizes import student_schedule

NONE, WAIT, INCREMENTAL, FULL = "none", "wait", "incremental", "full"
RETRAIN = (INCREMENTAL, FULL)
DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class DayState:
    """One earlier day as the policy remembers it: which model it judged and whether it alarmed."""

    day: dt.date
    production_version: str | None
    alarm: bool


CONFIRMED_BY_LABELS = "/labels"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    day: dt.date
    production_version: str | None
    event_key: str | None
    """Identifies the drift event: one retrain run per key. A change the fresh labels confirm (a drop of
    at least ``full_retrain_drop``: a full retrain) has a key of its own within its event
    (``CONFIRMED_BY_LABELS``): the input drift, or a first small drop, may have had its incremental
    run already (labels come back late, a drop grows over the days of a roll-out), and fixing the
    label rule must not wait for the streak of alarm days to end."""
    severity: float
    teacher: dict
    student: dict
    untested: tuple[str, ...] = ()
    """Today's tests that lacked rows: "no drift" then only speaks for the tests that ran."""
    change_day: str | None = None
    """The first day of the label-rule change this retrain is for: the training window is judged on
    the rows since then, and the model's lineage carries it so follow-ups know the change."""
    cooldown: bool = True
    """Whether the drift sensor's cooldown applies: not to fixing a confirmed change of the label rule."""

    @property
    def retrain(self) -> bool:
        return self.action in RETRAIN

    @property
    def change_date(self) -> dt.date | None:
        """``change_day`` as a date, for the steps that judge on the rows since the change."""
        return dt.date.fromisoformat(self.change_day) if self.change_day else None

    def to_json(self) -> dict:
        return {**asdict(self), "day": self.day.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> "Decision":
        return cls(**{**data, "day": dt.date.fromisoformat(data["day"]), "untested": tuple(data.get("untested", ()))})

    def save(self, directory: Path) -> None:
        atomic.write_text(directory / DECISION_FILE, json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Decision":
        return cls.from_json(json.loads((directory / DECISION_FILE).read_text(encoding="utf-8")))


def on_request(day: dt.date) -> Decision:
    """The decision for a retrain nobody decided on (materialized by hand, no policy decision for the
    day): a full retrain, as asked, with the configured hyper-parameters."""
    return Decision(FULL, f"materialized on request (no policy decision for {day.isoformat()})", day, None, None, 0.0, {}, {})


def acted_on(summary: DriftSummary, config: DatasetConfig) -> DriftSummary:
    """The summary as the policy reads it: the estimate's harm counts only where ``feedback.estimate``
    says the policy acts on it. Why one place: the days before today must be alarms by the same rule
    as today, or an event starts on days the policy let pass (on the recurring held-out stream, three
    quiet days of reported estimated harm dated a rule that flipped on the fourth three days early,
    and the fix learned mostly from the old rule)."""
    if config.feedback.estimate.enabled and config.feedback.estimate.acts:
        return summary
    return replace(summary, estimated_harm=False, estimate_reliable=False)


def _summarised(report: pl.DataFrame, config: DatasetConfig) -> DriftSummary:
    numeric, categorical = monitored_features(config)
    return acted_on(summarise(report, len(numeric) + len(categorical), config.feedback.policy.full_retrain_drop), config)


def day_states(reports: pl.DataFrame, config: DatasetConfig) -> list[DayState]:
    """The alarm state of each day in a window of drift reports, as the policy read it that day."""
    return [
        DayState(day, rows[PRODUCTION_VERSION][0], _summarised(rows, config).alarm)
        for (day,), rows in reports.partition_by(DAY, as_dict=True, maintain_order=True).items()
    ]


def event_start(day: dt.date, production_version: str | None, earlier: list[DayState]) -> dt.date:
    """First day of the alarm streak that ends today, under the same production model."""
    by_day = {s.day: s for s in earlier}
    start = day
    while (previous := by_day.get(start - dt.timedelta(days=1))) and previous.alarm \
            and previous.production_version == production_version:
        start = previous.day
    return start


def adapted_hyperparameters(severity: float, window_rows: int, training: TrainingSpec, spec: PolicySpec) -> tuple[dict, dict]:
    """Teacher: a stronger drift learns faster (learning rate up to 2x, more continued rounds, a
    refit that keeps less of the old leaf values). Student: the batch grows with the transfer set
    (``window_rows``: about 1% of it, a power of two in 64..1024) and the epochs keep the optimiser steps near
    ``student_steps`` (5..60). An unknown volume (0 rows: no drift report yet) leaves the student to
    size itself on its transfer set (``student.adapted_spec``) rather than assume a tiny one."""
    teacher = training.teacher
    student = student_schedule(window_rows, spec.student_steps) if window_rows > 0 else {}
    return (
        {"learning_rate": round(teacher.learning_rate * (1 + severity), 5),
         "rounds": max(20, round(teacher.rounds * (0.2 + 0.4 * severity))),
         "refit_decay": round(min(0.95, max(0.3, 0.9 - 0.5 * severity)), 3)},
        student,
    )


def decide(day: dt.date, summary: DriftSummary, production_version: str | None, earlier: list[DayState],
           window_rows: int, days_of_data: int, config: DatasetConfig, change_day: dt.date | None = None) -> Decision:
    """``window_rows``: rows a training window holds (for the student's batch and epochs);
    ``days_of_data``: partitions up to today (a first model waits for a full window); ``change_day``:
    the label-rule change the production model was retrained for, if any (its lineage)."""
    spec, window_days = config.feedback.policy, config.partitions.window_days
    summary = acted_on(summary, config)
    teacher, student = adapted_hyperparameters(summary.severity, window_rows, config.training, spec)

    def decision(action: str, reason: str, event_key: str | None = None, change: dt.date | None = None) -> Decision:
        return Decision(action, reason, day, production_version, event_key, summary.severity, teacher, student,
                        tuple(summary.untested), change.isoformat() if change else None, cooldown=change is None)

    if production_version is None:
        if days_of_data < window_days:
            return decision(WAIT, f"no production model yet: waiting for a full training window ({days_of_data} of {window_days} days)")
        return decision(FULL, "no production model yet: train the first one", f"bootstrap@{day.isoformat()}")
    if not summary.alarm:
        if change_day is not None and (reason := follow_up(day, change_day, window_days)):
            return decision(FULL, reason, f"{production_version}@{change_day.isoformat()}+{(day - change_day).days}", change_day)
        if summary.untested:
            return decision(NONE, f"no drift in the tests that ran; not tested (too few rows, even pooled): {', '.join(summary.untested)}")
        return decision(NONE, "no drift: inputs, predictions and fresh-label accuracy match the reference")
    start = event_start(day, production_version, earlier)
    waited = (day - start).days
    evidence = _evidence(summary)
    confirmed = summary.concept_drift and summary.accuracy_drop >= spec.full_retrain_drop
    key = f"{production_version}@{start.isoformat()}" + (CONFIRMED_BY_LABELS if confirmed else "")
    if summary.covariate_only and summary.estimate_reliable and not summary.estimated_harm:
        return decision(NONE, f"shift without harm: {evidence} since {start}, but the accuracy estimated without labels "
                              f"{_band(summary)} has not dropped beyond its band from the reference "
                              f"{summary.reference_accuracy or float('nan'):.3f}: no retrain")
    if not summary.settled and waited < spec.max_wait_days and not (summary.concept_drift or summary.estimated_harm):
        return decision(WAIT, f"{evidence} since {start}; inputs still moving day over day, waiting for them "
                              f"to settle (day {waited} of at most {spec.max_wait_days})", key)
    change = start if summary.concept_drift else None
    if confirmed:
        again = f"+{waited}" if follow_up(day, start, window_days) else ""
        return decision(FULL, f"{evidence} since {start}: accuracy on fresh labels fell {summary.accuracy_drop:.3f}, "
                              f"at least {spec.full_retrain_drop}: the old trees encode a rule that no longer holds; "
                              f"the training window is chosen on the rows since {start}"
                              + (f" (again {waited} day(s) after the change began: production still serves the old "
                                 f"rule and the fix learns from {waited + 1} post-change days)" if again else ""),
                        key + again, change)
    return decision(INCREMENTAL, f"{evidence} since {start}: update the production teacher on the new rows", key, change)


def follow_up(day: dt.date, change_day: dt.date, window_days: int) -> str | None:
    """Why the production model, retrained for a change of the label rule, is retrained again today
    without a new alarm: its window still holds pre-change days, or too few post-change ones. The
    follow-ups come 1, 2, 4, 8 ... days after the change (each doubling the new rows it learns from)
    until the post-change days fill the training window."""
    since = (day - change_day).days
    if 0 < since < window_days and since & (since - 1) == 0:
        return (f"follow-up {since} day(s) after the label-rule change of {change_day}: the production model learned from "
                f"{since} post-change day(s) of a {window_days}-day window; retrain on the newer rows")
    return None


def decide_from_reports(day: dt.date, reports: pl.DataFrame, config: DatasetConfig,
                        change_day: dt.date | None = None) -> Decision:
    """The decision for ``day`` from the drift reports of the last days (``reports``), about the
    production model that today's report judged (none: no model yet, bootstrap), which was retrained
    for the label-rule change of ``change_day`` if given."""
    today = reports.filter(pl.col(DAY) == day)
    judged = today[PRODUCTION_VERSION][0] if today.height else None
    earlier = day_states(reports.filter(pl.col(DAY) < day), config)
    window_rows = round(_rows_per_day(today) * config.partitions.window_days)
    days_of_data = (day - config.partitions.start_date).days + 1
    return decide(day, _summarised(today, config), judged, earlier, window_rows, days_of_data, config, change_day)


def _rows_per_day(report: pl.DataFrame) -> float:
    """A day's rows as the report saw them (tests on pooled days count their rows per day); 0: unknown."""
    if not report.height:
        return 0.0
    return float(cast(float | None, (report["n_current"] / report["days"].fill_null(1).clip(lower_bound=1)).max()) or 0.0)  # polars: any literal


def _evidence(summary: DriftSummary) -> str:
    found = []
    if summary.estimated_harm:
        found.append(f"estimated accuracy without labels {_band(summary)} below the reference {summary.reference_accuracy or float('nan'):.3f}")
    if summary.data_drift:
        found.append(f"data drift in {', '.join(summary.drifted_features)}")
    if summary.prediction_drift:
        found.append("prediction drift")
    if summary.concept_drift:
        found.append(f"concept drift (fresh-label accuracy {summary.fresh_accuracy:.3f} "
                     f"against {summary.reference_accuracy:.3f}" + (f"; in {', '.join(summary.concept_slices)})" if summary.concept_slices else ")"))
    return "; ".join(found)


def _band(summary: DriftSummary) -> str:
    return f"{summary.estimated_accuracy or float('nan'):.3f} ({summary.estimated_low or float('nan'):.3f} .. {summary.estimated_high or float('nan'):.3f})"
