"""Keyed hashing of device ids and row ids, so raw device ids never travel past ingestion.

A keyed hash (HMAC-SHA256) rather than a plain one: device serials are guessable, and an unkeyed
hash of a guessable value is reversible by enumeration. The key comes from an environment variable;
in the embedded mode, when it is unset, a random key is generated once into the data directory.
"""

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

import polars as pl

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
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key_file.name}.", dir=key_file.parent)  # mode 600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, key_file)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
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
