"""The bad-input corpus: one landing file per defect, written from real simulated rows so that only
the defect differs from a file the pipeline accepts.

Each case says what must happen to its file: ``error``, a regex the SourceError / SchemaError must
match (the message starts with ``<path>: ``), or quarantine of ``rows`` (1-based data rows, as
``_source_row`` counts them; negative from the end; ``every_row``: all of them) with ``reason`` in
each row's reason, or ``skipped``: the entry is not read and the landing inventory reports it with
that reason. Exact duplicates are counted, not quarantined. No case is expected to lose a row: the
books balance. Every file is dated ``DAY`` unless its ``filename`` says otherwise; ``Case.write_into``
writes it into a landing folder.

``contracts()`` is the same for dataset YAMLs: each one must fail to load, naming the field.
"""

import datetime as dt
import gzip
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.dataset import DatasetConfig
from pipeline.simulator import TRUTH, simulate_day

DAY = dt.date(2026, 10, 13)
ENORMOUS_CELL_CHARS = 8_000_000
ENORMOUS_LINE_BYTES = 40_000_000
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"


def base_rows(config: DatasetConfig, day: dt.date = DAY) -> pl.DataFrame:
    """A small fleet's clean simulated day (typed, no label column: labels usually come later)."""
    small = config.simulator.model_copy(update={"devices_per_site": 2})
    return simulate_day(small, day, dirty=False).drop(TRUTH)


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every cell as the text a CSV export holds; defects are then set cell by cell."""
    return frame.with_columns(pl.col("ts").dt.strftime(_TS_FORMAT), pl.exclude("ts").cast(pl.String))


def set_cells(frame: pl.DataFrame, column: str, values: dict[int, object]) -> pl.DataFrame:
    """``frame`` with ``column`` replaced at the given 1-based data rows."""
    cells = frame[column].to_list()
    for row, value in values.items():
        cells[row - 1] = value
    dtype = pl.String if any(isinstance(v, str) for v in values.values()) else frame.schema[column]
    return frame.with_columns(pl.Series(column, cells, dtype=dtype, strict=False))


def _csv(frame: pl.DataFrame, separator: str = ",") -> str:
    """The CSV text of ``frame`` (typed or already text), as an export writes it."""
    text = frame if frame.schema["ts"] == pl.String else as_text(frame)
    return text.write_csv(separator=separator)


@dataclass(frozen=True)
class Case:
    """One defective landing file and what the pipeline must make of it (no error, no rows: clean)."""

    name: str
    suffix: str
    write: Callable[[Path, pl.DataFrame], None]
    error: str | None = None
    reason: str | None = None
    rows: tuple[int, ...] = ()
    duplicates: int = 0
    added_rows: int = 0
    extra_columns: tuple[str, ...] = ()
    every_row: bool = False
    skipped: str | None = None
    filename: str | None = None

    def path(self, landing: Path) -> Path:
        return landing / (self.filename or f"{self.name}_{DAY.isoformat()}{self.suffix}")

    def write_into(self, landing: Path, base: pl.DataFrame) -> Path:
        path = self.path(landing)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write(path, base)
        return path


def _cr_line_breaks(path: Path, base: pl.DataFrame) -> None:
    path.write_text(_csv(base).replace("\n", "\r"), newline="")


def _truncated_parquet(path: Path, base: pl.DataFrame) -> None:
    base.write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # a copy interrupted part-way


def _truncated_csv(path: Path, base: pl.DataFrame) -> None:
    """Cut inside the last row's fourth field, as a copy interrupted part-way leaves it."""
    text = _csv(base)
    start = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[:start] + ",".join(text[start:].split(",")[:4])[:-2])


def _latin1(path: Path, base: pl.DataFrame) -> None:
    path.write_bytes(_csv(set_cells(base, "device_model", {5: "FRITZ!Box-Größe"})).encode("latin-1"))


def _utf16(path: Path, base: pl.DataFrame) -> None:
    path.write_bytes(_csv(set_cells(base, "device_model", {5: "FRITZ!Box-Größe"})).encode("utf-16"))  # with a BOM


