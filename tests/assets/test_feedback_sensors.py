"""The drift sensor against a temporary instance: one drift event gives one run however many ticks
and days see it; stale, waiting and cooling-down decisions launch nothing and say why. The
run-failure sensor logs and posts to a real local webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, StepMaterializationData  # a materialization inside a run

import definitions
from assets.resources import DatasetResource, StorageResource
from pipeline.alerts import WEBHOOK_ENV
from pipeline.registry import PRODUCTION, Registry
from sensors.alerts import run_failure_alert
from sensors.drift import EVENT_TAG, drift_sensor


def _decision(action: str, event: str, version: str = "v1", reason: str = "drift") -> dict:
    return {"action": action, "reason": reason, "retrain": action in ("incremental", "full"), "event_key": event,
            "production_version": version, "severity": 0.5}


class Harness:
    """A temporary instance and registry; policy decisions are reported as materializations."""

    def __init__(self, instance: dg.DagsterInstance, data_dir: Path):
        self.instance, self.cursor = instance, None
        self.resources = {"storage": StorageResource(data_dir=str(data_dir)), "dataset": DatasetResource()}
        self.registry = Registry(data_dir / "registry")

    def production(self, version: str) -> None:
        self.registry.register(version, {}, {"lineage": {"partition": "2026-10-01"}})
        self.registry.set_alias(PRODUCTION, version, reason="test", by="test")

    def decide(self, day: str, decision: dict) -> None:
        metadata = {k: v for k, v in decision.items()}
        self.instance.report_runless_asset_event(dg.AssetMaterialization("retraining_policy", partition=day, metadata=metadata))

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources,
                                          definitions=definitions.defs)
        result = drift_sensor.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        return result

    def launch(self, request: dg.RunRequest) -> str:
        """What the daemon does with a request: a run of the job with the request's tags."""
        job = definitions.defs.resolve_job_def("retrain_job")
        tags = {**request.tags, "dagster/partition": request.partition_key, "dagster/run_key": request.run_key}
        return self.instance.create_run_for_job(job_def=job, tags=tags, run_config={}).run_id


@pytest.fixture
def harness(tmp_path):
    with dg.instance_for_test() as instance:
        h = Harness(instance, tmp_path)
        h.production("v1")
        yield h


def test_one_drift_event_over_several_ticks_and_days_launches_exactly_one_run(harness):
    harness.decide("2026-10-15", _decision("wait", "v1@2026-10-15"))
    assert "wait" in harness.tick().skip_message
    harness.decide("2026-10-17", _decision("full", "v1@2026-10-15"))
    launched = []
    for _ in range(3):  # the daemon ticks every 30 s
        result = harness.tick()
        launched += result.run_requests or []
        for request in result.run_requests or []:
            harness.launch(request)
    assert len(launched) == 1
    [request] = launched
    assert request.partition_key == "2026-10-17" and request.tags[EVENT_TAG] == "v1@2026-10-15"
    assert request.run_key == "drift:v1@2026-10-15#1" and request.job_name in (None, "retrain_job")
    harness.decide("2026-10-18", _decision("full", "v1@2026-10-15"))  # the run has not promoted yet
    assert "already launched run" in harness.tick().skip_message
    harness.cursor = None  # a sensor reset re-reads every decision: still one run
    assert "already launched run" in harness.tick().skip_message
    assert len(harness.instance.get_run_records(dg.RunsFilter(tags={EVENT_TAG: "v1@2026-10-15"}))) == 1


def test_a_failed_retrain_is_retried_by_the_next_decision_of_its_event(harness):
    harness.decide("2026-10-17", _decision("full", "v1@2026-10-15"))
    [request] = harness.tick().run_requests
    harness.instance.report_run_failed(harness.instance.get_run_by_id(harness.launch(request)))
    harness.decide("2026-10-18", _decision("full", "v1@2026-10-15"))
    [retry] = harness.tick().run_requests
    assert retry.run_key == "drift:v1@2026-10-15#2" and retry.partition_key == "2026-10-18"


def test_a_decision_about_a_replaced_production_model_or_an_older_day_is_stale(harness):
    harness.production("v2")
    harness.decide("2026-10-17", _decision("incremental", "v1@2026-10-17"))
    assert "stale" in harness.tick().skip_message
    harness.decide("2026-09-20", _decision("incremental", "v2@2026-09-20", version="v2"))  # a backfill, ticked alone
    assert "already learned from 2026-10-01" in harness.tick().skip_message


