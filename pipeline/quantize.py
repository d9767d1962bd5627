"""Static int8 quantization (QDQ) of the exported student, beside the fp32 file, and how they compare.

ONNX Runtime's ``quantize_static`` puts QuantizeLinear/DequantizeLinear pairs around the layers,
with activation scales from calibration rows: training rows, never test rows, or the test figures
would have seen the test split. At session start ORT fuses each DequantizeLinear -> Gemm (->
QuantizeLinear) group into one int8 ``QGemm`` kernel and folds the ReLUs into the zero points.

The defaults were chosen by measurement on validation rows of six students of the default config
(``python -m benchmarks.quantization --sweep``; the test rows only confirm):

- The first layer stays fp32. Its input, standardised numerics with tails out to about 12 standard
  deviations beside one-hot categories, shares one per-tensor uint8 scale: quantizing it too cost
  up to 1.1-1.4 macro-F1 points on validation rows and changed the class of about 1% of rows. With
  it in fp32, the other two layers (two thirds of the weights) are int8, about 0.25% of rows change
  class and macro-F1 stays within 0.5 points.
- Activations uint8 (asymmetric, so the ReLUs fold away), weights int8 per output channel with
  ``reduce_range``: on an x86 CPU without VNNI, MLAS's uint8 x int8 kernel adds pairs of products
  in int16, which 8-bit weights can saturate and 7-bit ones cannot. Of the variants within 0.5
  points it agrees best with fp32. Symmetric activations keep the ReLUs as kernels and lose more.
- Softmax reads float logits: the QuantizeLinear/DequantizeLinear pair the quantizer puts on the
  logits is removed, so the last layer fuses into a QGemm with float output: one kernel fewer per
  call, and probabilities not rounded to 1/256 steps.

The student search (``pipeline.student_search``) may still choose to quantize the first layer of a
student whose macro-F1 it costs little, for the latency it saves: the student carries that choice
(``Student.quantize_first_layer``) and ``export_student`` follows it.

The int8 file was about 28% smaller with standardised inputs only; with the numeric bins
(``StudentSpec.numeric_bins``) the fp32 first layer holds most of the weights and the int8 file is
about 12% smaller (40 against 46 KB on the simulator). It is as fast on large batches, but one row
took about 1.2x the fp32 time: most of a call is the fixed cost of a run, and int8 adds a
QuantizeLinear kernel while a one-row QGemm is no faster than fp32's fused Gemm at these sizes.
"""

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import polars as pl
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import accuracy_score, f1_score

from pipeline import atomic
from pipeline.export import INPUT_NAME, ONNX_FILE, export_onnx, onnx_session
from pipeline.student import Student
from pipeline.training_set import SPLIT, TRAIN

INT8_FILE = "student.int8.onnx"
CALIBRATION_BATCH, CALIBRATION_ROWS = 1024, 5000
# Pre-processing logs "Performing symbolic shape inference..." at INFO on every call.
logging.getLogger("onnxruntime.quantization.shape_inference").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Options:
    """What ``quantize_int8`` can vary; the defaults are the measured choice (module docstring)."""

    float_input_layer: bool = True
    per_channel: bool = True
    activation_type: QuantType = QuantType.QUInt8
    weight_type: QuantType = QuantType.QInt8
    reduce_range: bool = True
    float_logits: bool = True
    extra: Mapping[str, object] = field(default_factory=dict)  # quantize_static's extra_options


