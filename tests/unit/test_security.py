"""What reaches the devices cannot be tampered with through the files Evergreen reads: no code path
unpickles anything (models are LightGBM text, ONNX, torch state dicts read with
``weights_only=True``, weights in ``.npz`` without pickle), and nothing listens beyond this machine
unless a container is the point. (Raw device ids in outputs: tests/e2e/test_end_to_end.py; secrets from
the environment: tests/unit/test_ids.py, tests/unit/test_signing.py, tests/assets/test_feedback_sensors.py.)"""

import ast
from pathlib import Path

import pytest

from pipeline.dataset import BrokerSpec
from tests.conftest import ROOT

CODE = sorted(p for folder in ("pipeline", "assets", "sensors", "deploy") for p in (ROOT / folder).rglob("*.py")) + [ROOT / "definitions.py"]
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls of ``<anything>.<name>(...)`` or ``name(...)``."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "attr", getattr(n.func, "id", None)) == name]


def _keyword(call: ast.Call, name: str):
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), None)


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_path_can_unpickle(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for alias in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert not imported & UNPICKLERS
    assert not _calls(tree, "read_pickle")
    for call in _calls(tree, "load"):  # torch.load and np.load can unpickle unless told not to
        owner = getattr(call.func, "value", None)
        if getattr(owner, "id", None) == "torch":
            assert _keyword(call, "weights_only") is True, f"{path.name}:{call.lineno}: torch.load without weights_only=True"
        if getattr(owner, "id", None) in ("np", "numpy"):
            assert _keyword(call, "allow_pickle") is False, f"{path.name}:{call.lineno}: np.load without allow_pickle=False"


def test_the_scan_finds_an_unpickling_call():
    """The scan above is only worth something if it can fail."""
    tree = ast.parse("import torch\nimport numpy as np\ntorch.load('m.pt')\nnp.load('w.npz')\n")
    loads = _calls(tree, "load")
    assert [_keyword(c, "weights_only") for c in loads] == [None, None]


def test_nothing_binds_beyond_loopback_by_default():
    """0.0.0.0 appears only in the container recipe, where the pod's own interface is the point."""
    allowed = {ROOT / "deploy" / "Dockerfile", ROOT / "deploy" / "helm" / "values.yaml"}
    scanned = [*CODE, ROOT / "Makefile", ROOT / "workspace.yaml", *(ROOT / "config").rglob("*.yaml"),
               *(ROOT / "examples").rglob("*.yaml"), *(ROOT / "deploy").rglob("*.yaml")]
    assert [p for p in scanned if p not in allowed and "0.0.0.0" in p.read_text()] == []
    assert "-m deploy.ui --host 127.0.0.1" in (ROOT / "Makefile").read_text()
    assert '"--host", default="127.0.0.1"' in (ROOT / "deploy" / "ui.py").read_text()
    assert BrokerSpec().host == "127.0.0.1"

