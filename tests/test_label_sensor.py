"""The label sensor against a temporary instance: answered labels accumulate across days until the
threshold, then one batch launches one incremental retrain of the newest day; re-materializations
do not count twice."""

import dagster as dg
import pytest

import definitions
from assets.resources import DatasetResource
from sensors.labels import LABELS_TAG, TRIGGER_TAG, label_sensor


class Ticker:
    def __init__(self, instance: dg.DagsterInstance):
        self.instance, self.cursor = instance, None
        self.threshold = DatasetResource().load().labelling.active.retrain_after_labels

    def answers(self, day: str, count: int) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization("gold_labels", partition=day, metadata={"inbox_labels": count}))

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources={"dataset": DatasetResource()},
                                          definitions=definitions.defs)
        result = label_sensor.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        return result


@pytest.fixture
def ticker():
    with dg.instance_for_test() as instance:
        yield Ticker(instance)


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
