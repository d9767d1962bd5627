"""Cleaning: the books balance, every rejected row has a reason naming the field, nothing is lost."""

import datetime as dt

import polars as pl
import pytest

from pipeline import cleaning, sources
from pipeline.dataset import DEVICE_ID, LABEL, TIMESTAMP
from pipeline.sources import SOURCE_FILE, SOURCE_ROW
from tests.support.helpers import KEY, days_from

DAY = dt.date(2026, 11, 3)


@pytest.mark.parametrize("day", days_from(dt.date(2026, 10, 13), 5))
def test_raw_rows_equal_clean_plus_quarantined_plus_duplicates(config, day):
    raw = sources.read_raw_day(config, day)
    result = cleaning.clean_day(raw, config, day, KEY)
    assert raw.height == result.clean.height + result.quarantine.height + result.duplicates
    assert result.duplicates > 0 and result.quarantine.height > 0  # the simulator's dirt is really there
    assert result.clean.select(DEVICE_ID, TIMESTAMP).is_duplicated().sum() == 0


def _row(**overrides) -> dict:
    row = {
        "ts": "2026-11-03T10:00:00Z", "device_id": "CPE-A-1", "site": "north", "rx_power_dbm": "-18.5",
        "tx_power_dbm": "2.1", "temperature_c": "45", "uptime_h": "100", "crc_errors": "2",
        "packet_loss_pct": "0.1", "latency_ms": "15", "jitter_ms": "2", "throughput_mbps": "300",
        "reboots_24h": "0", "line_length_m": "1200", "device_model": "HG8145", "firmware_version": "3.1.4",
        "fault": None,
    }
    return {**row, **overrides}


def _raw(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows[0]})
    return frame.with_columns(pl.lit("landing/day.csv").alias(SOURCE_FILE), pl.int_range(1, len(rows) + 1).alias(SOURCE_ROW))


def test_each_hard_rule_quarantines_with_a_reason_naming_field_and_value(config):
    rows = [
        _row(),                                                   # 1 clean
        _row(),                                                   # 2 exact duplicate of 1
        _row(ts="2026-11-03 11:00:00", rx_power_dbm="-19"),       # 3 clean
        _row(ts="2026-11-03 11:00:00", rx_power_dbm="-25"),       # 4 same device+time, other values
        _row(ts="2026-11-03 12:00:00", rx_power_dbm="99"),        # 5 out of range
        _row(ts="2026-11-03 13:00:00", temperature_c="41,5"),     # 6 not a number
        _row(ts="2026-11-02 23:59:00"),                           # 7 another day
        _row(ts="yesterday-ish"),                                 # 8 unparseable timestamp
        _row(ts="2026-11-03 14:00:00", device_id=""),             # 9 missing id
        _row(ts="2026-11-03 15:00:00", fault="alien"),            # 10 unknown label
        _row(ts="2026-11-03 16:00:00", latency_ms="inf"),         # 11 not finite
    ]
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    reasons = dict(zip(result.quarantine[SOURCE_ROW].to_list(), result.quarantine[cleaning.REASON].to_list()))
    assert result.clean.height == 2 and result.duplicates == 1 and len(reasons) == 8
    assert "conflicting duplicate" in reasons[4]
    assert reasons[5] == "rx_power_dbm: 99 outside valid range [-45.0, 5.0]"
    assert reasons[6] == "temperature_c: not a number '41,5'"
    assert reasons[7] == "timestamp: 2026-11-02 23:59:00 is outside partition 2026-11-03: it is 2026-11-02 23:59:00 in UTC"
    assert reasons[8].startswith("timestamp: cannot parse 'yesterday-ish' (expected ISO 8601")
    assert reasons[9] == "device_id: missing"
    assert reasons[10] == "label: 'alien' is not one of the classes"
    assert reasons[11] == "latency_ms: not finite (inf)"
    assert set(result.quarantine[SOURCE_FILE]) == {"landing/day.csv"}


