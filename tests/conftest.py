"""Shared fixtures. The environment is pinned before anything imports ``assets``: the default
dataset (the definitions build their partitions from it at import, and a ``DatasetResource`` naming a
YAML with other partitions or windows is refused) and a fixed id-hashing key.

The suite is in three folders: ``unit/`` tests ``pipeline/`` directly, ``assets/`` runs assets and
sensors through Dagster (``materialize``, ``build_sensor_context``), ``e2e/`` runs the whole graph,
commands and servers; ``support/`` holds what they share. A test that starts a process (a server, a
command, a pool) is marked ``slow`` (``make test-fast`` leaves them out): an unmarked one fails when it
tries.
"""

import _posixsubprocess
import os
import subprocess

os.environ.pop("EVERGREEN_DATASET", None)
os.environ["EVERGREEN_HASH_KEY"] = "evergreen-test-key"
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy.testing  # noqa: E402, F401  (runs lscpu once on import: here, before the process guard below)
import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline.dataset import DatasetConfig, load_dataset_config  # noqa: E402

if TYPE_CHECKING:
    import polars as pl

    from pipeline.student import Student
    from pipeline.teacher import Teacher

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YAML = ROOT / "config" / "broadband.yaml"
BYOD_YAML = ROOT / "examples" / "byod" / "dataset.yaml"
HASH_KEY = b"evergreen-test-key"
DEFAULT_PARTITIONS = yaml.safe_load(DEFAULT_YAML.read_text())["partitions"]
"""The partitions the tests' definitions are built with: a YAML of another shape keeps them to run on the graph."""


@pytest.fixture(scope="session")
def config() -> DatasetConfig:
    return load_dataset_config(DEFAULT_YAML)


def write_small_dataset(directory: Path, devices_per_site: int = 15, **overrides) -> Path:
    """The default dataset with a smaller fleet (same partitions), for fast graph runs."""
    raw = yaml.safe_load(DEFAULT_YAML.read_text())
    raw["simulator"]["devices_per_site"] = devices_per_site
    raw["training"]["student"]["epochs"] = 5  # a student fitted alone; in the graph the policy sizes it:
    raw["feedback"]["policy"]["student_steps"] = 300  # about 900 optimiser steps instead of 4,500
    raw.update(overrides)
    path = directory / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def small_dataset_yaml(tmp_path: Path) -> Path:
    return write_small_dataset(tmp_path)


@dataclass(frozen=True)
class Trained:
    """A small real training set and the teacher and student trained on it."""

    config: DatasetConfig
    frame: "pl.DataFrame"
    teacher: "Teacher"
    student: "Student"


@pytest.fixture(scope="session")
def trained(config) -> Trained:
    import datetime as dt

    from pipeline.student import fit_student
    from pipeline.teacher import fit_teacher
    from tests.support.helpers import days_from, training_frame

    small = config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": 20})})
    frame = training_frame(small, days_from(dt.date(2026, 10, 1), 4))
    teacher = fit_teacher(frame, small)
    return Trained(small, frame, teacher, fit_student(frame, teacher, small))


LONGEST_FIRST = ("tests/e2e/test_ui_server.py", "tests/e2e/test_replay.py", "tests/e2e/")
"""Where the longest tests are, longest first: run first, so that no worker of ``make test`` is
left with one of them at the end while the other has nothing to do."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse to start a process from a test that is not marked ``slow``. Every way Python starts one
    goes through ``fork_exec`` (``subprocess``, ``multiprocessing``'s spawn and forkserver), ``posix_spawn``
    (``subprocess``'s fast path) or ``os.fork``."""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow")

    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse)
    monkeypatch.setattr(subprocess, "_fork_exec", refuse)  # subprocess's own reference to it
    for name in ("fork", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, refuse)
