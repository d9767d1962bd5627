"""Label efficiency on the simulator (``python -m benchmarks.labelling``), recorded in RESULTS.md.

A window of ``window_days`` simulated days, run through the real cleaning and features, with every
row's true label known. A gold-label budget is a share of the window's rows:
- random: that share of rows, drawn at random (the ticket system returns labels at random);
- active: 1% at random (a cold start), the rest queried from training devices by the configured
  strategy (query by committee), in steps along the budget grid, as ``label_queue`` does daily.
Each is trained on gold labels only and with the labelling methods (self-training, weak
supervision, augmentation), then scored by macro-F1 on every row of the test devices in the
newest ``test_days`` days; the reference is the same teacher trained on every label. The
self-training ablation counts how many pseudo-labels were wrong with and without the quotas and
the stop rule. Only ``pipeline/`` functions run here: the numbers are the methods', not Dagster's.
"""

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import f1_score

from benchmarks.results import emit_report, machine

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = (0.01, 0.02, 0.05, 0.10, 0.20)
COLD_START = 0.01
WINDOW_START, WINDOW_DAYS, TEST_DAYS = dt.date(2026, 9, 1), 7, 2
SEEDS = (7, 11, 13)
"""Each seed draws its own random gold labels, cold start and committee: the figures are means."""
CURVES = ("random", "random+methods", "active", "active+methods")


def window(config, cache: Path) -> pl.DataFrame:
    """Feature rows of the window with their true label (cached: simulating is the slow part)."""
    path = cache / f"window-{WINDOW_START}-{WINDOW_DAYS}.parquet"
    if not path.exists():
        from tests.support.helpers import days_from, labelled_features
        labelled_features(config, days_from(WINDOW_START, WINDOW_DAYS)).write_parquet(path)
    return pl.read_parquet(path)


class Bench:
    def __init__(self, config, truth: pl.DataFrame, seed: int):
        from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP
        from pipeline.training_set import device_position

        self.config, self.truth, self.seed = config, truth, seed
        self.features = truth.with_columns(pl.lit(None, pl.String).alias(LABEL))
        split = config.training.split
        position = device_position(truth["device_id"])
        newest = truth[TIMESTAMP].dt.date() > truth[TIMESTAMP].dt.date().max() - dt.timedelta(days=TEST_DAYS)
        self.test = truth.filter((position >= split.train + split.validation) & newest)
        self.pool = truth.filter(position < split.train)  # where the queue may ask
        self.row_id, self.label = ROW_ID, LABEL

    def gold(self, rows: pl.DataFrame, source: str) -> pl.DataFrame:
        return rows.select(self.row_id, self.label, pl.lit(source).alias("label_source"))

    def random_gold(self, share: float) -> pl.DataFrame:
        return self.gold(self.truth.sample(fraction=share, seed=self.seed), "oracle")

    def active_gold(self, seed_gold: pl.DataFrame, share: float) -> pl.DataFrame:
        """``seed_gold`` plus rows queried by the configured strategy until ``share`` of rows are labelled."""
        from pipeline import active_learning
        from pipeline.training_set import SPLIT, TRAIN, split_gold

        need = round(share * self.truth.height) - seed_gold.height
        if need <= 0:
            return seed_gold
        frame = split_gold(self.features, seed_gold, self.config, min_per_split=0)
        asked = self.pool.join(seed_gold, on=self.row_id, how="anti")
        scores = active_learning.score_candidates(asked, frame.filter(pl.col(SPLIT) == TRAIN), None, self.config, self.seed)
        chosen = active_learning.select(asked, scores.scores, need)
        return pl.concat([seed_gold, self.gold(chosen, "inbox")])

    def score(self, gold: pl.DataFrame, methods: bool) -> tuple[float, dict]:
        """Test macro-F1 of the teacher trained on ``gold`` (with the labelling methods or without)."""
        from pipeline import self_training, weak_supervision
        from pipeline.teacher import fit_teacher
        from pipeline.training_set import PSEUDO, WEAK, LabelSource, build_training_set, provenance_counts, split_gold

        config = self.config if methods else without_methods(self.config)
        extra = []
        if methods:
            gold_split = split_gold(self.features, gold, config)
            spec = config.labelling
            pseudo = self_training.self_train(gold_split, config, None).labels
            balance = weak_supervision.class_balance(gold, config.classes)
            weak = weak_supervision.weak_labels(self.features, config, balance, seed=self.seed).labels
            extra = [LabelSource(pseudo, PSEUDO, spec.self_training.weight),
                     LabelSource(weak, WEAK, spec.weak.weight, spec.weak.class_quota)]
        frame = build_training_set(self.features, gold, config, extra, min_per_split=5)
        teacher = fit_teacher(frame, config)
        return macro_f1(teacher, self.test, config), provenance_counts(frame)


def without_methods(config):
    labelling = config.labelling.model_copy(update={
        "augmentation": config.labelling.augmentation.model_copy(update={"enabled": False})})
    return config.model_copy(update={"labelling": labelling})


