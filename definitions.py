"""The one place that assembles Evergreen's Definitions: assets, checks, jobs, sensors, resources."""

import os
import warnings

import dagster as dg
from upath import UPath

from assets import data, deployment, federated, feedback, labelling, model, release, report, training
from assets.artifact_io_manager import ARTIFACT_IO_MANAGER, ArtifactIOManager
from assets.io_manager import PolarsParquetIOManager
from assets.jobs import federated_round_job, federated_site_job, ingest_job, main_job, retrain_job
from assets.release import conclude_canary_job, rollback_job
from assets.resources import DatasetResource, StorageResource, default_data_dir
from sensors.alerts import run_failure_alert
from sensors.canary import canary_sensor
from sensors.drift import drift_sensor
from sensors.federated import federated_sensor
from sensors.labels import label_sensor
from sensors.landing import landing_sensor

ASSET_STORAGE_ENV = "EVERGREEN_ASSET_STORAGE"
EXECUTOR_ENV = "EVERGREEN_EXECUTOR"


def build_resources(data_dir: str | None = None, dataset_path: str | None = None, asset_storage: str | None = None) -> dict:
    """Resources configured in one place; tests pass a temporary data directory and dataset. Asset files go
    to ``asset_storage`` or ``EVERGREEN_ASSET_STORAGE`` (an object-store URL such as ``s3://bucket/prefix``,
    shared by pods on several nodes), else to ``<data_dir>/assets``."""
    data_dir = data_dir or default_data_dir()
    asset_storage = asset_storage or os.environ.get(ASSET_STORAGE_ENV)
    dataset = DatasetResource(config_path=dataset_path) if dataset_path else DatasetResource()
    storage = StorageResource(data_dir=data_dir, dataset_path=dataset.config_path)
    return {
        "io_manager": PolarsParquetIOManager(base_path=UPath(asset_storage) if asset_storage else UPath(data_dir) / "assets"),
        ARTIFACT_IO_MANAGER: ArtifactIOManager(data_dir=data_dir),
        "memory_io_manager": dg.InMemoryIOManager(),
        "storage": storage,
        "dataset": dataset,
    }


MULTIPROCESS_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["definitions", "great_expectations", "torch", "lightgbm"]}}}
)
"""Steps fork from a server that has already imported the heavy libraries: a step starts in well
under a second instead of re-importing torch, LightGBM and Great Expectations (spawn)."""


def build_executor() -> dg.ExecutorDefinition:
    """``EVERGREEN_EXECUTOR=k8s`` (deploy/helm/values.yaml): every step in its own Kubernetes pod
    (dagster-k8s, imported only then: 2 s of kubernetes client); otherwise the forkserver executor."""
    if os.environ.get(EXECUTOR_ENV) == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return MULTIPROCESS_EXECUTOR


LAYERS = [data, labelling, training, feedback, model, federated, deployment, release, report]
ASSETS = dg.load_assets_from_modules(LAYERS)
"""Every asset of every layer (tests materialize subsets of them with ``dagster.materialize``)."""

# Dagster 1.13 copies a sensor that targets several jobs with ``owners=[]``, which its beta check
# reports as if owners were set (federated_sensor targets the site job and the round job).
warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=dg.load_asset_checks_from_modules(LAYERS),
    jobs=[ingest_job, retrain_job, main_job, federated_site_job, federated_round_job, rollback_job, conclude_canary_job],
    sensors=[landing_sensor, drift_sensor, label_sensor, federated_sensor, canary_sensor, run_failure_alert],
    resources=build_resources(),
    executor=build_executor(),
)
