"""Releases through the real graph: gates block a bad candidate, a good one goes to a canary site,
the canary sensor rolls it out, and rollback (the job and the command) serves byte-identical
packages. One scenario on small simulated data, played in order by a module fixture."""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

import definitions
from assets import release
from assets.jobs import INGEST_SELECTION, MAIN_SELECTION, RETRAIN_SELECTION
from pipeline import training_set as training_lib
from pipeline.dataset import LABEL
from pipeline.registry import (
    CANARY_ROLLED_OUT,
    CANARY_STARTED,
    PREVIOUS,
    PRODUCTION,
    PROMOTION,
    ROLLBACK,
    Registry,
)
from pipeline.training_set import SPLIT
from sensors.canary import canary_sensor
from tests.conftest import ROOT, write_small_dataset

ASSETS = definitions.ASSETS
BOOTSTRAP, RELEASE_DAY, JUDGED = ["2026-10-18", "2026-10-19", "2026-10-20"], "2026-10-21", ["2026-10-22", "2026-10-23"]


@dataclass
class Scenario:
    data_dir: Path
    dataset: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    runs: dict = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        return Registry(self.data_dir / "registry")

    def materialize(self, name: str, day: str, selection=MAIN_SELECTION) -> dg.ExecuteInProcessResult:
        resources = definitions.build_resources(str(self.data_dir), str(self.dataset))
        self.runs[name] = dg.materialize(ASSETS, selection=selection, partition_key=day, resources=resources,
                                         instance=self.instance, raise_on_error=False)
        return self.runs[name]

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, definitions=self.defs, resources=self.defs.resources)
        return canary_sensor.evaluate_tick(context)


