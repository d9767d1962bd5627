"""The definitions load, are grouped by layer, documented, and start their sensors by themselves; the
dataset they were loaded with is the one their runs read."""

import re

import dagster as dg
import pytest

import definitions
from assets.data import raw_telemetry
from assets.federated import SITE_DAILY, SITES, site_update
from assets.partitions import DAILY, DATASET_PATH
from assets.resources import DatasetResource
from pipeline.dataset import DatasetConfigError
from tests.conftest import DEFAULT_PARTITIONS, write_small_dataset


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)


def test_assets_are_grouped_by_layer_and_documented():
    graph = definitions.defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_telemetry": "data", "clean_telemetry": "data", "quarantine": "data", "features": "data",
        "gold_labels": "data", "training_set": "training", "training_window": "model", "teacher_model": "model", "student_model": "model",
        "evaluation": "model", "onnx_student": "deployment", "candidate_model": "deployment", "edge_package": "deployment",
        "drift_report": "feedback", "retraining_policy": "feedback", "production_model": "deployment",
        "canary_report": "release", "label_queue": "labelling", "weak_labels": "labelling", "pseudo_labels": "labelling",
        "site_stores": "federated", "site_update": "federated", "federated_student": "federated",
        "loop_report": "report",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.partitions_def == (SITE_DAILY if key == site_update.key else DAILY), key


def test_a_site_update_is_partitioned_by_day_and_site():
    assert SITE_DAILY.partitions_defs[0].partitions_def == DAILY
    assert {d.name for d in SITE_DAILY.partitions_defs} == {"date", "site"}
    assert SITES.get_partition_keys() == ["north", "south", "east", "west"]


def test_edge_package_is_the_final_asset():
    graph = definitions.defs.resolve_asset_graph()
    sinks = [k.to_user_string() for k in graph.get_all_asset_keys()
             if not graph.get(k).child_keys and k.to_user_string() not in ("quarantine", "canary_report", "label_queue", "federated_student", "loop_report")]
    assert sinks == ["edge_package"]


def test_sensors_run_by_default_and_jobs_exist():
    for name in ("landing_sensor", "drift_sensor", "label_sensor", "federated_sensor", "canary_sensor", "run_failure_alert"):
        assert definitions.defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING, name
    assert {j.name for j in definitions.defs.resolve_all_job_defs()} >= {
        "ingest_job", "retrain_job", "main_job", "federated_site_job", "federated_round_job", "rollback_job", "conclude_canary_job"}


def test_the_rollback_job_defaults_to_previous_in_the_launchpad():
    from assets.release import RollbackConfig

    job = definitions.defs.resolve_job_def("rollback_job")
    assert job.run_config_schema.config_type.fields["ops"].config_type.fields  # config editable in the UI
    assert RollbackConfig().version == "previous"


def test_raw_data_checks_are_the_great_expectations_groups_and_the_landing_entries():
    checks = {key.name for key in definitions.defs.resolve_asset_graph().asset_check_keys
              if key.asset_key.to_user_string() == "raw_telemetry"}
    assert checks == {"schema", "null_rates", "value_ranges", "uniqueness", "label_values", "landing_files"}


def test_the_dataset_resource_defaults_to_the_dataset_the_definitions_were_loaded_with():
    assert DatasetResource().config_path == str(DATASET_PATH)
    assert DatasetResource().load().partitions.start_date.isoformat() == DAILY.start.strftime("%Y-%m-%d")


def test_a_dataset_that_differs_only_in_what_the_definitions_do_not_build_from_runs(tmp_path):
    config = DatasetResource(config_path=str(write_small_dataset(tmp_path, devices_per_site=4))).load()
    assert config.simulator.devices_per_site == 4 and config.training.student.epochs == 5


@pytest.mark.parametrize(("section", "field", "value"), [
    ("partitions", "start_date", "2026-09-01"), ("partitions", "window_days", 5), ("partitions", "sites", ["north"]),
])
def test_a_dataset_with_other_partitions_or_windows_is_refused_naming_the_field_and_both_files(tmp_path, section, field, value):
    path = write_small_dataset(tmp_path, partitions={**DEFAULT_PARTITIONS, field: value})
    with pytest.raises(DatasetConfigError) as refused:
        DatasetResource(config_path=str(path)).load()
    message = str(refused.value)
    assert message.startswith(f"{path} differs from {DATASET_PATH}, the dataset the definitions were loaded with")
    assert re.findall(r"(\w+\.\w+) \(", message) == [f"{section}.{field}"]
    assert f"EVERGREEN_DATASET={path} and reload the code location" in message


def test_a_run_on_a_dataset_with_another_look_back_window_fails_naming_it(tmp_path):
    path = write_small_dataset(tmp_path, feedback={"concept": {"lookback_days": 2}})
    resources = definitions.build_resources(str(tmp_path / "data"), str(path))
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_telemetry], partition_key="2026-10-01", resources=resources, instance=instance,
                                raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = str(failure.event_specific_data.error)
    assert f"{path} differs from {DATASET_PATH}" in error and "feedback.concept.lookback_days (2, loaded 3)" in error
