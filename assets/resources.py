"""Resources: where Evergreen keeps its files (artifacts, registry, packages, label inbox), which
dataset it runs, and its secrets (the id-hashing key, the package-signing key)."""

import functools
import os
from pathlib import Path

import dagster as dg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from assets.partitions import DATASET, DATASET_PATH, PROJECT_ROOT, check_definition_fields
from pipeline import ids, signing, studies
from pipeline.dataset import DatasetConfig, load_dataset_config
from pipeline.federated import FederatedStore
from pipeline.label_inbox import LabelInbox
from pipeline.registry import PRODUCTION, DatasetIdentity, Registry
from pipeline.teacher import Teacher

DATA_DIR_ENV = "EVERGREEN_DATA_DIR"


def default_data_dir() -> str:
    """``EVERGREEN_DATA_DIR``, else ``data/<dataset name>/`` in the project: each dataset keeps its
    own registry, artifacts and Dagster home, so running another dataset never reads this one's models."""
    if configured := os.environ.get(DATA_DIR_ENV):
        return configured
    name = DATASET.name
    if not name or name in (".", "..") or Path(name).name != name:
        raise ValueError(f"{DATASET_PATH}: name {name!r} cannot name a data folder (data/<name>/): "
                         f"use a name without path separators, or set {DATA_DIR_ENV}")
    return str(PROJECT_ROOT / "data" / name)


class StorageResource(dg.ConfigurableResource):
    """The data directory: asset files, model artifacts, the registry, packages and secrets."""

    data_dir: str
    dataset_path: str | None = None
    """The dataset YAML the graph runs (as ``DatasetResource``): the registry refuses models of
    another dataset or other features. None: no check (tools that only list or move aliases)."""
    tuning_storage: str | None = None
    """The SQLAlchemy URL of the database hyper-parameter searches keep their Optuna studies in. None:
    ``EVERGREEN_TUNING_STORAGE``, else the scale-out PostgreSQL (``EVERGREEN_PG_*``), else
    ``<data_dir>/tuning/optuna.db`` (``pipeline.studies.default_url``): prefer the variables to a URL
    with a password here, which the UI would show."""

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    def artifact_dir(self, asset: str, partition_key: str) -> Path:
        """An asset's folder for a partition: where the artifact IO manager keeps models and decisions
        (assets read another asset's folder through it, as an input, never by this path)."""
        return self.root / "artifacts" / asset / partition_key

    @property
    def registry(self) -> Registry:
        dataset = DatasetIdentity.of(_load(self.dataset_path)) if self.dataset_path else None
        return Registry(self.root / "registry", dataset)

    @property
    def tuning_storage_url(self) -> str:
        return self.tuning_storage or studies.default_url(self.root)

    @property
    def label_inbox(self) -> LabelInbox:
        """Where queued rows wait for a person's labels and answered files come back."""
        return LabelInbox(self.root / "label_inbox")

    @property
    def federated(self) -> FederatedStore:
        """Each site's own rows, the sites' updates and the global weights of federated rounds."""
        return FederatedStore(self.root)

    def production_teacher(self) -> Teacher | None:
        """The teacher of the production version, if there is one yet (refused if of another dataset)."""
        registry = self.registry
        return Teacher.load(registry.get(PRODUCTION).directory) if registry.has_alias(PRODUCTION) else None

    def package_path(self, version: str) -> Path:
        return self.root / "packages" / f"evergreen-{version}.zip"

    def hash_key(self) -> bytes:
        """From ``EVERGREEN_HASH_KEY``; in the embedded mode, generated once under ``secrets/``."""
        return ids.load_or_create_key(ids.HASH_KEY_ENV, self.root / "secrets" / "hash_key")

    def signing_key(self) -> Ed25519PrivateKey:
        """The key edge packages are signed with: from ``EVERGREEN_SIGNING_KEY``; in the embedded
        mode, generated once under ``secrets/``. Its public half is kept at ``public_key_path``."""
        return signing.load_or_create_signing_key(self.root / "secrets")

    @property
    def public_key_path(self) -> Path:
        """The public key devices verify packages with (written by ``signing_key()``)."""
        return signing.public_key_path(self.root / "secrets")


class DatasetResource(dg.ConfigurableResource):
    """The dataset YAML the graph runs on (the contract, the source, training settings): by default the
    one the definitions were loaded with. Another YAML (tests, run config) may change anything but the
    partitions, windows and sites the definitions were built from (``assets.partitions.DEFINITION_FIELDS``)."""

    config_path: str = str(DATASET_PATH)

    def load(self) -> DatasetConfig:
        """The dataset, refused with both files named if the definitions were built from other partitions."""
        config = _load(self.config_path)
        check_definition_fields(self.config_path, config)
        return config


@functools.lru_cache(maxsize=8)
def _load(path: str) -> DatasetConfig:
    return load_dataset_config(path)
