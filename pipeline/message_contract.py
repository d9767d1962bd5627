"""The message contract: what a device may publish, checked one message at a time.

A message's fields are the dataset's source columns (the timestamp as ISO 8601, each feature, an
optional label and ``msg_id``); site and device come from the topic ``<prefix>/<site>/<device>/<kind>``.
Payloads are parsed as strict JSON data and never evaluated. Every rejection names the field and the
value. The collector checks whole batches at once (``pipeline.batch_check``) and asks this exact
check only about the rows that fail there.
"""

import datetime as dt
import hashlib
import math
from typing import NamedTuple

import orjson
import polars as pl

from pipeline.dataset import DatasetConfig

TELEMETRY, PREDICTIONS = "telemetry", "predictions"
MESSAGE_KEY = "msg_id"
"""Landed column and payload field: the device's message id, scoped by device (else a content hash)."""
PREDICTED_CLASS = "prediction"
PREDICTION_COLUMNS = (PREDICTED_CLASS, "confidence", "model_version")
_KINDS = frozenset({TELEMETRY, PREDICTIONS})


class InvalidMessage(ValueError):
    """A message that breaks the contract; the message names the field and the value."""


class Received(NamedTuple):
    """One message as it came off the wire (a tuple: made tens of thousands of times a second)."""

    topic: str
    payload: bytes
    received_at: float


def content_key(topic: str, payload: bytes) -> str:
    """The key of a message without a usable id: a resend carries the same bytes."""
    return "sha256:" + hashlib.sha256(topic.encode("utf-8") + b"\0" + payload).hexdigest()


def topic_columns(config: DatasetConfig) -> tuple[str, str]:
    """(site column, id column): where a message's site and device, named by its topic, land."""
    site, device = config.columns.site, config.columns.id
    if site is None or device is None:
        raise ValueError(f"dataset {config.name!r}: messages land the site and device of their topic in columns.site "
                         "and columns.id; set both")
    return site, device


