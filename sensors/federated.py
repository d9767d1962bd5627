"""The federated sensor: runs the rounds of federated training after each retrain.

It watches the newest day with ``site_stores`` (a retrain wrote the sites' rows) and reads
the round files of that day (``pipeline.federated.next_step``): while rounds are due, it launches
``site_update`` for every site that has not sent the current round (one run per site: a site's run
touches only its own store), then, once all have, one ``federated_student`` run that aggregates.
Run keys name the day, the site-stores materialization, the round and the site, so a round is
launched once however many ticks see it; a failed run is not retried by the sensor (re-materialize
it from the UI). The rounds stop at ``training.federated.rounds`` or when the global validation
loss stops improving.
"""

import dagster as dg

from assets.federated import NOTHING_TO_FEDERATE, SITE_NAMES, federated_student, site_stores, site_update
from assets.jobs import federated_round_job, federated_site_job
from assets.resources import DatasetResource, StorageResource
from pipeline.federated import next_step

TRIGGER_TAG, ROUND_TAG = "evergreen/trigger", "evergreen/federated_round"


@dg.sensor(jobs=[federated_site_job, federated_round_job], default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=30)
def federated_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource,
                     storage: StorageResource) -> dg.SensorResult:
    """Launches the next federated round's site runs, or its aggregation, for the newest day whose
    site stores were written; skips when federation is off, the dataset has fewer than two sites,
    or the day's rounds are done."""
    spec = dataset.load().training.federated
    if not spec.enabled:
        return dg.SensorResult(skip_reason="training.federated.enabled is false")
    if NOTHING_TO_FEDERATE:
        return dg.SensorResult(skip_reason=NOTHING_TO_FEDERATE)
    days = context.instance.get_materialized_partitions(site_stores.key)
    if not days:
        return dg.SensorResult(skip_reason="no site stores yet: a retrain writes them")
    day = max(days)  # the newest day, not the newest write: a backfilled old day does not take over
    [record] = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=site_stores.key, asset_partitions=[day]), limit=1).records
    step = next_step(storage.federated, day, SITE_NAMES, spec)
    if step is None:
        return dg.SensorResult(skip_reason=f"{day}: federated rounds done")
    kind, round_, sites = step
    key = f"federated:{day}:{record.storage_id}:round-{round_}"
    tags = {TRIGGER_TAG: "federated", ROUND_TAG: str(round_)}
    if kind == "aggregate":
        return dg.SensorResult(run_requests=[dg.RunRequest(
            job_name=federated_round_job.name, partition_key=day, run_key=f"{key}:aggregate", tags=tags,
            run_config={"ops": {federated_student.key.to_python_identifier(): {"config": {"round": round_}}}})])
    return dg.SensorResult(run_requests=[dg.RunRequest(
        job_name=federated_site_job.name, partition_key=dg.MultiPartitionKey({"date": day, "site": site}),
        run_key=f"{key}:{site}", tags=tags,
        run_config={"ops": {site_update.key.to_python_identifier(): {"config": {"round": round_}}}}) for site in sites])
