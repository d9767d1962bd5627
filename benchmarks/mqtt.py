"""MQTT collector benchmark: sustained ingest on one core, publish-to-landed latency, memory over time.

    python -m benchmarks.mqtt [--record] [--messages 200000] [--rate 3000] [--minutes 5]

A local Mosquitto (``deploy.broker``) on 127.0.0.1, the collector as its own process (``deploy.collect``)
pinned to one core, the broker and the publisher on the other. Three runs:
- throughput: the messages are queued at the broker while the collector is down, then it drains them,
  so the figure is the collector's and not the publisher's; it is read from the collector's own log
  (messages per roll and roll times), after its first roll. The same drain through a collector that
  does nothing gives paho's own ceiling on that core;
- latency: devices publish at ``--rate``; a message's latency is its landed file's time (written,
  then renamed) minus its publish time, so the roll interval is most of it;
- memory: the same live stream for ``--minutes``, the collector's resident memory sampled each 5 s.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from benchmarks.results import emit_report, machine

ROOT = Path(__file__).resolve().parent.parent
LANDED_LINE = re.compile(r"^(\S+ \S+) evergreen.collector INFO landed (\d+) messages")
COLLECTOR_CORE = 0


def dataset(workdir: Path, port: int, **collector) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "dataset.yaml"
    path.write_text(yaml.safe_dump({
        "extends": str(ROOT / "examples" / "mqtt" / "dataset.yaml"),
        "source": {"landing_dir": str(workdir / "landing")},
        "simulator": {"devices_per_site": 1000},
        "collector": {"broker": {"port": port}, "client_id": "bench", **collector},
    }))
    return path


def start_collector(path: Path, log: Path) -> subprocess.Popen:
    """The collector on one core (the broker and publisher stay off it)."""
    return subprocess.Popen([sys.executable, "-m", "deploy.collect", "--dataset", str(path)], cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {COLLECTOR_CORE}))


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def wait_for(condition, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark condition not met; the collector's log ends:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def messages(config, n: int) -> list[tuple[str, bytes]]:
    from pipeline.devices import telemetry_messages

    out, day = [], dt.date(2026, 11, 1)
    while len(out) < n:
        out += [(m.topic, m.payload) for m in telemetry_messages(config, day)]
        day += dt.timedelta(days=1)
    return out[:n]


def publisher(config, name: str):
    from pipeline.mqtt import client_for, connect

    client = client_for(config.collector.broker, name, config.base_dir)
    connect(client, config.collector.broker)
    return client


def landed_rolls(log: Path) -> list[tuple[float, int]]:
    rolls = []
    for line in log.read_text().splitlines():
        if match := LANDED_LINE.match(line):
            stamp = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            rolls.append((stamp, int(match.group(2))))
    return rolls


def throughput(workdir: Path, port: int, n: int) -> dict:
    from pipeline.dataset import load_dataset_config
    from pipeline.mqtt import publish

    path = dataset(workdir, port, roll_rows=20_000, roll_seconds=1.0)
    config, log = load_dataset_config(path), workdir / "throughput.log"
    collector = start_collector(path, log)  # once, so the broker holds its session and subscription
    wait_for(lambda: "collecting" in log.read_text(), 60, log)
    stop(collector)
    payloads = messages(config, n)
    started = time.perf_counter()
    publish(publisher(config, "bench-fill"), payloads)
    fill_rate = n / (time.perf_counter() - started)
    collector = start_collector(path, log)
    wait_for(lambda: sum(count for _, count in landed_rolls(log)) >= n, 600, log)
    stop(collector)
    rolls = landed_rolls(log)
    (first, _), rest = rolls[0], rolls[1:]
    drained = sum(count for _, count in rest)
    return {"messages": n, "rate": drained / (rest[-1][0] - first), "publish_rate": fill_rate,
            "payload_bytes": int(np.mean([len(p) for _, p in payloads]))}


class CountingCollector:
    """Receives and counts, validates and lands nothing: what paho alone costs per message."""

    def __init__(self, config):
        from pipeline.collector import Batch

        self.config, self.batch, self.new_batch = config, Batch(), Batch

    def receive(self, message) -> None:
        self.batch.messages += 1
        self.batch.opened_at = self.batch.opened_at or message.received_at

    def due(self, now: float) -> bool:
        return self.batch.messages >= self.config.collector.roll_rows

    def land(self):
        from pipeline.collector import Landed

        landed, self.batch = Landed([], {}, 0, 0, self.batch.messages), self.new_batch()
        return landed


def paho_ceiling(workdir: Path, port: int, n: int) -> float:
    """The same drain through ``CollectorLoop`` with a collector that does nothing, on one core."""
    from pipeline.dataset import load_dataset_config
    from pipeline.mqtt import CollectorLoop, publish

    config = load_dataset_config(dataset(workdir / "ceiling", port, roll_rows=20_000, client_id="bench-ceiling"))
    counted: list[tuple[float, int]] = []
    stop_event = threading.Event()

    def on_landed(landed) -> None:
        counted.append((time.perf_counter(), landed.messages))
        if sum(c for _, c in counted) >= n:
            stop_event.set()

    loop = CollectorLoop(CountingCollector(config), config.base_dir, on_landed)
    threading.Timer(2.0, stop_event.set).start()
    loop.run(stop_event)  # subscribe once, so the broker queues for this session
    publish(publisher(config, "bench-ceiling-fill"), messages(config, n))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {COLLECTOR_CORE})
    try:
        counted.clear()
        stop_event = threading.Event()
        loop.run(stop_event)
    finally:
        os.sched_setaffinity(0, before)
    (first, _), rest = counted[0], counted[1:]
    return sum(c for _, c in rest) / (rest[-1][0] - first)


def live(workdir: Path, port: int, rate: float, seconds: float, roll_seconds: float, name: str) -> dict:
    """Publish at ``rate`` for ``seconds``; latencies from landed file times; RSS every 5 s."""
    from pipeline.dataset import load_dataset_config
    from pipeline.mqtt import publish

    run_dir = workdir / name
    run_dir.mkdir()
    path = dataset(run_dir, port, roll_seconds=roll_seconds, client_id=f"bench-{name}")
    config, log = load_dataset_config(path), run_dir / "collector.log"
    payloads = messages(config, int(rate * seconds))
    sent_at: dict[str, float] = {}

    def stamped():
        for topic, payload in payloads:
            sent_at[f"{topic.split('/')[2]}:{json.loads(payload)['msg_id']}"] = time.time()
            yield topic, payload

    collector = start_collector(path, log)
    wait_for(lambda: "collecting" in log.read_text(), 60, log)
    rss, done = [], threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(5.0):
            rss.append((time.monotonic() - started, _rss_mib(collector.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    publish(publisher(config, f"bench-devices-{name}"), stamped(), rate=rate)
    elapsed = time.perf_counter() - started
    wait_for(lambda: sum(count for _, count in landed_rolls(log)) >= len(payloads), 120, log)
    done.set()
    stop(collector)
    latencies = []
    for file in config.landing_dir.rglob("*.parquet"):
        landed_at = file.stat().st_mtime
        latencies += [landed_at - sent_at[key] for key in pl.read_parquet(file, columns=["msg_id"])["msg_id"]]
    return {"messages": len(payloads), "achieved_rate": len(payloads) / elapsed, "roll_seconds": roll_seconds,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "rss": rss, "dedup_keys": config.collector.dedup_keys}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(tp: dict, ceiling: float, latency: dict, memory: dict) -> str:
    rss = memory["rss"]
    by_minute = " / ".join(f"{min(m for t, m in rss if t <= 60 * k + 2.5 and t >= 60 * k - 2.5):.0f}"
                           for k in range(1, int(rss[-1][0] // 60) + 1))
    lines = [
        f"## {dt.date.today().isoformat()}: MQTT collector (`python -m benchmarks.mqtt`)",
        f"Machine: {machine()}. Mosquitto 2 on 127.0.0.1; the collector pinned to one core; MQTT 3.1.1, QoS 1,",
        "acknowledged after landing. Payloads are the simulator's readings as JSON.",
        "",
        "| figure | value |", "|---|---|",
        f"| sustained ingest, one core (queued {tp['messages']:,} messages drained; {tp['payload_bytes']} bytes each) | "
        f"**{tp['rate']:,.0f} msg/s** (target 20,000) |",
        f"| same drain, paho alone (a collector that validates and lands nothing), one core | {ceiling:,.0f} msg/s |",
        f"| publish-to-landed latency at {latency['achieved_rate']:,.0f} msg/s, roll every {latency['roll_seconds']} s: p50 / p99 | "
        f"{latency['p50_ms']:,.0f} / {latency['p99_ms']:,.0f} ms |",
        f"| collector memory, {rss[-1][0] / 60:.1f} min live at {memory['achieved_rate']:,.0f} msg/s ({memory['messages']:,} messages, "
        f"{memory['dedup_keys']:,} keys remembered): at 5 s, then each minute; peak | "
        f"{rss[0][1]:.0f}, then {by_minute}; peak {max(m for _, m in rss):.0f} MiB |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=3000.0, help="live stream, messages per second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--throughput-only", action="store_true", help="the drain figures alone (a minute, not ten)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from deploy import broker

    with tempfile.TemporaryDirectory(prefix="evergreen-mqtt-bench-") as tmp, broker.running() as local:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(local.process.pid, {1 - COLLECTOR_CORE})
        workdir = Path(tmp)
        tp = throughput(workdir, local.port, args.messages)
        print({"throughput": tp}, flush=True)
        ceiling = paho_ceiling(workdir, local.port, args.messages)
        print({"paho_ceiling": ceiling}, flush=True)
        if args.throughput_only:
            return 0
        latency = live(workdir, local.port, args.rate, 30, 1.0, "latency")
        print({k: v for k, v in latency.items() if k != "rss"}, flush=True)
        memory = live(workdir, local.port, args.rate, 60 * args.minutes, 1.0, "memory")
        text = report(tp, ceiling, latency, memory)
    emit_report(text, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
