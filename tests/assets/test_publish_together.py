"""Outputs of one step that must agree (``clean_telemetry`` and ``quarantine``) are published together
or not at all: a run killed between them leaves the old pair, one killed during the renames is rolled
forward by the next read. Also checked end to end: the cleaning step's outputs carry the group."""

import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from assets import io_manager
from assets.data import CLEANING_OUTPUTS, clean_telemetry
from assets.io_manager import PUBLISH_TOGETHER, PolarsParquetIOManager

GROUP = {PUBLISH_TOGETHER: CLEANING_OUTPUTS}


def _write(manager: PolarsParquetIOManager, run_id: str, name: str, value: int) -> None:
    context = dg.build_output_context(step_key="clean_telemetry", name=name, run_id=run_id, asset_key=name,
                                      definition_metadata=GROUP)
    manager.handle_output(context, pl.DataFrame({"generation": [value]}))


def _read(base: Path) -> dict[str, int]:
    manager = PolarsParquetIOManager(base_path=UPath(base))  # a fresh process's view
    return {name: manager.load_input(dg.build_input_context(asset_key=name))["generation"].item()
            for name in CLEANING_OUTPUTS}


def _killed(run_id: str) -> None:
    """What a SIGKILL leaves of the step's process: nothing in memory."""
    io_manager._STAGED.pop((run_id, "clean_telemetry"), None)


def test_a_run_killed_between_the_two_outputs_leaves_the_old_pair(tmp_path: Path):
    manager = PolarsParquetIOManager(base_path=UPath(tmp_path))
    for name in CLEANING_OUTPUTS:
        _write(manager, "run1", name, 1)
    assert _read(tmp_path) == {"clean_telemetry": 1, "quarantine": 1}
    _write(manager, "run2", "clean_telemetry", 2)  # killed before the quarantine was written
    _killed("run2")
    assert _read(tmp_path) == {"clean_telemetry": 1, "quarantine": 1}
    for name in CLEANING_OUTPUTS:  # the re-execution publishes both, and no staged file is left behind
        _write(manager, "run3", name, 3)
    assert _read(tmp_path) == {"clean_telemetry": 3, "quarantine": 3}
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.is_file()]


def test_a_run_killed_during_the_renames_is_rolled_forward(tmp_path: Path, monkeypatch):
    manager = PolarsParquetIOManager(base_path=UPath(tmp_path))
    for name in CLEANING_OUTPUTS:
        _write(manager, "run1", name, 1)
    renames = []

    def replace_once_then_die(source, target):
        if renames:
            raise KeyboardInterrupt("killed")
        renames.append(target)
        os.rename(source, target)

    monkeypatch.setattr(io_manager.os, "replace", replace_once_then_die)
    _write(manager, "run2", "clean_telemetry", 2)
    with pytest.raises(KeyboardInterrupt):
        _write(manager, "run2", "quarantine", 2)
    monkeypatch.undo()
    assert len(renames) == 1
    assert _read(tmp_path) == {"clean_telemetry": 2, "quarantine": 2}


def test_the_cleaning_step_publishes_its_outputs_as_one_group():
    outs = clean_telemetry.node_def.output_dict
    assert all(outs[name].metadata[PUBLISH_TOGETHER] == CLEANING_OUTPUTS for name in CLEANING_OUTPUTS)
