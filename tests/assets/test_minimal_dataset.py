"""A dataset as a new user writes it: a timestamp, a label and features; no site column, no id
column, integer (or boolean) classes. It loads, reads, cleans, featurises and splits honestly."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from assets import metadata as md
from pipeline import cleaning, features, labels, sources, training_set, validation
from pipeline.dataset import DEVICE_ID, LABEL, SINGLE_SITE, SITE, DatasetConfigError, load_dataset_config
from tests.conftest import DEFAULT_PARTITIONS
from tests.support.helpers import KEY, days_from
from tests.support.minimal_stream import START, bad_yaml, write_minimal


def test_integer_and_boolean_classes_load_as_written(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=0))
    assert config.classes == ("0", "1")
    assert config.columns.id is None and config.columns.site is None
    assert config.sites == (SINGLE_SITE,)
    assert config.required_source_columns == ["ts", "x1", "x2", "colour"]
    booleans = load_dataset_config(write_minimal(tmp_path, days=0, classes=[True, False]))
    assert booleans.classes == ("true", "false")


def test_a_float_class_and_several_sites_without_a_site_column_are_refused(tmp_path: Path):
    with pytest.raises(DatasetConfigError, match=r"dataset.yaml: invalid dataset config: classes: .*0.5: a class label"):
        load_dataset_config(write_minimal(tmp_path, days=0, classes=[0.5, 1]))
    partitions = {"start_date": START.isoformat(), "sites": ["a", "b"]}
    with pytest.raises(DatasetConfigError, match="partitions.sites: .* columns.site is not set"):
        load_dataset_config(write_minimal(tmp_path, days=0, partitions=partitions))
    with pytest.raises(DatasetConfigError, match="training.split.method: 'device' needs columns.id"):
        load_dataset_config(write_minimal(tmp_path, days=0, training={"split": {"method": "device"}}))


def test_a_declared_site_names_the_one_site(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=1, partitions={"start_date": START.isoformat(), "sites": ["lab"]}))
    clean = cleaning.clean_day(sources.read_raw_day(config, START), config, START, KEY).clean
    assert config.sites == ("lab",) and clean[SITE].unique().to_list() == ["lab"]


def test_rows_without_site_or_id_get_one_site_and_their_own_ids(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=1))
    raw = sources.read_raw_day(config, START)
    result = cleaning.clean_day(raw, config, START, KEY)
    clean = result.clean
    assert clean.height == raw.height == 80 and result.quarantine.height == 0
    assert clean[SITE].unique().to_list() == [SINGLE_SITE]
    assert clean[DEVICE_ID].n_unique() == clean.height  # each row is its own entity, hashed like a device id
    again = cleaning.clean_day(sources.read_raw_day(config, START), config, START, KEY).clean
    assert again["row_id"].to_list() == clean["row_id"].to_list()  # deterministic: from file and row
    assert clean[LABEL].to_list() == [str(v) for v in pl.read_csv(tmp_path / "landing" / f"{START}.csv")["y"]]


def test_row_ids_survive_moving_the_landing_folder(tmp_path: Path):
    """Ids come from the file's path inside the landing folder, not from where the folder lives."""
    def row_ids(directory: Path) -> list[str]:
        config = load_dataset_config(directory / "dataset.yaml")
        return cleaning.clean_day(sources.read_raw_day(config, START), config, START, KEY).clean["row_id"].to_list()

    write_minimal(tmp_path / "here", days=1)
    before = row_ids(tmp_path / "here")
    (tmp_path / "here").rename(tmp_path / "there")
    assert row_ids(tmp_path / "there") == before and len(set(before)) == 80


def test_the_same_values_twice_are_still_a_duplicate_without_ids(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=1))
    landed = tmp_path / "landing" / f"{START}.csv"
    (tmp_path / "landing" / f"{START}-copy.csv").write_text(landed.read_text())
    result = cleaning.clean_day(sources.read_raw_day(config, START), config, START, KEY)
    assert (result.clean.height, result.duplicates, result.raw_rows) == (80, 80, 160)


