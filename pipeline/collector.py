"""The collector's core, without a broker: messages in, rows landed exactly once, rejects kept.

Valid telemetry lands as Parquet in the landing folder under its reading's day, so the landing
sensor runs that partition; device predictions land beside it; every other message goes to a
rejects file with the reason and the payload (``pipeline.message_contract`` says what is valid).

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline import atomic, batch_check
from pipeline.dataset import DatasetConfig
from pipeline.message_contract import MESSAGE_KEY, PREDICTIONS, TELEMETRY, InvalidMessage, MessageValidator, Received, content_key

REJECT_PAYLOAD_BYTES = 1024
"""An oversized payload is kept up to this many bytes, with its size and sha256."""


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
    """The messages since the last roll."""

    telemetry: list[batch_check.Pending] = field(default_factory=list)
    """Parsed telemetry, checked all at once when the batch lands."""
    one_by_one: list[tuple[Received, str]] = field(default_factory=list)
    """Messages for the exact check: predictions (few), and rows the batch check did not pass."""
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

    def __init__(self, config: DatasetConfig):
        if config.landing_dir is None:
            raise ValueError(f"dataset {config.name!r}: the collector needs source.landing_dir (where batches land)")
        assert config.predictions_dir is not None and config.rejects_dir is not None  # beside the landing folder by default
        self.config, self.spec = config, config.collector
        self.validator = MessageValidator(config)
        self.timestamp = config.columns.timestamp
        self.dirs = {TELEMETRY: config.landing_dir, PREDICTIONS: config.predictions_dir}
        self.rejects_dir = config.rejects_dir
        self.run_stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")  # file names unique across restarts
        self.sequence = 0
        self.recent = RecentKeys(self.spec.dedup_keys)
        self.recent.add(load_recent_keys(self.landed_files(), self.spec.dedup_keys))
        self.batch = Batch()

    def receive(self, message: Received) -> None:
        """Parse the message and set it aside for its batch; only what cannot be parsed is judged now."""
        batch, validator = self.batch, self.validator
        batch.messages += 1
        if batch.opened_at is None:
            batch.opened_at = message.received_at
        try:
            site, device, kind = validator.parse_topic(message.topic)
            payload = validator.document(message.payload)
            key = validator.key(device, payload, message)
        except InvalidMessage as exc:
            key = content_key(message.topic, message.payload)
            if self._first_time(key):
                batch.rejects.append(_reject(message, key, str(exc)))
            return
        if not self._first_time(key):
            return
        if kind == TELEMETRY:
            batch.telemetry.append(batch_check.Pending(message, key, site, device, tuple(map(payload.get, validator.batch_fields))))
        else:
            batch.one_by_one.append((message, key))

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
        """Check and write the batch (each file atomically), remember its keys, start a new batch."""
        batch = self.batch
        passed, doubtful = batch_check.check(batch.telemetry, self.validator)
        rows: dict[str, list[tuple]] = {TELEMETRY: [], PREDICTIONS: []}
        for message, key in [*batch.one_by_one, *((p.message, p.key) for p in doubtful)]:
            try:
                kind, _, values = self.validator.row(message)
            except InvalidMessage as exc:
                batch.rejects.append(_reject(message, key, str(exc)))
                continue
            rows[kind].append(values)
        frames = {TELEMETRY: pl.concat([passed, self._frame(TELEMETRY, rows[TELEMETRY])]),
                  PREDICTIONS: self._frame(PREDICTIONS, rows[PREDICTIONS])}
        files = [self._write_day(kind, day, part) for kind, frame in frames.items() for day, part in self._by_day(frame)]
        if batch.rejects:
            files.append(self._write_rejects(batch.rejects))
        self.recent.add(batch.keys)
        self.batch = Batch()
        return Landed(files, {kind: frame.height for kind, frame in frames.items() if frame.height}, len(batch.rejects),
                      batch.duplicates, batch.messages)

    def _name(self, suffix: str) -> str:
        self.sequence += 1
        return f"mqtt-{self.spec.client_id}-{self.run_stamp}-{self.sequence:06d}{suffix}"

    def _frame(self, kind: str, rows: list[tuple]) -> pl.DataFrame:
        """Rows from the exact check (timestamps in microseconds) as landed columns."""
        types = self.validator.landed_types(kind)
        columns = list(zip(*rows)) if rows else [()] * len(types)
        frame = pl.DataFrame([pl.Series(name, column, pl.Int64 if name == self.timestamp else dtype)
                              for (name, dtype), column in zip(types.items(), columns)])
        return frame.cast(types)

    def _by_day(self, frame: pl.DataFrame) -> list[tuple[dt.date, pl.DataFrame]]:
        """The rows of each day of their reading, oldest day first."""
        days = frame.with_columns(pl.col(self.timestamp).dt.date().alias("__day")).partition_by("__day", as_dict=True, include_key=False)
        return sorted((day, part) for (day,), part in days.items())

    def _write_day(self, kind: str, day: dt.date, frame: pl.DataFrame) -> Path:
        target = self.dirs[kind] / day.isoformat() / self._name(".parquet")
        with atomic.atomic_path(target) as tmp:
            frame.write_parquet(tmp)
        return target

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

