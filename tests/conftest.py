"""Shared fixtures. The environment is pinned before anything imports ``assets``: the default
dataset (partitions are read at import) and a fixed id-hashing key."""

import os

os.environ.pop("EVERGREEN_DATASET", None)
os.environ["EVERGREEN_HASH_KEY"] = "evergreen-test-key"
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline.dataset import DatasetConfig, load_dataset_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = ROOT / "config" / "broadband.yaml"
BYOD_YAML = ROOT / "examples" / "byod" / "dataset.yaml"
HASH_KEY = b"evergreen-test-key"


@pytest.fixture(scope="session")
def config() -> DatasetConfig:
    return load_dataset_config(DEFAULT_YAML)


def write_small_dataset(directory: Path, devices_per_site: int = 15, **overrides) -> Path:
    """The default dataset with a smaller fleet (same partitions), for fast graph runs."""
    raw = yaml.safe_load(DEFAULT_YAML.read_text())
    raw["simulator"]["devices_per_site"] = devices_per_site
    raw["training"]["student"]["epochs"] = 5
    raw.update(overrides)
    path = directory / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def small_dataset_yaml(tmp_path: Path) -> Path:
    return write_small_dataset(tmp_path)
