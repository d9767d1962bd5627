"""The label sensor against a temporary instance: answered labels accumulate across days until the
threshold, then one batch launches one incremental retrain of the newest day; re-materializations
do not count twice; a gray release being judged holds the batch back."""

import dagster as dg
import pytest

import definitions
from assets.resources import DatasetResource, StorageResource
from pipeline.registry import PRODUCTION, Canary
from sensors.labels import LABELS_TAG, TRIGGER_TAG, label_sensor


class Ticker:
    def __init__(self, instance: dg.DagsterInstance, data_dir):
        self.instance, self.cursor = instance, None
        self.storage = StorageResource(data_dir=str(data_dir))
        self.threshold = DatasetResource().load().labelling.active.retrain_after_labels

    def answers(self, day: str, count: int) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization("gold_labels", partition=day, metadata={"inbox_labels": count}))

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=definitions.defs,
                                          resources={"dataset": DatasetResource(), "storage": self.storage})
        result = label_sensor.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        return result


@pytest.fixture
def ticker(tmp_path):
    with dg.instance_for_test() as instance:
        yield Ticker(instance, tmp_path)


def test_labels_accumulate_to_the_threshold_then_one_batch_is_one_run(ticker):
    assert ticker.threshold == 300
    ticker.answers("2026-10-01", 120)
    ticker.answers("2026-10-02", 100)
    waiting = ticker.tick()
    assert waiting.run_requests == [] and "220 answered labels" in waiting.skip_message

    ticker.answers("2026-10-03", 90)
    [request] = ticker.tick().run_requests
    assert request.partition_key == "2026-10-03" and request.job_name in (None, "retrain_job")
    assert request.tags[TRIGGER_TAG] == "labels" and request.tags[LABELS_TAG] == "310"
    assert request.run_key.startswith("labels:")
    assert ticker.tick().run_requests == []  # the same batch never launches again


def test_a_rematerialized_day_replaces_its_count_and_launched_days_are_not_counted_again(ticker):
    ticker.answers("2026-10-01", 200)
    ticker.tick()
    ticker.answers("2026-10-01", 200)  # the same day again (a re-run): still 200, not 400
    assert "200 answered labels" in ticker.tick().skip_message
    ticker.answers("2026-10-02", 150)
    [request] = ticker.tick().run_requests
    assert request.tags[LABELS_TAG] == "350"
    ticker.answers("2026-10-02", 150)  # a re-run of a day already in the launched batch
    ticker.answers("2026-10-01", 400)
    result = ticker.tick()
    assert result.run_requests == [] and "0 answered labels" in result.skip_message


def test_a_gray_release_in_progress_holds_the_batch_until_its_verdict(ticker):
    registry = ticker.storage.registry
    for version in ("v1", "v2"):
        registry.register(version, {}, {"lineage": {"partition": "2026-10-01"}})
    registry.set_alias(PRODUCTION, "v1", reason="test", by="test")
    registry.start_canary(Canary("v2", ("east",), "2026-10-01", 2), reason="test", by="test")
    ticker.answers("2026-10-02", 350)
    held = ticker.tick()
    assert held.run_requests == [] and "wait for the verdict on the gray release of v2" in held.skip_message
    registry.conclude_canary("v2", roll_out=True, reason="test", by="test")
    [request] = ticker.tick().run_requests
    assert request.tags[LABELS_TAG] == "350"
