"""A run SIGKILLed while it writes the teacher, the ONNX export or the signed package leaves nothing
half-written where anything looks (artifacts, the registry, the packages), and each re-execution
from failure picks up where the killed run stopped until the day is done."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from pipeline.registry import PRODUCTION, Registry
from tests.conftest import ROOT, write_small_dataset
from tests.support.environment import Env, make_env

pytestmark = pytest.mark.slow
DAY = "2026-10-20"
HOOK = Path(__file__).resolve().parent.parent / "support" / "crash_hook"
KILLS = [
    ("training", "*/artifacts/teacher_model/.*.tmp"),
    ("export", "*/artifacts/onnx_student/*/.student.onnx.*.tmp"),
    ("packaging", "*/packages/.evergreen-*.zip.*.tmp"),
]
"""Where each run dies: the temporary copy of the teacher, the fp32 ONNX file or the package has been
written and flushed, and is about to be renamed into place."""


def _run(env: Env, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """``tests.crash_run`` in its own process group (which the crash hook kills whole)."""
    run_env = dict(env.vars, PYTHONPATH=os.pathsep.join(filter(None, [str(HOOK), env.vars.get("PYTHONPATH")])))
    if crash_at:
        run_env["EVERGREEN_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "tests.support.crash_run", *args], cwd=ROOT, env=run_env,
                          capture_output=True, text=True, timeout=900, start_new_session=True)


def _visible(data_dir: Path) -> dict:
    """What a reader finds: the day's teacher and ONNX artifacts, registry versions and packages."""
    artifacts = data_dir / "artifacts"
    return {
        "teacher": (artifacts / "teacher_model" / DAY).exists(),
        "onnx": (artifacts / "onnx_student" / DAY / "student.onnx").exists(),
        "versions": Registry(data_dir / "registry").versions(),
        "packages": sorted(p.name for p in (data_dir / "packages").glob("*.zip")),
    }


def _assert_versions_complete(registry: Registry) -> None:
    for name in registry.versions():
        version = registry.get(name)
        for file, sha256 in version.entry["files"].items():
            assert hashlib.sha256(version.file(file).read_bytes()).hexdigest() == sha256, (name, file)


def test_runs_killed_mid_write_leave_nothing_partial_and_re_execution_finishes(tmp_path: Path):
    env = make_env(tmp_path, dataset=write_small_dataset(tmp_path, devices_per_site=40,
                                                         deployment={"gates": {"min_macro_f1": 0.3}}))
    expected_after = {
        "training": {"teacher": False, "onnx": False, "versions": [], "packages": []},
        "export": {"teacher": True, "onnx": False, "versions": [], "packages": []},
    }
    parent = None
    for stage, pattern in KILLS:
        done = _run(env, *(["--from-failure", parent] if parent else ["--partition", DAY]), crash_at=pattern)
        assert done.returncode == -signal.SIGKILL, f"{stage}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        with dg.DagsterInstance.from_config(str(env.home)) as instance:
            run = instance.get_runs(limit=1)[0]
            assert run.parent_run_id == parent and run.status == dg.DagsterRunStatus.STARTED
            instance.report_run_failed(run)  # what run monitoring does for a run whose worker died
        parent = run.run_id
        seen = _visible(env.data_dir)
        if stage in expected_after:
            assert seen == expected_after[stage], stage
        else:  # registered (complete, with its entry) but no package, and nothing released
            assert len(seen["versions"]) == 1 and seen["packages"] == [], seen
            assert not Registry(env.data_dir / "registry").has_alias(PRODUCTION)
        _assert_versions_complete(Registry(env.data_dir / "registry"))

    done = _run(env, "--from-failure", parent)
    assert done.returncode == 0 and "success" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    registry = Registry(env.data_dir / "registry")
    production = registry.get(PRODUCTION)
    package = env.data_dir / "packages" / f"evergreen-{production.version}.zip"
    assert hashlib.sha256(package.read_bytes()).hexdigest() == registry.package_sha256(production.version)
    assert json.loads(zipfile.ZipFile(package).read("manifest.json"))["version"] == production.version
    _assert_versions_complete(registry)
    leftovers = [p for p in env.data_dir.rglob("*.tmp")]
    assert all(p.name.startswith(".") for p in leftovers), leftovers  # a killed write's debris stays hidden
