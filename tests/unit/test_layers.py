"""Imports point one way: pipeline <- assets, sensors <- definitions, and deploy/ only launches.

pipeline/ is the Dagster-free core that everything else calls; a pipeline module importing a layer
above it (or the launchers in deploy/) would tie the core to the orchestrator or to a command line.
The edge runtime's own rule (numpy and onnxruntime only) is checked in test_edge.py.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

ABOVE_PIPELINE = {"dagster", "assets", "sensors", "definitions", "deploy"}
FORBIDDEN = {"pipeline": ABOVE_PIPELINE, "assets": {"deploy", "definitions"}, "sensors": {"deploy", "definitions"}}
MODULES = [(layer, path) for layer in FORBIDDEN for path in sorted((ROOT / layer).rglob("*.py"))]


ASSET_LAYERS = ("data", "labelling", "training", "feedback", "model", "federated", "deployment", "release", "report")
"""The asset modules, one per layer (``definitions.LAYERS``): they share helpers through ``assets/common.py``,
``metadata.py``, ``partitions.py`` and ``resources.py``, and reach upstream assets by key or input, never by
importing another layer's module (only ``assets/jobs.py`` gathers them, for its selections)."""


def imported_modules(source: str) -> set[str]:
    """Full dotted names of every absolute import in the source, including ones inside functions."""
    tree = ast.parse(source)
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}


def imported_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in the source."""
    return {name.split(".")[0] for name in imported_modules(source)}


@pytest.mark.parametrize(("layer", "path"), MODULES, ids=lambda v: v if isinstance(v, str) else str(v.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(layer: str, path: Path):
    assert not imported_packages(path.read_text(encoding="utf-8")) & FORBIDDEN[layer]


def test_the_scan_sees_imports_inside_functions():
    """The scan above is only worth something if it can fail."""
    source = "import os.path\nfrom . import sibling\n\ndef launch():\n    from deploy.cli import main\n"
    assert imported_packages(source) == {"os", "deploy"}


@pytest.mark.parametrize("layer", ASSET_LAYERS)
def test_no_asset_layer_imports_another(layer: str):
    others = {f"assets.{other}" for other in ASSET_LAYERS if other != layer}
    assert not imported_modules((ROOT / "assets" / f"{layer}.py").read_text(encoding="utf-8")) & others


def test_the_definitions_load_exactly_these_layers():
    import definitions

    assert tuple(module.__name__.removeprefix("assets.") for module in definitions.LAYERS) == ASSET_LAYERS
