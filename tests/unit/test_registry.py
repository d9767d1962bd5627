"""The registry's state: aliases, the history ledger, gray releases, and moves that survive a kill
or a concurrent writer."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.registry import (
    CANARY_ROLLED_BACK,
    CANARY_ROLLED_OUT,
    CANARY_STARTED,
    PREVIOUS,
    PRODUCTION,
    PROMOTION,
    ROLLBACK,
    STATE_FILE,
    Canary,
    Registry,
    RegistryError,
)
from tests.conftest import ROOT


def _registry(tmp_path: Path, versions: int = 3) -> Registry:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    registry = Registry(tmp_path / "registry")
    for i in range(1, versions + 1):
        registry.register(f"v{i}", {"model.onnx": tmp_path / "model.onnx"}, {"lineage": {"partition": f"2026-10-0{i}"}})
    return registry


def test_promotion_moves_production_and_previous_and_writes_the_ledger(tmp_path: Path):
    registry = _registry(tmp_path)
    assert registry.promote("v1", reason="first", by="user") is None
    assert registry.promote("v2", reason="better", by="sensor:drift_sensor") == "v1"
    assert (registry.resolve(PRODUCTION), registry.resolve(PREVIOUS)) == ("v2", "v1")
    assert [(e["event"], e["version"], e["production"], e["by"]) for e in registry.history()] == [
        (PROMOTION, "v1", "v1", "user"), (PROMOTION, "v2", "v2", "sensor:drift_sensor")]
    assert registry.history()[1]["replaced"] == "v1"
    with pytest.raises(RegistryError):
        registry.promote("v404", reason="no such version", by="user")
    assert registry.resolve(PRODUCTION) == "v2"


def test_rollback_to_previous_and_back(tmp_path: Path):
    registry = _registry(tmp_path)
    registry.promote("v1", reason="a", by="user")
    registry.promote("v2", reason="b", by="user")
    assert registry.rollback(PREVIOUS, reason="v2 misbehaves", by="cli:ops") == ("v1", "v2")
    assert (registry.resolve(PRODUCTION), registry.resolve(PREVIOUS)) == ("v1", "v2")
    assert registry.rollback(PREVIOUS, reason="false alarm", by="user") == ("v2", "v1")
    assert [e["production"] for e in registry.history()] == ["v1", "v2", "v1", "v2"]
    assert [e["event"] for e in registry.history()][2:] == [ROLLBACK, ROLLBACK]


def test_a_gray_release_serves_its_sites_until_it_is_rolled_out_or_back(tmp_path: Path):
    registry = _registry(tmp_path)
    registry.promote("v1", reason="a", by="user")
    registry.start_canary(Canary("v2", ("east",), "2026-10-02", 2), reason="gates passed", by="user")
    assert registry.canary().last_day.isoformat() == "2026-10-04"
    assert (registry.serving("east"), registry.serving("west"), registry.resolve(PRODUCTION)) == ("v2", "v1", "v1")
    assert registry.conclude_canary("v2", roll_out=False, reason="worse", by="sensor:canary_sensor")
    assert registry.canary() is None and registry.serving("east") == "v1"
    assert not registry.conclude_canary("v2", roll_out=True, reason="a stale verdict", by="sensor:canary_sensor")
    assert registry.resolve(PRODUCTION) == "v1"

    registry.start_canary(Canary("v3", ("west",), "2026-10-03", 2), reason="gates passed", by="user")
    assert registry.conclude_canary("v3", roll_out=True, reason="as good", by="sensor:canary_sensor")
    assert (registry.resolve(PRODUCTION), registry.resolve(PREVIOUS), registry.serving("east")) == ("v3", "v1", "v3")
    assert [e["event"] for e in registry.history()] == [
        PROMOTION, CANARY_STARTED, CANARY_ROLLED_BACK, CANARY_STARTED, CANARY_ROLLED_OUT]


def test_a_rollback_ends_the_gray_release(tmp_path: Path):
    registry = _registry(tmp_path)
    registry.promote("v1", reason="a", by="user")
    registry.promote("v2", reason="b", by="user")
    registry.start_canary(Canary("v3", ("east",), "2026-10-03", 2), reason="gates passed", by="user")
    registry.rollback(PREVIOUS, reason="incident", by="user")
    assert registry.canary() is None
    assert {registry.serving(site) for site in ("east", "west")} == {"v1"}


def test_the_versions_that_served_production_before_are_listed_newest_first_once_each(tmp_path: Path):
    registry = _registry(tmp_path, versions=4)
    registry.promote("v1", reason="a", by="user")
    registry.promote("v2", reason="b", by="user")
    registry.rollback(PREVIOUS, reason="back", by="user")  # v1 again
    registry.start_canary(Canary("v4", ("east",), "2026-10-04", 2), reason="gates passed", by="user")  # never production
    registry.promote("v3", reason="c", by="user")
    assert registry.past_production(5) == ["v1", "v2"] and registry.past_production(1) == ["v1"]


def test_the_first_package_sha_is_kept(tmp_path: Path):
    registry = _registry(tmp_path)
    assert registry.record_package("v1", "aaa") == "aaa"
    assert registry.record_package("v1", "bbb") == "aaa"
    assert registry.package_sha256("v1") == "aaa"


def _promote_many(root: str, worker: int, count: int) -> None:
    """Alternates between this worker's own two versions, so every call really moves production."""
    registry = Registry(Path(root))
    for i in range(count):
        registry.promote(f"v{2 * worker + 1 + i % 2}", reason=f"worker {worker} #{i}", by=f"w{worker}")


