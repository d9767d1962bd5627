"""A Parquet IO manager for polars frames, one file per daily partition.

Written here rather than taken from dagster-polars, whose 0.27 release fails on polars 2.x. An input
that spans several partitions (a time window) arrives as one concatenated frame, whichever number
of upstream days exists, so assets never handle Dagster's one-object-or-dict shapes.
"""

from pathlib import Path

import polars as pl
from dagster import InputContext, OutputContext, UPathIOManager
from upath import UPath

from pipeline import atomic


class PolarsParquetIOManager(UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj).__name__}")
        if path.protocol in ("", "file"):
            with atomic.atomic_path(Path(path.path)) as tmp:  # local: never a half-written file
                obj.write_parquet(tmp)
        else:  # object stores write whole objects
            with path.open("wb") as fh:
                obj.write_parquet(fh)

    def load_from_path(self, context: InputContext, path: UPath) -> pl.DataFrame:
        with path.open("rb") as fh:  # through Python's open: audit hooks (the federated privacy test) see every read
            return pl.read_parquet(fh)

    def load_partitions(self, context: InputContext) -> pl.DataFrame:
        loaded = super().load_partitions(context)
        if isinstance(loaded, dict):
            frames = [loaded[k] for k in sorted(loaded)]
            return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        return loaded if loaded is not None else pl.DataFrame()
