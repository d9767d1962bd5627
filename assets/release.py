"""Release: how a gray release is judged (the daily ``canary_report``), and the two jobs that move
production outside a training run: concluding a gray release, and rolling back by hand.

The jobs are op jobs, not assets: they change which registered version serves, and produce no
data. The UI's launchpad runs them with their config; ``python -m deploy.rollback`` runs the
rollback from a shell through the same job, so every move is a run in the instance's history.
"""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from assets import metadata as md
from assets.common import actor, released_package
from assets.partitions import DAILY, LABEL_LOOKBACK, WINDOW_INPUT, partition_day
from assets.resources import DatasetResource, StorageResource
from pipeline import estimation, labels, release, sample_sizes
from pipeline.dataset import LABEL, ROW_ID, TIMESTAMP
from pipeline.registry import PRODUCTION, Canary, Version

GROUP = "release"


@dg.asset(
    group_name=GROUP, partitions_def=DAILY,
    ins={
        "recent_features": dg.AssetIn("features", partition_mapping=LABEL_LOOKBACK, metadata=WINDOW_INPUT),
        "recent_labels": dg.AssetIn("gold_labels", partition_mapping=LABEL_LOOKBACK, metadata=WINDOW_INPUT),
    },
)
def canary_report(context: dg.AssetExecutionContext, recent_features: pl.DataFrame, recent_labels: pl.DataFrame,
                  dataset: DatasetResource, storage: StorageResource) -> dg.MaterializeResult:
    """The gray release in progress, judged on the labels returned so far: canary sites (on the new
    version) against control sites (on production), and the verdict: pending, roll out or roll
    back. The canary sensor acts on the verdict."""
    registry, day = storage.registry, partition_day(context)
    canary = registry.canary()
    if canary is None or day < canary.first_day:
        return dg.MaterializeResult(metadata={"canary_version": "", "verdict": "", "reason": "no gray release in progress"})
    config = dataset.load()
    labelled = recent_features.drop(LABEL).join(labels.unbiased(recent_labels).select(ROW_ID, LABEL), on=ROW_ID, how="inner")
    per_day = labelled.height / max(labelled[TIMESTAMP].dt.date().n_unique(), 1)
    spec = config.deployment.canary.model_copy(update={"min_labels": sample_sizes.canary_min_labels(per_day, config)})
    candidate, production = registry.get(canary.version), registry.get(PRODUCTION)
    verdict = release.judge_canary(day, canary, labelled, release.predictor(candidate), release.predictor(production), spec)
    return dg.MaterializeResult(metadata={
        **_estimates(day, canary, recent_features, candidate, production, config.feedback.estimate.band_z),
        "canary_version": verdict.version, "production_version": production.version,
        "canary_sites": ", ".join(canary.sites), "verdict": verdict.verdict, "reason": verdict.reason,
        "days_observed": verdict.days_observed, "window_days": canary.window_days,
        "canary_rows": verdict.canary_rows, "canary_accuracy": md.metric(verdict.canary_accuracy),
        "control_rows": verdict.control_rows, "control_accuracy": md.metric(verdict.control_accuracy),
        "candidate_accuracy": md.metric(verdict.candidate_accuracy), "production_accuracy": md.metric(verdict.production_accuracy),
    })


def _estimates(day: dt.date, canary: Canary, features: pl.DataFrame, candidate: Version, production: Version,
               band_z: float) -> dict:
    """Each arm's accuracy estimated on every row it served, labelled or not: the likely verdict
    while the labels are pending."""
    arms = release.estimate_arms(day, canary, features, estimation.calibrated_probabilities(candidate.directory, candidate.entry["preprocessing"]),
                                 estimation.calibrated_probabilities(production.directory, production.entry["preprocessing"]), band_z)
    return {f"{arm}_estimated_accuracy": md.metric(result.accuracy if result.rows else None) for arm, result in arms.items()} | {
        "estimate": " vs ".join(f"{arm} {result.accuracy:.3f} ± {result.accuracy_band:.3f} on {result.rows} rows" if result.rows
                                else f"{arm}: no rows served yet" for arm, result in arms.items())
                    + " (estimated without labels, from each version's calibrated probabilities)"}


class ConcludeCanaryConfig(dg.Config):
    version: str = Field(description="the gray release's version (a stale request for another version does nothing)")
    roll_out: bool = Field(description="true: every site gets the version; false: every site keeps production")
    reason: str = ""


OUTCOME = dg.Out(dict, io_manager_key="memory_io_manager")
"""An outcome for whoever launched the run (the command line, the replay): kept in memory, not
written beside the Parquet assets."""


@dg.op(out=OUTCOME)
def conclude_canary(context: dg.OpExecutionContext, config: ConcludeCanaryConfig, storage: StorageResource) -> dict:
    """Rolls the gray release out to every site (it becomes production) or back."""
    registry = storage.registry
    if config.roll_out:
        released_package(storage, registry.get(config.version))  # refuse to serve a package that is not the one built
    moved = registry.conclude_canary(config.version, config.roll_out, config.reason or "canary verdict", by=actor(context))
    outcome = {"version": config.version, "roll_out": config.roll_out, "applied": moved,
               "production": registry.resolve(PRODUCTION), "reason": config.reason}
    context.log.info(f"canary {config.version}: {'rolled out' if config.roll_out else 'rolled back'}"
                     if moved else f"canary {config.version} is no longer in progress: nothing to do")
    return outcome


class RollbackConfig(dg.Config):
    version: str = Field("previous", description="version id or alias to serve again (default: the previous production)")
    reason: str = Field("rolled back by hand", description="why: kept in the registry's history ledger")


@dg.op(out=OUTCOME)
def rollback_production(context: dg.OpExecutionContext, config: RollbackConfig, storage: StorageResource) -> dict:
    """Points production back at an earlier version, after checking its package is byte for byte
    the one first built for it; a gray release in progress is rolled back too."""
    registry = storage.registry
    target = registry.get(config.version)
    package, sha256 = released_package(storage, target)
    version, replaced = registry.rollback(target.version, config.reason, by=actor(context))
    context.log.info(f"production is {version} (was {replaced or version}); package {package} sha256 {sha256}")
    return {"production": version, "replaced": replaced, "package": str(package), "sha256": sha256}


@dg.job(executor_def=dg.in_process_executor,
        description="Roll production back to an earlier version (default: previous) on every site.")
def rollback_job():
    rollback_production()


@dg.job(executor_def=dg.in_process_executor,
        description="Conclude a gray release: roll its version out to every site, or back. Launched by the canary sensor.")
def conclude_canary_job():
    conclude_canary()

