"""Great Expectations suites derived from the dataset config, run on one day's raw rows.

The suite is built from the contract, never hand-written per dataset: every role and feature column
exists, readings parse and are not null beyond the allowed rate, values sit in their valid ranges,
(device, timestamp) is unique, and labels, where present, are known classes. Results are grouped
into a few named checks (schema, nulls, ranges, uniqueness, labels), each with the failing
expectations, so the orchestrator can show one pass/fail per concern.

A big day is validated in batches (``validate_day``): each expectation's counts are added up over
the batches and its ``mostly`` decided on the sums, as Great Expectations decides it on one frame;
only uniqueness needs the whole day, and gets it from a narrow frame of its two columns. The pandas
copy Great Expectations needs then follows the batch, not the day.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl

from pipeline.cleaning import parse_column  # one parser for validation and cleaning
from pipeline.dataset import DEVICE_ID, LABEL, SITE, TIMESTAMP, DatasetConfig

CHECKS = ("schema", "null_rates", "value_ranges", "uniqueness", "label_values")


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    evaluated: int
    failures: list[dict] = field(default_factory=list)


def expectation_frame(raw: pl.DataFrame | pl.LazyFrame, config: DatasetConfig) -> pd.DataFrame:
    """The raw rows under canonical names, each column parsed to its type (unparseable -> null)."""
    return _as_pandas(_parsed(raw, config))


def _parsed(raw: pl.DataFrame | pl.LazyFrame, config: DatasetConfig) -> pl.DataFrame:
    schema = raw.collect_schema()
    return raw.lazy().select(parse_column(pl.col(source), schema[source], name, config).alias(name)
                             for source, name in config.role_renames.items() if source in schema).collect()


def _as_pandas(parsed: pl.DataFrame) -> pd.DataFrame:
    """Converted one column at a time, each dropped from ``parsed`` once converted; timestamps in
    nanoseconds, pandas' (and dagster-pandas') datetime unit."""
    columns = {}
    for name in parsed.columns:
        column = parsed.drop_in_place(name)
        columns[name] = (column.dt.cast_time_unit("ns") if name == TIMESTAMP else column).to_pandas()
    return pd.DataFrame(columns)


def _suite_spec(config: DatasetConfig, columns: set[str]) -> dict[str, list]:
    import great_expectations.expectations as gxe

    quality = config.quality
    mostly_present = 1 - quality.max_null_fraction
    roles = {TIMESTAMP: config.columns.timestamp, DEVICE_ID: config.columns.id, SITE: config.columns.site}
    required = [*(name for name, column in roles.items() if column is not None), *(f.name for f in config.features)]
    spec: dict[str, list] = {name: [] for name in CHECKS}
    spec["schema"] = [gxe.ExpectColumnToExist(column=c) for c in required]
    spec["null_rates"] = [gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly_present) for c in required if c in columns]
    spec["value_ranges"] = [
        gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max, mostly=quality.min_in_range_fraction)
        for f in config.numeric_features if f.name in columns and (f.min is not None or f.max is not None)
    ]
    if {DEVICE_ID, TIMESTAMP} <= columns:  # without an id column each row is its own entity: nothing to check
        spec["uniqueness"] = [gxe.ExpectCompoundColumnsToBeUnique(column_list=[DEVICE_ID, TIMESTAMP], mostly=quality.min_unique_fraction)]
    if LABEL in columns:
        spec["label_values"] = [gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(config.classes))]
    return spec


def validate(frame: pd.DataFrame, config: DatasetConfig) -> list[CheckOutcome]:
    """Run the contract's expectations on ``frame`` with an ephemeral, quiet GE context."""
    run = _Run(config)
    run.add(frame, CHECKS)
    return run.outcomes()


