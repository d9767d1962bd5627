"""The collector's core without a broker: the contract per message, rejects, exactly-once landing."""

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline.collector import Collector, read_rejects
from pipeline.dataset import DatasetConfig, DatasetConfigError, load_dataset_config
from pipeline.devices import DEFECTS, telemetry_messages
from pipeline.message_contract import InvalidMessage, MessageValidator, Received
from pipeline.sources import list_landing_files, read_field_predictions, read_landing_day
from tests.conftest import ROOT

DAY = dt.date(2026, 11, 1)
NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
TOPIC = "evergreen/north/CPE-NORTH-00001/telemetry"


@pytest.fixture
def mqtt_config(tmp_path: Path) -> DatasetConfig:
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump({"extends": str(ROOT / "examples" / "mqtt" / "dataset.yaml"),
                                    "source": {"landing_dir": "landing"}}))
    return load_dataset_config(path)


def _reading(**changes) -> dict:
    reading = {"ts": "2026-11-01T10:15:00Z", "rx_power_dbm": -18.5, "tx_power_dbm": 2.1, "temperature_c": 41.0,
               "uptime_h": 120.0, "crc_errors": 3, "packet_loss_pct": 0.1, "latency_ms": 12.0, "jitter_ms": 2.0,
               "throughput_mbps": 310.0, "reboots_24h": 0, "line_length_m": 1200.0, "device_model": "F670L",
               "firmware_version": "3.1.4", "msg_id": 7}
    reading.update(changes)
    return {k: v for k, v in reading.items() if v is not ...}


def _message(payload: dict | bytes, topic: str = TOPIC, at: float = NOW) -> Received:
    return Received(topic, payload if isinstance(payload, bytes) else json.dumps(payload).encode(), at)


def test_extends_overrides_only_what_it_names(mqtt_config, config):
    assert mqtt_config.source.kind == "landing" and mqtt_config.features == config.features
    assert mqtt_config.landing_dir.name == "landing"
    assert mqtt_config.rejects_dir == mqtt_config.landing_dir.parent / "rejects"
    assert mqtt_config.predictions_dir == mqtt_config.landing_dir.parent / "predictions"


def test_a_dataset_that_extends_itself_is_an_error(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("extends: loop.yaml\n")
    with pytest.raises(DatasetConfigError, match="extends itself"):
        load_dataset_config(path)


def test_a_valid_reading_becomes_one_row_with_site_and_device_from_the_topic(mqtt_config):
    validator = MessageValidator(mqtt_config)
    kind, key, values = validator.row(_message(_reading()))
    row = dict(zip(validator.columns(kind), values, strict=True))
    assert (kind, key) == ("telemetry", "CPE-NORTH-00001:7")
    assert row["site"] == "north" and row["device_id"] == "CPE-NORTH-00001"
    assert row["ts"] == dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.UTC).timestamp() * 1e6 and row["crc_errors"] == 3
    assert row["fault"] is None


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "payload: not JSON"),
    (b"[1, 2]", "payload: a JSON object is expected, got list"),
    (b"x" * 5000, "payload: 5000 bytes is over the limit of 4096"),
    (_reading(rx_power_dbm=...), "rx_power_dbm: missing"),
    (_reading(rx_power_dbm="n/a"), "rx_power_dbm: expected a number, got 'n/a'"),
    (_reading(rx_power_dbm=True), "rx_power_dbm: expected a number, got True"),
    (_reading(rx_power_dbm=99.0), "rx_power_dbm: 99.0 outside valid range [-45.0, 5.0]"),
    (_reading(device_model=""), "device_model: expected a non-empty string"),
    (_reading(ts=...), "ts: missing"),
    (_reading(ts=1730455200), "ts: expected an ISO 8601 string, got 1730455200"),
    (_reading(ts="yesterday"), "ts: cannot parse 'yesterday'"),
    (_reading(ts="2026-11-03T00:00:00Z"), "ts: 2026-11-03T00:00:00Z is in the future"),
    (_reading(fault="meltdown"), "fault: 'meltdown' is not one of the classes"),
    (_reading(device_id="CPE-OTHER"), "device_id: payload says 'CPE-OTHER', the topic says 'CPE-NORTH-00001'"),
    (_reading(msg_id=[1]), "msg_id: expected a string or an integer"),
])
def test_each_broken_message_is_rejected_with_a_reason_naming_the_field(mqtt_config, payload, reason):
    with pytest.raises(InvalidMessage) as caught:
        MessageValidator(mqtt_config).row(_message(payload))
    assert str(caught.value).startswith(reason)


