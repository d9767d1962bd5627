"""The edge package: one archive a low-power device can verify and run with numpy and onnxruntime.

Contents: the student's ONNX model, ``evergreen_edge.py`` (the runtime, this repo's
``pipeline/edge_runtime.py`` verbatim) and ``manifest.json`` (version, feature order, preprocessing
constants, classes, metrics, opset, and the sha256 of every other file). The zip is deterministic
(sorted entries, fixed timestamps), so the same version always gives the same bytes, and it is
written aside and renamed into place.
"""

import json
import zipfile
from pathlib import Path

from pipeline import atomic, edge_runtime
from pipeline.registry import Version

RUNTIME_FILE = "evergreen_edge.py"
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def build_manifest(version: Version, model_file: str, files: dict[str, Path]) -> dict:
    entry = version.entry
    return {
        "format": "evergreen-edge/1",
        "version": version.version,
        "registered_at": entry["registered_at"],
        "dataset": entry["lineage"]["dataset"],
        "classes": entry["classes"],
        "feature_order": entry["preprocessing"]["feature_order"],
        "derived_features": entry["derived_features"],
        "preprocessing": entry["preprocessing"],
        "model": {"file": model_file, "format": "onnx", "opset": entry["onnx"]["opset"], "input": entry["onnx"]["input"]},
        "metrics": entry["metrics"]["student"],
        "runtime": {"file": RUNTIME_FILE, "requires": ["numpy", "onnxruntime"]},
        "files": {name: edge_runtime.sha256_file(path) for name, path in sorted(files.items())},
    }


def build_package(version: Version, model_name: str, target: Path) -> dict:
    """Write the package zip for a registered version to ``target``; returns its manifest."""
    files = {model_name: version.file(model_name), RUNTIME_FILE: Path(edge_runtime.__file__)}
    manifest = build_manifest(version, model_name, files)
    with atomic.atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, path in sorted(files.items()):
                _add(archive, name, path.read_bytes())
            _add(archive, edge_runtime.MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return manifest


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def unpack(package: Path, destination: Path) -> Path:
    """Extract a package (refusing paths that escape ``destination``) and return the folder."""
    destination.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise edge_runtime.PackageError(f"{package}: unsafe path {name!r} in archive")
        archive.extractall(destination)
    return destination