class CalibrationRows(CalibrationDataReader):
    """Feeds the calibration matrix to the calibrator in fixed-size batches."""

    def __init__(self, matrix: np.ndarray):
        self._batches = iter(range(0, len(matrix), CALIBRATION_BATCH))
        self._matrix = matrix

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._batches, None)
        return None if start is None else {INPUT_NAME: self._matrix[start:start + CALIBRATION_BATCH]}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray, options: Options = Options()) -> None:
    """Write the static int8 (QDQ) version of ``fp32_path`` to ``int8_path``, atomically.

    ``calibration`` is the encoded student matrix of training rows: it sets the activation scales.
    """
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 2 or len(calibration) == 0:
        raise ValueError(f"calibration needs at least one row of encoded training features, got shape {calibration.shape}")
    with tempfile.TemporaryDirectory(prefix="evergreen-quantize-") as tmp, atomic.atomic_path(int8_path) as out:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(fp32_path, prepared)  # ORT's advice; it also drops the exporter's value_info (~1 KB)
        quantize_static(
            prepared, out, CalibrationRows(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Gemm", "Relu"],  # Softmax stays float: it is the float output
            nodes_to_exclude=[_first_layer(onnx.load(prepared))] if options.float_input_layer else None,
            per_channel=options.per_channel, reduce_range=options.reduce_range,
            activation_type=options.activation_type, weight_type=options.weight_type, extra_options=dict(options.extra),
        )
        if options.float_logits:
            _float_logits(out)
        onnx.checker.check_model(out)


def calibration_rows(training_set: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The training rows (at most ``CALIBRATION_ROWS``, sampled) that set the activation scales."""
    train = training_set.filter(pl.col(SPLIT) == TRAIN)
    return train.sample(min(train.height, CALIBRATION_ROWS), seed=seed)


def export_student(student: Student, fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """The student as it ships: fp32 ONNX and its static int8 version, the first layer quantized too
    only when the student says so (a choice of the student search)."""
    export_onnx(student, fp32_path)
    quantize_int8(fp32_path, int8_path, calibration, Options(float_input_layer=not student.quantize_first_layer))


def _first_layer(model: onnx.ModelProto) -> str:
    """The name of the node that reads the model's input."""
    return next(node.name for node in model.graph.node if INPUT_NAME in node.input)


def _float_logits(path: Path) -> None:
    """Drop the QuantizeLinear -> DequantizeLinear pair between the last layer and Softmax."""
    model = onnx.load(path)
    nodes = model.graph.node
    producer = {output: node for node in nodes for output in node.output}
    softmax = next(node for node in nodes if node.op_type == "Softmax")
    dequantize = producer[softmax.input[0]]
    quantize = producer[dequantize.input[0]]
    if (quantize.op_type, dequantize.op_type) != ("QuantizeLinear", "DequantizeLinear"):
        found = f"{quantize.op_type} -> {dequantize.op_type}"
        raise ValueError(f"expected QuantizeLinear -> DequantizeLinear before Softmax, found {found}")
    softmax.input[0] = quantize.input[0]
    nodes.remove(dequantize)
    nodes.remove(quantize)
    used = {name for node in nodes for name in node.input}
    for initializer in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(initializer)
    onnx.save(model, path)


@dataclass(frozen=True)
class Comparison:
    """int8 against fp32 on the same rows: accuracy and macro-F1 as fractions, their drop in points."""

    rows: int
    fp32_bytes: int
    int8_bytes: int
    fp32_accuracy: float
    int8_accuracy: float
    fp32_macro_f1: float
    int8_macro_f1: float
    argmax_agreement: float
    max_abs_diff: float
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=np.int64))
    fp32_predicted: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=np.int64))
    int8_predicted: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=np.int64))
    """Per row: the true class and each model's predicted class (for a paired bootstrap)."""

    @property
    def macro_f1_drop_points(self) -> float:
        return 100 * (self.fp32_macro_f1 - self.int8_macro_f1)


def compare(fp32_path: Path, int8_path: Path, matrix: np.ndarray, labels: np.ndarray) -> Comparison:
    """Both files through ONNX Runtime on the same labelled rows (one thread, as on a device)."""
    if len(matrix) == 0:
        raise ValueError("compare needs at least one labelled row")
    fp32 = onnx_session(fp32_path).run(None, {INPUT_NAME: matrix})[0]
    int8 = onnx_session(int8_path).run(None, {INPUT_NAME: matrix})[0]
    classes = list(range(fp32.shape[1]))

    def f1(probabilities: np.ndarray) -> float:
        return float(f1_score(labels, probabilities.argmax(1), labels=classes, average="macro", zero_division=0))

    return Comparison(
        rows=len(matrix), fp32_bytes=fp32_path.stat().st_size, int8_bytes=int8_path.stat().st_size,
        fp32_accuracy=float(accuracy_score(labels, fp32.argmax(1))), int8_accuracy=float(accuracy_score(labels, int8.argmax(1))),
        fp32_macro_f1=f1(fp32), int8_macro_f1=f1(int8),
        argmax_agreement=float((fp32.argmax(1) == int8.argmax(1)).mean()),
        max_abs_diff=float(np.abs(fp32 - int8).max()),
        labels=labels, fp32_predicted=fp32.argmax(1), int8_predicted=int8.argmax(1),
    )


@dataclass(frozen=True)
class OnnxStudent:
    """The exported student, as the bytes its artifact folder and a registry version hold (a few
    hundred KB): fp32 ONNX and static int8. ``int8`` is None when quantizing lost too much: a version
    that ships its fp32 model serves, where one blocked for its int8 model would leave nothing serving."""

    fp32: bytes
    int8: bytes | None

    def save(self, directory: Path) -> None:
        atomic.write_bytes(directory / ONNX_FILE, self.fp32)
        if self.int8 is not None:
            atomic.write_bytes(directory / INT8_FILE, self.int8)
