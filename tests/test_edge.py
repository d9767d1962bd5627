"""Registry, edge package and edge runtime: atomic, deterministic, verified, torch-free on the device."""

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import edge_package, edge_runtime, export
from pipeline.encoding import columns_of, student_matrix
from pipeline.registry import Registry, RegistryError
from pipeline.teacher import PREPROCESSING_FILE
from pipeline.training_set import SPLIT, TEST


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory):
    """A trained student exported to ONNX and registered, as candidate_model does."""
    small, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    work = tmp_path_factory.mktemp("work")
    export.export_onnx(student, work / export.ONNX_FILE)
    teacher.save(work)
    registry = Registry(tmp_path_factory.mktemp("registry"))
    entry = {
        "classes": list(small.classes), "preprocessing": teacher.preprocessing,
        "onnx": {"opset": export.OPSET, "input": export.INPUT_NAME},
        "derived_features": {"hour": "hour of day"},
        "metrics": {"student": {"accuracy": 0.9, "macro_f1": 0.8}},
        "lineage": {"dataset": small.name, "partition": "2026-10-03"},
    }
    version = registry.register("v1", {export.ONNX_FILE: work / export.ONNX_FILE, PREPROCESSING_FILE: work / PREPROCESSING_FILE}, entry)
    return registry, version, frame.filter(pl.col(SPLIT) == TEST), teacher, student


def test_registry_records_files_with_hashes_and_resolves_aliases(registered):
    registry, version, *_ = registered
    assert registry.versions() == ["v1"]
    assert set(version.entry["files"]) == {export.ONNX_FILE, PREPROCESSING_FILE}
    assert version.entry["files"][export.ONNX_FILE] == edge_runtime.sha256_file(version.file(export.ONNX_FILE))
    registry.set_alias("candidate", "v1", reason="test")
    assert registry.get("candidate").version == "v1"
    with pytest.raises(RegistryError):
        registry.set_alias("candidate", "v404", reason="no such version")
    with pytest.raises(RegistryError):
        registry.get("../escape")


def test_a_registration_that_fails_half_way_leaves_nothing_visible(tmp_path: Path, monkeypatch):
    import shutil

    for name in ("a.onnx", "b.json"):
        (tmp_path / name).write_text(name)
    registry = Registry(tmp_path / "registry")
    real_copy, copies = shutil.copy2, []

    def copy_then_crash(src, dst):
        copies.append(src)
        if len(copies) == 2:
            raise OSError("disk full")
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copy2", copy_then_crash)
    with pytest.raises(OSError, match="disk full"):
        registry.register("v2", {"a.onnx": tmp_path / "a.onnx", "b.json": tmp_path / "b.json"}, {})
    assert len(copies) == 2  # the first file was copied before the crash
    assert registry.versions() == []
    assert sorted(p.name for p in (tmp_path / "registry" / "versions").iterdir()) == []


def test_the_package_is_deterministic_and_lists_every_file(registered, tmp_path: Path):
    _, version, *_ = registered
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    manifest = edge_package.build_package(version, export.ONNX_FILE, first)
    edge_package.build_package(version, export.ONNX_FILE, second)
    assert first.read_bytes() == second.read_bytes()
    names = set(zipfile.ZipFile(first).namelist())
    assert names == {export.ONNX_FILE, edge_package.RUNTIME_FILE, edge_runtime.MANIFEST}
    assert set(manifest["files"]) == names - {edge_runtime.MANIFEST}
    assert manifest["feature_order"] == version.entry["preprocessing"]["feature_order"]
    assert manifest["classes"] == version.entry["classes"] and manifest["version"] == "v1"


