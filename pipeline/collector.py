"""The collector's core, without a broker: messages in, validated rows out, landed exactly once.

Each message is checked against the dataset contract (its fields are the dataset's source columns;
site and device come from the topic). Valid telemetry lands as Parquet in the landing folder under
its reading's day, so the landing sensor runs that partition; device predictions land beside it;
everything else goes to a rejects file with the reason and the payload. Payloads are parsed as
JSON data and never evaluated.

Exactly once: the network loop (``pipeline.mqtt``) acknowledges a message only after the batch
holding it has landed (written, then renamed), so a crash before that makes the broker deliver it
again. A crash between landing and acknowledging delivers it twice: every landed row and reject
carries its message key, the collector remembers the newest keys, and a restart reloads them from
the newest landed files, so the second copy is dropped.
"""

import base64
import collections
import datetime as dt
import hashlib
import json
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson
import polars as pl

from pipeline import atomic
from pipeline.dataset import DatasetConfig

TELEMETRY, PREDICTIONS = "telemetry", "predictions"
MESSAGE_KEY = "msg_id"
"""Landed column and payload field: the device's message id, scoped by device (else a content hash)."""
PREDICTION_COLUMNS = ("prediction", "confidence", "model_version")
_NUMBERS, _TEXT = frozenset({int, float}), frozenset({str})
_EPOCH_DAY, _DAY_US = dt.date(1970, 1, 1), 86_400_000_000
REJECT_PAYLOAD_BYTES = 1024
"""An oversized payload is kept up to this many bytes, with its size and sha256."""


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


class MessageValidator:
    """Turns a message into one landed row (its values in ``columns(kind)`` order) or raises
    ``InvalidMessage``.

    One core has to take 20,000 messages a second, so each field first meets a quick test that every
    good value passes; only a value that fails it pays for the check that names the problem."""

    def __init__(self, config: DatasetConfig):
        self.config, self.roles = config, config.columns
        self.prefix = config.collector.broker.topic_prefix.split("/")
        self.max_bytes = config.collector.max_payload_bytes
        self.skew_s = config.collector.max_clock_skew_s
        self.numeric = [(f.source_column, -math.inf if f.min is None else f.min, math.inf if f.max is None else f.max)
                        for f in config.numeric_features]
        self.lows, self.highs = [lo for _, lo, _ in self.numeric], [hi for _, _, hi in self.numeric]
        self.categorical = [f.source_column for f in config.categorical_features]
        self.telemetry_fields = (*(n for n, _, _ in self.numeric), *self.categorical, config.columns.label)
        self.classes = frozenset(config.classes)

    def columns(self, kind: str) -> tuple[str, ...]:
        """The landed columns of a kind of message, in the order ``row`` gives their values."""
        head = (self.roles.timestamp, self.roles.site, self.roles.id, MESSAGE_KEY)
        return head + (self.telemetry_fields if kind == TELEMETRY else PREDICTION_COLUMNS)

    def parse_topic(self, topic: str) -> tuple[str, str, str]:
        """(site, device, kind) of ``<prefix>/<site>/<device>/<kind>``."""
        levels = topic.split("/")
        n = len(self.prefix)
        if len(levels) != n + 3 or levels[:n] != self.prefix or levels[-1] not in (TELEMETRY, PREDICTIONS) \
                or not levels[n] or not levels[n + 1]:
            raise InvalidMessage(f"topic: {topic!r} is not {'/'.join(self.prefix)}/<site>/<device>/(telemetry|predictions)")
        return levels[n], levels[n + 1], levels[-1]

    def row(self, message: Received) -> tuple[str, str, tuple]:
        """(kind, key, values) of a valid message."""
        site, device, kind = self.parse_topic(message.topic)
        payload = self._document(message.payload)
        key = self._key(device, payload, message)
        stamp = self._timestamp(payload, message.received_at)
        for column, value in ((self.roles.site, site), (self.roles.id, device)):
            if payload.get(column, value) != value:
                raise InvalidMessage(f"{column}: payload says {payload[column]!r}, the topic says {value!r}")
        values = self._telemetry(payload) if kind == TELEMETRY else self._prediction(payload)
        return kind, key, (stamp, site, device, key, *values)

    def _document(self, payload: bytes) -> dict:
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
    def _key(device: str, payload: dict, message: Received) -> str:
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
        values = tuple(map(payload.get, self.telemetry_fields))
        numbers, texts = values[:len(self.numeric)], values[len(self.numeric):-1]
        # the quick test, in C-level maps: every reading a number within its range, every category text
        if not (set(map(type, numbers)) <= _NUMBERS and all(map(operator.le, self.lows, numbers))
                and all(map(operator.le, numbers, self.highs))):
            for value, (name, lo, hi) in zip(numbers, self.numeric):
                if value.__class__ not in _NUMBERS or not lo <= value <= hi:
                    _number(payload, name, lo, hi)  # raises with the reason, unless a JSON null (a gap)
        if not (set(map(type, texts)) <= _TEXT and all(map(str.strip, texts))):
            for value, name in zip(texts, self.categorical):
                if value.__class__ is not str or not value.strip():
                    raise InvalidMessage(f"{name}: {'missing' if value is None else f'expected a non-empty string, got {value!r}'}")
        label = values[-1]
        if label is not None and label not in self.classes:
            raise InvalidMessage(f"{self.roles.label}: {label!r} is not one of the classes")
        return values

    def _prediction(self, payload: dict) -> tuple:
        label = payload.get("prediction")
        if label not in self.classes:
            raise InvalidMessage(f"prediction: {'missing' if label is None else f'{label!r} is not one of the classes'}")
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


