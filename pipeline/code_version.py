"""Which code produced a model: a hash of the sources, recorded in every registry version's lineage
beside the configuration (``pipeline.lineage``), with or without git."""

import hashlib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("pipeline", "assets")
"""What trains, wires and runs a model: the Dagster-free core (with the edge runtime it ships with) and the assets."""


def code_version(root: Path = PROJECT_ROOT) -> str:
    """The first 12 hex digits of a sha256 over the sources' paths and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in SOURCE_FOLDERS for p in (root / folder).glob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]