def test_not_a_number_is_not_json_and_null_is_a_gap(mqtt_config):
    validator = MessageValidator(mqtt_config)
    for literal in ("NaN", "Infinity"):  # strict JSON has neither
        with pytest.raises(InvalidMessage, match="payload: not JSON"):
            validator.row(_message(json.dumps(_reading()).replace("-18.5", literal).encode()))
    kind, _, values = validator.row(_message(_reading(temperature_c=None)))
    assert dict(zip(validator.columns(kind), values))["temperature_c"] is None


@pytest.mark.parametrize("topic", ["evergreen/north/telemetry", "other/north/CPE-1/telemetry", "evergreen/north/CPE-1/status"])
def test_a_topic_outside_the_tree_is_rejected(mqtt_config, topic):
    with pytest.raises(InvalidMessage, match="topic:"):
        MessageValidator(mqtt_config).row(_message(_reading(), topic=topic))


@pytest.mark.parametrize("role", ["site", "id"])
def test_a_dataset_without_a_site_or_id_column_has_nowhere_to_land_the_topics_site_and_device(mqtt_config, role):
    config = mqtt_config.model_copy(update={"columns": mqtt_config.columns.model_copy(update={role: None})})
    with pytest.raises(ValueError, match="columns.site and columns.id"):
        MessageValidator(config)