class RecentKeys:
    """The newest ``capacity`` message keys, oldest forgotten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._order: collections.deque[str] = collections.deque()
        self._keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._keys:
                self._keys.add(key)
                self._order.append(key)
        while len(self._order) > self.capacity:
            self._keys.discard(self._order.popleft())


@dataclass
class Batch:
    """The messages since the last roll, sorted into landed rows and rejects."""

    rows: dict[tuple[str, int], list[tuple]] = field(default_factory=lambda: collections.defaultdict(list))
    """(kind, days since the epoch) -> rows."""
    rejects: list[dict] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    duplicates: int = 0
    messages: int = 0
    opened_at: float | None = None


@dataclass(frozen=True)
class Landed:
    """What one roll wrote (the files are in place when this is returned)."""

    files: list[Path]
    rows: dict[str, int]
    rejects: int
    duplicates: int
    messages: int


class Collector:
    """Validates messages into a batch and lands the batch: the network loop decides when."""

    def __init__(self, config: DatasetConfig, stamp: str | None = None):
        if config.landing_dir is None:
            raise ValueError(f"dataset {config.name!r}: the collector needs source.landing_dir (where batches land)")
        self.config, self.spec = config, config.collector
        self.validator = MessageValidator(config)
        self.dirs = {TELEMETRY: config.landing_dir, PREDICTIONS: config.predictions_dir}
        self.rejects_dir = config.rejects_dir
        self.run_stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        self.sequence = 0
        self.recent = RecentKeys(self.spec.dedup_keys)
        self.recent.add(load_recent_keys(self.landed_files(), self.spec.dedup_keys))
        self.batch = Batch()

    def receive(self, message: Received) -> None:
        batch = self.batch
        batch.messages += 1
        if batch.opened_at is None:
            batch.opened_at = message.received_at
        try:
            kind, key, row = self.validator.row(message)
        except InvalidMessage as exc:
            key = content_key(message.topic, message.payload)
            if not self._first_time(key):
                return
            batch.rejects.append(_reject(message, key, str(exc)))
            return
        if self._first_time(key):
            batch.rows[(kind, row[0] // _DAY_US)].append(row)

    def _first_time(self, key: str) -> bool:
        if key in self.batch.keys or key in self.recent:
            self.batch.duplicates += 1
            return False
        self.batch.keys.add(key)
        return True

    def due(self, now: float) -> bool:
        batch = self.batch
        return batch.messages >= self.spec.roll_rows or (
            batch.opened_at is not None and now - batch.opened_at >= self.spec.roll_seconds)

    def land(self) -> Landed:
        """Write the batch (each file atomically), remember its keys, start a new batch."""
        batch, files, counts = self.batch, [], collections.Counter()
        for (kind, day), rows in sorted(batch.rows.items()):
            files.append(self._write_rows(kind, _EPOCH_DAY + dt.timedelta(days=day), rows))
            counts[kind] += len(rows)
        if batch.rejects:
            files.append(self._write_rejects(batch.rejects))
        self.recent.add(batch.keys)
        self.batch = Batch()
        return Landed(files, dict(counts), len(batch.rejects), batch.duplicates, batch.messages)

    def _name(self, suffix: str) -> str:
        self.sequence += 1
        return f"mqtt-{self.spec.client_id}-{self.run_stamp}-{self.sequence:06d}{suffix}"

    def _write_rows(self, kind: str, day: dt.date, rows: list[tuple]) -> Path:
        target = self.dirs[kind] / day.isoformat() / self._name(".parquet")
        frame = pl.DataFrame([pl.Series(name, column, dtype) for (name, dtype), column in zip(self._schema(kind).items(), zip(*rows))])
        frame = frame.with_columns(pl.col(self.config.columns.timestamp).cast(pl.Datetime("us", "UTC")))
        with atomic.atomic_path(target) as tmp:
            frame.write_parquet(tmp)
        return target

    def _schema(self, kind: str) -> dict[str, pl.DataType]:
        numbers = {n for n, _, _ in self.validator.numeric} | {"confidence"}
        types = {self.config.columns.timestamp: pl.Int64}  # microseconds, cast to a UTC datetime once landed
        return {name: types.get(name, pl.Float64 if name in numbers else pl.String) for name in self.validator.columns(kind)}

    def _write_rejects(self, rejects: list[dict]) -> Path:
        day = dt.datetime.fromtimestamp(rejects[0]["received_at"], dt.UTC).date()
        target = self.rejects_dir / day.isoformat() / self._name(".jsonl")
        atomic.write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
        return target

    def landed_files(self) -> list[Path]:
        """This collector's landed files (rows and rejects), newest first."""
        pattern = f"*/mqtt-{self.spec.client_id}-*"
        found = [p for d in (*self.dirs.values(), self.rejects_dir) if d.is_dir() for p in d.glob(pattern)
                 if p.suffix in (".parquet", ".jsonl")]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def _reject(message: Received, key: str, reason: str) -> dict:
    """The rejected message as it came: text when it is UTF-8, else base64; cut when oversized."""
    payload = message.payload[:REJECT_PAYLOAD_BYTES]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return {MESSAGE_KEY: key, "topic": message.topic, "reason": reason, "received_at": message.received_at,
            "payload": text, "payload_encoding": encoding, "payload_bytes": len(message.payload),
            "payload_sha256": hashlib.sha256(message.payload).hexdigest(),
            "truncated": len(message.payload) > REJECT_PAYLOAD_BYTES}


def load_recent_keys(files: Iterable[Path], limit: int) -> list[str]:
    """Message keys of the newest landed files (newest first), up to ``limit``, oldest first."""
    keys: list[str] = []
    for path in files:
        if len(keys) >= limit:
            break
        keys.extend(reversed(_keys_of(path)))
    return list(reversed(keys[:limit]))


def _keys_of(path: Path) -> list[str]:
    with path.open("rb") as fh:
        if path.suffix == ".parquet":
            return pl.read_parquet(fh, columns=[MESSAGE_KEY])[MESSAGE_KEY].to_list()
        return [json.loads(line)[MESSAGE_KEY] for line in fh if line.strip()]


def read_rejects(rejects_dir: Path) -> list[dict]:
    """Every reject the collector kept, for inspection and tests."""
    if not rejects_dir.is_dir():
        return []
    return [json.loads(line) for path in sorted(rejects_dir.rglob("*.jsonl")) for line in path.read_text("utf-8").splitlines()
            if line.strip()]