@pytest.mark.slow
def test_concurrent_writers_lose_no_update(tmp_path: Path):
    """Without the lock, two read-modify-write cycles interleave and ledger lines vanish."""
    registry = _registry(tmp_path, versions=4)
    context = multiprocessing.get_context("spawn")  # forking the threaded test process can hang
    workers = [context.Process(target=_promote_many, args=(str(registry.root), w, 40)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]
    moves = registry.history()
    assert len(moves) == 80
    assert sorted(e["reason"] for e in moves) == sorted(f"worker {w} #{i}" for w in range(2) for i in range(40))
    assert registry.resolve(PRODUCTION) == moves[-1]["version"]
    assert registry.resolve(PREVIOUS) == moves[-2]["version"]


def test_an_older_day_never_takes_an_alias_or_production_from_a_newer_one(tmp_path: Path):
    registry = _registry(tmp_path)
    assert registry.point_unless_newer("candidate", "v3", reason="t", by="user") is None
    assert registry.point_unless_newer("candidate", "v1", reason="backfill", by="user").version == "v3"
    assert registry.resolve("candidate") == "v3"
    assert registry.release("v2", None, reason="first", by="user").to == "all sites"
    assert registry.release("v3", Canary("v3", ("east",), "2026-10-03", 2), reason="gray", by="user").to == "canary"
    refused = registry.release("v1", None, reason="backfill", by="user")
    assert (refused.to, refused.newer) == ("none", "v2")
    assert registry.resolve(PRODUCTION) == "v2" and registry.canary().version == "v3"


def _release_when_told(root: str, version: str, go) -> None:
    go.wait()
    Registry(Path(root)).release(version, None, reason=f"run of {version}", by="test")


@pytest.mark.slow
def test_concurrent_releases_leave_the_newest_day_in_production(tmp_path: Path):
    """Six runs finish at once, in any order: a check made outside the lock would let an older day
    that checked before a newer one promoted overwrite it afterwards."""
    registry = _registry(tmp_path, versions=6)
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    workers = [context.Process(target=_release_when_told, args=(str(registry.root), f"v{i}", go)) for i in (3, 1, 6, 2, 5, 4)]
    for p in workers:
        p.start()
    go.set()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0] * 6
    assert registry.resolve(PRODUCTION) == "v6"
    promoted = [e["version"] for e in registry.history() if e["event"] == PROMOTION]
    assert promoted == sorted(promoted) and promoted[-1] == "v6"  # production's day only moved forward
    previous = registry.resolve(PREVIOUS) if len(promoted) > 1 else None
    assert previous == (promoted[-2] if len(promoted) > 1 else None)


KILLED_PROMOTION = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pipeline import atomic
    from pipeline.registry import Registry

    real_replace = os.replace
    def slow_replace(src, dst):
        if str(dst).endswith("state.json"):
            print("renaming", flush=True)
            time.sleep(60)  # killed here: the new state is written aside, not yet renamed in
        real_replace(src, dst)
    os.replace = slow_replace
    Registry(Path(sys.argv[1])).promote("v3", reason="killed half-way", by="test")