def validate_day(raw: pl.LazyFrame, config: DatasetConfig, check: Callable[[pd.DataFrame], object] = lambda frame: None,
                 ) -> list[CheckOutcome]:
    """The contract's expectations on ``raw``, ``source.validation_batch_rows`` rows at a time,
    each expectation's counts added up; uniqueness on the whole day's (device, timestamp), the device
    as its dense rank (equal ids, equal numbers; a missing id stays missing: two narrow columns
    however long the ids, and the check never shows ids anyway). ``check`` sees each pandas batch
    before Great Expectations does (the asset's Dagster type check)."""
    run, keys, step = _Run(config), [], config.source.validation_batch_rows
    for start in range(0, max(raw.select(pl.len()).collect().item(), 1), step):
        parsed = _parsed(raw.slice(start, step), config)
        keys.append(parsed.select(name for name in (DEVICE_ID, TIMESTAMP) if name in parsed.columns))
        frame = _as_pandas(parsed)
        check(frame)
        run.add(frame, [name for name in CHECKS if name != "uniqueness"])
    day_keys = pl.concat(keys)
    if DEVICE_ID in day_keys.columns:
        day_keys = day_keys.with_columns(pl.col(DEVICE_ID).rank("dense"))
    run.add(_as_pandas(day_keys), ["uniqueness"])
    return run.outcomes()


class _Run:
    """An ephemeral, quiet Great Expectations context, and every expectation's tally so far."""

    def __init__(self, config: DatasetConfig) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._config = config
        self._batches = context.data_sources.add_pandas("evergreen").add_dataframe_asset("raw_day").add_batch_definition_whole_dataframe("rows")
        self._tallies: dict[str, dict[str, _Tally]] = {name: {} for name in CHECKS}

    def add(self, frame: pd.DataFrame, checks: Iterable[str]) -> None:
        """The ``checks``' expectations on ``frame``, in one suite (Great Expectations' overhead is per run)."""
        import great_expectations as gx

        spec = _suite_spec(self._config, set(frame.columns))
        check_of = {e.expectation_type: name for name in checks for e in spec[name]}  # one expectation type per check
        expectations = [e for name in checks for e in spec[name]]
        if not expectations:
            return
        batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
        for result in batch.validate(gx.ExpectationSuite(name="raw_day", expectations=expectations)).results:
            found: Any = result.expectation_config
            key = str(found.kwargs.get("column") or found.kwargs.get("column_list"))
            self._tallies[check_of[found.type]].setdefault(key, _Tally()).add(result)

    def outcomes(self) -> list[CheckOutcome]:
        return [CheckOutcome(name, all(t.success for t in found.values()), len(found),
                             [t.failure() for t in found.values() if not t.success]) for name, found in self._tallies.items()]


@dataclass
class _Tally:
    """One expectation over the batches: its counts added up, its first examples, and success as
    Great Expectations decides it on one frame: ``mostly`` of the rows it considers (those not
    missing) are as expected; vacuously true without such rows. An expectation without counts (a
    column exists) succeeds when it succeeded on every batch."""

    config: Any = None
    succeeded: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[Any] = field(default_factory=list)

    def add(self, result: Any) -> None:
        self.config, self.succeeded = result.expectation_config, self.succeeded and bool(result.success)
        found = result.result or {}
        if "unexpected_count" in found:
            for key in ("element_count", "missing_count", "unexpected_count"):
                self.counts[key] = self.counts.get(key, 0) + (found.get(key) or 0)
        self.examples += found.get("partial_unexpected_list", [])[:_EXAMPLES - len(self.examples)]

    @property
    def considered(self) -> int:
        return self.counts["element_count"] - self.counts["missing_count"]

    @property
    def success(self) -> bool:
        if not self.counts:
            return self.succeeded
        if self.considered == 0:
            return True
        mostly = self.config.kwargs.get("mostly", 1)
        return (float(self.considered) - float(self.counts["unexpected_count"])) / float(self.considered) >= mostly

    def failure(self) -> dict:
        """A failed expectation as metadata: counts, and a few unexpected values unless they would
        show raw device ids (this runs before ids are hashed, and metadata lands in the event log)."""
        column = self.config.kwargs.get("column") or self.config.kwargs.get("column_list")
        details: dict[str, Any] = {}
        if self.counts:
            unexpected = self.counts["unexpected_count"]
            details = {"unexpected_count": unexpected,
                       "unexpected_percent": unexpected / self.considered * 100 if self.considered else None}
        shows_ids = DEVICE_ID in (column if isinstance(column, list) else [column])
        if not shows_ids and self.counts:
            details["examples"] = [str(v) for v in self.examples[:5]]
        return {"expectation": self.config.type, "column": str(column), **details}


_EXAMPLES = 20
"""Unexpected values kept per expectation, as Great Expectations' partial list keeps."""