@pytest.mark.parametrize("classes,cells,expected", [
    ([0, 1], ["1", "0", " 1 ", "1.0", "2", "one"], ["1", "0", "1", "1", None, None]),
    ([True, False], ["true", "False", "TRUE", "yes", "1", ""], ["true", "false", "true", None, None, None]),
])
def test_label_cells_map_to_the_classes_as_written(tmp_path: Path, classes, cells, expected):
    config = load_dataset_config(write_minimal(tmp_path, days=0, classes=classes))
    raw = pl.DataFrame({"ts": [f"{START} 0{i}:00:00" for i in range(len(cells))], "x1": ["1"] * len(cells),
                        "x2": ["2"] * len(cells), "colour": ["red"] * len(cells), "y": cells,
                        sources.SOURCE_FILE: ["f.csv"] * len(cells), sources.SOURCE_ROW: list(range(1, len(cells) + 1))})
    result = cleaning.clean_day(raw, config, START, KEY)
    by_row = dict(zip(result.clean[sources.SOURCE_ROW], result.clean[LABEL]))
    assert [by_row.get(row) for row in range(1, len(cells) + 1)] == expected
    assert result.quarantine["reason"].str.contains("is not one of the classes").sum() == 2


def test_parquet_integer_and_boolean_labels_map_to_the_classes(tmp_path: Path):
    for classes, values in (([0, 1], [0, 1]), ([True, False], [True, False])):
        config = load_dataset_config(write_minimal(tmp_path, days=0, classes=classes))
        path = tmp_path / "landing" / f"{START}.parquet"
        pl.DataFrame({"ts": [dt.datetime(2026, 9, 1, h) for h in (1, 2)], "x1": [1.0, 2.0], "x2": [0.5, 0.1],
                      "colour": ["red", "blue"], "y": values}).write_parquet(path)
        clean = cleaning.clean_day(sources.read_raw_day(config, START), config, START, KEY).clean
        assert clean[LABEL].to_list() == list(config.classes)


def test_great_expectations_checks_pass_without_site_or_id(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=1))
    frame = validation.expectation_frame(sources.read_raw_day(config, START), config)
    outcomes = {o.name: o for o in validation.validate(frame, config)}
    assert all(o.passed for o in outcomes.values()), outcomes
    assert outcomes["schema"].evaluated == 4 and outcomes["label_values"].evaluated == 1


def _window(config, days: list[dt.date]) -> tuple[pl.DataFrame, pl.DataFrame]:
    clean = [cleaning.clean_day(sources.read_raw_day(config, d), config, d, KEY).clean for d in days]
    feats = pl.concat([features.build_features(c, pl.DataFrame(), config) for c in clean])
    gold = pl.concat([labels.gold_labels(c, config, d, KEY) for c, d in zip(clean, days)])
    return feats, gold


def test_without_ids_each_day_is_split_by_time_and_says_why(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=3))
    feats, gold = _window(config, days_from(START, 3))
    choice = training_set.split_choice(feats, config)
    assert choice.method == "daily_time" and "no id column" in choice.reason
    frame = training_set.split_gold(feats, gold, config)
    counts = training_set.split_counts(frame)
    assert (counts["train"], counts["validation"], counts["test"]) == (168, 36, 36)
    by_day = frame.with_columns(pl.col("timestamp").dt.date().alias("day"))
    for (day,), rows in by_day.partition_by("day", as_dict=True).items():
        # every day, the newest included, trains, validates and tests, in that order of time
        per_split = {s: rows.filter(pl.col("split") == s)["timestamp"] for s in ("train", "validation", "test")}
        assert [len(v) for v in per_split.values()] == [56, 12, 12], day
        assert per_split["train"].max() <= per_split["validation"].min() <= per_split["test"].min()
    assert training_set.on_training_device(frame, config).all()


