"""Live telemetry over a real Mosquitto: devices publish, the collector (killed and restarted mid-stream)
lands every valid message exactly once and every invalid one in rejects, and the day materializes."""

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

import definitions
from assets.data import clean_telemetry, raw_telemetry
from deploy import broker as local_broker
from pipeline.collector import Collector, read_rejects
from pipeline.dataset import DatasetConfig, load_dataset_config
from pipeline.devices import telemetry_messages
from pipeline.evergreen_edge import MqttTarget, publish_predictions
from pipeline.mqtt import PASSWORD_ENV, USERNAME_ENV, BrokerError, CollectorLoop, client_for, connect, publish
from pipeline.sources import read_field_predictions
from sensors.landing import landing_sensor
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # every test starts a broker or the collector command
DAY = dt.date(2026, 11, 1)
REQUIRE_BROKER_ENV = "EVERGREEN_REQUIRE_BROKER"
REASON_OF_DEFECT = {"bad_json": "payload: not JSON", "missing_field": ": missing", "wrong_type": ": expected a number",
                    "out_of_range": "outside valid range", "oversized": "bytes is over the limit"}


def _mosquitto_or_skip() -> None:
    try:
        local_broker.mosquitto_binary()
    except local_broker.BrokerError as exc:
        if os.environ.get(REQUIRE_BROKER_ENV):  # CI installs Mosquitto: there, a missing broker fails
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def broker():
    _mosquitto_or_skip()
    with local_broker.running() as running:
        yield running


def _dataset(tmp_path: Path, port: int, devices_per_site: int = 40, **collector) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump({
        "extends": str(ROOT / "examples" / "mqtt" / "dataset.yaml"),
        "source": {"landing_dir": str(tmp_path / "landing")},
        "simulator": {"devices_per_site": devices_per_site},
        "collector": {"broker": {"port": port}, "client_id": f"collector-{tmp_path.name}", **collector},
    }))
    return path


def _start_collector(dataset: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deploy.collect", "--dataset", str(dataset)], cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _landed(config: DatasetConfig) -> pl.DataFrame:
    files = sorted(config.landing_dir.rglob("*.parquet"))
    return pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame({"msg_id": []}, schema={"msg_id": pl.String})


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_a_killed_collector_loses_and_duplicates_nothing_and_the_day_materializes(broker, tmp_path):
    dataset = _dataset(tmp_path, broker.port, devices_per_site=110, roll_seconds=0.5, roll_rows=2000)
    config = load_dataset_config(dataset)
    messages = telemetry_messages(config, DAY, dirty=False, malformed=0.03)
    valid = {f"{m.topic.split('/')[2]}:{json.loads(m.payload)['msg_id']}" for m in messages if m.defect is None}
    invalid = {hashlib.sha256(m.payload).hexdigest(): m.defect for m in messages if m.defect}
    assert len(messages) >= 10_000 and 0.02 < len(invalid) / len(messages) < 0.05

    log = tmp_path / "collector.log"
    collector = _start_collector(dataset, log)
    publisher = client_for(config.collector.broker, "devices", config.base_dir)
    connect(publisher, config.collector.broker)
    _wait_for(lambda: "collecting" in log.read_text(), 30, "the collector to subscribe")
    sending = threading.Thread(target=publish, args=(publisher, [(m.topic, m.payload) for m in messages]), kwargs={"rate": 2500}, daemon=True)
    sending.start()
    _wait_for(lambda: _landed(config).height > 2000, 30, "the first batches to land")
    collector.send_signal(signal.SIGKILL)  # mid-stream, with a batch in flight and unacknowledged
    collector.wait()
    killed_at = _landed(config).height
    time.sleep(1.0)  # the devices keep publishing; the broker queues for the collector's session
    collector = _start_collector(dataset, log)
    try:
        sending.join(timeout=60)
        assert not sending.is_alive()
        _wait_for(lambda: _landed(config).height + len(read_rejects(config.rejects_dir)) >= len(messages), 60,
                  "every message to land or be rejected")
        time.sleep(1.5)  # a late duplicate would land within a roll
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(timeout=30) == 0

    landed = _landed(config)
    assert 0 < killed_at < len(valid)
    assert landed.height == len(valid) and set(landed["msg_id"]) == valid  # each valid message in exactly one row
    rejects = read_rejects(config.rejects_dir)
    assert len(rejects) == len(invalid) and {r["payload_sha256"] for r in rejects} == set(invalid)
    for reject in rejects:
        assert REASON_OF_DEFECT[invalid[reject["payload_sha256"]]] in reject["reason"]

    resources = definitions.build_resources(str(tmp_path / "data"), str(dataset))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=definitions.defs,
                                          resources={"dataset": resources["dataset"]})
        requests = landing_sensor(context)
        assert DAY.isoformat() in [r.partition_key for r in requests]
        result = dg.materialize([raw_telemetry, clean_telemetry], partition_key=DAY.isoformat(),
                                resources=resources, instance=instance)
    assert result.success
    raw = result.output_for_node("raw_telemetry").collect()  # a LazyFrame: streamed
    assert raw.height == len(valid)
    [reconcile] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rows_reconcile"]
    assert reconcile.passed


def _in_process_collector(config: DatasetConfig) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=CollectorLoop(Collector(config), config.base_dir).run, args=(stop,))
    thread.start()
    return thread, stop


