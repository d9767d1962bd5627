"""Simulated devices on MQTT: the simulator's readings as the messages modems would publish.

Each reading becomes one JSON message on ``<prefix>/<site>/<device>/telemetry`` with the dataset's
source columns and a per-device message id; the label stays behind (devices do not know their
fault). A share of messages can be broken on purpose, one defect each, so the collector's rejects
have work in the demo and the tests know which messages must land.
"""

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dataset import DatasetConfig
from pipeline.message_contract import MESSAGE_KEY, TELEMETRY, topic_columns
from pipeline.mqtt import topic
from pipeline.simulator import TRUTH, simulate_day

DEFECTS = ("bad_json", "missing_field", "wrong_type", "out_of_range", "oversized")


@dataclass(frozen=True)
class DeviceMessage:
    topic: str
    payload: bytes
    defect: str | None = None
    """What was broken on purpose; None for a message the collector must land."""


def telemetry_messages(config: DatasetConfig, day: dt.date, *, dirty: bool = True, malformed: float = 0.0,
                       seed: int = 0) -> list[DeviceMessage]:
    """One day of every simulated device's readings, in time order, ``malformed`` of them broken."""
    c, prefix = config.columns, config.collector.broker.topic_prefix
    site_column, id_column = topic_columns(config)
    frame = simulate_day(config.simulator, day, dirty).drop(TRUTH).sort(c.timestamp, id_column)
    frame = frame.with_columns(pl.int_range(pl.len()).over(id_column).alias(MESSAGE_KEY))
    rng = np.random.default_rng(seed)
    broken = rng.uniform(size=frame.height) < malformed
    messages = []
    for row, defect in zip(frame.iter_rows(named=True), broken):
        device, site = row.pop(id_column), row.pop(site_column)
        row[c.timestamp] = row[c.timestamp].isoformat()
        row[MESSAGE_KEY] = f"{day.isoformat()}-{row[MESSAGE_KEY]}"
        kind = str(rng.choice(DEFECTS)) if defect else None
        payload = _break(row, kind, config, rng) if kind else json.dumps(row).encode()
        messages.append(DeviceMessage(topic(prefix, site, device, TELEMETRY), payload, kind))
    return messages


def _break(row: dict, defect: str, config: DatasetConfig, rng: np.random.Generator) -> bytes:
    numeric = [f for f in config.numeric_features if f.max is not None]
    feature = numeric[int(rng.integers(len(numeric)))]
    if defect == "missing_field":
        row.pop(feature.source_column)
    elif defect == "wrong_type":
        row[feature.source_column] = "n/a"
    elif defect == "out_of_range":
        assert feature.max is not None  # numeric holds the features with a maximum
        row[feature.source_column] = feature.max + abs(feature.max) + 1
    elif defect == "oversized":
        row["padding"] = "x" * config.collector.max_payload_bytes
    payload = json.dumps(row).encode()
    return payload[: len(payload) // 2] if defect == "bad_json" else payload