def test_a_confirmed_label_rule_change_survives_a_replacement_that_learned_only_older_days(harness):
    """A gray release of a model trained through 2026-10-01 concluded after the 10-17 report: the change
    the labels confirmed is still in the world and still in the new production model."""
    harness.production("v2")
    confirmed = {**_decision("full", "v1@2026-10-15/labels"), "change_day": "2026-10-15", "cooldown": False}
    harness.decide("2026-10-17", confirmed)
    [request] = harness.tick().run_requests
    assert request.run_key == "drift:v1@2026-10-15/labels#1"
    harness.decide("2026-09-30", {**confirmed, "event_key": "v1@2026-09-28/labels"})  # v2 learned from that day
    assert "stale" in harness.tick().skip_message


def test_a_new_event_within_the_cooldown_waits(harness):
    harness.decide("2026-10-17", _decision("full", "v1@2026-10-15"))
    [request] = harness.tick().run_requests
    harness.launch(request)
    harness.production("v2")
    harness.decide("2026-10-18", _decision("incremental", "v2@2026-10-18", version="v2"))
    assert "cooldown" in harness.tick().skip_message
    harness.decide("2026-10-20", _decision("incremental", "v2@2026-10-18", version="v2"))
    assert len(harness.tick().run_requests) == 1


def test_a_confirmed_label_rule_change_and_its_follow_ups_are_not_held_back_by_the_cooldown(harness):
    harness.decide("2026-10-17", _decision("full", "v1@2026-10-15"))
    harness.launch(harness.tick().run_requests[0])
    harness.production("v2")
    fix = {**_decision("full", "v2@2026-10-15+1", version="v2"), "change_day": "2026-10-15", "cooldown": False}
    harness.decide("2026-10-18", fix)
    [request] = harness.tick().run_requests
    assert request.partition_key == "2026-10-18"


def test_only_the_newest_day_of_a_backfill_is_acted_on(harness):
    harness.decide("2026-10-17", _decision("full", "v1@2026-10-17"))
    harness.decide("2026-10-10", _decision("full", "v1@2026-10-10"))  # an older day, materialized later
    [request] = harness.tick().run_requests
    assert request.partition_key == "2026-10-17"


def test_a_decision_made_by_a_run_that_also_retrains_the_day_launches_nothing(harness):
    """The UI's Materialize all (or ``make run``'s main job) decides and retrains in one run: the
    sensor launched a second retrain of the same day beside it. That run now counts as the event's
    run on the next day too. A run of the data layer alone (the ingest job) still gets its retrain."""
    for job, launches in (("main_job", False), ("ingest_job", True)):
        run = harness.instance.create_run_for_job(job_def=definitions.defs.resolve_job_def(job), run_config={})
        decision = dg.AssetMaterialization("retraining_policy", partition="2026-10-17",
                                           metadata=_decision("full", f"v1@2026-10-17/{job}"))
        harness.instance.report_dagster_event(
            DagsterEvent(dg.DagsterEventType.ASSET_MATERIALIZATION.value, job_name=job,
                         event_specific_data=StepMaterializationData(decision)), run_id=run.run_id)
        result = harness.tick()
        assert bool(result.run_requests) == launches, result.skip_message
        if not launches:
            assert result.skip_message == f"policy for 2026-10-17: the run that decided it, {run.run_id}, also retrains 2026-10-17"
            harness.decide("2026-10-18", _decision("full", f"v1@2026-10-17/{job}"))  # the same event, a day later
            assert f"already launched run {run.run_id}" in harness.tick().skip_message


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@dg.asset
def broken_asset() -> None:
    raise ValueError("the telemetry file is not data at all")


def test_a_failed_run_is_logged_and_posted_to_the_webhook(monkeypatch, capfd):
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/alert")
        with dg.instance_for_test() as instance:
            result = dg.materialize([broken_asset], instance=instance, raise_on_error=False)
            assert not result.success
            context = dg.build_run_status_sensor_context(
                sensor_name="run_failure_alert", dagster_event=result.get_run_failure_event(),
                dagster_instance=instance, dagster_run=result.dagster_run,
            ).for_run_failure()
            run_failure_alert(context)
    finally:
        server.shutdown()
        server.server_close()
    [payload] = _Webhook.received
    assert payload["run_id"] == result.run_id and payload["job"] == result.dagster_run.job_name
    assert payload["errors"] == ["broken_asset: ValueError: the telemetry file is not data at all"]
    assert payload["text"].startswith(f"Evergreen: run {result.run_id}")
    assert f"ERROR - Evergreen: run {result.run_id}" in capfd.readouterr().err
