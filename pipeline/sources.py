"""Where raw telemetry comes from: the simulator, or CSV / Parquet files in a landing folder.

A landing file belongs to the daily partition whose date (``YYYY-MM-DD``) its name or folder carries,
so the landing sensor can map a new file to its partition without opening it. Raw is kept as it
came: CSV cells stay strings (a malformed cell is not lost to type inference), and every row records
the file and line it came from, so later errors and quarantine reasons can name them.
"""

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.dataset import DatasetConfig
from pipeline.message_contract import PREDICTED_CLASS
from pipeline.simulator import TRUTH, simulate_day

SOURCE_FILE, SOURCE_ROW = "_source_file", "_source_row"
LANDING_SUFFIXES = (".csv", ".parquet")
_DATE_IN_PATH = re.compile(r"(\d{4}-\d{2}-\d{2})")


class SourceError(ValueError):
    """A landing file that cannot be read at all; the message names the file."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    day: dt.date

    @property
    def partition_key(self) -> str:
        return self.day.isoformat()

    def content_hash(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def landing_file(path: Path) -> LandingFile | None:
    """The landing file at ``path`` with its day, or None when it is not a dated data file."""
    if path.suffix.lower() not in LANDING_SUFFIXES or path.name.startswith("."):
        return None
    for part in reversed(path.parts):
        if match := _DATE_IN_PATH.search(part):
            try:
                return LandingFile(path, dt.date.fromisoformat(match.group(1)))
            except ValueError:
                return None
    return None


def list_landing_files(landing_dir: Path) -> list[LandingFile]:
    """Dated data files below ``landing_dir``, oldest day first (hidden in-flight files skipped)."""
    if not landing_dir.is_dir():
        return []
    found = (landing_file(p) for p in sorted(landing_dir.rglob("*")) if p.is_file())
    return sorted((f for f in found if f is not None), key=lambda f: (f.day, str(f.path)))


def read_landing_file(path: Path, csv_separator: str = ",") -> pl.DataFrame:
    """One file as it came, plus ``_source_file`` and ``_source_row`` (1-based data row)."""
    try:
        if path.suffix.lower() == ".csv":
            frame = pl.read_csv(path, infer_schema=False, separator=csv_separator, encoding="utf8-lossy")
        else:
            frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises many types for a broken file; all mean "unreadable"
        raise SourceError(f"{path}: cannot read as {path.suffix.lstrip('.')}: {exc}") from exc
    return frame.with_columns(
        pl.lit(str(path)).alias(SOURCE_FILE),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(SOURCE_ROW),
    )


def read_landing_day(landing_dir: Path, day: dt.date, required: list[str], csv_separator: str = ",") -> pl.DataFrame:
    """Every landing file of ``day``, stacked. Each file must have the ``required`` columns on its
    own: stacking first would fill a file's missing column with nulls that look like gaps."""
    files = [f for f in list_landing_files(landing_dir) if f.day == day]
    if not files:
        raise SourceError(f"{landing_dir}: no landing file for {day.isoformat()} (expected a name with that date)")
    frames = [read_landing_file(f.path, csv_separator) for f in files]
    for found, frame in zip(files, frames):
        if missing := [c for c in required if c not in frame.columns]:
            raise SourceError(f"{found.path}: missing required column(s) {missing}")
    return pl.concat(frames, how="diagonal_relaxed")


def read_raw_day(config: DatasetConfig, day: dt.date) -> pl.DataFrame:
    """The raw rows of one day from the dataset's source, with their provenance columns."""
    if config.source.kind == "simulator":
        frame = simulate_day(config.simulator, day).drop(TRUTH)  # labels return later, via gold_labels
        return frame.with_columns(
            pl.lit(f"simulator:{day.isoformat()}").alias(SOURCE_FILE),
            pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(SOURCE_ROW),
        )
    if config.landing_dir is None:
        raise SourceError(f"dataset {config.name!r}: source.kind is 'landing' but source.landing_dir is not set")
    return read_landing_day(config.landing_dir, day, config.required_source_columns, config.source.csv_separator)


def read_field_predictions(predictions_dir: Path | None, day: dt.date) -> list[str]:
    """The classes devices predicted on ``day`` and published over MQTT (landed by the collector
    under ``<predictions_dir>/<day>/``); empty when no device reported."""
    folder = None if predictions_dir is None else predictions_dir / day.isoformat()
    if folder is None or not folder.is_dir():
        return []
    predicted = []
    for path in sorted(folder.glob("*.parquet")):
        with path.open("rb") as fh:  # through Python's open, like every read of landed data
            predicted += pl.read_parquet(fh, columns=[PREDICTED_CLASS])[PREDICTED_CLASS].to_list()
    return predicted
