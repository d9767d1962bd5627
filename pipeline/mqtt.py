"""MQTT with paho: the collector's network loop, and a publisher for simulated devices.

MQTT 3.1.1 with a persistent session (``clean_session=False``) and QoS 1: the broker keeps the
collector's subscriptions and every unacknowledged message while it is down, and delivers them when
it comes back. paho parses MQTT 5 properties on every message, which halves what one core can take,
and 3.1.1 has all this needs. Acknowledgements are manual: a message is acknowledged only once the
batch holding it has landed (see ``pipeline.collector``).

Broker credentials come from ``EVERGREEN_MQTT_USERNAME`` / ``EVERGREEN_MQTT_PASSWORD``; TLS is on
when the dataset's ``collector.broker.tls.enabled`` says so.
"""

import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt

from pipeline.collector import Collector, Landed
from pipeline.dataset import BrokerSpec
from pipeline.message_contract import PREDICTIONS, TELEMETRY, Received

USERNAME_ENV, PASSWORD_ENV = "EVERGREEN_MQTT_USERNAME", "EVERGREEN_MQTT_PASSWORD"
MAX_IN_FLIGHT = 20_000
"""A publisher waits for acknowledgements beyond this many (paho reuses message ids after 65,535)."""
log = logging.getLogger("evergreen.collector")


class BrokerError(RuntimeError):
    """The broker cannot be reached or refused us; the message names the broker and the reason."""


def topic(prefix: str, site: str, device: str, kind: str) -> str:
    return f"{prefix}/{site}/{device}/{kind}"


def client_for(spec: BrokerSpec, client_id: str, base_dir: Path, *, persistent: bool = False) -> mqtt.Client:
    """A paho client with the broker's credentials (environment) and TLS (dataset config)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                         protocol=mqtt.MQTTv311, manual_ack=persistent)
    if user := os.environ.get(USERNAME_ENV):
        client.username_pw_set(user, os.environ.get(PASSWORD_ENV))
    tls = spec.tls
    if tls.enabled:
        def resolve(name: str | None) -> str | None:
            return None if name is None else str((base_dir / name).resolve())
        client.tls_set(ca_certs=resolve(tls.ca_file), certfile=resolve(tls.cert_file), keyfile=resolve(tls.key_file))
    return client


def connect(client: mqtt.Client, spec: BrokerSpec, timeout_s: float = 10.0) -> None:
    """Connect and wait for the broker's answer: refused credentials are an error, not a hang."""
    answer: dict = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.setdefault("reason", reason)
    where = f"mqtt://{spec.host}:{spec.port}"
    try:
        client.connect(spec.host, spec.port, spec.keepalive_s)
    except OSError as exc:
        raise BrokerError(f"{where}: cannot connect ({exc})") from exc
    deadline = time.monotonic() + timeout_s
    while "reason" not in answer and time.monotonic() < deadline and (sock := client.socket()) is not None:
        # by hand rather than client.loop(), which would set up a wake-up socket written on every ack
        if select.select([sock], [], [], 0.05)[0]:
            client.loop_read()
        if client.want_write():
            client.loop_write()
    if "reason" not in answer:
        raise BrokerError(f"{where}: no answer to CONNECT within {timeout_s:.0f} s")
    if answer["reason"].is_failure:
        raise BrokerError(f"{where}: connection refused: {answer['reason']}"
                          f" (credentials come from {USERNAME_ENV} / {PASSWORD_ENV})")


