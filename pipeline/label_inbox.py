"""The label inbox: where rows go to be labelled by a person, and where their answers come back.

Folders under the inbox root:
- ``queue/<day>.csv``: the rows ``label_queue`` chose on that day, with what a person needs to
  judge them (time, site, hashed device id, readings) and an empty ``label`` column to fill in.
- ``answered/<day>/*.csv``: labelled files that came back on that day (as for landing files, the
  first date in the file's name, else its folder's, is the day: ``alice.csv`` in ``2026-09-11/``). Only ``row_id`` and ``label`` are read; other columns may stay.
- ``rejects/<day>.csv``: every answered row that could not be merged, with file, line and reason.

An answer is merged into ``gold_labels`` when its row id was queued, its label is one of the
classes, and no other answer of that day gives the same row a different label. Everything else is
a reject, never silently dropped; an answer file is read line by line, so one line in a broken
encoding costs that line only. Answered files are kept as they came.
"""

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline import atomic, ids, people_csv, sources
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP, DatasetConfig
from pipeline.simulator import TRUTH, simulate_day

ANSWER_FILE, ANSWER_LINE, REASON = "file", "line", "reason"
REJECT_SCHEMA = {ANSWER_FILE: pl.String, ANSWER_LINE: pl.Int64, ROW_ID: pl.String, LABEL: pl.String, REASON: pl.String}
ANSWER_SCHEMA = {ROW_ID: pl.String, LABEL: pl.String, ANSWER_FILE: pl.String, ANSWER_LINE: pl.Int64}


@dataclass
class Answers:
    """The answers that came back on one day, checked."""

    labels: pl.DataFrame
    """``row_id``, ``label``, ``observed_at`` (the reading's time), ``file``, ``line``: to merge."""
    rejects: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    """files, rows read, merged, rejected, unanswered (label left empty), duplicates (same answer twice)."""


@dataclass(frozen=True)
class LabelInbox:
    root: Path

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def answered_dir(self) -> Path:
        return self.root / "answered"

    def queue_path(self, day: dt.date) -> Path:
        return self.queue_dir / f"{day.isoformat()}.csv"

    def rejects_path(self, day: dt.date) -> Path:
        return self.root / "rejects" / f"{day.isoformat()}.csv"

    def write_queue(self, day: dt.date, rows: pl.DataFrame) -> Path:
        """The day's queue, atomically, with an empty ``label`` column last (the one to fill in).
        Labellers open it in a spreadsheet: formula-leading cells are neutralised (``people_csv``)."""
        frame = rows.drop(LABEL, strict=False).with_columns(pl.lit(None, pl.String).alias(LABEL))
        return people_csv.write(frame, self.queue_path(day))

    def issued(self) -> pl.DataFrame:
        """Every queued row so far: ``row_id`` and the reading's ``timestamp``."""
        frames = [pl.read_csv(p, columns=[ROW_ID, TIMESTAMP], schema_overrides={ROW_ID: pl.String, TIMESTAMP: pl.String})
                  for p in sorted(self.queue_dir.glob("*.csv"))]
        if not frames:
            return pl.DataFrame(schema={ROW_ID: pl.String, TIMESTAMP: pl.Datetime("us", "UTC")})
        issued = pl.concat(frames).unique(ROW_ID, keep="first")
        return issued.with_columns(pl.col(TIMESTAMP).str.to_datetime(time_zone="UTC", time_unit="us"))

    def answer_files(self, day: dt.date) -> list[Path]:
        return [f.path for f in sources.list_landing_files(self.answered_dir) if f.day == day]

    @property
    def returned_dir(self) -> Path:
        return self.root / "returned"

    def read_answers(self, day: dt.date, classes: tuple[str, ...]) -> Answers:
        """The day's answered files, validated against the queue and the classes."""
        return self._read(self.answer_files(day), classes, self.issued())

    def merged_by_day(self, classes: tuple[str, ...], through: dt.date) -> dict[dt.date, set[str]]:
        """The row ids each day's answers merged (as ``read_answers`` of that day), for every day up
        to ``through`` that has answers; the queue and the answer folders are read once, not per day."""
        files: dict[dt.date, list[Path]] = {}
        for found in sources.list_landing_files(self.answered_dir):
            if found.day <= through:
                files.setdefault(found.day, []).append(found.path)
        issued = self.issued()
        return {day: set(self._read(paths, classes, issued).labels[ROW_ID].to_list()) for day, paths in sorted(files.items())}

    def read_returned(self, day: dt.date, classes: tuple[str, ...]) -> Answers:
        """Labels that came back on ``day`` for any reading, not only queued ones (``returned/<day>/*.csv``,
        ``row_id`` and ``label``): late labels from the user's own ticket system, or a backtest's
        label delay. Checked against the classes like answers; ``observed_at`` is not known."""
        files = [f.path for f in sources.list_landing_files(self.returned_dir) if f.day == day]
        return self._read(files, classes, issued=None)

    def _read(self, files: list[Path], classes: tuple[str, ...], issued: pl.DataFrame | None) -> Answers:
        """Answer files read line by line, checked (queued when ``issued`` is given, a known class,
        no conflicting answer) into labels to merge and rejects with reasons."""
        read, rejects, unanswered = [], [], 0
        for path in files:
            rows, bad, empty = _read_answer_file(path)
            read += rows
            rejects += bad
            unanswered += empty
        answers = pl.DataFrame(read, schema=ANSWER_SCHEMA, orient="row")
        queued = pl.lit(True) if issued is None else pl.col(ROW_ID).is_in(issued[ROW_ID].implode())
        answers = answers.with_columns(
            pl.when(~queued).then(pl.lit("row_id was never queued for labelling"))
            .when(~pl.col(LABEL).is_in(list(classes))).then(pl.format("label '{}' is not one of " + ", ".join(classes), pl.col(LABEL)))
            .alias(REASON)
        )
        answers, conflicts = _conflicts(answers)
        valid = answers.filter(pl.col(REASON).is_null())
        merged = valid.unique(ROW_ID, keep="first", maintain_order=True)
        rejected = pl.concat([pl.DataFrame(rejects, schema=REJECT_SCHEMA, orient="row"),
                              answers.filter(pl.col(REASON).is_not_null()).select(list(REJECT_SCHEMA)), conflicts.select(list(REJECT_SCHEMA))])
        if issued is None:
            labels = merged.with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("observed_at"))
        else:
            labels = merged.join(issued.rename({TIMESTAMP: "observed_at"}), on=ROW_ID, how="left")
        counts = {"files": len(files), "rows": len(read) + len(rejects) + unanswered, "merged": merged.height,
                  "rejected": rejected.height, "unanswered": unanswered, "duplicates": valid.height - merged.height}
        return Answers(labels.select(ROW_ID, LABEL, "observed_at", ANSWER_FILE, ANSWER_LINE), rejected, counts)

    def write_rejects(self, day: dt.date, rejects: pl.DataFrame) -> Path | None:
        """The day's rejects file (rewritten whole, atomically); none when nothing was rejected."""
        path = self.rejects_path(day)
        if rejects.height == 0:
            path.unlink(missing_ok=True)
            return None
        return people_csv.write(rejects.sort(ANSWER_FILE, ANSWER_LINE), path)


