"""The edge package: one signed archive a low-power device can verify and run with numpy and onnxruntime.

Contents: the student's ONNX model at each shipped precision, ``evergreen_edge.py`` (the runtime,
this repo's ``pipeline/evergreen_edge.py`` verbatim), ``manifest.json`` (version, feature order,
preprocessing constants, classes, metrics, the models with their opsets, the signing key's id, and
the sha256 of every other file) and ``manifest.sig`` (the Ed25519 signature of the manifest's exact
bytes). The zip is deterministic (sorted entries, fixed timestamps, deterministic signatures), so
the same version signed with the same key always gives the same bytes; it is written aside and
renamed into place.
"""

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline import atomic, evergreen_edge as runtime, signing
from pipeline.registry import Version

RUNTIME_FILE = "evergreen_edge.py"
PRECISIONS = ("int8", "fp32")
"""The precisions a package may ship, in order of preference for the default."""
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def build_manifest(version: Version, models: Mapping[str, str], files: Mapping[str, bytes], key_id: str) -> dict:
    entry = version.entry
    return {
        "format": runtime.FORMAT,
        "version": version.version,
        "registered_at": entry["registered_at"],
        "dataset": entry["lineage"]["dataset"],
        "classes": entry["classes"],
        "feature_order": entry["preprocessing"]["feature_order"],
        "derived_features": entry["derived_features"],
        "preprocessing": entry["preprocessing"],
        "models": {
            "default": next(p for p in PRECISIONS if p in models),
            "precisions": {precision: _describe_model(name, files[name]) for precision, name in models.items()},
        },
        "metrics": entry["metrics"]["student"],
        "runtime": {"file": RUNTIME_FILE, "requires": ["numpy", "onnxruntime"], "optional": ["cryptography", "pyarrow"]},
        "signing": {"algorithm": runtime.ALGORITHM, "key_id": key_id},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }


def _describe_model(name: str, data: bytes) -> dict:
    """The file with the opset and input it really has: an int8 model need not share the fp32 one's."""
    model = onnx.load_from_string(data)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"file": name, "format": "onnx", "opset": opset, "input": model.graph.input[0].name}


def build_package(version: Version, models: Mapping[str, str], target: Path, signing_key: Ed25519PrivateKey) -> dict:
    """Write the signed package zip of a registered version to ``target``; returns its manifest.

    ``models`` maps each precision to ship to its file in the version, e.g. ``{"int8":
    "student.int8.onnx", "fp32": "student.onnx"}``; the default is the first of ``PRECISIONS``.
    """
    if not models or set(models) - set(PRECISIONS):
        raise ValueError(f"precisions {sorted(models)}: expected some of {list(PRECISIONS)}")
    files = {name: version.file(name).read_bytes() for name in models.values()}
    files[RUNTIME_FILE] = Path(runtime.__file__).read_bytes()
    manifest = build_manifest(version, models, files, signing.key_id(signing_key))
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    signature = {"algorithm": runtime.ALGORITHM, "key_id": manifest["signing"]["key_id"],
                 "signature_b64": base64.b64encode(signing.sign(signing_key, manifest_bytes)).decode("ascii")}
    with atomic.atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(files.items()):
                _add(archive, name, data)
            _add(archive, runtime.MANIFEST, manifest_bytes)
            _add(archive, runtime.SIGNATURE, json.dumps(signature, indent=2, sort_keys=True).encode("utf-8"))
    return manifest


def estimated_bytes(models: Mapping[str, bytes], preprocessing: Mapping) -> int:
    """About the size of a package shipping ``models`` (file name -> bytes): their deflated zip with
    the runtime and the preprocessing constants, short of the manifest's other fields and the
    signature (a few KB). What the student search can know of a model before there is a version."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in {**models, RUNTIME_FILE: Path(runtime.__file__).read_bytes(),
                           runtime.MANIFEST: json.dumps({"preprocessing": preprocessing}, indent=2).encode("utf-8")}.items():
            _add(archive, name, data)
    return len(buffer.getvalue())


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
                raise runtime.PackageError(f"{package}: unsafe path {name!r} in archive")
        archive.extractall(destination)
    return destination
