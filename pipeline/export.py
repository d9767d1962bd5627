"""ONNX export of the student and its parity check against torch.

The export uses torch's dynamo exporter (with onnxscript): the TorchScript exporter is deprecated
in torch 2.13 and slated for removal. Weights stay inside the one ``.onnx`` file, which is what
the edge package ships.
"""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from pipeline import atomic
from pipeline.student import Probabilities, Student

ONNX_FILE, OPSET = "student.onnx", 18
# The exporter warns that torchvision (no CPU wheel here, and unused) is missing on every export.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
INPUT_NAME, OUTPUT_NAME = "features", "probabilities"


@dataclass(frozen=True)
class Parity:
    rows: int
    max_abs_diff: float
    argmax_agreement: float

    def ok(self, tolerance: float = 1e-4) -> bool:
        return self.max_abs_diff <= tolerance and self.argmax_agreement == 1.0


def export_onnx(student: Student, path: Path) -> None:
    wrapper = Probabilities(student.model).eval()
    example = torch.zeros(1, student.architecture["input_width"])
    with warnings.catch_warnings():  # raised inside torch's own tracing, not by this code
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=OPSET, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        )
    assert program is not None, "the dynamo exporter returns an ONNXProgram"
    with atomic.atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
        model = onnx.load(str(tmp))
        _strip_node_metadata(model)
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))


def _strip_node_metadata(model: onnx.ModelProto) -> None:
    """The exporter annotates every node with the Python stack that made it, paths of this
    machine included: a quarter of the file, and nothing a device should be shipped."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def onnx_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(student: Student, path: Path, matrix: np.ndarray) -> Parity:
    """Compare ONNX Runtime's probabilities with torch's on the same held-out rows."""
    expected = student.predict_proba(matrix)
    actual = onnx_session(path).run(None, {INPUT_NAME: matrix})[0]
    return Parity(
        rows=len(matrix),
        max_abs_diff=float(np.abs(expected - actual).max()) if len(matrix) else 0.0,
        argmax_agreement=float((expected.argmax(1) == actual.argmax(1)).mean()) if len(matrix) else 1.0,
    )
