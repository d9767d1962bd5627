"""``make backtest``: replay a dataset's history day by day through the real assets and sensors, and
score the loop against the baselines a team would otherwise run.

    python -m deploy.backtest --dataset YAML --warmup 14 --out DIR [--days N] [--label-delay D]

On a fresh Dagster instance and data folder inside ``--out``:

1. Warm-up: the first ``--warmup`` days are ingested and ``main_job`` trains the first production
   model on the last of them, as ``make run`` does; the static baseline is trained on them.
2. Every later day, in order, as production would see it:
   - the model serving each site that morning (the edge package's shipped precision; a gray
     release's version on its sites) and the baselines are noted;
   - the day's files land (copied into ``--out``; with ``--label-delay D`` without their labels,
     which come back ``D`` days later through the label inbox's ``returned/`` folder) and the real
     ``landing_sensor`` is ticked: its ``ingest_job`` runs with its run key (on the simulator,
     ``ingest_job`` runs for the day);
   - the serving model and the baselines are scored on the day's labelled rows, with the labels of
     the user's files (on the simulator: its truth for every row), before anything learned from them;
   - the real ``canary_sensor``, ``drift_sensor`` and ``label_sensor`` are ticked, as the daemon
     would, and each run they request is executed with its run key, tags and config;
   - the baselines learn from the labels that arrived that day (``daily_retrain`` refits).

Output in ``--out``: ``timeline.csv`` (a row per scored day), ``summary.json``, ``timeline.png``, and
the Dagster instance (``DAGSTER_HOME=DIR/dagster_home dagster dev`` opens it).
"""

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploy.cli import config_errors_are_plain
from pipeline.dataset import DatasetConfig, load_dataset_config

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class Options:
    dataset: Path
    out: Path
    warmup: int = 14
    days: int | None = None
    label_delay: int = 0
    events: list[dt.date] = field(default_factory=list)
    retrain_windows: list[int] = field(default_factory=list)
    settings: tuple[str, ...] = ()
    """``dotted.key=yaml value`` dataset settings for this backtest only."""


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset YAML (its landing folder holds the history)")
    parser.add_argument("--warmup", type=int, default=14, help="days that train the first production model")
    parser.add_argument("--out", type=Path, required=True, help="an empty or new folder for the instance and the results")
    parser.add_argument("--days", type=int, help="replay at most this many days after the warm-up")
    parser.add_argument("--label-delay", type=int, default=0, help="labels reach the pipeline this many days after their reading")
    parser.add_argument("--event", action="append", default=[], type=dt.date.fromisoformat,
                        help="a day the world is known to have changed (repeatable): days to alarm and recovery are reported")
    parser.add_argument("--retrain-windows", default="", help="more nightly-retrain baselines, e.g. 1,3,14 (days of window)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset setting for this backtest, e.g. feedback.estimate.acts=true (repeatable)")
    args = parser.parse_args(argv)
    if args.warmup < 2 or args.label_delay < 0:
        parser.error("--warmup needs at least 2 days and --label-delay cannot be negative")
    windows = [int(w) for w in args.retrain_windows.split(",") if w.strip()]
    return Options(args.dataset.resolve(), args.out.resolve(), args.warmup, args.days, args.label_delay, args.event, windows,
                   tuple(args.settings))


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if options.out.exists() and any(options.out.iterdir()):
        sys.exit(f"{options.out} is not empty: the backtest starts from nothing (remove it or pass another --out)")
    options.out.mkdir(parents=True, exist_ok=True)
    summary = run(options)
    print(json.dumps({k: summary[k] for k in ("days", "mean_accuracy", "events", "false_alarm_days", "seconds_per_day")}, indent=2))
    print(f"\ntimeline, summary and plot in {options.out}; the instance: DAGSTER_HOME={options.out / 'dagster_home'}")
    return 0


def apply_setting(raw: dict, setting: str) -> None:
    """``feedback.estimate.acts=true`` sets that key of a dataset YAML's mapping (the value read as YAML)."""
    key, separator, value = setting.partition("=")
    if not separator or not key:
        sys.exit(f"--set {setting!r}: expected dotted.key=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def staged_dataset(options: Options) -> tuple[Path, DatasetConfig]:
    """The user's YAML, extended so its landing folder is the backtest's own (days land one by one)."""
    user = load_dataset_config(options.dataset)
    if user.landing_dir is None and options.label_delay:
        sys.exit(f"{options.dataset}: --label-delay needs a landing folder; the simulator returns its labels late "
                 "by itself (simulator.label_return)")
    override: dict = {"extends": str(options.dataset)}
    if user.landing_dir is not None:
        override["source"] = {"landing_dir": str(options.out / "landing")}
    for setting in options.settings:
        apply_setting(override, setting)
    path = options.out / "dataset.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return path, user


def run(options: Options) -> dict:
    """Warm up, replay, write the outputs; returns the summary."""
    path, user = staged_dataset(options)
    os.environ.update({"EVERGREEN_DATASET": str(path), "EVERGREEN_DATA_DIR": str(options.out / "data"),
                       "DAGSTER_HOME": str(options.out / "dagster_home")})
    from deploy.backtest_driver import Backtest

    return Backtest(options, user).run()


if __name__ == "__main__":
    sys.exit(main())
