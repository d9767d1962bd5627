"""Static int8 (QDQ) quantization of the student: written atomically, quantized, close to fp32."""

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
from google.protobuf.message import DecodeError

from pipeline import export, quantize
from pipeline.encoding import label_codes, student_matrix
from pipeline.training_set import SPLIT, TEST, TRAIN


@pytest.fixture(scope="module")
def quantized(trained, tmp_path_factory):
    """The trained student exported to fp32 and quantized on its training rows, and the test rows."""
    work = tmp_path_factory.mktemp("quantize")
    fp32, int8 = work / export.ONNX_FILE, work / quantize.INT8_FILE
    export.export_onnx(trained.student, fp32)
    preprocessing = trained.teacher.preprocessing
    calibration = student_matrix(trained.frame.filter(pl.col(SPLIT) == TRAIN), preprocessing)
    quantize.quantize_int8(fp32, int8, calibration)
    test = trained.frame.filter(pl.col(SPLIT) == TEST)
    return fp32, int8, calibration, student_matrix(test, preprocessing), label_codes(test, trained.config.classes)


def test_the_int8_file_is_written_alone_valid_and_smaller(quantized):
    fp32, int8, *_ = quantized
    assert sorted(p.name for p in int8.parent.iterdir()) == sorted([fp32.name, int8.name])  # no temporary left
    onnx.checker.check_model(str(int8))
    assert int8.stat().st_size < fp32.stat().st_size  # the first layer, which reads the bins, stays fp32


def test_neither_file_carries_the_exporters_stack_traces(quantized):
    """The exporter annotates nodes with the Python stack (this machine's paths): never shipped."""
    from tests.conftest import ROOT

    for path in quantized[:2]:
        assert str(ROOT).encode() not in path.read_bytes()
        assert all(not node.metadata_props for node in onnx.load(str(path)).graph.node)


def test_it_is_qdq_with_int8_weights_and_ort_fuses_it_into_int8_kernels(quantized, tmp_path):
    _, int8, *_ = quantized
    model = onnx.load(str(int8))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and "DequantizeLinear" in ops
    weights = [i for i in model.graph.initializer if i.name.endswith("weight_quantized")]
    assert len(weights) == 2 and {w.data_type for w in weights} == {onnx.TensorProto.INT8}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    runtime = [node.op_type for node in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]
    assert runtime.count("QGemm") == 2 and "DequantizeLinear" not in runtime and runtime[-1] == "Softmax"


def test_it_is_a_drop_in_for_the_fp32_file(quantized):
    fp32, int8, *_ = quantized

    def signature(path):
        session = export.onnx_session(path)
        return [(v.name, v.type, v.shape) for v in (*session.get_inputs(), *session.get_outputs())]

    assert signature(int8) == signature(fp32)


def test_int8_agrees_with_fp32_on_the_test_rows(quantized):
    fp32, int8, _, x_test, y_test = quantized
    result = quantize.compare(fp32, int8, x_test, y_test)
    assert result.rows == len(x_test) > 100
    assert result.int8_bytes == int8.stat().st_size and result.fp32_bytes == fp32.stat().st_size
    assert result.argmax_agreement >= 0.98
    assert abs(result.macro_f1_drop_points) <= 1.0
    assert abs(result.fp32_accuracy - result.int8_accuracy) <= 0.02
    assert result.max_abs_diff <= 0.25
    probabilities = export.onnx_session(int8).run(None, {export.INPUT_NAME: x_test})[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_compare_of_a_file_with_itself_is_exact(quantized):
    fp32, _, _, x_test, y_test = quantized
    result = quantize.compare(fp32, fp32, x_test, y_test)
    assert (result.argmax_agreement, result.max_abs_diff, result.macro_f1_drop_points) == (1.0, 0.0, 0.0)


def test_quantizing_is_deterministic(quantized, tmp_path):
    fp32, int8, calibration, *_ = quantized
    again = tmp_path / "again.onnx"
    quantize.quantize_int8(fp32, again, calibration)
    assert again.read_bytes() == int8.read_bytes()


def test_an_empty_calibration_matrix_is_rejected_and_nothing_is_written(quantized, tmp_path):
    fp32, _, calibration, *_ = quantized
    target = tmp_path / "int8.onnx"
    with pytest.raises(ValueError, match="at least one row"):
        quantize.quantize_int8(fp32, target, calibration[:0])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_quantization_keeps_the_previous_file(quantized, tmp_path):
    _, int8, calibration, *_ = quantized
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    target = tmp_path / "int8.onnx"
    target.write_bytes(int8.read_bytes())
    with pytest.raises(DecodeError):
        quantize.quantize_int8(broken, target, calibration)
    assert target.read_bytes() == int8.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx", "int8.onnx"]