def test_the_window_time_split_still_withholds_the_newest_rows_when_asked(tmp_path: Path):
    config = load_dataset_config(write_minimal(tmp_path, days=3, training={"split": {"method": "time"}}))
    feats, gold = _window(config, days_from(START, 3))
    frame = training_set.split_gold(feats, gold, config)
    newest_train = frame.filter(pl.col("split") == "train")["timestamp"].max()
    assert newest_train < frame.filter(pl.col("split") == "test")["timestamp"].min()


def test_a_constant_id_is_split_by_time_not_by_its_one_device(tmp_path: Path):
    path = write_minimal(tmp_path, days=3, columns={"timestamp": "ts", "label": "y", "id": "unit"})
    for file in (tmp_path / "landing").glob("*.csv"):
        pl.read_csv(file).with_columns(pl.lit("unit-1").alias("unit")).write_csv(file)
    config = load_dataset_config(path)
    feats, gold = _window(config, days_from(START, 3))
    choice = training_set.split_choice(feats, config)
    assert choice.method == "daily_time" and "only 1 device(s)" in choice.reason
    counts = training_set.split_counts(training_set.split_gold(feats, gold, config))
    assert min(counts["train"], counts["validation"], counts["test"]) >= 20


def test_the_data_layer_assets_run_on_the_minimal_dataset(tmp_path: Path):
    """raw -> clean -> features -> gold_labels -> training_set through ``dagster.materialize``; the
    YAML keeps the default partitions, which the graph is built with at import."""
    import dagster as dg

    import definitions

    path = write_minimal(tmp_path, days=3, partitions=DEFAULT_PARTITIONS)
    resources = definitions.build_resources(str(tmp_path / "data"), str(path))
    data = dg.AssetSelection.assets("raw_telemetry", "clean_telemetry", "quarantine", "features", "gold_labels", "weak_labels")
    keys = [d.isoformat() for d in days_from(START, 3)]
    with dg.instance_for_test() as instance:
        runs = [dg.materialize(definitions.ASSETS, selection=data, partition_key=k, resources=resources, instance=instance)
                for k in keys[:-1]]
        runs.append(dg.materialize(definitions.ASSETS, partition_key=keys[-1], resources=resources, instance=instance,
                                   selection=data | dg.AssetSelection.assets("pseudo_labels", "training_set")))
    assert all(r.success for r in runs)
    assert [c.check_name for r in runs for c in r.get_asset_check_evaluations() if not c.passed] == []
    meta = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in runs[-1].get_asset_materialization_events()}
    assert meta["raw_telemetry"]["rows"] == meta["clean_telemetry"]["rows"] == 80
    assert {r["class"]: r["rows"] for r in md.records(meta["gold_labels"]["per_class"])} == dict(
        pl.read_csv(tmp_path / "landing" / f"{keys[-1]}.csv")["y"].cast(pl.String).value_counts().sort("y").iter_rows())
    training = meta["training_set"]
    assert training["split_method"] == "daily_time" and "no id column" in training["split_reason"]
    assert (training["train_rows"] >= 168, training["validation_rows"], training["test_rows"]) == (True, 36, 36)
    frame = pl.read_parquet(next((tmp_path / "data" / "assets" / "training_set").rglob(f"{keys[-1]}*")))
    assert frame["site"].unique().to_list() == [SINGLE_SITE] and set(frame["label"].drop_nulls()) == {"0", "1"}


def test_a_config_error_is_one_plain_line_from_a_tool(tmp_path: Path, capsys):
    from deploy import devices

    assert devices.main(["--day", START.isoformat(), "--dataset", str(bad_yaml(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'dataset.yaml'}: invalid dataset config: ")
    assert "columns.label: Field required" in err and "columns.labels: Extra inputs are not permitted" in err
    assert "Traceback" not in err and err.count("\n") == 1
