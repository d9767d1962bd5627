"""Data layer: raw telemetry in, validated, cleaned with quarantine, featurised, gold-labelled. The
training set, which also takes the labelling layer's labels, is the next layer (``assets/training.py``)."""

import datetime as dt
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
from dagster_pandas import PandasColumn, create_dagster_pandas_dataframe_type

from assets import metadata as md
from assets.common import per_class
from assets.io_manager import PUBLISH_TOGETHER
from assets.partitions import DAILY, HISTORY_WINDOW, WINDOW_INPUT, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import cleaning, features as feature_lib, label_inbox, labels, sources, validation
from pipeline.dataset import DEVICE_ID, LABEL, SITE, TIMESTAMP, DatasetConfig

GROUP = "data"



def _require_own_partition(context: dg.AssetExecutionContext, upstream: dg.AssetKey) -> None:
    """A window input tolerates missing earlier days, but this day's own upstream partition must exist.

    Dagster's asset backfills extend downstream along time-window mappings (backfilling days A..B
    also targets the following days' features); such a day whose own data was never ingested must
    fail with this message, not yield an empty frame.
    """
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=upstream, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        raise dg.Failure(
            f"{upstream.to_user_string()} {context.partition_key} is not materialized: ingest that day first "
            "(a backfill that ends before the newest day also targets the days after it)"
        )


