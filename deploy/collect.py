"""The MQTT collector: subscribe to the devices' topics and land micro-batches until stopped.

    EVERGREEN_DATASET=examples/mqtt/dataset.yaml python -m deploy.collect [--seconds N]

The broker, topic prefix and batch sizes are the dataset's ``collector`` section; the broker's user
name and password come from ``EVERGREEN_MQTT_USERNAME`` / ``EVERGREEN_MQTT_PASSWORD``. SIGTERM or
Ctrl-C lands the open batch and acknowledges it before exiting; a harder stop loses nothing either
(the broker delivers the unacknowledged messages again).
"""

import argparse
import logging
import signal
import threading
from pathlib import Path

from deploy.cli import config_errors_are_plain
from pipeline.collector import Collector
from pipeline.dataset import dataset_path, load_dataset_config
from pipeline.mqtt import CollectorLoop


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Collect device telemetry from MQTT into the landing folder.")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset YAML (default: $EVERGREEN_DATASET)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until stopped)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_dataset_config(args.dataset or dataset_path())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.seconds is not None:
        threading.Timer(args.seconds, stop.set).start()
    CollectorLoop(Collector(config), config.base_dir).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
