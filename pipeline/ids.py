"""Keyed hashing of device ids and row ids, so raw device ids never travel past ingestion.

A keyed hash (HMAC-SHA256) rather than a plain one: device serials are guessable, and an unkeyed
hash of a guessable value is reversible by enumeration. The key comes from an environment variable;
in the embedded mode, when it is unset, a random key is generated once into the data directory.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import polars as pl

from pipeline import atomic

HASH_KEY_ENV = "EVERGREEN_HASH_KEY"


def load_or_create_key(env_var: str, key_file: Path) -> bytes:
    """The secret from ``env_var``; else from ``key_file``, generated there (mode 600) on first use.

    Several processes may start at once on a fresh machine (the multiprocess executor, concurrent
    runs): the file is created by an atomic link, so exactly one key wins and every process reads it.
    Two keys would silently stop labels from joining their readings.
    """
    if value := os.environ.get(env_var):
        return value.encode("utf-8")
    if not key_file.exists():
        atomic.create_once(key_file, secrets.token_hex(32).encode("ascii"))
    return key_file.read_text(encoding="utf-8").strip().encode("utf-8")


def keyed_hash(values: pl.Expr, key: bytes) -> pl.Expr:
    """HMAC-SHA256 of each string value, as 16 hex characters (64 bits: ample for a fleet). Each
    distinct value is hashed once: a day repeats every device id on each of its readings."""
    def distinct_digests(batch: pl.Series) -> pl.Series:
        distinct = batch.drop_nulls().unique()
        return batch.replace_strict(distinct, _digests(distinct, key), default=None, return_dtype=pl.String)
    return values.map_batches(distinct_digests, return_dtype=pl.String, is_elementwise=True)


def row_id(device_id: pl.Expr, timestamp: pl.Expr, key: bytes) -> pl.Expr:
    """A stable id of one reading (device, instant), shared by telemetry and returned labels: the
    keyed hash of ``device|epoch microseconds`` (each reading's is its own, so none is shared)."""
    stamp = timestamp.dt.epoch("us").cast(pl.String)
    text = pl.concat_str([device_id, stamp], separator="|")
    return text.map_batches(lambda batch: _digests(batch, key), return_dtype=pl.String, is_elementwise=True)


_CHUNK = 100_000
"""Values turned into Python strings at a time: a day's worth at once took ~250 MB for a moment."""


def _digests(values: pl.Series, key: bytes) -> pl.Series:
    """The keyed hash of each value (null stays null), in order."""
    def digest(text: str | None) -> str | None:
        return None if text is None else hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
    chunks = [pl.Series([digest(v) for v in values.slice(start, _CHUNK).to_list()], dtype=pl.String)
              for start in range(0, len(values), _CHUNK)]
    return pl.concat(chunks) if chunks else pl.Series([], dtype=pl.String)
