"""Simulated devices: publish one simulated day of telemetry over MQTT, as the modems would.

    EVERGREEN_DATASET=examples/mqtt/dataset.yaml python -m deploy.devices --day 2026-11-20 [--malformed 0.03] [--rate 500]
"""

import argparse
import datetime as dt
from pathlib import Path

from deploy.cli import config_errors_are_plain
from pipeline.dataset import dataset_path, load_dataset_config
from pipeline.devices import telemetry_messages
from pipeline.mqtt import client_for, connect, publish


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish a simulated day of device telemetry over MQTT.")
    parser.add_argument("--day", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--dataset", type=Path, default=None, help="dataset YAML (default: $EVERGREEN_DATASET)")
    parser.add_argument("--malformed", type=float, default=0.0, help="share of messages broken on purpose")
    parser.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as it goes)")
    args = parser.parse_args(argv)
    config = load_dataset_config(args.dataset or dataset_path())
    messages = telemetry_messages(config, args.day, malformed=args.malformed)
    broker = config.collector.broker
    client = client_for(broker, f"evergreen-devices-{args.day.isoformat()}", config.base_dir)
    connect(client, broker)
    sent = publish(client, ((m.topic, m.payload) for m in messages), rate=args.rate)
    client.disconnect()
    broken = sum(m.defect is not None for m in messages)
    print(f"published {sent} messages for {args.day.isoformat()} to {broker.host}:{broker.port} ({broken} malformed on purpose)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
