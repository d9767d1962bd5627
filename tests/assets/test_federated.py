"""Federated training in ``pipeline/federated.py``: FedAvg, FedProx, differential privacy, the round
files and the decision of what a round needs next; the non-IID simulator sites."""

import math
import re

import numpy as np
import polars as pl
import pytest

from pipeline import federated as fed
from pipeline.dataset import SITE, PrivacySpec
from pipeline.simulator import simulate_day
from pipeline.student import StudentData, encoding_fingerprint, new_model, train_epochs, validation_loss, weights_of

NO_PRIVACY = PrivacySpec()


def _weights(value: float) -> fed.Weights:
    return {"w": np.full((2, 3), value, dtype=np.float32), "b": np.full(3, value, dtype=np.float32)}


def test_fedavg_weighs_each_site_by_its_sample_count():
    result = fed.aggregate(_weights(0.0), {"a": (_weights(1.0), 100), "b": (_weights(4.0), 300)}, NO_PRIVACY, seed=0)
    assert np.allclose(result.weights["w"], (1.0 * 100 + 4.0 * 300) / 400)
    assert result.weights["w"].dtype == np.float32
    assert result.info["samples"] == {"a": 100, "b": 300}
    idle = fed.aggregate(_weights(0.0), {"a": (_weights(1.0), 100), "idle": (_weights(9.0), 0)}, NO_PRIVACY)
    assert np.allclose(idle.weights["w"], 1.0) and idle.info["sites"] == ["a"]  # a site without rows has no say


def test_differential_privacy_clips_each_update_and_adds_the_reported_noise():
    privacy = PrivacySpec(enabled=True, clip_norm=1.0, noise_multiplier=1e-9)
    big, small = _weights(10.0), _weights(0.01)  # norm of big: 10 * sqrt(9) = 30
    # equal weights under privacy, whatever the sample counts (they would make the sensitivity data-dependent)
    result = fed.aggregate(_weights(0.0), {"big": (big, 900), "small": (small, 100)}, privacy, seed=0)
    assert result.info["clipped_sites"] == ["big"] and "update_norms" not in result.info
    assert np.allclose(result.weights["w"], 0.5 * 10.0 / 30.0 + 0.5 * 0.01, atol=1e-6)

    noisy = PrivacySpec(enabled=True, clip_norm=1.0, noise_multiplier=2.0)
    many = {f"s{i}": (_weights(0.0), 10 * (i + 1)) for i in range(4)}
    spread = fed.aggregate(_weights(0.0), many, noisy)  # noise from the OS
    assert spread.info["noise_std"] == pytest.approx(2.0 * 1.0 / 4)
    again = fed.aggregate(_weights(0.0), many, noisy)
    assert not np.allclose(spread.weights["w"], again.weights["w"])
    values = np.concatenate([a.ravel() for a in spread.weights.values()])
    assert 0.1 < values.std() < 1.0  # 9 draws of N(0, 0.5)


def test_epsilon_falls_with_noise_and_grows_with_rounds():
    assert fed.dp_epsilon(1.0, 1, 1e-5) > fed.dp_epsilon(4.0, 1, 1e-5)
    assert fed.dp_epsilon(1.0, 10, 1e-5) > fed.dp_epsilon(1.0, 1, 1e-5)
    # one round, z = 1: RDP a / 2 + ln(1e5) / (a - 1), smallest at order 6: 3 + 2.3026
    assert fed.dp_epsilon(1.0, 1, 1e-5) == pytest.approx(5.3026, abs=1e-4)


def test_fedprox_keeps_a_local_model_nearer_the_global_one(config):
    spec = config.training.student
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    scores = rng.normal(size=(400, 5)) * 3
    data = StudentData.of(x, scores, rng.integers(0, 5, 400), spec.temperature)
    distances = {}
    for mu in (0.0, 10.0):
        model = new_model(6, 5, spec, seed=0)
        start = weights_of(model)
        train_epochs(model, data, data.rows(np.arange(0)), spec, epochs=5, seed=0, proximal_mu=mu)
        distances[mu] = math.sqrt(sum(((weights_of(model)[k] - start[k]) ** 2).sum() for k in start))
    assert 0 < distances[10.0] < 0.5 * distances[0.0]
    assert math.isnan(validation_loss(model, data.rows(np.arange(0)), spec))


