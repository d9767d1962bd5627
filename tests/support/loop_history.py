"""A replayed loop history for the loop report: a real registry moved through releases, canaries and
rollbacks on a simulated clock, and drift reports with alarms, for any number of days and sites.
Used by the report's tests and its benchmark."""

import contextlib
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import polars as pl

from pipeline import drift
from pipeline.drift import ESTIMATE, ESTIMATED_ACCURACY_TEST
from pipeline.loop_report import DriftDay, InboxDay, LoopHistory, QuarantineDay, drift_days
from pipeline.registry import Canary, Registry

FEATURES = ("temperature", "humidity", "firmware", "<script>alert('x')</script>", "load & wear")
REASONS = ("temperature: out of range", "<b>site</b>: unknown", "timestamp: not of the partition's day")
N_FEATURES, FULL_RETRAIN_DROP = len(FEATURES), 0.08
SCHEMA = {**drift.REPORT_SCHEMA, "low": pl.Float64, "high": pl.Float64}
"""The drift report's columns with the band of an estimate (issue 19's ``low`` and ``high``)."""


@contextlib.contextmanager
def clock(day: dt.date) -> Iterator[None]:
    """The registry's ledger stamps moves with this day (noon UTC)."""
    at = dt.datetime.combine(day, dt.time(12), dt.timezone.utc).isoformat()
    with mock.patch("pipeline.registry._now", return_value=at):
        yield


def register(registry: Registry, tmp: Path, version: str, day: dt.date, sites: tuple[str, ...], reason: str,
             accuracy: float = 0.9) -> None:
    model = tmp / f"{version}.bin"
    model.write_bytes(version.encode())
    with clock(day):
        registry.register(version, {"model.bin": model}, {
            "metrics": {"student": {"accuracy": accuracy}},
            "lineage": {"partition": day.isoformat(), "trained_through": day.isoformat(), "sites": list(sites),
                        "teacher_update": {"method": "full" if "rule" in reason else "incremental", "reason": reason},
                        "change_day": day.isoformat() if "rule" in reason else None}})


def report_rows(day: dt.date, version: str, drifted: set[str], accuracy: float | None, labels: int,
                reference_accuracy: float = 0.92, concept_drifted: bool = False, estimate: tuple[float, float, float] | None = None) -> pl.DataFrame:
    """One day's drift report: a row per feature (``drifted`` ones over their floor), the predicted
    class, day-over-day stability and fresh-label accuracy (and the estimated accuracy when given)."""
    rows = [{"test": f, "kind": drift.NUMERIC, "statistic": 0.3 if f in drifted else 0.02, "p_value": 1e-6 if f in drifted else 0.5,
             "p_adjusted": 1e-5 if f in drifted else 0.9, "effect": 0.3 if f in drifted else 0.02, "floor": 0.1,
             "drifted": f in drifted, "tested": True, "n_reference": 500, "n_current": 400, "min_n": 200, "days": 1} for f in FEATURES]
    rows.append({"test": drift.PREDICTION_TEST, "kind": drift.PREDICTION, "drifted": False, "tested": True, "effect": 0.01, "floor": 0.2})
    rows.append({"test": drift.STABILITY_TEST, "kind": drift.STABILITY, "drifted": False, "tested": True})
    rows.append({"test": drift.CONCEPT_TEST, "kind": drift.CONCEPT, "statistic": accuracy, "current_value": accuracy,
                 "reference_value": reference_accuracy, "n_current": labels, "drifted": concept_drifted, "tested": labels >= 100,
                 "effect": reference_accuracy - accuracy if accuracy is not None else 0.0, "floor": 0.03, "min_n": 100})
    if estimate:
        rows.append({"test": ESTIMATED_ACCURACY_TEST, "kind": ESTIMATE, "statistic": estimate[0], "low": estimate[1],
                     "high": estimate[2], "tested": True, "drifted": False})
    frame = pl.DataFrame(rows, schema={k: t for k, t in SCHEMA.items() if k not in (drift.DAY, drift.PRODUCTION_VERSION)})
    return frame.with_columns(pl.lit(day).alias(drift.DAY), pl.lit(version).alias(drift.PRODUCTION_VERSION)).select(list(SCHEMA))


def replay(tmp: Path, last: dt.date, days: int, sites: tuple[str, ...], retrain_every: int = 10, seed: int = 0,
           report_days: int | None = None) -> tuple[LoopHistory, Registry, pl.DataFrame]:
    """``days`` days up to ``last``: a version every ``retrain_every`` days (the first to every site,
    later ones as a canary on the first site, rolled out two days later, except every third, rolled
    back), a rollback of production ten days before ``last``, data drift on the two days before each
    retrain and concept drift on the day before; quarantine and inbox figures every day."""
    rng, registry = random.Random(seed), Registry(tmp / "registry")
    first = last - dt.timedelta(days=days - 1)
    reports, quarantine, inbox, version, pending = [], [], [], None, None
    for k in range(days):
        day = first + dt.timedelta(days=k)
        if k % retrain_every == 0:
            previous, version = version, f"v{k // retrain_every + 1:03d}"
            register(registry, tmp, version, day, sites, "label rule changed" if k % (3 * retrain_every) == 2 * retrain_every else "data drift")
            with clock(day):
                if previous is None:
                    registry.promote(version, "first model", "loop")
                else:
                    registry.start_canary(Canary(version, sites[:1], day.isoformat(), 2), "gray release", "loop")
                    pending = (version, day + dt.timedelta(days=2), k // retrain_every % 3 != 2)
        if pending and day == pending[1]:
            with clock(day):
                registry.conclude_canary(pending[0], pending[2], "canary verdict", "canary_report")
            pending = None
        if day == last - dt.timedelta(days=10) and registry.has_alias("previous"):
            with clock(day):
                registry.rollback("previous", "operator: bad firmware push", "ops")
        until_retrain = retrain_every - k % retrain_every
        drifted = {FEATURES[k // retrain_every % N_FEATURES]} if until_retrain <= 2 else set()
        accuracy = 0.8 if until_retrain == 1 else 0.9 + rng.uniform(-0.03, 0.03)
        reports.append(report_rows(day, registry.resolve("production"), drifted, accuracy, 150, concept_drifted=until_retrain == 1))
        quarantine.append(QuarantineDay(day, rng.randint(0, 40), {REASONS[k % 3]: 5, REASONS[(k + 1) % 3]: 2}))
        inbox.append(InboxDay(day, 50 * (k + 1), 45 * (k + 1)))
    frame = pl.concat(reports)
    history = loop_history(registry, frame, last, report_days or days, sites, quarantine, inbox)
    return history, registry, frame


def loop_history(registry: Registry, reports: pl.DataFrame, day: dt.date, days: int, sites: tuple[str, ...],
                 quarantine: list[QuarantineDay], inbox: list[InboxDay]) -> LoopHistory:
    drift_history: list[DriftDay] = drift_days(reports, N_FEATURES, FULL_RETRAIN_DROP)
    return LoopHistory(day=day, days=days, sites=sites, serving={s: registry.serving(s) for s in sites},
                       versions={v: registry.get(v).entry for v in registry.versions()}, ledger=registry.history(),
                       drift_days=drift_history, quarantine=quarantine, inbox=inbox)
