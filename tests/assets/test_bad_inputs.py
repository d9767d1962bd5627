"""The bad-input corpus through sources and cleaning: each defective file either fails with an error
that names it (and the line or column where it can), or its defective rows go to quarantine with a
reason naming the field; raw files stay byte for byte as they came; the books balance; and a bad
file blocks only its own day."""

import hashlib
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets import metadata as md
from pipeline import cleaning, sources
from pipeline.dataset import DatasetConfig, DatasetConfigError, load_dataset_config
from pipeline.sources import SOURCE_FILE, SOURCE_ROW
from tests.conftest import DEFAULT_YAML
from tests.support.bad_input_corpus import DAY, Case, Contract, base_rows, cases, contracts
from tests.support.helpers import KEY

CASES = cases()
CONTRACTS = contracts()


@pytest.fixture(scope="module")
def base(config: DatasetConfig) -> pl.DataFrame:
    return base_rows(config)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "dangling"
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def _ingest(landing: Path, config: DatasetConfig) -> tuple[pl.DataFrame, cleaning.CleaningResult]:
    raw = sources.read_landing_day(landing, DAY, config.required_source_columns, config.source.csv_separator)
    return raw, cleaning.clean_day(raw, config, DAY, KEY)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}{c.suffix}" for c in CASES])
def test_a_bad_file_fails_naming_itself_or_quarantines_its_rows(case: Case, base, config, tmp_path):
    landing = tmp_path / "landing"
    path = case.write_into(landing, base)
    if case.skipped:  # beside a file that is read: the entry is reported, never passed over
        next(c for c in CASES if c.name == "control").write_into(landing, base)
    before = _hashes(landing)
    if case.skipped:
        raw, result = _ingest(landing, config)
        assert raw.height == result.clean.height == base.height
        [skipped] = sources.landing_inventory(landing).skipped
        assert skipped.path == path and case.skipped in skipped.reason, skipped
        named_day = sources.skipped_entries(_landing_config(config, landing), DAY)
        assert named_day == ([skipped] if skipped.day == DAY else [])  # the day's check fails only for its own entries
    elif case.error:
        with pytest.raises((sources.SourceError, cleaning.SchemaError)) as caught:
            _ingest(landing, config)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and re.search(case.error, message), message
        assert len(message) < 1000  # an enormous cell or line never ends up in the message
    else:
        raw, result = _ingest(landing, config)
        assert raw.height == base.height + case.added_rows
        assert result.raw_rows == raw.height  # clean + quarantined + duplicates
        assert result.duplicates == case.duplicates
        rows = list(range(1, raw.height + 1)) if case.every_row else sorted(r if r > 0 else raw.height + 1 + r for r in case.rows)
        assert sorted(result.quarantine[SOURCE_ROW].to_list()) == rows
        assert set(result.quarantine[SOURCE_FILE]) <= {str(path)}
        assert all(case.reason in r and len(r) < 1000 for r in result.quarantine[cleaning.REASON]), result.quarantine[cleaning.REASON]
        assert set(case.extra_columns) <= set(raw.columns)  # kept in raw, ignored by cleaning
    assert _hashes(landing) == before  # raw input is kept as it came


def _landing_config(config: DatasetConfig, landing: Path) -> DatasetConfig:
    return config.model_copy(update={"source": config.source.model_copy(update={"kind": "landing", "landing_dir": str(landing)})})


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.name for c in CONTRACTS])
def test_a_contract_that_would_fail_later_fails_to_load_naming_the_field(contract: Contract, tmp_path):
    path = tmp_path / "dataset.yaml"
    path.write_text(contract.change(DEFAULT_YAML.read_text()))
    with pytest.raises(DatasetConfigError) as caught:
        load_dataset_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and re.search(contract.error, message), message


