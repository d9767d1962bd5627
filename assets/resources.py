"""Resources: where Evergreen keeps its files (artifacts, registry, packages, label inbox), which
dataset it runs, and its secrets (the id-hashing key, the package-signing key)."""

import functools
import os
from pathlib import Path

import dagster as dg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from assets.partitions import DATASET_PATH, PROJECT_ROOT
from pipeline import ids, signing
from pipeline.dataset import DatasetConfig, load_dataset_config
from pipeline.federated import FederatedStore
from pipeline.label_inbox import LabelInbox
from pipeline.registry import PRODUCTION, Registry
from pipeline.teacher import Teacher

DATA_DIR_ENV = "EVERGREEN_DATA_DIR"


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV, str(PROJECT_ROOT / "data"))


class StorageResource(dg.ConfigurableResource):
    """The data directory: asset files, model artifacts, the registry, packages and secrets."""

    data_dir: str

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    def artifact_dir(self, asset: str, partition_key: str) -> Path:
        return self.root / "artifacts" / asset / partition_key

    @property
    def registry(self) -> Registry:
        return Registry(self.root / "registry")

    @property
    def label_inbox(self) -> LabelInbox:
        """Where queued rows wait for a person's labels and answered files come back."""
        return LabelInbox(self.root / "label_inbox")

    @property
    def federated(self) -> FederatedStore:
        """Each site's own rows, the sites' updates and the global weights of federated rounds."""
        return FederatedStore(self.root)

    def production_teacher(self) -> Teacher | None:
        """The teacher of the production version, if there is one yet."""
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
    """The dataset YAML the graph runs on (the contract, the source, training settings)."""

    config_path: str = str(DATASET_PATH)

    def load(self) -> DatasetConfig:
        return _load(self.config_path)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> DatasetConfig:
    return load_dataset_config(path)
