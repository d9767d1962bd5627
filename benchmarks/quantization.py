"""The static int8 (QDQ) student against the fp32 one: size, macro-F1, latency, throughput.

``python -m benchmarks.quantization`` trains a teacher and student on one window of the default
config's simulated days (as the tests build a training set), exports fp32, quantizes it with
``pipeline.quantize``'s default options on the training rows and prints, for both files: size,
accuracy and macro-F1 on the test rows, single-row latency on one ONNX Runtime thread (median of
10,000 calls, fp32 and int8 interleaved round by round so that a noisy neighbour hits both alike)
and batch throughput on one thread.

``--sweep`` measures the option grid that chose those defaults: macro-F1 change on validation and
test rows over six students (three windows: before the firmware roll-out, just after it and just
after the new device model; two seeds), and latency, throughput and the kernels ORT runs on the
first of them, at three graph optimisation levels for fp32 and the default.

Everything is written to a temporary directory; nothing in the repository changes.
"""

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from benchmarks.results import machine
from pipeline import export
from pipeline.dataset import load_dataset_config
from pipeline.encoding import label_codes, student_matrix
from pipeline.quantize import CalibrationRows, Options, compare, quantize_int8
from pipeline.student import fit_student
from pipeline.teacher import fit_teacher
from pipeline.training_set import SPLIT, TEST, TRAIN, VALIDATION
from tests.support.helpers import days_from, training_frame

ROOT = Path(__file__).resolve().parent.parent
SINGLE_ROW_CALLS, ROUNDS = 10_000, 20
BATCH_ROWS, BATCH_RUNS = 100_000, 5
WINDOWS = (dt.date(2026, 10, 1), dt.date(2026, 10, 16), dt.date(2026, 11, 2))
SEEDS = (7, 11)
LEVELS = {
    "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}
TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}


def option(first_layer_fp32: bool, types: str, per_channel: bool, reduce_range: bool = False,
           float_logits: bool = False, **extra: object) -> Options:
    """Every field spelled out, so that a row keeps its meaning when the defaults change."""
    activation, weight = (TYPES[t] for t in types.split("/"))
    return Options(float_input_layer=first_layer_fp32, per_channel=per_channel, activation_type=activation,
                   weight_type=weight, reduce_range=reduce_range, float_logits=float_logits, extra=extra)


SWEEP = (
    None,  # ORT's own defaults
    option(False, "u8/s8", False),
    option(False, "u8/s8", True, reduce_range=True),
    option(False, "u8/s8", True, reduce_range=True, float_logits=True),
    option(False, "u8/u8", True, float_logits=True),
    option(True, "u8/s8", False),
    option(True, "u8/s8", False, reduce_range=True),
    option(True, "u8/s8", True),
    option(True, "u8/s8", True, reduce_range=True),
    option(True, "u8/s8", True, reduce_range=True, float_logits=True),
    option(True, "s8/s8", True),
    option(True, "s8/s8", True, ActivationSymmetric=True),
    option(True, "u8/u8", False),
    option(True, "u8/u8", True),
    option(True, "u8/u8", True, float_logits=True),
)


def describe(options: Options | None) -> str:
    if options is None:
        return "ORT defaults (pre-processed): every layer int8, s8/s8, per tensor, softmax int8"
    short = {value: key for key, value in TYPES.items()}
    return ", ".join([
        "first layer fp32" if options.float_input_layer else "every layer int8",
        f"{short[options.activation_type]}/{short[options.weight_type]}",
        "per channel" if options.per_channel else "per tensor",
        *(["reduce_range"] if options.reduce_range else []),
        *(["float logits"] if options.float_logits else []),
        *(f"{key}={value}" for key, value in options.extra.items()),
        *(["**default**"] if options == Options() else []),
    ])


@dataclass(frozen=True)
class Case:
    """One trained student exported to fp32 ONNX, with its encoded rows by split."""

    name: str
    fp32: Path
    rows: dict[str, tuple[np.ndarray, np.ndarray]]


def train_case(start: dt.date, seed: int, work: Path) -> Case:
    config = load_dataset_config(ROOT / "config" / "broadband.yaml")
    config = config.model_copy(update={"training": config.training.model_copy(update={"seed": seed})})
    days = days_from(start, config.partitions.window_days)
    frame = training_frame(config, days)
    teacher = fit_teacher(frame, config)
    student = fit_student(frame, teacher, config)
    name = f"{days[0]}..{days[-1]}, seed {seed}"
    fp32 = work / f"{start}-{seed}" / export.ONNX_FILE
    export.export_onnx(student, fp32)

    def split(which: str) -> tuple[np.ndarray, np.ndarray]:
        part = frame.filter(pl.col(SPLIT) == which)
        return student_matrix(part, teacher.preprocessing), label_codes(part, config.classes)

    return Case(name, fp32, {which: split(which) for which in (TRAIN, VALIDATION, TEST)})


