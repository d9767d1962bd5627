"""River's Adaptive Random Forest, prequential on a dataset's landed days: the online-learning reference.

    python benchmarks/river_arf.py --dataset path/to/dataset.yaml --warmup 14 [--days N] --out result.json

River 0.26 needs numpy 2 and the project's environment pins numpy < 2 (alibi-detect), so this script
runs under a separate venv's python (``bash benchmarks/river_env.sh`` makes it) and imports only the
standard library, PyYAML and river: nothing of the project.

It reads the dataset YAML (``extends`` followed, as the project does), then the landing folder's CSV
files (``.csv``, ``.csv.gz``) day by day, in the order of the date in their names, each day's rows in
timestamp order. Every row is first predicted, then learnt (prequential); rows without a label are
predicted only. The first ``--warmup`` days are learnt and not scored, like the backtest's warm-up;
every later day (at most ``--days``) is scored on its labelled rows, predicted before learning from
them. Numeric features are floats, categorical ones strings declared as nominal attributes: River's
Hoeffding trees split on them natively, so no one-hot encoding is needed. A row that cannot be used
(a label outside ``classes``, an unreadable number or timestamp) is counted by reason in the output,
not dropped silently; Evergreen's cleaning quarantines such rows too.
"""

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml
    from river import __version__ as RIVER_VERSION, forest
except ImportError as exc:
    sys.exit(f"{exc}: run this script with the River venv's python (bash benchmarks/river_env.sh prints it)")

SEED = 42
DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")
UTC = dt.timezone.utc


@dataclass(frozen=True)
class Dataset:
    """The few parts of the dataset YAML the replay needs."""

    landing_dir: Path
    timestamp: str
    label: str
    numeric: dict[str, str]
    """Feature name -> source column."""
    categorical: dict[str, str]
    classes: frozenset[str] | None
    separator: str = ","
    timestamp_format: str | None = None


@dataclass
class Replay:
    """The forest and what it has seen: per scored day its labelled rows and how many were right."""

    dataset: Dataset
    model: forest.ARFClassifier
    days: list[dict] = field(default_factory=list)
    learned: int = 0
    skipped: Counter = field(default_factory=Counter)


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The YAML as a mapping, ``extends: other.yaml`` merged under it section by section."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        sys.exit(f"{path}: cannot read dataset config: {exc}")
    if not isinstance(raw, dict):
        sys.exit(f"{path}: a dataset config is a YAML mapping")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = (path.parent / str(parent)).resolve()
    if base in seen or base == path.resolve():
        sys.exit(f"{path}: extends: {parent} extends itself")
    return merged(read_yaml(base, (*seen, path.resolve())), raw)


def merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both_maps else value
    return out


def load_dataset(path: Path) -> Dataset:
    """The dataset's landing folder, roles, features and classes; a missing part is named with the file."""
    raw = read_yaml(path)
    try:
        source, columns = raw.get("source") or {}, raw["columns"]
        features = {kind: {f["name"]: f.get("column") or f["name"] for f in raw["features"] if f["type"] == kind}
                    for kind in ("numeric", "categorical")}
        landing = source["landing_dir"]
        classes = raw.get("classes")
        return Dataset((path.parent / landing).resolve(), columns["timestamp"], columns["label"], features["numeric"],
                       features["categorical"], None if classes is None else frozenset(map(as_written, classes)),
                       source.get("csv_separator", ","), source.get("timestamp_format"))
    except (KeyError, TypeError) as exc:
        sys.exit(f"{path}: cannot read the dataset config's {exc} (needs source.landing_dir, columns.timestamp, "
                 "columns.label and features with name and type)")


def as_written(label: object) -> str:
    """A class as a CSV cell writes it (YAML reads ``true`` as True, the file says ``true``)."""
    return str(label).lower() if isinstance(label, bool) else str(label)


