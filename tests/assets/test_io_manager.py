"""The Parquet IO manager streams a LazyFrame output into its file and hands a LazyFrame input a
scan of a snapshot: a big day is never whole in memory, and a rerun cannot change it mid-read."""

from pathlib import Path

import dagster as dg
import polars as pl
from upath import UPath

from assets.io_manager import PolarsParquetIOManager

LAZY = dg.DagsterType(type_check_fn=lambda _, value: isinstance(value, pl.LazyFrame), name="LazyFrame", typing_type=pl.LazyFrame)
"""What Dagster makes of an input annotated ``pl.LazyFrame`` (``clean_telemetry``'s raw day)."""


def test_a_lazy_output_is_streamed_and_a_lazy_input_reads_a_snapshot(tmp_path: Path):
    manager = PolarsParquetIOManager(base_path=UPath(tmp_path))
    frame = pl.DataFrame({"x": list(range(1000)), "y": [str(i) for i in range(1000)]})
    manager.handle_output(dg.build_output_context(asset_key="raw_telemetry", name="result"), frame.lazy().filter(pl.col("x") % 2 == 0))
    assert [p.name for p in tmp_path.iterdir()] == ["raw_telemetry.parquet"]  # no temporary left beside it
    lazy = manager.load_input(dg.build_input_context(asset_key="raw_telemetry", dagster_type=LAZY))
    eager = manager.load_input(dg.build_input_context(asset_key="raw_telemetry"))
    manager.handle_output(dg.build_output_context(asset_key="raw_telemetry", name="result"), frame.head(3))  # a rerun
    assert isinstance(lazy, pl.LazyFrame) and isinstance(eager, pl.DataFrame)
    assert lazy.collect().equals(eager) and eager.equals(frame.filter(pl.col("x") % 2 == 0))