def test_a_site_update_learns_from_its_own_rows_and_reports_only_numbers(trained):
    config, frame, teacher = trained.config, trained.frame, trained.teacher
    site_rows = frame.filter(pl.col(SITE) == "north")
    start = fed.seeded_weights(teacher.preprocessing["input_width"], config)
    update = fed.local_update("north", 1, site_rows, teacher, start, config)
    report = update.report
    assert update.samples == report["samples"] == site_rows.filter(pl.col("split").is_in(["train", "unlabelled"])).height
    assert report["local"]["validation_loss"] < report["received"]["validation_loss"]
    assert report["held_out_rows"] == site_rows.filter(pl.col("split").is_in(["validation", "test"])).height
    assert set(update.weights) == set(start) and not np.allclose(update.weights["net.0.weight"], start["net.0.weight"])
    assert all(isinstance(v, (int, float, str, dict, list, type(None))) for v in report.values())


def test_rounds_advance_site_by_site_then_aggregate_until_done(tmp_path, config):
    store, day, sites = fed.FederatedStore(tmp_path), "2026-10-20", ("north", "south")
    spec = config.training.federated.model_copy(update={"rounds": 2, "min_improvement": 0.0})
    assert fed.next_step(store, day, sites, spec) == ("sites", 1, ["north", "south"])
    fed.write_json(store.update_dir(day, "north", 1) / fed.REPORT_FILE, {})
    assert fed.next_step(store, day, sites, spec) == ("sites", 1, ["south"])
    fed.write_json(store.update_dir(day, "south", 1) / fed.REPORT_FILE, {})
    assert fed.next_step(store, day, sites, spec) == ("aggregate", 1, [])
    _finish_round(store, day, 1, converged=False)
    assert fed.next_step(store, day, sites, spec) == ("sites", 2, ["north", "south"])
    _finish_round(store, day, 2, converged=False)
    assert fed.next_step(store, day, sites, spec) is None  # the configured rounds are done
    assert store.latest_global("2026-10-21", inclusive=False, encoding="e1") == store.global_dir(day, 2) / fed.GLOBAL_FILE
    assert store.latest_global("2026-10-21", inclusive=False, encoding="other") is None
    assert store.latest_global(day, inclusive=False, encoding="e1") is None


def test_a_converged_day_needs_no_more_rounds(tmp_path, config):
    store, day = fed.FederatedStore(tmp_path), "2026-10-20"
    _finish_round(store, day, 1, converged=True)
    assert fed.next_step(store, day, ("north",), config.training.federated) is None
    assert fed.converged([0.5, 0.499], config.training.federated)
    assert not fed.converged([0.5, 0.4], config.training.federated)


def test_a_round_starts_from_the_previous_rounds_global_weights_or_says_which_is_missing(tmp_path, trained):
    config, preprocessing = trained.config, trained.teacher.preprocessing
    store, day, encoding = fed.FederatedStore(tmp_path), "2026-10-20", encoding_fingerprint(preprocessing)
    name, weights = fed.site_start(store, day, 1, preprocessing, config)
    assert name == fed.SEED_START and weights["net.0.weight"].shape[1] == preprocessing["input_width"]
    with pytest.raises(FileNotFoundError, match="materialize federated_student for round 1"):
        fed.site_start(store, day, 2, preprocessing, config)
    fed.save_weights(store.global_dir(day, 1) / fed.GLOBAL_FILE, weights)
    with pytest.raises(FileNotFoundError):  # weights without round.json: the round is still being written
        fed.site_start(store, day, 2, preprocessing, config)
    fed.write_json(store.global_dir(day, 1) / fed.ROUND_FILE, {"encoding": encoding})
    name, again = fed.site_start(store, day, 2, preprocessing, config)
    assert name == f"artifacts/federated_student/{day}/round-1/global.npz"
    assert all(np.array_equal(weights[k], again[k]) for k in weights)
    # the next day warm-starts from it, unless the encoding changed (same shapes can mean other columns)
    assert fed.site_start(store, "2026-10-21", 1, preprocessing, config)[0] == name
    renamed = {**preprocessing, "feature_order": list(reversed(preprocessing["feature_order"]))}
    assert fed.site_start(store, "2026-10-21", 1, renamed, config)[0] == fed.SEED_START
    with pytest.raises(ValueError, match="encoding changed"):
        fed.site_start(store, day, 2, renamed, config)
    reports = {"a": {"start": name, "encoding": encoding}, "b": {"start": fed.SEED_START, "encoding": encoding}}
    with pytest.raises(ValueError, match="different weights"):
        fed.aggregator_start(store, reports, weights, config)