def ort_defaults(fp32: Path, int8: Path, calibration: np.ndarray) -> None:
    """ORT's recommended pre-processing, then quantize_static with its defaults: the sweep's baseline."""
    prepared = int8.with_suffix(".prepared.onnx")
    quant_pre_process(fp32, prepared)
    quantize_static(prepared, int8, CalibrationRows(calibration), quant_format=QuantFormat.QDQ)


def quantized(case: Case, options: Options | None, int8: Path) -> Path:
    """``case``'s student quantized with ``options`` (``None``: ORT's defaults) into ``int8``."""
    if options is None:
        ort_defaults(case.fp32, int8, case.rows[TRAIN][0])
    else:
        quantize_int8(case.fp32, int8, case.rows[TRAIN][0], options)
    return int8


def session(path: Path, level: str = "ALL", dump: Path | None = None) -> ort.InferenceSession:
    """One intra-op thread, as ``export.onnx_session`` and the device; ``dump`` saves the graph ORT runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 3  # dumping an ALL-level graph warns that it is machine-specific
    if dump is not None:
        options.optimized_model_filepath = str(dump)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernels(path: Path, level: str, work: Path) -> str:
    dump = work / "optimised.onnx"
    session(path, level, dump)
    return ", ".join(node.op_type for node in onnx.load(str(dump)).graph.node)


def single_row_us(runs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float, float]]:
    """Median latency of each call over ``SINGLE_ROW_CALLS`` calls, taken in ``ROUNDS`` rounds that
    alternate between the candidates, with the lowest and highest round median."""
    for run in runs.values():
        for _ in range(200):  # warm-up
            run()
    times: dict[str, list[int]] = {name: [] for name in runs}
    medians: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            chunk = []
            for _ in range(SINGLE_ROW_CALLS // ROUNDS):
                start = time.perf_counter_ns()
                run()
                chunk.append(time.perf_counter_ns() - start)
            times[name] += chunk
            medians[name].append(statistics.median(chunk) / 1000)
    return {name: (statistics.median(times[name]) / 1000, min(medians[name]), max(medians[name])) for name in runs}


def batch_rows_per_s(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median over ``BATCH_RUNS`` alternating runs of one ``BATCH_ROWS``-row call."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(BATCH_RUNS):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name].append(BATCH_ROWS / (time.perf_counter() - start))
    return {name: statistics.median(rate) for name, rate in rates.items()}


def timings(paths: dict[str, tuple[Path, str]], x: np.ndarray) -> tuple[dict, dict]:
    """Single-row and batch figures of each (file, optimisation level), all on the same rows."""
    sessions = {name: session(path, level) for name, (path, level) in paths.items()}
    one, batch = x[:1], np.ascontiguousarray(np.resize(x, (BATCH_ROWS, x.shape[1])))
    single = single_row_us({name: (lambda s=s: s.run(None, {export.INPUT_NAME: one})) for name, s in sessions.items()})
    batched = batch_rows_per_s({name: (lambda s=s: s.run(None, {export.INPUT_NAME: batch})) for name, s in sessions.items()})
    return single, batched


def simd() -> str:
    """Whether the CPU has VNNI: the reduce_range choice hangs on it."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return "VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "AVX2 without VNNI" if "avx2" in flags else "unknown SIMD"


def _us(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.1f} µs ({m[1]:.1f}–{m[2]:.1f})"