def test_quarantine_keeps_the_row_as_it_came_but_never_the_raw_device_id(config):
    result = cleaning.clean_day(_raw([_row(rx_power_dbm="99", device_id=" CPE-A-1 "), _row(ts="2026-11-03 11:00:00")]), config, DAY, KEY)
    row = result.quarantine.row(0, named=True)
    assert row["rx_power_dbm"] == "99" and row["firmware_version"] == "3.1.4"
    assert "CPE-A-1" not in row["device_id"] and len(row["device_id"]) == 16
    assert result.clean.height == 1 and "CPE-A-1" not in str(result.clean.to_dicts())
    assert result.clean["device_id"][0] == row["device_id"]  # one device, one hash, wherever it lands


def test_a_labelled_copy_of_a_reading_wins_over_its_unlabelled_duplicate(config):
    rows = [_row(), _row(fault="fiber"), _row(ts="2026-11-03 10:30:00", fault="power"), _row(ts="2026-11-03 10:30:00", fault="fiber")]
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    assert result.duplicates == 1
    assert sorted(result.clean[LABEL].to_list()) == ["fiber", "power"]
    assert result.quarantine[cleaning.REASON].to_list() == ["conflicting label: the same reading came with another label"]


def test_timestamps_in_several_iso_forms_are_read_as_utc(config):
    rows = [_row(ts="2026-11-03T10:00:00+02:00"), _row(ts="2026-11-03 10:00", device_id="B"), _row(ts="2026-11-03T10:00:00.250Z", device_id="C")]
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    hours = sorted(result.clean[TIMESTAMP].dt.hour().to_list())
    assert hours == [8, 10, 10] and result.quarantine.height == 0


def _source(config, **changes):
    return config.model_copy(update={"source": config.source.model_copy(update=changes)})


def test_epoch_seconds_and_milliseconds_and_a_declared_format_are_read(config):
    rows = [_row(ts="1793700000"), _row(ts="1793703600000", device_id="B"), _row(ts="03/11/2026 12:00", device_id="C")]
    result = cleaning.clean_day(_raw(rows), _source(config, timestamp_format="%d/%m/%Y %H:%M"), DAY, KEY)
    assert sorted(result.clean[TIMESTAMP].dt.hour().to_list()) == [10, 11, 12] and result.quarantine.height == 0
    [reason] = cleaning.clean_day(_raw(rows[2:]), config, DAY, KEY).quarantine[cleaning.REASON]
    assert reason == ("timestamp: cannot parse '03/11/2026 12:00' (expected ISO 8601 (2026-06-01 13:45:00, offset "
                      "optional) or epoch seconds / milliseconds; set source.timestamp_format for another form)")


def test_partition_days_follow_the_contracts_timezone(config):
    """A local-day export: 00:30+01:00 is the 3rd in Paris but the 2nd in UTC; naive times are local."""
    rows = [_row(ts="2026-11-03T00:30:00+01:00"), _row(ts="2026-11-03 00:45:00", device_id="B")]
    in_utc = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    assert in_utc.quarantine[cleaning.REASON].to_list() == [
        "timestamp: 2026-11-03T00:30:00+01:00 is outside partition 2026-11-03: it is 2026-11-02 23:30:00 in UTC"]
    in_paris = cleaning.clean_day(_raw(rows), _source(config, timezone="Europe/Paris"), DAY, KEY)
    assert in_paris.quarantine.height == 0
    assert in_paris.clean[TIMESTAMP].dt.hour().to_list() == [23, 23]  # stored in UTC


def test_a_day_that_is_all_quarantined_has_no_clean_share_and_names_its_top_reason(config):
    rows = [_row(ts=f"2026-11-04 {h:02d}:00:00") for h in range(3)] + [_row(ts="2026-11-03 05:00:00", rx_power_dbm="99")]
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    assert result.clean_fraction == 0.0
    assert result.top_reasons() == {"timestamp": 3, "rx_power_dbm": 1}
    assert result.example("timestamp").startswith("timestamp: 2026-11-04 00:00:00 is outside partition 2026-11-03")


