"""``make demo``: the backtest (``deploy.backtest``) on the simulator, with a firmware roll-out.

The dataset is the default one with its partitions moved so that the roll-out falls on day
``--rollout-day`` of the replay; a warm-up of ``--warmup`` days trains the first production model.
Every replayed day then goes through the real assets and sensors as in any backtest, and the serving
model is scored on all of the day's rows against the simulator's truth (the one number no deployed
system has). Output in ``--out``: ``timeline.csv``, ``summary.json`` and ``timeline.png``, and the
Dagster instance, which the UI can open afterwards.
"""

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

from deploy.backtest import Options, apply_setting, run
from deploy.cli import config_errors_are_plain

ROOT = Path(__file__).resolve().parent.parent


def write_dataset(out: Path, rollout_day: int, warmup: int, devices_per_site: int | None,
                  canary_min_labels: int | None, label_delay: int = 0, settings: tuple[str, ...] = ()) -> tuple[Path, dt.date]:
    """The default dataset YAML with its partitions starting ``warmup + rollout_day`` days before the
    roll-out, labels returning ``label_delay`` days late, and ``settings`` (``dotted.key=yaml value``) applied."""
    raw = yaml.safe_load((ROOT / "config" / "broadband.yaml").read_text())
    rollout = dt.date.fromisoformat(str(raw["simulator"]["drift"]["firmware_rollout"]["date"]))
    first = rollout - dt.timedelta(days=rollout_day + warmup)
    raw["partitions"]["start_date"] = first.isoformat()
    if devices_per_site:
        raw["simulator"]["devices_per_site"] = devices_per_site
    if canary_min_labels:
        raw["deployment"]["canary"]["min_labels"] = canary_min_labels
    raw["simulator"].setdefault("label_return", {})["delay_days"] = label_delay
    for setting in settings:
        apply_setting(raw, setting)
    path = out / "simulator.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, first


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rollout-day", type=int, default=30, help="the replay day (0-based) of the firmware roll-out")
    parser.add_argument("--warmup", type=int, default=7)
    parser.add_argument("--devices-per-site", type=int, help="a smaller fleet for a quick replay")
    parser.add_argument("--canary-min-labels", type=int, help="labels each arm of a gray release needs (a smaller "
                        "fleet returns fewer); default: the dataset's")
    parser.add_argument("--retrain-windows", default="", help="more nightly-retrain baselines, e.g. 1,3,14 (days of window)")
    parser.add_argument("--label-delay", type=int, default=0, help="days before the simulator's labels start coming back "
                        "(simulator.label_return.delay_days); a longer --warmup lets the first model see labels")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset setting for this replay, e.g. feedback.estimate.acts=true (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "replay")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: the replay starts from nothing (remove it or pass another --out)")
    out.mkdir(parents=True, exist_ok=True)
    dataset, first = write_dataset(out, args.rollout_day, args.warmup, args.devices_per_site, args.canary_min_labels,
                                   args.label_delay, tuple(args.settings))
    windows = [int(w) for w in args.retrain_windows.split(",") if w.strip()]
    summary = run(Options(dataset, out, args.warmup, args.days, retrain_windows=windows))
    print(json.dumps({k: summary[k] for k in ("days", "mean_accuracy", "events", "false_alarm_days")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