def _read_answer_file(path: Path) -> tuple[list[tuple], list[tuple], int]:
    """(row_id, label, file, line) answers, (file, line, row_id, label, reason) rejects, and how
    many rows were left unlabelled. Each line is decoded on its own: a stray byte costs one line."""
    name = str(path)
    lines = path.read_bytes().splitlines()
    try:
        header = next(csv.reader([lines[0].decode("utf-8-sig")])) if lines else []
    except UnicodeDecodeError as exc:
        return [], [(name, 1, None, None, f"header is not UTF-8 (byte {exc.start + 1}); whole file unread")], 0
    header = [h.strip() for h in header]
    if ROW_ID not in header or LABEL not in header:
        return [], [(name, 1, None, None, f"header {header} lacks a '{ROW_ID}' or '{LABEL}' column; whole file unread")], 0
    at_id, at_label = header.index(ROW_ID), header.index(LABEL)
    answers, rejects, unanswered = [], [], 0
    for number, raw in enumerate(lines[1:], start=2):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejects.append((name, number, None, None, f"line is not UTF-8 (byte {exc.start + 1})"))
            continue
        if not text.strip():
            continue
        fields = next(csv.reader(io.StringIO(text)))
        if len(fields) != len(header):
            rejects.append((name, number, None, None, f"{len(fields)} fields where the header has {len(header)}"))
            continue
        row_id, label = (people_csv.restored(fields[at].strip()) for at in (at_id, at_label))
        if not label:
            unanswered += 1
            continue
        answers.append((row_id, label, name, number))
    return answers, rejects, unanswered


def _conflicts(answers: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows answered with two different labels (in one file or several) are all rejected: which one
    is right is for a person to settle, not for file order."""
    valid = answers.filter(pl.col(REASON).is_null())
    labels_per_row = valid.group_by(ROW_ID).agg(pl.col(LABEL).unique().sort().alias("__labels"))
    disputed = labels_per_row.filter(pl.col("__labels").list.len() > 1)
    conflicts = valid.join(disputed, on=ROW_ID).with_columns(
        pl.format("conflicting labels for one row: {}", pl.col("__labels").list.join(" / ")).alias(REASON)
    ).drop("__labels")
    return answers.filter(~(pl.col(REASON).is_null() & pl.col(ROW_ID).is_in(disputed[ROW_ID].implode()))), conflicts


def oracle_answers(inbox: LabelInbox, config: DatasetConfig, day: dt.date, hash_key: bytes) -> Path | None:
    """Demo mode: the simulator's oracle answers the queue of ``answer_lag_days`` before ``day``, as a
    person would, by dropping a labelled file in the inbox (left alone if already there)."""
    queued_on = day - dt.timedelta(days=config.labelling.active.answer_lag_days)
    queue = inbox.queue_path(queued_on)
    target = inbox.answered_dir / day.isoformat() / f"{day.isoformat()}-oracle-answers-to-{queued_on.isoformat()}.csv"
    if not queue.is_file() or target.exists():
        return None
    asked = pl.read_csv(queue, columns=[ROW_ID], schema_overrides={ROW_ID: pl.String})
    sim = simulate_day(config.simulator, queued_on)
    truth = sim.select(ids.row_id(pl.col("device_id"), pl.col("ts"), hash_key).alias(ROW_ID), pl.col(TRUTH).alias(LABEL))
    answered = asked.join(truth.unique(ROW_ID, keep="first"), on=ROW_ID, how="left").with_columns(pl.col(LABEL).fill_null(""))
    with atomic.atomic_path(target) as tmp:
        answered.write_csv(tmp)
    return target
