"""Evergreen edge runtime: load a verified edge package and predict, with numpy and onnxruntime only.

This file is copied verbatim into every edge package, so it imports nothing but the standard
library, numpy and onnxruntime. The training side encodes the student's inputs with this same
``encode`` function, so the device and the trainer cannot disagree about preprocessing.

Command line::

    python evergreen_edge.py PACKAGE_DIR ROWS.csv [--output predictions.csv]
"""

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


class PackageError(RuntimeError):
    """The package is incomplete or a file does not match the manifest; names the file."""


class Encoder:
    """Raw feature columns -> the student's float32 input matrix, with the constants prepared once.

    Numeric: missing values take the training median, then are standardised. Categorical: one-hot
    over the training vocabulary; an unseen category is all zeros (no column claims it). The
    numeric block is one vectorised operation: per-column numpy calls dominate single-row latency.
    """

    def __init__(self, preprocessing: Mapping):
        self.numeric = [s["name"] for s in preprocessing["numeric"]]
        self.fill, self.mean, self.std = (np.array([s[k] for s in preprocessing["numeric"]], dtype=np.float64)
                                          for k in ("fill", "mean", "std"))
        self.categorical = [(s["name"], np.asarray(s["categories"], dtype=str)[None, :]) for s in preprocessing["categorical"]]

    def __call__(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        try:
            values = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in self.numeric])
        except ValueError as exc:
            bad = next(name for name in self.numeric if not _is_numeric(columns[name]))
            raise ValueError(f"column {bad!r}: not numeric ({exc})") from exc
        parts = [(np.where(np.isfinite(values), values, self.fill) - self.mean) / self.std]
        for name, categories in self.categorical:
            parts.append(np.asarray(columns[name], dtype=object).astype(str)[:, None] == categories)
        return np.concatenate(parts, axis=1, dtype=np.float32)


def encode(columns: Mapping[str, Sequence], preprocessing: Mapping) -> np.ndarray:
    """``Encoder(preprocessing)(columns)``, for callers that encode once."""
    return Encoder(preprocessing)(columns)


def _is_numeric(values: Sequence) -> bool:
    try:
        np.asarray(values, dtype=np.float64)
        return True
    except ValueError:
        return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_package(package_dir: Path) -> dict:
    """The manifest, after checking that every file it lists exists with its recorded sha256."""
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{manifest_path}: missing manifest")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{manifest_path}: not valid JSON: {exc}") from exc
    for name, expected in manifest["files"].items():
        path = package_dir / name
        if not path.is_file():
            raise PackageError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise PackageError(f"{path}: sha256 does not match the manifest (tampered or corrupt)")
    return manifest


class EdgeModel:
    """A verified package's model, ready to predict raw feature rows."""

    def __init__(self, package_dir: str | Path, threads: int = 1):
        import onnxruntime as ort  # imported here so `encode` works where onnxruntime is absent

        self.package_dir = Path(package_dir)
        self.manifest = verify_package(self.package_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_path = self.package_dir / self.manifest["model"]["file"]
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.classes = list(self.manifest["classes"])
        self.encoder = Encoder(self.manifest["preprocessing"])

    @property
    def feature_order(self) -> list[str]:
        return list(self.manifest["feature_order"])

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: matrix})[0]

    def predict_proba(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return self.predict_proba_encoded(self.encoder(columns))

    def predict(self, columns: Mapping[str, Sequence]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(columns).argmax(axis=1)]


def read_csv_columns(path: Path, names: Sequence[str]) -> dict[str, list]:
    """The named columns of a CSV file; empty cells become NaN for numeric use."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            raise PackageError(f"{path}: missing column(s) {missing}")
        rows = list(reader)
    return {n: [r[n] if r[n] != "" else "nan" for r in rows] for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict rows of a CSV file with an Evergreen edge package.")
    parser.add_argument("package_dir", type=Path)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--output", type=Path, help="write predictions here (default: standard output)")
    args = parser.parse_args(argv)
    try:
        model = EdgeModel(args.package_dir)
        columns = read_csv_columns(args.rows, model.feature_order)
        numeric = {s["name"] for s in model.manifest["preprocessing"]["numeric"]}
        columns = {k: (np.asarray(v, dtype=np.float64) if k in numeric else v) for k, v in columns.items()}
        proba = model.predict_proba(columns)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    writer = csv.writer(out)
    writer.writerow(["prediction", "confidence"])
    for row in proba:
        writer.writerow([model.classes[int(row.argmax())], f"{row.max():.6f}"])
    if args.output:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
