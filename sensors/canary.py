"""The canary sensor: when a gray release's verdict is in, roll it out to every site or back.

It stays cheap: it reads ``canary_report`` materializations (the verdict is computed there, on
the returned labels) and the registry's state, never data. A verdict is acted on only if it is
the newest day's and about the gray release still in progress; the run key makes one verdict
one run.
"""

import dagster as dg

from assets.release import ConcludeCanaryConfig, canary_report, conclude_canary_job
from assets.resources import StorageResource
from pipeline.release import ROLL_BACK, ROLL_OUT
from sensors.reports import newest_report


@dg.sensor(job=conclude_canary_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30)
def canary_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Launches ``conclude_canary_job`` when the gray release in progress has a roll-out or
    roll-back verdict; says why not otherwise."""
    newest = newest_report(context, canary_report.key)
    if newest is None:
        return dg.SensorResult(skip_reason="no new canary_report")
    report, cursor = newest.metadata, newest.cursor
    canary = storage.registry.canary()
    if canary is None or report["canary_version"] != canary.version:
        return dg.SensorResult(skip_reason=f"canary_report for {newest.partition_key} is about "
                               f"{report['canary_version'] or 'no gray release'}; in progress now: "
                               f"{canary.version if canary else 'none'}", cursor=cursor)
    if report["verdict"] not in (ROLL_OUT, ROLL_BACK):
        return dg.SensorResult(skip_reason=f"canary {canary.version} on {newest.partition_key}: {report['reason']}", cursor=cursor)
    config = ConcludeCanaryConfig(version=canary.version, roll_out=report["verdict"] == ROLL_OUT,
                                  reason=f"canary verdict for {newest.partition_key}: {report['reason']}")
    request = dg.RunRequest(
        run_key=f"canary:{canary.version}:{report['verdict']}",
        run_config=dg.RunConfig(ops={"conclude_canary": config}),
        tags={"evergreen/trigger": "canary", "evergreen/canary_version": canary.version},
    )
    return dg.SensorResult(run_requests=[request], cursor=cursor)
