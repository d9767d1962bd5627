"""Federated layer: the student trained across sites, where only weights leave a site.

``site_stores`` puts each site's rows of the day's training set in that site's own store (one
machine plays every site here; in a real deployment the site's rows never leave it). A round is
``site_update`` at every site (a run per site, partitioned by day and site, reading only its own
store, the teacher and the global weights) and then one ``federated_student`` run that averages the
updates; ``federated_sensor`` launches the rounds. The code is in ``pipeline/federated.py``.

The sites are the dataset's (``pipeline.federated.dataset_sites``), read once when the definitions
load, as the daily partitions are: ``partitions.sites`` if declared, the simulator's sites, or for a
landing dataset the site column's values in the files landed so far (only that column is read). Static
partitions keep the graph, its jobs and the sensor as they are for every source; a site that first
appears in later files becomes a partition when the code location reloads (until then its rows are
counted as outside the site partitions), and declaring ``partitions.sites`` pins the list. With fewer
than two sites the group has nothing to do: its assets say so in their metadata and the sensor
launches no round.
"""

import warnings

import dagster as dg
import polars as pl
from pydantic import Field

from assets import metadata as md
from assets.partitions import DAILY, SITE_NAMES, SITES
from assets.resources import DatasetResource, StorageResource
from pipeline import atomic, federated as fed
from pipeline.dataset import LABEL, SITE
from pipeline.evaluation import learning_curve_png, png_markdown
from pipeline.teacher import Teacher

GROUP = "federated"


NOTHING_TO_FEDERATE = fed.too_few_sites(SITE_NAMES)
"""Why the federated group has nothing to do for this dataset (None when it has two sites or more)."""
SITE_DAILY = dg.MultiPartitionsDefinition({"date": DAILY, "site": SITES})
with warnings.catch_warnings():  # beta in 1.13; the mapping is what a per-site asset of a day needs
    warnings.simplefilter("ignore", dg.BetaWarning)
    BY_DATE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")


class RoundConfig(dg.Config):
    round: int = Field(0, ge=0, description="The federated round of the day; 0 = the next one.")


@dg.asset(group_name=GROUP, partitions_def=DAILY)
def site_stores(context: dg.AssetExecutionContext, training_set: pl.DataFrame, storage: StorageResource) -> dg.MaterializeResult:
    """Each site's rows of the day's training set, written to that site's own store
    (``sites/<site>/``): what a site keeps and trains on. Rows of a site outside the ``site``
    partitions are counted, not stored. The class mix per site shows how unlike the sites are.
    With fewer than two sites nothing is written, and the metadata says why."""
    if NOTHING_TO_FEDERATE:
        return dg.MaterializeResult(metadata={"federated": NOTHING_TO_FEDERATE, "rows": training_set.height})
    store = storage.federated
    for site in SITE_NAMES:
        rows = training_set.filter(pl.col(SITE) == site)
        with atomic.atomic_path(store.site_rows(site, context.partition_key)) as tmp:
            rows.write_parquet(tmp)
    mix = training_set.filter(pl.col(LABEL).is_not_null()).group_by(SITE, LABEL).len().pivot(on=LABEL, index=SITE, values="len")
    return dg.MaterializeResult(metadata={
        "rows_by_site": md.counts(dict(training_set.group_by(SITE).len().sort(SITE).iter_rows()), md.Column("site"),
                                  md.Column("rows", "int")),
        "rows_outside_site_partitions": training_set.filter(~pl.col(SITE).is_in(list(SITE_NAMES))).height,
        "labels_by_site": md.table(mix.fill_null(0).sort(SITE).iter_rows(named=True),
                                   [md.Column(SITE), *(md.Column(c, "int", f"labelled rows of class {c}") for c in sorted(mix.columns) if c != SITE)]),
    })


@dg.asset(group_name=GROUP, partitions_def=SITE_DAILY, deps=[dg.AssetDep(site_stores, partition_mapping=BY_DATE)],
          ins={"teacher_model": dg.AssetIn("teacher_model", partition_mapping=BY_DATE)})
