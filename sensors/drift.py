"""The drift sensor: when the retraining policy says retrain, launch one retrain run per drift event.

It stays cheap: it reads the policy's materializations and their metadata, the registry's
production alias and the run history, never data. The heavy work (drift tests, training) happens
in assets. A decision is acted on only if it is the newest day's, made by a run that does not
itself retrain the day, still about the current production model and newer than the day it
learned from (not stale), its drift event has no live
or successful run yet, and the previous drift-triggered run is at least ``cooldown_days`` older (the
cooldown is against repeated retrains for one event, so it does not hold back fixing a confirmed
change of the label rule, nor its follow-ups).
"""

import datetime as dt

import dagster as dg

from assets.feedback import retraining_policy
from assets.jobs import retrain_job
from assets.model import teacher_model
from assets.resources import DatasetResource, StorageResource
from pipeline.policy import FULL, RETRAIN
from pipeline.registry import PRODUCTION
from sensors.reports import NewestReport, newest_report

EVENT_TAG, TRIGGER_TAG = "evergreen/drift_event", "evergreen/trigger"
PARTITION_TAG = "dagster/partition"


FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _stale(day: str, decision: dict, storage: StorageResource) -> str | None:
    """Why the decision no longer applies, if it does not. A decision about a model that has since been
    replaced is for the next day's report to remake, except a change of the label rule the labels
    confirmed: that is about the world, and a replacement that learned only from days before the
    decision's (a gray release concluded meanwhile) still has the old rule; waiting a day for it cost
    the simulator's roll-out a day of recovery."""
    registry = storage.registry
    production = registry.get(PRODUCTION) if registry.has_alias(PRODUCTION) else None
    confirmed_change = decision["action"] == FULL and bool(decision.get("change_day"))
    if confirmed_change and production is not None and production.entry["lineage"]["partition"] < day:
        return None
    if decision["production_version"] != (production.version if production else ""):
        return (f"policy for {day} judged production {decision['production_version'] or 'none'}, but production is now "
                f"{production.version if production else 'none'}: stale, the next day's report judges the new model")
    if production is not None and day <= production.entry["lineage"]["partition"]:
        return f"policy for {day}: production {production.version} already learned from {production.entry['lineage']['partition']}"
    return None


def _event_runs(context: dg.SensorEvaluationContext, event: str) -> tuple[dg.RunRecord | None, int]:
    """A live (queued, running or successful) run of the event, and how many of its runs failed."""
    records = context.instance.get_run_records(dg.RunsFilter(tags={EVENT_TAG: event}))
    live = next((r for r in records if r.dagster_run.status not in FAILED), None)
    return live, sum(r.dagster_run.status in FAILED for r in records)


def _cooling_down(context: dg.SensorEvaluationContext, day: str, cooldown: int) -> str | None:
    previous = context.instance.get_run_records(dg.RunsFilter(job_name=retrain_job.name, tags={TRIGGER_TAG: "drift"}), limit=10)
    done = [r for r in previous if r.dagster_run.status not in FAILED and PARTITION_TAG in r.dagster_run.tags]
    if not done:
        return None
    last = done[0].dagster_run.tags[PARTITION_TAG]
    since = (dt.date.fromisoformat(day) - dt.date.fromisoformat(last)).days
    if since < cooldown:
        return f"cooldown: the last drift retrain was for {last}, {since} day(s) from {day} (cooldown {cooldown} days)"
    return None


def _acted_on_by_its_own_run(context: dg.SensorEvaluationContext, day: str, run_id: str, event: str) -> str | None:
    """A decision made in a run that also trains the day's teacher (the UI's Materialize all, ``make
    run``'s main job) is acted on by that run: a retrain launched beside it trained the same day twice,
    and held one of the two run slots while the user's run and backfill waited. That run is tagged
    with the event, so the event's later decisions find it as its run (and retry, as after a failed
    retrain, should it fail)."""
    planned = context.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    if not any(r.event_log_entry.dagster_event.asset_key == teacher_model.key for r in planned if r.event_log_entry.dagster_event):
        return None
    context.instance.add_run_tags(run_id, {EVENT_TAG: event})
    return f"policy for {day}: the run that decided it, {run_id}, also retrains {day}"


def _request(context: dg.SensorEvaluationContext, report: NewestReport, storage: StorageResource,
             dataset: DatasetResource) -> dg.RunRequest | str:
    """The retrain to launch for this decision, or why there is none. A failed retrain does not
    close its event: the next decision of the event retries it, under a new run key."""
    day, decision = report.partition_key, report.metadata
    if decision["action"] not in RETRAIN:
        return f"policy for {day}: {decision['action']}: {decision['reason']}"
    event = decision["event_key"]
    if report.run_id and (reason := _acted_on_by_its_own_run(context, day, report.run_id, event)):
        return reason
    if reason := _stale(day, decision, storage):
        return reason
    live, failed = _event_runs(context, event)
    if live is not None:
        return f"drift event {event} already launched run {live.dagster_run.run_id} ({live.dagster_run.status.value})"
    if decision.get("cooldown", True) and (reason := _cooling_down(context, day, dataset.load().feedback.policy.cooldown_days)):
        return reason
    tags = {EVENT_TAG: event, TRIGGER_TAG: "drift", "evergreen/policy_action": decision["action"]}
    return dg.RunRequest(run_key=f"drift:{event}#{failed + 1}", partition_key=day, tags=tags)


@dg.sensor(job=retrain_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30)
def drift_sensor(context: dg.SensorEvaluationContext, storage: StorageResource, dataset: DatasetResource) -> dg.SensorResult:
    """Launches ``retrain_job`` for the day when ``retraining_policy`` says incremental or full
    retrain: one run per drift event (run key and tag), with a cooldown; says why otherwise."""
    decision = newest_report(context, retraining_policy.key)
    if decision is None:
        return dg.SensorResult(skip_reason="no new retraining_policy decision")
    request = _request(context, decision, storage, dataset)
    if isinstance(request, str):
        return dg.SensorResult(skip_reason=request, cursor=decision.cursor)
    return dg.SensorResult(run_requests=[request], cursor=decision.cursor)