def _png(path: Path, _: pl.DataFrame) -> None:
    ihdr = b"\x00\x00\x00\x0dIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91\x68\x36"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + bytes(range(256)) * 8)


def _random_bytes(path: Path, _: pl.DataFrame) -> None:
    path.write_bytes(np.random.default_rng(3).bytes(50_000))


def _header_only(path: Path, base: pl.DataFrame) -> None:
    path.write_text(_csv(base).split("\n", 1)[0] + "\n")


def _enormous_cell(path: Path, base: pl.DataFrame) -> None:
    path.write_text(_csv(set_cells(as_text(base), "firmware_version", {7: "7" * ENORMOUS_CELL_CHARS})))


def _enormous_line(path: Path, base: pl.DataFrame) -> None:
    """Tens of MB with separators and no line break: an export whose line breaks were lost."""
    flat = _csv(base).replace("\n", ",").encode()
    with path.open("wb") as fh:
        for _ in range(ENORMOUS_LINE_BYTES // len(flat) + 1):
            fh.write(flat)


def _ragged(path: Path, base: pl.DataFrame) -> None:
    lines = _csv(base).split("\n")
    lines[3] += ",surplus"  # data row 3 = line 4
    path.write_text("\n".join(lines))


def _unclosed_quote(path: Path, base: pl.DataFrame) -> None:
    lines = _csv(base).split("\n")
    lines[5] = lines[5].replace(",", ',"', 1)  # data row 5 = line 6: a quote opens and never closes
    path.write_text("\n".join(lines))


def _parquet(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path, pl.DataFrame], None]:
    return lambda path, base: change(base).write_parquet(path)


def _csv_of(change: Callable[[pl.DataFrame], pl.DataFrame], separator: str = ",") -> Callable[[Path, pl.DataFrame], None]:
    return lambda path, base: path.write_text(_csv(change(base), separator))


def _shifted(base: pl.DataFrame, rows: dict[int, dt.timedelta]) -> pl.DataFrame:
    ts = base["ts"].to_list()
    return base.with_columns(pl.Series("ts", [t + rows.get(i + 1, dt.timedelta()) for i, t in enumerate(ts)]))


