"""Run-failure alerts: every failed run is logged as an error and, when ``EVERGREEN_ALERT_WEBHOOK``
is set, posted to that webhook, so an unattended Evergreen does not fail in silence."""

import dagster as dg
import requests

from pipeline.alerts import post_alert, webhook_url


def step_errors(context: dg.RunFailureSensorContext) -> list[str]:
    """``step: error`` for each failed step: the run's own failure message only lists their names."""
    records = context.instance.get_records_for_run(context.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    errors = []
    for record in records:
        error = record.event_log_entry.dagster_event.step_failure_data.error
        while error.cause is not None:  # Dagster wraps the user's exception: report the user's
            error = error.cause
        errors.append(f"{record.event_log_entry.step_key}: {error.message.strip()}")
    return errors


def failure_payload(context: dg.RunFailureSensorContext) -> dict:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "")
    errors = step_errors(context) or [context.failure_event.message]
    text = f"Evergreen: run {run.run_id} of {run.job_name}{f' ({partition})' if partition else ''} failed: {'; '.join(errors)}"
    return {"text": text, "run_id": run.run_id, "job": run.job_name, "partition": partition, "errors": errors}


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    """Logs every failed run and posts it to the webhook in ``EVERGREEN_ALERT_WEBHOOK`` if set; a
    webhook that cannot be reached is logged, not retried forever."""
    payload = failure_payload(context)
    context.log.error(payload["text"])
    url = webhook_url()
    if url:
        try:
            post_alert(url, payload)
        except requests.RequestException as exc:
            context.log.error(f"alert webhook failed: {exc}")
