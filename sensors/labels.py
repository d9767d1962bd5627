"""The label sensor: once enough answered labels have come back, an incremental retrain.

It reads ``gold_labels`` materializations (their ``inbox_labels`` metadata: rows merged from the
label inbox) since its cursor, never data. Answers accumulate across days until they reach
``labelling.active.retrain_after_labels``; the batch then launches one ``retrain_job`` run of the
newest day, keyed by the last materialization it counted, so one batch is one run however many
ticks see it. The run follows that day's retraining policy, which is an incremental update of the
production teacher unless drift asked for more. A re-materialized day replaces its own count in
the open batch; days already in a launched batch are not counted again.
"""

import json

import dagster as dg

from assets.data import gold_labels
from assets.jobs import retrain_job
from assets.resources import DatasetResource, StorageResource

TRIGGER_TAG, LABELS_TAG = "evergreen/trigger", "evergreen/new_labels"


@dg.sensor(job=retrain_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def label_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource, storage: StorageResource) -> dg.SensorResult:
    """Launches ``retrain_job`` for the newest day once ``retrain_after_labels`` answered labels
    have arrived since the last such run, and no gray release is being judged (a new candidate
    would replace the canary and restart its window); says how many are pending otherwise."""
    threshold = dataset.load().labelling.active.retrain_after_labels
    state = json.loads(context.cursor) if context.cursor else {"after": None, "pending": {}, "launched_through": ""}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=gold_labels.key, after_storage_id=state["after"]), limit=1000, ascending=True,
    ).records
    for record in records:
        day = record.partition_key or ""
        if day > state["launched_through"]:
            count = record.asset_materialization.metadata.get("inbox_labels")
            state["pending"][day] = int(count.value) if count is not None else 0
        state["after"] = record.storage_id
    pending = sum(state["pending"].values())
    if pending < threshold:
        return dg.SensorResult(skip_reason=f"{pending} answered labels since the last label-triggered retrain; "
                                           f"retraining at {threshold}", cursor=json.dumps(state))
    if (canary := storage.registry.canary()) is not None:
        return dg.SensorResult(skip_reason=f"{pending} answered labels wait for the verdict on the gray release of "
                                           f"{canary.version}", cursor=json.dumps(state))
    newest = max(state["pending"])
    request = dg.RunRequest(run_key=f"labels:{state['after']}", partition_key=newest,
                            tags={TRIGGER_TAG: "labels", LABELS_TAG: str(pending)})
    state = {"after": state["after"], "pending": {}, "launched_through": newest}
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(state))