def _duplicated(base: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([base, base[10:15]])


def _duplicate_header(path: Path, base: pl.DataFrame) -> None:
    """``temperature_c`` twice, the Fahrenheit copy first: which one is meant cannot be told."""
    fahrenheit = base.with_columns((pl.col("temperature_c") * 9 / 5 + 32).alias("temperature_f"))
    order = [c if c != "temperature_c" else "temperature_f" for c in base.columns]
    order.insert(order.index("temperature_f") + 1, "temperature_c")
    header, body = _csv(fahrenheit.select(order)).split("\n", 1)
    path.write_text(header.replace("temperature_f", "temperature_c") + "\n" + body)


def _gzipped(path: Path, base: pl.DataFrame) -> None:
    path.write_bytes(gzip.compress(_csv(base).encode()))


def _dangling_symlink(path: Path, _: pl.DataFrame) -> None:
    path.symlink_to(path.with_name("moved_away.csv"))


def _timestamps(base: pl.DataFrame, expr: pl.Expr) -> pl.DataFrame:
    return base.with_columns(expr.alias("ts"))


def _local_hours(hours: int) -> tuple[int, ...]:
    """Rows whose hour is below ``hours``: the base has 8 devices of 24 hourly rows each."""
    return tuple(24 * device + hour + 1 for device in range(8) for hour in range(hours))


def cases() -> list[Case]:
    """The corpus. Control files first: the base as CSV and as Parquet must come out clean."""
    same = lambda b: b  # noqa: E731
    future = dt.timedelta(days=365 * 73)
    return [
        Case("control", ".csv", _csv_of(same)),
        Case("control", ".parquet", _parquet(same)),
        Case("truncated", ".parquet", _truncated_parquet, error=r"cannot read as parquet: truncated"),
        Case("truncated", ".csv", _truncated_csv, reason="readings missing", rows=(-1,)),
        Case("semicolon", ".csv", _csv_of(same, ";"),
             error=r"missing required column\(s\): read with separator ',', but the header looks ';'-separated"),
        Case("latin1", ".csv", _latin1, error=r"line 6, column 'device_model': not valid UTF-8 \(byte 0xf6\); save the file as UTF-8"),
        Case("utf16", ".csv", _utf16),  # a byte-order mark makes UTF-16 unambiguous: decoded, nothing lost
        Case("empty", ".csv", lambda p, _: p.write_bytes(b""), error=r"empty file \(0 bytes\)"),
        Case("empty", ".parquet", lambda p, _: p.write_bytes(b""), error=r"empty file \(0 bytes\)"),
        Case("header_only", ".csv", _header_only, error=r"no data rows \(header only\) for 2026-10-13"),
        Case("png", ".csv", _png, error=r"cannot read as csv: this is a PNG image, not CSV text"),
        Case("random_bytes", ".parquet", _random_bytes, error=r"cannot read as parquet: no PAR1 signature"),
        Case("csv_named", ".parquet", _csv_of(same), error=r"cannot read as parquet: it starts with text"),
        Case("missing_column", ".csv", _csv_of(lambda b: b.drop("jitter_ms")),
             error=r"missing required column\(s\) \['jitter_ms'\]; the header has 15 column\(s\)"),
        Case("missing_column", ".parquet", _parquet(lambda b: b.drop("site", "uptime_h")),
             error=r"missing required column\(s\) \['site', 'uptime_h'\]"),
        Case("extra_columns", ".csv", _csv_of(lambda b: b.with_columns(notes=pl.lit("ok"), vendor_code=pl.lit(7))),
             extra_columns=("notes", "vendor_code")),
        Case("wrong_types", ".csv",
             _csv_of(lambda b: set_cells(as_text(b), "temperature_c", {1: "hot", 2: "41,5", 3: "n/a"})),
             reason="temperature_c: not a number", rows=(1, 2, 3)),
        Case("wrong_types", ".parquet", _parquet(lambda b: set_cells(b, "latency_ms", {4: "fast", 9: "12 ms"})),
             reason="latency_ms: not a number", rows=(4, 9)),
        Case("nested_column", ".parquet", _parquet(lambda b: b.with_columns(pl.concat_list("crc_errors", "crc_errors"))),
             error=r"column 'crc_errors' holds List\(Int64\), not text, numbers or timestamps"),
        Case("nan_inf", ".csv", _csv_of(lambda b: set_cells(as_text(b), "rx_power_dbm", {1: "nan", 2: "inf", 3: "-inf", 4: "NaN"})),
             reason="rx_power_dbm: not finite", rows=(1, 2, 3, 4)),
        Case("nan_inf", ".parquet", _parquet(lambda b: set_cells(b, "latency_ms", {2: math.nan, 6: math.inf, 8: -math.inf})),
             reason="latency_ms: not finite", rows=(2, 6, 8)),
        Case("out_of_range", ".csv",
             _csv_of(lambda b: set_cells(set_cells(b, "rx_power_dbm", {2: 99.0}), "packet_loss_pct", {5: -5.0})),
             reason="outside valid range", rows=(2, 5)),
        Case("duplicate_rows", ".csv", _csv_of(_duplicated), duplicates=5, added_rows=5),
        Case("other_day", ".csv", _csv_of(lambda b: _shifted(b, {1: -dt.timedelta(days=1), 2: dt.timedelta(days=1)})),
             reason="is outside partition 2026-10-13", rows=(1, 2)),
        Case("future", ".parquet", _parquet(lambda b: _shifted(b, {3: future, 4: future})),
             reason="is outside partition 2026-10-13", rows=(3, 4)),
        Case("enormous_cell", ".csv", _enormous_cell,
             reason=f"firmware_version: {ENORMOUS_CELL_CHARS} characters, over the limit of 256", rows=(7,)),
        Case("enormous_line", ".csv", _enormous_line, error=r"cannot read as csv: no line break in the first 64 KiB"),
        Case("cr_line_breaks", ".csv", _cr_line_breaks,
             error=r"cannot read as csv: line breaks are CR only"),
        Case("ragged_row", ".csv", _ragged, error=r"cannot read as csv: line 4 has 17 fields, the header has 16"),
        Case("unclosed_quote", ".csv", _unclosed_quote, error=r"cannot read as csv: line 6: .*a quote that is never closed"),
        Case("duplicate_header", ".csv", _duplicate_header,
             error=r"cannot read as csv: column 'temperature_c' appears twice in the header \(columns 6 and 7\)"),
        Case("compressed", ".csv.gz", _gzipped),
        Case("unpadded_date", ".csv", _csv_of(same), filename="unpadded_2026-10-6.csv",
             skipped="date '2026-10-6' in the name is not written YYYY-MM-DD"),
        Case("impossible_date", ".csv", _csv_of(same), filename="impossible_2026-06-31.csv",
             skipped="'2026-06-31' in the name is not a calendar date"),
        Case("dangling_symlink", ".csv", _dangling_symlink, skipped="a symbolic link whose target is missing"),
        Case("other_format", ".csv.bz2", _csv_of(same), skipped="not a data file (read are .csv, .csv.gz, .parquet)"),
        Case("epoch_seconds", ".csv", _csv_of(lambda b: _timestamps(b, pl.col("ts").dt.epoch("s").cast(pl.String)))),
        Case("epoch_milliseconds", ".parquet", _parquet(lambda b: _timestamps(b, pl.col("ts").dt.epoch("ms")))),
        Case("us_dates", ".csv", _csv_of(lambda b: _timestamps(b, pl.col("ts").dt.strftime("%m/%d/%Y %H:%M:%S"))),
             every_row=True, reason="(expected ISO 8601"),
        Case("next_day", ".csv", _csv_of(lambda b: _timestamps(b, pl.col("ts") + dt.timedelta(days=1))),
             every_row=True, reason="is outside partition 2026-10-13: it is 2026-10-14"),
        Case("local_offsets", ".csv", _csv_of(lambda b: _timestamps(b, pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S+02:00"))),
             rows=_local_hours(2), reason="is outside partition 2026-10-13: it is 2026-10-12 2"),
    ]


@dataclass(frozen=True)
class Contract:
    """A dataset YAML that must not load: ``change`` edits the default YAML's text, ``error`` is a
    regex the DatasetConfigError must match (it names the field, and the line for YAML syntax)."""

    name: str
    change: Callable[[str], str]
    error: str


def _feature(line: str) -> Callable[[str], str]:
    """Add a feature line after the first feature."""
    return lambda text: text.replace("features:\n", f"features:\n  - {line}\n", 1)


def _set(pattern: str, replacement: str) -> Callable[[str], str]:
    return lambda text: re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE)


def contracts() -> list[Contract]:
    return [
        Contract("classes_twice", lambda t: t + "classes: [none, fiber]\n",
                 r"duplicate key 'classes' on line \d+ \(first on line 13\)"),
        Contract("two_features_one_column", _feature("{name: rx_copy, column: rx_power_dbm, type: numeric}"),
                 r"column 'rx_power_dbm' is already used by features.rx_copy"),
        Contract("feature_on_the_id_column", _feature("{name: serial, column: device_id, type: categorical}"),
                 r"features.serial: column 'device_id' is already used by columns.id"),
        Contract("label_is_the_id", _set(r"^  label: fault$", "  label: device_id"),
                 r"columns.id: column 'device_id' is already used by columns.label"),
        Contract("feature_named_hour", _feature("{name: hour, type: numeric}"), r"\['hour'\] are names of derived features"),
        Contract("feature_named_a_delta", _feature("{name: rx_power_dbm_delta, type: numeric}"),
                 r"\['rx_power_dbm_delta'\] are names of derived features"),
        Contract("separator_of_two", _set(r"^  kind: simulator$", "  kind: simulator\n  csv_separator: ';;'"),
                 r"source.csv_separator: .*';;' must be one character"),
        Contract("empty_separator", _set(r"^  kind: simulator$", "  kind: simulator\n  csv_separator: ''"),
                 r"source.csv_separator: .*'' must be one character"),
        Contract("unknown_timezone", _set(r"^  kind: simulator$", "  kind: simulator\n  timezone: Mars/Olympus"),
                 r"source.timezone: .*'Mars/Olympus' is not an IANA time zone"),
    ]
