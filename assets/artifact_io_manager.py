"""An IO manager for model artifacts: teachers, students, ONNX exports, evaluations, decisions.

Each value is a folder, ``<data_dir>/artifacts/<asset>/<partition>`` (``StorageResource.artifact_dir``,
the layout the registry, the federated store and older data directories already use), written by the
value's own ``save(directory)`` into a temporary folder that replaces the old one in one rename
(``pipeline.atomic.atomic_dir``): a killed run leaves the previous folder or the new one, never half.

An input is loaded as its parameter's annotation asks: ``teacher_model: Teacher`` calls
``Teacher.load(folder)``, so a folder written by a ``TeacherUpdate`` (the teacher and its update
record) reads as the teacher alone. A step that needs the files themselves, as ``candidate_model``
copying them into a registry version, annotates ``ArtifactFolder`` and gets the folder: the edge is
still in the graph, and the files are read where they are rather than re-written. An ``Optional``
input of a partition never materialized is None (a model trained on request, without a decision).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg

from assets.resources import StorageResource
from pipeline import atomic

ARTIFACT_IO_MANAGER = "artifact_io_manager"
"""The resource key of ``ArtifactIOManager`` (``definitions.build_resources``)."""


class Artifact(Protocol):
    """A value this IO manager stores: it writes its own files into a folder."""

    def save(self, directory: Path) -> None: ...


@dataclass(frozen=True)
class ArtifactFolder:
    """An upstream artifact as the folder that holds its files."""

    path: Path


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Values that save themselves to a folder and load from one (see the module docstring)."""

    data_dir: str
    """``StorageResource.data_dir``. A plain field rather than a nested ``StorageResource``: Dagster
    1.13 initializes a nested resource through a deprecated context property (a warning that the
    tests turn into an error)."""

    def _folder(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return StorageResource(data_dir=self.data_dir).artifact_dir(asset_key.path[-1], partition_key)

    def handle_output(self, context: dg.OutputContext, obj: Artifact) -> None:
        directory = self._folder(context.asset_key, context.asset_partition_key)
        with atomic.atomic_dir(directory) as tmp:
            obj.save(tmp)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(directory))})

    def load_input(self, context: dg.InputContext) -> object:
        partition = context.asset_partition_key
        directory = self._folder(context.asset_key, partition)
        optional = getattr(context.dagster_type, "inner_type", None)  # ``X | None``: Dagster's OptionalType
        if not directory.is_dir():
            if optional is not None:
                return None
            raise FileNotFoundError(f"{context.asset_key.to_user_string()} {partition} is not materialized ({directory})")
        kind = (optional or context.dagster_type).typing_type
        return ArtifactFolder(directory) if kind is ArtifactFolder else kind.load(directory)
