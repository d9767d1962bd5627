"""The collector's quick path: a whole batch of telemetry checked at once, column by column.

Checking each message field by field in Python costs as much as receiving it. Here every column of
a batch is tested in one go (C-level maps, numpy, polars); the rows that pass are landed as they
are, and only a row that fails (or that the quick test cannot judge, such as a JSON null, which may
be a gap or a missing field) goes through ``MessageValidator.row``, the exact check that names the
field and the value. The quick test never accepts a row the exact check would reject.
"""

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from pipeline.message_contract import MESSAGE_KEY, TELEMETRY, MessageValidator, Received

_NUMBERS, _TEXT = frozenset({int, float}), frozenset({str})
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%z"
"""The strict ISO 8601 form (a 'Z' is read as +00:00); any other spelling takes the exact path."""


class Pending(NamedTuple):
    """A telemetry message whose JSON parsed, waiting for its batch to be checked."""

    message: Received
    key: str
    site: str
    device: str
    values: tuple
    """The payload's values of ``MessageValidator.batch_fields``, None where absent."""


def check(pending: Sequence[Pending], validator: MessageValidator) -> tuple[pl.DataFrame, list[Pending]]:
    """(the rows that pass, as landed columns; the messages that need the exact check)."""
    n = len(pending)
    columns = list(zip(*(p.values for p in pending))) if n else [()] * len(validator.batch_fields)
    stamps, bad = _timestamps(columns[0], [p.message.received_at for p in pending], validator.skew_s)
    numeric = []
    for column, (_, lo, hi) in zip(columns[1:], validator.numeric):
        values, wrong = _numbers(column, lo, hi)
        numeric.append(values)
        bad |= wrong
    texts = columns[1 + len(validator.numeric):]
    for column in texts[:len(validator.categorical)]:
        if not (set(map(type, column)) <= _TEXT and all(map(str.strip, column))):
            bad |= np.fromiter((v.__class__ is not str or not v.strip() for v in column), bool, n)
    label, site, device = texts[len(validator.categorical):]
    if label.count(None) != n:  # most devices do not know their fault
        bad |= np.fromiter((not (v is None or (v.__class__ is str and v in validator.classes)) for v in label), bool, n)
    for given, topic_level in ((site, 2), (device, 3)):  # the topic says which; a payload may repeat it
        if given.count(None) != n:
            bad |= np.fromiter((v is not None and v != p[topic_level] for v, p in zip(given, pending)), bool, n)
    good = ~bad
    return _frame(pending, good, stamps, numeric, texts[:-2], validator), [p for p, b in zip(pending, bad) if b]


def _timestamps(column: Sequence, received_at: list[float], skew_s: float) -> tuple[pl.Series, np.ndarray]:
    strings = column if set(map(type, column)) <= _TEXT else [v if v.__class__ is str else None for v in column]
    text = pl.Series(strings, dtype=pl.String)
    stamps = text.str.replace(r"Z$", "+00:00").str.to_datetime(_ISO_FORMAT, strict=False, time_unit="us", time_zone="UTC")
    seconds = stamps.dt.epoch("us").to_numpy().astype(float) / 1e6  # nulls become NaN
    bad = stamps.is_null().to_numpy() | (seconds - np.asarray(received_at, dtype=float) > skew_s)
    return stamps, bad


def _numbers(column: Sequence, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The column as floats and the rows that are not a number in range (a null too: the exact
    path tells a gap from a missing field)."""
    if set(map(type, column)) <= _NUMBERS:
        values = np.array(column, dtype=float)
        wrong = np.zeros(len(values), bool)
    else:
        wrong = np.fromiter((v.__class__ not in _NUMBERS for v in column), bool, len(column))
        values = np.array([np.nan if w else v for v, w in zip(column, wrong)], dtype=float)
    return values, wrong | (values < lo) | (values > hi)


def _frame(pending: Sequence[Pending], good: np.ndarray, stamps: pl.Series, numeric: list[np.ndarray],
           texts: Sequence[Sequence], validator: MessageValidator) -> pl.DataFrame:
    keep = good.tolist()
    roles = validator.roles

    def kept(values: Sequence) -> list:
        return list(itertools.compress(values, keep))

    frame = pl.DataFrame({
        roles.timestamp: stamps.filter(pl.Series(good)),
        validator.site_column: pl.Series(kept([p.site for p in pending]), dtype=pl.String),
        validator.id_column: pl.Series(kept([p.device for p in pending]), dtype=pl.String),
        MESSAGE_KEY: pl.Series(kept([p.key for p in pending]), dtype=pl.String),
        **{name: values[good] for (name, _, _), values in zip(validator.numeric, numeric)},
        **{name: pl.Series(kept(column), dtype=pl.String) for name, column in zip(validator.text_fields, texts)},
    })
    return frame.select(validator.columns(TELEMETRY)).cast(validator.landed_types(TELEMETRY))
