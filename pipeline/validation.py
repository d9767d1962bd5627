"""Great Expectations suites derived from the dataset config, run on one day's raw rows.

The suite is built from the contract, never hand-written per dataset: every role and feature column
exists, readings parse and are not null beyond the allowed rate, values sit in their valid ranges,
(device, timestamp) is unique, and labels, where present, are known classes. Results are grouped
into a few named checks (schema, nulls, ranges, uniqueness, labels), each with the failing
expectations, so the orchestrator can show one pass/fail per concern.
"""

import logging
from dataclasses import dataclass, field

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


def expectation_frame(raw: pl.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The raw day under canonical names, each column parsed to its type (unparseable -> null).

    Parsed and converted one column at a time: parsing the whole day at once (every timestamp form
    tried on every cell) held a second copy of the day in polars beside the pandas one."""
    columns = {}
    for source, name in config.role_renames.items():
        if source in raw.columns:
            parsed = raw.select(parse_column(pl.col(source), raw.schema[source], name, config).alias(name)).to_series()
            if name == TIMESTAMP:  # pandas' (and dagster-pandas') datetime unit is nanoseconds
                parsed = parsed.dt.cast_time_unit("ns")
            columns[name] = parsed.to_pandas()
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
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("evergreen")
        .add_dataframe_asset("raw_day")
        .add_batch_definition_whole_dataframe("whole_day")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    outcomes = []
    for name, expectations in _suite_spec(config, set(frame.columns)).items():
        if not expectations:
            outcomes.append(CheckOutcome(name, True, 0))
            continue
        suite = gx.ExpectationSuite(name=name, expectations=expectations)
        result = batch.validate(suite)
        failures = [_failure(r) for r in result.results if not r.success]
        outcomes.append(CheckOutcome(name, bool(result.success), len(result.results), failures))
    return outcomes


def _failure(result) -> dict:
    """A failed expectation as metadata: counts, and a few unexpected values unless they would
    show raw device ids (this runs before ids are hashed, and metadata lands in the event log)."""
    config = result.expectation_config
    column = config.kwargs.get("column") or config.kwargs.get("column_list")
    details = {k: v for k, v in (result.result or {}).items() if k in ("unexpected_count", "unexpected_percent")}
    shows_ids = DEVICE_ID in (column if isinstance(column, list) else [column])
    if not shows_ids and "partial_unexpected_list" in (result.result or {}):
        details["examples"] = [str(v) for v in result.result["partial_unexpected_list"][:5]]
    return {"expectation": config.type, "column": str(column), **details}
