"""The graph through ``dagster.materialize`` on three daily partitions of small simulated data."""

import html
import json
import os
import re
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

import definitions
from assets import metadata as md
from assets.federated import NOT_CHECKED
from assets.jobs import INGEST_SELECTION, MAIN_SELECTION
from assets.report import reason_counts
from pipeline.registry import Registry
from pipeline.teacher import Teacher

DAYS = ["2026-10-18", "2026-10-19", "2026-10-20"]
ALL_ASSETS = definitions.ASSETS


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    from tests.conftest import DEFAULT_YAML, write_small_dataset

    root = tmp_path_factory.mktemp("graph")
    labelling = yaml.safe_load(DEFAULT_YAML.read_text())["labelling"]
    labelling["augmentation"]["min_class_fraction"] = 0.15  # the small window's rarest classes sit near the default 8%
    resources = definitions.build_resources(str(root / "data"), str(write_small_dataset(root, labelling=labelling)))
    with dg.instance_for_test() as instance:
        results = [dg.materialize(ALL_ASSETS, selection=INGEST_SELECTION, partition_key=day, resources=resources, instance=instance)
                   for day in DAYS[:-1]]
        results.append(dg.materialize(ALL_ASSETS, selection=MAIN_SELECTION, partition_key=DAYS[-1], resources=resources, instance=instance))
        yield root / "data", results, instance


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _counts(table: dg.TableMetadataValue, key: str) -> dict:
    """A name -> rows table as a mapping."""
    return {r[key]: r["rows"] for r in md.records(table)}


def _columns(table: dg.TableMetadataValue) -> list[str]:
    return [c.name for c in table.schema.columns]


def test_every_run_succeeds_and_every_check_passes(graph_run):
    _, results, _ = graph_run
    assert all(r.success for r in results)
    for result in results:
        failed = [(c.asset_key.to_user_string(), c.check_name) for c in result.get_asset_check_evaluations() if not c.passed]
        assert failed == []
    assert {c.check_name for c in results[-1].get_asset_check_evaluations()} == {
        "schema", "null_rates", "value_ranges", "uniqueness", "label_values", "landing_files", "rows_reconcile",
        "clean_share", "torch_parity",
        "int8_accuracy", "quality_floor", "no_regression", "package_budget"}