def landing_days(landing_dir: Path) -> dict[dt.date, list[Path]]:
    """The landed CSV files by the date in their names (the file name's, else its folders'), oldest first.
    Any other entry is reported on stderr: Parquet cannot be read without the project's libraries."""
    if not landing_dir.is_dir():
        sys.exit(f"{landing_dir}: the dataset's landing folder does not exist")
    days: dict[dt.date, list[Path]] = {}
    for path in sorted(p for p in landing_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        dates = [m.group(1) for part in path.relative_to(landing_dir).parts for m in DATE_IN_NAME.finditer(part)]
        if not path.name.lower().endswith((".csv", ".csv.gz")) or not dates:
            print(f"{path}: skipped (not a dated .csv or .csv.gz file)", file=sys.stderr)
            continue
        days.setdefault(dt.date.fromisoformat(dates[-1]), []).append(path)
    return dict(sorted(days.items()))


def read_rows(path: Path, dataset: Dataset) -> list[dict[str, str]]:
    """The file's rows as text cells; a missing column is an error naming the file."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=dataset.separator)
        needed = [dataset.timestamp, *dataset.numeric.values(), *dataset.categorical.values()]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"{path}: missing required column(s) {missing}")
        return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        sys.exit(f"{path}: cannot read as UTF-8 CSV: {exc}")


def parse_time(text: str, fmt: str | None) -> dt.datetime:
    """ISO 8601, epoch seconds or milliseconds, or the dataset's ``timestamp_format`` (naive = UTC)."""
    text = text.strip()
    try:
        number = float(text)
        return dt.datetime.fromtimestamp(number / 1000 if abs(number) > 1e11 else number, UTC)
    except ValueError:
        pass
    stamp = dt.datetime.strptime(text, fmt) if fmt else dt.datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def day_rows(files: list[Path], replay: Replay) -> list[tuple[dict, str | None]]:
    """The day's usable rows in timestamp order: (features, label or None when unlabelled)."""
    dataset, timed = replay.dataset, []
    for path in files:
        for row in read_rows(path, dataset):
            try:
                stamp = parse_time(row[dataset.timestamp], dataset.timestamp_format)
                x = {n: float(row[c]) for n, c in dataset.numeric.items() if (row[c] or "").strip()}
            except ValueError:
                replay.skipped["unreadable number or timestamp"] += 1
                continue
            x.update({n: row[c].strip() for n, c in dataset.categorical.items() if (row[c] or "").strip()})
            label = (row.get(dataset.label) or "").strip() or None
            if label is not None and dataset.classes is not None and label not in dataset.classes:
                replay.skipped["label outside classes"] += 1
                continue
            timed.append((stamp, x, label))
    timed.sort(key=lambda t: t[0])
    return [(x, label) for _, x, label in timed]


def play_day(day: dt.date, files: list[Path], replay: Replay, scored: bool) -> None:
    """Predict then learn every row of the day; a scored day's accuracy is over its labelled rows."""
    right = labelled = 0
    for x, label in day_rows(files, replay):
        predicted = replay.model.predict_one(x)
        if label is None:
            continue
        labelled += 1
        right += predicted == label
        replay.model.learn_one(x, label)
        replay.learned += 1
    if scored and labelled:
        replay.days.append({"day": day.isoformat(), "rows": labelled, "accuracy": right / labelled})
    elif scored:
        replay.skipped["scored days without a labelled row"] += 1


def run(dataset_path: Path, warmup: int, days: int | None) -> dict:
    dataset = load_dataset(dataset_path)
    landed = landing_days(dataset.landing_dir)
    if len(landed) <= warmup:
        sys.exit(f"{dataset_path}: {len(landed)} days of history, not more than --warmup {warmup}")
    chosen = list(landed.items())[: warmup + days if days is not None else None]
    model = forest.ARFClassifier(seed=SEED, nominal_attributes=list(dataset.categorical) or None)
    replay = Replay(dataset, model)
    started = time.perf_counter()
    for i, (day, files) in enumerate(chosen):
        play_day(day, files, replay, scored=i >= warmup)
    accuracies = [d["accuracy"] for d in replay.days]
    return {
        "dataset": str(dataset_path), "model": f"river.forest.ARFClassifier (defaults, seed={SEED}, "
        f"nominal_attributes={list(dataset.categorical)})", "river_version": RIVER_VERSION, "warmup": warmup,
        "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "days": replay.days, "rows_scored": sum(d["rows"] for d in replay.days), "rows_learned": replay.learned,
        "skipped": dict(replay.skipped), "wall_seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset YAML (its landing folder holds the history)")
    parser.add_argument("--warmup", type=int, default=14, help="days learnt before scoring starts")
    parser.add_argument("--days", type=int, help="score at most this many days after the warm-up")
    parser.add_argument("--out", type=Path, required=True, help="the result JSON")
    args = parser.parse_args(argv)
    if args.warmup < 0 or (args.days is not None and args.days < 1):
        parser.error("--warmup cannot be negative and --days must be at least 1")
    result = run(args.dataset.resolve(), args.warmup, args.days)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    mean = "none (no labelled row scored)" if result["mean_accuracy"] is None else f"{result['mean_accuracy']:.3f}"
    print(f"{args.dataset}: ARF mean daily accuracy {mean} over {len(result['days'])} days, {result['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
