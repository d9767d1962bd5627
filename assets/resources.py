"""Resources: where Evergreen keeps its files, which dataset it runs, and the id-hashing secret."""

import functools
import os
from pathlib import Path

import dagster as dg

from assets.partitions import DATASET_PATH, PROJECT_ROOT
from pipeline import ids
from pipeline.dataset import DatasetConfig, load_dataset_config
from pipeline.registry import Registry

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

    def package_path(self, version: str) -> Path:
        return self.root / "packages" / f"evergreen-{version}.zip"

    def hash_key(self) -> bytes:
        """From ``EVERGREEN_HASH_KEY``; in the embedded mode, generated once under ``secrets/``."""
        return ids.load_or_create_key(ids.HASH_KEY_ENV, self.root / "secrets" / "hash_key")


class DatasetResource(dg.ConfigurableResource):
    """The dataset YAML the graph runs on (the contract, the source, training settings)."""

    config_path: str = str(DATASET_PATH)

    def load(self) -> DatasetConfig:
        return _load(self.config_path)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> DatasetConfig:
    return load_dataset_config(path)