def test_a_few_missing_readings_are_imputed_and_counted(config):
    rows = [_row(ts=f"2026-11-03 {h:02d}:00:00", temperature_c=str(40 + h)) for h in range(5)]
    rows[2]["temperature_c"] = None
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    assert result.imputed == {"temperature_c": 1}
    assert result.clean.sort(TIMESTAMP)["temperature_c"][2] == pytest.approx(42.0)  # median of 40, 41, 43, 44


def test_too_many_missing_readings_quarantine_the_row(config):
    numeric = [f.name for f in config.numeric_features]
    row = _row(**{name: None for name in numeric[:7]})
    result = cleaning.clean_day(_raw([row]), config, DAY, KEY)
    assert result.quarantine[cleaning.REASON][0] == f"7 of {len(numeric)} readings missing"


def test_a_missing_required_column_names_the_column_and_the_file(config):
    raw = _raw([_row()]).drop("jitter_ms")
    with pytest.raises(cleaning.SchemaError, match=r"landing/day.csv: missing required column\(s\) \['jitter_ms'\]"):
        cleaning.clean_day(raw, config, DAY, KEY)


def test_padded_numbers_parse_and_long_cells_are_cut_short_in_reasons(config):
    long_number, long_id = "9" * 5000, "CPE-" + "x" * 300
    rows = [_row(rx_power_dbm=" -18.5 "), _row(ts="2026-11-03 11:00:00", rx_power_dbm=long_number),
            _row(ts="2026-11-03 12:00:00", device_id=long_id)]
    result = cleaning.clean_day(_raw(rows), config, DAY, KEY)
    assert result.clean["rx_power_dbm"].to_list() == [-18.5]
    reasons = dict(zip(result.quarantine[SOURCE_ROW].to_list(), result.quarantine[cleaning.REASON].to_list()))
    assert reasons[2] == f"rx_power_dbm: not finite ({'9' * 40}... (5000 characters))"
    assert reasons[3] == f"device_id: 304 characters, over the limit of {cleaning.MAX_TEXT_CHARS}"


@pytest.mark.parametrize("batch_rows", [1, 7, 100])
def test_cleaning_in_batches_gives_what_cleaning_the_day_at_once_gives(config, batch_rows):
    """Duplicates and conflicts that straddle batches are still found: only the hard rules are batched."""
    day = dt.date(2026, 10, 14)
    raw = sources.read_raw_day(config, day).head(300)
    raw = pl.concat([raw, raw.head(5), raw.slice(10, 3).with_columns(pl.col("rx_power_dbm") - 1)])  # copies, conflicts
    whole = cleaning.clean_day(raw, config, day, KEY)
    batched = cleaning.clean_day(raw, _source(config, batch_rows=batch_rows), day, KEY)
    assert batched.clean.equals(whole.clean) and batched.quarantine.equals(whole.quarantine)
    assert batched.duplicates == whole.duplicates >= 5 and batched.imputed == whole.imputed
    assert whole.quarantine[cleaning.REASON].str.starts_with("conflicting").sum() >= 3


def test_cleaning_a_scanned_day_gives_what_cleaning_it_in_memory_gives(config, tmp_path):
    """``clean_telemetry`` reads raw as a scan of its Parquet file, batch by batch; conflicts are read
    back from the batches that hold them."""
    day = dt.date(2026, 10, 14)
    raw = sources.read_raw_day(config, day).head(300)
    raw = pl.concat([raw, raw.head(5), raw.slice(10, 3).with_columns(pl.col("rx_power_dbm") - 1)])
    raw.write_parquet(tmp_path / "raw.parquet")
    whole = cleaning.clean_day(raw, config, day, KEY)
    scanned = cleaning.clean_day(pl.scan_parquet(tmp_path / "raw.parquet"), _source(config, batch_rows=7), day, KEY)
    assert scanned.clean.equals(whole.clean) and scanned.quarantine.equals(whole.quarantine)
    assert scanned.duplicates == whole.duplicates >= 5 and scanned.raw_rows == raw.height