def site_update(context: dg.AssetExecutionContext, config: RoundConfig, teacher_model: Teacher, dataset: DatasetResource,
                storage: StorageResource) -> dg.MaterializeResult:
    """One site's round of federated training: the student from the global weights, trained on this
    site's rows only (its own store), distilled from the teacher, with the FedProx term if set. Sends
    back its weights and aggregate numbers: the sample count, how the received global model does on
    the site's held-out rows, and (in round one) the site's own drift, newest day against the rest."""
    if NOTHING_TO_FEDERATE:
        return dg.MaterializeResult(metadata={"federated": NOTHING_TO_FEDERATE})
    keys = context.partition_key.keys_by_dimension
    day, site = keys["date"], keys["site"]
    settings, store = dataset.load(), storage.federated
    round_ = fed.current_round(store, day, config.round)
    teacher = teacher_model
    start, weights = fed.site_start(store, day, round_, teacher.preprocessing, settings)
    rows = store.read_site_rows(site, day)
    update = fed.local_update(site, round_, rows, teacher, weights, settings)
    report = {**update.report, "start": start, "drift": fed.site_drift(rows, settings) if round_ == 1 else None}
    directory = store.update_dir(day, site, round_)
    sent = fed.save_weights(directory / fed.UPDATE_FILE, update.weights)
    fed.write_json(directory / fed.REPORT_FILE, {**report, "bytes": sent})
    received = report["received"]
    return dg.MaterializeResult(metadata={
        "round": round_, "start": start, "samples": update.samples, "bytes_sent": sent,
        "received_macro_f1": md.metric(received["macro_f1"]),
        "received_validation_loss": md.metric(received["validation_loss"]),
        "local_validation_loss": md.metric(report["local"]["validation_loss"]),
        "drifted_features": _drifted(report["drift"]["drifted_features"] if report["drift"] else None),
    })


@dg.asset(group_name=GROUP, partitions_def=DAILY, deps=[dg.AssetDep(site_update, partition_mapping=BY_DATE)])
def federated_student(context: dg.AssetExecutionContext, config: RoundConfig, dataset: DatasetResource,
                      storage: StorageResource) -> dg.MaterializeResult:
    """One round's global student: the sites' updates averaged by sample count (FedAvg), or clipped and
    noised (DP-FedAvg, epsilon reported). Reads only the sites' weights and their aggregate reports.
    Shows per-site evaluation (the previous global model on each site's held-out rows), per-site drift,
    the bytes moved, and the global validation loss over the rounds; marks the day converged when it
    stops improving. ``student_model`` can start from the newest global weights."""
    if NOTHING_TO_FEDERATE:
        return dg.MaterializeResult(metadata={"federated": NOTHING_TO_FEDERATE})
    day, settings, store = context.partition_key, dataset.load(), storage.federated
    spec = settings.training.federated
    round_ = fed.current_round(store, day, config.round)
    reports = {s: fed.read_json(store.update_dir(day, s, round_) / fed.REPORT_FILE) for s in store.sites_with_update(day, round_, SITE_NAMES)}
    missing = [s for s in SITE_NAMES if s not in reports]
    if missing:
        raise ValueError(f"round {round_} of {day}: no update from {missing}; materialize site_update for them first")
    updates = {s: (fed.read_weights(store.update_dir(day, s, round_) / fed.UPDATE_FILE), r["samples"]) for s, r in reports.items()}
    start, start_weights = fed.aggregator_start(store, reports, next(iter(updates.values()))[0], settings)
    result = fed.aggregate(start_weights, updates, spec.privacy)
    summary = fed.round_summary(store, day, round_, reports, result, spec)
    directory = store.global_dir(day, round_)
    summary["bytes_global"] = fed.save_weights(directory / fed.GLOBAL_FILE, result.weights)
    fed.write_json(directory / fed.ROUND_FILE, summary)
    curve = fed.round_curve(store, day, round_)
    return dg.MaterializeResult(metadata={
        "round": round_, "start": start, "sites": len(reports), "samples": sum(r["samples"] for r in reports.values()),
        "bytes_received": summary["bytes_received"], "bytes_sent": summary["bytes_global"] * len(reports),
        "global_validation_loss": md.metric(summary["global_validation_loss"]),
        "converged": summary["converged"],
        "epsilon": md.metric(summary["epsilon"]) if summary["epsilon"] is not None else "no differential privacy",
        "per_site": md.table(({"site": site, **r, "drifted_features": _drifted(r["drifted_features"])} for site, r in summary["per_site"].items()),
                             PER_SITE_COLUMNS),
        "aggregation": dg.MetadataValue.json(result.info),
        "rounds": dg.MetadataValue.md(png_markdown(learning_curve_png(curve, "round"), "global validation loss per round")),
    })


NOT_CHECKED = "not checked after round one"
PER_SITE_COLUMNS = [
    md.Column("site"), md.Column("samples", "int", "rows the site trained on"),
    md.Column("held_out_rows", "int", "the site's rows the received global model was measured on"),
    md.Column("accuracy", "float", "of the global model the round started from (empty: no held-out rows)"),
    md.Column("macro_f1", "float"), md.Column("local_validation_loss", "float", "after the site's local training"),
    md.Column("drifted_features", description="the site's own drift, newest day against the rest (round one)"),
]


def _drifted(features: list[str] | None) -> str:
    return NOT_CHECKED if features is None else ", ".join(features) or "none"
