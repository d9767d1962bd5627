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
    """HMAC-SHA256 of each string value, as 16 hex characters (64 bits: ample for a fleet)."""
    return values.map_elements(
        lambda v: hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest()[:16],
        return_dtype=pl.String,
        skip_nulls=True,
    )


def row_id(device_id: pl.Expr, timestamp: pl.Expr, key: bytes) -> pl.Expr:
    """A stable id of one reading (device, instant), shared by telemetry and returned labels."""
    stamp = timestamp.dt.epoch("us").cast(pl.String)
    return keyed_hash(pl.concat_str([device_id, stamp], separator="|"), key)
