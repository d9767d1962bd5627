"""Landing files: the day comes from the name, raw stays as it came, unreadable files are named."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline import sources


def test_the_day_comes_from_the_file_name_or_folder(tmp_path: Path):
    assert sources.landing_file(tmp_path / "export_2026-11-03.csv").day == dt.date(2026, 11, 3)
    assert sources.landing_file(tmp_path / "2026-11-04" / "part-0.parquet").day == dt.date(2026, 11, 4)
    assert sources.landing_file(tmp_path / "notes.txt") is None
    assert sources.landing_file(tmp_path / "undated.csv") is None
    assert sources.landing_file(tmp_path / ".export_2026-11-03.csv.tmp") is None
    assert sources.landing_file(tmp_path / "export_2026-13-45.csv") is None


def test_a_day_stacks_its_files_as_text_with_provenance(tmp_path: Path):
    (tmp_path / "a_2026-11-03.csv").write_text("x,y\n1,abc\n2,3\n")
    (tmp_path / "b_2026-11-03.csv").write_text("x,z\n007,1\n")
    (tmp_path / "c_2026-11-04.csv").write_text("x\n9\n")
    frame = sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=["x"])
    assert frame.height == 3
    assert frame["x"].to_list() == ["1", "2", "007"]  # as it came: no type inference
    assert frame[sources.SOURCE_ROW].to_list() == [1, 2, 1]
    assert [Path(p).name for p in frame[sources.SOURCE_FILE]] == ["a_2026-11-03.csv"] * 2 + ["b_2026-11-03.csv"]


def test_parquet_and_a_custom_separator(tmp_path: Path):
    pl.DataFrame({"x": [1.5]}).write_parquet(tmp_path / "p_2026-11-03.parquet")
    (tmp_path / "s_2026-11-03.csv").write_text("x;y\n2;3\n")
    frame = sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=["x"], csv_separator=";")
    assert sorted(frame["x"].cast(pl.Float64).to_list()) == [1.5, 2.0]


def test_an_unreadable_file_is_named(tmp_path: Path):
    bad = tmp_path / "broken_2026-11-03.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(sources.SourceError, match="broken_2026-11-03.parquet: cannot read as parquet"):
        sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=[])


def test_each_file_must_have_the_required_columns_itself(tmp_path: Path):
    (tmp_path / "a_2026-11-03.csv").write_text("x,y\n1,2\n")
    (tmp_path / "b_2026-11-03.csv").write_text("x\n3\n")  # the other file has y: still an error
    with pytest.raises(sources.SourceError, match=r"b_2026-11-03.csv: missing required column\(s\) \['y'\]"):
        sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=["x", "y"])


def test_a_day_without_files_says_so(tmp_path: Path):
    with pytest.raises(sources.SourceError, match="no landing file for 2026-11-05"):
        sources.read_landing_day(tmp_path, dt.date(2026, 11, 5), required=[])


def test_a_header_only_file_beside_others_adds_no_rows(tmp_path: Path):
    (tmp_path / "a_2026-11-03.csv").write_text("x,y\n1,2\n")
    (tmp_path / "b_2026-11-03.csv").write_text("x,y\n")  # a site that sent nothing that day
    assert sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=["x", "y"]).height == 1


def test_a_separator_mismatch_is_named_whichever_way_round(tmp_path: Path):
    (tmp_path / "a_2026-11-03.csv").write_text("x,y\n1,2\n")
    with pytest.raises(sources.SourceError, match=r"a_2026-11-03.csv: .*read with separator ';', but the header looks ','-separated"):
        sources.read_landing_day(tmp_path, dt.date(2026, 11, 3), required=["x", "y"], csv_separator=";")


def test_a_bad_line_is_named_with_the_file(tmp_path: Path):
    bad = tmp_path / "a_2026-11-03.csv"
    bad.write_bytes("x,y\n1,ok\n2,M\u00fcnchen\n".encode("latin-1"))
    with pytest.raises(sources.SourceError, match=r"a_2026-11-03.csv: cannot read as csv: line 3, column 'y': not valid UTF-8"):
        sources.read_landing_file(bad)
    bad.write_text("x,y\n1,2\n3,4,5\n")
    with pytest.raises(sources.SourceError, match=r"a_2026-11-03.csv: cannot read as csv: line 3 has 3 fields, the header has 2"):
        sources.read_landing_file(bad)


def test_a_staged_day_holds_the_rows_read_in_memory(tmp_path: Path):
    """``raw_telemetry`` streams the day's files to Parquet parts: the same rows, columns and types
    as stacking them in memory, and the same errors naming the file and line."""
    landing, staging = tmp_path / "landing", tmp_path / "staging"
    landing.mkdir(), staging.mkdir()
    (landing / "a_2026-11-03.csv").write_text("x,y\n1,abc\n2,3\n")
    (landing / "b_2026-11-03.csv").write_text("x,z\n007,1\n")
    pl.DataFrame({"x": [1.5], "w": [True]}).write_parquet(landing / "p_2026-11-03.parquet")
    day = dt.date(2026, 11, 3)
    staged = sources.stage_landing_day(landing, day, ["x"], ",", staging).collect()
    assert staged.equals(sources.read_landing_day(landing, day, required=["x"]))
    assert staged.columns == ["x", "y", sources.SOURCE_FILE, sources.SOURCE_ROW, "z", "w"]
    (landing / "c_2026-11-03.csv").write_text('x,y\n1,2\n3,"never closed\n4,5\n')
    with pytest.raises(sources.SourceError, match=r"c_2026-11-03.csv: cannot read as csv: line 3"):
        sources.stage_landing_day(landing, day, ["x"], ",", staging)