def test_utf16_with_a_byte_order_mark_is_decoded_without_loss(base, config, tmp_path):
    [case] = [c for c in CASES if c.name == "utf16"]
    case.write_into(tmp_path, base)
    raw, result = _ingest(tmp_path, config)
    assert raw["device_model"][4] == "FRITZ!Box-Größe" and result.clean.height == base.height


def test_a_bad_file_blocks_only_its_own_day(base, config, tmp_path):
    """Pipeline level: the broken day fails naming its file, the next day reads as if alone."""
    bad = next(c for c in CASES if c.name == "truncated" and c.suffix == ".parquet").write_into(tmp_path, base)
    next_day = DAY.replace(day=DAY.day + 1)
    base_rows(config, next_day).write_parquet(tmp_path / f"good_{next_day.isoformat()}.parquet")
    with pytest.raises(sources.SourceError, match=re.escape(str(bad))):
        _ingest(tmp_path, config)
    raw = sources.read_landing_day(tmp_path, next_day, config.required_source_columns)
    result = cleaning.clean_day(raw, config, next_day, KEY)
    assert result.clean.height == raw.height > 0 and result.quarantine.height == 0


def test_a_partition_with_a_broken_file_fails_while_another_materializes(base, config, tmp_path):
    """Asset level: ingest of the broken day fails naming the file; the good day materializes."""
    import definitions
    from assets.data import clean_telemetry, raw_telemetry

    landing = tmp_path / "landing"
    bad = next(c for c in CASES if c.name == "semicolon").write_into(landing, base)
    next_day = DAY.replace(day=DAY.day + 1)
    base_rows(config, next_day).write_parquet(landing / f"good_{next_day.isoformat()}.parquet")
    dataset = yaml.safe_load(DEFAULT_YAML.read_text())
    dataset["source"] = {"kind": "landing", "landing_dir": str(landing)}
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    resources = definitions.build_resources(str(tmp_path / "data"), str(tmp_path / "dataset.yaml"))
    with dg.instance_for_test() as instance:
        def run(day):
            return dg.materialize([raw_telemetry, clean_telemetry], partition_key=day.isoformat(), resources=resources,
                                  instance=instance, raise_on_error=False)
        failed, succeeded = run(DAY), run(next_day)
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{bad}: missing required column(s)" in str(failure.event_specific_data.error)
    assert succeeded.success
    assert succeeded.output_for_node("clean_telemetry", "clean_telemetry").height == base_rows(config, next_day).height


def test_a_day_of_skipped_entries_or_all_quarantined_rows_never_looks_green(base, config, tmp_path):
    """Asset level: a skipped entry of the day fails ``landing_files`` and is listed in the metadata; a
    day whose rows are all quarantined fails the blocking ``clean_share`` check naming the top reason."""
    import definitions
    from assets.data import clean_telemetry, raw_telemetry

    landing = tmp_path / "landing"
    next(c for c in CASES if c.name == "next_day").write_into(landing, base)
    skipped = next(c for c in CASES if c.name == "other_format").write_into(landing, base)
    dataset = yaml.safe_load(DEFAULT_YAML.read_text())
    dataset["source"] = {"kind": "landing", "landing_dir": str(landing)}
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    resources = definitions.build_resources(str(tmp_path / "data"), str(tmp_path / "dataset.yaml"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_telemetry, clean_telemetry], partition_key=DAY.isoformat(), resources=resources,
                                instance=instance, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["landing_files"].passed
    assert md.records(checks["landing_files"].metadata["skipped"].value) == [
        {"file": str(skipped), "reason": "not a data file (read are .csv, .csv.gz, .parquet)"}]
    share = checks["clean_share"]
    assert not share.passed and share.metadata["clean_fraction"].value == 0.0
    assert share.description.startswith("0.0% of the rows are clean, below quality.min_clean_fraction 50%; "
                                        f"top reason: timestamp ({base.height} rows), e.g. 'timestamp: ")
    assert checks["rows_reconcile"].passed and not result.success  # blocking: the run fails
