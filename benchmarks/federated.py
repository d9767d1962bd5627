"""Federated training and distillation on the simulator (``python -m benchmarks.federated``), in RESULTS.md.

One training window of the embedded default (non-IID sites: device mix, firmware, roll-out and
line lengths differ), through the real cleaning, features, gold labels and split. One teacher is
trained on it; every student below is distilled from it on the same rows and scored by macro-F1 on
the test split:
- central: ``fit_student`` on all sites' rows, as ``student_model`` does;
- federated: rounds of ``local_update`` at each site (its rows only) and ``aggregate`` (FedAvg; then
  FedProx; then with differential privacy), for up to ``MAX_ROUNDS`` rounds: macro-F1 per round,
  bytes sent per round, the round the configured stop rule ends at, and the first round within
  2 points of the central student;
- distillation: the configured student against the teacher (macro-F1 ratio, size, single-row
  latency on one thread), against a student trained on hard labels only, and started from the
  federated global weights.
Only ``pipeline/`` functions run here: the numbers are the methods', not Dagster's.
"""

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.results import emit_report, machine

ROOT = Path(__file__).resolve().parent.parent
WINDOW_START, WINDOW_DAYS = dt.date(2026, 10, 20), 7
MAX_ROUNDS = 30
WITHIN = 0.02
VARIANTS = {
    "FedAvg": {},
    "FedProx (mu 0.01)": {"proximal_mu": 0.01},
    "FedAvg + DP (clip 1, z 0.02)": {"privacy": {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.02, "delta": 1e-5}},
    "FedAvg + DP (clip 1, z 1)": {"privacy": {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}},
}
"""Site-level DP with four sites: noise that buys a small epsilon swamps the update, and noise the
model survives buys no meaningful epsilon. Both ends are measured, so the trade-off is on record."""


def with_federated(config, **changes):
    spec = config.training.federated.model_copy(update=changes)
    if isinstance(changes.get("privacy"), dict):
        spec = spec.model_copy(update={"privacy": config.training.federated.privacy.model_copy(update=changes["privacy"])})
    return config.model_copy(update={"training": config.training.model_copy(update={"federated": spec})})


def with_student(config, **changes):
    student = config.training.student.model_copy(update=changes)
    return config.model_copy(update={"training": config.training.model_copy(update={"student": student})})


class Scorer:
    """Macro-F1 of a student network on the window's test split."""

    def __init__(self, frame: pl.DataFrame, teacher, config):
        from pipeline.encoding import label_codes, student_matrix
        from pipeline.training_set import SPLIT, TEST

        self.test = test = frame.filter(pl.col(SPLIT) == TEST)
        self.x, self.y, self.classes = student_matrix(test, teacher.preprocessing), label_codes(test, config.classes), config.classes
        self.teacher_f1 = self.f1(teacher.predict_proba(test).argmax(axis=1))

    def f1(self, predicted: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(self.y, predicted, labels=list(range(len(self.classes))), average="macro", zero_division=0))

    def model_f1(self, model) -> float:
        import torch

        model.eval()
        with torch.no_grad():
            return self.f1(model(torch.from_numpy(self.x)).argmax(dim=1).numpy())


def federate(frame: pl.DataFrame, teacher, config, scorer: Scorer, central_f1: float) -> dict:
    """Rounds until MAX_ROUNDS; where the configured stop rule would have stopped, and the F1 there."""
    from pipeline import federated as fed
    from pipeline.dataset import SITE
    from pipeline.student import load_weights, new_model

    spec = config.training.federated
    width = teacher.preprocessing["input_width"]
    weights = fed.seeded_weights(width, config)
    sites = {s: frame.filter(pl.col(SITE) == s) for s in config.sites}
    rows, losses, stop_round, started = [], [], None, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, MAX_ROUNDS + 1):
            updates = {s: fed.local_update(s, round_, r, teacher, weights, config) for s, r in sites.items()}
            sent = sum(fed.save_weights(Path(tmp) / f"{s}.npz", u.weights) for s, u in updates.items())
            validation = {s: u.report["validation_rows"] for s, u in updates.items()}
            losses.append(fed.weighted_mean({s: u.report["received"]["validation_loss"] for s, u in updates.items()}, validation))
            if stop_round is None and fed.converged(losses, spec):
                stop_round = round_ - 1  # the global model of the previous round stopped improving
            weights = fed.aggregate(weights, updates, spec.privacy, config.training.seed + round_).weights
            received = fed.save_weights(Path(tmp) / "global.npz", weights) * len(sites)
            model = new_model(width, len(config.classes), config.training.student, 0)
            load_weights(model, weights)
            rows.append({"round": round_, "macro_f1": scorer.model_f1(model), "bytes": sent + received,
                         "per_site_f1": {s: u.report["received"]["macro_f1"] for s, u in updates.items()}})
            print(rows[-1], flush=True)
    within = next((r["round"] for r in rows if r["macro_f1"] >= central_f1 - WITHIN), None)
    result = {"rounds": rows, "stop_round": stop_round or MAX_ROUNDS, "within_round": within, "weights": weights,
              "seconds": time.perf_counter() - started}
    result["stop_f1"] = rows[result["stop_round"] - 1]["macro_f1"]
    if spec.privacy.enabled:
        result["epsilon_at_stop"] = fed.dp_epsilon(spec.privacy.noise_multiplier, result["stop_round"], spec.privacy.delta)
    return result