def test_a_site_without_rows_today_sends_back_its_start_with_no_weight(trained):
    config, frame, teacher = trained.config, trained.frame, trained.teacher
    start = fed.seeded_weights(teacher.preprocessing["input_width"], config)
    update = fed.local_update("idle", 1, frame.clear(), teacher, start, config)
    assert update.samples == 0 and update.report["received"]["macro_f1"] is None
    assert all(np.array_equal(update.weights[k], start[k]) for k in start)


def test_weights_travel_without_pickle(tmp_path):
    path = tmp_path / "w.npz"
    size = fed.save_weights(path, _weights(1.5))
    assert size == path.stat().st_size > 0
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["b", "w"]


def _finish_round(store: fed.FederatedStore, day: str, round_: int, converged: bool) -> None:
    fed.save_weights(store.global_dir(day, round_) / fed.GLOBAL_FILE, _weights(0.0))
    fed.write_json(store.global_dir(day, round_) / fed.ROUND_FILE,
                   {"converged": converged, "global_validation_loss": 1.0, "encoding": "e1"})


def test_simulated_sites_are_not_alike(config):
    import datetime as dt

    day = simulate_day(config.simulator, dt.date(2026, 10, 25), dirty=False)
    models = day.group_by(SITE).agg(pl.col("device_model").mode().first()).sort(SITE)
    assert {site: model for site, model in models.iter_rows() if site != "west"} == {
        "east": "ZXHN-F660", "north": "HG8145", "south": "F670L"}
    fibre = day.group_by(SITE).agg((pl.col("fault") == "fiber").mean()).sort(SITE)
    share = dict(fibre.iter_rows())
    assert share["north"] > 1.5 * share["south"]  # long rural lines: more fibre faults


def test_a_student_starts_from_federated_weights_only_when_they_fit(trained):
    from pipeline.student import fit_student

    config, frame, teacher = trained.config, trained.frame, trained.teacher
    fitting = fed.seeded_weights(teacher.preprocessing["input_width"], config)
    assert fit_student(frame, teacher, config, start=("round-3", fitting)).start == "round-3"
    other = fed.seeded_weights(teacher.preprocessing["input_width"] + 1, config)
    assert fit_student(frame, teacher, config, start=("round-3", other)).start.startswith("scratch: round-3 does not fit")


def test_the_transfer_set_takes_the_configured_kinds_of_rows(trained):
    from pipeline.student import transfer_counts, transfer_set

    frame, spec = trained.frame, trained.config.training.student
    labelled = spec.model_copy(update={"transfer": ("labelled",)})
    assert transfer_set(frame, labelled).height == frame.filter(pl.col("split") == "train").height
    counts = transfer_counts(frame, spec)
    assert transfer_set(frame, spec).height == sum(counts.values()) and counts["unlabelled"] > counts["labelled"]


def test_a_site_profile_that_cannot_be_simulated_is_a_config_error_naming_the_field(tmp_path):
    import yaml

    from pipeline.dataset import DatasetConfigError, load_dataset_config
    from tests.conftest import DEFAULT_YAML

    for profiles, message in (({"north": {"device_models": {"HG8145": 0.0}}}, "device_models: weights must be non-negative"),
                              ({"nowhere": {"old_firmware_share": 0.5}}, "site_profiles: ['nowhere'] are not among the sites")):
        raw = yaml.safe_load(DEFAULT_YAML.read_text())
        raw["simulator"]["site_profiles"] = profiles
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(DatasetConfigError, match=re.escape(message)):
            load_dataset_config(path)


