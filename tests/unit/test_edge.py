"""Registry, edge package and edge runtime: atomic, deterministic, signed, verified before anything
loads, torch-free on the device."""

import ast
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline import edge_package, evergreen_edge as runtime, export, signing
from pipeline.encoding import columns_of, fit_preprocessing, student_matrix
from pipeline.registry import Registry, RegistryError
from pipeline.teacher import PREPROCESSING_FILE
from pipeline.training_set import SPLIT, TEST

INT8_FILE = "student.int8.onnx"  # here a copy of the fp32 model: the package does not look inside
MODELS = {"int8": INT8_FILE, "fp32": export.ONNX_FILE}
MEMBERS = [export.ONNX_FILE, INT8_FILE, edge_package.RUNTIME_FILE, runtime.MANIFEST, runtime.SIGNATURE]


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory):
    """A trained student exported to ONNX and registered, as candidate_model does."""
    small, frame, teacher, student = trained.config, trained.frame, trained.teacher, trained.student
    work = tmp_path_factory.mktemp("work")
    export.export_onnx(student, work / export.ONNX_FILE)
    shutil.copy(work / export.ONNX_FILE, work / INT8_FILE)
    teacher.save(work)
    registry = Registry(tmp_path_factory.mktemp("registry"))
    entry = {
        "classes": list(small.classes), "preprocessing": teacher.preprocessing,
        "onnx": {"opset": export.OPSET, "input": export.INPUT_NAME},
        "derived_features": {"hour": "hour of day"},
        "metrics": {"student": {"accuracy": 0.9, "macro_f1": 0.8}},
        "lineage": {"dataset": small.name, "partition": "2026-10-03"},
    }
    files = {name: work / name for name in (export.ONNX_FILE, INT8_FILE, PREPROCESSING_FILE)}
    version = registry.register("v1", files, entry)
    return registry, version, frame.filter(pl.col(SPLIT) == TEST), teacher, student


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def public_key(key) -> bytes:
    return signing.public_key_bytes(key)