def expectation_frame_type(config: DatasetConfig) -> dg.DagsterType:
    """The pandas frame handed to Great Expectations, typed from the contract: a frame with a
    wrong column type fails here with a type-check error instead of as a confusing GE result.
    dagster-pandas marks these APIs beta; the warning is silenced here, where they are used on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _expectation_frame_type(config)


def _expectation_frame_type(config: DatasetConfig) -> dg.DagsterType:
    columns = [
        PandasColumn.datetime_column(TIMESTAMP, tz="UTC", is_required=False, ignore_missing_vals=True),
        PandasColumn.string_column(DEVICE_ID, is_required=False, ignore_missing_vals=True),
        PandasColumn.string_column(SITE, is_required=False, ignore_missing_vals=True),
        PandasColumn.string_column(LABEL, is_required=False, ignore_missing_vals=True),
    ]
    columns += [PandasColumn.float_column(f.name, is_required=False, ignore_missing_vals=True) for f in config.numeric_features]
    columns += [PandasColumn.string_column(f.name, is_required=False, ignore_missing_vals=True) for f in config.categorical_features]
    return create_dagster_pandas_dataframe_type(name="ExpectationFrame", columns=columns)


FAILURE_COLUMNS = [
    md.Column("expectation"), md.Column("column"), md.Column("unexpected_count", "int"),
    md.Column("unexpected_percent", "float"), md.Column("examples", description="a few unexpected values (never device ids)"),
]
CHECK_SEVERITY = {"schema": dg.AssetCheckSeverity.ERROR, "landing_files": dg.AssetCheckSeverity.ERROR}


@dg.asset(
    group_name=GROUP,
    partitions_def=DAILY,
    check_specs=[*(dg.AssetCheckSpec(name, asset="raw_telemetry", description=f"Great Expectations: {name.replace('_', ' ')}")
                   for name in validation.CHECKS),
                 dg.AssetCheckSpec("landing_files", asset="raw_telemetry",
                                   description="every landing entry named for the day was read (none skipped)")],
)
def raw_telemetry(context: dg.AssetExecutionContext, dataset: DatasetResource):
    """The day's telemetry exactly as it came from the source (simulator or landing files), with the
    file and row each reading came from. Great Expectations checks derived from the dataset config
    (schema, null rates, value ranges, uniqueness, label values) run on it as asset checks.

    Landing files are streamed to Parquet in a temporary folder, validated batch by batch from there,
    and streamed on into the IO manager's file: the day's text is never whole in memory."""
    config, day = dataset.load(), partition_day(context)
    raw = _staged_raw_day(config, day)
    frame_type = expectation_frame_type(config)
    outcomes = validation.validate_day(raw, config, check=lambda frame: _type_check(context, frame_type, frame))
    for outcome in outcomes:
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=CHECK_SEVERITY.get(outcome.name, dg.AssetCheckSeverity.WARN),
            metadata={"expectations": outcome.evaluated, "failures": md.table(outcome.failures, FAILURE_COLUMNS)},
        )
    skipped = {str(entry.path): entry.reason for entry in sources.skipped_entries(config, day)}
    yield dg.AssetCheckResult(check_name="landing_files", passed=not skipped, severity=CHECK_SEVERITY["landing_files"],
                              metadata={"skipped": md.counts(skipped, *SKIPPED_COLUMNS)})
    files = raw.select(pl.col(sources.SOURCE_FILE).unique().sort()).collect().to_series().to_list()
    rows, columns = raw.select(pl.len()).collect().item(), raw.collect_schema().len()
    yield dg.Output(raw, metadata={"rows": rows, "files": dg.MetadataValue.json(files), "columns": columns,
                                   "skipped_files": md.counts(skipped, *SKIPPED_COLUMNS)})


def _staged_raw_day(config: DatasetConfig, day: dt.date) -> pl.LazyFrame:
    """The raw day, staged in a temporary folder that lives as long as the frame: until the IO
    manager has streamed it into its file, or longer when an in-process run keeps the output."""
    staging = Path(tempfile.mkdtemp(prefix="raw_telemetry-"))
    try:
        raw = sources.stage_raw_day(config, day, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    weakref.finalize(raw, shutil.rmtree, staging, ignore_errors=True)
    return raw


def _type_check(context: dg.AssetExecutionContext, frame_type: dg.DagsterType, frame: pd.DataFrame) -> None:
    type_check = dg.check_dagster_type(frame_type, frame)
    if not type_check.success:
        raise dg.Failure(f"raw_telemetry {context.partition_key}: frame for Great Expectations: {type_check.description}")


SKIPPED_COLUMNS = (md.Column("file", description="a landing entry named for the day"), md.Column("reason", description="why it was not read"))


CLEANING_OUTPUTS = ["clean_telemetry", "quarantine"]
"""Published together or not at all: raw = clean + quarantined + duplicates only within one run."""


@dg.multi_asset(
    group_name=GROUP,
    partitions_def=DAILY,
    outs={
        "clean_telemetry": dg.AssetOut(description="Typed, deduplicated, imputed readings; device ids keyed-hashed.",
                                       metadata={PUBLISH_TOGETHER: CLEANING_OUTPUTS}),
        "quarantine": dg.AssetOut(description="Rows that broke a hard rule, as they came, each with its reason, file and row.",
                                  metadata={PUBLISH_TOGETHER: CLEANING_OUTPUTS}),
    },
    check_specs=[dg.AssetCheckSpec("rows_reconcile", asset="clean_telemetry",
                                   description="raw rows = clean + quarantined + exact duplicates"),
                 dg.AssetCheckSpec("clean_share", asset="clean_telemetry", blocking=True,
                                   description="clean rows are at least quality.min_clean_fraction of the day's rows")],
)
def clean_telemetry(context: dg.AssetExecutionContext, raw_telemetry: pl.LazyFrame,
                    dataset: DatasetResource, storage: StorageResource):
    """Cleaning with quarantine: nothing is dropped silently. Exact duplicates are counted, conflicting
    duplicates and rows outside their valid ranges or partition are quarantined with a reason, a few
    missing readings are imputed with the day's median, and device ids are replaced by a keyed hash.
    Raw arrives as a scan of its Parquet file and is cleaned batch by batch."""
    config = dataset.load()
    result = cleaning.clean_day(raw_telemetry, config, partition_day(context), storage.hash_key())
    raw_rows = raw_telemetry.select(pl.len()).collect().item()
    reasons = result.top_reasons()
    yield dg.Output(result.clean, output_name="clean_telemetry", metadata={
        "rows": result.clean.height, "duplicates": result.duplicates,
        "imputed": md.counts(result.imputed, md.Column("feature"), md.Column("rows", "int", "missing readings imputed with the day's median")),
    })
    yield dg.Output(result.quarantine, output_name="quarantine", metadata={
        "rows": result.quarantine.height,
        "top_reasons": md.counts(reasons, md.Column("reason", description="the field or rule of a row's first reason"),
                                 md.Column("rows", "int")),
    })
    yield clean_share_check(result, config.quality.min_clean_fraction)
    yield dg.AssetCheckResult(
        check_name="rows_reconcile", asset_key="clean_telemetry",
        passed=result.raw_rows == raw_rows,
        metadata={"raw": raw_rows, "clean": result.clean.height,
                  "quarantined": result.quarantine.height, "duplicates": result.duplicates},
    )


def clean_share_check(result: cleaning.CleaningResult, floor: float) -> dg.AssetCheckResult:
    """Blocking: a day whose rows are mostly quarantined (a wrong export or a wrong contract) must not
    look green or feed training; the description names the top reason with an example."""
    top = next(iter(result.top_reasons()), None)
    reason = "none" if top is None else f"{top} ({result.top_reasons()[top]} rows), e.g. {result.example(top)!r}"
    passed = result.clean_fraction >= floor
    return dg.AssetCheckResult(
        check_name="clean_share", asset_key="clean_telemetry", passed=passed, severity=dg.AssetCheckSeverity.ERROR,
        description=None if passed else (f"{result.clean_fraction:.1%} of the rows are clean, below "
                                         f"quality.min_clean_fraction {floor:.0%}; top reason: {reason}"),
        metadata={"clean_fraction": result.clean_fraction, "floor": floor, "top_reason": reason},
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=DAILY,
    ins={"clean_window": dg.AssetIn("clean_telemetry", partition_mapping=HISTORY_WINDOW, metadata=WINDOW_INPUT)},
)
def features(context: dg.AssetExecutionContext, clean_window: pl.DataFrame, dataset: DatasetResource) -> dg.MaterializeResult:
    """Model features of the day: readings, hour of day, and each tracked reading's delta against the
    device's mean over the previous days (read through a time-window partition mapping)."""
    _require_own_partition(context, dg.AssetKey("clean_telemetry"))
    day = partition_day(context)
    on_day = clean_window.select(cleaning.partition_day(pl.col(TIMESTAMP), dataset.load().source.timezone) == day).to_series()
    frame = feature_lib.build_features(clean_window.filter(on_day), clean_window.filter(~on_day), dataset.load())
    with_history = sum(frame[c].is_not_null().sum() for c in frame.columns if c.endswith("_delta"))
    return dg.MaterializeResult(value=frame, metadata={
        "rows": frame.height, "history_days_found": clean_window[TIMESTAMP].dt.date().n_unique() - 1,
        "delta_values": int(with_history),
    })