def test_site_drift_of_a_site_without_rows_says_so_instead_of_crashing(config):
    # reproduced: a site partition with no rows (a one-site dataset under the simulator's four sites)
    # crashed with "Series of type Date does not have eq operator" (the newest day of no rows is None)
    drift = fed.site_drift(pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC")}), config)
    assert drift == {"drifted_features": [], "compared": "no rows at this site"}


def _landing_config(config, tmp_path, **partitions):
    """The default dataset read from a landing folder whose site column is ``Exchange``."""
    return config.model_copy(update={
        "source": config.source.model_copy(update={"kind": "landing", "landing_dir": str(tmp_path)}),
        "columns": config.columns.model_copy(update={"site": "Exchange"}),
        "partitions": config.partitions.model_copy(update=partitions)})


def test_a_landing_datasets_sites_are_its_site_columns_values(tmp_path, config):
    (tmp_path / "a_2026-10-01.csv").write_text("Exchange,x\n ex-b ,1\nex-a,2\n,3\nex-b,4\n")
    pl.DataFrame({"Exchange": [7, None], "x": [1, 2]}).write_parquet(tmp_path / "b_2026-10-02.parquet")
    (tmp_path / "c_2026-10-03.csv").write_text("Other\n1\n")  # no site column: warned about, skipped
    landing = _landing_config(config, tmp_path)
    with pytest.warns(UserWarning, match=r"c_2026-10-03.csv: its sites were not read"):
        assert fed.dataset_sites(landing) == ("7", "ex-a", "ex-b")  # stripped, as cleaning strips them
    declared = _landing_config(config, tmp_path, sites=("ex-a", "ex-b", "ex-c"))
    assert fed.dataset_sites(declared) == ("ex-a", "ex-b", "ex-c")  # declared: the files are not read
    assert fed.dataset_sites(config) == config.simulator.sites == ("north", "south", "east", "west")


def test_a_dataset_without_a_site_column_has_one_site_and_nothing_to_federate(tmp_path, config):
    (tmp_path / "a_2026-10-01.csv").write_text("x\n1\n")
    single = _landing_config(config, tmp_path).model_copy(
        update={"columns": config.columns.model_copy(update={"site": None})})
    sites = fed.dataset_sites(single)
    assert len(sites) == 1
    assert fed.too_few_sites(sites) == (f"federated training needs at least 2 sites; this dataset has 1: {sites[0]}, "
                                        "so there is nothing to federate")
    assert fed.too_few_sites(()).endswith("has 0, so there is nothing to federate")
    assert fed.too_few_sites(("ex-a", "ex-b")) is None


def test_with_one_site_the_federated_group_says_so_and_the_sensor_launches_no_round(tmp_path, monkeypatch):
    import dagster as dg

    from assets import federated as fed_assets
    from assets.resources import DatasetResource, StorageResource
    from sensors import federated as fed_sensor

    reason = fed.too_few_sites(("only",))
    monkeypatch.setattr(fed_assets, "NOTHING_TO_FEDERATE", reason)  # as loading a one-site dataset sets it
    monkeypatch.setattr(fed_sensor, "NOTHING_TO_FEDERATE", reason)
    storage, frame = StorageResource(data_dir=str(tmp_path)), pl.DataFrame({SITE: ["only"] * 3, "label": ["none"] * 3})
    result = fed_assets.site_stores(dg.build_asset_context(partition_key="2026-10-20"), training_set=frame, storage=storage)
    assert result.metadata == {"federated": reason, "rows": 3}
    assert not (tmp_path / "sites").exists()  # no site store written
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"dataset": DatasetResource(), "storage": storage})
        tick = fed_sensor.federated_sensor(context)
    assert not tick.run_requests and tick.skip_reason.skip_message == reason