@pytest.fixture(scope="module")
def public_key_file(key, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("device") / "evergreen.pub.pem"
    path.write_bytes(signing.public_key_pem(key))
    return path


@pytest.fixture(scope="module")
def package(registered, key, tmp_path_factory) -> Path:
    """The signed int8 + fp32 package, built once; tests that alter it work on copies."""
    path = tmp_path_factory.mktemp("package") / "p.zip"
    edge_package.build_package(registered[1], MODELS, path, key)
    return path


def rewrite(package: Path, target: Path, change: Callable[[str, bytes], bytes | None] = lambda name, data: data,
            extra: dict[str, bytes] | None = None) -> Path:
    """A copy of ``package`` with each member's bytes passed through ``change`` (``None`` drops it)."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate members some tests add
        for name in source.namelist():
            if (data := change(name, source.read(name))) is not None:
                out.writestr(name, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return target


def flip(data: bytes, position: int) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)


def test_registry_records_files_with_hashes_and_resolves_aliases(registered):
    registry, version, *_ = registered
    assert registry.versions() == ["v1"]
    assert set(version.entry["files"]) == {export.ONNX_FILE, INT8_FILE, PREPROCESSING_FILE}
    assert version.entry["files"][export.ONNX_FILE] == hashlib.sha256(version.file(export.ONNX_FILE).read_bytes()).hexdigest()
    registry.set_alias("candidate", "v1", reason="test", by="test")
    assert registry.get("candidate").version == "v1"
    with pytest.raises(RegistryError):
        registry.set_alias("candidate", "v404", reason="no such version", by="test")
    with pytest.raises(RegistryError):
        registry.get("../escape")


def test_a_registration_that_fails_half_way_leaves_nothing_visible(tmp_path: Path, monkeypatch):
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


def test_the_package_is_deterministic_signed_and_lists_every_file(registered, key, public_key, package, tmp_path: Path):
    _, version, *_ = registered
    again = tmp_path / "again.zip"
    manifest = edge_package.build_package(version, MODELS, again, key)
    assert again.read_bytes() == package.read_bytes()
    archive = zipfile.ZipFile(package)
    assert set(archive.namelist()) == set(MEMBERS)
    assert set(manifest["files"]) == set(MEMBERS) - {runtime.MANIFEST, runtime.SIGNATURE}
    assert manifest["models"] == {"default": "int8", "precisions": {
        precision: {"file": name, "format": "onnx", "opset": export.OPSET, "input": export.INPUT_NAME}
        for precision, name in MODELS.items()}}
    assert manifest["signing"] == {"algorithm": "ed25519", "key_id": runtime.key_id(public_key)}
    assert manifest["feature_order"] == version.entry["preprocessing"]["feature_order"]
    assert manifest["classes"] == version.entry["classes"] and manifest["version"] == "v1"
    signature = json.loads(archive.read(runtime.SIGNATURE))
    key.public_key().verify(base64.b64decode(signature["signature_b64"]), archive.read(runtime.MANIFEST))

    other = edge_package.build_package(version, MODELS, tmp_path / "other.zip", Ed25519PrivateKey.generate())
    assert other["signing"]["key_id"] != manifest["signing"]["key_id"]
    fp32_only = edge_package.build_package(version, {"fp32": export.ONNX_FILE}, tmp_path / "fp32.zip", key)
    assert fp32_only["models"]["default"] == "fp32" and set(fp32_only["files"]) == {export.ONNX_FILE, edge_package.RUNTIME_FILE}
    with pytest.raises(ValueError, match="int4"):
        edge_package.build_package(version, {"int4": INT8_FILE}, tmp_path / "bad.zip", key)


@pytest.mark.parametrize("victim", MEMBERS)
def test_a_change_to_any_member_is_refused_by_name(package, public_key, tmp_path: Path, victim: str):
    """One flipped byte (first, middle, last) in any member, of the zip or of an unpacked folder."""
    size = zipfile.ZipFile(package).getinfo(victim).file_size
    for position in (0, size // 2, size - 1):
        altered = rewrite(package, tmp_path / f"{position}.zip", lambda name, data: flip(data, position) if name == victim else data)
        folder = edge_package.unpack(altered, tmp_path / f"{position}")
        for layout in (altered, folder):
            with pytest.raises(runtime.PackageError, match=re.escape(victim)):
                runtime.verify_package(layout, public_key)


def test_a_corrupt_archive_member_is_refused_by_name(package, public_key, tmp_path: Path):
    info = zipfile.ZipFile(package).getinfo(export.ONNX_FILE)
    data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # after the local file header
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(flip(package.read_bytes(), data_start + info.compress_size // 2))
    with pytest.raises(runtime.PackageError, match=f"{export.ONNX_FILE}: corrupt archive member"):
        runtime.verify_package(corrupt, public_key)


def _header_positions(package: Path) -> list[int]:
    """Byte positions of the zip's structure: every local file header and name, the central directory
    and its end record (where a flipped byte reaches zipfile's own parsing, not a member's data)."""
    with zipfile.ZipFile(package) as archive:
        infos = archive.infolist()
        directory = archive.start_dir
    local = [p for i in infos for p in range(i.header_offset, i.header_offset + 30 + len(i.filename.encode()))]
    return [*local, *range(directory, package.stat().st_size)]


def test_a_package_tampered_in_its_zip_structure_is_refused_as_a_package_error(package, public_key, tmp_path: Path):
    """A byte flipped anywhere in the zip's headers is refused as ``PackageError`` naming the package
    (zipfile raises NotImplementedError, OSError and others for them), or does not matter."""
    data, target = package.read_bytes(), tmp_path / "tampered.zip"
    refused = 0
    for position in _header_positions(package):
        target.write_bytes(flip(data, position))
        try:
            verified = runtime.verify_package(target, public_key)
        except runtime.PackageError as exc:
            assert str(exc).startswith(str(target)), (position, exc)
            refused += 1
        else:
            assert verified.files == runtime.verify_package(package, public_key).files, position
    assert refused > 0


def test_a_package_signed_with_another_key_or_a_replaced_signature_is_refused(registered, key, package, public_key, tmp_path: Path):
    _, version, *_ = registered
    forged_path = tmp_path / "forged.zip"  # e.g. an altered model, re-hashed and re-signed by an attacker
    forged = edge_package.build_package(version, MODELS, forged_path, Ed25519PrivateKey.generate())
    trusted = runtime.key_id(public_key)
    with pytest.raises(runtime.PackageError, match=f"{runtime.SIGNATURE}: signed by key {forged['signing']['key_id']}, "
                                                   f"not by the trusted key {trusted}"):
        runtime.verify_package(forged_path, public_key)

    relabelled = rewrite(forged_path, tmp_path / "relabelled.zip",  # the attacker claims the trusted key's id
                         lambda name, data: data.replace(forged["signing"]["key_id"].encode(), trusted.encode()))
    with pytest.raises(runtime.PackageError, match=f"{runtime.MANIFEST}: the signature in {runtime.SIGNATURE} does not verify"):
        runtime.verify_package(relabelled, public_key)

    genuine = tmp_path / "fp32.zip"  # a genuine signature by the trusted key, but of another manifest
    edge_package.build_package(version, {"fp32": export.ONNX_FILE}, genuine, key)
    other_signature = zipfile.ZipFile(genuine).read(runtime.SIGNATURE)
    replaced = rewrite(package, tmp_path / "replaced.zip", lambda name, data: other_signature if name == runtime.SIGNATURE else data)
    with pytest.raises(runtime.PackageError, match=f"{runtime.MANIFEST}: the signature in {runtime.SIGNATURE} does not verify"):
        runtime.verify_package(replaced, public_key)


def test_extra_unsafe_duplicate_and_missing_members_are_refused(package, public_key, tmp_path: Path):
    cases = {
        "notes.txt: not listed in the manifest": rewrite(package, tmp_path / "extra.zip", extra={"notes.txt": b"hi"}),
        "unsafe member path '../evil.py'": rewrite(package, tmp_path / "unsafe.zip", extra={"../evil.py": b"x"}),
        "unsafe member path 'sub/student.onnx'": rewrite(package, tmp_path / "nested.zip", extra={"sub/student.onnx": b"x"}),
        "duplicate members ['student.onnx']": rewrite(package, tmp_path / "dup.zip", extra={export.ONNX_FILE: b"x"}),
        f"{runtime.SIGNATURE}: missing signature": rewrite(package, tmp_path / "unsigned.zip",
                                                          lambda name, data: None if name == runtime.SIGNATURE else data),
        f"{runtime.MANIFEST}: missing manifest": rewrite(package, tmp_path / "bare.zip",
                                                         lambda name, data: None if name == runtime.MANIFEST else data),
        f"{INT8_FILE}: listed in the manifest but missing": rewrite(package, tmp_path / "short.zip",
                                                                    lambda name, data: None if name == INT8_FILE else data),
        "not a readable zip archive": tmp_path / "rows.csv",
        "no such package file or folder": tmp_path / "nowhere.zip",
    }
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    for message, path in cases.items():
        with pytest.raises(runtime.PackageError, match=re.escape(message)):
            runtime.verify_package(path, public_key)


@pytest.mark.slow
def test_the_package_reproduces_the_student_without_torch_lightgbm_dagster_or_cryptography(registered, package, public_key_file, tmp_path: Path):
    """On a bare device: the installed runtime loads straight from the zip, checking the signature
    with its own Ed25519 verifier, and both precisions predict what the student does."""
    _, version, held_out, teacher, student = registered
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(runtime.__file__, device / edge_package.RUNTIME_FILE)
    columns = columns_of(held_out, teacher.preprocessing)
    np.savez(tmp_path / "rows.npz", **{k: v if v.dtype.kind == "f" else v.astype(str) for k, v in columns.items()})
    expected = student.predict_proba(student_matrix(held_out, teacher.preprocessing))

    script = textwrap.dedent(f"""
        import sys, importlib.abc
        BLOCKED = ("torch", "lightgbm", "dagster", "polars", "pipeline", "deploy", "cryptography")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not on the device")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(device)!r})
        import numpy as np
        import evergreen_edge
        rows = dict(np.load({str(tmp_path / "rows.npz")!r}, allow_pickle=False))
        for precision in ("int8", "fp32"):
            model = evergreen_edge.EdgeModel({str(package)!r}, {str(public_key_file)!r}, precision=precision)
            np.save({str(tmp_path)!r} + f"/{{precision}}.npy", model.predict_proba(rows))
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    for precision in MODELS:
        actual = np.load(tmp_path / f"{precision}.npy")
        assert actual.shape == expected.shape == (held_out.height, len(version.entry["classes"]))
        assert np.abs(actual - expected).max() < 1e-5
        assert (actual.argmax(1) == expected.argmax(1)).all()


def test_predict_row_encodes_exactly_as_the_batch_encoder_and_predicts_the_same(registered, package, public_key):
    _, version, held_out, teacher, _ = registered
    model = runtime.EdgeModel(package, public_key, precision="fp32")
    columns = columns_of(held_out.head(200), teacher.preprocessing)
    rows = [{name: values[i] for name, values in columns.items()} for i in range(200)]
    numeric, (category, *_) = model.encoder.numeric, model.encoder.categorical
    rows += [{**rows[0], numeric[0]: float("nan"), numeric[1]: None, numeric[2]: "-inf", numeric[3]: "1e3", category[0]: "never-seen"},
             {**rows[1], numeric[0]: 1e30, category[0]: None}]
    for row in rows:
        single = {name: [value] for name, value in row.items()}
        assert np.array_equal(np.asarray([model.encoder.encode_row(row)], dtype=np.float32), model.encoder(single))
        label, probability = model.predict_row(row)
        batch = model.predict_proba(single)[0]
        assert label == version.entry["classes"][int(batch.argmax())]
        assert probability == pytest.approx(float(batch.max()), abs=1e-6)
    with pytest.raises(ValueError, match=f"column {numeric[0]!r}: not numeric"):
        model.predict_row({**rows[0], numeric[0]: "two"})


@pytest.mark.slow
def test_the_command_line_predicts_csv_and_parquet_rows(registered, package, public_key_file, tmp_path: Path, monkeypatch, capsys):
    _, version, held_out, teacher, student = registered
    order = version.entry["preprocessing"]["feature_order"]
    held_out.select(order).head(50).write_csv(tmp_path / "rows.csv")
    held_out.select(order).head(50).write_parquet(tmp_path / "rows.parquet")
    expected = [version.entry["classes"][i] for i in student.predict_proba(student_matrix(held_out.head(50), teacher.preprocessing)).argmax(1)]

    out = subprocess.run([sys.executable, runtime.__file__, str(package), str(tmp_path / "rows.csv"), "--public-key", str(public_key_file)],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0] == "prediction,confidence" and len(out) == 51
    assert [line.split(",")[0] for line in out[1:]] == expected

    monkeypatch.setenv(runtime.PUBLIC_KEY_ENV, public_key_file.read_text())
    assert runtime.main([str(package), str(tmp_path / "rows.parquet"), "--precision", "fp32", "--output", str(tmp_path / "out.csv")]) == 0
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == expected


def test_the_command_line_refuses_with_exit_code_2_naming_the_file(package, public_key_file, tmp_path: Path, monkeypatch, capsys):
    tampered = rewrite(package, tmp_path / "tampered.zip", lambda name, data: flip(data, 100) if name == export.ONNX_FILE else data)
    (tmp_path / "wrong.pem").write_bytes(signing.public_key_pem(Ed25519PrivateKey.generate()))
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "rows.txt").write_text("")
    (tmp_path / "rows.parquet").write_text("")
    key = ["--public-key", str(public_key_file)]
    cases = [
        ([str(tampered), "rows.csv", *key], f"{tampered / export.ONNX_FILE}: sha256 does not match"),
        ([str(package), "rows.csv", "--public-key", str(tmp_path / "wrong.pem")], f"{package / runtime.SIGNATURE}: signed by key"),
        ([str(package), "rows.csv", "--public-key", str(tmp_path / "rows.csv")], f"{tmp_path / 'rows.csv'}: not an Ed25519 public key"),
        ([str(package), "rows.csv"], f"no trusted public key: pass --public-key FILE or set {runtime.PUBLIC_KEY_ENV}"),
        ([str(package), "rows.csv", *key, "--precision", "int4"], f"{package / runtime.MANIFEST}: no 'int4' model (the package has ['fp32', 'int8'])"),
        ([str(package), str(tmp_path / "rows.csv"), *key], f"{tmp_path / 'rows.csv'}: missing column(s)"),
        ([str(package), str(tmp_path / "none.csv"), *key], f"{tmp_path / 'none.csv'}: cannot read"),
        ([str(package), str(tmp_path / "rows.txt"), *key], f"{tmp_path / 'rows.txt'}: expected a .csv or .parquet file"),
        ([str(package), str(tmp_path / "rows.parquet"), *key], f"{tmp_path / 'rows.parquet'}: not a readable Parquet file"),
    ]
    monkeypatch.delenv(runtime.PUBLIC_KEY_ENV, raising=False)
    for argv, message in cases:
        assert runtime.main(argv) == 2, message
        assert capsys.readouterr().err.startswith(f"error: {message}"), message
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # a device without pyarrow
    assert runtime.main([str(package), str(tmp_path / "rows.parquet"), *key]) == 2
    assert "rows.parquet: reading Parquet needs pyarrow" in capsys.readouterr().err