""")


@pytest.mark.slow
def test_a_promotion_killed_half_way_leaves_production_on_a_complete_version(tmp_path: Path):
    registry = _registry(tmp_path)
    registry.promote("v1", reason="a", by="user")
    registry.promote("v2", reason="b", by="user")
    before = (registry.root / STATE_FILE).read_bytes()
    child = subprocess.Popen([sys.executable, "-c", KILLED_PROMOTION, str(registry.root)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "renaming"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert (registry.root / STATE_FILE).read_bytes() == before
    production, previous = registry.get(PRODUCTION), registry.get(PREVIOUS)
    assert (production.version, previous.version) == ("v2", "v1")
    assert json.loads((production.directory / "entry.json").read_text())["files"]["model.onnx"]
    # the lock died with the process: the next move goes through
    start = time.monotonic()
    registry.promote("v3", reason="after the crash", by="user")
    assert registry.resolve(PRODUCTION) == "v3" and time.monotonic() - start < 10


def test_a_model_of_another_dataset_or_other_features_is_refused_with_the_reason(tmp_path: Path):
    from pipeline.registry import DatasetIdentity, ForeignModelError

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    sim = DatasetIdentity("broadband_cpe", ("rx_power_dbm", "device_model"))
    Registry(tmp_path / "registry", sim).register("v1", {"model.onnx": tmp_path / "model.onnx"},
                                                  {"lineage": {"partition": "2026-10-01"}})
    Registry(tmp_path / "registry").promote("v1", reason="first", by="user")
    assert json.loads((tmp_path / "registry" / "versions" / "v1" / "entry.json").read_text())["lineage"] == {
        "partition": "2026-10-01", "dataset": "broadband_cpe", "features": ["rx_power_dbm", "device_model"]}
    reordered = DatasetIdentity("broadband_cpe", ("device_model", "rx_power_dbm"))
    assert Registry(tmp_path / "registry", reordered).get(PRODUCTION).version == "v1"  # order is not identity

    other = Registry(tmp_path / "registry", DatasetIdentity("stream", ("x1", "x2")))  # a data folder shared by mistake
    with pytest.raises(ForeignModelError, match=r"version v1 was trained on dataset 'broadband_cpe', not 'stream'.*"
                                                r"own data folder \(EVERGREEN_DATA_DIR; by default data/<dataset name>/\)"):
        other.get(PRODUCTION)
    grown = Registry(tmp_path / "registry", DatasetIdentity("broadband_cpe", ("rx_power_dbm", "device_model", "snr")))
    with pytest.raises(ForeignModelError, match=r"trained on features other than the running dataset's "
                                                r"\(it adds \['snr'\] and drops \[\]\)"):
        grown.get(PRODUCTION)
    with pytest.raises(ForeignModelError, match="dataset 'stream', not 'broadband_cpe'"):
        Registry(tmp_path / "registry", sim).register("v2", {}, {"lineage": {"dataset": "stream"}})
    assert Registry(tmp_path / "registry").versions() == ["v1"]


def test_the_storage_registry_checks_the_running_dataset_and_each_dataset_has_its_own_data_folder(tmp_path: Path, monkeypatch):
    from assets import resources
    from assets.resources import StorageResource, default_data_dir
    from pipeline.registry import ForeignModelError
    from tests.conftest import BYOD_YAML, DEFAULT_YAML

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    byod = StorageResource(data_dir=str(tmp_path), dataset_path=str(BYOD_YAML))
    byod.registry.register("v1", {"model.onnx": tmp_path / "model.onnx"}, {"lineage": {"partition": "2026-06-03"}})
    byod.registry.promote("v1", reason="first", by="user")
    with pytest.raises(ForeignModelError, match="trained on dataset 'isp_export', not 'broadband_cpe'"):
        StorageResource(data_dir=str(tmp_path), dataset_path=str(DEFAULT_YAML)).production_teacher()

    monkeypatch.delenv(resources.DATA_DIR_ENV, raising=False)
    assert default_data_dir() == str(ROOT / "data" / "broadband_cpe")
    monkeypatch.setenv(resources.DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == str(tmp_path)