def distillation(frame: pl.DataFrame, teacher, config, scorer: Scorer, federated_weights) -> dict:
    """The configured student, a hard-label student and one started from the federated weights;
    sizes and single-row latency of the teacher (LightGBM) and the student (ONNX fp32, int8)."""
    from benchmarks.run_all import _median_us
    from pipeline.encoding import teacher_matrix
    from pipeline.export import export_onnx, onnx_session
    from pipeline.quantize import quantize_int8
    from pipeline.student import fit_student
    from pipeline.teacher import MODEL_FILE

    students = {
        "distilled (config)": fit_student(frame, teacher, config),
        "hard labels only (alpha 0, labelled rows)": fit_student(frame, teacher, with_student(config, alpha=0.0, transfer=("labelled",))),
        "distilled from the federated weights": fit_student(frame, teacher, config, start=("federated", federated_weights)),
    }
    f1 = {name: scorer.model_f1(s.model) for name, s in students.items()}
    one_teacher = teacher_matrix(scorer.test.head(1), teacher.preprocessing)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "student.onnx", Path(tmp) / "student.int8.onnx"
        export_onnx(students["distilled (config)"], fp32)
        quantize_int8(fp32, int8, scorer.x[:512])
        teacher.save(Path(tmp))
        session = onnx_session(fp32)
        name, one_student = session.get_inputs()[0].name, scorer.x[:1]
        return {
            "f1": f1, "teacher_f1": scorer.teacher_f1,
            "bytes": {"teacher (LightGBM text)": (Path(tmp) / MODEL_FILE).stat().st_size, "student ONNX fp32": fp32.stat().st_size,
                      "student ONNX int8": int8.stat().st_size},
            "latency_us": {
                "teacher (LightGBM, 1 thread)": _median_us(lambda: teacher.booster.predict(one_teacher, num_threads=1), 5000)[0],
                "student (ONNX fp32, 1 thread)": _median_us(lambda: session.run(None, {name: one_student}), 5000)[0],
            },
            "parameters": students["distilled (config)"].parameters, "trees": teacher.booster.num_trees(),
        }


def report(central_f1: float, teacher_f1: float, federated: dict[str, dict], distilled: dict, config, seconds: float) -> str:
    spec = config.training.federated
    lines = [f"### Federated training and distillation ({dt.date.today()})", "",
             f"Machine: {machine()}. Command: `python -m benchmarks.federated`. "
             f"Wall time {seconds / 60:.1f} min. Window {WINDOW_START} + {WINDOW_DAYS} days, {len(config.sites)} non-IID sites, "
             f"{spec.local_epochs} local epochs per round; macro-F1 on the test split. Teacher: **{teacher_f1:.4f}**; "
             f"central student: **{central_f1:.4f}**.", "",
             "| federated variant | stop rule ends at round | macro-F1 there | gap to central | first round within 2 pts | "
             f"best macro-F1 in {MAX_ROUNDS} rounds | bytes per round | epsilon |", "|---|---|---|---|---|---|---|---|"]
    for name, r in federated.items():
        best = max(x["macro_f1"] for x in r["rounds"])
        eps = f"{r['epsilon_at_stop']:,.1f} (delta 1e-5)" if "epsilon_at_stop" in r else "-"
        lines.append(f"| {name} | {r['stop_round']} | {r['stop_f1']:.4f} | {r['stop_f1'] - central_f1:+.4f} | "
                     f"{r['within_round'] or 'never'} | {best:.4f} | {r['rounds'][0]['bytes']:,} | {eps} |")
    curve = [f"{x['macro_f1']:.3f}" for x in federated["FedAvg"]["rounds"]]
    lines += ["", f"FedAvg macro-F1 by round: {', '.join(curve)}.", "",
              "| student | macro-F1 | / teacher |", "|---|---|---|"]
    for name, f1 in distilled["f1"].items():
        lines.append(f"| {name} | {f1:.4f} | {f1 / teacher_f1:.3f} |")
    b, lat = distilled["bytes"], distilled["latency_us"]
    teacher_bytes, teacher_us = b["teacher (LightGBM text)"], lat["teacher (LightGBM, 1 thread)"]
    lines += ["", f"Size: teacher {teacher_bytes:,} bytes ({distilled['trees']} trees), student ONNX fp32 "
              f"{b['student ONNX fp32']:,} bytes ({distilled['parameters']:,} parameters; ratio "
              f"{b['student ONNX fp32'] / teacher_bytes:.3f}), int8 {b['student ONNX int8']:,} bytes (ratio "
              f"{b['student ONNX int8'] / teacher_bytes:.3f}). Single-row latency, median of 5,000: teacher "
              f"{teacher_us:.1f} µs, student {lat['student (ONNX fp32, 1 thread)']:.1f} µs (ratio "
              f"{lat['student (ONNX fp32, 1 thread)'] / teacher_us:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.dataset import load_dataset_config
    from pipeline.student import fit_student
    from pipeline.teacher import fit_teacher
    from tests.support.helpers import days_from, training_frame

    started = time.perf_counter()
    config = load_dataset_config(ROOT / "config" / "broadband.yaml")
    frame = training_frame(config, days_from(WINDOW_START, WINDOW_DAYS))
    teacher = fit_teacher(frame, config)
    scorer = Scorer(frame, teacher, config)
    central_f1 = scorer.model_f1(fit_student(frame, teacher, config).model)
    print({"teacher": scorer.teacher_f1, "central": central_f1}, flush=True)
    federated = {name: federate(frame, teacher, with_federated(config, **changes), scorer, central_f1)
                 for name, changes in VARIANTS.items()}
    distilled = distillation(frame, teacher, config, scorer, federated["FedAvg"]["weights"])
    text = report(central_f1, scorer.teacher_f1, federated, distilled, config, time.perf_counter() - started)
    emit_report(text, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
