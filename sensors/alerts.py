"""Run-failure alerts: every failed run is logged as an error and, when ``EVERGREEN_ALERT_WEBHOOK``
is set, posted to that webhook, so an unattended Evergreen does not fail in silence."""

import dagster as dg
import requests

from pipeline.alerts import post_alert, webhook_url


def failure_payload(context: dg.RunFailureSensorContext) -> dict:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "")
    text = f"Evergreen: run {run.run_id} of {run.job_name}{f' ({partition})' if partition else ''} failed: {context.failure_event.message}"
    return {"text": text, "run_id": run.run_id, "job": run.job_name, "partition": partition,
            "error": context.failure_event.message}


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