def test_rows_reconcile_per_partition(graph_run):
    _, results, _ = graph_run
    for result in results:
        [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rows_reconcile"]
        m = {k: v.value for k, v in check.metadata.items()}
        assert m["raw"] == m["clean"] + m["quarantined"] + m["duplicates"]
        assert m["raw"] == _metadata(result, "raw_telemetry")["rows"]
        assert m["quarantined"] == _metadata(result, "quarantine")["rows"] > 0


def test_the_newest_day_materializes_every_asset_and_ingest_days_data_and_feedback(graph_run):
    _, results, instance = graph_run
    everything = {k.to_user_string() for k in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    rounds = {"site_update", "federated_student"}  # a federated round spans runs of its own
    assert {e.asset_key.to_user_string() for e in results[-1].get_asset_materialization_events()} == everything - rounds
    assert {e.asset_key.to_user_string() for e in results[0].get_asset_materialization_events()} == {
        "raw_telemetry", "clean_telemetry", "quarantine", "features", "gold_labels", "label_queue", "weak_labels",
        "drift_report", "retraining_policy", "canary_report", "loop_report"}
    assert instance.get_materialized_partitions(dg.AssetKey("features")) == set(DAYS)


def test_every_day_writes_its_loop_report_with_the_registry_state_and_the_day_figures(graph_run):
    data_dir, results, _ = graph_run
    registry = Registry(data_dir / "registry")
    for day, result in zip(DAYS, results, strict=True):
        report = _metadata(result, "loop_report")
        page = (data_dir / "reports" / f"{day}.html").read_text(encoding="utf-8")
        assert report["path"] == str(data_dir / "reports" / f"{day}.html") and report["bytes"] == len(page.encode())
        assert report["quarantined_today"] == _metadata(result, "quarantine")["rows"] > 0
        assert all(html.escape(reason) in page for reason in reason_counts(_metadata(result, "quarantine")["top_reasons"]))
        assert report["accuracy"].startswith("![accuracy on returned labels per day](data:image/svg+xml;base64,")
        assert page.startswith("<!DOCTYPE html>") and f"Evergreen loop report, {day}" in page
    newest = _metadata(results[-1], "loop_report")
    production = registry.resolve("production")  # released by the same run, before its report
    assert newest["serving"] == "\n".join(f"- {site}: {production}" for site in ("north", "south", "east", "west"))
    assert newest["retrains"] == 1 and newest["last_retrain"].startswith(f"{production} ({DAYS[-1]})")
    assert _metadata(results[0], "loop_report")["status"] == "degraded"  # nothing serves yet


def test_the_label_queue_round_trip_feeds_active_labels_into_training(graph_run):
    """Day 1 queues rows; the oracle answers a day later through the inbox; gold_labels merges the
    answers; the training set carries them (and the other methods' labels) with their provenance."""
    data_dir, results, _ = graph_run
    queue = _metadata(results[0], "label_queue")
    assert queue["rows"] == 100 and queue["method"] == "committee (vote_entropy)"
    queued = pl.read_csv(queue["path"], schema_overrides={"label": pl.String})
    assert queued.height == 100 and queued["label"].null_count() == 100 and "device_id" in queued.columns
    second = _metadata(results[1], "gold_labels")
    assert md.records(second["inbox"]) == [{"files": 1, "rows": 100, "merged": 100, "rejected": 0, "unanswered": 0, "duplicates": 0}]
    # a queued row the ticket system also returned keeps the ticket's label (gold first)
    assert 50 < second["inbox_labels"] <= 100 and _counts(second["per_source"], "source")["inbox"] == second["inbox_labels"]
    assert list((data_dir / "label_inbox" / "answered" / DAYS[1]).glob("*.csv"))
    sources = _counts(_metadata(results[-1], "training_set")["train_rows_by_source"], "source")
    third = _metadata(results[-1], "gold_labels")["inbox_labels"]
    # (a row the ticket system returns later takes the ticket's label: the newest label of a row wins)
    assert 0.8 * (second["inbox_labels"] + third) <= sources["active"] <= second["inbox_labels"] + third
    assert sources["gold"] > sources["active"]
    assert sources["weak"] > 0 and sources["augmented"] > 0
    weak = _metadata(results[-1], "weak_labels")
    assert weak["rows"] > 0 and ("healthy", "none") in {(r["function"], r["label"]) for r in md.records(weak["functions"])}
    pseudo = _metadata(results[-1], "pseudo_labels")
    assert md.records(pseudo["rounds"])[0]["round"] == 0 and pseudo["stopped"]


def test_features_read_the_previous_days(graph_run):
    _, results, _ = graph_run
    assert _metadata(results[0], "features")["history_days_found"] == 0
    assert _metadata(results[-1], "features")["history_days_found"] == 2


def test_registry_and_package_carry_the_lineage_and_metrics(graph_run):
    data_dir, results, _ = graph_run
    registry = Registry(data_dir / "registry")
    version = registry.get("candidate")
    assert version.version == _metadata(results[-1], "candidate_model")["version"]
    assert version.entry["lineage"]["training_days"] == DAYS
    assert version.entry["lineage"]["partition"] == DAYS[-1]
    assert set(version.entry["files"]) >= {"teacher.txt", "student.pt", "student.onnx", "evaluation.json"}
    evaluation = _metadata(results[-1], "evaluation")
    assert md.rounded(version.entry["metrics"]["student"]["macro_f1"]) == evaluation["student_macro_f1"]
    assert 0.5 < evaluation["teacher_accuracy"] <= 1 and 0.5 < evaluation["student_accuracy"] <= 1
    assert evaluation["confusion_matrices"].startswith("![confusion matrices](data:image/png;base64,")
    metrics = md.records(evaluation["metrics"])
    assert _columns(evaluation["metrics"]) == ["model", "scope", "rows", "accuracy", "macro_f1", "sample"]
    assert metrics[0] == {"model": "teacher", "scope": "test split", "rows": evaluation["test_rows"],
                          "accuracy": evaluation["teacher_accuracy"], "macro_f1": evaluation["teacher_macro_f1"],
                          "sample": evaluation["test_sample"]}
    assert metrics[1]["rows"] == evaluation["newest_test_day_rows"] and metrics[1]["sample"] == evaluation["newest_test_day_sample"]
    per_class = md.records(evaluation["per_class"])
    assert _columns(evaluation["per_class"]) == ["model", "class", "precision", "recall", "support", "sample"]
    assert all(r["sample"] == md.sample(r["support"], 200) for r in per_class)
    assert any(r["sample"] == "small sample (< 200 rows)" for r in per_class)  # the small data's rare classes
    slices = md.records(evaluation["slices"])
    assert {r["slice"] for r in slices} >= {"site", "firmware_version", "device_model"}
    assert sum(r["rows"] for r in slices if r["model"] == "teacher" and r["slice"] == "site") == evaluation["test_rows"]

    package = Path(_metadata(results[-1], "edge_package")["path"])
    manifest = json.loads(zipfile.ZipFile(package).read("manifest.json"))
    assert manifest["version"] == version.version
    assert manifest["files"]["student.onnx"] == version.entry["files"]["student.onnx"]
    assert md.rounded(manifest["metrics"]["macro_f1"]) == evaluation["student_macro_f1"]
    derived = set(manifest["feature_order"]) - {f["name"] for f in manifest["preprocessing"]["numeric"][:11]} - {"device_model", "firmware_version"}
    assert derived == set(manifest["derived_features"]) == {"hour", "rx_power_dbm_delta", "temperature_c_delta", "latency_ms_delta"}


def test_the_first_model_is_bootstrapped_promoted_and_carries_its_reference(graph_run):
    data_dir, results, _ = graph_run
    policy = _metadata(results[-1], "retraining_policy")
    assert policy["action"] == "full" and "no production model" in policy["reason"]
    teacher = _metadata(results[-1], "teacher_model")
    assert teacher["method"] == "window" and teacher["policy"] == "full"
    registry = Registry(data_dir / "registry")
    production = registry.get("production")
    assert production.version == _metadata(results[-1], "production_model")["production"]
    assert production.entry["reference"]["days"] == [DAYS[-1]]
    assert production.file("reference.parquet").is_file()

    # a first model judges the distillation weight: the configured one against the alternative
    student = _metadata(results[-1], "student_model")
    choice = json.loads(production.file("student.json").read_text())["alpha_choice"]
    assert [j["alpha"] for j in choice["judged"]] == [0.9, 0.0] and student["alpha"] == choice["alpha"]
    assert student["alpha_choice"] == choice["reason"] and ("stays" in choice["reason"] or "replaces" in choice["reason"])
    # then refitted with the validation rows, so its int8 model is checked on the test split; a student that
    # listens to its teacher (alpha above 0) learns from the window teacher refitted on them for its kept rounds
    refit = json.loads(production.file("student.json").read_text())["refit"]
    rows = f"refitted on the training and {refit['validation_rows']} validation rows for {refit['epochs']} epochs"
    kept_rounds = Teacher.load(production.directory).booster.current_iteration()
    assert refit["validation_rows"] > 0 and refit["teacher_rounds"] == (kept_rounds if student["alpha"] > 0 else None)
    assert student["refit"] == (f"{rows}, from its teacher refitted on them for {kept_rounds} rounds" if student["alpha"] > 0
                                else f"{rows}, from its teacher as trained")
    assert re.fullmatch(r"test split \(\d+ rows\)", _metadata(results[-1], "onnx_student")["checked_on"])


def test_the_next_day_is_judged_against_the_production_model(graph_run):
    """With a production model, the day's ingest reports drift against it and the policy decides."""
    data_dir, results, instance = graph_run
    resources = definitions.build_resources(str(data_dir), str(data_dir.parent / "small.yaml"))
    result = dg.materialize(ALL_ASSETS, selection=INGEST_SELECTION, partition_key="2026-10-21", resources=resources, instance=instance)
    report = _metadata(result, "drift_report")
    production = Registry(data_dir / "registry").resolve("production")
    assert report["production_version"] == production and report["detector"] == "alibi"
    assert report["fresh_labels"] > 0 and 0.5 < report["fresh_label_accuracy"] <= 1
    assert _columns(report["features"])[:2] == ["feature", "kind"] and len(md.records(report["features"])) == 13
    frame = result.output_for_node("drift_report")
    assert set(frame["kind"]) - {"loss slice"} == {"numeric", "categorical", "stability", "prediction", "concept", "concept slice",
                                                 "estimate", "attribution"}
    # issue 19: the estimate without labels, checked on the labels that came back, and the causes
    assert report["estimate_reliable"] == (report["estimated_accuracy"] == report["estimated_accuracy"])  # NaN when unreliable
    assert not report["estimate_reliable"] or report["estimated_accuracy_low"] <= report["estimated_accuracy"] <= report["estimated_accuracy_high"]
    assert report["estimate_error"] == pytest.approx(abs(report["fresh_estimated_accuracy"] - report["fresh_measured_accuracy"]))
    assert len(report["top_causes"]) == 3 and report["cause_summary"].startswith("The model's attribution moved most on")
    policy = _metadata(result, "retraining_policy")
    decision = json.loads((data_dir / "artifacts" / "retraining_policy" / "2026-10-21" / "decision.json").read_text())
    assert policy["production_version"] == decision["production_version"] == production
    assert (policy["action"], policy["reason"]) == (decision["action"], decision["reason"])
    assert (decision["event_key"] is None) == (policy["action"] == "none")  # an alarm opens an event of this model
    assert decision["event_key"] is None or decision["event_key"].startswith(f"{production}@")


def test_raw_device_ids_stop_at_raw_telemetry(graph_run):
    data_dir, _, _ = graph_run
    leaked = [p for p in (data_dir / "assets").rglob("*.parquet")
              if "raw_telemetry" not in p.parts and b"CPE-" in p.read_bytes()]
    assert leaked == []
    assert any(b"CPE-" in p.read_bytes() for p in (data_dir / "assets" / "raw_telemetry").glob("*.parquet"))


def test_features_of_a_day_that_was_never_ingested_fail_clearly(tmp_path):
    resources = definitions.build_resources(str(tmp_path / "data"))
    features = next(a for a in ALL_ASSETS if dg.AssetKey("features") in a.keys)
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL_ASSETS, selection=[features], partition_key="2026-10-19",
                                resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "clean_telemetry 2026-10-19 is not materialized" in str(failure.event_specific_data.error)


_OPENED: list[str] | None = None


def _record_opens(event: str, args: tuple) -> None:
    """Files opened for reading (audit event ``open``: path, mode, flags)."""
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & (os.O_WRONLY | os.O_RDWR))
        if not writes:
            _OPENED.append(os.fsdecode(path))


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; this one records only inside _files_opened


@contextmanager
def _files_opened(root: Path):
    """Every file under ``root`` that Python opened for reading inside the block (relative paths;
    directories and the temporaries of atomic writes, which are fsynced read-only, left out). The
    IO manager and the site stores read through Python's ``open``, so polars reads are seen too."""
    global _OPENED
    _OPENED, opened = [], []
    try:
        yield opened
    finally:
        opened += sorted({str(Path(p).resolve().relative_to(root.resolve())) for p in _OPENED
                          if Path(p).resolve().is_relative_to(root.resolve()) and Path(p).is_file()})
        _OPENED = None


def _materialize_round(data_dir: Path, instance, day: str) -> tuple[dict, dict]:
    from assets.federated import SITES, federated_student, site_update

    resources = definitions.build_resources(str(data_dir), str(data_dir.parent / "small.yaml"))
    sites = {}
    for site in SITES.get_partition_keys():
        with _files_opened(data_dir) as opened:
            key = dg.MultiPartitionKey({"date": day, "site": site})
            result = dg.materialize(ALL_ASSETS, selection=[site_update], partition_key=str(key), resources=resources, instance=instance)
        sites[site] = (result, opened)
    with _files_opened(data_dir) as opened:
        result = dg.materialize(ALL_ASSETS, selection=[federated_student], partition_key=day, resources=resources, instance=instance)
    return sites, {"result": result, "opened": opened}


def _ensure_round_one(data_dir: Path, instance) -> None:
    """Round one of the newest day (the round test runs it first; alone, a test runs it here)."""
    if not (data_dir / "artifacts" / "federated_student" / DAYS[-1] / "round-1" / "round.json").exists():
        _materialize_round(data_dir, instance, DAYS[-1])


def test_a_federated_round_moves_only_weights(graph_run):
    """Each site's run reads its own store, the teacher and the global weights, nothing of another
    site; the aggregator reads only the sites' weights and reports; the round is recorded."""
    data_dir, _, instance = graph_run
    day = DAYS[-1]
    sites, aggregation = _materialize_round(data_dir, instance, day)
    for site, (result, opened) in sites.items():
        assert result.success
        assert f"sites/{site}/training_set/{day}.parquet" in opened
        allowed = (f"sites/{site}/", f"artifacts/teacher_model/{day}/")
        assert [p for p in opened if not p.startswith(allowed)] == [], site
        m = _metadata(result, "site_update")
        assert m["round"] == 1 and m["start"] == "seed" and m["samples"] > 100 and m["bytes_sent"] > 1000
        assert m["local_validation_loss"] < m["received_validation_loss"]
    assert aggregation["result"].success
    opened = aggregation["opened"]
    assert {p for p in opened if p.endswith("update.npz")} == {f"artifacts/site_update/{day}/{s}/round-1/update.npz" for s in sites}
    assert [p for p in opened if not (p.startswith("artifacts/") and p.endswith((".npz", ".json")))] == []
    assert not any(p.startswith("sites/") or ".parquet" in p for p in opened)
    m = _metadata(aggregation["result"], "federated_student")
    assert m["round"] == 1 and m["sites"] == 4 and m["epsilon"] == "no differential privacy"
    assert m["samples"] == sum(_metadata(r, "site_update")["samples"] for r, _ in sites.values())
    assert m["bytes_received"] == sum(_metadata(r, "site_update")["bytes_sent"] for r, _ in sites.values())
    per_site = {r["site"]: r for r in md.records(m["per_site"])}
    assert set(per_site) == set(sites) and all(v["macro_f1"] is not None for v in per_site.values())
    assert all(v["drifted_features"] != NOT_CHECKED for v in per_site.values())
    assert (data_dir / "artifacts" / "federated_student" / day / "round-1" / "global.npz").exists()


def test_a_site_run_needs_nothing_but_its_own_store_and_the_teacher(graph_run, tmp_path):
    """Native readers (polars, LightGBM) would escape the audit hook: so run a site against a data
    directory that holds only its own store and the teacher; it sends the same update."""
    import shutil

    from assets.federated import site_update
    from pipeline.federated import read_weights

    data_dir, _, instance = graph_run
    _ensure_round_one(data_dir, instance)
    day, site, alone = DAYS[-1], "east", tmp_path / "east-only"
    shutil.copytree(data_dir / "sites" / site, alone / "sites" / site)
    shutil.copytree(data_dir / "artifacts" / "teacher_model" / day, alone / "artifacts" / "teacher_model" / day)
    resources = definitions.build_resources(str(alone), str(data_dir.parent / "small.yaml"))
    with dg.instance_for_test() as instance:
        key = str(dg.MultiPartitionKey({"date": day, "site": site}))
        result = dg.materialize(ALL_ASSETS, selection=[site_update], partition_key=key, resources=resources, instance=instance,
                                run_config={"ops": {"site_update": {"config": {"round": 1}}}})
    assert result.success
    update = f"artifacts/site_update/{day}/{site}/round-1/update.npz"
    here, there = read_weights(alone / update), read_weights(data_dir / update)
    assert all(np.allclose(here[k], there[k]) for k in there)


def test_the_federated_sensor_launches_the_next_round_per_site(graph_run):
    from assets.jobs import federated_round_job, federated_site_job
    from sensors.federated import federated_sensor

    data_dir, _, instance = graph_run
    _ensure_round_one(data_dir, instance)
    resources = definitions.build_resources(str(data_dir), str(data_dir.parent / "small.yaml"))
    defs = dg.Definitions(assets=ALL_ASSETS, jobs=[federated_site_job, federated_round_job], sensors=[federated_sensor],
                          resources=resources)
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=resources)
    requests = federated_sensor.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == sorted(f"{DAYS[-1]}|{s}" for s in ("east", "north", "south", "west"))
    assert {r.job_name for r in requests} == {"federated_site_job"}
    assert all(r.run_config["ops"]["site_update"]["config"]["round"] == 2 for r in requests)
    assert len({r.run_key for r in requests}) == 4 and all(":round-2:" in r.run_key for r in requests)


