"""A Parquet IO manager for polars frames, one file per daily partition.

Written here rather than taken from dagster-polars, whose 0.27 release fails on polars 2.x. An input
that spans several partitions (a time window) arrives as one concatenated frame, whichever number
of upstream days exists, so assets never handle Dagster's one-object-or-dict shapes.

Outputs of one step that must agree with each other (``clean_telemetry`` and ``quarantine``: the
books balance only between the same run's files) name each other in their ``PUBLISH_TOGETHER``
metadata. Each is staged beside its target; once the last is staged, a journal listing the renames
is written, the renames are done and the journal removed. A run killed before the journal leaves the
old files; one killed after it is rolled forward by the next read or write. So a reader sees all of
the step's new files or none of them.

An output may be a ``pl.LazyFrame``: it is streamed into the file (``sink_parquet``), so a big day is
never whole in memory. An input annotated ``pl.LazyFrame`` is scanned, not read, for the same reason:
from the file's compressed bytes held in memory (a few times smaller than the frame).
"""

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

import polars as pl
from dagster import DagsterInvariantViolationError, InputContext, OutputContext, UPathIOManager
from upath import UPath

from pipeline import atomic

PUBLISH_TOGETHER = "evergreen/publish_together"
"""Output metadata: the names of the step's outputs published with this one, all or none."""
_JOURNALS = ".publishing"
_STAGED: dict[tuple[str, str], dict[str, tuple[Path, Path]]] = {}
"""(run, step) -> output name -> (staged file, target), until the group is complete."""


class PolarsParquetIOManager(UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: OutputContext, obj: pl.DataFrame | pl.LazyFrame, path: UPath) -> None:
        if not isinstance(obj, (pl.DataFrame, pl.LazyFrame)):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame or LazyFrame, got {type(obj).__name__}")
        if path.protocol not in ("", "file"):  # object stores write whole objects
            with path.open("wb") as fh:
                _write(obj, fh)
            return
        self._roll_forward()
        group = (context.definition_metadata or {}).get(PUBLISH_TOGETHER)
        if not group:
            with atomic.atomic_path(Path(path.path)) as tmp:  # local: never a half-written file
                _write(obj, tmp)
            return
        self._stage(context, obj, Path(path.path), set(group))

    def _stage(self, context: OutputContext, obj: pl.DataFrame | pl.LazyFrame, target: Path, group: set[str]) -> None:
        """Write ``obj`` beside ``target``; publish the group once all of its outputs are staged."""
        for stale in target.parent.glob(f".{target.name}.*.staged"):  # left by a step that failed half-way
            stale.unlink(missing_ok=True)
        staged = target.with_name(f".{target.name}.{context.run_id}.staged")
        _write(obj, staged)
        atomic.fsync(staged)
        pending = _STAGED.setdefault((context.run_id, context.step_key), {})
        pending[context.name] = (staged, target)
        if group <= set(pending):
            del _STAGED[(context.run_id, context.step_key)]
            self._publish(f"{context.run_id}-{context.step_key}", list(pending.values()))

    def _publish(self, name: str, renames: list[tuple[Path, Path]]) -> None:
        journal = self._journal_dir / f"{name}.json"
        atomic.write_text(journal, json.dumps([[str(s), str(t)] for s, t in renames]))
        self._complete(journal)

    @property
    def _journal_dir(self) -> Path:
        return Path(self._base_path.path) / _JOURNALS

    def _roll_forward(self) -> None:
        """Finish the renames of a publication a killed run had started."""
        if self._journal_dir.is_dir():
            for journal in sorted(self._journal_dir.glob("*.json")):
                self._complete(journal)

    @staticmethod
    def _complete(journal: Path) -> None:
        for staged, target in json.loads(journal.read_text()):
            if Path(staged).exists():
                os.replace(staged, target)
        atomic.fsync(journal.parent)
        journal.unlink()

    def load_from_path(self, context: InputContext, path: UPath) -> pl.DataFrame | pl.LazyFrame:
        if path.protocol in ("", "file"):
            self._roll_forward()
        with path.open("rb") as fh:  # through Python's open: audit hooks (the federated privacy test) see every read
            if _wants_lazy(context):  # the file's bytes, a snapshot a rerun cannot change
                return pl.scan_parquet(io.BytesIO(fh.read()))
            return pl.read_parquet(fh)

    def load_partitions(self, context: InputContext) -> pl.DataFrame:
        """The days' files concatenated in day order. A day missing from an input that allows it
        (``assets.partitions.WINDOW_INPUT``: a window reaching before the first ingested day) is an
        expected, handled condition, so it is skipped with a debug line; Dagster's own loop logs a
        warning for each one (hundreds on a fresh ``make run``). Any other missing day stays an error."""
        allow_missing = (context.definition_metadata or {}).get("allow_missing_partitions", False)
        frames = []
        for key, path in sorted(self._get_paths_for_partitions(context).items()):
            try:
                frames.append(self.load_from_path(context, path))
            except FileNotFoundError:
                if not allow_missing:
                    raise
                context.log.debug(f"partition {key} of {context.asset_key.to_user_string()} not materialized: skipped")
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _wants_lazy(context: InputContext) -> bool:
    """Whether the input is annotated ``pl.LazyFrame`` (a context built without a type is not)."""
    try:
        return context.dagster_type.typing_type is pl.LazyFrame
    except DagsterInvariantViolationError:
        return False


def _write(obj: pl.DataFrame | pl.LazyFrame, target: Path | BinaryIO) -> None:
    if isinstance(obj, pl.LazyFrame):
        obj.sink_parquet(target)
    else:
        obj.write_parquet(target)