def test_encoding_fills_standardises_and_one_hots_with_unseen_categories_as_zeros():
    preprocessing = {
        "numeric": [{"name": "a", "fill": 4.0, "mean": 2.0, "std": 2.0}, {"name": "b", "fill": 0.0, "mean": 0.0, "std": 1.0}],
        "categorical": [{"name": "m", "categories": ["x", "y"]}],
    }
    rows = {"a": [6.0, float("nan"), float("inf")], "b": [1.0, 2.0, 3.0], "m": ["y", "x", "never-seen"]}
    assert runtime.encode(rows, preprocessing).tolist() == [
        [2.0, 1.0, 0.0, 1.0], [1.0, 2.0, 1.0, 0.0], [1.0, 3.0, 0.0, 0.0]]
    assert [runtime.Encoder(preprocessing).encode_row({k: v[i] for k, v in rows.items()}) for i in range(3)] == [
        [2.0, 1.0, 0.0, 1.0], [1.0, 2.0, 1.0, 0.0], [1.0, 3.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="column 'b': not numeric"):
        runtime.encode({**rows, "b": ["1", "two", "3"]}, preprocessing)


def test_numeric_bins_are_encoded_piecewise_linearly_open_at_both_ends_after_the_one_hots():
    preprocessing = {
        "numeric": [{"name": "a", "fill": 4.0, "mean": 2.0, "std": 2.0, "edges": [0.0, 1.0, 3.0, 7.0]},
                    {"name": "b", "fill": 0.0, "mean": 0.0, "std": 1.0, "edges": []}],
        "categorical": [{"name": "m", "categories": ["x"]}],
    }
    rows = {"a": [-1.0, 0.5, 2.0, 5.0, 9.0, float("nan")], "b": [0.0] * 6, "m": ["x", "y", "x", "y", "x", "y"]}
    expected = [[-1.5, 0.0, 1.0, -1.0, 0.0, 0.0], [-0.75, 0.0, 0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.5, 0.0],
                [1.5, 0.0, 0.0, 1.0, 1.0, 0.5], [3.5, 0.0, 1.0, 1.0, 1.0, 1.5], [1.0, 0.0, 0.0, 1.0, 1.0, 0.25]]
    encoder = runtime.Encoder(preprocessing)
    assert encoder.width == 6
    assert encoder(rows).tolist() == expected
    assert [encoder.encode_row({k: v[i] for k, v in rows.items()}) for i in range(6)] == expected


def test_bins_are_fitted_on_training_quantiles_and_ties_merge_them():
    train = pl.DataFrame({"spread": [float(i) for i in range(101)], "ties": [1.0] * 90 + [2.0] * 11, "flat": [3.0] * 101})
    preprocessing = fit_preprocessing(train, ["spread", "ties", "flat"], [], numeric_bins=4)
    assert [s["edges"] for s in preprocessing["numeric"]] == [[0.0, 25.0, 50.0, 75.0, 100.0], [1.0, 2.0], []]
    assert preprocessing["input_width"] == 3 + 4 + 1
    assert all("edges" not in s for s in fit_preprocessing(train, ["spread"], [])["numeric"])


def test_the_runtime_imports_only_the_standard_library_numpy_onnxruntime_and_optional_extras():
    tree = ast.parse(Path(runtime.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime", "cryptography", "pyarrow", "paho"}