@pytest.mark.parametrize("victim", [export.ONNX_FILE, edge_package.RUNTIME_FILE])
def test_a_tampered_file_is_refused_by_name(registered, tmp_path: Path, victim: str):
    _, version, *_ = registered
    package = tmp_path / "p.zip"
    edge_package.build_package(version, export.ONNX_FILE, package)
    unpacked = edge_package.unpack(package, tmp_path / "unpacked")
    with open(unpacked / victim, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(edge_runtime.PackageError, match=f"{victim}: sha256 does not match"):
        edge_runtime.verify_package(unpacked)


def test_the_package_reproduces_the_student_in_a_process_without_torch_lightgbm_or_dagster(registered, tmp_path: Path):
    _, version, held_out, teacher, student = registered
    package = tmp_path / "p.zip"
    edge_package.build_package(version, export.ONNX_FILE, package)
    unpacked = edge_package.unpack(package, tmp_path / "device")
    columns = columns_of(held_out, teacher.preprocessing)
    np.savez(tmp_path / "rows.npz", **{k: v if v.dtype.kind == "f" else v.astype(str) for k, v in columns.items()})
    expected = student.predict_proba(student_matrix(held_out, teacher.preprocessing))

    script = textwrap.dedent(f"""
        import sys, importlib.abc
        BLOCKED = ("torch", "lightgbm", "dagster", "polars", "pipeline")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not on the device")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(unpacked)!r})
        import numpy as np
        import evergreen_edge
        model = evergreen_edge.EdgeModel({str(unpacked)!r})
        rows = dict(np.load({str(tmp_path / "rows.npz")!r}, allow_pickle=False))
        np.save({str(tmp_path / "out.npy")!r}, model.predict_proba(rows))
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    actual = np.load(tmp_path / "out.npy")
    assert actual.shape == expected.shape == (held_out.height, len(version.entry["classes"]))
    assert np.abs(actual - expected).max() < 1e-5
    assert (actual.argmax(1) == expected.argmax(1)).all()


def test_runtime_command_line_predicts_a_csv(registered, tmp_path: Path):
    _, version, held_out, teacher, student = registered
    package = tmp_path / "p.zip"
    edge_package.build_package(version, export.ONNX_FILE, package)
    unpacked = edge_package.unpack(package, tmp_path / "device")
    order = version.entry["preprocessing"]["feature_order"]
    held_out.select(order).head(50).write_csv(tmp_path / "rows.csv")
    out = subprocess.run([sys.executable, str(unpacked / edge_package.RUNTIME_FILE), str(unpacked), str(tmp_path / "rows.csv")],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    expected = student.predict_proba(student_matrix(held_out.head(50), teacher.preprocessing)).argmax(1)
    assert out[0] == "prediction,confidence" and len(out) == 51
    assert [line.split(",")[0] for line in out[1:]] == [version.entry["classes"][i] for i in expected]


def test_the_runtime_refuses_a_package_without_a_manifest(tmp_path: Path):
    assert edge_runtime.main([str(tmp_path), str(tmp_path / "rows.csv")]) == 2
    with pytest.raises(edge_runtime.PackageError, match="missing manifest"):
        edge_runtime.verify_package(tmp_path)
    (tmp_path / edge_runtime.MANIFEST).write_text(json.dumps({"files": {"model.onnx": "0" * 64}}))
    with pytest.raises(edge_runtime.PackageError, match="model.onnx: listed in the manifest but missing"):
        edge_runtime.verify_package(tmp_path)


def test_encoding_fills_standardises_and_one_hots_with_unseen_categories_as_zeros():
    preprocessing = {
        "numeric": [{"name": "a", "fill": 4.0, "mean": 2.0, "std": 2.0}, {"name": "b", "fill": 0.0, "mean": 0.0, "std": 1.0}],
        "categorical": [{"name": "m", "categories": ["x", "y"]}],
    }
    rows = {"a": [6.0, float("nan"), float("inf")], "b": [1.0, 2.0, 3.0], "m": ["y", "x", "never-seen"]}
    assert edge_runtime.encode(rows, preprocessing).tolist() == [
        [2.0, 1.0, 0.0, 1.0], [1.0, 2.0, 1.0, 0.0], [1.0, 3.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="column 'b': not numeric"):
        edge_runtime.encode({**rows, "b": ["1", "two", "3"]}, preprocessing)