class MessageValidator:
    """Turns a message into one landed row (its values in ``columns(kind)`` order) or raises
    ``InvalidMessage`` naming the field and the value."""

    def __init__(self, config: DatasetConfig):
        self.config, self.roles = config, config.columns
        self.site_column, self.id_column = topic_columns(config)
        self.topic_root = config.collector.broker.topic_prefix + "/"
        self.max_bytes = config.collector.max_payload_bytes
        self.skew_s = config.collector.max_clock_skew_s
        self.numeric = [(f.source_column, -math.inf if f.min is None else f.min, math.inf if f.max is None else f.max)
                        for f in config.numeric_features]
        self.categorical = [f.source_column for f in config.categorical_features]
        self.text_fields = (*self.categorical, config.columns.label)
        self.telemetry_fields = (*(n for n, _, _ in self.numeric), *self.text_fields)
        self.batch_fields = (config.columns.timestamp, *self.telemetry_fields, config.columns.site, config.columns.id)
        """What the batch check reads of each payload (``pipeline.batch_check``)."""
        self.classes = frozenset(config.classes)

    def columns(self, kind: str) -> tuple[str, ...]:
        """The landed columns of a kind of message, in the order ``row`` gives their values."""
        head = (self.roles.timestamp, self.site_column, self.id_column, MESSAGE_KEY)
        return head + (self.telemetry_fields if kind == TELEMETRY else PREDICTION_COLUMNS)

    def landed_types(self, kind: str) -> pl.Schema:
        """The landed columns of a kind of message and their types (the timestamp a UTC datetime)."""
        numbers = {name for name, _, _ in self.numeric} | {"confidence"}
        types = {self.roles.timestamp: pl.Datetime("us", "UTC")}
        return pl.Schema({name: types.get(name, pl.Float64 if name in numbers else pl.String) for name in self.columns(kind)})

    def parse_topic(self, topic: str) -> tuple[str, str, str]:
        """(site, device, kind) of ``<prefix>/<site>/<device>/<kind>``."""
        levels = topic[len(self.topic_root):].split("/") if topic.startswith(self.topic_root) else ()
        if len(levels) != 3 or levels[2] not in _KINDS or not levels[0] or not levels[1]:
            raise InvalidMessage(f"topic: {topic!r} is not {self.topic_root}<site>/<device>/(telemetry|predictions)")
        return levels[0], levels[1], levels[2]

    def row(self, message: Received) -> tuple[str, str, tuple]:
        """(kind, key, values) of a valid message."""
        site, device, kind = self.parse_topic(message.topic)
        payload = self.document(message.payload)
        key = self.key(device, payload, message)
        stamp = self._timestamp(payload, message.received_at)
        if payload.get(self.site_column, site) != site or payload.get(self.id_column, device) != device:
            column, value = (self.site_column, site) if payload.get(self.site_column, site) != site else (self.id_column, device)
            raise InvalidMessage(f"{column}: payload says {payload[column]!r}, the topic says {value!r}")
        values = self._telemetry(payload) if kind == TELEMETRY else self._prediction(payload)
        return kind, key, (stamp, site, device, key, *values)

    def document(self, payload: bytes) -> dict:
        if len(payload) > self.max_bytes:
            raise InvalidMessage(f"payload: {len(payload)} bytes is over the limit of {self.max_bytes}")
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage(f"payload: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise InvalidMessage(f"payload: a JSON object is expected, got {type(document).__name__}")
        return document

    @staticmethod
    def key(device: str, payload: dict, message: Received) -> str:
        """``<device>:<msg_id>``, or a hash of topic and payload when the device sends no id."""
        msg_id = payload.get(MESSAGE_KEY)
        if msg_id is None:
            return content_key(message.topic, message.payload)
        if msg_id.__class__ not in (str, int) or msg_id == "":
            raise InvalidMessage(f"{MESSAGE_KEY}: expected a string or an integer, got {msg_id!r}")
        return f"{device}:{msg_id}"

    def _timestamp(self, payload: dict, received_at: float) -> int:
        """Microseconds since the epoch (UTC): a plain int is five times cheaper to land than a datetime."""
        name = self.roles.timestamp
        value = payload.get(name)
        if not isinstance(value, str):
            raise InvalidMessage(f"{name}: {'missing' if value is None else f'expected an ISO 8601 string, got {value!r}'}")
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidMessage(f"{name}: cannot parse {value[:64]!r}") from None
        seconds = (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()
        if seconds - received_at > self.skew_s:
            arrived = dt.datetime.fromtimestamp(received_at, dt.UTC).isoformat(timespec="seconds")
            raise InvalidMessage(f"{name}: {value} is in the future (arrived {arrived})")
        return round(seconds * 1e6)  # exact: a float holds every microsecond of this century

    def _telemetry(self, payload: dict) -> tuple:
        for name, lo, hi in self.numeric:
            _number(payload, name, lo, hi)
        for name in self.categorical:
            value = payload.get(name)
            if value.__class__ is not str or not value.strip():
                raise InvalidMessage(f"{name}: {'missing' if value is None else f'expected a non-empty string, got {value!r}'}")
        label = payload.get(self.roles.label)
        if label is not None and (label.__class__ is not str or label not in self.classes):
            raise InvalidMessage(f"{self.roles.label}: {label!r} is not one of the classes")
        return tuple(map(payload.get, self.telemetry_fields))

    def _prediction(self, payload: dict) -> tuple:
        label = payload.get(PREDICTED_CLASS)
        if label not in self.classes:
            raise InvalidMessage(f"{PREDICTED_CLASS}: {'missing' if label is None else f'{label!r} is not one of the classes'}")
        version = payload.get("model_version")
        if version is not None and not isinstance(version, str):
            raise InvalidMessage(f"model_version: expected a string, got {version!r}")
        return label, _number(payload, "confidence", 0.0, 1.0, required=True), version


def _number(payload: dict, name: str, lo: float, hi: float, required: bool = False) -> float | None:
    """A reading: absent is an error; JSON null is a sensor gap (imputed downstream) unless required."""
    if name not in payload or (required and payload[name] is None):
        raise InvalidMessage(f"{name}: missing")
    value = payload[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMessage(f"{name}: expected a number, got {value!r:.64}")
    if not lo <= value <= hi:
        raise InvalidMessage(f"{name}: {value} outside valid range [{lo}, {hi}]")
    return float(value)


