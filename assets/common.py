"""Helpers several asset layers share, so that asset modules import from here and from pipeline/,
never from one another: who moved an alias, the signed package a version is served as, and a
label count for metadata."""

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl

from assets import metadata as md
from assets.resources import StorageResource
from pipeline import edge_package as package_lib
from pipeline.dataset import LABEL
from pipeline.registry import Version

BY_TAG = "evergreen/by"
"""Who asked for a run started outside the UI and the sensors (the rollback command sets it)."""


def actor(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> str:
    """Who moved an alias, for the registry's ledger: the sensor that launched the run, a backfill,
    the user named by the command line, or a user in the UI."""
    tags = context.run.tags
    if sensor := tags.get("dagster/sensor_name"):
        return f"sensor:{sensor}"
    if backfill := tags.get("dagster/backfill"):
        return f"backfill:{backfill}"
    return tags.get(BY_TAG, "user")


def released_package(storage: StorageResource, version: Version) -> tuple[Path, str]:
    """The version's signed package and its sha256: built the first time, byte for byte the same
    ever after. A package that differs from the first one built (a changed key, file or builder)
    is refused rather than served."""
    path = storage.package_path(version.version)
    if not path.is_file():
        package_lib.build_package(version, version.entry["onnx"]["models"], path, storage.signing_key())
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    first = storage.registry.record_package(version.version, sha256)
    if first != sha256:
        raise dg.Failure(f"{path}: sha256 {sha256} differs from the package first built for {version.version} ({first})")
    return path, sha256


def per_class(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """Rows per label, for a frame of labelled rows."""
    counts = frame.group_by(LABEL).len().sort(LABEL)
    return md.counts(dict(counts.iter_rows()), md.Column("class"), md.Column("rows", "int"))
