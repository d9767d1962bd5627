"""Metadata a person reads in the UI, formatted in one place: tables with a schema instead of JSON
blobs, floats rounded to what they can bear (a 16-digit accuracy measured on 40 rows claims a
precision it does not have), and metrics beside the rows they were measured on, marked when those
are fewer than ``report.min_metric_rows``. Code that reads a table back uses ``records``."""

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

SIGNIFICANT_DIGITS = 4
SMALL_SAMPLE = "small sample"
Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Column:
    """A table column: its name, Dagster's column type (string, int, float, bool) and what it means."""

    name: str
    type: str = "string"
    description: str | None = None


def rounded(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``value`` to ``digits`` significant digits (NaN, infinities, zero and None as they are)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(float(value), digits - 1 - math.floor(math.log10(abs(value))))


def seconds(value: float) -> float:
    """A duration, to a tenth of a second."""
    return round(float(value), 1)


def metric(value: float | None) -> dg.FloatMetadataValue:
    """A float entry, rounded; NaN where there was nothing to measure on."""
    return dg.MetadataValue.float(float("nan") if value is None else rounded(float(value)))


def sample(rows: int, min_rows: int) -> str:
    """How far a metric on ``rows`` rows can be trusted: ``small sample (< min_rows rows)`` or ``ok``."""
    return f"{SMALL_SAMPLE} (< {min_rows} rows)" if rows < min_rows else "ok"


def _cell(value: object, column: Column) -> Cell:
    if value is None:
        return None
    if column.type == "bool" and isinstance(value, bool):
        return value
    if column.type == "int" and isinstance(value, numbers.Integral):
        return int(value)
    if column.type == "float" and isinstance(value, numbers.Real):
        return rounded(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    return str(value)


def table(rows: Iterable[Mapping[str, object]], columns: Sequence[Column]) -> dg.TableMetadataValue:
    """A table entry: one record per row, the columns in this order (a missing value is empty; a
    list or mapping in a string column is written out as ``a, b`` or ``a: 1, b: 2``)."""
    records = [dg.TableRecord({c.name: _cell(row.get(c.name), c) for c in columns}) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c.name, c.type, c.description) for c in columns])
    return dg.MetadataValue.table(records, schema)


def counts(values: Mapping[str, int], key: Column, count: Column) -> dg.TableMetadataValue:
    """A table of a name -> count mapping (rows per class, per source, per quarantine reason...)."""
    return table(({key.name: k, count.name: v} for k, v in values.items()), [key, count])


def records(value: object) -> list[dict[str, Cell]]:
    """A table entry's rows as dicts, for code and tests that read metadata back."""
    assert isinstance(value, dg.TableMetadataValue), f"not a table: {value!r}"
    return [dict(r.data) for r in value.records]


def plain(value: object) -> object:
    """A metadata value as plain data: a table as its rows, anything else as it is (for JSON output)."""
    return records(value) if isinstance(value, dg.TableMetadataValue) else value
