"""The drift sensor: when the retraining policy says retrain, launch one retrain run per drift event.

It stays cheap: it reads the policy's materializations and their metadata, the registry's
production alias and the run history, never data. The heavy work (drift tests, training) happens
in assets. A decision is acted on only if it is the newest day's, still about the current
production model (not stale), its drift event has no run yet, and the previous drift-triggered
run is at least ``cooldown_days`` older.
"""

import datetime as dt

import dagster as dg

from assets.feedback import retraining_policy
from assets.jobs import retrain_job
from assets.resources import DatasetResource, StorageResource
from pipeline.policy import RETRAIN
from pipeline.registry import PRODUCTION

EVENT_TAG, TRIGGER_TAG = "evergreen/drift_event", "evergreen/trigger"
PARTITION_TAG = "dagster/partition"


def _decision(record: dg.EventLogRecord) -> dict:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _why_not(context: dg.SensorEvaluationContext, day: str, decision: dict, storage: StorageResource,
             dataset: DatasetResource) -> str | None:
    """Why this decision launches nothing, or None when it should launch the retrain."""
    if decision["action"] not in RETRAIN:
        return f"policy for {day}: {decision['action']}: {decision['reason']}"
    registry = storage.registry
    production = registry.resolve(PRODUCTION) if registry.has_alias(PRODUCTION) else ""
    if decision["production_version"] != production:
        return (f"policy for {day} judged production {decision['production_version'] or 'none'}, "
                f"but production is now {production or 'none'}: stale, the next day's report will judge the new model")
    event = decision["event_key"]
    launched = context.instance.get_run_records(dg.RunsFilter(tags={EVENT_TAG: event}), limit=1)
    if launched:
        return f"drift event {event} already launched run {launched[0].dagster_run.run_id}"
    previous = context.instance.get_run_records(dg.RunsFilter(job_name=retrain_job.name, tags={TRIGGER_TAG: "drift"}), limit=1)
    cooldown = dataset.load().feedback.policy.cooldown_days
    if previous and (last := previous[0].dagster_run.tags.get(PARTITION_TAG)):
        since = (dt.date.fromisoformat(day) - dt.date.fromisoformat(last)).days
        if 0 <= since < cooldown:
            return f"cooldown: the last drift retrain was for {last}, {since} day(s) before {day} (cooldown {cooldown})"
    return None


@dg.sensor(job=retrain_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30)
def drift_sensor(context: dg.SensorEvaluationContext, storage: StorageResource, dataset: DatasetResource) -> dg.SensorResult:
    """Launches ``retrain_job`` for the day when ``retraining_policy`` says incremental or full
    retrain: one run per drift event (run key and tag), with a cooldown; says why otherwise."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=retraining_policy.key, after_storage_id=after), limit=1000, ascending=True,
    ).records
    if not records:
        return dg.SensorResult(skip_reason="no new retraining_policy decision")
    cursor = str(max(r.storage_id for r in records))
    newest = max(records, key=lambda r: (r.partition_key or "", r.storage_id))  # a backfill's older days are history
    day, decision = newest.partition_key, _decision(newest)
    reason = _why_not(context, day, decision, storage, dataset)
    if reason:
        return dg.SensorResult(skip_reason=reason, cursor=cursor)
    tags = {EVENT_TAG: decision["event_key"], TRIGGER_TAG: "drift", "evergreen/policy_action": decision["action"]}
    request = dg.RunRequest(run_key=f"drift:{decision['event_key']}", partition_key=day, tags=tags)
    return dg.SensorResult(run_requests=[request], cursor=cursor)