@dg.asset(group_name=GROUP, partitions_def=DAILY)
def gold_labels(context: dg.AssetExecutionContext, clean_telemetry: pl.DataFrame,
                dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """True labels that arrived on this day: from the data's own label column, from the label inbox
    (answers to ``label_queue``: checked, bad rows listed in ``rejects/<day>.csv`` with reasons) and,
    in demo mode, from the simulator's oracle, which returns a fraction of past readings' labels
    after a lag and answers the queue ``answer_lag_days`` later, by dropping a file in the inbox."""
    config, day, key = dataset.load(), partition_day(context), storage.hash_key()
    inbox = storage.label_inbox
    if config.source.kind == "simulator":
        label_inbox.oracle_answers(inbox, config, day, key)
    answers, returned = inbox.read_answers(day, config.classes), inbox.read_returned(day, config.classes)
    rejects = inbox.write_rejects(day, pl.concat([answers.rejects, returned.rejects]))
    frame = labels.gold_labels(clean_telemetry, config, day, key, answers.labels, returned.labels)
    per_source = frame.group_by(labels.LABEL_SOURCE).len().sort(labels.LABEL_SOURCE)
    return dg.MaterializeResult(value=frame, metadata={
        "rows": frame.height, "per_class": per_class(frame),
        "per_source": md.counts(dict(per_source.iter_rows()), md.Column("source", description="where the label came from"),
                                md.Column("rows", "int")),
        "inbox": md.table([answers.counts], [md.Column(name, "int") for name in answers.counts]),
        "inbox_labels": int((frame[labels.LABEL_SOURCE] == labels.INBOX_SOURCE).sum()),
        "rejects": dg.MetadataValue.path(str(rejects)) if rejects else "none",
    })

