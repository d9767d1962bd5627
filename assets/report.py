"""Report layer: the day's loop report, one self-contained HTML page, last in the daily ingest."""

import base64
import datetime as dt

import dagster as dg
import polars as pl

from assets.partitions import DAILY, REPORT_WINDOW, SITES, WINDOW_INPUT, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, drift, loop_report as loop_report_lib
from pipeline.loop_report import LoopHistory, QuarantineDay

GROUP = "report"
QUARANTINE = dg.AssetKey("quarantine")
AFTER = (QUARANTINE, dg.AssetKey("canary_report"), dg.AssetKey("production_model"))
"""What the page reads from the instance and the registry rather than as inputs: it runs after them."""


def _quarantine_days(instance: dg.DagsterInstance, first: dt.date, day: dt.date) -> list[QuarantineDay]:
    """Rows quarantined and their top reasons per day, from the newest materialization of each day's
    ``quarantine`` (its metadata: the rows themselves are not needed)."""
    keys = [(first + dt.timedelta(days=k)).isoformat() for k in range((day - first).days + 1)]
    records_filter = dg.AssetRecordsFilter(QUARANTINE, asset_partitions=keys)
    newest: dict[str, dict] = {}
    cursor, more = None, True
    while more:  # newest first, in pages: a day materialized many times must not crowd out the others
        page = instance.fetch_materializations(records_filter, limit=1000, cursor=cursor)
        for record in page.records:
            materialization = record.asset_materialization
            if materialization and materialization.partition and materialization.partition not in newest:
                newest[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
        cursor, more = page.cursor, page.has_more
    return [QuarantineDay(dt.date.fromisoformat(key), int(meta.get("rows", 0)), reason_counts(meta.get("top_reasons")))
            for key, meta in sorted(newest.items())]


def reason_counts(top_reasons: object) -> dict[str, int]:
    """Reason -> rows from ``quarantine``'s ``top_reasons``: a table of (reason, rows), or the JSON
    object that materializations recorded before metadata became tables (issue 20): both stay readable."""
    if isinstance(top_reasons, dg.TableMetadataValue):
        return {record.data["reason"]: int(record.data["rows"]) for record in top_reasons.records}
    return dict(top_reasons) if isinstance(top_reasons, dict) else {}


def _svg_markdown(svg: str, alt: str) -> str:
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode('ascii')})"


@dg.asset(
    group_name=GROUP, partitions_def=DAILY,
    ins={"drift_reports": dg.AssetIn("drift_report", partition_mapping=REPORT_WINDOW, metadata=WINDOW_INPUT)},
    deps=list(AFTER),
)
def loop_report(context: dg.AssetExecutionContext, drift_reports: pl.DataFrame, dataset: DatasetResource,
                     storage: StorageResource) -> dg.MaterializeResult:
    """The day's loop report, ``<data_dir>/reports/<day>.html``: one page that tells a person in ten
    seconds whether the model is healthy, what serves each site, the last retrain and why, and the open
    alarms; then, over the last ``report.days`` days, accuracy on returned labels, alarms, retrains,
    releases, canaries and rollbacks (the registry's ledger), the most drifted features, quarantined
    rows and the label inbox's backlog. Self-contained (inline SVG, nothing from the network). Runs
    after the day's drift report and canary verdict (and after its release when one run does both,
    as ``main_job`` does), so the page shows the day's own moves."""
    config, day, registry = dataset.load(), partition_day(context), storage.registry
    first = day - dt.timedelta(days=config.report.days - 1)
    numeric, categorical = drift.monitored_features(config)
    sites = tuple(SITES.get_partition_keys())
    history = LoopHistory(
        day=day, days=config.report.days, sites=sites, serving={s: registry.serving(s) for s in sites},
        versions={v: registry.get(v).entry for v in registry.versions()}, ledger=registry.history(),
        drift_days=loop_report_lib.drift_days(drift_reports, len(numeric) + len(categorical), config.feedback.policy.full_retrain_drop),
        quarantine=_quarantine_days(context.instance, first, day),
        inbox=loop_report_lib.inbox_days(storage.label_inbox, config.classes, first, day),
    )
    path = storage.root / "reports" / f"{day.isoformat()}.html"
    page = loop_report_lib.render(history)
    atomic.write_text(path, page)
    numbers = loop_report_lib.headline(history)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "bytes": len(page.encode()), "status": numbers["status"],
        "serving": dg.MetadataValue.md("\n".join(f"- {site}: {version or 'none'}" for site, version in numbers["serving"].items())),
        "open_alarms": dg.MetadataValue.md("\n".join(f"- {a}" for a in numbers["open_alarms"]) or "none"),
        "last_retrain": numbers["last_retrain"],
        "fresh_label_accuracy": dg.MetadataValue.float(numbers["fresh_label_accuracy"] if numbers["fresh_label_accuracy"] is not None else float("nan")),
        "fresh_labels": numbers["fresh_labels"], "alarm_days": numbers["alarm_days"], "retrains": numbers["retrains"],
        "releases": numbers["releases"], "quarantined_today": numbers["quarantined_today"], "label_backlog": numbers["label_backlog"],
        "accuracy": dg.MetadataValue.md(_svg_markdown(loop_report_lib.accuracy_svg(history), "accuracy on returned labels per day")),
    })