def test_a_landed_batch_is_read_back_as_the_days_landing_file(mqtt_config):
    collector = Collector(mqtt_config)
    collector.receive(_message(_reading()))
    collector.receive(_message(_reading(ts="2026-10-31T23:59:00+00:00", msg_id=8)))
    collector.receive(_message(b"{broken"))
    landed = collector.land()
    assert landed.rows == {"telemetry": 2} and landed.rejects == 1 and landed.messages == 3
    assert [f.day for f in list_landing_files(mqtt_config.landing_dir)] == [dt.date(2026, 10, 31), DAY]
    frame = read_landing_day(mqtt_config.landing_dir, DAY, mqtt_config.required_source_columns)
    assert frame["msg_id"].to_list() == ["CPE-NORTH-00001:7"] and frame["rx_power_dbm"].to_list() == [-18.5]
    [reject] = read_rejects(mqtt_config.rejects_dir)
    assert reject["payload"] == "{broken" and reject["reason"].startswith("payload: not JSON")
    assert not [p for p in mqtt_config.landing_dir.parent.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_a_message_delivered_again_after_a_crash_is_landed_once(mqtt_config):
    """The crash between landing a batch and acknowledging it: the broker delivers the batch again,
    to a new collector process, which must recognise every message (rows and rejects alike)."""
    messages = [m for m in telemetry_messages(mqtt_config, DAY, dirty=False, malformed=0.05)][:500]
    first = Collector(mqtt_config)
    for m in messages:
        first.receive(Received(m.topic, m.payload, NOW))
    first.land()
    restarted = Collector(mqtt_config)
    for m in messages:
        restarted.receive(Received(m.topic, m.payload, NOW))
    again = restarted.land()
    assert again.duplicates == 500 and again.rows == {} and again.rejects == 0 and again.files == []
    landed = pl.concat([pl.read_parquet(p) for p in mqtt_config.landing_dir.rglob("*.parquet")])
    assert landed.height == landed["msg_id"].n_unique() == sum(m.defect is None for m in messages)
    assert len(read_rejects(mqtt_config.rejects_dir)) == sum(m.defect is not None for m in messages) > 0


def test_remembered_keys_are_bounded(mqtt_config):
    collector = Collector(mqtt_config.model_copy(update={"collector": mqtt_config.collector.model_copy(update={"dedup_keys": 60_000})}))
    collector.recent.add(f"k{i}" for i in range(70_000))
    assert len(collector.recent) == 60_000 and "k0" not in collector.recent and "k69999" in collector.recent


def test_a_batch_rolls_on_size_or_age(mqtt_config):
    collector = Collector(mqtt_config)
    assert not collector.due(time.time())
    collector.receive(_message(_reading(), at=100.0))
    assert not collector.due(100.0 + mqtt_config.collector.roll_seconds - 1)
    assert collector.due(100.0 + mqtt_config.collector.roll_seconds)


def test_simulated_devices_break_the_share_asked_for_with_every_defect(mqtt_config):
    messages = telemetry_messages(mqtt_config, DAY, dirty=False, malformed=0.05)
    broken = [m for m in messages if m.defect]
    assert len(messages) == 4 * 40 * 24 and 0.03 < len(broken) / len(messages) < 0.07
    assert {m.defect for m in broken} == set(DEFECTS)
    validator = MessageValidator(mqtt_config)
    for m in messages:
        received = Received(m.topic, m.payload, NOW)
        if m.defect:
            with pytest.raises(InvalidMessage):
                validator.row(received)
        else:
            validator.row(received)


def test_device_predictions_land_beside_the_landing_folder_for_the_drift_report(mqtt_config):
    collector = Collector(mqtt_config)
    topic = "evergreen/south/CPE-SOUTH-00002/predictions"
    for i, label in enumerate(["none", "fiber", "none"]):
        collector.receive(_message({"msg_id": f"r-{i}", "ts": "2026-11-01T08:00:00Z", "prediction": label,
                                    "confidence": 0.9, "model_version": "v1"}, topic=topic))
    collector.receive(_message({"ts": "2026-11-01T08:00:00Z", "prediction": "unknown", "confidence": 0.9}, topic=topic))
    assert collector.land().rows == {"predictions": 3}
    assert read_field_predictions(mqtt_config.predictions_dir, DAY) == ["none", "fiber", "none"]
    assert list_landing_files(mqtt_config.landing_dir) == []  # never taken for telemetry
    assert read_rejects(mqtt_config.rejects_dir)[0]["reason"] == "prediction: 'unknown' is not one of the classes"


def test_the_batch_check_lands_exactly_what_the_exact_check_accepts(mqtt_config):
    """Dirty simulated readings (glitches, gaps, duplicates), broken messages and odd spellings:
    every message lands or is rejected as the one-message-at-a-time check says, with its reason."""
    odd = [_reading(msg_id=100, ts="2026-11-01T10:15:00"), _reading(msg_id=101, ts="2026-11-01 12:15:00+02:00"),
           _reading(msg_id=102, fault="fiber"), _reading(msg_id=103, fault=["fiber"]), _reading(msg_id=104, site="north"),
           _reading(msg_id=105, site="south"), _reading(msg_id=106, temperature_c=None), _reading(msg_id=107, uptime_h=False),
           _reading(msg_id=108, device_model={"x": 1}), _reading(msg_id=109, ts="2026-11-01T10:15:00.250Z"),
           _reading(msg_id=110, jitter_ms=...), _reading(msg_id=111, ts=None)]
    messages = [_message(p) for p in odd]
    messages += [Received(m.topic, m.payload, NOW) for m in telemetry_messages(mqtt_config, DAY, dirty=True, malformed=0.03)]
    validator, expected, reasons = MessageValidator(mqtt_config), set(), {}
    for m in messages:
        try:
            expected.add(validator.row(m)[1])
        except InvalidMessage as exc:
            reasons[hashlib.sha256(m.payload).hexdigest()] = str(exc)
    collector = Collector(mqtt_config)
    for m in messages:
        collector.receive(m)
    landed = collector.land()
    frame = pl.concat([pl.read_parquet(p) for p in mqtt_config.landing_dir.rglob("*.parquet")])
    assert set(frame["msg_id"]) == expected and frame.height == len(expected) == landed.rows["telemetry"]
    assert {r["payload_sha256"]: r["reason"] for r in read_rejects(mqtt_config.rejects_dir)} == reasons
    assert len(reasons) > 100 and landed.messages == len(messages)
    by_key = {k: r for k, r in zip(frame["msg_id"], frame.iter_rows(named=True))}
    assert by_key["CPE-NORTH-00001:100"]["ts"] == dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.UTC)  # naive is UTC
    assert by_key["CPE-NORTH-00001:101"]["ts"] == dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.UTC)
    assert by_key["CPE-NORTH-00001:109"]["ts"] == dt.datetime(2026, 11, 1, 10, 15, 0, 250000, tzinfo=dt.UTC)
    assert by_key["CPE-NORTH-00001:102"]["fault"] == "fiber" and by_key["CPE-NORTH-00001:106"]["temperature_c"] is None