def test_a_student_that_int8_would_spoil_ships_fp32_and_is_released(graph_run, tmp_path, monkeypatch):
    """A failed int8 gate is a warning: the version ships its fp32 model alone, its package
    defaults to fp32, and it is released, where a block would leave nothing new serving."""
    import shutil

    from pipeline import release as release_lib

    data_dir, _, _ = graph_run
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    passed = release_lib.int8_gate

    def failing(*args, **kwargs) -> release_lib.Gate:
        gate = passed(*args, **kwargs)
        return release_lib.Gate(gate.name, False, gate.description, gate.metadata)

    monkeypatch.setattr(release_lib, "int8_gate", failing)
    resources = definitions.build_resources(str(copy), str(data_dir.parent / "small.yaml"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL_ASSETS, selection=["onnx_student", "candidate_model", "production_model", "edge_package"],
                                partition_key=DAYS[-1], resources=resources, instance=instance)
    assert result.success
    [int8] = [c for c in result.get_asset_check_evaluations() if c.check_name == "int8_accuracy"]
    assert not int8.passed and int8.severity == dg.AssetCheckSeverity.WARN
    assert _metadata(result, "onnx_student")["shipped"] == "fp32"
    version = Registry(copy / "registry").get(_metadata(result, "candidate_model")["version"])
    assert "student.int8.onnx" not in version.entry["files"] and version.entry["onnx"]["models"] == {"fp32": "student.onnx"}
    assert _metadata(result, "production_model")["released_to"] in {"canary", "production"}
    manifest = json.loads(zipfile.ZipFile(_metadata(result, "edge_package")["path"]).read("manifest.json"))
    assert manifest["models"]["default"] == "fp32" and set(manifest["models"]["precisions"]) == {"fp32"}