class CollectorLoop:
    """Drives paho by hand (``loop_read`` until the socket is drained, rather than one select per
    message) and lands the collector's batch on time or on size, then acknowledges it."""

    def __init__(self, collector: Collector, base_dir: Path, on_landed: Callable[[Landed], None] | None = None):
        self.collector, self.spec = collector, collector.config.collector
        self.client = client_for(self.spec.broker, self.spec.client_id, base_dir, persistent=True)
        self.client.on_message = self._on_message
        self.client.on_socket_register_write = lambda *_: None  # acks are queued, then written together
        self.pending: list[int] = []
        self.on_landed = on_landed or _log_landed

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        # paho types a payload as bytes | bytearray (what a publisher may pass); a received one is bytes
        self.collector.receive(Received(message.topic, cast(bytes, message.payload), time.time()))
        self.pending.append(message.mid)

    def run(self, stop: threading.Event) -> None:
        """Collect until ``stop`` is set (a session lands and acknowledges what it has as it ends)."""
        while not stop.is_set():
            try:
                self._session(stop)
            except BrokerError as exc:
                log.warning("%s; retrying in 2 s", exc)
                stop.wait(2.0)

    def _session(self, stop: threading.Event) -> None:
        broker = self.spec.broker
        connect(self.client, broker)
        self.client.on_subscribe = self._granted
        self.client.subscribe([(name, 1) for name in self.subscriptions()])
        try:
            while not stop.is_set():
                if not self._pump():
                    raise BrokerError(f"mqtt://{broker.host}:{broker.port}: connection lost")
                if self.collector.due(time.time()):
                    self._land()
        finally:
            if stop.is_set():
                self._land()
                self.client.disconnect()
            else:
                # the broker delivers the unacknowledged messages again on the new connection
                self._land(acknowledge=False)

    def _granted(self, _client, _userdata, _mid, reasons: list, _properties) -> None:
        """The broker's answer to SUBSCRIBE: until it comes, what devices publish is not kept for
        this session, so "collecting" is said only now."""
        broker = self.spec.broker
        if refused := [name for name, reason in zip(self.subscriptions(), reasons) if reason.is_failure]:
            raise BrokerError(f"mqtt://{broker.host}:{broker.port}: subscription refused for {refused}")
        log.info("collecting %s on %s:%s", " and ".join(self.subscriptions()), broker.host, broker.port)

    def subscriptions(self) -> list[str]:
        prefix, group = self.spec.broker.topic_prefix, self.spec.shared_group
        names = [topic(prefix, "+", "+", TELEMETRY), topic(prefix, "+", "+", PREDICTIONS)]
        return [f"$share/{group}/{name}" for name in names] if group else names

    def _pump(self) -> bool:
        """Read everything waiting (up to a roll's worth), write acknowledgements, keep alive."""
        sock = self.client.socket()
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            for _ in range(self.spec.roll_rows):
                before = len(self.pending)
                if self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                    return False
                if len(self.pending) == before or self.collector.due(time.time()):
                    break
        if self.client.want_write() and self.client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
            return False
        return self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS

    def _land(self, acknowledge: bool = True) -> None:
        if self.collector.batch.messages == 0:
            return
        landed = self.collector.land()
        if acknowledge:
            for mid in self.pending:
                self.client.ack(mid, 1)
            self.client.loop_write()
        self.pending = []
        self.on_landed(landed)


def _log_landed(landed: Landed) -> None:
    log.info("landed %d messages: %s rows, %d rejected, %d duplicates, %d files",
             landed.messages, landed.rows or "no", landed.rejects, landed.duplicates, len(landed.files))


def publish(client: mqtt.Client, messages: Iterable[tuple[str, bytes]], rate: float | None = None,
            timeout_s: float = 120.0) -> int:
    """Publish at QoS 1 (at most ``rate`` per second) and wait until the broker has every one.

    No callback: paho calls ``on_publish`` holding its own locks, and a lock of ours around
    ``publish`` would deadlock with it. The broker acknowledges in order, so the oldest message
    tells when there is room for more."""
    waiting: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
    client.loop_start()
    started, sent = time.monotonic(), 0
    try:
        for sent, (name, payload) in enumerate(messages, start=1):
            waiting.append(client.publish(name, payload, qos=1))
            while waiting and (waiting[0].is_published() or len(waiting) >= MAX_IN_FLIGHT):
                if waiting[0].is_published():
                    waiting.popleft()
                else:
                    time.sleep(0.001)
            if rate:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        deadline = time.monotonic() + timeout_s
        for info in waiting:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if unsent := sum(not info.is_published() for info in waiting):
            raise BrokerError(f"{unsent} of {sent} messages not acknowledged within {timeout_s:.0f} s")
    finally:
        client.loop_stop()
    return sent