def identity_model(width: int, path: Path) -> Path:
    """A model that only copies its input: what one run costs before any kernel does work."""
    inputs, outputs = ([onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", width])]
                       for name in (export.INPUT_NAME, export.OUTPUT_NAME))
    node = onnx.helper.make_node("Identity", [export.INPUT_NAME], [export.OUTPUT_NAME])
    graph = onnx.helper.make_graph([node], "identity", inputs, outputs)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", export.OPSET)]), path)
    return path


def default_report(case: Case, work: Path) -> str:
    int8 = quantized(case, Options(), work / "int8.onnx")
    x_test, y_test = case.rows[TEST]
    c = compare(case.fp32, int8, x_test, y_test)
    identity = identity_model(x_test.shape[1], work / "identity.onnx")
    single, batched = timings({"fp32": (case.fp32, "ALL"), "int8": (int8, "ALL"), "identity": (identity, "ALL")}, x_test)
    ratio = single["int8"][0] / single["fp32"][0]
    lines = [
        "## Static int8 (QDQ) student against fp32 (`python -m benchmarks.quantization`)",
        f"Machine: {machine(simd(), f'onnxruntime {ort.__version__}')}.",
        f"Student: default config, window {case.name}; calibration on {len(case.rows[TRAIN][0]):,} training rows; "
        f"{c.rows:,} test rows. Options: {describe(Options())}.",
        "",
        "| figure | fp32 | int8 |", "|---|---|---|",
        f"| file size | {c.fp32_bytes:,} B | {c.int8_bytes:,} B |",
        f"| test accuracy | {c.fp32_accuracy:.4f} | {c.int8_accuracy:.4f} |",
        f"| test macro-F1 | {c.fp32_macro_f1:.4f} | {c.int8_macro_f1:.4f} ({-c.macro_f1_drop_points:+.2f} points) |",
        f"| argmax agreement with fp32 / max abs probability diff | | {c.argmax_agreement:.4f} / {c.max_abs_diff:.4f} |",
        f"| single row, 1 thread, median of {SINGLE_ROW_CALLS:,} calls (round medians) | {_us(single['fp32'])} "
        f"| {_us(single['int8'])} ({ratio:.2f}x) |",
        f"| same call on an Identity model: the fixed cost of a run | {_us(single['identity'])} | |",
        f"| batch of {BATCH_ROWS:,} rows, 1 thread | {batched['fp32']:,.0f} rows/s | {batched['int8']:,.0f} rows/s |",
        f"| kernels ORT runs (ORT_ENABLE_ALL) | {kernels(case.fp32, 'ALL', work)} | {kernels(int8, 'ALL', work)} |",
        "",
        "Targets: int8 macro-F1 within 0.5 points of fp32: " + _met(c.macro_f1_drop_points <= 0.5)
        + f"; int8 single row no slower than fp32: {_met(ratio <= 1.0)} ({ratio:.2f}x)"
        + f"; batch >= 2,000,000 rows/s per core: {_met(batched['int8'] >= 2e6)}"
        + f"; int8 smaller than fp32: {_met(c.int8_bytes < c.fp32_bytes)}.",
    ]
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def sweep_report(cases: list[Case], work: Path) -> str:
    """Every option set on every student (accuracy), and on the first student (speed, kernels)."""
    files = {
        describe(options): [quantized(case, options, work / f"{i}-{j}.int8.onnx") for j, case in enumerate(cases)]
        for i, options in enumerate(SWEEP)
    }
    default = files[describe(Options())][0]  # the default is one of the rows
    rows = {"fp32": (cases[0].fp32, "ALL", None)} | {name: (paths[0], "ALL", paths) for name, paths in files.items()}
    for level in ("EXTENDED", "BASIC"):
        rows |= {f"fp32 at {level}": (cases[0].fp32, level, None), f"default at {level}": (default, level, None)}
    single, batched = timings({name: (path, level) for name, (path, level, _) in rows.items()}, cases[0].rows[TEST][0])
    lines = [
        "## Quantization options (`python -m benchmarks.quantization --sweep`)",
        f"Machine: {machine(simd(), f'onnxruntime {ort.__version__}')}.",
        f"Students: default config, {'; '.join(case.name for case in cases)}. Macro-F1 change of int8 against fp32 in "
        "points (worst / mean over the students); agreement: argmax agreement with fp32 (validation: mean, "
        "test: lowest). Size, latency, "
        f"throughput and kernels on the first student, ORT_ENABLE_ALL unless named; single row: median of "
        f"{SINGLE_ROW_CALLS:,} calls in {ROUNDS} rounds interleaved with every other row of the table (round medians).",
        "",
        "| options | bytes | val ΔF1 worst / mean | test ΔF1 worst / mean | val agreement | test agreement "
        "| single row | vs fp32 | rows/s | kernels ORT runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (path, level, per_case) in rows.items():
        accuracy = _accuracy_cells(cases, per_case) if per_case else "| | | |"
        lines.append(
            f"| {name} | {path.stat().st_size:,} {accuracy} | {_us(single[name])} | {single[name][0] / single['fp32'][0]:.2f}x "
            f"| {batched[name]:,.0f} | {kernels(path, level, work)} |"
        )
    return "\n".join(lines) + "\n"


def _accuracy_cells(cases: list[Case], int8_files: list[Path]) -> str:
    val = [compare(case.fp32, int8, *case.rows[VALIDATION]) for case, int8 in zip(cases, int8_files)]
    test = [compare(case.fp32, int8, *case.rows[TEST]) for case, int8 in zip(cases, int8_files)]
    val_f1, test_f1 = ([-c.macro_f1_drop_points for c in split] for split in (val, test))
    return (f"| {min(val_f1):+.2f} / {statistics.mean(val_f1):+.2f} | {min(test_f1):+.2f} / {statistics.mean(test_f1):+.2f} "
            f"| {statistics.mean(c.argmax_agreement for c in val):.4f} | {min(c.argmax_agreement for c in test):.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="measure the option grid on six students")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evergreen-quantization-") as tmp:
        work = Path(tmp)
        if args.sweep:
            cases = [train_case(start, seed, work) for seed in SEEDS for start in WINDOWS]
            print(sweep_report(cases, work))
        else:
            print(default_report(train_case(WINDOWS[0], SEEDS[0], work), work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