def macro_f1(teacher, rows: pl.DataFrame, config) -> float:
    predicted = teacher.predict_proba(rows).argmax(axis=1)
    truth = np.array([config.classes.index(c) for c in rows["label"]])
    return float(f1_score(truth, predicted, labels=list(range(len(config.classes))), average="macro", zero_division=0))


def efficiency(bench: Bench) -> list[dict]:
    rows, active = [], bench.random_gold(COLD_START)
    for share in BUDGETS:
        random_gold = bench.random_gold(share)
        active = bench.active_gold(active if share > COLD_START else bench.random_gold(share), share)
        row = {"budget": share, "labels": random_gold.height}
        for name, gold in (("random", random_gold), ("active", active)):
            for methods in (False, True):
                started = time.perf_counter()
                f1, sources = bench.score(gold, methods)
                key = f"{name}{'+methods' if methods else ''}"
                row[key], row[f"{key}_s"], row[f"{key}_sources"] = f1, time.perf_counter() - started, sources
        rows.append(row)
        print(row, flush=True)
    return rows


def self_training_ablation(bench: Bench, share: float) -> list[dict]:
    """Pseudo-labels at ``share`` gold labels: how many, how many wrong, validation F1, with and
    without the per-class quotas and the stop rule."""
    from pipeline import self_training
    from pipeline.training_set import split_gold

    gold = bench.random_gold(share)
    results = []
    for quota in (bench.config.labelling.self_training.class_quota, None):
        for stop in (True, False):
            spec = bench.config.labelling.self_training.model_copy(update={"class_quota": quota, "stop_on_drop": stop})
            config = bench.config.model_copy(update={"labelling": bench.config.labelling.model_copy(update={"self_training": spec})})
            result = self_training.self_train(split_gold(bench.features, gold, config), config, None)
            checked = result.labels.join(bench.truth.select(bench.row_id, pl.col(bench.label).alias("truth")), on=bench.row_id)
            wrong = checked.filter(pl.col(bench.label) != pl.col("truth"))
            results.append({"quota": quota, "stop_rule": stop, "pseudo": checked.height, "wrong": wrong.height,
                            "wrong_share": wrong.height / max(checked.height, 1),
                            "per_class": dict(checked.group_by(bench.label).len().sort(bench.label).iter_rows()),
                            "rounds": [r.get("validation_macro_f1") for r in result.rounds], "stopped": result.stopped})
            print(results[-1], flush=True)
    return results


def report(runs: list[list[dict]], full: float, ablation: list[dict], seconds: float) -> str:
    lines = [f"### Labelling: label efficiency ({dt.date.today()})", "",
             f"Machine: {machine()}. "
             f"Command: `python -m benchmarks.labelling`. Wall time {seconds / 60:.1f} min.",
             f"Window {WINDOW_START} + {WINDOW_DAYS} days, macro-F1 on every row of the test devices in the newest "
             f"{TEST_DAYS} days, mean over seeds {list(SEEDS)} (min..max). Fully labelled teacher: **{full:.4f}**.", "",
             "| gold budget | labels | random | random + methods | active | active + methods | active + methods / full |",
             "|---|---|---|---|---|---|---|"]
    for at_budget in zip(*runs):
        cells = []
        for curve in CURVES:
            values = [r[curve] for r in at_budget]
            cells.append(f"{np.mean(values):.4f} ({min(values):.3f}..{max(values):.3f})")
        ratio = np.mean([r["active+methods"] for r in at_budget]) / full
        lines.append(f"| {at_budget[0]['budget']:.0%} | {at_budget[0]['labels']} | {' | '.join(cells)} | {ratio:.1%} |")
    lines += ["", f"Training rows by source (active + methods, seed {SEEDS[0]}):", ""]
    lines += [f"- {r['budget']:.0%}: {r['active+methods_sources']}" for r in runs[0]]
    lines += ["", f"Self-training at 5% random gold labels, seed {SEEDS[0]} (the simulator knows the truth):", "",
              "| class quota | stop rule | pseudo-labels | wrong | wrong share | validation macro-F1 per round | stopped |",
              "|---|---|---|---|---|---|---|"]
    for a in ablation:
        lines.append(f"| {a['quota']} | {a['stop_rule']} | {a['pseudo']} | {a['wrong']} | {a['wrong_share']:.1%} | "
                     f"{a['rounds']} | {a['stopped']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "evergreen-bench")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.dataset import load_dataset_config

    started = time.perf_counter()
    config = load_dataset_config(ROOT / "config" / "broadband.yaml")
    args.cache.mkdir(parents=True, exist_ok=True)
    truth = window(config, args.cache)
    benches = [Bench(config, truth, seed) for seed in SEEDS]
    full, _ = benches[0].score(benches[0].gold(truth, "oracle"), methods=False)
    print({"full": full}, flush=True)
    runs = [efficiency(bench) for bench in benches]
    ablation = self_training_ablation(benches[0], 0.05)
    text = report(runs, full, ablation, time.perf_counter() - started)
    emit_report(text, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
