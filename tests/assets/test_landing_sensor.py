"""The landing sensor: a new file runs its day once; a changed file runs again; nothing else does."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

import definitions
from assets.resources import DatasetResource
from sensors.landing import landing_sensor
from tests.conftest import BYOD_YAML, DEFAULT_PARTITIONS


@pytest.fixture
def landing_dataset(tmp_path: Path) -> tuple[Path, DatasetResource]:
    raw = yaml.safe_load(BYOD_YAML.read_text())
    raw["source"]["landing_dir"] = str(tmp_path / "landing")
    raw["partitions"] = DEFAULT_PARTITIONS
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "landing").mkdir()
    return tmp_path / "landing", DatasetResource(config_path=str(path))


def _tick(instance, dataset: DatasetResource, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions.defs,
                                      resources={"dataset": dataset})
    result = landing_sensor(context)
    return result, context.cursor


def test_new_files_request_their_day_once_and_changed_files_again(landing_dataset):
    landing, dataset = landing_dataset
    example = BYOD_YAML.parent / "landing" / "isp_export_2026-06-01.csv"
    shutil.copy(example, landing / "isp_export_2026-10-01.csv")  # the sensor maps names, not content
    shutil.copy(example, landing / "isp_export_2026-10-02.csv")
    (landing / "readme.txt").write_text("not data")
    with dg.instance_for_test() as instance:
        requests, cursor = _tick(instance, dataset, None)
        assert sorted(r.partition_key for r in requests) == ["2026-10-01", "2026-10-02"]
        assert landing_sensor.job_name == "ingest_job"  # requests name no job: they run the sensor's
        assert len({r.run_key for r in requests}) == 2
        first_key = next(r.run_key for r in requests if r.partition_key == "2026-10-01")

        again, cursor = _tick(instance, dataset, cursor)
        assert isinstance(again, dg.SkipReason)

        with open(landing / "isp_export_2026-10-01.csv", "a") as fh:
            fh.write("2026-10-01 23:00:00,CPE-X-1,ex-a,-18,2,40,10,1,0.1,15,2,300,0,1000,F670L,3.1.4,\n")
        changed, cursor = _tick(instance, dataset, cursor)
        assert [r.partition_key for r in changed] == ["2026-10-01"]
        assert changed[0].run_key != first_key and changed[0].run_key.startswith("2026-10-01:")


def test_the_run_key_depends_on_content_not_on_the_tick(landing_dataset):
    landing, dataset = landing_dataset
    shutil.copy(BYOD_YAML.parent / "landing" / "isp_export_2026-06-03.csv", landing / "export_2026-10-03.csv")
    with dg.instance_for_test() as instance:
        first, _ = _tick(instance, dataset, None)
        second, _ = _tick(instance, dataset, None)  # a lost cursor hashes again: same key, so no second run
        assert [r.run_key for r in first] == [r.run_key for r in second]


def test_files_outside_the_partitions_are_not_run(landing_dataset):
    landing, dataset = landing_dataset
    (landing / "old_2025-01-01.csv").write_text("Timestamp\n")  # before the first daily partition
    with dg.instance_for_test() as instance:
        result, _ = _tick(instance, dataset, None)
        assert isinstance(result, dg.SkipReason)


def test_the_simulator_dataset_has_nothing_to_watch():
    with dg.instance_for_test() as instance:
        result, _ = _tick(instance, DatasetResource(), None)
        assert isinstance(result, dg.SkipReason) and "no landing folder" in result.skip_message


def test_several_files_of_one_day_give_one_run(landing_dataset):
    landing, dataset = landing_dataset
    example = BYOD_YAML.parent / "landing" / "isp_export_2026-06-01.csv"
    for part in ("a", "b", "c"):
        shutil.copy(example, landing / f"{part}_2026-10-05.csv")
    with dg.instance_for_test() as instance:
        requests, cursor = _tick(instance, dataset, None)
        assert [r.partition_key for r in requests] == ["2026-10-05"]
        assert requests[0].tags["evergreen/landing_files"] == "3"
        shutil.copy(example, landing / "d_2026-10-05.csv")
        more, _ = _tick(instance, dataset, cursor)
        assert [r.partition_key for r in more] == ["2026-10-05"] and more[0].run_key != requests[0].run_key


def test_a_file_dated_after_the_newest_partition_runs_once_its_day_exists(landing_dataset, monkeypatch):
    from sensors import landing as landing_module

    landing, dataset = landing_dataset
    shutil.copy(BYOD_YAML.parent / "landing" / "isp_export_2026-06-01.csv", landing / "live_2026-10-10.csv")
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(landing_module, "DAILY", dg.DailyPartitionsDefinition("2026-10-01", end_date="2026-10-10"))
        waiting, cursor = _tick(instance, dataset, None)  # the 10th is today: not a partition yet
        assert isinstance(waiting, dg.SkipReason)
        monkeypatch.setattr(landing_module, "DAILY", dg.DailyPartitionsDefinition("2026-10-01", end_date="2026-10-11"))
        requests, _ = _tick(instance, dataset, cursor)
        assert [r.partition_key for r in requests] == ["2026-10-10"]


def _ingested(instance, day: str, tags: dict[str, str]) -> None:
    """A run that materialized ``raw_telemetry`` for ``day`` with ``tags``, as ``make run``'s ingest runs do."""
    from assets.partitions import DAILY

    @dg.asset(name="raw_telemetry", partitions_def=DAILY, io_manager_key="memory")
    def stub() -> None:
        return None

    dg.materialize([stub], partition_key=day, instance=instance, tags=tags, resources={"memory": dg.InMemoryIOManager()})


