"""A finished simulator replay rescored: where the loop's gap to a nightly retrain comes from.

    python -m benchmarks.served_models REPLAY_OUT
    python -m benchmarks.served_models REPLAY_OUT --fix-day 2026-10-17 --fix VERSION --production VERSION

The replay scores the model the devices run, the shipped ONNX student (int8 when kept, else
fp32); the nightly baselines are LightGBM models. Here each day's serving decisions (production,
and the canary on its site, as the timeline's ``serving`` column says) are scored again on every
row of the day against the simulator's truth, three ways: as shipped, as the fp32 student and as
their teacher. The
first column reproduces the timeline; the teacher column is what the loop's own decisions are worth
without distillation.

``--fix-day`` scores one day had ``--fix`` served every site but one control site (each choice of
control) against ``--production``: what a gray release that started a fix on more sites would have
read that day.

Reads the replay's registry, features and hash key; writes nothing.
"""

import argparse
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import ids
from pipeline.backtest import baseline_predict, scored_rows, simulated_truth
from pipeline.dataset import LABEL, SITE, load_dataset_config
from pipeline.export import ONNX_FILE
from pipeline.registry import Registry, Version
from pipeline.release import predictor
from pipeline.teacher import Teacher

Predict = Callable[[pl.DataFrame], np.ndarray]
SERVED_AS = ("shipped student", "fp32 student", "teacher")
SERVING = re.compile(r"(?P<production>\S+)(?: \+ (?P<canary>\S+) on (?P<sites>.+))?")
NIGHTLY = re.compile(r"retrain_\d+d")
"""The timeline's nightly-retrain baselines (``retrain_3d``...), printed beside the rescoring."""


def served_as(version: Version) -> dict[str, Predict]:
    """The version's student as shipped (int8 when kept, else fp32), its fp32 student and its teacher."""
    teacher = Teacher.load(version.directory)
    return dict(zip(SERVED_AS, (predictor(version), predictor(version, ONNX_FILE),
                                lambda rows: baseline_predict(teacher, rows, fallback=""))))


class Replay:
    """A replay's output folder: its dataset, hash key, registry and timeline."""

    def __init__(self, out: Path):
        self.out, self.config = out, load_dataset_config(out / "dataset.yaml")
        self.key = ids.load_or_create_key(ids.HASH_KEY_ENV, out / "data" / "secrets" / "hash_key")
        self.registry, self._models = Registry(out / "data" / "registry"), {}
        self.timeline = pl.read_csv(out / "timeline.csv")

    def models(self, version: str) -> dict[str, Predict]:
        if version not in self._models:
            self._models[version] = served_as(self.registry.get(version))
        return self._models[version]

    def rows(self, day: dt.date) -> pl.DataFrame:
        features = pl.read_parquet(self.out / "data" / "assets" / "features" / f"{day}.parquet")
        return scored_rows(features, simulated_truth(self.config, day, self.key), self.config.classes)


def rescore_day(replay: Replay, day: dt.date, serving: str) -> dict[str, float]:
    """The day's accuracy with its serving versions served each way."""
    decision = SERVING.fullmatch(serving.strip())
    if decision is None:
        raise ValueError(f"{day}: cannot read the serving column {serving!r}")
    rows = replay.rows(day)
    canary_sites = decision["sites"].split(", ") if decision["canary"] else []
    on_canary = rows[SITE].is_in(canary_sites).to_numpy()
    right = {name: np.zeros(rows.height, bool) for name in SERVED_AS}
    for version, mask in ((decision["production"], ~on_canary), (decision["canary"], on_canary)):
        if version is None or not mask.any():
            continue
        part = rows.filter(pl.Series(mask))
        for name, predict in replay.models(version).items():
            right[name][mask] = predict(part) == part[LABEL].to_numpy()
    return {name: float(hits.mean()) for name, hits in right.items()}


def rescore(replay: Replay) -> pl.DataFrame:
    days = [{"day": row["day"], **rescore_day(replay, dt.date.fromisoformat(row["day"]), row["serving"]),
             **{k: row[k] for k in replay.timeline.columns if NIGHTLY.fullmatch(k)}}
            for row in replay.timeline.iter_rows(named=True)]
    return pl.DataFrame(days)


def fix_on_more_sites(replay: Replay, day: dt.date, fix: str, production: str) -> dict[str, float]:
    """The day's accuracy with ``fix`` on every site but each control site in turn (as shipped)."""
    rows = replay.rows(day)
    truth, sites = rows[LABEL].to_numpy(), rows[SITE].to_numpy()
    fix_right = replay.models(fix)["shipped student"](rows) == truth
    production_right = replay.models(production)["shipped student"](rows) == truth
    return {"fix on every site": float(fix_right.mean()), "production on every site": float(production_right.mean()),
            **{f"control {site}": float(np.where(sites == site, production_right, fix_right).mean())
               for site in sorted(set(sites))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replay", type=Path, help="a replay's --out folder")
    parser.add_argument("--fix-day", type=dt.date.fromisoformat)
    parser.add_argument("--fix", help="the fix's version (with --fix-day)")
    parser.add_argument("--production", help="production's version that day (with --fix-day)")
    args = parser.parse_args(argv)
    replay = Replay(args.replay)
    if args.fix_day:
        if not (args.fix and args.production):
            parser.error("--fix-day needs --fix and --production")
        for name, accuracy in fix_on_more_sites(replay, args.fix_day, args.fix, args.production).items():
            print(f"{name}: {accuracy:.4f}")
        return 0
    table = rescore(replay)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=4):
        print(table)
        print(table.drop("day").mean())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