def _shuffled_labels(build):
    """``build_training_set`` whose train and validation labels are shuffled: a candidate that
    learns noise. Test labels stay true, so the gates judge it on the truth."""
    def shuffled(*args, **kwargs) -> pl.DataFrame:
        frame = build(*args, **kwargs)
        fit = np.flatnonzero((frame[SPLIT].is_in(["train", "validation"]) & frame[LABEL].is_not_null()).to_numpy())
        labels = frame[LABEL].to_list()
        for target, source in zip(fit, np.random.default_rng(0).permutation(fit)):
            labels[target] = frame[LABEL][int(source)]
        return frame.with_columns(pl.Series(LABEL, labels, dtype=frame[LABEL].dtype))
    return shuffled


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    # The small fleet's candidates are judged on about 200 test rows with a 5-epoch student: a sound retrain
    # lost 0.095 macro-F1 by chance on one machine (and passed on another), the shuffled one loses 0.55.
    dataset = write_small_dataset(root, deployment={"gates": {"max_regression": 0.1},
                                                    "canary": {"fraction": 0.25, "window_days": 2, "min_labels": 30,
                                                               "tolerance": 0.2}})
    resources = definitions.build_resources(str(root / "data"), str(dataset))
    defs = dg.Definitions(assets=ASSETS, jobs=[release.rollback_job, release.conclude_canary_job],
                          sensors=[canary_sensor], resources=resources)
    with dg.instance_for_test() as instance:
        s = Scenario(root / "data", dataset, instance, defs)
        for day in BOOTSTRAP[:-1]:
            s.materialize(f"ingest {day}", day, INGEST_SELECTION)
        s.materialize("bootstrap", BOOTSTRAP[-1])
        s.materialize(f"ingest {RELEASE_DAY}", RELEASE_DAY, INGEST_SELECTION)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training_lib, "build_training_set", _shuffled_labels(training_lib.build_training_set))
            s.materialize("bad retrain", RELEASE_DAY, RETRAIN_SELECTION)
        s.materialize("good retrain", RELEASE_DAY, RETRAIN_SELECTION)
        for day in JUDGED:
            s.materialize(f"ingest {day}", day, INGEST_SELECTION)
        yield s


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def test_a_candidate_trained_on_shuffled_labels_is_blocked_and_production_stays(scenario):
    bad, bootstrap = scenario.runs["bad retrain"], scenario.runs["bootstrap"]
    assert all(r.success for name, r in scenario.runs.items() if name != "bad retrain"), {
        name: [(c.check_name, {k: v.value for k, v in c.metadata.items()}) for c in r.get_asset_check_evaluations() if not c.passed]
        for name, r in scenario.runs.items() if not r.success and name != "bad retrain"}
    assert not bad.success
    checks = _checks(bad)
    assert checks["torch_parity"] and not checks["quality_floor"] and not checks["no_regression"]
    materialized = {e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
    assert "candidate_model" in materialized  # registered, as a failed blocking check does not undo it ...
    assert not {"production_model", "edge_package"} & materialized  # ... but never released
    bad_version = _metadata(bad, "candidate_model")["version"]
    assert bad_version in scenario.registry.versions()
    assert all(e["version"] != bad_version for e in scenario.registry.history())
    first_production = _metadata(bootstrap, "production_model")["production"]
    assert scenario.runs["good retrain"].success  # the next candidate, trained on true labels, passes
    assert all(_checks(scenario.runs["good retrain"]).values())
    assert _metadata(scenario.runs[f"ingest {RELEASE_DAY}"], "drift_report")["production_version"] == first_production


def test_a_good_candidate_serves_the_canary_site_first(scenario):
    released = _metadata(scenario.runs["good retrain"], "production_model")
    version = _metadata(scenario.runs["good retrain"], "candidate_model")["version"]
    first_production = _metadata(scenario.runs["bootstrap"], "production_model")["production"]
    assert released["released_to"] == "canary" and released["production"] == first_production
    assert released["gray_release"] == "a canary on 25% of the sites"  # a retrain without a confirmed change
    package = _metadata(scenario.runs["good retrain"], "edge_package")
    assert package["version"] == version and package["served_to"] == released["canary_sites"]
    pending, judged = (_metadata(scenario.runs[f"ingest {day}"], "canary_report") for day in JUDGED)
    assert (pending["verdict"], pending["canary_version"]) == ("pending", version)
    # while its labels are pending, each arm's accuracy is estimated on the rows it served
    assert 0.5 < pending["canary_estimated_accuracy"] <= 1 and 0.5 < pending["control_estimated_accuracy"] <= 1
    assert pending["estimate"].startswith("canary 0.") and " vs control 0." in pending["estimate"]
    assert judged["verdict"] == "roll_out" and judged["days_observed"] == 2
    assert judged["canary_rows"] >= 30 and judged["control_rows"] >= 30
    assert 0.5 < judged["candidate_accuracy"] <= 1 and 0.5 < judged["production_accuracy"] <= 1  # both on every served row
    assert judged["canary_sites"] == released["canary_sites"]


def test_the_canary_sensor_rolls_the_verdict_out_once(scenario):
    version = _metadata(scenario.runs["good retrain"], "candidate_model")["version"]
    tick = scenario.tick()
    [request] = tick.run_requests
    assert request.run_key == f"canary:{version}:roll_out"
    job = scenario.defs.resolve_job_def("conclude_canary_job")
    result = job.execute_in_process(run_config=request.run_config, instance=scenario.instance,
                                    tags={**request.tags, "dagster/sensor_name": "canary_sensor"})
    assert result.success and result.output_for_node("conclude_canary")["applied"]
    registry = scenario.registry
    assert registry.resolve(PRODUCTION) == version and registry.canary() is None
    assert registry.history()[-1]["event"] == CANARY_ROLLED_OUT and registry.history()[-1]["by"] == "sensor:canary_sensor"
    assert scenario.tick().skip_message.endswith("in progress now: none")  # one verdict, one run
    again = job.execute_in_process(run_config=request.run_config, instance=scenario.instance)
    assert not again.output_for_node("conclude_canary")["applied"] and registry.resolve(PRODUCTION) == version


@pytest.mark.slow
def test_rollback_from_the_command_line_and_back_serves_byte_identical_packages(scenario):
    """After the roll-out (previous test), roll back to ``previous`` with the command, then again
    with the job: production returns, and each version's package is the one first built for it."""
    registry = scenario.registry
    first, second = (_metadata(scenario.runs[run], "candidate_model") for run in ("bootstrap", "good retrain"))
    assert registry.resolve(PRODUCTION) == second["version"]
    env = {**os.environ, "EVERGREEN_DATA_DIR": str(scenario.data_dir), "EVERGREEN_DATASET": str(scenario.dataset),
           "DAGSTER_HOME": str(scenario.data_dir.parent / "cli_home")}
    done = subprocess.run([sys.executable, "-m", "deploy.rollback", "--reason", "test incident"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"production is {first['version']}" in done.stdout and first["package_sha256"] in done.stdout
    assert (registry.resolve(PRODUCTION), registry.resolve(PREVIOUS)) == (first["version"], second["version"])

    result = scenario.defs.resolve_job_def("rollback_job").execute_in_process(instance=scenario.instance)
    outcome = result.output_for_node("rollback_production")
    assert outcome["production"] == second["version"] and outcome["sha256"] == second["package_sha256"]
    history = registry.history()
    assert [e["event"] for e in history] == [PROMOTION, CANARY_STARTED, CANARY_ROLLED_OUT, ROLLBACK, ROLLBACK]
    assert [e["production"] for e in history[-2:]] == [first["version"], second["version"]]
    assert history[-2]["by"].startswith("cli:") and history[-2]["reason"] == "test incident" and history[-1]["by"] == "user"


def test_a_package_that_differs_from_the_first_build_is_refused(scenario):
    registry = scenario.registry
    first = _metadata(scenario.runs["bootstrap"], "candidate_model")
    package = Path(first["package"])
    package.write_bytes(package.read_bytes() + b"\0")
    result = scenario.defs.resolve_job_def("rollback_job").execute_in_process(
        instance=scenario.instance, raise_on_error=False,
        run_config=dg.RunConfig(ops={"rollback_production": release.RollbackConfig(version=first["version"])}))
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "differs from the package first built" in failure.step_failure_data.error.message
    assert registry.resolve(PRODUCTION) != first["version"]


def _report(instance: dg.DagsterInstance, day: str, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="canary_report", partition=day, metadata=metadata))


def test_the_canary_sensor_rolls_back_a_worse_canary_and_waits_on_pending(tmp_path: Path):
    from assets.resources import StorageResource
    from pipeline.registry import Canary

    storage = StorageResource(data_dir=str(tmp_path))
    (tmp_path / "m").write_text("m")
    for v in ("v1", "v2"):
        storage.registry.register(v, {"m": tmp_path / "m"}, {"lineage": {"partition": "2026-10-01"}})
    storage.registry.promote("v1", reason="t", by="test")
    storage.registry.start_canary(Canary("v2", ("east",), "2026-10-01", 2), reason="t", by="test")
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
            return canary_sensor.evaluate_tick(context)

        _report(instance, "2026-10-02", canary_version="v2", verdict="pending", reason="canary window runs to 2026-10-03")
        pending = tick()
        assert not pending.run_requests and pending.skip_message.endswith("canary window runs to 2026-10-03")
        _report(instance, "2026-10-03", canary_version="v2", verdict="roll_back", reason="canary 0.70 vs control 0.90")
        [request] = tick(pending.cursor).run_requests
        assert request.run_key == "canary:v2:roll_back"
        assert request.run_config["ops"]["conclude_canary"]["config"]["roll_out"] is False
        assert tick(pending.cursor).run_requests[0].run_key == request.run_key  # the run key makes it one run
        assert tick(tick(pending.cursor).cursor).skip_message == "no new canary_report"
