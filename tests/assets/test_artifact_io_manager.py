"""The artifact IO manager: a value saves itself into its asset's folder for the partition, and an
input loads as its annotation asks (the object, the folder, or None for an optional one never
materialized: a model trained on request, without the policy's decision)."""

import datetime as dt
from pathlib import Path

import dagster as dg

from assets.artifact_io_manager import ARTIFACT_IO_MANAGER, ArtifactFolder, ArtifactIOManager
from assets.partitions import DAILY
from pipeline.policy import DECISION_FILE, FULL, Decision

DAY = "2026-10-20"
DECISION = Decision(FULL, "concept drift", dt.date.fromisoformat(DAY), "v1", "v1@2026-10-18", 1.0, {"rounds": 60}, {"epochs": 7},
                    ("firmware_version",), "2026-10-18")


@dg.asset(name="retraining_policy", partitions_def=DAILY, io_manager_key=ARTIFACT_IO_MANAGER)
def policy_stub() -> Decision:
    return DECISION


def _reader(seen: dict):
    @dg.asset(partitions_def=DAILY, io_manager_key="memory")
    def reader(retraining_policy: Decision | None) -> None:
        seen["decision"] = retraining_policy

    @dg.asset(partitions_def=DAILY, io_manager_key="memory", ins={"folder": dg.AssetIn("retraining_policy")})
    def files(folder: ArtifactFolder) -> None:
        seen["folder"] = folder

    return reader, files


def test_a_decision_travels_as_a_typed_input_and_its_folder_is_written_whole(tmp_path: Path):
    seen: dict = {}
    reader, files = _reader(seen)
    resources = {ARTIFACT_IO_MANAGER: ArtifactIOManager(data_dir=str(tmp_path)), "memory": dg.InMemoryIOManager()}
    with dg.instance_for_test() as instance:
        dg.materialize([policy_stub, reader], selection=[reader], partition_key=DAY, resources=resources, instance=instance)
        assert seen["decision"] is None  # never decided: the reader falls back (a retrain on request)
        dg.materialize([policy_stub, reader, files], partition_key=DAY, resources=resources, instance=instance)
    folder = tmp_path / "artifacts" / "retraining_policy" / DAY
    assert seen["decision"] == DECISION and seen["folder"] == ArtifactFolder(folder)
    assert [p.name for p in folder.parent.iterdir()] == [DAY]  # published by one rename, no temporary left
    assert [p.name for p in folder.iterdir()] == [DECISION_FILE]