def test_the_edge_runtime_publishes_predictions_that_land_for_the_drift_report(broker, tmp_path):
    config = load_dataset_config(_dataset(tmp_path, broker.port, roll_seconds=0.2))
    thread, stop = _in_process_collector(config)
    try:
        time.sleep(0.5)
        target = MqttTarget("127.0.0.1", broker.port, "east", "CPE-EAST-00003")
        sent = publish_predictions(target, [("none", 0.97), ("fiber", 0.61), ("none", 0.88)], "v20261101-abc")
        assert sent == 3
        today = dt.datetime.now(dt.UTC).date()
        _wait_for(lambda: len(read_field_predictions(config.predictions_dir, today)) == 3, 20, "predictions to land")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert sorted(read_field_predictions(config.predictions_dir, today)) == ["fiber", "none", "none"]
    [path] = (config.predictions_dir / today.isoformat()).glob("*.parquet")
    frame = pl.read_parquet(path)
    assert set(frame["model_version"]) == {"v20261101-abc"} and frame["confidence"].to_list() == [0.97, 0.61, 0.88]


def test_collectors_sharing_a_group_split_the_stream_and_land_each_message_once(broker, tmp_path):
    configs = [load_dataset_config(_dataset(tmp_path, broker.port, roll_seconds=0.2, shared_group="fleet", client_id=name))
               for name in ("collector-a", "collector-b")]
    running = [_in_process_collector(config) for config in configs]
    try:
        time.sleep(0.5)
        messages = telemetry_messages(configs[0], DAY, dirty=False)
        client = client_for(configs[0].collector.broker, "devices-shared", configs[0].base_dir)
        connect(client, configs[0].collector.broker)
        publish(client, [(m.topic, m.payload) for m in messages])
        client.disconnect()
        _wait_for(lambda: _landed(configs[0]).height == len(messages), 30, "the shared stream to land")
    finally:
        for thread, stop in running:
            stop.set()
            thread.join(timeout=30)
    landed = _landed(configs[0])
    assert landed.height == landed["msg_id"].n_unique() == len(messages)
    by_collector = {name: len(list(configs[0].landing_dir.rglob(f"mqtt-{name}-*"))) for name in ("collector-a", "collector-b")}
    assert all(files > 0 for files in by_collector.values()), by_collector


def test_credentials_come_from_the_environment_and_a_wrong_one_is_refused(tmp_path, monkeypatch):
    _mosquitto_or_skip()
    with local_broker.running(users={"collector": "s3cret"}) as secured:
        config = load_dataset_config(_dataset(tmp_path, secured.port))
        spec = config.collector.broker
        monkeypatch.setenv(USERNAME_ENV, "collector")
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        with pytest.raises(BrokerError, match=f"connection refused.*{USERNAME_ENV}"):
            connect(client_for(spec, "c1", config.base_dir), spec)
        monkeypatch.setenv(PASSWORD_ENV, "s3cret")
        client = client_for(spec, "c2", config.base_dir)
        connect(client, spec)
        assert publish(client, [("evergreen/north/CPE-1/telemetry", b"{}")]) == 1
        client.disconnect()


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (made with ``cryptography``)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("evergreen test CA", ca_key, "evergreen test CA", ca_key, ca=True)
    server = certificate("127.0.0.1", server_key, "evergreen test CA", ca_key, ca=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


def test_tls_is_configuration_and_a_broker_we_do_not_trust_is_refused(tmp_path):
    _mosquitto_or_skip()
    ca, certificate, key = _certificates(tmp_path)
    with local_broker.running(tls=(certificate, key)) as secured:
        trusted = load_dataset_config(_dataset(tmp_path, secured.port, roll_seconds=0.2,
                                               **{"broker": {"port": secured.port, "tls": {"enabled": True, "ca_file": str(ca)}}}))
        thread, stop = _in_process_collector(trusted)
        try:
            client = client_for(trusted.collector.broker, "devices-tls", trusted.base_dir)
            connect(client, trusted.collector.broker)
            time.sleep(0.5)
            messages = telemetry_messages(trusted, DAY, dirty=False)[:50]
            publish(client, [(m.topic, m.payload) for m in messages])
            client.disconnect()
            _wait_for(lambda: _landed(trusted).height == 50, 20, "messages over TLS to land")
        finally:
            stop.set()
            thread.join(timeout=30)
        plain = trusted.collector.broker.model_copy(update={"tls": trusted.collector.broker.tls.model_copy(update={"enabled": False})})
        with pytest.raises(BrokerError):
            connect(client_for(plain, "plain", trusted.base_dir), plain, timeout_s=2)
        untrusted = trusted.collector.broker.model_copy(update={"tls": trusted.collector.broker.tls.model_copy(update={"ca_file": None})})
        with pytest.raises(BrokerError, match="certificate verify failed"):
            connect(client_for(untrusted, "untrusted", trusted.base_dir), untrusted)


def test_the_collector_command_needs_no_broker_to_fail_clearly(tmp_path):
    """With no broker listening, the collector keeps retrying and says why; it never crashes."""
    dataset = _dataset(tmp_path, local_broker.free_port())
    log = tmp_path / "collector.log"
    collector = _start_collector(dataset, log)
    try:
        _wait_for(lambda: "cannot connect" in log.read_text(), 30, "the collector to report the missing broker")
        assert collector.poll() is None
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(timeout=30) == 0