def test_days_make_run_ingested_from_the_same_files_are_not_run_again(landing_dataset):
    from sensors.landing import RUN_KEY_TAG, landed_run_keys

    landing, dataset = landing_dataset
    example = BYOD_YAML.parent / "landing" / "isp_export_2026-06-01.csv"
    for day in ("2026-10-01", "2026-10-02", "2026-10-03"):
        shutil.copy(example, landing / f"export_{day}.csv")
    tagged = landed_run_keys(landing, {"2026-10-01", "2026-10-02"})  # what make run tags its runs with
    assert sorted(tagged) == ["2026-10-01", "2026-10-02"]
    with dg.instance_for_test() as instance:
        _ingested(instance, "2026-10-01", {RUN_KEY_TAG: tagged["2026-10-01"]})
        _ingested(instance, "2026-10-02", {RUN_KEY_TAG: tagged["2026-10-02"]})
        with open(landing / "export_2026-10-02.csv", "a") as fh:  # changed after make run ingested it
            fh.write("2026-10-02 23:00:00,CPE-X-1,ex-a,-18,2,40,10,1,0.1,15,2,300,0,1000,F670L,3.1.4,\n")
        requests, cursor = _tick(instance, dataset, None)  # the sensor's first tick: no cursor yet
        assert [r.partition_key for r in requests] == ["2026-10-02", "2026-10-03"]
        assert all(r.tags[RUN_KEY_TAG] == r.run_key for r in requests)
        assert requests[0].run_key != tagged["2026-10-02"]

        _ingested(instance, "2026-10-02", {RUN_KEY_TAG: requests[0].run_key})
        _ingested(instance, "2026-10-03", {})  # ingested by hand: no key, so the sensor cannot tell
        again, _ = _tick(instance, dataset, None)  # a lost cursor: only the untagged day runs again
        assert [r.partition_key for r in again] == ["2026-10-03"]


def test_a_corrected_file_with_the_same_size_and_mtime_runs_again(landing_dataset):
    """A fix that keeps the size and restores the modification time (``cp -p``, ``rsync -t``) still
    changes the file's ctime, so the sensor hashes it again and runs its day."""
    import os

    landing, dataset = landing_dataset
    path = landing / "export_2026-10-06.csv"
    shutil.copy(BYOD_YAML.parent / "landing" / "isp_export_2026-06-01.csv", path)
    with dg.instance_for_test() as instance:
        [first], cursor = _tick(instance, dataset, None)
        stat = path.stat()
        text = path.read_text()
        path.write_text(text.replace("-1", "-2", 1))  # one reading corrected, same length
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        [again], _ = _tick(instance, dataset, cursor)
        assert again.partition_key == "2026-10-06" and again.run_key != first.run_key


def test_entries_that_belong_to_no_day_are_reported(landing_dataset):
    landing, dataset = landing_dataset
    for name in ("export_2026-10-7.csv", "export_2026-06-31.csv", "notes.txt"):
        (landing / name).write_text("Timestamp\n")
    with dg.instance_for_test() as instance:
        result, _ = _tick(instance, dataset, None)
    assert isinstance(result, dg.SkipReason) and "3 entries belong to no day" in result.skip_message
    assert "export_2026-06-31.csv: '2026-06-31' in the name is not a calendar date" in result.skip_message
